"""``tune``: per-class probability thresholds from the validation split, in one pass.

``python -m lightning_seg tune --config X.yaml --ckpt_path <checkpoint>`` runs the model's own inference
path and the post-processing steps that come before the decision (a CRF) over the val split, at each
mask's stored size, and fills one :class:`~lightning_seg.postprocess.thresholds.ThresholdHistogram` (and
one for a multi-label image head). Each class then takes the threshold that maximises its one-vs-rest
Dice (or IoU). The thresholds go beside the checkpoint (``<name>.thresholds.json``, read by a
``ClassThresholds`` step in ``test`` and ``predict``) and into the command's record folder
``<run>/tune/<date-time>/``, with every class's score at every threshold (``curves``, drawn in
``plots/threshold_curves.png``). A second pass over val, through the whole chain with the new thresholds,
gives the before/after table that ``tune`` prints and records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_seg.callbacks.base import CommandPass, attached
from lightning_seg.callbacks.out_of_fold import load_out_of_fold, read_out_of_fold
from lightning_seg.checkpoints.load import load_weights
from lightning_seg.checkpoints.read import read_checkpoint
from lightning_seg.commands.model_pass import ModelPass
from lightning_seg.errors import ConfigError, short_path
from lightning_seg.metrics import SegMetrics
from lightning_seg.metrics.calibration import fit_temperature
from lightning_seg.postprocess import ClassThresholds, LabelConsistency, PostProcess, Prediction
from lightning_seg.postprocess.temperature import TEMPERATURE_KEY, TemperatureScaling
from lightning_seg.postprocess.thresholds import (
    THRESHOLDS_FORMAT,
    ThresholdHistogram,
    best_thresholds,
    file_digest,
    grid,
    resolve_fallback,
    scores,
    thresholds_path,
)
from lightning_seg.reports.threshold_curves import publish_threshold_curves
from lightning_seg.runs.ensembles import ensemble_members
from lightning_seg.task.epoch_logs import segmentation_logs
from lightning_seg.utils.atomic import atomic_write

if TYPE_CHECKING:
    from lightning_seg.task.module import SegmentationModule


class ThresholdSearch(nn.Module):
    """The histograms of one calibration pass: pixels per class, and images per label of a multi-label
    image head (fed by :class:`ThresholdCalibration`).

    Args:
        num_classes: K.
        ignore_index: target pixels left out.
        num_labels: L of a multi-label head, else None.
        steps: thresholds in the grid.
    """

    def __init__(self, num_classes: int, ignore_index: int, num_labels: int | None, steps: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.classes = ThresholdHistogram(num_classes, steps)
        self.labels = ThresholdHistogram(num_labels, steps) if num_labels else None

    def update(
        self,
        predictions: list[Prediction],
        truths: list[torch.Tensor],
        label_probabilities: torch.Tensor | None,
        label_targets: torch.Tensor | None,
    ) -> None:
        """Count one batch: each image's K×H×W probabilities against its int64 H×W mask; B×L label
        probabilities against float B×L 0/1 targets (rows of an unknown target hold -1, left out)."""
        for prediction, truth in zip(predictions, truths, strict=True):
            probabilities = prediction.probabilities
            classes = torch.arange(probabilities.shape[0], device=truth.device).view(-1, 1, 1)
            self.classes.update(
                probabilities[None], (truth[None] == classes)[None], (truth != self.ignore_index)[None]
            )
        if self.labels is not None and label_probabilities is not None and label_targets is not None:
            known = (label_targets >= 0).all(1)
            self.labels.update(label_probabilities, label_targets > 0.5, known)


class ThresholdCalibration(ModelPass):
    """``tune``'s calibration pass over val, a module of the command's own that the validation loop drives:
    each batch through the model's path up to the decision (its inference and the steps before the decision,
    a CRF), at each mask's stored size, into ``search``. The model (a child, its weights loaded) is run, never
    reprogrammed, and logs nothing.

    Args:
        model: the segmentation module.
        search: the histograms to fill.
    """

    def __init__(self, model: SegmentationModule, search: ThresholdSearch) -> None:
        super().__init__(model)
        self.search = search

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        model = self.model
        out = model(batch["image"])
        predictions, truths = model.evaluation.before_decision(model.mask_logits, batch, out.mask, out.label)
        label_probabilities = label_targets = None
        if self.search.labels is not None and out.label is not None:
            label_probabilities = model.label_probabilities(out.label)
            label_targets = model.label_targets(batch)
        self.search.update(predictions, truths, label_probabilities, label_targets)

    def on_validation_end(self) -> None:
        self.model.postprocess.close()  # the CRF's process pool


MAX_TEMPERATURE_PIXELS = 1_000_000
"""Val pixels the temperature is fitted on at most (a seeded sample of the pass's samples)."""


class TemperatureFit(ModelPass):
    """``tune``'s pass that gathers val pixels for the temperature: each image's probabilities from the
    model's inference (before any step), at each mask's stored size, and a seeded sample of its labelled
    pixels (at most ``per_image``, sampled on the device), kept on the host as float32
    log-probabilities with their classes.

    Args:
        model: the segmentation module (its weights loaded).
        per_image: labelled pixels sampled per image.
        seed: the sample's seed.
    """

    def __init__(self, model: SegmentationModule, per_image: int = 2_000, seed: int = 0) -> None:
        super().__init__(model)
        self.per_image = per_image
        self.generator = torch.Generator().manual_seed(seed)
        self.log_probabilities: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        model = self.model
        out = model(batch["image"])
        # no step: the temperature comes first, and is fitted on what the inference gives
        predictions, truths = model.evaluation.before_decision(
            model.mask_logits, batch, out.mask, out.label, PostProcess([])
        )
        for prediction, truth in zip(predictions, truths, strict=True):
            # a command's pass: this nonzero syncs, as every sample of a varying count must
            labelled = (truth.flatten() != model.ignore_index).nonzero()[:, 0]
            order = torch.randperm(len(labelled), generator=self.generator)[: self.per_image]
            pick = labelled[order.to(labelled.device)]
            # only the sampled pixels leave the device
            chosen = prediction.probabilities.flatten(1)[:, pick].T.float()
            self.log_probabilities.append(chosen.clamp_min(1e-12).log().cpu())
            self.targets.append(truth.flatten()[pick].cpu())


def fit_val_temperature(
    trainer: L.Trainer, model: SegmentationModule, datamodule: Any, step: TemperatureScaling
) -> dict[str, Any]:
    """Fit ``step``'s temperature on val (its own pass, one process) and set it for tune's next passes;
    returns the record's entry (the values, the pixels, the NLL of those pixels before and after)."""
    if trainer.world_size > 1:
        raise ConfigError("tune: fitting TemperatureScaling runs in one process; add --trainer.devices 1")
    gather = TemperatureFit(model)
    with attached(trainer, CommandPass("tune")), datamodule.evaluate("val"):
        trainer.validate(gather, datamodule=datamodule, verbose=False)
    if not gather.targets:
        raise ConfigError("tune: the val split gave no labelled pixel to fit the temperature on")
    log_p, target = torch.cat(gather.log_probabilities), torch.cat(gather.targets)
    if len(target) > MAX_TEMPERATURE_PIXELS:  # one parameter (or K): a million pixels pin it down
        keep = torch.randperm(len(target), generator=torch.Generator().manual_seed(1))[
            :MAX_TEMPERATURE_PIXELS
        ]
        log_p, target = log_p[keep], target[keep]
    values = fit_temperature(log_p, target, per_class=step.per_class)
    before = float(torch.nn.functional.cross_entropy(log_p.double(), target))
    after = float(torch.nn.functional.cross_entropy(log_p.double() / values.double(), target))
    step.set(values)
    shown = ", ".join(f"{v:.3f}" for v in values.tolist()[:6])
    rank_zero_info(f"tune: temperature {shown} on {len(target)} val pixels (NLL {before:.4f} → {after:.4f})")
    return {
        "values": [round(float(v), 6) for v in values.tolist()],
        "per_class": step.per_class,
        "pixels": len(target),
        "nll_before": before,
        "nll_after": after,
    }


class ChainScoring(ModelPass):
    """``tune``'s before/after pass over val: each batch through the whole path with ``postprocess`` (the new
    thresholds), row by row (the stage table), at each mask's stored size; logs the last row's scores as
    ``val/*``, as the validation of that chain.

    Args:
        model: the segmentation module (its weights loaded).
        postprocess: the chain to score.
        ckpt_path: the checkpoint (what ``postprocess``'s thresholds are checked against).
    """

    STAGE = "val"

    def __init__(self, model: SegmentationModule, postprocess: PostProcess, ckpt_path: str | None) -> None:
        super().__init__(model)
        self.postprocess = postprocess
        self.ckpt_path = ckpt_path
        self.final = SegMetrics(model.num_classes, model.ignore_index)
        self.table: list[dict[str, Any]] = []

    def on_validation_start(self) -> None:
        self.model.load_postprocess(self.ckpt_path, self.postprocess)
        self.model.evaluation.start_table(self.STAGE)
        rank_zero_info(f"{self.STAGE}: {self.model.evaluation.describe(self.postprocess)}")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        model = self.model
        out = model(batch["image"])
        model.evaluation.score(
            model.mask_logits, batch, self.STAGE, out.mask, out.label, self.final, self.postprocess
        )

    def on_validation_epoch_end(self) -> None:
        scores = self.final.compute()  # synced across processes by torchmetrics
        self.log_dict(segmentation_logs(self.STAGE, scores, {}, self.model.class_names))
        self.log(f"{self.STAGE}/mIoU", scores["mIoU"], prog_bar=True)
        self.table = self.model.evaluation.table(self.STAGE, scores) or []
        self.final.reset()

    def on_validation_end(self) -> None:
        self.postprocess.close()


def _check_arguments(split: str, steps: int, model: Any) -> None:
    if split == "test":
        raise ConfigError(
            "tune --split test: thresholds are tuned on a calibration split, never on test (test would "
            "then score its own tuning); use --split val"
        )
    if split != "val":
        raise ConfigError(f"tune --split {split}: thresholds are tuned on the val split")
    if steps < 2:
        raise ConfigError(f"tune --steps must be >= 2 (a grid from 0 to 1), got {steps}")
    if not hasattr(model, "postprocess"):
        raise ConfigError("tune needs lightning_seg's SegmentationModule as the model")


def _verification_chain(model: SegmentationModule, path: Path) -> PostProcess:
    """The model's chain with the new thresholds as its decision (inserted after the steps on
    probabilities when the config has no ClassThresholds step, so the table shows what they change)."""
    steps = list(model.postprocess.steps)
    from_file = [s for s in steps if isinstance(s, LabelConsistency) and s.table is not None]
    if from_file:  # its labels are usually another split's (the classifier's predict): not val's
        rank_zero_info(
            f"tune: the before/after table leaves out {from_file[0].describe()} (a labels file names the images "
            "it covers, usually the predicted ones, not val's)"
        )
        steps = [s for s in steps if s not in from_file]
    current = model.postprocess.thresholds
    step = ClassThresholds(
        path=str(path),
        rule=current.rule if current else "probability",
        fallback=current.fallback if current else resolve_fallback("auto", model.class_names),
        label_thresholds=current.label_thresholds if current else True,
    )
    if current is not None:
        steps[steps.index(current)] = step
    else:
        steps.insert(len(model.postprocess.before_decision()), step)
    return PostProcess(steps)


def out_of_fold_files(
    model: SegmentationModule, cv: Path, ckpt_path: str | None
) -> tuple[list[Path], dict[str, Any]]:
    """Every out-of-fold file of a cv folder (``fold_K/oof`` of each fold its ``summary.json`` lists), with a
    description for the record. ConfigError in one line when a fold has none or an unfinished pass, when the
    files hold other classes or another ignore index, or when ``ckpt_path`` is neither the folds' ensemble
    (its ``ensemble.json`` lists exactly the folds' checkpoints) nor one of the folds' checkpoints."""
    summary_file = cv / "summary.json"
    if not summary_file.is_file():
        raise ConfigError(f"tune --oof {short_path(cv)}: no summary.json (is it a cv folder? run cv first)")
    summary = json.loads(summary_file.read_text())
    folds = summary.get("per_fold") or []
    files: list[Path] = []
    sources: list[tuple[str, str | None]] = []
    heads = set()
    for fold in folds:
        folder = cv / f"fold_{fold.get('fold')}" / "oof"
        index, found = read_out_of_fold(folder)
        for key, own in (("class_names", list(model.class_names)), ("ignore_index", model.ignore_index)):
            if index.get(key) != own:
                raise ConfigError(
                    f"tune --oof: {short_path(folder)} holds {key} {index.get(key)!r}, the model has {own!r}"
                )
        sources.append((str(Path(index.get("checkpoint") or "").resolve()), index.get("checkpoint_sha256")))
        heads.add(bool(index.get("binary_head")))
        files += found
    if not folds:
        raise ConfigError(f"tune --oof {short_path(cv)}: its summary.json lists no folds")
    if len(heads) > 1:
        raise ConfigError(f"tune --oof {short_path(cv)}: folds mix one-channel and K-channel heads")
    refit = (summary.get("refit") or {}).get("checkpoint")
    _check_oof_source(cv, ckpt_path, sources, refit)
    described = {
        "folder": str(cv),
        "folds": len(folds),
        "images": len(files),
        "binary_head": heads.pop(),
        "note": "each image's probabilities come from the one fold model that never saw it (an ensemble "
        "averages several: its probabilities are softer)",
    }
    return files, described


def _check_oof_source(
    cv: Path, ckpt_path: str | None, sources: list[tuple[str, str | None]], refit: str | None
) -> None:
    """``ckpt_path`` is the folds' ensemble (the same checkpoints, by path and SHA-256; the cv's ``refit``
    may be a member too) or one of the folds."""
    if ckpt_path is None:
        raise ConfigError(
            f"tune --oof: which model are the thresholds for? --ckpt_path the ensemble of {short_path(cv)} (its "
            "ensemble/config.yaml sets it) or one of its folds' checkpoints"
        )
    checkpoint = Path(ckpt_path).resolve()
    members = ensemble_members(checkpoint.parent.parent)
    if members is not None:
        found = [(path, sha256) for path, sha256, _ in members]
        if refit is not None:  # the refit trained on every image: a member the files need not describe
            found = [member for member in found if member[0] != str(Path(refit).resolve())]
        if sorted(found) != sorted(sources):
            raise ConfigError(
                f"tune --oof: {short_path(checkpoint)} is an ensemble of other checkpoints than the folds of "
                f"{short_path(cv)} (their out-of-fold files would not describe it)"
            )
        return
    if (str(checkpoint), file_digest(checkpoint)) not in sources:
        raise ConfigError(
            f"tune --oof: {short_path(checkpoint)} is neither one of the folds of {short_path(cv)} nor their "
            "ensemble (cv writes it to <cv>/ensemble)"
        )


def _stored_predictions(
    model: SegmentationModule, files: list[Path], binary_head: bool
) -> Iterator[tuple[list[Prediction], list[torch.Tensor]]]:
    """Each out-of-fold file as one image's prediction (float32 K×H×W, K ≥ 2, as the model's own path gives
    it: :meth:`EvaluationPath.two_channels` of the head's probabilities) and int64 H×W truth."""
    for file in files:
        probabilities, mask = load_out_of_fold(file)
        native = probabilities[1:] if binary_head else probabilities  # a one-channel head's foreground
        yield [Prediction(probabilities=model.evaluation.two_channels(native[None])[0])], [mask]


def tune_thresholds(
    trainer: L.Trainer,
    model: SegmentationModule,
    datamodule: Any,
    ckpt_path: str | None,
    split: str,
    metric: str,
    steps: int,
    weights_only: bool | None = None,
    oof: str | None = None,
) -> dict[str, Any]:
    """Run the calibration pass (or read a cv's out-of-fold probabilities, ``oof``), write the thresholds,
    verify them; returns the record written."""
    _check_arguments(split, steps, model)
    model.check_label_consistency()  # before the pass, not after it
    if datamodule is None and oof is None:
        raise ConfigError("tune needs a data module (data: in the config) with a val split")
    if oof is None and not getattr(datamodule, "validates", True):
        raise ConfigError(
            "tune: this config trains without a val split (data.refit, or val_fraction 0): no images to tune "
            "on; tune a cv's ensemble on its out-of-fold files (tune --oof <cv>), or a run with a val split"
        )
    image_steps = [s for s in model.postprocess.before_decision() if not isinstance(s, TemperatureScaling)]
    if oof is not None and image_steps:
        raise ConfigError(
            f"tune --oof: the out-of-fold files hold probabilities before post-processing, and "
            f"{image_steps[0].describe()} reads each image; tune on val (without --oof), or leave that step out"
        )
    if oof is not None and model.postprocess.find(LabelConsistency) is not None:
        raise ConfigError(
            "tune --oof: the out-of-fold files hold no image-level label probabilities, which LabelConsistency "
            "reads; tune without it (or on val)"
        )
    # a multi-label head's thresholds too (its histogram stays empty for a net without a head)
    multi_label = getattr(model, "label_mode", None) == "multi"
    search = ThresholdSearch(
        model.num_classes,
        model.ignore_index,
        len(model.label_names) if multi_label and oof is None else None,  # no label probabilities stored
        steps,
    )
    checkpoint = ckpt_path
    stored: dict[str, Any] | None = None
    temperature = model.postprocess.find(TemperatureScaling)
    fitted_temperature: dict[str, Any] | None = None
    if oof is not None and isinstance(temperature, TemperatureScaling) and temperature.fitted:
        raise ConfigError(
            "tune --oof: fit TemperatureScaling on val (tune without --oof), or fix it: temperature: <value>"
        )
    if oof is not None:
        files, stored = out_of_fold_files(model, Path(oof), ckpt_path)
        for predictions, truths in _stored_predictions(model, files, stored["binary_head"]):
            if isinstance(temperature, TemperatureScaling):  # a fixed one (a fitted one was refused)
                temperature.apply(predictions)
            search.update(predictions, truths, None, None)
    else:
        if ckpt_path is not None:
            load_weights(model, read_checkpoint(ckpt_path, weights_only, cache=True), ckpt_path)
        if isinstance(temperature, TemperatureScaling) and temperature.fitted:
            fitted_temperature = fit_val_temperature(trainer, model, datamodule, temperature)
        # calibrate on the masks as stored, at the size test and predict decide at
        with attached(trainer, CommandPass("tune")), datamodule.evaluate("val"):
            trainer.validate(ThresholdCalibration(model, search), datamodule=datamodule, verbose=False)
    result = best_thresholds(search.classes, metric)
    at_half = _score_at(search.classes, metric, 0.5)
    labels = (
        best_thresholds(search.labels, "dice")  # per label F1 over images
        if search.labels is not None and search.labels.update_count
        else None
    )
    thresholds = [round(t, 6) for t in grid(steps).tolist()]
    curves = {"thresholds": thresholds, "classes": _curves(search.classes, metric)}
    if labels is not None:
        curves["labels"] = _curves(search.labels, "dice")
    record: dict[str, Any] = {
        "format": THRESHOLDS_FORMAT,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": file_digest(checkpoint) if checkpoint and Path(checkpoint).is_file() else None,
        "class_names": list(model.class_names),
        "split": "out-of-fold" if stored is not None else split,
        "out_of_fold": stored,
        "metric": metric,
        "grid": {"start": 0.0, "stop": 1.0, "steps": steps},
        "inference": model.inference.describe(),
        "tuned_after": [step.describe() for step in model.postprocess.before_decision()],
        "classes": {**result, "score_at_0.5": at_half},
    }
    if labels is not None:
        record["labels"] = {**labels, "names": list(model.label_names)}
    if fitted_temperature is not None:
        record[TEMPERATURE_KEY] = fitted_temperature
    configured = model.postprocess.thresholds
    if configured is not None and configured.path is not None:
        target = Path(configured.path)  # where this config's test and predict will read them
    elif checkpoint:
        target = thresholds_path(checkpoint)
    else:
        target = Path(trainer.default_root_dir) / "thresholds.json"
    if trainer.is_global_zero:
        atomic_write(target, json.dumps(record, indent=2))
    trainer.strategy.barrier()
    record["curves"] = curves  # the command's record only, not the thresholds file that test reads

    # the before/after table: val (or the out-of-fold files) through the whole chain with the new thresholds
    chain = _verification_chain(model, target)
    if stored is not None:
        record["stages"] = _score_stored(model, chain, ckpt_path, files, stored["binary_head"])
    else:
        scoring = ChainScoring(model, chain, ckpt_path)
        with attached(trainer, CommandPass("tune")), datamodule.evaluate("val"):
            trainer.validate(scoring, datamodule=datamodule, verbose=False)
        record["stages"] = scoring.table
    record["thresholds_file"] = str(target)
    if trainer.is_global_zero:
        folder = Path(trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        plots = publish_threshold_curves(trainer, record, folder / "plots")
        summary = {"stage": "tune", "status": "completed", **record, "plots": plots}
        atomic_write(folder / "summary.json", json.dumps(summary, indent=2))
        _print(record, target, folder, model.postprocess.thresholds is None)
    return record


def _score_stored(
    model: SegmentationModule, chain: PostProcess, ckpt_path: str | None, files: list[Path], binary_head: bool
) -> list[dict[str, Any]]:
    """The stage table of the out-of-fold files through ``chain`` (raw → + each step), on the CPU."""
    stage = "oof"
    model.load_postprocess(ckpt_path, chain)
    model.evaluation.start_table(stage)
    final = SegMetrics(model.num_classes, model.ignore_index)
    for predictions, truths in _stored_predictions(model, files, binary_head):
        model.evaluation.score_predictions(predictions, truths, stage, final, chain)
    table = model.evaluation.table(stage, final.compute()) or []
    chain.close()
    return table


def _score_at(histogram: ThresholdHistogram, metric: str, threshold: float) -> list[float | None]:
    """Each class's one-vs-rest score at one threshold of the grid (for the printout's reference)."""
    index = int(torch.argmin((grid(histogram.steps) - threshold).abs()))
    counts = histogram.compute()
    values = scores(counts["tp"][:, index], counts["fp"][:, index], counts["fn"][:, index], metric)
    return [None if v != v else round(float(v), 6) for v in values.tolist()]


def _curves(histogram: ThresholdHistogram, metric: str) -> list[list[float | None]]:
    """Each class's one-vs-rest score at every threshold of the grid (None where undefined), for the
    record and its threshold-curves plot."""
    counts = histogram.compute()
    values = scores(counts["tp"], counts["fp"], counts["fn"], metric)
    return [[None if v != v else round(v, 6) for v in row] for row in values.tolist()]


def _print(record: dict[str, Any], target: Path, folder: Path, not_configured: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    metric = record["metric"]
    classes = record["classes"]
    table = Table(title=f"tune: thresholds on {record['split']} (one-vs-rest {metric})")
    for column in ("class", "threshold", f"{metric} at 0.5", f"{metric} at threshold", "pixels"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for i, name in enumerate(record["class_names"]):
        untuned = i in classes["untuned"]
        half, best = classes["score_at_0.5"][i], classes["score"][i]
        table.add_row(
            name,
            "untuned" if untuned else f"{classes['thresholds'][i]:.2f}",
            "n/a" if half is None else f"{half:.4f}",
            "n/a" if best is None else f"{best:.4f}",
            str(classes["positives"][i]),
        )
    console.print(table)
    stages = Table(title=f"{record['split']} through the whole path, before and after the thresholds")
    for column in ("stage", "mIoU", "dice", "image dice fg"):
        stages.add_column(column, justify="left" if column == "stage" else "right")
    for row in record["stages"]:
        cells = [row.get(k) for k in ("mIoU", "dice", "image_dice_fg")]
        stages.add_row(row["stage"], *("n/a" if v is None else f"{v:.4f}" for v in cells))
    console.print(stages)
    console.print(f"thresholds: {short_path(str(target))}")
    console.print(f"summary: {folder / 'summary.json'}")
    if not_configured:
        console.print(
            "test and predict use them with ClassThresholds in model.postprocess, e.g. "
            "--model.init_args.postprocess+=lightning_seg.postprocess.ClassThresholds"
        )
