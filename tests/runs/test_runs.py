"""Runs that survive and records that stay true: last.ckpt, exact resumes, atomic checkpoint writes, run
folders held by one process, divergence, evaluation records, Ctrl-C. Tiny in-process CLI runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, TinyRun, assert_one_line_error, tiny_args

from lightning_seg.cli import main, run_cli
from lightning_seg.runs import RunLock

CHECKPOINTS_EVERY_3_STEPS = """
trainer:
  callbacks:
    - class_path: lightning_seg.callbacks.ModelCheckpoint
      init_args: {monitor: val/mIoU, mode: max, save_last: true, last_every_n_train_steps: 3}
    - class_path: lightning_seg.callbacks.RunSummary
      init_args: {print_table: false}
"""

CONSTANT_LR = ("--model.init_args.lr_scheduler=null",)
"""A run that can be extended (a one-cycle schedule cannot)."""


def _fit(root: Path, *extra: str, epochs: int = 1):
    cli = run_cli(["fit", *tiny_args(root, *extra, epochs=epochs)])
    assert cli is not None
    return cli


def _fit_exit_code(root: Path, *extra: str, epochs: int = 1, resume: bool = False) -> int:
    return main(
        ["fit", *tiny_args(root, *extra, epochs=epochs), *(["--ckpt_path", "last"] if resume else [])]
    )


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def every_3_steps(tmp_path: Path) -> list[str]:
    config = tmp_path / "checkpoints.yaml"
    config.write_text(CHECKPOINTS_EVERY_3_STEPS)
    return ["--config", str(config)]


# ------------------------------------------------------------------------------------ last.ckpt
def test_last_checkpoint_is_the_end_of_every_epoch_even_without_improvement(
    run_root: Path, tmp_path: Path
) -> None:
    # monitoring "epoch" in min mode: only epoch 0 is ever the best; Lightning's own ModelCheckpoint then
    # leaves last.ckpt at epoch 0. A config naming Lightning's class gets ours.
    config = tmp_path / "stock.yaml"
    config.write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {monitor: epoch, mode: min, save_last: true}\n"
    )
    cli = _fit(run_root, "--config", str(config), epochs=3)
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == cli.trainer.global_step == 12
    assert checkpoint["epoch"] == 2
    assert (
        "lightning_seg.callbacks.ModelCheckpoint" in (Path(cli.trainer.log_dir) / "config.yaml").read_text()
    )


def test_last_checkpoint_every_n_training_steps(run_root: Path, every_3_steps: list[str]) -> None:
    crash = ("--trainer.callbacks+=helpers.CrashAtStep", "--trainer.callbacks.step=7")
    with pytest.raises(RuntimeError, match="simulated crash at step 7"):
        run_cli(["fit", *tiny_args(run_root, *every_3_steps, *crash, epochs=2)])
    last = next(run_root.glob("default/version_*/checkpoints/last.ckpt"))
    # 4 steps an epoch: saved at step 3, at the end of epoch 0 (4) and at step 6; step 7 crashed
    assert torch.load(last, weights_only=True)["global_step"] == 6


def test_last_checkpoint_without_validation_at_every_epoch_end(run_root: Path, every_3_steps) -> None:
    crash = ("--trainer.callbacks+=helpers.CrashAtStep", "--trainer.callbacks.step=5")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli(["fit", *tiny_args(run_root, "--trainer.check_val_every_n_epoch=2", *crash, epochs=2)])
    last = next(run_root.glob("default/version_*/checkpoints/last.ckpt"))
    assert torch.load(last, weights_only=True)["global_step"] == 4  # epoch 0 ended unvalidated at step 4


def test_last_checkpoint_with_validation_inside_the_epoch_ends_at_the_last_step(run_root: Path) -> None:
    cli = _fit(run_root, "--trainer.val_check_interval=0.75", epochs=2)
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == cli.trainer.global_step == 8
    # and a resume of it has nothing left to do
    assert _fit_exit_code(run_root, "--trainer.val_check_interval=0.75", epochs=2, resume=True) == 0


def test_step_saves_wait_for_the_end_of_an_accumulation_window(run_root: Path, every_3_steps) -> None:
    crash = ("--trainer.callbacks+=helpers.CrashAtStep", "--trainer.callbacks.step=2")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli(
            [
                "fit",
                *tiny_args(
                    run_root,
                    *every_3_steps,
                    "--trainer.accumulate_grad_batches=2",
                    *crash,
                    "--data.init_args.num_train=48",
                    epochs=1,
                ),
            ]
        )
    # 12 batches, 6 optimizer steps an epoch; nothing was saved in the middle of a window (step 0)
    assert not list(run_root.glob("default/version_*/checkpoints/last.ckpt"))


# --------------------------------------------------------------------------------- exact resumes
ACCUMULATE_2 = ("--trainer.accumulate_grad_batches=2", "--data.init_args.num_train=32")


@pytest.mark.parametrize(
    ("crash_step", "options"),
    [
        (2, ()),
        (5, ()),
        (7, ()),
        (5, ("--data.init_args.num_workers=1",)),
        (6, ("--data.init_args.num_workers=1",)),
        (7, ACCUMULATE_2),
    ],
    ids=[
        "before-any-checkpoint",
        "epoch-1",
        "epoch-1-after-step-save",
        "worker",
        "worker-epoch-end",
        "accumulation",
    ],
)
def test_resume_after_a_crash_reproduces_the_uninterrupted_run(
    run_root: Path, every_3_steps: list[str], crash_step: int, options: tuple[str, ...]
) -> None:
    """Crash in epoch 0 before any checkpoint (2), in epoch 1 after a mid-epoch save at step 3 and the
    epoch-0 end (5), and in epoch 1 after a mid-epoch save at step 6 (7); resume with --ckpt_path last.
    The resumed run's final weights and val/mIoU equal the uninterrupted run's exactly. With a loader
    worker, the sampler is read as soon as the iterator exists ("worker-epoch-end" resumes from the end of
    epoch 0); with gradient accumulation checkpoints are taken at the ends of accumulation windows only."""
    extra = ("--trainer.deterministic=true", *every_3_steps, *options)
    reference = _fit(run_root / "reference", *extra, epochs=3)
    expected = _state(Path(reference.trainer.log_dir) / "checkpoints" / "last.ckpt")
    crash = ("--trainer.callbacks+=helpers.CrashAtStep", f"--trainer.callbacks.step={crash_step}")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cli(["fit", *tiny_args(run_root / "crashed", *extra, *crash, epochs=3)])
    if crash_step == 2:  # nothing saved yet: a new run from the start
        resumed = _fit(run_root / "crashed", *extra, epochs=3)
    else:
        resumed = run_cli(["fit", *tiny_args(run_root / "crashed", *extra, epochs=3), "--ckpt_path", "last"])
        assert resumed is not None
    assert resumed.trainer.global_step == reference.trainer.global_step
    got = _state(Path(resumed.trainer.log_dir) / "checkpoints" / "last.ckpt")
    assert _same_weights(expected, got)
    assert float(resumed.trainer.callback_metrics["val/mIoU"]) == float(
        reference.trainer.callback_metrics["val/mIoU"]
    )


def test_checkpoints_hold_the_random_state_and_the_data_position_as_plain_data(
    run_root: Path, every_3_steps
) -> None:
    with pytest.raises(RuntimeError, match="simulated crash at step 4"):
        run_cli(
            [
                "fit",
                *tiny_args(
                    run_root,
                    *every_3_steps,
                    "--trainer.callbacks+=helpers.CrashAtStep",
                    "--trainer.callbacks.step=4",
                    epochs=2,
                ),
            ]
        )
    last = next(run_root.glob("default/version_*/checkpoints/last.ckpt"))
    checkpoint = torch.load(last, weights_only=True)  # no pickled NumPy arrays
    assert checkpoint["SyntheticDataModule"] == {"shuffle_seed": 42, "epoch": 0, "batches_done": 3}
    assert set(checkpoint["random_state"]) >= {"torch", "numpy", "python"}


# ------------------------------------------------------------------------------- atomic writes
def test_checkpoints_are_written_beside_their_target_and_renamed(run_root: Path, monkeypatch) -> None:
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):
        renames.append((Path(src), Path(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    cli = _fit(run_root)
    folder = Path(cli.trainer.log_dir) / "checkpoints"
    written = [(s, d) for s, d in renames if d.suffix == ".ckpt"]
    assert {d.name for _, d in written} == {p.name for p in folder.glob("*.ckpt")}
    assert all(s.parent == d.parent and s.name.startswith(f".{d.name}.") for s, d in written)
    assert not list(folder.glob(".*.tmp"))


def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    from lightning_seg.checkpoints.atomic_io import AtomicCheckpointIO
    from lightning_seg.utils.atomic import HOST

    io, target = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    orphan = tmp_path / f".last.ckpt.{HOST}-999999999.tmp"  # left by a killed process that no longer runs
    orphan.write_bytes(b"half a checkpoint")
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)  # a process's first save cleans up
    assert not orphan.exists()
    good = target.read_bytes()

    def full_disk(obj, handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left") as error:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, target)
    assert error.value.filename == str(target)
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file, orphan removed


# ------------------------------------------------------------------------------ run folders, lock
def _hold(folder: Path) -> subprocess.Popen:
    """Another live process holding ``folder``'s lock, as a training run does."""
    code = (
        "import sys, time; from pathlib import Path; from lightning_seg.runs import RunLock; "
        "RunLock(Path(sys.argv[1])).acquire('x'); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_resume_last_skips_a_run_another_process_is_training(run_root: Path, capsys) -> None:
    older = Path(_fit(run_root, *CONSTANT_LR, epochs=1).trainer.log_dir)
    newer = Path(_fit(run_root, *CONSTANT_LR, epochs=1).trainer.log_dir)
    holder = _hold(newer)
    try:
        resumed = run_cli(["fit", *tiny_args(run_root, *CONSTANT_LR, epochs=2), "--ckpt_path", "last"])
        assert resumed is not None and Path(resumed.trainer.log_dir) == older
        assert main(["fit", *tiny_args(run_root, *CONSTANT_LR, epochs=2), "--ckpt_path", str(newer)]) == 2
        line = assert_one_line_error(capsys)
        assert f"is being trained by process {holder.pid}" in line and newer.name in line
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up (kill -9): its stale lock file does not block the resume
    assert (newer / ".lock").read_text().strip() == str(holder.pid)
    resumed = run_cli(["fit", *tiny_args(run_root, *CONSTANT_LR, epochs=2), "--ckpt_path", str(newer)])
    assert resumed is not None and Path(resumed.trainer.log_dir) == newer
    assert RunLock(newer).holder() is None  # released at the end


def test_a_pinned_version_that_holds_a_run_is_refused(run_root: Path, capsys) -> None:
    first = Path(_fit(run_root).trainer.log_dir)
    assert main(["fit", *tiny_args(run_root), f"--trainer.logger.init_args.version={first.name}"]) == 2
    line = assert_one_line_error(capsys)
    assert "already holds a run" in line and "--ckpt_path" in line
    # the run's own record, passed back as a config, starts a new run (its version is saved as null)
    again = run_cli(["fit", "--config", str(first / "config.yaml")])
    assert again is not None and Path(again.trainer.log_dir) != first


def test_resume_last_of_a_pinned_version_and_without_a_logger(run_root: Path, every_3_steps) -> None:
    first = Path(_fit(run_root, *CONSTANT_LR).trainer.log_dir)
    pinned = f"--trainer.logger.init_args.version={first.name}"
    resumed = run_cli(["fit", *tiny_args(run_root, *CONSTANT_LR, pinned, epochs=2), "--ckpt_path", "last"])
    assert resumed is not None and Path(resumed.trainer.log_dir) == first and resumed.trainer.global_step == 8
    # without a logger Lightning keeps checkpoints in <default_root_dir>/checkpoints: "last" is found there
    bare = run_root / "bare"
    no_logger = ("--trainer.logger=false", *every_3_steps)  # (and no LearningRateMonitor, which needs one)
    _fit(bare, *no_logger)
    tested = run_cli(["test", *tiny_args(bare, *no_logger), "--ckpt_path", "last"])
    assert tested is not None and tested.trainer.ckpt_path == str(bare / "checkpoints" / "last.ckpt")


def test_a_fit_without_validation_still_writes_its_summary(run_root: Path) -> None:
    cli = _fit(run_root, "--trainer.limit_val_batches=0", epochs=1)
    summary = json.loads((Path(cli.trainer.log_dir) / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 4


def test_concurrent_claims_get_different_folders(run_root: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from lightning_seg.runs.folders import _new_numbered_folder

    # eight claims racing (threads list the folder, then mkdir): each gets its own folder
    with ThreadPoolExecutor(8) as pool:
        folders = list(pool.map(lambda _: _new_numbered_folder(run_root / "default"), range(8)))
    assert sorted(f.name for f in folders) == sorted(f"version_{i}" for i in range(8))


# ------------------------------------------------------------------------------------ records
def test_the_training_record_is_written_once_and_evaluations_write_their_own(run_root: Path) -> None:
    fit = _fit(run_root, *CONSTANT_LR, epochs=1)
    run = Path(fit.trainer.log_dir)
    record, summary = (run / "config.yaml").read_text(), (run / "summary.json").read_text()
    best = fit.trainer.checkpoint_callback.best_model_path
    for stage in ("validate", "test", "predict"):
        assert run_cli([stage, *tiny_args(run_root), "--ckpt_path", best]) is not None
    resumed = run_cli(["fit", *tiny_args(run_root, *CONSTANT_LR, epochs=2), "--ckpt_path", "last"])
    assert resumed is not None and Path(resumed.trainer.log_dir) == run
    assert (run / "config.yaml").read_text() == record  # never rewritten
    assert "max_epochs: 2" in (run / "config.resume-1.yaml").read_text()
    assert (run / "summary.json").read_text() != summary  # the resumed run evaluated: it may replace it
    assert sorted(p.name for p in (run_root / "default").iterdir()) == [run.name]  # no new version folders
    for stage in ("validate", "test", "predict"):
        (folder,) = (run / stage).iterdir()
        assert (folder / "config.yaml").is_file()
    assert json.loads(next((run / "test").glob("*/summary.json")).read_text())["stage"] == "test"
    assert len(list((run / "predict").glob("*/predictions/*_index.png"))) == 4


def test_each_predict_writes_a_new_folder_named_in_its_last_line(
    run_root: Path, tiny_run: TinyRun, capsys
) -> None:
    best = str(tiny_run.best)
    capsys.readouterr()
    folders = []
    for _ in range(2):
        assert run_cli(["predict", *tiny_args(run_root), "--ckpt_path", best]) is not None
        last_line = capsys.readouterr().out.strip().splitlines()[-1]
        folders.append(Path(last_line.rpartition(" ")[2]))
    assert folders[0] != folders[1] and all(len(list(f.glob("*.png"))) == 8 for f in folders)
    # an explicit folder that already holds files is refused, not mixed into
    assert (
        main(
            [
                "predict",
                *tiny_args(run_root),
                "--ckpt_path",
                best,
                f"--trainer.callbacks.init_args.output_dir={folders[0]}",
            ]
        )
        == 2
    )
    assert "already holds files" in assert_one_line_error(capsys)


# -------------------------------------------------------------------------- resumes with nothing to do
def test_resuming_a_finished_run_says_so_and_keeps_its_summary(run_root: Path, capsys) -> None:
    run = Path(_fit(run_root, epochs=1).trainer.log_dir)
    summary = (run / "summary.json").read_bytes()
    capsys.readouterr()
    assert main(["fit", *tiny_args(run_root, epochs=1), "--ckpt_path", "last"]) == 0
    line = assert_one_line_error(capsys, prefix="lightning-seg: ")  # a note (exit 0), not an error
    assert not line.startswith("lightning-seg: error:")
    assert "finished" in line and "nothing left to do" in line and "max_epochs" in line
    assert (run / "summary.json").read_bytes() == summary
    assert not list(run.glob("config.resume-*.yaml"))


def test_resuming_a_run_stopped_by_max_time_says_so(run_root: Path, capsys) -> None:
    run = Path(_fit(run_root, "--trainer.max_time=00:00:00:01", epochs=1000).trainer.log_dir)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stopped_by"] == "max_time"
    capsys.readouterr()
    assert _fit_exit_code(run_root, "--trainer.max_time=00:00:00:01", epochs=1000, resume=True) == 0
    line = assert_one_line_error(capsys, "stopped by max_time", prefix="lightning-seg: ")  # exit 0: a note
    assert not line.startswith("lightning-seg: error:")


def test_extending_a_finished_one_cycle_run_is_refused_before_any_data_is_read(
    run_root: Path, capsys, monkeypatch
) -> None:
    _fit(run_root, epochs=1)
    from lightning_seg.data.synthetic import SyntheticDataModule

    def no_data(*args, **kwargs):
        raise AssertionError("data read before the one-line error")

    monkeypatch.setattr(SyntheticDataModule, "setup", no_data)
    assert main(["fit", *tiny_args(run_root, epochs=2), "--ckpt_path", "last"]) == 2
    line = assert_one_line_error(capsys)
    assert "OneCycleLR schedule ends at step 4" in line and "step 8" in line and "max_epochs 1" in line


def test_max_time_that_cuts_a_schedule_short_is_warned_once(run_root: Path) -> None:
    with pytest.warns(UserWarning, match=r"max_time 0:00:02 will stop training near step .* OneCycleLR"):
        _fit(run_root, "--trainer.max_time=00:00:00:02", epochs=400)


# ---------------------------------------------------------------------------------- divergence
def test_a_diverging_run_stops_with_one_line_exit_1_and_no_nan_checkpoint(run_root: Path, capsys) -> None:
    lr = (
        "--model.init_args.lr_scheduler.init_args.max_lr=1e12",
        "--model.init_args.optimizer.init_args.lr=1e12",
    )
    assert _fit_exit_code(run_root, *lr, epochs=4) == 1
    line = assert_one_line_error(capsys)
    assert line.startswith("lightning-seg: error: training diverged: non-finite loss at step")
    assert "ce=" in line and "dice=" in line
    (run,) = (run_root / "default").iterdir()
    for checkpoint in run.glob("checkpoints/*.ckpt"):
        assert all(torch.isfinite(t).all() for t in _state(checkpoint).values() if t.is_floating_point())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged"
    _assert_names_the_last_finite_checkpoint(line, run)


def _assert_names_the_last_finite_checkpoint(line: str, run: Path) -> Path | None:
    """The divergence line's ``last finite checkpoint: <path>`` exists, holds finite weights and is the
    checkpoint of the latest step in the run; ``no checkpoint was written`` only where none was."""
    checkpoints = sorted(run.glob("checkpoints/*.ckpt"))
    if "no checkpoint was written" in line:
        assert not checkpoints, checkpoints
        return None
    named = line.split("last finite checkpoint: ", 1)[1].split("; ", 1)[0]
    # the path as given, or its tail after "…/" when long (errors.short_path)
    (path,) = [
        c for c in checkpoints if str(c) == named or (named.startswith("…/") and str(c).endswith(named[1:]))
    ]
    assert path.is_file()
    assert all(torch.isfinite(t).all() for t in _state(path).values() if t.is_floating_point())
    steps = {c: torch.load(c, map_location="cpu", weights_only=True)["global_step"] for c in checkpoints}
    assert steps[path] == max(steps.values()), steps
    return path


def test_a_few_non_finite_steps_can_be_skipped(run_root: Path) -> None:
    cli = _fit(
        run_root,
        "--trainer.callbacks+=helpers.NonFiniteBatchAtStep",
        "--trainer.callbacks.step=2",
        "--trainer.callbacks+=lightning_seg.callbacks.DivergenceGuard",
        "--trainer.callbacks.max_skipped_steps=1",
        epochs=2,
    )
    guard = next(c for c in cli.trainer.callbacks if type(c).__name__ == "DivergenceGuard")
    assert guard.skipped_steps == 1
    # the weights, and the BatchNorm statistics the NaN batch went through, are finite
    assert all(torch.isfinite(t).all() for t in cli.model.state_dict().values() if t.is_floating_point())


def test_without_skipping_one_non_finite_step_stops_the_run(run_root: Path, capsys) -> None:
    nan_batch = ("--trainer.callbacks+=helpers.NonFiniteBatchAtStep", "--trainer.callbacks.step=2")
    assert _fit_exit_code(run_root, *nan_batch, epochs=2) == 1
    line = assert_one_line_error(capsys, "non-finite loss at step 3")
    (run,) = (run_root / "default").iterdir()
    assert "no checkpoint was written" in line  # step 3 is in epoch 0: nothing saved yet
    _assert_names_the_last_finite_checkpoint(line, run)


def test_the_divergence_line_names_the_last_finite_checkpoint(run_root: Path, capsys) -> None:
    """A non-finite step in epoch 1 (step 6): the line names the checkpoint of the end of epoch 0 (step 4)."""
    nan_batch = ("--trainer.callbacks+=helpers.NonFiniteBatchAtStep", "--trainer.callbacks.step=5")
    assert _fit_exit_code(run_root, *nan_batch, epochs=2) == 1
    line = assert_one_line_error(capsys, "non-finite loss at step 6", "last finite checkpoint: ")
    (run,) = (run_root / "default").iterdir()
    path = _assert_names_the_last_finite_checkpoint(line, run)
    assert path is not None and torch.load(path, weights_only=True)["global_step"] == 4


# ------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_writes_the_summary_of_what_was_completed(run_root: Path) -> None:
    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores further Ctrl-C while it shuts down
    try:
        with pytest.raises(SystemExit) as stop:
            run_cli(
                [
                    "fit",
                    *tiny_args(
                        run_root,
                        "--trainer.callbacks+=helpers.InterruptAtStep",
                        "--trainer.callbacks.step=6",
                        epochs=3,
                    ),
                ]
            )
    finally:
        signal.signal(signal.SIGINT, handler)
    assert stop.value.code == 1
    (run,) = (run_root / "default").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == 1
    assert summary["global_step"] == 6 and 0 <= summary["metrics"]["val/mIoU"] <= 1
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


# ------------------------------------------------------------------------- kill -9, subprocesses
@pytest.mark.slow
def test_kill_9_at_three_points_then_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    """The default config (deterministic), killed with SIGKILL at three steps and resumed each time with
    ``--ckpt_path last``: the final val/mIoU and weights equal the uninterrupted run's."""
    checkpoints = tmp_path / "checkpoints.yaml"
    checkpoints.write_text(
        CHECKPOINTS_EVERY_3_STEPS.replace("last_every_n_train_steps: 3", "last_every_n_train_steps: 5")
    )
    args = [
        "--config",
        str(checkpoints),
        "--trainer.deterministic=true",
        "--trainer.max_epochs=3",
        "--data.init_args.num_train=256",
        "--data.init_args.num_val=64",
        "--trainer.enable_progress_bar=false",
    ]
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def fit(root: Path, *extra: str) -> subprocess.CompletedProcess:
        command = [
            sys.executable,
            "-m",
            "lightning_seg",
            "fit",
            "--config",
            str(REPO / "configs" / "default.yaml"),
            f"--trainer.default_root_dir={root}",
            f"--trainer.logger.init_args.save_dir={root}",
            *args,
            *extra,
        ]
        return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)

    start = time.monotonic()
    assert fit(tmp_path / "reference").returncode == 0
    reference = next((tmp_path / "reference").glob("default/version_0"))
    # 16 steps an epoch, last.ckpt every 5 steps: resumed from steps 5, 20 and 35, each inside an epoch
    kills = (10, 21, 40)
    for step in kills:
        killed = fit(
            tmp_path / "killed",
            "--trainer.callbacks+=helpers.CrashAtStep",
            f"--trainer.callbacks.step={step}",
            "--trainer.callbacks.hard=true",
            *(["--ckpt_path", "last"] if step != kills[0] else []),
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    done = fit(tmp_path / "killed", "--ckpt_path", "last")
    assert done.returncode == 0, done.stderr[-2000:]
    run = next((tmp_path / "killed").glob("default/version_0"))
    expected, got = (json.loads((r / "summary.json").read_text()) for r in (reference, run))
    assert got["metrics"]["val/mIoU"] == expected["metrics"]["val/mIoU"]
    assert _same_weights(
        _state(reference / "checkpoints" / "last.ckpt"), _state(run / "checkpoints" / "last.ckpt")
    )
    print(
        f"kill -9 at steps {kills}, resumed: val/mIoU {got['metrics']['val/mIoU']:.6f} == "
        f"{expected['metrics']['val/mIoU']:.6f} uninterrupted; {time.monotonic() - start:.0f} s"
    )
