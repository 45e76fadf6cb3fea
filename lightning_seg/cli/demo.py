"""``python -m lightning_seg.cli.demo`` (`make demo`; the old ``python -m lightning_seg.demo`` too): train the
embedded default, then predict a few images with its best checkpoint.

What ``make demo`` runs. Both stages go through the same CLI a user calls; extra arguments are passed to
both (e.g. ``--trainer.max_epochs 2``).
"""

from __future__ import annotations

import sys

from lightning_seg.cli.app import run_cli

DEFAULT_CONFIG = "configs/default.yaml"


def run(extra: list[str]) -> int:
    fit = run_cli(["fit", "--config", DEFAULT_CONFIG, *extra])
    if fit is None:
        return 2
    best = fit.trainer.checkpoint_callback.best_model_path
    if not best:
        print("demo: training produced no checkpoint", file=sys.stderr)
        return 1
    predict = run_cli(["predict", "--config", DEFAULT_CONFIG, "--ckpt_path", best, *extra])
    print(f"run directory: {fit.trainer.log_dir}")
    return 0 if predict is not None else 2


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
