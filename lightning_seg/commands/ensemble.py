"""``ensemble``: several checkpoints (or a cv's folds) as one model that every command after training takes.

    lightning-seg ensemble --cv runs/cv/X [--weights 1 1 2] [--output DIR]
    lightning-seg ensemble --checkpoints A.ckpt B.ckpt [...] --output DIR [--weights ...]

writes a run folder of its own (default ``<cv>/ensemble``):

* ``checkpoints/ensemble.ckpt``: one checkpoint whose net is :class:`~lightning_seg.task.ensemble.EnsembleNet`
  holding every member's weights, with the members' records (each its own net, normalisation and inference),
  the union of the members' training samples (so ``test`` still refuses a split any member trained on) and
  the first member's loss weights; it loads with ``weights_only=True`` like any checkpoint here;
* ``config.yaml``: the first member's run config with that net, the whole image once as the ensemble's own
  inference (each member runs its own), no folds, and ``ckpt_path`` set, so that

      lightning-seg test --config DIR/config.yaml        (also predict, submit, attack, export, tune)
      lightning_seg.load("DIR/checkpoints/ensemble.ckpt")

  run the ensemble through the one inference path: probabilities averaged, then the post-processing chain
  and the decision once;
* ``ensemble.json``: the members (checkpoint, its SHA-256, weight), written last.

Members must predict the same classes and batch images alike (:func:`~lightning_seg.task.ensemble.check_members`:
one line naming the member that differs).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from lightning_seg.checkpoints.load import load_weights, write_bundle
from lightning_seg.checkpoints.read import read_checkpoint
from lightning_seg.checkpoints.record import RECORD_KEY, TRAINING_ONLY, build_module, read_record
from lightning_seg.checkpoints.splits import SPLITS_KEY, merge_trained
from lightning_seg.errors import ConfigError, short_path
from lightning_seg.postprocess.thresholds import file_digest
from lightning_seg.runs.ensembles import CHECKPOINT_NAME, DESCRIPTION, ensemble_is_current
from lightning_seg.runs.folders import run_of_checkpoint
from lightning_seg.task.ensemble import check_members, check_weights
from lightning_seg.utils.atomic import atomic_write

NET_CLASS = "lightning_seg.task.ensemble.EnsembleNet"
FOLD_ARGUMENTS = ("folds", "fold", "group_by", "fold_seed", "refit")
"""The data arguments of a cv fold, cleared in the ensemble's config: it evaluates the data's own splits."""


def trained_union(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The members' training samples together (``test`` refuses a split any member trained on); None when a
    member does not know its own (then the split check warns that it cannot check)."""
    splits = [record.get(SPLITS_KEY) for record in records]
    if any(not ((split or {}).get("train") or {}).get("ids") for split in splits):
        return None
    union = copy.deepcopy(splits[0])
    for other in splits[1:]:
        union = merge_trained(union, other)
    return union


def without_thresholds_file(steps: list[Any] | None) -> list[Any] | None:
    """A post-processing config whose ClassThresholds steps read no file of their own: thresholds tuned for a
    member are not the ensemble's (``tune`` writes the ensemble's beside its checkpoint)."""
    steps = copy.deepcopy(steps)
    for step in steps or []:
        if isinstance(step, dict) and str(step.get("class_path", "")).endswith("ClassThresholds"):
            (step.get("init_args") or {}).pop("path", None)
    return steps


def check_output(output: Path) -> None:
    """Refuse to write into a folder that holds something else than an ensemble (a run's config.yaml), or an
    ensemble of other checkpoints: its records (test, predict) would then describe weights it no longer holds."""
    if (output / "config.yaml").is_file() and not (output / DESCRIPTION).is_file():
        raise ConfigError(
            f"ensemble --output {short_path(output)}: holds a run (config.yaml) that is not an ensemble; give "
            "another folder"
        )
    if (output / DESCRIPTION).is_file():
        raise ConfigError(
            f"ensemble --output {short_path(output)}: holds an ensemble of other checkpoints (ensemble.json) "
            "and its records; give another --output, or remove that folder"
        )


def cv_checkpoints(folder: Path, refit: bool = False) -> list[Path]:
    """The best checkpoint of every fold of a cv folder, in fold order (its ``summary.json``), then with
    ``refit`` the refit's; ConfigError in one line when one has none (the cv is not finished)."""
    summary_file = folder / "summary.json"
    if not summary_file.is_file():
        raise ConfigError(
            f"ensemble --cv {short_path(folder)}: no summary.json (is it a cv folder? run cv first)"
        )
    summary = json.loads(summary_file.read_text())
    checkpoints = []
    for fold in summary.get("per_fold") or []:
        if not fold.get("checkpoint") or fold.get("metrics") is None:
            raise ConfigError(
                f"ensemble --cv {short_path(folder)}: fold {fold.get('fold')} is not finished and scored "
                f"({fold.get('status')}); run the cv command again to finish it"
            )
        checkpoints.append(Path(fold["checkpoint"]))
    if not checkpoints:
        raise ConfigError(f"ensemble --cv {short_path(folder)}: summary.json lists no folds")
    if refit:
        checkpoint = (summary.get("refit") or {}).get("checkpoint")
        if not checkpoint:
            raise ConfigError(
                f"ensemble --cv {short_path(folder)} --refit true: the cv has no finished refit (run cv with "
                "--refit true)"
            )
        checkpoints.append(Path(checkpoint))
    return checkpoints


