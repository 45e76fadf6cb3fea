"""``sweep``: one ``fit`` per combination of config overrides, each in its own process, and one table.

``python -m lightning_seg sweep --config configs/sweeps/X.yaml [--dry_run true] [--max_trials N]``

1. The sweep file is checked (:mod:`lightning_seg.sweep.spec`): a problem is one line, exit code 2.
2. Every trial's ``fit`` arguments are parsed here by the CLI's own parser and its checks of the config alone
   (nothing is built or written). If no trial parses, the sweep file itself is wrong (an unknown key, a bad
   override) and it is refused in one line, exit code 2. A trial that does not parse while others do (one bad
   value, a key that fits only some of the swept classes) is a row with status ``invalid`` and its error; it
   never runs. A value that parses but fails when the run is built or trains is a ``failed`` row; the
   sweep goes on either way.
3. Each trial runs as ``python -m lightning_seg fit --config <base>... <overrides> <its values>
   --trainer.default_root_dir <sweep>/trial_NNN`` in its own process (a crash or out-of-memory ends that
   trial only), its output in ``<sweep>/trial_NNN/trial.log``. With a TensorBoard or CSV logger its run is
   ``<sweep>/trial_NNN/version_K`` (logger ``save_dir`` the sweep folder, ``name`` the trial); with W&B
   ``<sweep>/trial_NNN/<project>/version_K`` (``save_dir`` the trial folder; every trial a W&B run of the
   same project, offline by itself without an account); else the trial folder itself.
4. Its results are its run's ``summary.json``; no summary, no result. ``<sweep>/results.md`` and
   ``results.csv`` rank the trials by val/mIoU, the best checkpoint's where the checkpoint callback
   monitors it, else the last validation's (failed ones last); the table is printed at the end.

Running the same command again (``<sweep>/sweep.json`` keys each trial by a hash of its base files and
overrides): a finished trial (completed, stopped by max_time or early stopping, or diverged) is kept as it is;
one that failed or was interrupted resumes its run (``fit --ckpt_path <run>``) when it has a ``last.ckpt``,
else starts a new run in its folder; the rest run. Ctrl-C (or SIGTERM, or SIGHUP when its terminal closes)
passes one interrupt to the running trial, waits for it to record itself (its ``summary.json`` says
interrupted), marks it interrupted and stops; a second one kills it. A sweep killed outright (SIGKILL) takes
its trial with it on Linux (the trial gets SIGTERM); elsewhere the trial trains on, and a re-run meanwhile
skips it with a note (its run folder's lock is held). One sweep process at a time holds a sweep folder
(``<sweep>/.lock``).

Exit code: 0 when at least one trial has results, 1 when none has or the sweep was interrupted, 2 on a bad
sweep file.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError, ArgumentParser

from lightning_seg.errors import DEBUG_ENV, ConfigError, short_path, truncate
from lightning_seg.runs import folders as runs
from lightning_seg.runs import wandb as wandb_runs
from lightning_seg.sweep import spec as sweep_spec
from lightning_seg.sweep.spec import (
    DEFAULT_RANKING,
    Ranking,
    SweepFile,
    Trial,
    column_names,
    load_sweep_file,
    override_args,
    short_value,
)
from lightning_seg.sweep.table import (
    SUCCEEDED,
    ResultRow,
    print_results,
    ranked,
    result_row,
    write_csv,
    write_markdown,
)
from lightning_seg.utils.atomic import atomic_write
from lightning_seg.utils.error_lines import one_line

FINISHED = (*SUCCEEDED, "diverged")
"""Trial statuses a re-run keeps: the run ended on its own terms (a divergence would diverge again)."""

ERROR_PREFIX = "lightning-seg: error: "
INTERRUPTED = "interrupted (Ctrl-C, SIGTERM or SIGHUP); run the sweep again to resume it"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


# ------------------------------------------------------------------------------------------ the trials
TrialName = Callable[[Trial], str]
"""A trial's folder name when a caller names them (``cv``: ``fold_K``), instead of ``trial_NNN``."""
Report = Callable[[list["TrialPlan"], list[ResultRow], Path], bool]
"""What a caller makes of the finished trials (``cv``: its fold summary) instead of the sweep's table: given
the plans, their ranked rows and the folder; True when the run has results (exit code 0)."""
TrialChecker = Callable[[list[str]], Any]
"""A trial's ``fit`` arguments → its parsed config (a jsonargparse Namespace); ConfigError in one line when
the CLI would refuse them."""


