"""``submit``: a competition CSV of run-length-encoded predictions, from the same path as ``test``.

``python -m lightning_seg submit --config X.yaml --ckpt_path <checkpoint>`` runs ``predict`` (the model's
inference and post-processing, tuned thresholds included, each prediction at its image's original size)
over the data's predict split and writes ``submission.csv`` into the command's record folder
``<run>/submit/<date-time>/`` (or ``--output``)::

    Id,Predicted
    <Id>_classification,<RLE of the L-long 0/1 image-label vector>
    <Id>_segmentation,<RLE of the (K-1)×H×W stack of planes pred == c, c = 1..K-1>

two rows per image, in the order of the data's competition CSV (``competition_ids``) when it has one.
Background (class 0) and void are never encoded; the encoding is :mod:`lightning_seg.submission.rle`.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_seg.errors import ConfigError, short_path
from lightning_seg.labels.table import LabelTable
from lightning_seg.runs.folders import run_of_checkpoint
from lightning_seg.submission.rle import encode, encode_class_planes
from lightning_seg.utils.atomic import atomic_write
from lightning_seg.utils.host import masks_to_host

if TYPE_CHECKING:
    from lightning_seg.task.module import SegmentationModule

LabelSource = Literal["head", "mask", "file"]


class SubmissionRows(BasePredictionWriter):
    """Encodes each predicted image into its two rows as ``predict`` produces it (kept as text, not as
    masks).

    Args:
        labels_from: the classification row from the image-level head's decisions ("head", with the tuned
            thresholds when loaded), from the classes present in the predicted mask ("mask"), or from a
            labels file ("file", ``table``).
        num_labels: L, the length of the classification vector.
        label_order: the competition's column order, as indices into the model's; None: the model's.
        table: the labels file's rows (``labels_from`` "file"); its columns name the foreground classes.
    """

    def __init__(
        self,
        labels_from: LabelSource,
        num_labels: int,
        label_order: Sequence[int] | None = None,
        table: LabelTable | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.labels_from = labels_from
        self.num_labels = num_labels
        self.table = table
        # the competition's column order, as indices into the model's (VOC) order; None: the model's
        self.label_order = np.asarray(label_order) if label_order is not None else None
        self.rows: dict[str, tuple[str, str]] = {}

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        masks = [mask.numpy() for mask in masks_to_host(prediction["mask"])]  # one copy per batch
        if self.labels_from == "head":
            labels = prediction["label_decision"].cpu().numpy().astype(bool)
        elif self.table is not None:  # the file's values of the foreground classes, in the model's order
            labels = self.table.decisions(prediction["name"], self.table.class_names[1:]).numpy()
        else:  # present foreground classes 1..L of the predicted mask
            labels = np.stack([np.isin(np.arange(1, self.num_labels + 1), np.unique(m)) for m in masks])
        if self.label_order is not None:
            labels = labels[:, self.label_order]
        classes = range(1, self.num_labels + 1)
        for name, mask, label in zip(prediction["name"], masks, labels, strict=True):
            self.rows[str(name)] = (encode(label), encode_class_planes(mask, classes))


def write_submission(
    trainer: L.Trainer,
    model: SegmentationModule,
    datamodule: Any,
    ckpt_path: str | None,
    output: str | None,
    labels_from: str | None,
    weights_only: bool | None,
) -> Path:
    """Predict, encode, write the CSV; returns its path. ``labels_from``: "head", "mask", a labels CSV
    (:class:`~lightning_seg.labels.table.LabelTable`), or None (the head when the net has one)."""
    if datamodule is None:
        raise ConfigError("submit needs a data module (data: in the config) with a predict split")
    if trainer.world_size > 1:
        raise ConfigError("submit runs in one process: drop trainer.devices / strategy for it")
    num_labels = model.num_classes - 1  # foreground classes: the planes and the label vector
    has_head = getattr(model.net, "label_head", None) is not None
    table = None
    if labels_from not in (None, "head", "mask"):
        given = str(labels_from)
        if not given.endswith((".csv", ".ckpt")) and not Path(given).exists():
            raise ConfigError(
                f"submit --labels_from {given!r}: expected head, mask, a labels CSV (name,labels,...) or another "
                "run's checkpoint (.ckpt)"
            )
        if str(labels_from).endswith(".ckpt"):  # another run: its predict writes the labels first
            labels_from = str(predicted_labels(Path(str(labels_from)), Path(trainer.default_root_dir)))
        table = LabelTable(str(labels_from), model.class_names)  # checked against the classes before the pass
    source: LabelSource = "file" if table is not None else labels_from or ("head" if has_head else "mask")  # type: ignore[assignment]
    if source == "head" and not has_head:
        raise ConfigError(
            f"submit --labels_from head: the net ({type(model.net).__name__}) has no image-level head; "
            "use --labels_from mask"
        )
    if source == "head" and (model.label_mode != "multi" or len(model.label_names) != num_labels):
        raise ConfigError(
            f"submit --labels_from head needs a multi-label head over the {num_labels} foreground classes "
            f"(model.label_mode multi; this one: {model.label_mode}, {len(model.label_names)} labels)"
        )
    _check_every_test_image(datamodule)
    rows = SubmissionRows(source, num_labels, _label_order(datamodule, model, source), table)
    trainer.callbacks.append(rows)
    try:
        trainer.predict(
            model,
            datamodule=datamodule,
            ckpt_path=ckpt_path,
            return_predictions=False,
            weights_only=weights_only,
        )
    finally:
        trainer.callbacks.remove(rows)
    order = _competition_order(datamodule, rows.rows)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["Id", "Predicted"])
    for identifier in order:
        classification, segmentation = rows.rows[identifier]
        writer.writerow([f"{identifier}_classification", classification])
        writer.writerow([f"{identifier}_segmentation", segmentation])
    target = Path(output) if output else Path(trainer.default_root_dir) / "submission.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, text.getvalue())
    origin = f"labels of {short_path(str(labels_from))}" if table is not None else f"the {source}"
    print(f"submission: {short_path(str(target))} ({len(order)} images, classification from {origin})")
    return target


def predicted_labels(checkpoint: Path, folder: Path) -> Path:
    """The ``labels.csv`` of another run's ``predict`` with ``checkpoint`` (an image classifier, or a
    segmentation net with a multi-label head), run in its own process with that run's ``config.yaml`` (its
    own data, size and normalisation) and copied into ``folder`` as ``labels_from.csv`` for the record.
    Refuses (one line) a checkpoint outside a run folder, a predict that fails, and one that writes no
    labels."""
    run = run_of_checkpoint(checkpoint)
    where = f"submit --labels_from {short_path(str(checkpoint))}"
    if not checkpoint.is_file():
        raise ConfigError(f"{where}: no such checkpoint")
    if run is None or not (run / "config.yaml").is_file():
        raise ConfigError(
            f"{where}: not in a run folder (<run>/checkpoints/) beside its config.yaml; run predict with that "
            "model's config and pass its labels.csv"
        )
    started = time.time()
    command = [sys.executable, "-m", "lightning_seg", "predict", "--config", str(run / "config.yaml")]
    print(f"submit: labels from {short_path(str(checkpoint))}: {' '.join(command[1:])} ...", flush=True)
    # one process: one labels.csv (several devices would write one per rank)
    done = subprocess.run(
        [*command, "--ckpt_path", str(checkpoint), "--trainer.devices=1"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        errors = [line for line in lines if line.startswith("lightning-seg: error:")]
        raise ConfigError(f"{where}: its predict failed: {(errors or lines or [str(done.returncode)])[-1]}")
    written = [p for p in run.glob("predict/*/predictions/labels.csv") if p.stat().st_mtime >= started - 1]
    if not written:
        raise ConfigError(f"{where}: its predict wrote no labels.csv (a model without an image-level head?)")
    target = folder / "labels_from.csv"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(max(written, key=lambda p: p.stat().st_mtime), target)
    return target


def _check_every_test_image(datamodule: Any) -> None:
    """Before the pass: every Id of the competition CSV is in the predict split (``on_bad_sample: skip``
    drops unreadable files, and a submission must list every image)."""
    ids = getattr(datamodule, "competition_ids", None)
    if not callable(ids):
        return
    datamodule.setup("predict")  # builds the split once; predict reuses it
    samples = getattr(datamodule.datasets.get("predict"), "samples", None)
    if samples is None:
        return
    present = {str(sample.name) for sample in samples}
    dropped = [identifier for identifier in ids("predict") if str(identifier) not in present]
    if dropped:
        raise ConfigError(
            f"submit: {len(dropped)} test images of the competition CSV were skipped as bad files (Id "
            f"{dropped[0]}, ...); a submission lists every one: fix them (data.on_bad_sample: error names them)"
        )


def _label_order(datamodule: Any, model: SegmentationModule, source: LabelSource) -> list[int] | None:
    """Where each column of the competition's label vector is in the model's vector (the head's labels,
    or the foreground classes for labels from the mask), matched by name; None when the data names no
    columns. A column the model does not have is refused (never a shifted vector)."""
    names = getattr(datamodule, "competition_label_names", None)
    if not callable(names):
        return None
    columns = names()
    ours = list(model.label_names) if source == "head" else list(model.class_names[1:])
    unknown = [name for name in columns if name not in ours]
    if unknown or len(columns) != len(ours):
        raise ConfigError(
            f"submit: the competition's label columns {columns[:3]}... do not match the model's "
            f"{'labels' if source == 'head' else 'classes'} {ours[:3]}... (unknown: {unknown[:3]})"
        )
    return [ours.index(name) for name in columns]


def _competition_order(datamodule: Any, rows: dict[str, tuple[str, str]]) -> list[str]:
    """The Ids in the competition CSV's order when the data knows it (every one must have a row), else in
    the order predicted."""
    ids = getattr(datamodule, "competition_ids", None)
    if not callable(ids):
        return list(rows)
    order = [str(identifier) for identifier in ids("predict")]
    missing = [identifier for identifier in order if identifier not in rows]
    if missing:
        raise ConfigError(f"submit: no prediction for {len(missing)} test images ({missing[0]}, ...)")
    return order
