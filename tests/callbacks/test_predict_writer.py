"""``predict`` keeps no predictions, and ``MaskWriter`` writes its PNG files on a background thread."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest
import torch
from helpers import TinyRun, assert_one_line_error, tiny_args
from torchvision.io import encode_png

import lightning_seg.callbacks.writer as writer_module
from lightning_seg.callbacks.writer import MaskWriter
from lightning_seg.cli import main, run_cli
from lightning_seg.reports.palette import colourize

# 10 images in batches of 4: three batches, the last one short; untrained weights spare a fit
PREDICT = ["--data.init_args.num_predict=10", "--allow_untrained", "true"]


def _predict(root: Path, *extra: str):
    cli = run_cli(["predict", *tiny_args(root), *PREDICT, *extra])
    assert cli is not None
    return cli


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("MaskWriter")]


def test_predict_keeps_no_predictions(run_root: Path) -> None:
    cli = _predict(run_root)
    loop = cli.trainer.predict_loop
    assert loop.return_predictions is False
    assert loop.predictions == [] and loop._predictions == []  # Lightning's default (None) keeps every batch
    assert len(list((Path(cli.trainer.log_dir) / "predictions").glob("*_index.png"))) == 10
    assert not _writer_threads()


def test_background_files_match_the_returned_masks(run_root: Path) -> None:
    cli = _predict(run_root, "--return_predictions", "true")
    batches = cli.trainer.predict_loop.predictions
    assert len(batches) == 3  # asked for: Lightning keeps them
    writer = next(c for c in cli.trainer.callbacks if isinstance(c, MaskWriter))
    out_dir = Path(cli.trainer.log_dir) / "predictions"
    assert writer.resolved_dir == out_dir
    names = []
    for batch in batches:
        for name, mask in zip(batch["name"], batch["mask"], strict=True):
            names.append(name)
            # what the synchronous writer wrote: save_png = encode_png of the same tensors
            colour = encode_png(colourize(mask, writer.palette)).numpy().tobytes()
            index = encode_png(mask.to(torch.uint8)[None].contiguous()).numpy().tobytes()
            assert (out_dir / f"{name}.png").read_bytes() == colour
            assert (out_dir / f"{name}_index.png").read_bytes() == index
    assert len(set(names)) == 10
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [f"{n}.png" for n in names] + [f"{n}_index.png" for n in names]
    )  # nothing else: no temporary files left
    assert not _writer_threads()


@pytest.mark.parametrize("failing", ["first", "last"])
@pytest.mark.parametrize("kind", ["disk_full", "config_error"])
def test_writer_thread_error_reaches_the_caller(
    run_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    failing: str,
    kind: str,
) -> None:
    # first: an error in the first batch's files, raised at a later batch; last: raised at the end
    target = "_00000_index.png" if failing == "first" else "_00009_index.png"
    save_png = writer_module.save_png
    seen: list[threading.Thread] = []

    def failing_save_png(image: torch.Tensor, path: Path | str) -> None:
        seen.append(threading.current_thread())
        name = Path(path).name
        if name.endswith(target):
            if kind == "disk_full":
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            raise writer_module.ConfigError(f"{name}: class 300 does not fit an 8-bit PNG")
        save_png(image, path)

    monkeypatch.setattr(writer_module, "save_png", failing_save_png)
    assert main(["predict", *tiny_args(run_root), *PREDICT]) == 2
    if kind == "disk_full":
        assert_one_line_error(capsys, "no space left on device", "_index.png")
    else:
        assert_one_line_error(capsys, "does not fit an 8-bit PNG")
    assert seen and all(t is not threading.main_thread() for t in seen)  # written off the main thread
    assert not _writer_threads()


def test_predict_writes_each_images_uncertainty_on_request(run_root: Path, tiny_run: TinyRun) -> None:
    """``predict --uncertainty entropy``: an uncertainty PNG beside each mask and one CSV row per image, the
    PNG the normalised entropy of the probabilities (uniform: 255, certain: 0)."""
    import csv

    from torchvision.io import decode_png, read_file

    from lightning_seg.callbacks.uncertainty import normalised_entropy
    from lightning_seg.cli import run_cli

    assert float(normalised_entropy(torch.full((4, 2, 2), 0.25)).min()) == pytest.approx(1.0)
    assert float(normalised_entropy(torch.eye(3)[:, :, None]).max()) == 0.0
    assert float(normalised_entropy(torch.full((1, 2, 2), 0.5)).min()) == pytest.approx(1.0)  # one channel
    run_cli(["predict", *tiny_args(run_root), "--ckpt_path", str(tiny_run.last), "--uncertainty", "entropy"])
    (folder,) = (tiny_run.run / "predict").glob("*/predictions")
    masks = [path for path in folder.glob("*.png") if not path.name.endswith("_uncertainty.png")]
    pictures = sorted(folder.glob("*_uncertainty.png"))
    assert len(pictures) == 4
    with (folder / "uncertainty.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and all(0.0 <= float(row["mean_entropy"]) <= 1.0 for row in rows)
    picture = decode_png(read_file(str(pictures[0])))
    assert picture.shape[0] == 1 and picture.shape[1:] == (32, 32)
    row = next(r for r in rows if pictures[0].name.startswith(r["name"]))
    assert float(picture.float().mean()) / 255 == pytest.approx(float(row["mean_entropy"]), abs=0.01)
    assert masks  # the masks are written as before
