"""``DivergenceGuard``: stop a run whose loss turns NaN or infinite, before it writes a checkpoint of it.

A diverged run that carries on trains on NaN weights, predicts one class everywhere and still reports a
plausible mIoU (the share of background), saves "best" and last checkpoints full of NaN, and exits 0. This
guard watches the loss on the device (no host sync per step: the flag is read at the logging steps, which
sync anyway, before each validation and before every checkpoint save, and agreed across DDP processes
there) and stops the run with :class:`~lightning_seg.errors.TrainingDiverged`: one line naming the first
bad optimizer step and the loss terms, exit code 1, the last finite checkpoint named. The CLI adds one
with defaults when a config lists none.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lightning_seg.callbacks.base import SaveGuard
from lightning_seg.checkpoints.files import written_checkpoint
from lightning_seg.errors import TrainingDiverged, short_path

NO_STEP = 2**62
"""The first bad step when there is none (larger than any step: the minimum over processes ignores it)."""


class DivergenceGuard(SaveGuard):
    """Stop training at a non-finite loss.

    Args:
        max_skipped_steps: optimizer steps with a non-finite loss to skip (their gradients dropped, the
            weights and BatchNorm statistics untouched) before stopping. Mixed precision can produce a few;
            fp16's gradient scaler already skips its own overflow steps. Above 0 the loss is read on the host
            every step (one synchronisation per step, agreed across processes); 0 stops at the first one and
            costs nothing.
    """

    def __init__(self, max_skipped_steps: int = 0) -> None:
        if max_skipped_steps < 0:
            raise ValueError(f"max_skipped_steps must be >= 0, got {max_skipped_steps}")
        self.max_skipped_steps = max_skipped_steps
        self.skipped_steps = 0
        self._start_step = 0
        self._batch_start_step = 0
        self._last_checked_step = -1
        # on the device: optimizer steps taken since the start, the first bad one (NO_STEP: none) and the
        # loss terms of its first bad batch; a bad batch inside the current accumulation window
        self._steps: torch.Tensor | None = None
        self._first_bad: torch.Tensor | None = None
        self._bad_terms: torch.Tensor | None = None
        self._term_names: list[str] = []
        self._window_bad: torch.Tensor | None = None
        self._buffers: list[torch.Tensor] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))

    # ------------------------------------------------------------------------------------ recording
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step = trainer.global_step
        self._steps = self._first_bad = self._bad_terms = self._window_bad = self._buffers = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_start_step = trainer.global_step
        if self.max_skipped_steps and self._buffers is None:
            # the first batch of an accumulation window: a bad batch also poisons the BatchNorm running
            # statistics in its forward pass, so a skipped step puts them back (two vectors a layer)
            self._buffers = [b.detach().clone() for b in pl_module.buffers()]

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(outputs, dict) or "loss" not in outputs:
            return
        loss = outputs["loss"].detach()
        bad = ~torch.isfinite(loss)
        self._start_counting(loss.device)
        if self.max_skipped_steps:
            return  # decided on the host before each optimizer step (see on_before_backward)
        assert self._first_bad is not None
        terms = outputs.get("loss_terms") or {}
        values = torch.stack([loss.float(), *(value.detach().float() for value in terms.values())])
        if self._bad_terms is None:
            self._term_names = ["loss", *terms]
            self._bad_terms = torch.zeros_like(values)
        first = bad & (self._first_bad == NO_STEP)
        # the step this batch belongs to, counted from the start (a batch inside an accumulation window
        # belongs to the next step; the window's last batch has just taken it)
        stepped = trainer.global_step != self._batch_start_step
        self._first_bad = torch.where(first, self._steps + (0 if stepped else 1), self._first_bad)
        self._bad_terms = torch.where(first, values, self._bad_terms)
        step = trainer.global_step
        if step != self._last_checked_step and step % max(trainer.log_every_n_steps, 1) == 0:
            self._last_checked_step = step
            self.check(trainer)  # a logging step: the host reads the logged values now anyway

    def _start_counting(self, device: torch.device) -> None:
        if self._steps is None:
            self._steps = torch.zeros((), dtype=torch.int64, device=device)
            self._first_bad = torch.full((), NO_STEP, dtype=torch.int64, device=device)
            self._window_bad = torch.zeros((), dtype=torch.bool, device=device)

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        self._start_counting(loss.device)  # before the first optimizer step, which it counts
        if self.max_skipped_steps:  # every batch of the accumulation window, before the optimizer step
            self._window_bad = self._window_bad | ~torch.isfinite(loss.detach())

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._steps is not None:
            self._steps += 1
        if not self.max_skipped_steps or self._window_bad is None:
            return
        # the one host read per step that skipping needs; every process decides alike (a NaN on one
        # has made the all-reduced gradients NaN on all)
        bad = bool(trainer.strategy.reduce(self._window_bad.float(), reduce_op="max") > 0)
        self._window_bad = torch.zeros_like(self._window_bad)
        buffers, self._buffers = self._buffers, None
        if not bad:
            return
        # optimizers leave parameters without a gradient untouched: the step becomes a no-op
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, saved in zip(pl_module.buffers(), buffers or [], strict=False):
                buffer.copy_(saved)
        self.skipped_steps += 1
        if self.skipped_steps > self.max_skipped_steps:
            raise TrainingDiverged(
                self._message(
                    trainer, trainer.global_step + 1, f"after {self.max_skipped_steps} skipped steps"
                )
            )

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    # -------------------------------------------------------------------------------------- verdict
    def check(self, trainer: L.Trainer) -> None:
        """Raise :class:`TrainingDiverged` if a step since the start had a non-finite loss on any process
        (one host read; a collective under DDP: every process calls it at the same points)."""
        if self._first_bad is None or self.max_skipped_steps:
            return
        first = int(trainer.strategy.reduce(self._first_bad.clone(), reduce_op="min"))
        if first >= NO_STEP:
            return
        assert self._bad_terms is not None
        if int(self._first_bad) == first:
            detail = ", ".join(
                f"{name}={value:.4g}"
                for name, value in zip(self._term_names, self._bad_terms.tolist(), strict=True)
            )
        else:
            detail = "on another process"
        raise TrainingDiverged(self._message(trainer, self._start_step + first, detail))

    @staticmethod
    def _message(trainer: L.Trainer, step: int, detail: str) -> str:
        callback = trainer.checkpoint_callback
        kept = written_checkpoint(
            getattr(callback, "last_model_path", ""), getattr(callback, "best_model_path", "")
        )
        where = f"last finite checkpoint: {short_path(kept)}" if kept else "no checkpoint was written"
        return (
            f"training diverged: non-finite loss at step {step} ({detail}); {where}; "
            "lower the learning rate, or let DivergenceGuard.max_skipped_steps skip a few steps"
        )
