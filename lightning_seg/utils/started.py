"""When this process began to run lightning_seg: the package imports this module first."""

from __future__ import annotations

import time

STARTED = time.perf_counter()
"""``time.perf_counter()`` at the package's first import: a console command's start, before torch and
Lightning load (``fit --budget`` counts a command's time from it)."""
