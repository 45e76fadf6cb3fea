"""Adversarial robustness of a trained model: FGSM, PGD-N and SegPGD-N at the default radii, and SegPGD
against PGD at the same number of steps.

    python benchmarks/robustness.py [--config configs/default.yaml] [--ckpt_path X] [--root DIR]
        [--max_epochs N] [--steps 10] [CLI overrides...]

Without ``--ckpt_path`` it first trains the config (``fit``, in-process, into ``--root``: a new temporary
folder by default), then runs the ``attack`` subcommand on the checkpoint's ``last.ckpt`` with every attack
at the radii 0, 1/255, 2/255, 4/255, 8/255, exactly as ``python -m lightning_seg attack`` does (the test
split through the model's whole path; see ``lightning_seg/commands/attack.py``). Extra arguments go to both
commands (e.g. ``--data.init_args.num_test=32`` attacks fewer images). It prints the device, the wall time
of each part, the Markdown table ``attack`` writes, and one row per radius comparing SegPGD-N with PGD-N
(Gu et al. report that SegPGD lowers mIoU more at the same number of steps).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_seg.cli import run_cli  # noqa: E402
from lightning_seg.commands.attack import format_epsilon, markdown_table  # noqa: E402


def _device() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def compare(rows: list[dict], steps: int) -> str:
    """One Markdown row per radius > 0: mIoU under PGD-N and SegPGD-N on the mask head, and their gap."""
    lines = [
        f"| ε | PGD-{steps} mIoU | SegPGD-{steps} mIoU | SegPGD − PGD | SegPGD at least as strong |",
        "|---|---|---|---|---|",
    ]
    chosen = {
        (r["attack"], r["epsilon"]): r["mIoU"]
        for r in rows
        if r["head"] == "mask" and not r["targeted"] and r["attack"] in ("pgd", "segpgd")
    }
    for epsilon in sorted({e for _, e in chosen if e > 0}):
        pgd, segpgd = chosen[("pgd", epsilon)], chosen[("segpgd", epsilon)]
        lines.append(
            f"| {format_epsilon(epsilon)} | {pgd:.4f} | {segpgd:.4f} | {segpgd - pgd:+.4f} | "
            f"{'yes' if segpgd <= pgd else 'no'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--ckpt_path", default=None, help="attack this checkpoint instead of training one")
    parser.add_argument("--root", default=None, help="runs folder (default: a new temporary folder)")
    parser.add_argument(
        "--max_epochs", type=int, default=None, help="training epochs (default: the config's)"
    )
    parser.add_argument("--steps", type=int, default=10, help="PGD and SegPGD iterations")
    args, overrides = parser.parse_known_args()
    command = " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    sys.argv = sys.argv[:1]  # the commands below take their arguments from run_cli, not from sys.argv
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="robustness-"))
    common = [
        "--config",
        args.config,
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.enable_progress_bar=false",
        *overrides,
    ]
    timings: dict[str, float] = {}
    ckpt = args.ckpt_path
    if ckpt is None:
        epochs = [f"--trainer.max_epochs={args.max_epochs}"] if args.max_epochs else []
        start = time.perf_counter()
        fit = run_cli(["fit", *common, *epochs])
        if fit is None:
            raise SystemExit(2)
        timings["fit"] = time.perf_counter() - start
        ckpt = fit.trainer.checkpoint_callback.last_model_path
        val = fit.trainer.callback_metrics.get("val/mIoU")
        print(f"trained {ckpt}: val mIoU {float(val):.4f}" if val is not None else f"trained {ckpt}")
    start = time.perf_counter()
    attack = run_cli(
        [
            "attack",
            *common,
            "--ckpt_path",
            str(ckpt),
            "--attacks",
            "[fgsm, pgd, segpgd]",
            "--steps",
            str(args.steps),
        ]
    )
    if attack is None:
        raise SystemExit(2)
    timings["attack"] = time.perf_counter() - start
    folder = Path(attack.trainer.default_root_dir)
    rows = json.loads((folder / "robustness.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    print()
    print(
        f"{dt.date.today()} {_device()}; checkpoint {ckpt}; "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    )
    print(f"command: {command}")
    print()
    print(markdown_table(rows, summary))
    print(compare(rows, args.steps))
    print(f"\nreport: {folder}")


if __name__ == "__main__":
    main()