@dataclass
class TrialPlan:
    """A trial, where it runs and what this invocation does with it.

    ``action``: ``run`` (a new run), ``resume`` (``--ckpt_path resume_from``), ``skip`` (finished before),
    ``busy`` (its run is still training in another process, left by a sweep that was killed: ``note``),
    ``invalid`` (its arguments do not parse: ``error``)."""

    trial: Trial
    args: list[str]  # fit arguments without the folder and --ckpt_path
    numbered: bool
    error: str | None = None
    wandb_project: str | None = None  # a W&B logger's project: its runs are <trial>/<project>/version_K
    id: str = ""
    action: str = "run"
    resume_from: Path | None = None
    note: str | None = None

    def folder(self, sweep: Path) -> Path:
        return sweep / self.id

    def folder_args(self, sweep: Path) -> list[str]:
        """Where the run writes: the trial folder, and for a numbered logger ``<trial>/version_K`` (the
        version left to the CLI, which numbers and locks it: see :mod:`lightning_seg.runs`)."""
        folder = self.folder(sweep)
        args = [f"--trainer.default_root_dir={folder}"]
        if self.wandb_project is not None:  # W&B numbers its runs under <save_dir>/<project>
            args += [f"--trainer.logger.init_args.save_dir={folder}"]
        elif self.numbered:
            args += [
                f"--trainer.logger.init_args.save_dir={sweep}",
                f"--trainer.logger.init_args.name={self.id}",
                "--trainer.logger.init_args.version=null",
            ]
        return args

    def command(self, sweep: Path) -> list[str]:
        resume = ["--ckpt_path", str(self.resume_from)] if self.resume_from is not None else []
        return [sys.executable, "-m", "lightning_seg", "fit", *self.args, *self.folder_args(sweep), *resume]

    def run_folder(self, sweep: Path) -> Path | None:
        """The trial's newest run: its highest ``version_K`` (numbered logger) or the trial folder."""
        folder = self.folder(sweep)
        if self.wandb_project is not None:
            folder = folder / self.wandb_project
        if self.numbered or self.wandb_project is not None:
            found = [
                (int(m.group(1)), path)
                for path in folder.glob("version_*")
                if path.is_dir() and (m := re.fullmatch(r"version_(\d+)", path.name))
            ]
            return max(found)[1] if found else None
        return folder if (folder / "summary.json").exists() or runs.is_run_folder(folder) else None


def check_trials(sweep: SweepFile, trials: list[Trial], checker: TrialChecker) -> list[TrialPlan]:
    """Parse every trial's arguments with ``checker``; refuse the sweep in one line when none parses."""
    plans = []
    for trial in trials:
        args = [*_config_args(sweep.base), *override_args(sweep.overrides), *override_args(trial.values)]
        try:
            config = checker(args)
        except ConfigError as error:
            plans.append(TrialPlan(trial, args, numbered=False, error=str(error), action="invalid"))
            continue
        # a W&B run is <trial>/<project>/version_K, a TensorBoard/CSV one <sweep>/<trial>/version_K
        wandb = runs.is_wandb(config)
        project = wandb_runs.project_of(config.trainer.logger.init_args) if wandb else None
        numbered = runs.numbered_logger(config) is not None and not wandb
        plans.append(TrialPlan(trial, args, numbered=numbered, wandb_project=project))
    if plans and all(plan.action == "invalid" for plan in plans):
        raise ConfigError(
            f"{short_path(sweep.path)}: no trial is a valid fit config (the first: {plans[0].error})"
        )
    return plans


def _config_args(base: tuple[str, ...]) -> list[str]:
    return [arg for file in base for arg in ("--config", file)]


