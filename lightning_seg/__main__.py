import sys

from lightning_seg.cli import main

sys.exit(main())
