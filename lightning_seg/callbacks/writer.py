"""``MaskWriter``: writes predictions as PNG files (colour masks, optionally raw class indices), and the
image-level head's predictions as ``labels.csv``."""

from __future__ import annotations

import csv
import queue
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_seg.data.workers import save_png
from lightning_seg.errors import ConfigError
from lightning_seg.reports.palette import colourize, default_palette
from lightning_seg.runs.log_dir import run_directory
from lightning_seg.utils.host import masks_to_host

_Job = tuple[Path, list[tuple[str, torch.Tensor]], torch.Tensor, bool]
"""One batch for the writer thread: folder, (name, host mask) pairs, palette, save_index."""


class _PngWorker:
    """One background thread that encodes and writes the PNG files of queued batches, in order.

    At most ``pending`` batches wait in the queue (``put`` blocks beyond that), so host memory stays bounded
    when the disk is slower than the model. The first error met is kept, the batches after it are skipped,
    and :meth:`raise_error` re-raises it (the same exception object) in the calling thread.
    """

    def __init__(self, pending: int) -> None:
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=pending)
        self.error: BaseException | None = None
        self.discard = False  # set on a failed run: skip what is still queued
        self.thread = threading.Thread(target=self._run, name="MaskWriter-png", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.error is None and not self.discard:
                try:
                    _write_masks(*job)
                except BaseException as error:  # kept for the main thread, which raises it
                    self.error = error

    def put(self, job: _Job) -> None:
        self.jobs.put(job)

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self, discard: bool = False) -> None:
        """Wait until every queued batch is written (or skipped, with ``discard``) and the thread ends."""
        self.discard = self.discard or discard
        self.jobs.put(None)
        self.thread.join()


def _write_masks(
    folder: Path, items: list[tuple[str, torch.Tensor]], palette: torch.Tensor, save_index: bool
) -> None:
    """One batch's files (on the writer thread): ``<name>.png`` and ``<name>_index.png`` per host mask."""
    for name, mask in items:
        # names are relative stems ("cat/img_01" for nested folders): keep the folders, not collide
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        save_png(colourize(mask, palette), f"{target}.png")
        if save_index:
            if mask.max() > 255:  # PNG index images here are 8-bit; never wrap a class silently
                raise ConfigError(f"{target}_index.png: class {int(mask.max())} does not fit an 8-bit PNG")
            save_png(mask.to(torch.uint8)[None], f"{target}_index.png")


class MaskWriter(BasePredictionWriter):
    """Write each predicted mask as ``<name>.png`` (colour) and optionally ``<name>_index.png``.

    The main thread only copies a batch's masks to the host and queues them; one background thread per
    process (per DDP rank) colours, encodes and writes the PNG files, with at most :attr:`pending_batches`
    batches waiting, so the device does not wait for zlib or the disk. Every file is written when
    ``predict`` returns; an error of the writer thread (a full disk, a class that does not fit an 8-bit
    PNG) is raised in the main thread at the next batch or at the end, and a failed run stops the thread.
    The CLI's ``predict`` keeps no predictions in memory (``--return_predictions true`` asks Lightning for
    them; ``Trainer.predict`` called directly keeps them unless given ``return_predictions=False``).

    A net with a class head also gets ``labels.csv`` in the same folder, a row per image appended batch by
    batch: ``name,label,probability`` (single-label: the most probable label and its probability) or
    ``name,labels,<label 1>,...,<label L>`` (multi-label: the labels decided present, joined by ``;``, empty
    when none, then each label's probability). Under DDP each process writes its own
    ``labels.rank<k>.csv`` (its share of the images), as it writes its own masks.

    Args:
        output_dir: where to write (a new or empty folder: files of two invocations are never mixed);
            None: ``predictions/`` in the command's own record folder, ``<run>/predict/<date-time>/``.
        palette: K RGB triples; None: a default palette with black background.
        save_index: also write the raw class-index PNG (what a submission or a metric script reads).
    """

    pending_batches = 2
    """Batches queued for the writer thread at most; the next batch waits for room."""

    def __init__(
        self,
        output_dir: str | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        save_index: bool = True,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.palette = torch.tensor(palette, dtype=torch.uint8) if palette is not None else None
        self.save_index = save_index
        self.resolved_dir: Path | None = None
        self.labels_file: Path | None = None  # labels.csv once a batch with image-level labels is written
        self._worker: _PngWorker | None = None  # created per predict (a thread does not pickle or copy)

    def _directory(self, trainer: L.Trainer) -> Path:
        if self.output_dir is None:
            return run_directory(trainer) / "predictions"
        folder = Path(self.output_dir)
        # rank 0 only: other ranks may look after it has written its first files
        if trainer.is_global_zero and folder.is_dir() and any(folder.iterdir()):
            raise ConfigError(
                f"MaskWriter.output_dir: {folder} already holds files (an earlier predict?); "
                "pass a new or empty folder, or leave it null for a new folder of this run"
            )
        return folder

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.resolved_dir = self._directory(trainer)
        self.resolved_dir.mkdir(parents=True, exist_ok=True)
        self.labels_file = None
        if self.palette is None:
            self.palette = default_palette(getattr(pl_module, "num_classes", 21))
        # a worker of an earlier predict that ended without on_predict_end or on_exception
        self._stop_worker(discard=True)
        self._worker = _PngWorker(self.pending_batches)

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
        assert self.resolved_dir is not None and self.palette is not None and self._worker is not None
        self._worker.raise_error()  # an earlier batch's files failed: stop here, with that error
        if "mask" in prediction:  # an image classifier's predictions hold labels only
            items = list(zip(map(str, prediction["name"]), masks_to_host(prediction["mask"]), strict=True))
            if items:
                self._worker.put((self.resolved_dir, items, self.palette, self.save_index))
        if "label_probability" in prediction:
            self._write_labels(trainer, pl_module, prediction)

    def _write_labels(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: dict[str, Any]
    ) -> None:
        """Append one batch's image-level predictions to ``labels.csv`` (header on the first batch)."""
        assert self.resolved_dir is not None
        names = list(getattr(pl_module, "label_names", []))
        multi = getattr(pl_module, "label_mode", "single") == "multi"
        probabilities = prediction["label_probability"].float().cpu()
        decisions = prediction["label_decision"].cpu()
        if len(names) != probabilities.shape[1]:
            names = [f"label_{i}" for i in range(probabilities.shape[1])]
        header = ["name", "labels", *names] if multi else ["name", "label", "probability"]
        rows = []
        for name, p, decided in zip(
            prediction["name"], probabilities.tolist(), decisions.tolist(), strict=True
        ):
            if multi:
                present = ";".join(n for n, d in zip(names, decided, strict=True) if d)
                rows.append([str(name), present, *(f"{v:.6f}" for v in p)])
            else:
                best = max(range(len(p)), key=p.__getitem__)
                rows.append([str(name), names[best], f"{p[best]:.6f}"])
        if self.labels_file is None:
            suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
            self.labels_file = self.resolved_dir / f"labels{suffix}.csv"
            rows.insert(0, header)
            mode = "w"
        else:
            mode = "a"
        with self.labels_file.open(mode, newline="") as handle:
            csv.writer(handle).writerows(rows)

    def _stop_worker(self, discard: bool = False) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close(discard)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        worker = self._worker
        self._stop_worker()  # every queued file written before predict returns
        if worker is not None:
            worker.raise_error()
        if trainer.is_global_zero:
            print(f"predictions written to {self.resolved_dir}")

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._stop_worker(discard=True)  # the run failed: no thread left behind, queued files dropped

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stop_worker(discard=True)