# -------------------------------------------------------------------------------------------- sweep.json
class SweepRecord:
    """``<sweep>/sweep.json``: every trial the folder has seen, by key: ``id``, ``values``, ``status``,
    ``error``, ``run``, ``exit_code``, ``command``, ``started``, ``seconds`` (of its last attempt). Kept for
    trials a later version of the sweep file dropped; written whole after every change."""

    def __init__(self, folder: Path, sweep_file: Path) -> None:
        self.path = folder / "sweep.json"
        self.sweep_file = sweep_file
        self.trials: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                self.trials = dict(json.loads(self.path.read_text())["trials"])
            except (ValueError, KeyError, TypeError) as error:
                raise ConfigError(
                    f"{short_path(self.path)}: not a sweep record ({type(error).__name__}); move it away to "
                    "start this sweep afresh"
                ) from error

    def update(self, plan: TrialPlan, **fields: Any) -> None:
        entry = self.trials.setdefault(plan.trial.key, {})
        entry.update({"id": plan.id, "values": plan.trial.values, **fields})
        self.save()

    def save(self) -> None:
        content = {"sweep_file": str(self.sweep_file), "trials": self.trials}
        atomic_write(self.path, json.dumps(content, indent=2, default=str))


def assign_ids(
    plans: list[TrialPlan], record: SweepRecord, folder: Path, name: TrialName | None = None
) -> None:
    """A trial keeps the id (folder) the record gave it; a new one gets ``name(trial)`` when given, else the
    next free ``trial_NNN``."""
    if name is not None:
        for plan in plans:
            plan.id = name(plan.trial)
        return
    used = {entry.get("id", "") for entry in record.trials.values()}
    if folder.is_dir():
        used |= {path.name for path in folder.iterdir()}
    numbers = [int(m.group(1)) for name in used if (m := re.fullmatch(r"trial_(\d+)", name))]
    free = max(numbers, default=-1) + 1
    for plan in plans:
        known = record.trials.get(plan.trial.key)
        if known and known.get("id"):
            plan.id = known["id"]
        else:
            plan.id, free = f"trial_{free:03d}", free + 1


def decide(plan: TrialPlan, record: SweepRecord, folder: Path) -> None:
    """Skip a finished trial, leave one whose run a live process still trains, resume one that stopped with
    a ``last.ckpt``, run the rest afresh."""
    known = record.trials.get(plan.trial.key)
    if plan.action == "invalid" or known is None:
        return
    run = plan.run_folder(folder)
    summary = read_summary(run)
    holder = runs.RunLock(run).holder() if run is not None else None
    if known.get("status") in FINISHED and summary is not None and summary.get("status") in FINISHED:
        plan.action = "skip"
    elif holder is not None:
        # a killed sweep's trial on a system that does not end it with the sweep: resuming it would stop
        # on its lock, and a new run beside it would train the same trial twice
        plan.action = "busy"
        plan.note = (
            f"still training in process {holder if holder > 0 else '?'} ({short_path(run)}, left by an "
            "earlier sweep); skipped: run the sweep again when it ends"
        )
    elif run is not None and runs.last_checkpoint(run).is_file():
        plan.action, plan.resume_from = "resume", run


def read_summary(run: Path | None) -> dict[str, Any] | None:
    """The ``fit`` summary of a run folder, or None (no run, no summary, or not a fit's)."""
    if run is None or not (run / "summary.json").is_file():
        return None
    try:
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("stage") == "fit" else None


