"""Seeing a run: W&B runs in folders of their own, offline by themselves, resumed as the same W&B run; the
same pictures in W&B, TensorBoard and the run folder, read back with each logger's own reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import wandb_records
from helpers import REPO
from helpers import tiny_args as lean_tiny_args
from jsonargparse import Namespace

from lightning_seg.callbacks.visualize import SampleOverlays, spread_of_samples
from lightning_seg.cli import main, run_cli
from lightning_seg.errors import ConfigError
from lightning_seg.reports.drawing import overlay
from lightning_seg.runs import wandb as wandb_runs


def tiny_args(root: Path, *extra: str, epochs: int = 1) -> list[str]:
    """helpers.tiny_args with the run plots and sample overlays this module is about."""
    return lean_tiny_args(root, *extra, epochs=epochs, plots=True)


WANDB_CONFIG = str(REPO / "configs" / "trainer" / "wandb.yaml")
CONSTANT_LR = "--model.init_args.lr_scheduler=null"


def _without_an_account(home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No API key anywhere, no W&B mode chosen, and a server address where nothing listens (no network)."""
    for name in (
        "WANDB_MODE",
        "WANDB_API_KEY",
        "WANDB_IDENTITY_TOKEN_FILE",
        "WANDB_DIR",
        "WANDB_PROJECT",
        "HTTPS_PROXY",
        "https_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: nothing answers
    return dict(os.environ)


@pytest.fixture
def no_wandb_account(tmp_path: Path, monkeypatch) -> dict[str, str]:
    return _without_an_account(tmp_path / "home", monkeypatch)


def _wandb_fit(root: Path, env: dict[str, str], *extra: str, epochs: int) -> subprocess.CompletedProcess:
    """A W&B fit in a process of its own, with an open stdin that never answers: a prompt would hang it."""
    args = tiny_args(
        root, "--config", WANDB_CONFIG, f"--trainer.logger.init_args.save_dir={root}", *extra, epochs=epochs
    )
    return subprocess.run(
        [sys.executable, "-m", "lightning_seg", "fit", *args],
        env=env,
        cwd=root.parent,
        stdin=subprocess.PIPE,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _wandb_files(run: Path) -> list[Path]:
    return sorted(run.glob("wandb/offline-run-*/run-*.wandb"))


def _image_keys(rows: list[dict]) -> set[str]:
    """The keys W&B logged images under (one ``wandb.Image`` or a list of them)."""
    return {
        key.rsplit("/_type", 1)[0]
        for row in rows
        for key, value in row.items()
        if key.endswith("/_type") and value in ("images/separated", "image-file")
    }


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory) -> dict:
    """One W&B run of the default config without an account, then resumed with ``--ckpt_path last``."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("wandb")
    env = _without_an_account(tmp / "home", mp)
    root = tmp / "runs"
    first = _wandb_fit(root, env, CONSTANT_LR, epochs=1)
    run = root / "lightning_seg" / "version_0"
    after_first = _wandb_files(run)
    resumed = _wandb_fit(root, env, CONSTANT_LR, "--ckpt_path", "last", epochs=2)
    yield {
        "root": root,
        "run": run,
        "first": first,
        "resumed": resumed,
        "after_first": after_first,
        "env": env,
    }
    mp.undo()


def test_a_wandb_run_without_an_account_goes_offline_in_its_own_folder(wandb_run) -> None:
    first, run, root = wandb_run["first"], wandb_run["run"], wandb_run["root"]
    assert first.returncode == 0, first.stderr[-2000:]
    offline = [line for line in first.stderr.splitlines() if "W&B is offline" in line]
    assert len(offline) == 1 and "no API key" in offline[0] and "wandb sync" in offline[0]
    # the TensorBoard layout: config, checkpoints, summary, samples and W&B's files in the run's folder
    for name in ("config.yaml", "summary.json", "checkpoints/last.ckpt", "samples/epoch_000.png"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in root.iterdir()) == ["lightning_seg"]  # nothing written beside the runs
    run_id = (run / wandb_runs.RUN_ID_FILE).read_text().strip()
    (log,) = wandb_run["after_first"]
    assert log.name == f"run-{run_id}.wandb" and wandb_records.run_id(log) == run_id
    # named after its folder (under the config's logger name), not "default" like every other run
    assert wandb_records.display_name(log) == "default/version_0"


def test_resume_last_continues_the_same_folder_and_wandb_run(wandb_run) -> None:
    resumed, run, root = wandb_run["resumed"], wandb_run["run"], wandb_run["root"]
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sorted(p.name for p in (root / "lightning_seg").iterdir()) == ["version_0"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 2 and (run / "config.resume-1.yaml").is_file()
    run_id = (run / wandb_runs.RUN_ID_FILE).read_text().strip()
    logs = _wandb_files(run)
    assert len(logs) == 2 and {wandb_records.run_id(p) for p in logs} == {run_id}


def test_wandb_holds_the_metrics_config_and_mask_images(wandb_run) -> None:
    run = wandb_run["run"]
    summary = json.loads((run / "summary.json").read_text())
    rows = [row for path in _wandb_files(run) for row in wandb_records.history(path)]
    scores = [row["val/mIoU"] for row in rows if "val/mIoU" in row]
    assert len(scores) == 2 and scores[-1] == pytest.approx(summary["metrics"]["val/mIoU"], abs=1e-6)
    assert any("train/loss_step" in row for row in rows) and any("lr-AdamW" in row for row in rows)
    config = wandb_records.config(_wandb_files(run)[0])
    assert config["model"]["init_args"]["net"]["class_path"] == "lightning_seg.models.UNet"
    samples = [row for row in rows if row.get("val/samples/_type") == "images/separated"]
    assert len(samples) == 2  # one per validation epoch
    (layers,) = {tuple(sorted(m)) for m in samples[0]["val/samples/all_masks"]}
    assert layers == ("ground_truth", "prediction")
    media = run.glob("wandb/offline-run-*/files/")
    files = [f for folder in media for f in folder.rglob("*.png")]
    names = {Path(name).name for row in samples for name in row["val/samples/filenames"]}
    assert names and names <= {f.name for f in files}


def test_an_evaluation_is_a_wandb_run_of_its_own_beside_the_training_run(wandb_run, monkeypatch) -> None:
    for name, value in wandb_run["env"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run, root = wandb_run["run"], wandb_run["root"]
    last = str(run / "checkpoints" / "last.ckpt")
    args = tiny_args(root, "--config", WANDB_CONFIG, f"--trainer.logger.init_args.save_dir={root}")
    cli = run_cli(["test", *args, "--ckpt_path", last])
    assert cli is not None
    (record,) = (run / "test").iterdir()
    assert (record / "summary.json").is_file() and (record / "config.yaml").is_file()
    (log,) = _wandb_files(record)
    assert wandb_records.run_id(log) != (run / wandb_runs.RUN_ID_FILE).read_text().strip()
    assert json.loads((run / "summary.json").read_text())["stage"] == "fit"  # the training record stays


def test_tensorboard_and_wandb_get_the_same_pictures(wandb_run, run_root: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli = run_cli(["fit", *tiny_args(run_root, CONSTANT_LR, epochs=2)])
    assert cli is not None
    run = Path(cli.trainer.log_dir)
    (events,) = run.glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    summary = json.loads((run / "summary.json").read_text())
    assert accumulator.Scalars("val/mIoU")[-1].value == pytest.approx(
        summary["metrics"]["val/mIoU"], abs=1e-6
    )
    samples = accumulator.Images("val/samples")
    assert len(samples) == 2 and samples[-1].width > 100 and samples[-1].height > 100
    png_files = sorted((run / "samples").glob("*.png"))
    assert [p.name for p in png_files] == ["epoch_000.png", "epoch_001.png"]
    rows = [row for path in _wandb_files(wandb_run["run"]) for row in wandb_records.history(path)]
    assert set(tags["images"]) == _image_keys(rows)


def test_offline_when_the_server_cannot_be_reached_even_with_a_key(
    no_wandb_account, tmp_path, monkeypatch
) -> None:
    (tmp_path / "home" / ".netrc").write_text("machine 127.0.0.1:9 login user password " + "k" * 40 + "\n")
    (tmp_path / "home" / ".netrc").chmod(0o600)
    reason = wandb_runs.offline_reason(Namespace(offline=False))
    assert reason == "127.0.0.1 cannot be reached"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_runs.offline_reason(Namespace(offline=False)) == "WANDB_MODE=offline"
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / "home" / ".netrc").unlink()
    assert "no API key" in wandb_runs.offline_reason(Namespace(offline=False))


def test_log_model_is_dropped_offline_with_a_word(no_wandb_account, tmp_path, capsys) -> None:
    args = Namespace(offline=False, log_model=True, id=None, version=None)
    (tmp_path / "run").mkdir()
    wandb_runs.point_at(args, tmp_path / "run", training=True, announce=True)
    assert args.offline is True and args.log_model is False
    line = capsys.readouterr().err.strip()
    assert "checkpoints are not uploaded" in line and line.count("\n") == 0
    assert args.id == (tmp_path / "run" / wandb_runs.RUN_ID_FILE).read_text().strip()


def test_a_spread_of_samples_shows_every_class_and_image_label() -> None:
    # 40 images: the first 30 hold only class 1; class 2 in images 30-35, class 3 only in image 38
    presence = torch.zeros(40, 4, dtype=torch.bool)
    presence[:, 0] = True
    presence[:30, 1] = True
    presence[30:36, 2] = True
    presence[38, 3] = True
    labels = torch.full((40,), 0)
    labels[36:] = 1  # label 1 only in the last four (one of which holds class 3)
    labels[39] = 2
    chosen = spread_of_samples(presence, labels, 8)
    assert len(chosen) == 8 and chosen == sorted(set(chosen))
    assert presence[chosen].all(0).tolist() == [True, False, False, False]  # sanity of the data
    assert presence[chosen].any(0).all()  # every class shown
    assert set(labels[chosen].tolist()) == {0, 1, 2}  # every image label shown
    assert spread_of_samples(presence, labels, 8) == chosen  # the same images every time
    assert spread_of_samples(presence[:5], None, 8) == [0, 1, 2, 3, 4]


def test_an_overlay_blends_class_colours_and_leaves_the_background_clear() -> None:
    image = torch.full((3, 4, 4), 100, dtype=torch.uint8)
    classes = torch.zeros(4, 4, dtype=torch.int64)
    classes[1, 2] = 2
    classes[3, 3] = 3  # the "ignored" entry of a 3-class palette plus white
    palette = torch.tensor([[0, 0, 0], [255, 0, 0], [0, 200, 0], [255, 255, 255]], dtype=torch.uint8)
    drawn = overlay(image, classes, palette, alpha=0.5, clear=(0,))
    assert torch.equal(drawn[:, 0, 0], image[:, 0, 0])  # background: the image itself
    assert drawn[:, 1, 2].tolist() == [50, 150, 50]  # half image, half the class colour
    assert drawn[:, 3, 3].tolist() == [177, 177, 177]  # (100 + 255) / 2, truncated
    assert torch.equal(
        overlay(image, classes, palette, alpha=0.5, clear=())[:, 0, 0],
        torch.tensor([50, 50, 50], dtype=torch.uint8),
    )


def test_a_diverged_wandb_run_keeps_its_summary_in_its_own_folder(no_wandb_account, run_root: Path) -> None:
    lr = (
        "--model.init_args.lr_scheduler.init_args.max_lr=1e12",
        "--model.init_args.optimizer.init_args.lr=1e12",
    )
    args = tiny_args(
        run_root, "--config", WANDB_CONFIG, f"--trainer.logger.init_args.save_dir={run_root}", *lr, epochs=4
    )
    assert main(["fit", *args]) == 1
    run = run_root / "lightning_seg" / "version_0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["log_dir"] == str(run)
    assert not (run_root / "summary.json").exists() and not (run_root / "plots").exists()
    assert os.environ.get("WANDB_MODE") is None  # the offline mode W&B set is undone when the command ends


def test_a_pinned_wandb_id_of_another_run_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "lightning_seg"
    (root / "version_0").mkdir(parents=True)
    (root / "version_0" / wandb_runs.RUN_ID_FILE).write_text("abc123\n")
    with pytest.raises(ConfigError, match="is the run in .*version_0; resume it with --ckpt_path"):
        wandb_runs.check_pinned_id(Namespace(id="abc123", version=None), root, None)
    with pytest.raises(ConfigError, match="is W&B run abc123, not other"):
        wandb_runs.check_pinned_id(Namespace(id="other", version=None), root, root / "version_0")
    wandb_runs.check_pinned_id(Namespace(id="abc123", version=None), root, root / "version_0")  # its own
    wandb_runs.check_pinned_id(Namespace(id="new1", version=None), root, None)


def test_the_server_comes_from_wandb_login_host_settings(no_wandb_account, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_BASE_URL")
    config = tmp_path / "wandb_config"
    config.mkdir()
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(config))
    assert wandb_runs.server_url() == wandb_runs.DEFAULT_SERVER
    (config / "settings").write_text("[default]\nbase_url = http://127.0.0.1:9\n")
    assert wandb_runs.server_url() == "http://127.0.0.1:9"
    netrc = tmp_path / "home" / ".netrc"
    netrc.write_text("machine 127.0.0.1:9 login user password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert wandb_runs.offline_reason(Namespace(offline=False)) == "127.0.0.1 cannot be reached"


def test_image_labels_in_titles_say_when_they_are_unknown() -> None:
    module = Namespace(label_names=["cat", "dog", "bird"])
    text = SampleOverlays._label_text
    assert text(module, torch.tensor([0, 2, -100])) == ["cat", "bird", "?"]
    multi = torch.tensor([[1, 0, 1], [0, 0, 0], [-100, -100, -100]])
    assert text(module, multi) == ["cat, bird", "none", "?"]
