"""``RunPlots``: the pictures of a run in its folder (``<log_dir>/plots/``), and in TensorBoard or W&B.

End of ``fit``: training curves (loss terms; train and val of mIoU, of the metric the checkpoint callback
monitors and of the image-level head's scores; the learning rate, against the epoch), the last validation's
row-normalised confusion matrix and per-class IoU and Dice, the image-level head's precision and recall (a
net with one), the label histogram of the training data. End of ``test`` (and ``validate``): the confusion
matrix, per-class IoU and Dice, the stage table and, for test, the best and worst images by per-image mIoU,
scored on the final class maps that test scored, and a one-channel head's pixel precision-recall curve.
``tune`` draws its threshold curves with :func:`publish_threshold_curves`. Every figure goes through
:func:`~lightning_seg.reports.publish.publish_figure` and every table through
:func:`~lightning_seg.reports.publish.publish_table` (CSV beside the PNGs).

Plots never cost a run its record: ``RunSummary`` renders them just before it writes ``summary.json``, so a
plot that fails (a full disk, a figure matplotlib cannot draw) is reported in one warning line and left out,
and the other plots and the summary are still written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from lightning_seg.callbacks.base import StageFiles, command_pass, stage_results
from lightning_seg.errors import ConfigError, TrainingDiverged
from lightning_seg.reports import figures
from lightning_seg.reports.image_ranking import ImageRanking, image_miou
from lightning_seg.reports.publish import publish_figure, publish_table
from lightning_seg.runs.log_dir import run_directory
from lightning_seg.task.epoch_logs import LABEL_SCORES
from lightning_seg.utils.atomic import atomic_write
from lightning_seg.utils.error_lines import typed_line

HISTORY_FILE = "history.json"
STAGE_FIELDS = ("mIoU", "dice", "dice_fg", "image_dice_fg", "image_IoU_fg", "competition_dice", "acc")
"""The stage table's score columns (then one ``IoU/<class>`` column per class)."""