# ------------------------------------------------------------------------------------------ one trial
def run_trial(plan: TrialPlan, sweep: Path, record: SweepRecord) -> tuple[str, str | None]:
    """Run the trial's ``fit`` in its own process; returns its status and one-line error."""
    folder = plan.folder(sweep)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "trial.log"
    command = plan.command(sweep)
    started = time.time()
    record.update(plan, status="running", error=None, command=command, started=_now())
    interrupted = False
    with open(log, "ab") as handle:
        # appended: a resumed trial keeps the output of its earlier attempts
        handle.write(f"\n=== {_now()} {plan.action}: {shlex.join(command)}\n".encode())
        handle.flush()
        offset = handle.tell()
        process = None
        try:
            # its own session: the terminal's Ctrl-C reaches only the sweep, which passes on exactly one;
            # and it dies with the sweep (Linux), which no signal handler can see coming (SIGKILL)
            process = subprocess.Popen(
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_child_env(),
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
            code = process.wait()
        except KeyboardInterrupt:
            if process is None:
                raise
            interrupted = True
            code = _interrupt(process)
    with open(log, "rb") as handle:
        handle.seek(offset)
        output = handle.read().decode(errors="replace")
    run = plan.run_folder(sweep)
    status, error = outcome(code, interrupted, read_summary(run), output, run or folder)
    record.update(
        plan,
        status=status,
        error=error,
        run=None if run is None else str(run),
        exit_code=code,
        seconds=round(time.time() - started, 1),
    )
    return status, error


def _interrupt(process: subprocess.Popen) -> int:
    """Ctrl-C reached the sweep: one interrupt to the trial, which shuts down as ``fit`` does on Ctrl-C
    (its checkpoints kept, its summary saying interrupted); a second Ctrl-C kills it."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.kill()
        return process.wait()


def outcome(
    code: int, interrupted: bool, summary: dict | None, output: str, run: Path
) -> tuple[str, str | None]:
    """A finished process's status and error, from its exit code, its run's summary and its output."""
    if interrupted:
        return "interrupted", INTERRUPTED
    if code == 0:
        if summary is None:
            # e.g. a logger that keeps its runs elsewhere (W&B): its folder holds the summary
            return "failed", f"exit code 0 but no summary.json in {short_path(run)}"
        # a resume with nothing left to do exits 0 and leaves the summary of the attempt it resumed
        return (summary["status"] if summary.get("status") in SUCCEEDED else "completed"), None
    if summary is not None and summary.get("status") == "diverged":
        return "diverged", error_line(output, code)
    return "failed", error_line(output, code)


def error_line(output: str, code: int) -> str:
    """The one line that says why a trial failed: the CLI's ``lightning-seg: error: ...`` line, else the
    exception line of the last traceback, else the signal that killed it, else its last line."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX) :]
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:
        # after the header come indented frames; the first line at the margin is `Type: message`
        for line in lines[starts[-1] + 1 :]:
            if not line[:1].isspace():
                return truncate(line)
    if code < 0:
        name = signal.Signals(-code).name
        return f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    return truncate(lines[-1]) if lines else f"exit code {code}"


def _die_with_parent() -> Callable[[], None] | None:
    """For ``preexec_fn`` on Linux: the trial gets SIGTERM (and stops as ``fit`` does on it) when the
    thread that started it ends, so a sweep killed by SIGKILL leaves no orphan training; None elsewhere.

    ``prctl`` is looked up here, before the fork: the child runs only the call itself."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes, prctl.restype = [ctypes.c_int, ctypes.c_ulong], ctypes.c_int
    parent, death_signal = os.getpid(), int(signal.SIGTERM)

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, death_signal)
        if os.getppid() != parent:  # the sweep died between the fork and the prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(runs.RUN_FOLDER_ENV, None)  # a trial claims its own run folder
    env["PYTHONUNBUFFERED"] = "1"  # trial.log follows the run as it goes
    return env


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a job scheduler's stop) and SIGHUP (its terminal closed) handled as Ctrl-C: the running
    trial, in a session of its own, is not sent them; it records itself first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    names = [name for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]  # no SIGHUP on Windows
    previous = {name: signal.signal(getattr(signal, name), interrupt) for name in names}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


# -------------------------------------------------------------------------------------------- the sweep
def run_sweep(
    sweep: SweepFile,
    checker: TrialChecker,
    dry_run: bool = False,
    max_trials: int | None = None,
    name: TrialName | None = None,
    report: Report | None = None,
) -> int:
    """Check (with ``checker``), plan, run the trials that need it, write and print the table (or
    ``report``); the exit code. ``name``: the trials' folder names (default ``trial_NNN``)."""
    trials = sweep.trials()[:max_trials]
    what = f"{len(trials)} of {sweep.grid_size}" if len(trials) < sweep.grid_size else str(len(trials))
    print(f"sweep {short_path(sweep.path)}: {what} trials ({sweep.method}) in {sweep.output}", flush=True)
    plans = check_trials(sweep, trials, checker)
    folder = sweep.output
    if dry_run:
        record = SweepRecord(folder, sweep.path)
        assign_ids(plans, record, folder, name)
        for plan in plans:
            decide(plan, record, folder)
        print_plan(plans, sweep)
        return 0
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"{short_path(folder)}: cannot create the sweep folder ({error.strerror}); pass --output <a "
            "writable folder>"
        ) from error
    lock = runs.RunLock(folder)
    lock.acquire("another sweep runs in this folder; wait for it to finish")
    try:
        record = SweepRecord(folder, sweep.path)
        assign_ids(plans, record, folder, name)
        for plan in plans:
            decide(plan, record, folder)
            if plan.action == "invalid":
                record.update(plan, status="invalid", error=plan.error)
        interrupted = _run_all(plans, folder, record)
        rows = results(plans, folder, record, sweep.ranking)
        if report is None:
            title = f"sweep {sweep.path.stem}: {len(rows)} trials by val/mIoU"
            write_markdown(rows, list(sweep.parameters), folder / "results.md", title, sweep.ranking)
            write_csv(rows, list(sweep.parameters), folder / "results.csv", sweep.ranking)
            has_results = any(row.succeeded for row in rows)
        else:  # an interrupted run reports when it is run again and finishes
            has_results = not interrupted and report(plans, rows, folder)
    finally:
        lock.release()
    if report is None:
        print_results(rows, list(sweep.parameters), title, sweep.ranking)
        print(f"results: {folder / 'results.md'}, {folder / 'results.csv'}")
    if interrupted:
        print("sweep interrupted; run the same command again to resume it", file=sys.stderr)
        return 1
    return 0 if has_results else 1


