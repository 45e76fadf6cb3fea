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
import hashlib
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
from lightning_seg.runs.folders import run_of_checkpoint
from lightning_seg.task.ensemble import check_members, member_arguments
from lightning_seg.utils.atomic import atomic_write

NET_CLASS = "lightning_seg.task.ensemble.EnsembleNet"
CHECKPOINT_NAME = "ensemble.ckpt"
FOLD_ARGUMENTS = ("folds", "fold", "group_by", "fold_seed")
"""The data arguments of a cv fold, cleared in the ensemble's config: it evaluates the data's own splits."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cv_checkpoints(folder: Path) -> list[Path]:
    """The best checkpoint of every fold of a cv folder, in fold order (its ``summary.json``); ConfigError
    in one line when a fold has none (the cv is not finished)."""
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
    return checkpoints


def ensemble_config(run_config: dict[str, Any], net: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """The first member's run config as the ensemble's: its net, no own inference, no folds, ``ckpt_path``."""
    config = copy.deepcopy(run_config)
    model = config.setdefault("model", {}).setdefault("init_args", {})
    model["net"] = net
    model["inference"] = None  # each member runs its own
    data = (config.get("data") or {}).get("init_args") or {}
    for key in FOLD_ARGUMENTS:
        if key in data:
            data[key] = None if key != "fold_seed" else data[key]
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
    loaded = [read_checkpoint(str(path), True, option="checkpoints") for path in checkpoints]
    records = [read_record(checkpoint, path) for checkpoint, path in zip(loaded, checkpoints, strict=True)]
    check_members(records, [short_path(path) for path in checkpoints])
    run = run_of_checkpoint(checkpoints[0])
    if run is None or not (run / "config.yaml").is_file():
        raise ConfigError(
            f"ensemble: {short_path(checkpoints[0])} is not in a run folder with a config.yaml (<run>/checkpoints/"
            "X.ckpt); the first member's run config gives the ensemble's data and trainer"
        )
    # each member's model config as its record holds it, less what plays no part in inference
    members = []
    for record in records:
        model = copy.deepcopy(record["model"])
        for key in TRAINING_ONLY:
            model.get("init_args", {}).pop(key, None)
        members.append(model)
    first = member_arguments(records[0])
    net = {
        "class_path": NET_CLASS,
        "init_args": {
            "members": members,
            "weights": list(weights) if weights is not None else None,
            "input_mean": first.get("mean"),
            "input_std": first.get("std"),
        },
    }
    record = copy.deepcopy(records[0])
    record["model"]["init_args"]["net"] = net
    record["model"]["init_args"]["inference"] = None
    record["thresholds"] = None
    trained: dict[str, Any] | None = copy.deepcopy(records[0].get(SPLITS_KEY))
    for other in records[1:]:  # test refuses a split that any member trained on
        trained = merge_trained(trained, other.get(SPLITS_KEY))
    record[SPLITS_KEY] = trained
    module = build_module(record)
    for member, checkpoint, path in zip(module.net.members, loaded, checkpoints, strict=True):
        load_weights(member, checkpoint, path)
    target = output / "checkpoints" / CHECKPOINT_NAME
    # the first member's epoch and loss weights (the ensemble's test reports its loss with them)
    source = {**loaded[0], RECORD_KEY: {**records[0], SPLITS_KEY: trained}}
    write_bundle(module, source, checkpoints[0], target, record=record)
    run_config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    config = ensemble_config(run_config, net, target)
    atomic_write(output / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    description = {
        "checkpoint": str(target),
        "config": str(output / "config.yaml"),
        "members": [
            {"checkpoint": str(path), "sha256": _sha256(path), "weight": w}
            for path, w in zip(checkpoints, module.net.weights, strict=True)
        ],
    }
    atomic_write(output / "ensemble.json", json.dumps(description, indent=2) + "\n")
    return target


def current(output: Path, checkpoints: list[Path], weights: list[float] | None) -> bool:
    """Whether ``output`` already holds the ensemble of exactly these checkpoints (same files, weights)."""
    described = output / "ensemble.json"
    if not described.is_file() or not (output / "checkpoints" / CHECKPOINT_NAME).is_file():
        return False
    members = json.loads(described.read_text()).get("members") or []
    total = sum(weights) if weights is not None else len(checkpoints)
    expected = [w / total for w in weights] if weights is not None else [1 / total] * len(checkpoints)
    return [(m.get("checkpoint"), m.get("sha256")) for m in members] == [
        (str(p), _sha256(p)) for p in checkpoints
    ] and all(abs(m.get("weight", -1) - w) < 1e-9 for m, w in zip(members, expected, strict=True))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-seg ensemble",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cv", default=None, help="a cv folder: the best checkpoint of each fold")
    source.add_argument("--checkpoints", nargs="+", default=None, help="the members' checkpoints")
    parser.add_argument("--weights", nargs="+", type=float, default=None, help="one weight per member")
    parser.add_argument("--output", default=None, help="the ensemble's folder (default <cv>/ensemble)")
    return parser


def main(argv: list[str]) -> int:
    """``lightning-seg ensemble ...``: 0 when written, 2 on bad input (one line)."""
    options = _parser().parse_args(argv)
    try:
        if options.cv is not None:
            checkpoints = cv_checkpoints(Path(options.cv))
            output = Path(options.output) if options.output else Path(options.cv) / "ensemble"
        else:
            if options.output is None:
                raise ConfigError("ensemble --checkpoints needs --output (the ensemble's folder)")
            checkpoints, output = [Path(p) for p in options.checkpoints], Path(options.output)
        if current(output, checkpoints, options.weights):
            print(f"ensemble of {len(checkpoints)}: {output / 'checkpoints' / CHECKPOINT_NAME} (up to date)")
            return 0
        target = build_ensemble(checkpoints, output, options.weights)
    except ConfigError as error:
        print(f"lightning-seg: error: {error}", file=sys.stderr)
        return 2
    print(f"ensemble of {len(checkpoints)}: {target}")
    print(f"  lightning-seg test --config {output / 'config.yaml'}   (predict, submit, attack, export alike)")
    return 0