def _float(value: Any) -> float | None:
    """A logged metric as a plain float (None for NaN: JSON and ``torch.load(weights_only=True)`` safe)."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    value = float(value)
    return value if math.isfinite(value) else None


class RunPlots(StageFiles):
    """Plots and tables of a command in ``<log_dir>/plots/`` (the run's folder for ``fit``; the
    evaluation's own ``<run>/<stage>/<date-time>/`` for ``test`` and ``validate``), also handed to
    TensorBoard or W&B under the tags ``plots/<name>`` and ``tables/<name>``.

    The training curves come from a history this callback keeps: at each training epoch's end the
    ``train/loss`` terms (``trainer.callback_metrics``), each optimizer group's learning rate and the
    training scores (:meth:`_score_names`: mIoU, the checkpoint callback's monitored metric, the
    image-level head's ``label_f1``/``label_acc``/``label_mAP``); at each validation ``val/loss`` terms
    and the same scores of val. It is kept in the checkpoints (plain floats), so a resumed run
    (``fit --ckpt_path last``) continues its curves, and also in ``plots/history.json``: a checkpoint
    written at a validation precedes its epoch's training row, which a resume takes from there.

    The training scores are logged by the module's ``on_train_epoch_end``, which Lightning calls after
    this callback's (before the checkpoint callback's only): the epoch's row is completed with them at the
    next hook that sees them (a checkpoint saved at that epoch's end, the next epoch's start, the end of
    training).

    Rendering is idempotent per stage: ``RunSummary`` asks for it first when it comes earlier in the
    callback list, so ``summary.json`` lists the files (``"plots"``) in either order. Each plot is drawn on
    its own: one that fails is left out with a one-line warning, the others and the summary are written.
    A run interrupted (Ctrl-C) or diverged draws its curves and scores but not the label histogram, unless
    this process already has its statistics: its pass over the training masks would hold up the exit.

    Args:
        num_images: images shown at each end of ``test``'s best/worst figure (0: no such figure).
        label_histogram: draw the training split's label histogram at the end of ``fit`` (the data
            module's class statistics: one pass over the training masks, cached for file datasets).
    """

    def __init__(self, num_images: int = 4, label_histogram: bool = True) -> None:
        if num_images < 0:
            raise ConfigError(f"trainer.callbacks RunPlots num_images must be >= 0, got {num_images}")
        self.num_images = num_images
        self.label_histogram = label_histogram
        self.history: dict[str, list[dict[str, float]]] = {"train": [], "val": []}
        self.ranking = ImageRanking(num_images)
        self._rendered: dict[str, list[str]] = {}  # per stage: the files written (rendered once)
        self._label_statistics: tuple[int, Any] | None = None  # (id of the data module, its train statistics)
        self._log_dir: Path | None = None
        self._new_rows = 0
        self._unscored: dict[str, float] | None = None  # the last training row, before its scores were logged
        self._foreground: dict[str, Any] | None = None  # test's foreground precision-recall curve

    # ------------------------------------------------------------------------------------- history
    def state_dict(self) -> dict[str, Any]:
        return {"history": {kind: [dict(row) for row in rows] for kind, rows in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        history = state_dict.get("history") or {}
        self.history = {kind: [dict(row) for row in history.get(kind, [])] for kind in ("train", "val")}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rendered.pop("fit", None)
        self._new_rows = 0
        self._unscored = None
        self._log_dir = run_directory(trainer)  # every rank asks: a broadcast under DDP

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path and trainer.is_global_zero and self._log_dir is not None:
            self._complete_from_record(trainer.global_step, self._log_dir / "plots" / HISTORY_FILE)

    def _complete_from_record(self, step: int, path: Path) -> None:
        """Add the rows of ``path`` up to ``step`` (the resumed checkpoint's) that the checkpoint lacks: a
        checkpoint written at a validation was saved before its epoch's training row was taken."""
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # no record (or a damaged one): the checkpoint's history is all there is
        for kind, rows in self.history.items():
            known = {row["step"] for row in rows}
            missing = [
                row
                for row in recorded.get(kind, [])
                if isinstance(row, dict) and row.get("step", step + 1) <= step and row["step"] not in known
            ]
            if missing:
                self.history[kind] = sorted([*rows, *missing], key=lambda row: (row["step"], row["epoch"]))

    def _add_row(self, trainer: L.Trainer, kind: str, row: dict[str, float]) -> dict[str, float]:
        """Append ``row`` (or merge it into the recorded row of its step) and write the record; returns the
        row as kept."""
        recorded = next((r for r in self.history[kind] if r["step"] == row["step"]), None)
        if recorded is not None:
            # a resume from a checkpoint written at a validation ends that restored epoch again, without
            # its training metrics (no batch ran since): the recorded values stay
            recorded.update({key: value for key, value in row.items() if key not in recorded})
            return recorded
        self.history[kind].append(row)
        self._new_rows += 1
        self._write_record(trainer)
        return row

    def _write_record(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero and self._log_dir is not None:
            path = self._log_dir / "plots" / HISTORY_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps(self.history))

    @staticmethod
    def _monitored(trainer: L.Trainer) -> tuple[str | None, Literal["max", "min"]]:
        """The score the run's checkpoint callback monitors, without its stage (``val/score`` → "score";
        None for none, or a loss, which the loss panel shows), and its mode ("max" or "min")."""
        callback = trainer.checkpoint_callback
        monitor = getattr(callback, "monitor", None)
        mode: Literal["max", "min"] = "min" if getattr(callback, "mode", "max") == "min" else "max"
        if not isinstance(monitor, str) or "/" not in monitor:
            return None, mode
        stage, name = monitor.split("/", 1)
        if stage not in ("train", "val") or name == "loss" or name.startswith("loss/"):
            return None, mode
        return name, mode

    @classmethod
    def _score_names(cls, trainer: L.Trainer) -> tuple[str, ...]:
        """The scores kept for train and val, without their stage: mIoU, the monitored one, the
        image-level head's (logged only for a net with one)."""
        monitored = cls._monitored(trainer)[0]
        extra = (monitored,) if monitored not in (None, "mIoU") else ()
        return ("mIoU", *extra, *(f"label_{name}" for name in LABEL_SCORES))

    def _score_unscored_row(self, trainer: L.Trainer) -> bool:
        """Complete the last training row with the epoch's training scores, logged since it was taken;
        whether it changed."""
        row, self._unscored = self._unscored, None
        if row is None:
            return False
        names = tuple(f"train/{name}" for name in self._score_names(trainer))
        scores = {k: v for k, v in self._metrics(trainer, names, ()).items() if k not in row}
        if not scores:
            return False
        row.update(scores)
        self._write_record(trainer)
        return True

    @staticmethod
    def _metrics(trainer: L.Trainer, names: tuple[str, ...], prefixes: tuple[str, ...]) -> dict[str, float]:
        metrics = {}
        for key, value in sorted(trainer.callback_metrics.items()):
            if key in names or key.startswith(prefixes):
                number = _float(value)
                if number is not None:
                    metrics[key] = number
        return metrics

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the epoch means of the training loss terms are in callback_metrics here (logged by the steps);
        # the scores the module logs at the epoch's end are not yet: see _score_unscored_row
        row: dict[str, float] = {"epoch": float(trainer.current_epoch + 1), "step": trainer.global_step}
        row.update(self._metrics(trainer, ("train/loss",), ("train/loss/",)))
        groups = [group for optimizer in trainer.optimizers for group in optimizer.param_groups]
        for i, group in enumerate(groups):
            row["lr" if i == 0 else f"lr/{i}"] = float(group["lr"])
        self._unscored = self._add_row(trainer, "train", row)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # a checkpoint saved at the epoch's end (after the module logged its scores) keeps the whole row;
        # Lightning took state_dict() just before this hook
        if self._score_unscored_row(trainer) and self.state_key in checkpoint.get("callbacks", {}):
            checkpoint["callbacks"][self.state_key] = self.state_dict()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._score_unscored_row(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._score_unscored_row(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            if not trainer.sanity_checking:
                self._add_row(trainer, "val", self._validation_row(trainer))
        elif trainer.state.fn == "validate" and command_pass(trainer) is None:
            # a command's own pass over val (tune) writes its own record
            self.render(trainer, pl_module, "validate", run_directory(trainer))

    @staticmethod
    def _validation_row(trainer: L.Trainer) -> dict[str, float]:
        """The epochs done at this validation (fractional inside an epoch) and its val scores."""
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        per_epoch = trainer.num_training_batches
        fraction = done / per_epoch if per_epoch and math.isfinite(per_epoch) else 1.0
        row: dict[str, float] = {
            "epoch": trainer.current_epoch + min(fraction, 1.0),
            "step": trainer.global_step,
        }
        names = ("val/loss", *(f"val/{name}" for name in RunPlots._score_names(trainer)))
        row.update(RunPlots._metrics(trainer, names, ("val/loss/",)))
        return row

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._new_rows:  # a resume with nothing left to do leaves the plots as they are
            self.render(trainer, pl_module, "fit", run_directory(trainer))

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # the curves of a run that was interrupted or diverged, as RunSummary records it (rank zero only:
        # other ranks may not be here, so no collective; fit's plots need none)
        if trainer.state.fn == "fit" and isinstance(exception, KeyboardInterrupt | TrainingDiverged):
            self._score_unscored_row(trainer)
            if trainer.is_global_zero and self._log_dir is not None:
                self.render(trainer, pl_module, "fit", self._log_dir, interrupted=True)

    # ------------------------------------------------------------------------------- test's images
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._rendered.pop("validate", None)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rendered.pop("test", None)
        self.ranking.reset()
        self._foreground = None

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        classes = outputs.get("classes") if isinstance(outputs, dict) else None
        if not classes or self.num_images == 0:
            return  # `attack`'s pass, or a module without the final class maps
        originals = batch.get("orig_mask")
        truths = [o.long() for o in originals] if originals is not None else list(batch["mask"])
        num_classes, ignore_index = pl_module.num_classes, pl_module.ignore_index
        scores = image_miou(classes, truths, num_classes, ignore_index).tolist()  # one host copy
        names = batch.get("name") or [f"{batch_idx:05d}_{i:03d}" for i in range(len(classes))]
        images: list[torch.Tensor] = []

        def fetch(i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            if not images:  # as stored (orig_image), else the batch's images denormalised, at each size
                images.extend(
                    pl_module.evaluation.original_images(batch, [tuple(t.shape[-2:]) for t in truths])
                )
            return images[i], truths[i], classes[i]

        self.ranking.update(scores, list(names), fetch, num_classes, ignore_index)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if command_pass(trainer) is None:  # a command's own pass (attack) writes its own record
            self.render(trainer, pl_module, "test", run_directory(trainer))

    # ----------------------------------------------------------------------------------- rendering
    def render(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        stage: str,
        log_dir: Path,
        interrupted: bool = False,
    ) -> list[str]:
        """Write the plots of ``stage`` ("fit", "validate", "test") into ``log_dir / "plots"`` once; returns
        the files written (empty on ranks other than zero). For test a collective: call it on every rank.

        Never raises for a plot: one that fails is warned about in one line (its name and the error) and
        not listed, so the caller (``RunSummary``, just before ``summary.json``) always gets to write its
        record.

        Args:
            interrupted: the run stopped on Ctrl-C or divergence (``on_exception``): the label histogram is
                drawn only from statistics this process already has, never with a pass over the masks.
        """
        if stage in self._rendered:
            return self._rendered[stage]
        if stage == "test":
            try:
                self.ranking.gather()
            except Exception as error:  # a rank's images that did not travel: no half-picture of the ends
                rank_zero_warn(f"RunPlots: best/worst images left out ({typed_line(error)})")
                self.ranking.reset()
            try:  # summed across processes here, where every rank is, not in rank zero's drawing
                evaluation = getattr(pl_module, "evaluation", None)
                self._foreground = evaluation.foreground_curve("test") if evaluation is not None else None
            except Exception as error:
                rank_zero_warn(f"RunPlots: test plot 'precision_recall' not drawn ({typed_line(error)})")
                self._foreground = None
        paths: list[str] = []
        if trainer.is_global_zero:
            for name, drawn in self._plots(trainer, pl_module, stage, log_dir / "plots", interrupted):
                try:
                    for path in drawn:
                        paths.append(str(path))  # as each file is written: a later failure keeps it
                except Exception as error:
                    rank_zero_warn(f"RunPlots: {stage} plot {name!r} not drawn ({typed_line(error)})")
        self._rendered[stage] = paths
        return paths

    def _plots(
        self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, folder: Path, interrupted: bool
    ) -> list[tuple[str, Iterator[Path]]]:
        """The plots of ``stage`` as (name, a generator that draws it when iterated, yielding each file as
        it is written)."""
        prefix = "test" if stage == "test" else "val"
        names = list(getattr(pl_module, "class_names", []))
        plots: list[tuple[str, Iterator[Path]]] = []
        if stage == "fit":
            plots.append(("curves", self._curves(trainer, folder)))
        plots.append(("confusion", self._confusion(trainer, pl_module, prefix, names, folder)))
        plots.append(("iou", self._iou(trainer, pl_module, prefix, names, folder)))
        plots.append(("label_head", self._label_head(trainer, pl_module, prefix, folder)))
        if stage == "fit" and self.label_histogram:
            plots.append(("label_histogram", self._label_histogram(trainer, names, folder, interrupted)))
        if stage == "test":
            plots.append(("stages", self._stage_table(trainer, pl_module, prefix, names, folder)))
            plots.append(("best_worst", self._best_worst(trainer, pl_module, names, folder)))
            plots.append(("precision_recall", self._precision_recall(trainer, pl_module, folder)))
            plots.append(("reliability", self._reliability(trainer, pl_module, folder)))
        return plots

    @staticmethod
    def _reliability(trainer: L.Trainer, pl_module: L.LightningModule, folder: Path) -> Iterator[Path]:
        """Test's top-label reliability diagram and its bins (the probabilities the decision read)."""
        reliability = stage_results(pl_module, "test").reliability
        if reliability is None:
            return
        ece = _float(trainer.callback_metrics.get("test/ECE", float("nan")))
        figure = figures.reliability_figure(reliability, ece)
        if figure is None:
            return
        yield publish_figure(trainer, "plots/reliability", figure, folder / "reliability.png")
        rows = [[f"{b / len(reliability):.4f}", *row] for b, row in enumerate(reliability.tolist())]
        columns = ["bin_start", "pixels", "mean_confidence", "accuracy"]
        yield publish_table(trainer, "tables/reliability", columns, rows, folder / "reliability.csv")

    def _curves(self, trainer: L.Trainer, folder: Path) -> Iterator[Path]:
        monitored, mode = self._monitored(trainer)
        curves = figures.curves_figure(
            self.history["train"], self.history["val"], monitor=monitored or "mIoU", mode=mode
        )
        if curves is not None:
            # the numbers, written as the rows came: listed even if the figure then fails
            yield folder / HISTORY_FILE
            yield publish_figure(trainer, "plots/curves", curves, folder / "curves.png")

    @staticmethod
    def _label_head(
        trainer: L.Trainer, pl_module: L.LightningModule, prefix: str, folder: Path
    ) -> Iterator[Path]:
        labels = figures.label_head_figure(
            stage_results(pl_module, prefix).label_scores, f"{prefix}: image-level head"
        )
        if labels is not None:
            yield publish_figure(trainer, "plots/label_head", labels, folder / "label_head.png")

    @staticmethod
    def _this_confusion(pl_module: L.LightningModule, prefix: str, names: list[str]) -> torch.Tensor | None:
        """This evaluation's int64 K×K confusion matrix (None without one, or one that does not fit K)."""
        confusion = stage_results(pl_module, prefix).confusion
        return confusion if confusion is not None and len(names) == len(confusion) else None

    def _confusion(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str, names: list[str], folder: Path
    ) -> Iterator[Path]:
        """The confusion matrix: figure and counts."""
        confusion = self._this_confusion(pl_module, prefix, names)
        if confusion is None:
            return
        title = f"{prefix}: confusion, rows normalised (each true class's pixels)"
        figure = figures.confusion_figure(confusion, names, title)
        if figure is not None:
            yield publish_figure(trainer, "plots/confusion", figure, folder / "confusion.png")
            rows = [[name, *counts] for name, counts in zip(names, confusion.tolist(), strict=True)]
            columns = ["true \\ predicted", *names]
            yield publish_table(trainer, "tables/confusion", columns, rows, folder / "confusion.csv")

    def _iou(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str, names: list[str], folder: Path
    ) -> Iterator[Path]:
        """The per-class IoU: figure and table."""
        # a class absent from the split is not logged; callback_metrics may still hold an earlier
        # validation's value for it, so presence is read from this evaluation's confusion matrix
        confusion = self._this_confusion(pl_module, prefix, names)
        present = None if confusion is None else ((confusion.sum(0) + confusion.sum(1)) > 0).tolist()
        metrics = trainer.callback_metrics

        def per_class(score: str) -> list[float | None]:
            return [
                _float(metrics[f"{prefix}/{score}/{name}"])
                if f"{prefix}/{score}/{name}" in metrics and (present is None or present[i])
                else None
                for i, name in enumerate(names)
            ]

        iou, dice = per_class("IoU"), per_class("Dice")
        has_dice = any(value is not None for value in dice)  # a module without per-class Dice: IoU alone
        title = f"{prefix}: IoU and Dice per class" if has_dice else f"{prefix}: IoU per class"
        figure = figures.iou_figure(names, iou, title, dice if has_dice else None)
        if figure is not None:
            yield publish_figure(trainer, "plots/iou", figure, folder / "iou.png")
            rows = [
                [name, value, d, value is not None] for name, value, d in zip(names, iou, dice, strict=True)
            ]
            columns = ["class", "IoU", "Dice", "present"]
            yield publish_table(trainer, "tables/iou", columns, rows, folder / "iou.csv")

    def _precision_recall(
        self, trainer: L.Trainer, pl_module: L.LightningModule, folder: Path
    ) -> Iterator[Path]:
        """A one-channel head's foreground precision-recall curve over test's pixels: figure and table."""
        curve = self._foreground
        if curve is None:
            return
        # where the final class maps landed (every post-processing step included), from test's confusion
        confusion = stage_results(pl_module, "test").confusion
        final = None
        if confusion is not None and tuple(confusion.shape) == (2, 2):
            tp, fp, fn = (int(confusion[1, 1]), int(confusion[0, 1]), int(confusion[1, 0]))
            if tp + fp and tp + fn:
                final = (tp / (tp + fn), tp / (tp + fp))
        figure = figures.precision_recall_figure(curve, final, "test: foreground pixels")
        if figure is None:
            return
        yield publish_figure(trainer, "plots/precision_recall", figure, folder / "precision_recall.png")
        columns = ["threshold", "precision", "recall", "tp", "fp", "fn"]
        keys = ["thresholds", *columns[1:]]
        rows = [list(row) for row in zip(*(curve[key] for key in keys), strict=True)]
        yield publish_table(
            trainer, "tables/precision_recall", columns, rows, folder / "precision_recall.csv"
        )

    def _train_statistics(self, trainer: L.Trainer, interrupted: bool) -> Any | None:
        """The data module's class statistics of the training split (``ClassStatistics``), kept for this
        process's later renders; None without them, or when ``interrupted`` and not yet at hand."""
        datamodule = getattr(trainer, "datamodule", None)
        statistics = getattr(datamodule, "class_statistics", None)
        if not callable(statistics):
            return None  # a data module without class statistics: nothing to draw
        if self._label_statistics is not None and self._label_statistics[0] == id(datamodule):
            return self._label_statistics[1]
        if interrupted:
            # one pass over the training masks (minutes for a large uncached dataset) while the user
            # waits for Ctrl-C to end the run, and Lightning ignores a second Ctrl-C by then
            rank_zero_warn(
                "RunPlots: label histogram left out of an interrupted run (no pass over the masks)"
            )
            return None
        stats = statistics("train")
        self._label_statistics = (id(datamodule), stats)
        return stats

    def _label_histogram(
        self, trainer: L.Trainer, names: list[str], folder: Path, interrupted: bool
    ) -> Iterator[Path]:
        stats = self._train_statistics(trainer, interrupted)
        if stats is None:
            return
        pixel_share = stats.frequencies().tolist()
        image_share = (stats.image_counts.double() / max(stats.num_images, 1)).tolist()
        if len(pixel_share) != len(names):
            return
        figure = figures.label_histogram_figure(names, pixel_share, image_share, stats.num_images)
        if figure is None:
            return
        yield publish_figure(trainer, "plots/labels", figure, folder / "label_histogram.png")
        columns = ["class", "pixels", "pixel_share", "images", "image_share"]
        rows = [
            [name, pixels, share, images, image]
            for name, pixels, share, images, image in zip(
                names,
                stats.pixel_counts.tolist(),
                pixel_share,
                stats.image_counts.tolist(),
                image_share,
                strict=True,
            )
        ]
        yield publish_table(trainer, "tables/labels", columns, rows, folder / "label_histogram.csv")

    @staticmethod
    def _stage_table(
        trainer: L.Trainer, pl_module: L.LightningModule, prefix: str, names: list[str], folder: Path
    ) -> Iterator[Path]:
        """Test's stage table (raw; + inference; + each post-processing step) as a CSV table."""
        table = stage_results(pl_module, prefix).table
        if not table:
            return
        columns = ["stage", *STAGE_FIELDS, *(f"IoU/{name}" for name in names)]
        rows = [
            [
                row["stage"],
                *(row.get(f) for f in STAGE_FIELDS),
                *((row.get("IoU") or {}).get(n) for n in names),
            ]
            for row in table
        ]
        yield publish_table(trainer, "tables/stages", columns, rows, folder / "stages.csv")

    def _best_worst(
        self, trainer: L.Trainer, pl_module: L.LightningModule, names: list[str], folder: Path
    ) -> Iterator[Path]:
        worst, best = self.ranking.worst, self.ranking.best
        figure = figures.best_worst_figure(worst, best, names, int(getattr(pl_module, "ignore_index", 255)))
        if figure is None:
            return
        yield publish_figure(trainer, "plots/best_worst", figure, folder / "best_worst.png")
        rows = [["worst", i + 1, item.name, item.score] for i, item in enumerate(worst)]
        rows += [["best", i + 1, item.name, item.score] for i, item in enumerate(best)]
        columns = ["end", "rank", "name", "mIoU"]
        yield publish_table(trainer, "tables/best_worst", columns, rows, folder / "best_worst.csv")