def _run_all(plans: list[TrialPlan], folder: Path, record: SweepRecord) -> bool:
    """Run the trials that need it, in order; True when Ctrl-C stopped the sweep."""
    todo = [plan for plan in plans if plan.action in ("run", "resume")]
    skipped = sum(plan.action == "skip" for plan in plans)
    if skipped:
        print(f"sweep: {skipped} trials finished before, kept", flush=True)
    for plan in plans:
        if plan.action == "busy":
            print(f"sweep: {plan.id} {plan.note}", flush=True)
    names = column_names(list(plans[0].trial.values)) if plans else {}
    with _terminate_as_interrupt():
        for number, plan in enumerate(todo, 1):
            values = " ".join(f"{names[key]}={short_value(v)}" for key, v in plan.trial.values.items())
            verb = f"resuming {plan.resume_from}" if plan.action == "resume" else "running"
            log = plan.folder(folder) / "trial.log"
            print(f"sweep: [{number}/{len(todo)}] {plan.id} {values}: {verb} (log: {log})", flush=True)
            try:
                status, error = run_trial(plan, folder, record)
            except KeyboardInterrupt:
                record.update(plan, status="interrupted", error=INTERRUPTED)
                return True
            print(f"sweep: {plan.id} {status}" + (f": {error}" if error else ""), flush=True)
            if status == "interrupted":
                return True
    return False


def results(
    plans: list[TrialPlan], folder: Path, record: SweepRecord, ranking: Ranking = DEFAULT_RANKING
) -> list[ResultRow]:
    """The table's rows, ranked: each trial's record and its run's summary."""
    rows = []
    for plan in plans:
        known = record.trials.get(plan.trial.key, {})
        if plan.action == "invalid":
            rows.append(result_row(plan.id, plan.trial.values, "invalid", plan.error, None, ranking))
            continue
        summary = read_summary(plan.run_folder(folder))
        status, error = known.get("status", "pending"), known.get("error")
        if plan.action == "busy":
            status, error = "running", plan.note
        rows.append(result_row(plan.id, plan.trial.values, status, error, summary, ranking))
    return ranked(rows, ranking)


