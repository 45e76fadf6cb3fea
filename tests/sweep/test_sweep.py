"""``sweep``: a grid of tiny ``fit`` runs, each in its own process, one ranked table; re-runs skip finished
trials; a failing trial is a row; sweep-file errors are one line. One real sweep is shared by the tests."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import DEFAULT_CONFIG, REPO, assert_one_line_error

from lightning_seg.cli import main
from lightning_seg.errors import ConfigError
from lightning_seg.models import UNet
from lightning_seg.runs import RunLock
from lightning_seg.sweep.runner import _terminate_as_interrupt, error_line
from lightning_seg.sweep.spec import column_names, load_sweep_file, short_value
from lightning_seg.sweep.table import ranked, result_row, write_csv, write_markdown

WEIGHTS = "model.init_args.loss.init_args.weights"
WIDTH = "model.init_args.net.init_args.base_width"

TINY = {
    "trainer.max_epochs": 1,
    "trainer.enable_progress_bar": False,
    "trainer.enable_model_summary": False,
    # no sample overlays, prediction writer or plots: seconds per trial
    "trainer.callbacks": [
        {
            "class_path": "lightning_seg.callbacks.ModelCheckpoint",
            "init_args": {"monitor": "val/mIoU", "mode": "max", "save_last": True},
        },
        {"class_path": "lightning_seg.callbacks.RunSummary", "init_args": {"print_table": False}},
    ],
    "model.init_args.net.init_args.depth": 2,
    "data.init_args.num_train": 32,
    "data.init_args.num_val": 16,
    "data.init_args.num_test": 8,
    "data.init_args.size": 32,
    "data.init_args.batch_size": 8,
}


def _write_sweep(path: Path, base: Path, output: Path, parameters: dict, **extra) -> Path:
    path.write_text(
        yaml.safe_dump(
            {"base": str(base), "overrides": TINY, "parameters": parameters, "output": str(output), **extra},
            sort_keys=False,
        )
    )
    return path


def _csv_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _summary(folder: Path, trial: str) -> dict:
    return json.loads((folder / trial / "version_0" / "summary.json").read_text())


@dataclass
class FirstSweep:
    folder: Path
    base: Path
    exit_code: int
    csv_rows: list[dict[str, str]]  # as the first run wrote them (a later test adds a trial)
    markdown: str
    record: dict


@pytest.fixture(scope="module")
def first_sweep(tmp_path_factory: pytest.TempPathFactory) -> FirstSweep:
    root = tmp_path_factory.mktemp("sweep")
    # a copy: the trials are keyed by their base file's content, which must not change between the runs
    base = Path(shutil.copy(DEFAULT_CONFIG, root / "base.yaml"))
    folder = root / "out"
    parameters = {WEIGHTS: [{"ce": 1.0}, {"ce": 1.0, "dice": 1.0}], WIDTH: [4, 8]}
    sweep_file = _write_sweep(root / "four.yaml", base, folder, parameters)
    code = main(["sweep", "--config", str(sweep_file)])
    return FirstSweep(
        folder,
        base,
        code,
        _csv_rows(folder),
        (folder / "results.md").read_text(),
        json.loads((folder / "sweep.json").read_text()),
    )


# ------------------------------------------------------------------------------------ a real sweep
def test_four_trials_ranked_with_the_numbers_of_their_summaries(first_sweep: FirstSweep) -> None:
    folder, rows = first_sweep.folder, first_sweep.csv_rows
    assert first_sweep.exit_code == 0
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    scores = [float(r["val_mIoU_best_checkpoint"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    values = {entry["id"]: entry["values"] for entry in first_sweep.record["trials"].values()}
    assert sorted(values) == ["trial_000", "trial_001", "trial_002", "trial_003"]
    for row in rows:
        trial = row["trial"]
        summary = _summary(folder, trial)
        # the checkpoint monitors val/mIoU for the highest: its best score is the best val/mIoU
        assert (summary["monitor"], summary["mode"]) == ("val/mIoU", "max")
        assert float(row["val_mIoU_best_checkpoint"]) == summary["best_score"]
        assert float(row["val_mIoU_last"]) == summary["metrics"]["val/mIoU"]
        assert float(row["val_dice_last"]) == summary["metrics"]["val/dice"]
        assert int(row["parameters"]) == summary["parameters"]["total"] == summary["parameters"]["trainable"]
        assert float(row["seconds_per_epoch"]) == summary["seconds_per_epoch"] > 0
        assert int(row["epochs"]) == summary["epochs_completed"] == 1
        assert row["best_checkpoint"] == summary["best_checkpoint"] and Path(row["best_checkpoint"]).is_file()
        # the trial ran with its own values: its run's config record and its net's size say so
        config = yaml.safe_load((folder / trial / "version_0" / "config.yaml").read_text())
        width = config["model"]["init_args"]["net"]["init_args"]["base_width"]
        assert config["model"]["init_args"]["loss"]["init_args"]["weights"] == values[trial][WEIGHTS]
        assert width == values[trial][WIDTH] == int(row["base_width"])
        net = UNet(num_classes=5, base_width=width, depth=2)
        assert summary["parameters"]["total"] == sum(p.numel() for p in net.parameters())
        assert json.loads(row["weights"]) == values[trial][WEIGHTS]
        assert "fit --config" in (folder / trial / "trial.log").read_text()
    # the Markdown table: the same trials in the same order, numbers rounded
    lines = [line for line in first_sweep.markdown.splitlines() if line.startswith("| trial_")]
    assert [line.split(" | ")[0].strip("| ") for line in lines] == [r["trial"] for r in rows]
    for line, row in zip(lines, rows, strict=True):
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        assert (
            f"{float(row['val_mIoU_best_checkpoint']):.4f}" in cells
            and f"{int(row['parameters']):,}" in cells
        )
    assert "| val/mIoU (best ckpt) | val/mIoU (last) | val/dice (last) |" in first_sweep.markdown


def test_rerun_skips_finished_trials_and_a_failing_trial_is_a_row(
    first_sweep: FirstSweep, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = first_sweep.folder
    checkpoints = {p: p.stat().st_mtime_ns for p in folder.glob("trial_*/version_0/checkpoints/*.ckpt")}
    logs = {p: p.read_text() for p in folder.glob("trial_*/trial.log")}
    assert len(checkpoints) == 8 and len(logs) == 4
    # the same sweep with a third loss mix whose term does not exist: its first trial fails when the
    # loss is built (the parser cannot know the term names); the first five trials are the four finished
    parameters = {WEIGHTS: [{"ce": 1.0}, {"ce": 1.0, "dice": 1.0}, {"ce": 1.0, "dcie": 1.0}], WIDTH: [4, 8]}
    sweep_file = _write_sweep(tmp_path / "five.yaml", first_sweep.base, folder, parameters)
    capsys.readouterr()
    assert main(["sweep", "--config", str(sweep_file), "--max_trials", "5"]) == 0
    out = capsys.readouterr().out
    assert "4 trials finished before, kept" in out
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints
    assert {p: p.read_text() for p in logs} == logs
    rows = _csv_rows(folder)
    assert [r["trial"] for r in rows[:4]] == [r["trial"] for r in first_sweep.csv_rows]
    failed = rows[4]
    assert (failed["trial"], failed["status"], failed["val_mIoU_best_checkpoint"]) == (
        "trial_004",
        "failed",
        "",
    )
    assert failed["error"].startswith("loss.weights: unknown term(s) ['dcie']")
    assert "lightning-seg: error: loss.weights" in (folder / "trial_004" / "trial.log").read_text()
    assert "trial_004 failed: loss.weights: unknown term(s)" in out


def test_dry_run_plans_the_resume_of_an_interrupted_trial(
    first_sweep: FirstSweep, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    copy = _copy_with_trial_001(first_sweep, tmp_path / "copy", "interrupted")
    sweep_file = _write_sweep(
        tmp_path / "four.yaml",
        first_sweep.base,
        copy,
        {WEIGHTS: [{"ce": 1.0}, {"ce": 1.0, "dice": 1.0}], WIDTH: [4, 8]},
    )
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    assert main(["sweep", "--config", str(sweep_file), "--dry_run", "true"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before  # nothing written
    assert out.count(" skip ") == 3
    assert "trial_001: python -m lightning_seg fit" in out
    assert f"--ckpt_path {copy / 'trial_001' / 'version_0'}" in out


def _copy_with_trial_001(first_sweep: FirstSweep, copy: Path, status: str) -> Path:
    """A copy of the first sweep's folder whose record says trial_001 is ``status``."""
    shutil.copytree(first_sweep.folder, copy)
    record = json.loads((copy / "sweep.json").read_text())
    key = next(k for k, entry in record["trials"].items() if entry["id"] == "trial_001")
    record["trials"][key]["status"] = status
    (copy / "sweep.json").write_text(json.dumps(record))
    return copy


