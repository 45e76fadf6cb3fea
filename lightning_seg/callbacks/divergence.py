"""``DivergenceGuard``: stop a run whose loss turns NaN or infinite, before it writes a checkpoint of it.

A diverged run that carries on trains on NaN weights, predicts one class everywhere and still reports a
plausible mIoU (the share of background), saves "best" and last checkpoints full of NaN, and exits 0. This
guard watches the loss on the device (no host sync per step: the flag is read at the logging steps, which
sync anyway, before each validation and before every checkpoint save) and stops the run with
:class:`~lightning_seg.errors.TrainingDiverged`: one line naming the first bad step and the loss terms,
exit code 1, the last finite checkpoint named. The CLI adds one with defaults when a config lists none.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lightning_seg.errors import TrainingDiverged, short_path


class DivergenceGuard(L.Callback):
    """Stop training at a non-finite loss.

    Args:
        max_skipped_steps: optimizer steps with a non-finite loss to skip (their gradients dropped, the
            weights untouched) before stopping. Mixed precision can produce a few; fp16's gradient scaler
            already skips its own overflow steps. Above 0 the loss is read on the host every step (one
            synchronisation per step); 0 stops at the first one and costs nothing.
    """

    def __init__(self, max_skipped_steps: int = 0) -> None:
        if max_skipped_steps < 0:
            raise ValueError(f"max_skipped_steps must be >= 0, got {max_skipped_steps}")
        self.max_skipped_steps = max_skipped_steps
        self.skipped_steps = 0
        self._loss: torch.Tensor | None = None
        self._buffers: list[torch.Tensor] = []
        self._start_step = 0
        # on the device: steps seen since the start, the first bad one (-1: none) and its loss terms
        self._steps: torch.Tensor | None = None
        self._first_bad: torch.Tensor | None = None
        self._bad_terms: torch.Tensor | None = None
        self._term_names: list[str] = []

    # ------------------------------------------------------------------------------------ recording
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step = trainer.global_step
        self._steps = self._first_bad = self._bad_terms = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.max_skipped_steps:
            # a bad batch also poisons the BatchNorm running statistics in the forward pass: a skipped step
            # puts them back (they are small: two vectors a layer)
            self._buffers = [b.detach().clone() for b in pl_module.buffers()]

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.max_skipped_steps == 0 or self._loss is None:
            return
        if bool(torch.isfinite(self._loss)):  # the one host read per step that skipping needs
            return
        # optimizers leave parameters without a gradient untouched: the step becomes a no-op
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, saved in zip(pl_module.buffers(), self._buffers, strict=True):
                buffer.copy_(saved)
        self.skipped_steps += 1
        pl_module.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)
        if self.skipped_steps > self.max_skipped_steps:
            raise TrainingDiverged(
                self._message(
                    trainer, trainer.global_step + 1, f"after {self.max_skipped_steps} skipped steps"
                )
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.max_skipped_steps or not isinstance(outputs, dict) or "loss" not in outputs:
            return
        loss = outputs["loss"].detach()
        terms = outputs.get("loss_terms") or {}
        values = torch.stack([loss.float(), *(value.detach().float() for value in terms.values())])
        if self._steps is None:
            self._term_names = ["loss", *terms]
            self._steps = torch.zeros((), dtype=torch.int64, device=loss.device)
            self._first_bad = torch.full((), -1, dtype=torch.int64, device=loss.device)
            self._bad_terms = torch.zeros_like(values)
        assert self._first_bad is not None and self._bad_terms is not None
        first = (~torch.isfinite(loss)) & (self._first_bad < 0)
        self._first_bad = torch.where(first, self._steps, self._first_bad)
        self._bad_terms = torch.where(first, values, self._bad_terms)
        self._steps += 1
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            self.check(trainer)  # a logging step: the host reads the logged values now anyway

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    # -------------------------------------------------------------------------------------- verdict
    def check(self, trainer: L.Trainer) -> None:
        """Raise :class:`TrainingDiverged` if a step since the start had a non-finite loss (one host read)."""
        if self._first_bad is None or self.max_skipped_steps:
            return
        first = int(self._first_bad)
        if first < 0:
            return
        assert self._bad_terms is not None
        terms = ", ".join(
            f"{name}={value:.4g}"
            for name, value in zip(self._term_names, self._bad_terms.tolist(), strict=True)
        )
        raise TrainingDiverged(self._message(trainer, self._start_step + first + 1, terms))

    @staticmethod
    def _message(trainer: L.Trainer, step: int, detail: str) -> str:
        checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(
            trainer.checkpoint_callback, "best_model_path", ""
        )
        kept = (
            f"last finite checkpoint: {short_path(checkpoint)}" if checkpoint else "no checkpoint was written"
        )
        return (
            f"training diverged: non-finite loss at step {step} ({detail}); {kept}; "
            "lower the learning rate, or let DivergenceGuard.max_skipped_steps skip a few steps"
        )
