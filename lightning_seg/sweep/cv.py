"""``cv``: k-fold cross-validation, each fold its own resumable ``fit``, and the folds' mean ± std.

    lightning-seg cv --config configs/X.yaml [--config more.yaml] --folds 5 [--group_by REGEX] [--seed 0]
        [--output runs/cv/X] [--dry_run true] [fit options, e.g. --trainer.max_epochs=20]

The train and val samples of the config's data module are split into ``folds`` folds (the data module's
``folds``, ``fold`` and ``group_by`` arguments; :mod:`lightning_seg.data.folds`: stratified by the classes and
image labels each sample holds, seeded by ``fold_seed``, groups kept whole); the test split is left as it
is. Fold K is one trial of the sweep machinery (:mod:`lightning_seg.sweep.runner`): ``fit`` in its own process
in ``<output>/fold_K/`` with ``--data.init_args.fold=K``, so a killed or interrupted cv resumes where it
stopped when run again (finished folds kept, an interrupted fold resumed from its ``last.ckpt``).

Each finished fold's best checkpoint is then scored on its validation fold by ``validate`` (its own process,
the run's ``config.yaml``, every mask at its stored size), once: ``<run>/validate/<date-time>/summary.json``.
The same pass writes the fold's out-of-fold probabilities, ``<output>/fold_K/oof/<name>.npz``
(:class:`~lightning_seg.callbacks.out_of_fold.OutOfFoldWriter`): every training image predicted by the model
that never saw it; a fold whose pass did not finish is scored again on the next run.
``<output>/summary.json`` holds every fold's metrics and their mean and sample standard deviation;
``<output>/results.md`` the same as a table (mIoU, Dice, each class's IoU). Once every fold is scored, the
folds' ensemble is written to ``<output>/ensemble/`` (``lightning-seg ensemble --cv``), which ``test``,
``predict``, ``submit``, ``attack``, ``export`` and ``tune --oof <output>`` take as one model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from lightning_seg.callbacks.out_of_fold import INDEX as OOF_INDEX
from lightning_seg.callbacks.out_of_fold import OutOfFoldWriter
from lightning_seg.errors import DEBUG_ENV, ConfigError, short_path
from lightning_seg.runs.ensembles import ensemble_is_current
from lightning_seg.sweep.runner import (
    ERROR_PREFIX,
    TrialChecker,
    TrialPlan,
    read_summary,
    run_sweep,
)
from lightning_seg.sweep.spec import RESERVED, SweepFile, Trial
from lightning_seg.sweep.table import SUCCEEDED, ResultRow
from lightning_seg.utils.atomic import atomic_write
from lightning_seg.utils.config_files import check_config_file
from lightning_seg.utils.error_lines import one_line
from lightning_seg.utils.options import option_groups

FOLD_KEY = "data.init_args.fold"
FOLD_OPTIONS = ("data.init_args.folds", FOLD_KEY, "data.init_args.group_by", "data.init_args.fold_seed")
"""The data module's options cv sets itself: not fit options of a cv."""
SCORED_AT_ORIGINAL_SIZE = "--data.init_args.score_at_original_size=[val, test]"
OOF_WRITER = f"{OutOfFoldWriter.__module__}.{OutOfFoldWriter.__qualname__}"
HEADLINE = ("val/mIoU", "val/dice", "val/acc")
"""The first rows of the table; the other metrics follow in name order."""


REFIT_FOLD = -1
"""The fold value of ``--refit``'s trial: no fold held out (:class:`ImageMaskDataModule`'s ``fold``)."""


def fold_name(trial: Trial) -> str:
    """A fold's folder: ``fold_K``; the refit's: ``refit``."""
    fold = trial.values[FOLD_KEY]
    return "refit" if fold == REFIT_FOLD else f"fold_{fold}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-seg cv",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", action="append", required=True, help="a fit config (repeat to merge)")
    parser.add_argument("--folds", type=int, required=True, help="k, at least 2")
    parser.add_argument("--group_by", default=None, help="regex on sample names: a group shares a fold")
    parser.add_argument("--seed", type=int, default=0, help="the folds' seed (data.fold_seed)")
    parser.add_argument("--output", default=None, help="the cv folder; default runs/cv/<config stem>")
    parser.add_argument(
        "--refit",
        choices=("true", "false"),
        default="false",
        help="also fit on every training image (no validation), with the folds' schedule, in <output>/refit",
    )
    parser.add_argument(
        "--dry_run", choices=("true", "false"), default="false", help="print the folds' commands"
    )
    return parser