def _hold_lock(run: Path) -> subprocess.Popen:
    """Another process holding ``run``'s lock as a training ``fit`` does (flock, its pid in the file),
    until its stdin closes."""
    script = (
        "import fcntl, os, sys\n"
        f"handle = os.open({str(run / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(handle, fcntl.LOCK_EX)\n"
        "os.ftruncate(handle, 0)\n"
        "os.write(handle, f'{os.getpid()}\\n'.encode())\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


@pytest.mark.skipif(sys.platform == "win32", reason="run folder locks are flock's")
def test_a_trial_still_training_from_a_killed_sweep_is_skipped_with_a_note(
    first_sweep: FirstSweep, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # a sweep killed while trial_001 trained, on a system where the trial lives on: recorded running,
    # its run's lock held by the live trial
    copy = _copy_with_trial_001(first_sweep, tmp_path / "copy", "running")
    run = copy / "trial_001" / "version_0"
    checkpoints = {p: p.stat().st_mtime_ns for p in run.glob("checkpoints/*.ckpt")}
    parameters = {WEIGHTS: [{"ce": 1.0}, {"ce": 1.0, "dice": 1.0}], WIDTH: [4, 8]}
    sweep_file = _write_sweep(tmp_path / "four.yaml", first_sweep.base, copy, parameters)
    holder = _hold_lock(run)
    try:
        capsys.readouterr()
        assert main(["sweep", "--config", str(sweep_file)]) == 0
        out = capsys.readouterr().out
        assert f"sweep: trial_001 still training in process {holder.pid} (" in out
        assert "3 trials finished before, kept" in out and "[1/" not in out  # nothing ran
        assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints
        row = next(r for r in _csv_rows(copy) if r["trial"] == "trial_001")
        assert row["status"] == "running" and "skipped: run the sweep again when it ends" in row["error"]
    finally:
        holder.communicate("", timeout=30)
    # the trial has ended: the next run resumes it
    assert main(["sweep", "--config", str(sweep_file), "--dry_run", "true"]) == 0
    assert f"--ckpt_path {run}" in capsys.readouterr().out


# ------------------------------------------------------------------------------ bad input, up front
def test_a_bad_value_is_an_invalid_row_and_the_others_are_planned(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sweep_file = _write_sweep(
        tmp_path / "s.yaml", Path(DEFAULT_CONFIG), tmp_path / "out", {WIDTH: [4, "wide"]}
    )
    assert main(["sweep", "--config", str(sweep_file), "--dry_run", "true"]) == 0
    out = capsys.readouterr().out
    assert "invalid" in out and "expected an int, got 'wide'" in out
    assert "trial_000: python -m lightning_seg fit" in out and "trial_001: python" not in out
    assert not (tmp_path / "out").exists()


def _bad_sweeps(tmp_path: Path) -> list[tuple[dict | str, str]]:
    base = DEFAULT_CONFIG
    ok = {WIDTH: [4]}
    return [
        ({"base": base, "parameters": ok, "mehtod": "grid"}, "mehtod: unknown key; did you mean method?"),
        ({"base": base, "parameters": {WIDTH: []}}, f"parameters: {WIDTH}: an empty list"),
        ({"base": base, "parameters": {WIDTH: 4}}, f"parameters: {WIDTH}: a list of values, not a number"),
        ({"base": base, "parameters": {}}, "parameters: nothing to sweep"),
        ({"base": "configs/nope.yaml", "parameters": ok}, "base: configs/nope.yaml: no such file"),
        ({"base": base, "parameters": ok, "method": "random"}, "num_trials: method random needs"),
        ({"base": base, "parameters": ok, "method": "bayes"}, "method: 'bayes' is not one of grid, random"),
        (
            {"base": base, "parameters": {"trainer.default_root_dir": ["x"]}},
            "set by the sweep for each trial",
        ),
        (
            {"base": base, "parameters": {"model.init_args.net.init_args.widht": [4, 8]}},
            "no trial is a valid fit config (the first: model.init_args.net.init_args.widht: unknown key",
        ),
        ({"base": base, "parameters": ok, "overrides": {"trainer.foo": 1}}, "unknown option --trainer.foo"),
        ("base: [unclosed\n", "YAML syntax error at line"),
        ("- a list\n", "a sweep file is a mapping"),
    ]


def test_sweep_file_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for index, (content, expected) in enumerate(_bad_sweeps(tmp_path)):
        path = tmp_path / f"bad{index}.yaml"
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
        assert main(["sweep", "--config", str(path), "--output", str(tmp_path / "out")]) == 2, expected
        assert_one_line_error(capsys, expected)
    assert main(["sweep", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert_one_line_error(capsys, "no such sweep file")
    assert main(["sweep", "--config", DEFAULT_CONFIG, "--max_trials", "0"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "lightning-seg sweep" in out and "--dry_run" in out and "--max_trials" in out


# ---------------------------------------------------------------------------------------- pieces
def test_grid_order_random_draws_and_stable_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    parameters = {"a.x": [1, 2, 3], "b.y": ["p", "q"]}
    path.write_text(yaml.safe_dump({"base": DEFAULT_CONFIG, "parameters": parameters}))
    grid = load_sweep_file(path).trials()
    assert [tuple(t.values.values()) for t in grid] == [(a, b) for a in (1, 2, 3) for b in ("p", "q")]
    assert len({t.key for t in grid}) == 6
    # a value added to a list leaves the other trials' keys as they were
    path.write_text(
        yaml.safe_dump({"base": DEFAULT_CONFIG, "parameters": {**parameters, "a.x": [1, 2, 3, 4]}})
    )
    assert {t.key for t in grid} < {t.key for t in load_sweep_file(path).trials()}
    path.write_text(
        yaml.safe_dump(
            {"base": DEFAULT_CONFIG, "parameters": parameters, "method": "random", "num_trials": 4}
        )
    )
    drawn = load_sweep_file(path).trials()
    assert (
        len(drawn) == 4
        and len({t.key for t in drawn}) == 4
        and {t.key for t in drawn} < {t.key for t in grid}
    )
    assert [t.key for t in load_sweep_file(path).trials()] == [t.key for t in drawn]  # seeded


def test_error_line_of_a_failed_trial() -> None:
    assert (
        error_line("Seed set\nlightning-seg: error: data.size: bad; fix it\n", 2) == "data.size: bad; fix it"
    )
    traceback = (
        'Epoch 0:  10%\rEpoch 0: 20%\nTraceback (most recent call last):\n  File "x.py", line 1, in <mod>\n'
        "    main()\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    )
    assert (
        error_line(traceback, 1) == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    assert error_line("Epoch 0: 10%\n", -signal.SIGKILL) == "killed by SIGKILL (out of memory?)"
    assert error_line("", 3) == "exit code 3"


def _summary_of(best: float | None, monitor: str | None, mode: str | None, miou: float) -> dict:
    return {
        "stage": "fit",
        "status": "completed",
        "best_score": best,
        "monitor": monitor,
        "mode": mode,
        "metrics": {"val/mIoU": miou, "val/dice": miou + 0.125, "val/loss": 2.0},
    }


def test_the_table_names_its_mious_and_a_loss_monitor_is_not_one(tmp_path: Path) -> None:
    def row(trial: str, summary: dict) -> object:
        return result_row(trial, {WIDTH: 4}, "completed", None, summary)

    # a checkpoint that monitors val/loss (mode min): its best_score is a loss, the highest the worst run's
    worst_loss = row("trial_000", _summary_of(0.9, "val/loss", "min", 0.25))
    best_loss = row("trial_001", _summary_of(0.2, "val/loss", "min", 0.5))
    assert (worst_loss.best, worst_loss.last["val/mIoU"], worst_loss.last["val/dice"]) == (None, 0.25, 0.375)
    assert best_loss.score() == 0.5
    # val/mIoU, but for the lowest, or no checkpoint callback at all: no best val/mIoU either
    assert row("trial_002", _summary_of(0.1, "val/mIoU", "min", 0.3)).best is None
    assert row("trial_003", _summary_of(None, None, None, 0.3)).best is None
    # val/mIoU for the highest: the best checkpoint's score, ranked by it over its last validation's
    by_miou = row("trial_004", _summary_of(0.45, "val/mIoU", "max", 0.125))
    assert (by_miou.best, by_miou.last["val/mIoU"], by_miou.score()) == (0.45, 0.125, 0.45)
    failed = result_row("trial_005", {WIDTH: 8}, "failed", "boom", None)
    rows = ranked([failed, worst_loss, by_miou, best_loss])
    assert [r.trial for r in rows] == ["trial_001", "trial_004", "trial_000", "trial_005"]
    write_csv(rows, [WIDTH], tmp_path / "results.csv")
    table = _csv_rows(tmp_path)
    assert list(table[0])[:6] == [
        "trial",
        "base_width",
        "status",
        "val_mIoU_best_checkpoint",
        "val_mIoU_last",
        "val_dice_last",
    ]
    assert [(r["val_mIoU_best_checkpoint"], r["val_mIoU_last"]) for r in table] == [
        ("", "0.5"),
        ("0.45", "0.125"),
        ("", "0.25"),
        ("", ""),
    ]
    write_markdown(rows, [WIDTH], tmp_path / "results.md", "t")
    markdown = (tmp_path / "results.md").read_text()
    assert "| status | val/mIoU (best ckpt) | val/mIoU (last) | val/dice (last) |" in markdown
    assert "| trial_000 | 4 | completed |  | 0.2500 | 0.3750 |" in markdown


def test_a_sweep_ranks_by_any_logged_metric_and_shows_the_columns_it_lists(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"base: {DEFAULT_CONFIG}\nparameters:\n  {WIDTH}: [4, 8]\nrank_by: val/loss\nmode: min\n"
        "columns: [val/dice, val/label_f1]\n"
    )
    ranking = load_sweep_file(sweep).ranking
    assert (ranking.metric, ranking.mode, ranking.columns) == (
        "val/loss",
        "min",
        ("val/dice", "val/label_f1"),
    )
    low = result_row(
        "trial_000", {WIDTH: 4}, "completed", None, _summary_of(0.2, "val/loss", "min", 0.1), ranking
    )
    high = result_row(
        "trial_001", {WIDTH: 8}, "completed", None, _summary_of(0.9, "val/loss", "min", 0.6), ranking
    )
    assert low.best == 0.2 and [r.trial for r in ranked([high, low], ranking)] == ["trial_000", "trial_001"]
    write_csv([low, high], [WIDTH], tmp_path / "results.csv", ranking)
    assert list(_csv_rows(tmp_path)[0])[3:7] == [
        "val_loss_best_checkpoint",
        "val_loss_last",
        "val_dice_last",
        "val_label_f1_last",
    ]
    for bad, needle in (
        ("rank_by: mIoU", "rank_by: 'mIoU'"),
        ("mode: up", "mode: 'up'"),
        ("columns: dice", "columns: 'dice'"),
    ):
        sweep.write_text(f"base: {DEFAULT_CONFIG}\nparameters:\n  {WIDTH}: [4]\n{bad}\n")
        with pytest.raises(ConfigError, match=needle):
            load_sweep_file(sweep)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_the_sweep_as_ctrl_c(name: str) -> None:
    if not hasattr(signal, name):
        pytest.skip(f"no {name} here")
    number = getattr(signal, name)
    before = signal.getsignal(number)
    with pytest.raises(KeyboardInterrupt), _terminate_as_interrupt():
        os.kill(os.getpid(), number)
        time.sleep(5)  # the handler runs at the next bytecode: this is never reached in full
    assert signal.getsignal(number) is before


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie no one has reaped yet does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_trial_dies_with_its_sweep_when_that_is_killed() -> None:
    # a stand-in sweep starting a stand-in trial as run_trial does, then SIGKILL: nothing it can handle
    script = (
        "import subprocess, sys, time\n"
        "from lightning_seg.sweep.runner import _die_with_parent\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],"
        " start_new_session=True, preexec_fn=_die_with_parent())\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    sweep = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert sweep.stdout is not None
    pid = int(sweep.stdout.readline())
    try:
        assert _alive(pid)
        sweep.kill()
        sweep.wait(timeout=30)
        deadline = time.time() + 30
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_short_values_and_column_names() -> None:
    assert short_value({"ce": 1.0, "dice": 0.5}) == "ce=1,dice=0.5"
    assert (
        short_value({"class_path": "lightning_seg.models.SMPNet", "init_args": {"arch": "FPN"}})
        == "SMPNet(arch=FPN)"
    )
    assert (
        short_value([48, 64]) == "[48,64]"
        and short_value(None) == "null"
        and short_value("resnet18") == "resnet18"
    )
    names = column_names(
        ["model.init_args.net.init_args.arch", "model.init_args.loss.init_args.arch", "data.init_args.size"]
    )
    assert list(names.values()) == ["net.arch", "loss.arch", "size"]


def test_shipped_sweeps_parse(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # their base paths are read from the working directory
    for name, trials in (("default_losses", 4), ("smp_archs", 16)):
        path = REPO / "configs" / "sweeps" / f"{name}.yaml"
        assert len(load_sweep_file(path).trials()) == trials
        assert main(["sweep", "--config", str(path), "--dry_run", "true", "--output", "/nonexistent/x"]) == 0
        out = capsys.readouterr().out
        assert out.count(": python -m lightning_seg fit") == trials and "invalid" not in out


# ------------------------------------------------------------------------------- Ctrl-C and resume
@pytest.mark.slow
def test_ctrl_c_records_the_trial_as_interrupted_and_a_rerun_resumes_it(tmp_path: Path) -> None:
    base = Path(shutil.copy(DEFAULT_CONFIG, tmp_path / "base.yaml"))
    folder = tmp_path / "out"
    sweep_file = _write_sweep(tmp_path / "one.yaml", base, folder, {WIDTH: [4]})
    sweep_file.write_text(sweep_file.read_text().replace("trainer.max_epochs: 1", "trainer.max_epochs: 10"))
    command = [sys.executable, "-m", "lightning_seg", "sweep", "--config", str(sweep_file)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    last = folder / "trial_000" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 1, output
    entry = next(iter(json.loads((folder / "sweep.json").read_text())["trials"].values()))
    assert entry["status"] == "interrupted"
    assert _summary(folder, "trial_000")["status"] == "interrupted"
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming" in done.stdout
    summary = _summary(folder, "trial_000")
    assert summary["status"] == "completed" and summary["epochs_completed"] == 10
    assert (folder / "trial_000" / "version_0" / "config.resume-1.yaml").is_file()
    assert not (folder / "trial_000" / "version_1").exists()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_sweep_killed_outright_takes_its_trial_with_it_and_a_rerun_resumes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = Path(shutil.copy(DEFAULT_CONFIG, tmp_path / "base.yaml"))
    folder = tmp_path / "out"
    sweep_file = _write_sweep(tmp_path / "one.yaml", base, folder, {WIDTH: [4]})
    sweep_file.write_text(sweep_file.read_text().replace("trainer.max_epochs: 1", "trainer.max_epochs: 10"))
    command = [sys.executable, "-m", "lightning_seg", "sweep", "--config", str(sweep_file)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = folder / "trial_000" / "version_0"
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
            time.sleep(0.2)
        trial = RunLock(run).holder()
        assert trial is not None and trial != process.pid
    finally:
        process.kill()  # SIGKILL: nothing the sweep can handle
        process.wait(timeout=30)
    deadline = time.time() + 60
    # the trial lets go of its run when it shuts down (atexit), then ends
    while (RunLock(run).holder() is not None or _alive(trial)) and time.time() < deadline:
        time.sleep(0.2)
    assert RunLock(run).holder() is None and not _alive(trial)
    # ended by the death signal the sweep gave it, not by finishing its 10 epochs
    assert "Received SIGTERM" in (folder / "trial_000" / "trial.log").read_text()
    entry = next(iter(json.loads((folder / "sweep.json").read_text())["trials"].values()))
    assert entry["status"] == "running"  # the sweep had no chance to say more
    assert main(["sweep", "--config", str(sweep_file), "--dry_run", "true"]) == 0
    assert f"--ckpt_path {run}" in capsys.readouterr().out