def print_plan(plans: list[TrialPlan], sweep: SweepFile) -> None:
    """``--dry_run``: each trial, what a run would do with it, and its command."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep {sweep.path.stem}: dry run (nothing is run or written)")
    table.add_column("trial")
    keys = list(sweep.parameters)
    names = column_names(keys)
    for key in keys:
        table.add_column(names[key])
    table.add_column("action")
    table.add_column("note", overflow="fold")
    for plan in plans:
        note = plan.error or plan.note or (str(plan.resume_from) if plan.resume_from else "")
        table.add_row(plan.id, *(short_value(plan.trial.values[k]) for k in keys), plan.action, note)
    console = Console()
    console.print(table)
    for plan in plans:
        if plan.action in ("run", "resume"):
            console.print(
                f"{plan.id}: {shlex.join(['python', *plan.command(sweep.output)[1:]])}",
                soft_wrap=True,
                highlight=False,
                markup=False,
            )


# --------------------------------------------------------------------------------------------- command
HELP = """One `fit` per combination of config overrides, each in its own process, and one results table.

The sweep file (YAML):
{example}

Each trial runs `python -m lightning_seg fit --config <base> <overrides> <its values>` in
<output>/trial_NNN/ (output in trial.log, the run in version_0/); its results come from the run's
summary.json. <output>/results.md and results.csv rank the trials by val/mIoU: the best checkpoint's
when ModelCheckpoint monitors val/mIoU (mode max), else the last validation's (failed ones last).
A value that the config parser refuses is an `invalid` row, one that fails when training a `failed`
row (its error line); the sweep goes on. Run the same command again to skip finished trials, resume
interrupted or failed ones from their last.ckpt and run the rest (<output>/sweep.json keys the trials
by their base files and overrides). Ctrl-C (SIGTERM, SIGHUP) lets the running trial record itself and
stops; a trial still training from a killed sweep is skipped with a note.
Exit code: 0 when a trial has results, 1 when none has or on Ctrl-C, 2 on a bad sweep file.
"""


def _parser() -> ArgumentParser:
    from argparse import RawDescriptionHelpFormatter

    from jsonargparse import DefaultHelpFormatter
    from jsonargparse.typing import PositiveInt

    class Formatter(DefaultHelpFormatter, RawDescriptionHelpFormatter):
        """jsonargparse's help, with the description's lines kept (it shows a YAML file)."""

    example = sweep_spec.__doc__.split("```yaml\n", 1)[1].split("```", 1)[0] if sweep_spec.__doc__ else ""
    parser = ArgumentParser(
        prog="lightning-seg sweep",
        description=HELP.format(example="\n".join("  " + line for line in example.splitlines())),
        formatter_class=Formatter,
        exit_on_error=False,
    )
    parser.add_argument("--config", type=str, required=True, help="The sweep file (see configs/sweeps/).")
    parser.add_argument("--dry_run", type=bool, default=False, help="Print the trials and their commands.")
    parser.add_argument(
        "--max_trials", type=PositiveInt | None, default=None, help="Only the first N trials."
    )
    parser.add_argument("--output", type=str | None, default=None, help="The sweep folder (over the file's).")
    return parser


def main(argv: list[str], checker: TrialChecker) -> int:
    """``lightning-seg sweep ...``: the exit code (0: a trial has results; 1: none, or interrupted; 2: bad
    input). ``checker``: parses a trial's ``fit`` arguments as ``fit`` would (the CLI passes its own,
    :class:`lightning_seg.cli.sweep_check.FitArgsChecker`; this layer does not import the CLI)."""
    try:
        options = _parser().parse_args(argv)
        sweep = load_sweep_file(options.config, options.output)
        return run_sweep(sweep, checker, dry_run=options.dry_run, max_trials=options.max_trials)
    except (ConfigError, ArgumentError) as error:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{ERROR_PREFIX}{one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # while checking the trials, before any ran
        print("lightning-seg: sweep interrupted", file=sys.stderr)
        return 1
