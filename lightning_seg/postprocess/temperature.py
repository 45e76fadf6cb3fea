"""``TemperatureScaling``: calibrated probabilities, ``softmax(log p / T)`` (Guo et al. 2017).

For one pass and one temperature, ``softmax(log softmax(z) / T) = softmax(z / T)``: the logits divided by T
(with one temperature per class, ``per_class: true``, the log-probabilities are divided: a vector scaling that
can move decisions). Applied to the probabilities the inference gives (after TTA or windows, where they are
averages of passes), it calibrates what the decision and every later step read. One temperature keeps every
argmax of a K-channel head; a one-channel head's ``p > binary_threshold`` would change meaning, so that
combination needs a ClassThresholds step after it (tuned on the calibrated probabilities).

The temperature is fitted by ``tune`` on val pixels (the NLL of the true class, L-BFGS on log T; see
:func:`lightning_seg.metrics.calibration.fit_temperature`) and written into the thresholds file beside the
checkpoint (``temperature``), where ``test`` and ``predict`` read it; ``temperature: <value>`` fixes it in
the config instead. It must be the first step (a CRF reads the calibrated probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lightning_seg.errors import ConfigError, short_path
from lightning_seg.postprocess.base import Prediction, Step
from lightning_seg.postprocess.thresholds import check_thresholds, read_thresholds, thresholds_path

TEMPERATURE_KEY = "temperature"


class TemperatureScaling(Step):
    """Divide the log-probabilities by a temperature (see the module's docstring).

    Args:
        temperature: a value (one for all classes) or K values; None: the one ``tune`` fitted, read from
            the thresholds file beside the evaluated checkpoint (or ``path``).
        per_class: what ``tune`` fits: one temperature per class instead of one.
        path: the thresholds file to read the fitted temperature from; None: beside the checkpoint.
    """

    acts_on = "probabilities"
    name = "temperature"

    def __init__(
        self, temperature: float | list[float] | None = None, per_class: bool = False, path: str | None = None
    ) -> None:
        self.configured = temperature
        self.per_class = per_class
        self.path = path
        self.values: torch.Tensor | None = self._checked(temperature, "model.postprocess TemperatureScaling")
        self.source = "config" if temperature is not None else None

    @staticmethod
    def _checked(values: Any, where: str) -> torch.Tensor | None:
        if values is None:
            return None
        tensor = torch.tensor(values if isinstance(values, Sequence) else [values], dtype=torch.float32)
        if tensor.numel() == 0 or not bool(torch.isfinite(tensor).all()) or bool((tensor <= 0).any()):
            raise ConfigError(f"{where}: temperatures must be finite and > 0, got {values}")
        return tensor

    @property
    def fitted(self) -> bool:
        """Whether the temperature comes from ``tune`` (not fixed in the config)."""
        return self.configured is None

    def set(self, values: torch.Tensor) -> None:
        """Use these temperatures (float32 (1,) or (K,)): ``tune``'s fit, for the rest of its passes."""
        self.values = self._checked(values.tolist(), "tune: temperature")
        self.source = "tune"

    def load(
        self,
        class_names: Sequence[str],
        checkpoint: str | None,
        thresholds_file: str | None = None,
        embedded: dict[str, Any] | None = None,
    ) -> None:
        """Read the fitted temperature of ``checkpoint`` (a config value needs none): from ``path``, the
        chain's ``thresholds_file`` (ClassThresholds' ``path``) or the file beside the checkpoint; from
        ``embedded`` (the thresholds a bundle carries) when no file is there, as ClassThresholds does.
        Refuses in one line a missing file or entry (run tune), a file for other classes, another kind of
        temperature, or another version of the checkpoint."""
        if not self.fitted:
            return
        hint = (
            "run `python -m lightning_seg tune` with this config and checkpoint, or set temperature: <value>"
        )
        given = self.path or thresholds_file
        path = Path(given) if given else thresholds_path(checkpoint) if checkpoint else None
        if embedded is not None and not given and (path is None or not path.is_file()):
            where = source = "the checkpoint's embedded thresholds"
            data = check_thresholds(embedded, class_names, where)
        else:
            where = short_path(str(path)) if path else "TemperatureScaling"
            if path is None or not path.is_file():
                raise ConfigError(f"{where}: no fitted temperature (no thresholds file); {hint}")
            # the thresholds file's own reader: its format, classes and checkpoint checked as for ClassThresholds
            data, source = read_thresholds(path, class_names, checkpoint), str(path)
        entry = data.get(TEMPERATURE_KEY)
        if not isinstance(entry, dict):
            raise ConfigError(
                f"{where}: holds no fitted temperature (tuned without TemperatureScaling); {hint}"
            )
        if bool(entry.get("per_class")) != self.per_class:
            kind = "per-class" if entry.get("per_class") else "single"
            raise ConfigError(f"{where}: a {kind} temperature; set per_class to match, or tune again")
        self.values = self._checked(entry.get("values"), where)
        self.source = source

    def apply(self, predictions: list[Prediction]) -> None:
        if self.values is None:
            raise ConfigError(
                "model.postprocess TemperatureScaling: no temperature loaded (run tune, or set one)"
            )
        for prediction in predictions:
            p = prediction.probabilities
            t = self.values.to(p.device)
            if t.numel() not in (1, p.shape[0]):
                raise ConfigError(f"TemperatureScaling: {t.numel()} temperatures for {p.shape[0]} classes")
            # clamped: a probability of exactly 0 (a one-channel head's 1 - 1) has no logarithm
            prediction.probabilities = (
                p.clamp_min(1e-12).log() / t.view(-1, *([1] * (p.dim() - 1)))
            ).softmax(0)

    def on_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The same map on a plain pass's float B×C×H×W logits (what ``export`` folds into its graph):
        ``logits / T`` for C = K (softmax of them is :meth:`apply`'s result); for a one-channel sigmoid head
        (C = 1), the logit of the tempered ``[1 - p, p]``: ``log σ(z) / T_1 − log σ(−z) / T_0`` (``z / T``
        for one temperature). For C = K the log-probabilities are divided, not the logits: with one
        temperature per class the normalising constant would not cancel."""
        if self.values is None:
            raise ConfigError("TemperatureScaling: no temperature loaded (run tune, or set one)")
        t = self.values.to(logits.device, logits.dtype)
        if logits.shape[1] == 1:
            t0, t1 = (t[0], t[0]) if t.numel() == 1 else (t[0], t[1])
            return torch.nn.functional.logsigmoid(logits) / t1 - torch.nn.functional.logsigmoid(-logits) / t0
        return logits.log_softmax(1) / t.view(1, -1, *([1] * (logits.dim() - 2)))

    def describe(self) -> str:
        # the same text in tune and test (thresholds tuned after it are checked against it): no value
        return "temperature (per class)" if self.per_class else "temperature"
