"""Running the exported files and the checkpoint on the same images, and how far they agree."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lightning_seg.errors import ConfigError, short_path
from lightning_seg.postprocess.temperature import TemperatureScaling

if TYPE_CHECKING:
    from lightning_seg.task.module import SegmentationModule

from lightning_seg.commands.export.constants import FILES, ExportParityError

# ---------------------------------------------------------------------------------- running the files
Runner = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
"""uint8 B×3×H×W → (float32 logits B×K×H×W, float32 label logits B×L or None)."""


def onnx_runner(path: str | Path) -> Runner:
    """Run ``model.onnx`` with onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        outputs = session.run(None, {"image": image.cpu().numpy()})
        label = torch.from_numpy(outputs[1]) if len(outputs) > 1 else None
        return torch.from_numpy(outputs[0]), label

    return run


def program_runner(program: torch.export.ExportedProgram) -> Runner:
    """Run an ExportedProgram (``torch.export.load("model.pt2")``)."""
    module = program.module()

    def run(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            out = module(image)
        return (out[0], out[1]) if isinstance(out, tuple | list) else (out, None)

    return run


def reference_runner(model: SegmentationModule, prepare: Callable[[torch.Tensor], torch.Tensor]) -> Runner:
    """The checkpoint itself: ``prepare`` (uint8 → the normalised float batch, as the data feeds it), then
    :meth:`SegmentationModule.forward_uncompiled` (the net the files were traced from), and the chain's
    temperature when it has one (the graph folds it in)."""

    step = model.postprocess.find(TemperatureScaling)
    temperature = step if isinstance(step, TemperatureScaling) and step.values is not None else None

    def run(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            out = model.forward_uncompiled(prepare(image))
        label = out.label.float() if out.label is not None else None
        mask = out.mask.float()
        # the temperature, as the graph folds it in (the decision then reads what the chain reads)
        return (temperature.on_logits(mask) if temperature is not None else mask), label

    return run


@dataclass
class Parity:
    """How far one exported file is from the checkpoint on the same images."""

    images: int = 0
    pixels: int = 0
    agreeing: int = 0
    max_abs_logit_diff: float = 0.0
    max_abs_label_logit_diff: float | None = None
    sizes: dict[str, int] = field(default_factory=dict)  # "H×W": images compared at that size

    @property
    def agreement(self) -> float:
        return self.agreeing / self.pixels if self.pixels else 1.0

    def add(
        self,
        logits: torch.Tensor,
        reference: torch.Tensor,
        decide: Callable[[torch.Tensor], torch.Tensor],
        label: torch.Tensor | None = None,
        reference_label: torch.Tensor | None = None,
    ) -> None:
        if logits.shape != reference.shape:
            raise ExportParityError(
                f"export: the exported graph gives logits of shape {tuple(logits.shape)}, the checkpoint "
                f"{tuple(reference.shape)}"
            )
        self.images += reference.shape[0]
        self.pixels += reference.shape[0] * reference.shape[-2] * reference.shape[-1]
        self.agreeing += int((decide(logits) == decide(reference)).sum())
        difference = (logits - reference).abs().max()
        self.max_abs_logit_diff = max(self.max_abs_logit_diff, _finite_or_inf(difference))
        size = f"{reference.shape[-2]}×{reference.shape[-1]}"
        self.sizes[size] = self.sizes.get(size, 0) + int(reference.shape[0])
        if reference_label is not None:
            if label is None or label.shape != reference_label.shape:
                raise ExportParityError(
                    "export: the exported graph gives no label logits like the checkpoint's"
                )
            gap = _finite_or_inf((label - reference_label).abs().max())
            self.max_abs_label_logit_diff = max(self.max_abs_label_logit_diff or 0.0, gap)

    def record(self) -> dict[str, Any]:
        record = asdict(self)
        record["agreement"] = self.agreement
        return record

    def line(self, name: str) -> str:
        sizes = ", ".join(f"{count} at {size}" for size, count in self.sizes.items())
        label = (
            f"; label logits max |Δ| {self.max_abs_label_logit_diff:.3g}"
            if self.max_abs_label_logit_diff is not None
            else ""
        )
        return (
            f"export: {name:<12} max |Δlogit| {self.max_abs_logit_diff:.3g}, class agreement "
            f"{100 * self.agreement:.4f}% (images: {sizes}; {self.pixels} pixels){label}"
        )


def _finite_or_inf(value: torch.Tensor) -> float:
    number = float(value)
    return number if math.isfinite(number) else math.inf


def measure_parity(
    runner: Runner,
    reference: Runner,
    batches: Sequence[torch.Tensor],
    decide: Callable[[torch.Tensor], torch.Tensor],
) -> Parity:
    """Run ``runner`` and ``reference`` on each uint8 batch and compare logits and classes."""
    parity = Parity()
    for batch in batches:
        logits, label = runner(batch)
        expected, expected_label = reference(batch)
        parity.add(logits.float(), expected, decide, label, expected_label)
    return parity


def check_parity(results: dict[str, Parity], min_agreement: float, folder: Path) -> None:
    """Fail with one line when a file's class agreement is below ``min_agreement``."""
    for name, parity in results.items():
        if not parity.agreement >= min_agreement:
            raise ExportParityError(
                f"export: {FILES[name]} agrees with the checkpoint on {100 * parity.agreement:.3f}% of pixels, "
                f"below --min_agreement {100 * min_agreement:g}% (max |Δlogit| {parity.max_abs_logit_diff:.3g}); "
                f"files kept for inspection in {short_path(folder)}"
            )


# ------------------------------------------------------------------------------------------ the images
def parity_batches(datamodule: Any, count: int, divisor: int) -> tuple[list[torch.Tensor], str]:
    """Up to ``count`` uint8 images of the predict split (else test) in the data's batches, plus the first
    batch cropped to a size that is not a multiple of ``divisor`` (the padding path). Returns the batches
    and the split's name."""
    split = _parity_split(datamodule)
    loader = datamodule.predict_dataloader() if split == "predict" else datamodule.test_dataloader()
    batches: list[torch.Tensor] = []
    taken = 0
    for batch in loader:
        image = batch["image"]
        if image.dtype != torch.uint8:
            raise ConfigError(
                f"export: the {split} loader gives {image.dtype} images; the exported graph takes uint8 RGB"
            )
        image = image[: count - taken]
        batches.append(image)
        taken += len(image)
        if taken >= count:
            break
    if not batches:
        raise ConfigError(f"export: the {split} split has no images for the parity check")
    first = batches[0]
    h, w = first.shape[-2:]
    crop_h, crop_w = _off_multiple(h, divisor), _off_multiple(w, divisor)
    if (crop_h, crop_w) != (h, w):
        batches.append(first[..., :crop_h, :crop_w].contiguous())
    return batches, split


def _off_multiple(n: int, divisor: int) -> int:
    """A size a little below ``n`` that is not a multiple of ``divisor`` (``n`` itself when it is not, or
    when the image is too small to crop)."""
    if divisor <= 1 or n % divisor:
        return n
    return n - 3 if n > 8 else n


def _parity_split(datamodule: Any) -> str:
    for split in ("predict", "test"):
        try:
            datamodule.setup(split)
        except (ConfigError, NotImplementedError, FileNotFoundError):
            continue  # no such split (or an empty one)
        return split
    raise ConfigError("export: the data has neither a predict nor a test split for the parity check")
