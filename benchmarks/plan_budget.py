"""``plan`` + ``fit --budget`` against a hand-written config at the same budget, on a folder of images.

    python benchmarks/plan_budget.py --data camvid --budget 10m --recipe plan --json out.json
    python benchmarks/plan_budget.py --data camvid --budget 10m --recipe configs/camvid/lite0_unet.yaml
    python benchmarks/plan_budget.py --data synthetic --budget 2m --recipe plan

``--data camvid``: CamVid copied into a folder layout (``images/{train,val,test}``, ``masks/...``, three
split lists naming CamVid's own split), so the plan and the hand-written ``CamVidDataModule`` config train,
validate and test on the same images. ``--data synthetic``: the default config's synthetic shapes (1024 / 128
/ 128 at 64×64, the same seeds) written out as PNGs the same way. The folder is made once under ``--work``.

``--recipe plan`` runs ``lightning-seg plan`` (timed apart) and fits its config; any other value is a config
to fit. Both fits run as their own process with ``--budget`` (wall time measured around the process: start-up
included), then ``test`` scores the best checkpoint by ``val/mIoU``. Prints and writes (``--json``) the budget,
wall times, what the budget chose and the test mIoU with per-class IoU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightning_seg.cli import run_cli  # noqa: E402
from lightning_seg.data import SyntheticDataModule  # noqa: E402
from lightning_seg.data.camvid import DEFAULT_CAMVID_ROOT, CamVidDataModule  # noqa: E402
from lightning_seg.utils.atomic import atomic_write  # noqa: E402

SPLITS = ("train", "val", "test")
CAMVID_ANNOT = {"train": "trainannot", "val": "valannot", "test": "testannot"}


def camvid_folder(folder: Path) -> list[str]:
    """CamVid in a folder layout below ``folder`` (copied once); returns plan's data options."""
    source = Path(os.environ.get("LIGHTNING_SEG_CAMVID", DEFAULT_CAMVID_ROOT))
    for split in SPLITS:
        if not (folder / "images" / split).is_dir():
            shutil.copytree(source / split, folder / "images" / split)
            shutil.copytree(source / CAMVID_ANNOT[split], folder / "masks" / split)
        names = sorted(p.name for p in (folder / "images" / split).glob("*.png"))
        atomic_write(folder / f"{split}.txt", "".join(f"{split}/{name}\n" for name in names))
    names = ",".join(CamVidDataModule.class_names)
    return [f"--data.class_names=[{names}]", "--data.ignore_index=11"]


def synthetic_folder(folder: Path) -> list[str]:
    """The default config's synthetic splits as PNGs below ``folder`` (written once); plan's data options."""
    from PIL import Image

    data = SyntheticDataModule()
    data.setup("fit")
    data.setup("test")
    for split in SPLITS:
        lines = []
        for index, sample in enumerate(data.datasets[split]):
            name = f"{split}/{index:05d}.png"
            for kind, array in (("images", sample["image"].permute(1, 2, 0)), ("masks", sample["mask"])):
                path = folder / kind / name
                if not path.is_file():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(array.to(torch.uint8).numpy()).save(path)
            lines.append(f"{name}\n")
        atomic_write(folder / f"{split}.txt", "".join(lines))
    names = ",".join(SyntheticDataModule.class_names)
    return [f"--data.class_names=[{names}]"]


def timed(command: list[str]) -> float:
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", choices=["camvid", "synthetic"], required=True)
    parser.add_argument("--budget", required=True, help="fit's --budget, e.g. 10m")
    parser.add_argument("--recipe", default="plan", help="'plan', or a config to fit")
    parser.add_argument("--work", type=Path, default=Path("bench_plan"), help="data folders, plans and runs")
    parser.add_argument("--json", type=Path)
    args, overrides = parser.parse_known_args()

    folder = (args.work / f"{args.data}_folder").resolve()
    data_options = (camvid_folder if args.data == "camvid" else synthetic_folder)(folder)
    tag = "plan" if args.recipe == "plan" else Path(args.recipe).stem
    runs = (args.work / "runs" / f"{args.data}_{tag}_{args.budget}").resolve()
    exe = str(Path(sys.executable).with_name("lightning-seg"))
    plan_s = None
    config = args.recipe
    if args.recipe == "plan":
        plan = args.work / "plans" / args.data / "plan.yaml"
        splits = [f"--data.{split}_list={split}.txt" for split in SPLITS]
        plan_s = timed([exe, "plan", f"--data.root={folder}", *splits, *data_options, f"--output={plan}"])
        config = str(plan)
    fit_s = timed(
        [
            exe, "fit", "--config", config, "--budget", args.budget, "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={runs}", f"--trainer.logger.init_args.save_dir={runs}", *overrides,
        ]
    )  # fmt: skip
    run = max(runs.rglob("budget.json"), key=lambda p: p.stat().st_mtime).parent
    budget = json.loads((run / "budget.json").read_text())
    best = max(
        (p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"),
        key=lambda p: float(p.stem.rsplit("miou", 1)[1]),
    )
    test = run_cli(["test", "--config", str(run / "config.yaml"), "--ckpt_path", str(best)])
    if test is None:
        sys.exit(2)
    metrics = {k: float(v) for k, v in test.trainer.callback_metrics.items() if k.startswith("test/")}
    result = {
        "date": dt.date.today().isoformat(),
        "device": f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "data": args.data,
        "recipe": args.recipe,
        "budget": args.budget,
        "budget_s": budget["budget_s"],
        "plan_s": round(plan_s, 1) if plan_s is not None else None,
        "fit_wall_s": round(fit_s, 1),
        "fit_share_of_budget": round(fit_s / budget["budget_s"], 3),
        "chosen": {
            key: budget[key] for key in ("epochs", "epoch_steps", "steps_per_epoch", "step_s", "probe_s")
        },
        "checkpoint": str(best),
        "test_mIoU": metrics.get("test/mIoU"),
        "test_IoU": {
            k.split("/", 2)[2]: round(v, 4) for k, v in metrics.items() if k.startswith("test/IoU/")
        },
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
