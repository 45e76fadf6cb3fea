"""End-to-end runs of the command line, in-process, on tiny synthetic data."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import DEFAULT_CONFIG, REPO, TinyRun, assert_one_line_error, tiny_args
from torchvision.io import decode_png, read_file

from lightning_seg.cli import build_cli, main, run_cli


def _fit(root: Path, *extra: str, epochs: int = 1):
    cli = run_cli(["fit", *tiny_args(root, *extra, epochs=epochs)])
    assert cli is not None
    return cli


def test_fit_writes_summary_checkpoints_and_config(run_root: Path) -> None:
    cli = _fit(run_root)
    log_dir = Path(cli.trainer.log_dir)
    summary = json.loads((log_dir / "summary.json").read_text())
    assert summary["stage"] == "fit"
    metrics = summary["metrics"]
    for name in ("val/mIoU", "val/dice", "val/acc", "val/loss"):
        assert 0.0 <= metrics[name] < 100, name
    assert any(key.startswith("val/IoU/") for key in metrics)
    assert Path(summary["best_checkpoint"]).is_file()
    assert Path(summary["last_checkpoint"]).name == "last.ckpt"
    assert (log_dir / "config.yaml").is_file()
    assert summary["best_score"] == pytest.approx(metrics["val/mIoU"])
    confusion = torch.tensor(summary["confusion"]["rows_target_cols_prediction"])
    assert confusion.shape == (5, 5) and confusion.sum() > 0
    # metric names follow stage/name everywhere
    logged = cli.trainer.callback_metrics
    assert {"train/loss", "train/mIoU", "val/mIoU", "train/loss/ce", "train/loss/dice"} <= set(logged)


def test_cli_links_classes_from_data_into_model(run_root: Path) -> None:
    cli = build_cli(tiny_args(run_root), run=False)
    assert cli.model.num_classes == cli.datamodule.num_classes == 5
    assert cli.model.class_names == list(cli.datamodule.class_names)
    assert cli.model.ignore_index == cli.datamodule.ignore_index
    # the net was built for the linked number of classes
    assert cli.model.net.head.out_channels == 5


def test_validate_test_and_predict_from_checkpoint(run_root: Path, tiny_run: TinyRun) -> None:
    best = str(tiny_run.best)
    fit_summary = json.loads((tiny_run.run / "summary.json").read_text())
    assert Path(fit_summary["best_checkpoint"]).name == tiny_run.best.name
    for stage, prefix in (("validate", "val"), ("test", "test")):
        cli = run_cli([stage, *tiny_args(run_root), "--ckpt_path", best])
        summary = json.loads((Path(cli.trainer.log_dir) / "summary.json").read_text())
        assert summary["stage"] == stage
        assert 0.0 <= summary["metrics"][f"{prefix}/mIoU"] <= 1.0
        if stage == "validate":  # the best checkpoint, validated again, scores what fit recorded for it
            assert summary["metrics"]["val/mIoU"] == pytest.approx(fit_summary["best_score"], abs=1e-6)
    # the net given by config files alone (no command-line override of it) must accept the checkpoint too
    tiny_net = run_root.parent / "tiny_net.yaml"
    tiny_net.write_text(
        "model:\n  init_args:\n    net:\n      class_path: lightning_seg.models.UNet\n"
        "      init_args: {base_width: 4, depth: 2}\n"
    )
    plain = run_cli(
        [
            "predict",
            "--config",
            DEFAULT_CONFIG,
            "--config",
            str(tiny_net),
            "--ckpt_path",
            best,
            f"--trainer.default_root_dir={run_root}",
            f"--trainer.logger.init_args.save_dir={run_root}",
        ]
    )
    assert plain is not None
    cli = run_cli(["predict", *tiny_args(run_root), "--ckpt_path", best])
    out_dir = Path(cli.trainer.log_dir) / "predictions"  # each predict: a new <run>/predict/<date-time>/
    colour = sorted(out_dir.glob("*[0-9].png"))
    index = sorted(out_dir.glob("*_index.png"))
    assert len(colour) == len(index) == 4
    mask = decode_png(read_file(str(index[0])))
    assert mask.shape == (1, 32, 32) and int(mask.max()) < 5
    assert decode_png(read_file(str(colour[0]))).shape == (3, 32, 32)


@pytest.mark.parametrize("how", ["last", "path"])
def test_resume_continues_where_it_stopped(run_root: Path, how: str) -> None:
    # an interrupted 2-epoch run: stops after its first epoch, as a killed job would
    first = _fit(run_root, "--trainer.callbacks+=helpers.StopAfterEpoch", epochs=2)
    assert first.trainer.current_epoch == 1
    steps_per_epoch = first.trainer.global_step
    log_dir = Path(first.trainer.log_dir)
    ckpt = "last" if how == "last" else str(log_dir / "checkpoints" / "last.ckpt")
    resumed = run_cli(["fit", *tiny_args(run_root, epochs=2), "--ckpt_path", ckpt])
    assert resumed.trainer.current_epoch == 2
    assert resumed.trainer.global_step == 2 * steps_per_epoch
    # the resumed run writes into the same run directory
    assert Path(resumed.trainer.log_dir) == log_dir
    assert json.loads((log_dir / "summary.json").read_text())["metrics"]["val/mIoU"] >= 0


def test_resume_last_without_a_run_is_a_clear_error(run_root: Path, capsys) -> None:
    assert main(["fit", *tiny_args(run_root), "--ckpt_path", "last"]) == 2
    assert_one_line_error(capsys, "--ckpt_path last", "last.ckpt")


def test_predict_maps_back_to_original_size(run_root: Path) -> None:
    cli = build_cli(tiny_args(run_root), run=False)
    module, data = cli.model, cli.datamodule
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    batch["orig_size"] = torch.tensor([[40, 50]] * len(batch["name"]))  # as if resized from 40×50
    batch = data.prepare_batch(batch, train=False)
    module.eval()
    with torch.no_grad():
        compact = module.predict_step(batch, 0)
        module.predict_probabilities = True
        out = module.predict_step(batch, 0)
    assert "probability" not in compact
    assert [tuple(m.shape) for m in out["mask"]] == [(40, 50)] * len(batch["name"])
    assert out["mask"][0].dtype == torch.uint8
    assert torch.equal(out["mask"][0].long(), out["probability"][0].argmax(0))
    assert torch.allclose(out["probability"][0].sum(0), torch.ones(40, 50), atol=1e-5)


def test_print_config_shows_every_part(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        build_cli(["fit", "--config", DEFAULT_CONFIG, "--print_config"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for needle in (
        "lightning_seg.models.UNet",
        "CompoundLoss",
        "SyntheticDataModule",
        "base_width",
        "OneCycleLR",
    ):
        assert needle in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model.init_args.no_such_key=1"], "no_such_key"),
        (["--data.init_args.batch_size=many"], "batch_size"),
        (["--trainer.max_epochs=abc"], "max_epochs"),
    ],
)
def test_bad_overrides_give_one_error_line(run_root: Path, args, needle, capsys) -> None:
    assert main(["fit", *tiny_args(run_root), *args]) == 2
    assert_one_line_error(capsys, needle)


def test_missing_config_file_gives_one_error_line(capsys) -> None:
    assert main(["fit", "--config", "configs/does_not_exist.yaml"]) == 2
    assert_one_line_error(capsys, "does_not_exist.yaml")


def test_too_few_classes_gives_one_error_line(run_root: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "one_class.yaml"
    config.write_text("data:\n  class_path: helpers.OneClassDataModule\n")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, where helpers.py is
    try:
        assert main(["fit", *tiny_args(run_root), "--config", str(config)]) == 2
    finally:
        sys.path.remove(str(Path(__file__).resolve().parents[1]))
    assert_one_line_error(capsys, "num_classes must be >= 2")


SUBCOMMANDS = ("fit", "validate", "test", "predict", "tune", "submit", "export", "attack")


def test_console_script_and_module_entry_agree() -> None:
    """The installed ``lightning-seg`` console script (beside this Python, run with this checkout's code):
    its help names every subcommand (``sweep`` has its own parser, see test_sweep); it and
    ``python -m lightning_seg`` refuse a missing config with the same one line."""
    script = Path(sys.executable).with_name("lightning-seg")
    assert script.is_file(), f"{script}: install the package (pip install -e .)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    shown = subprocess.run([str(script), "--help"], capture_output=True, text=True, cwd=REPO, env=env)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.startswith("usage: lightning-seg "), shown.stdout[:500]
    listed = re.search(r"\{([a-z,]+)\}", shown.stdout)
    assert listed and listed.group(1).split(",") == list(SUBCOMMANDS), shown.stdout[:500]
    result = subprocess.run(
        [str(script), "fit", "--config", "nope.yaml"], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert result.returncode == 2, result.stderr[-2000:]
    line = assert_one_line_error(result.stderr, "nope.yaml")
    # python -m lightning_seg calls the same main (lightning_seg/__main__.py): in this process, a process start
    # less (each costs seconds of imports)
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["fit", "--config", "nope.yaml"]) == 2
    assert assert_one_line_error(err.getvalue(), "nope.yaml") == line


def test_sample_overlays_written_each_validation_epoch(run_root: Path) -> None:
    cli = run_cli(["fit", *tiny_args(run_root, epochs=2, plots=True)])
    samples = sorted((Path(cli.trainer.log_dir) / "samples").glob("epoch_*.png"))
    assert [p.name for p in samples] == ["epoch_000.png", "epoch_001.png"]
    picture = decode_png(read_file(str(samples[0])))
    # a labelled figure: 3 rows (image, target, prediction) of the 8 validation images, and a legend
    assert picture.shape[0] == 3 and picture.shape[2] > picture.shape[1] > 300


def test_null_for_an_argument_of_a_nested_class(run_root: Path) -> None:
    """jsonargparse reads `--model.init_args.loss.init_args.class_weights=null` (a class inside the model) as the
    string 'None'; the CLI passes it on as a dict it reads right, in both spellings."""
    pets = str(REPO / "configs" / "pets" / "smp_unet.yaml")
    for null in (
        ["--model.init_args.loss.init_args.class_weights=null"],
        ["--model.init_args.loss.init_args.class_weights", "null"],
    ):
        cli = build_cli([*tiny_args(run_root), *null], run=False)
        assert cli.model.loss.class_weights is None
    parsed = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_seg",
            "fit",
            "--config",
            pets,
            "--model.init_args.net.init_args.encoder_weights=null",
            "--print_config",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert parsed.returncode == 0 and "encoder_weights: null" in parsed.stdout  # not the string 'None'
    assert "args parameter" not in parsed.stderr  # argv rewritten in place: no LightningCLI warning


def _run_demo(folder: Path, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    """``make demo``'s command, ``python -m lightning_seg.demo``, run in ``folder`` (which gets the repo's
    configs/, as the Makefile runs it from the repo root); returns the process and the run directory it names."""
    import shutil

    shutil.copytree(REPO / "configs", folder / "configs")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "lightning_seg.demo", *extra],
        capture_output=True,
        text=True,
        cwd=folder,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    named = [line for line in done.stdout.splitlines() if line.startswith("run directory: ")]
    assert len(named) == 1, done.stdout[-3000:]
    return done, folder / named[0].removeprefix("run directory: ")


@pytest.mark.slow
def test_make_demo_trains_and_predicts(tmp_path: Path) -> None:
    """What `make demo` runs, in a folder of its own: the default config trained to the end, then predict
    with its best checkpoint; everything written under that folder's runs/."""
    _, run = _run_demo(tmp_path)
    assert run.is_dir() and (tmp_path / "runs") in run.parents
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stage"] == "fit" and summary["status"] == "completed"
    best = tmp_path / summary["best_checkpoint"]  # relative to the demo's folder (or absolute)
    assert best.is_file() and best.parent == run / "checkpoints" and 0.0 < summary["best_score"] <= 1.0
    (predictions,) = run.glob("predict/*/predictions")
    index = sorted(predictions.glob("*_index.png"))
    assert len(index) == 8  # the default num_predict
    assert decode_png(read_file(str(index[0]))).shape == (1, 64, 64)