def parse(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    """cv's own options, and the rest as fit options (``--key=value`` or ``--key value``) by dotted key.

    Raises ConfigError in one line for a fit option cv sets itself or one without a value."""
    options, rest = _parser().parse_known_args(argv)
    fit: dict[str, str] = {}
    for group in option_groups(rest):
        arg = group[0]
        if not arg.startswith("--"):
            raise ConfigError(f"cv: {arg!r} is not an option; fit options are --key=value")
        key, equals, value = arg[2:].partition("=")
        if not equals:
            if len(group) < 2:
                raise ConfigError(f"cv: --{key} needs a value")
            value = group[1]
        own = key.removeprefix("data.").removeprefix("init_args.")
        if key in RESERVED or key in FOLD_OPTIONS or own in ("folds", "fold", "group_by", "fold_seed"):
            raise ConfigError(f"cv: --{key} is set by cv itself (use --folds, --group_by, --seed, --output)")
        if key == "budget":
            raise ConfigError(
                "cv: --budget would time each fold on its own (folds of different lengths, and an interrupted "
                "fold could not resume); set --trainer.max_epochs, e.g. the epochs a fit --budget chose"
            )
        fit[key] = value
    if options.folds < 2:
        raise ConfigError(f"cv: --folds must be at least 2, got {options.folds}")
    return options, fit


def cv_sweep(options: argparse.Namespace, fit: dict[str, str]) -> SweepFile:
    """The sweep that trains the folds: one trial per fold, the fold options and ``fit`` fixed."""
    for config in options.config:
        check_config_file(Path(config))
    # the fit options first: one of them may switch the data class, whose arguments the fold options are
    # every fold option is set, so a config that holds one of its own (a fold's config.yaml) never leaks it
    overrides: dict[str, Any] = {
        **fit,
        "data.init_args.folds": options.folds,
        "data.init_args.group_by": options.group_by,
        "data.init_args.fold_seed": options.seed,
    }
    output = Path(options.output) if options.output else Path("runs") / "cv" / Path(options.config[0]).stem
    return SweepFile(
        path=Path(options.config[0]),
        base=tuple(options.config),
        parameters={FOLD_KEY: list(range(options.folds)) + ([REFIT_FOLD] if options.refit == "true" else [])},
        overrides=overrides,
        output=output,
    )


def out_of_fold_callback(folder: Path) -> str:
    """The ``validate`` option that attaches :class:`OutOfFoldWriter` writing into ``folder``."""
    spec = {"class_path": OOF_WRITER, "init_args": {"folder": str(folder)}}
    return "--trainer.callbacks+=" + json.dumps(spec)


def out_of_fold_done(folder: Path, checkpoint: str) -> bool:
    """Whether ``folder`` holds a finished out-of-fold pass of ``checkpoint``."""
    index = folder / OOF_INDEX
    return index.is_file() and json.loads(index.read_text()).get("checkpoint") == checkpoint


def validated(run: Path, checkpoint: str, record: Path, log: Path, oof: Path) -> dict[str, Any] | None:
    """The ``validate`` summary cv wrote for ``checkpoint`` (named in ``record``, so a validate the user ran
    with other options is never taken for it) with its out-of-fold probabilities in ``oof``, else a new one
    from its own process (its output in ``log``). None when validation failed (the log says why)."""
    if record.is_file() and out_of_fold_done(oof, checkpoint):
        known = json.loads(record.read_text())
        path = Path(known.get("summary", ""))
        if known.get("checkpoint") == checkpoint and path.is_file():
            return json.loads(path.read_text())
    before = set((run / "validate").glob("*/summary.json"))
    command = [
        sys.executable, "-m", "lightning_seg", "validate", "--config", str(run / "config.yaml"),
        "--ckpt_path", checkpoint, SCORED_AT_ORIGINAL_SIZE, out_of_fold_callback(oof),
        # one process: exact, and the out-of-fold writer's files listed by one index
        "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto",
    ]  # fmt: skip
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    written = sorted(set((run / "validate").glob("*/summary.json")) - before)
    if done.returncode != 0 or len(written) != 1 or not out_of_fold_done(oof, checkpoint):
        return None
    scored = {"checkpoint": checkpoint, "summary": str(written[0]), "out_of_fold": str(oof)}
    atomic_write(record, json.dumps(scored, indent=2) + "\n")
    return json.loads(written[0].read_text())


def fold_results(plans: list[TrialPlan], rows: list[ResultRow], folder: Path) -> list[dict[str, Any]]:
    """Each fold's run, status, best checkpoint and validation metrics (None where it has none)."""
    status = {row.trial: row for row in rows}
    folds = []
    for plan in sorted(plans, key=lambda p: p.trial.values[FOLD_KEY]):
        if plan.trial.values[FOLD_KEY] == REFIT_FOLD:
            continue  # nothing to score: it validates on nothing
        row = status.get(plan.id)
        run = plan.run_folder(folder)
        summary = read_summary(run) or {}
        checkpoint = summary.get("best_checkpoint")
        entry: dict[str, Any] = {
            "fold": plan.trial.values[FOLD_KEY],
            "status": row.status if row is not None else plan.action,
            "error": row.error if row is not None else plan.error,
            "run": str(run) if run is not None else None,
            "checkpoint": checkpoint,
            "metrics": None,
        }
        if entry["status"] in SUCCEEDED and not checkpoint:
            entry["error"] = "no checkpoint to score: the config needs a ModelCheckpoint"
        elif run is not None and checkpoint and entry["status"] in SUCCEEDED:
            log = plan.folder(folder) / "validate.log"
            print(
                f"cv: {plan.id}: scoring {short_path(Path(checkpoint))} on its fold (log: {log})", flush=True
            )
            fold_folder = plan.folder(folder)
            scored = validated(run, checkpoint, fold_folder / "scored.json", log, fold_folder / "oof")
            if scored is None:
                entry["status"], entry["error"] = "failed", f"validate failed; see {log}"
            else:
                entry["metrics"] = {k: v for k, v in scored["metrics"].items() if isinstance(v, int | float)}
        folds.append(entry)
    return folds


def refit_result(plans: list[TrialPlan], rows: list[ResultRow], folder: Path) -> dict[str, Any] | None:
    """The refit's run, status and checkpoint (its last epoch's); None without ``--refit``."""
    plan = next((p for p in plans if p.trial.values[FOLD_KEY] == REFIT_FOLD), None)
    if plan is None:
        return None
    row = next((r for r in rows if r.trial == plan.id), None)
    run = plan.run_folder(folder)
    summary = read_summary(run) or {}
    return {
        "status": row.status if row is not None else plan.action,
        "error": row.error if row is not None else plan.error,
        "run": str(run) if run is not None else None,
        "checkpoint": summary.get("last_checkpoint"),
    }


def aggregate(folds: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per metric over the folds that have it: ``mean``, ``std`` (sample, n-1; None for one fold), ``n``."""
    keys = sorted({key for fold in folds if fold["metrics"] for key in fold["metrics"]})
    out: dict[str, dict[str, float | None]] = {}
    for key in keys:
        values = [fold["metrics"][key] for fold in folds if fold["metrics"] and key in fold["metrics"]]
        out[key] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values),
        }
    return out


def _ordered(keys: list[str]) -> list[str]:
    head = [key for key in HEADLINE if key in keys]
    return head + sorted(key for key in keys if key not in head)


def markdown(title: str, folds: list[dict[str, Any]], stats: dict[str, dict[str, float | None]]) -> str:
    """The table: one row per metric, mean ± std, then each fold."""
    headers = ["metric", "mean ± std", "folds", *(f"fold {fold['fold']}" for fold in folds)]
    lines = [f"# {title}", "", "| " + " | ".join(headers) + " |", "|---|---:|---:|" + "---:|" * len(folds)]
    for key in _ordered(list(stats)):
        stat = stats[key]
        spread = f" ± {stat['std']:.4f}" if stat["std"] is not None else ""
        cells = [
            f"{fold['metrics'][key]:.4f}" if fold["metrics"] and key in fold["metrics"] else fold["status"]
            for fold in folds
        ]
        lines.append(f"| {key} | {stat['mean']:.4f}{spread} | {stat['n']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Each fold's best checkpoint (its ModelCheckpoint's) scored by `validate` on its validation fold, every "
        "mask at its stored size; std is the sample standard deviation over the folds scored (n - 1).",
    ]
    lines += [
        f"- fold {fold['fold']}: {fold['status']}: {fold['error']}" for fold in folds if fold.get("error")
    ]
    return "\n".join(lines) + "\n"


def build_ensemble(folder: Path, checkpoints: list[str]) -> None:
    """The folds' ensemble in ``<folder>/ensemble`` (``lightning-seg ensemble --cv``, its own process: the
    command sits beside cv in the layers; not started when the folder holds it already), or one line saying
    why not."""
    if ensemble_is_current(folder / "ensemble", [Path(c) for c in checkpoints], None):
        print(f"ensemble of {len(checkpoints)}: {folder / 'ensemble'} (up to date)", flush=True)
        return
    command = [sys.executable, "-m", "lightning_seg", "ensemble", "--cv", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        print(f"cv: no ensemble: {lines[-1] if lines else 'ensemble failed'}", file=sys.stderr)
        return
    print(done.stdout.strip(), flush=True)


def report(
    sweep: SweepFile, group_by: str | None, plans: list[TrialPlan], rows: list[ResultRow], folder: Path
) -> bool:
    """Score the finished folds, write ``summary.json`` and ``results.md``, print the headline; True when a
    fold has metrics."""
    folds = fold_results(plans, rows, folder)
    stats = aggregate(folds)
    summary = {
        "folds": len(folds),
        "group_by": group_by,
        "config": list(sweep.base),
        "overrides": sweep.overrides,
        "per_fold": folds,
        "mean": {key: stat["mean"] for key, stat in stats.items()},
        "std": {key: stat["std"] for key, stat in stats.items()},
        "scored": sum(fold["metrics"] is not None for fold in folds),
        "refit": refit_result(plans, rows, folder),
    }
    atomic_write(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
    title = f"cv {sweep.path.stem}: {len(folds)} folds"
    table = markdown(title, folds, stats)
    if summary["refit"] is not None:
        refit = summary["refit"]
        table += (
            f"\nRefit on every training image (no validation): {refit['status']}, {refit['checkpoint']}\n"
        )
    atomic_write(folder / "results.md", table)
    for key in [k for k in HEADLINE if k in stats]:
        stat = stats[key]
        spread = f" ± {stat['std']:.4f}" if stat["std"] is not None else ""
        print(f"cv: {key} {stat['mean']:.4f}{spread} over {stat['n']} of {len(folds)} folds", flush=True)
    print(f"results: {folder / 'results.md'}, {folder / 'summary.json'}")
    refit = summary["refit"]
    if refit is not None:
        print(
            f"cv: refit on every training image: {refit['status']}: {refit['checkpoint'] or refit['error']}"
        )
    if summary["scored"] == len(folds):
        build_ensemble(folder, [fold["checkpoint"] for fold in folds])
    else:
        print(
            f"cv: {summary['scored']} of {len(folds)} folds scored (results.md says why); the means are over "
            "those; run the same command again to resume",
            file=sys.stderr,
        )
    return summary["scored"] == len(folds) and (refit is None or bool(refit["checkpoint"]))


def main(argv: list[str], checker: TrialChecker) -> int:
    """``lightning-seg cv ...``: 0 when every fold is scored, 1 when one is not (the means are then over the
    others) or on Ctrl-C, 2 on bad input."""
    try:
        options, fit = parse(argv)
        sweep = cv_sweep(options, fit)
        return run_sweep(
            sweep,
            checker,
            dry_run=options.dry_run == "true",
            name=fold_name,
            report=lambda plans, rows, folder: report(sweep, options.group_by, plans, rows, folder),
        )
    except ConfigError as error:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{ERROR_PREFIX}{one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lightning-seg: cv interrupted; run the same command again to resume it", file=sys.stderr)
        return 1
