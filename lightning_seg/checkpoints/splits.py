"""The split a checkpoint was trained on, recorded in it, and the check that an evaluation never scores a
sample the checkpoint was trained on.

A run that trained without a test split and is then tested with ``--data.init_args.test_fraction 0.1`` would
draw its test images from its old training pool (the val split is kept, the test split is cut from what was
train): the score is inflated, silently. ``fit`` records each split's sample names in every checkpoint (under
``checkpoint["lightning_seg"]["splits"]``; the training split's names in full, the others as count and hash),
and ``validate``, ``test``, ``tune`` and ``attack`` refuse in one line an evaluation split that
holds a sample of that training split.

A sample is named by :meth:`~lightning_seg.data.base.SegDataModule.sample_ids` (a file's path relative to its
dataset, not an absolute path: a moved dataset still matches). A data module that cannot list its samples
cheaply records nothing and is not checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from lightning_seg.data.base import SAMPLE_ID_SEPARATOR
from lightning_seg.errors import ConfigError

SPLITS_KEY = "splits"
"""The key of the split record inside a checkpoint's model record."""
ALLOW_OPTION = "allow_trained_samples"
"""``--allow_trained_samples true``: evaluate on samples whose names the checkpoint's training split holds (on
purpose: another dataset whose file names coincide)."""
SCORED_SPLIT = {"validate": "val", "test": "test"}
"""The split each evaluation command scores (``tune`` and ``attack`` name theirs with ``--split``)."""
SPLIT_CHECKED = ("validate", "test", "tune", "attack")
"""The commands that score a split against its masks, and so are checked. ``predict``, ``submit`` and
``export`` score nothing: their images may well be named like training ones (a competition's test folder)."""
HINTS = {
    "test": "validate on its val split, or refit with data.test_fraction",
    "val": "use its config.yaml's data.split_seed and data.val_fraction",
}


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def split_record(datamodule: Any) -> dict[str, Any] | None:
    """The record of the data module's splits as plain data: ``{"data": class path, "train": {"count",
    "sha256", "ids"}, "val": {"count", "sha256"}, "test": {"count", "sha256"}}`` (a split it cannot list:
    None); None for a data module that lists no split."""
    lister = getattr(datamodule, "sample_ids", None)
    if not callable(lister):
        return None
    record: dict[str, Any] = {"data": f"{type(datamodule).__module__}.{type(datamodule).__qualname__}"}
    for split in ("train", "val", "test"):
        ids = lister(split)
        if ids is None:
            record[split] = None
            continue
        record[split] = {"count": len(ids), "sha256": _digest(ids)}
        if split == "train":
            record[split]["ids"] = sorted(ids)
    if record["train"] is None:
        return None
    return record


def evaluated_split(subcommand: str, config: Any) -> str | None:
    """The split ``subcommand`` scores (None: one that scores no split against the training data)."""
    if subcommand in SCORED_SPLIT:
        return SCORED_SPLIT[subcommand]
    if subcommand == "tune" and config.get("oof"):
        return None  # calibrates on a cv's out-of-fold files, not on a split
    if subcommand in SPLIT_CHECKED:
        split = config.get("split")
        return None if subcommand == "attack" and split == "predict" else split
    return None


def merge_trained(splits: dict[str, Any] | None, previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """``splits`` of a resumed fit with the training samples of the checkpoint it resumes (``previous``)
    added: a resume with another split must not forget what the weights were already trained on."""
    before = ((previous or {}).get("train") or {}).get("ids")
    if splits is None or splits.get("train") is None or not before:
        return splits
    ids = sorted(set(splits["train"]["ids"]) | set(before))
    return {**splits, "train": {"count": len(ids), "sha256": _digest(ids), "ids": ids}}


def check_held_out(record: dict[str, Any] | None, datamodule: Any, split: str, subcommand: str) -> str | None:
    """Refuse (ConfigError, one line) when ``split`` of ``datamodule`` holds a sample of the training split
    the checkpoint's model ``record`` names (the same name and, where known, the same file size). Returns a
    warning line when the checkpoint was written before checkpoints recorded their split, else None (also
    for data that cannot list its samples)."""
    if record is None or SPLITS_KEY not in record:
        return (
            f"{subcommand}: the checkpoint records no training split (written before checkpoints carried "
            f"one): cannot check that the {split} samples were not trained on"
        )
    trained = (((record or {}).get(SPLITS_KEY) or {}).get("train") or {}).get("ids")
    if trained is None:
        return None
    lister = getattr(datamodule, "sample_ids", None)
    ids = lister(split) if callable(lister) else None
    if not ids:
        return None
    seen = set(trained)
    leaked = [name for name in ids if name in seen]
    if not leaked:
        return None
    first = leaked[0].split(SAMPLE_ID_SEPARATOR)[0]
    raise ConfigError(
        f"{split} split: {len(leaked)} of {len(ids)} (first: {first}) were in the checkpoint's training "
        f"split; {HINTS.get(split, HINTS['test'])}; other data, same names: --{ALLOW_OPTION} true"
    )