def ensemble_config(run_config: dict[str, Any], net: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """The first member's run config as the ensemble's: its net, no own inference, no folds, ``ckpt_path``."""
    config = copy.deepcopy(run_config)
    model = config.setdefault("model", {}).setdefault("init_args", {})
    model["net"] = net
    model["inference"] = None  # each member runs its own
    model["postprocess"] = without_thresholds_file(model.get("postprocess"))
    data = (config.get("data") or {}).get("init_args") or {}
    for key in FOLD_ARGUMENTS:
        data.pop(key, None)  # the data module's own defaults: its own train/val/test split
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(checkpoint.parent.parent)
    config["ckpt_path"] = str(checkpoint)
    return config


def build_ensemble(checkpoints: list[Path], output: Path, weights: list[float] | None = None) -> Path:
    """Write the ensemble of ``checkpoints`` into ``output`` (see the module's docstring); returns its
    checkpoint's path.

    Raises:
        ConfigError: in one line, for a missing or foreign checkpoint, members that predict different
            classes, a member whose run folder has no config.yaml, or weights that do not fit.
    """
    if weights is not None and len(weights) != len(checkpoints):
        raise ConfigError(f"ensemble --weights: {len(weights)} weights for {len(checkpoints)} checkpoints")
    shares = check_weights(weights, len(checkpoints))
    checkpoints = [path.resolve() for path in checkpoints]  # the config works from any folder
    output = output.resolve()
    check_output(output)
    loaded = [read_checkpoint(str(path), True, option="checkpoints") for path in checkpoints]
    records = [read_record(checkpoint, path) for checkpoint, path in zip(loaded, checkpoints, strict=True)]
    check_members(records, [short_path(path) for path in checkpoints])
    run = run_of_checkpoint(checkpoints[0])
    if run is None or not (run / "config.yaml").is_file():
        raise ConfigError(
            f"ensemble: {short_path(checkpoints[0])} is not in a run folder with a config.yaml (<run>/checkpoints/"
            "X.ckpt); the first member's run config gives the ensemble's data and trainer"
        )
    # each member's model config as its record holds it, less what plays no part in its probabilities: the
    # optimizer, and its post-processing (the ensemble's chain runs once, on the average)
    members = []
    for record in records:
        model = copy.deepcopy(record["model"])
        for key in TRAINING_ONLY:
            model.get("init_args", {}).pop(key, None)
        model.setdefault("init_args", {})["postprocess"] = None
        members.append(model)
    # input_mean/std null: the module passes the data's normalisation, whatever a later config sets
    net = {
        "class_path": NET_CLASS,
        "init_args": {"members": members, "weights": list(weights) if weights is not None else None},
    }
    record = copy.deepcopy(records[0])
    record["model"]["init_args"]["net"] = net
    record["model"]["init_args"]["inference"] = None
    record["thresholds"] = None
    trained = trained_union(records)
    if trained is None:
        record.pop(SPLITS_KEY, None)
    else:
        record[SPLITS_KEY] = trained
    module = build_module(record)
    for member, checkpoint, path in zip(module.net.members, loaded, checkpoints, strict=True):
        load_weights(member, checkpoint, path)
    target = output / "checkpoints" / CHECKPOINT_NAME
    # the first member's epoch and loss weights (the ensemble's test reports its loss with them)
    source = {**loaded[0], RECORD_KEY: {**records[0], SPLITS_KEY: trained}}
    if trained is None:
        source[RECORD_KEY].pop(SPLITS_KEY)
    write_bundle(module, source, checkpoints[0], target, record=record)
    run_config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    config = ensemble_config(run_config, net, target)
    atomic_write(output / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    description = {
        "checkpoint": str(target),
        "config": str(output / "config.yaml"),
        "members": [
            {"checkpoint": str(path), "sha256": file_digest(path), "weight": w}
            for path, w in zip(checkpoints, shares, strict=True)
        ],
    }
    atomic_write(output / DESCRIPTION, json.dumps(description, indent=2) + "\n")
    return target


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-seg ensemble",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cv", default=None, help="a cv folder: the best checkpoint of each fold")
    source.add_argument("--checkpoints", nargs="+", default=None, help="the members' checkpoints")
    parser.add_argument(
        "--refit", choices=("true", "false"), default="false", help="with --cv: the refit is a member too"
    )
    parser.add_argument("--weights", nargs="+", type=float, default=None, help="one weight per member")
    parser.add_argument("--output", default=None, help="the ensemble's folder (default <cv>/ensemble)")
    return parser


def main(argv: list[str]) -> int:
    """``lightning-seg ensemble ...``: 0 when written, 2 on bad input (one line)."""
    options = _parser().parse_args(argv)
    try:
        if options.cv is not None:
            checkpoints = cv_checkpoints(Path(options.cv), options.refit == "true")
            default = "ensemble_refit" if options.refit == "true" else "ensemble"
            output = Path(options.output) if options.output else Path(options.cv) / default
        else:
            if options.output is None:
                raise ConfigError("ensemble --checkpoints needs --output (the ensemble's folder)")
            checkpoints, output = [Path(p) for p in options.checkpoints], Path(options.output)
        if options.weights is not None and len(options.weights) != len(checkpoints):
            raise ConfigError(
                f"ensemble --weights: {len(options.weights)} weights for {len(checkpoints)} checkpoints"
            )
        if ensemble_is_current(output.resolve(), checkpoints, options.weights):
            print(f"ensemble of {len(checkpoints)}: {output / 'checkpoints' / CHECKPOINT_NAME} (up to date)")
            return 0
        target = build_ensemble(checkpoints, output, options.weights)
    except ConfigError as error:
        print(f"lightning-seg: error: {error}", file=sys.stderr)
        return 2
    print(f"ensemble of {len(checkpoints)}: {target}")
    print(f"  lightning-seg test --config {output / 'config.yaml'}   (predict, submit, attack, export alike)")
    return 0
