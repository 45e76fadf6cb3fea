"""The deployable graph: the model's plain forward pass with the data's normalisation folded in, exported with
a dynamic batch, height and width (``torch.export``, then ONNX)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightning_seg.errors import ConfigError
from lightning_seg.postprocess.temperature import TemperatureScaling

if TYPE_CHECKING:
    from lightning_seg.task.module import SegmentationModule


# ------------------------------------------------------------------------------------------- the graph
class DeployableNet(nn.Module):
    """The model's plain forward pass for deployment: uint8 RGB in, float32 logits out.

    Folds in what the data module does to a batch (``/ 255`` and the normalisation with the model's
    ``mean``/``std``, the same operations in the same order) and what :meth:`SegmentationModule.forward`
    does around the net (the padding to ``size_divisor`` and the crop back to the input size).

    The padding is done here, before ``forward`` is called, as an index gather rather than ``F.pad``: the
    padded side is then ``d * ceil(H / d)`` by construction, which ``torch.export`` can reason about for
    every H (with ``F.pad`` it would have to specialise H to multiples of ``d`` or to the example's case);
    ``forward``'s own padding then pads nothing. It reproduces
    :func:`~lightning_seg.models.outputs.pad_to_multiple` exactly: reflection at the bottom/right, or
    replication where the image is too small for a reflection (both chosen inside the graph). The crop
    back is a gather too (a slice would need a proof that H ≤ the padded side).

    Args:
        model: the segmentation module (eval mode; its net is run uncompiled).

    Shapes: uint8 B×3×H×W (RGB, 0..255, any H, W) → float32 ``logits`` B×K×H×W (K = ``num_classes``, or 1
    for a one-channel sigmoid head), and float32 ``label_logits`` B×L when the net has an image-level head.
    """

    def __init__(self, model: SegmentationModule) -> None:
        super().__init__()
        # the net is this module's only child, so an exported program holds its weights and nothing of
        # the Lightning module around it (losses, metrics); the module is kept outside the module tree
        self.net = model.net
        # held outside the module tree (see above); its uncompiled forward is traced, never torch.compile's
        self.__dict__["model"] = model
        self.divisor = int(model.size_divisor)
        self.register_buffer("mean", torch.tensor(model.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(model.std, dtype=torch.float32).view(1, -1, 1, 1))
        self.has_label_head = getattr(model.net, "label_head", None) is not None
        # a tuned (or configured) temperature is part of the probabilities every later step reads: in the graph
        step = model.postprocess.find(TemperatureScaling)
        self.temperature = step if isinstance(step, TemperatureScaling) and step.values is not None else None

    @property
    def output_names(self) -> list[str]:
        return ["logits", "label_logits"] if self.has_label_head else ["logits"]

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = (image.to(torch.float32) / 255 - self.mean) / self.std  # SegDataModule.prepare_batch's steps
        h, w = x.shape[-2], x.shape[-1]
        d = self.divisor
        if d > 1:
            rows, columns = _pad_indices(h, w, d, x.device)
            x = x.index_select(2, rows).index_select(3, columns)
        out = self.model.forward_uncompiled(x)
        logits = out.mask
        if d > 1:
            logits = logits.index_select(2, torch.arange(h, device=x.device))
            logits = logits.index_select(3, torch.arange(w, device=x.device))
        logits = logits.to(torch.float32)
        if self.temperature is not None:
            logits = self.temperature.on_logits(logits)
        if self.has_label_head:
            if out.label is None:
                raise ConfigError("export: the net has an image-level head but returned no label logits")
            return logits, out.label.to(torch.float32)
        return logits


def _pad_indices(h: Any, w: Any, d: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 row and column indices that pad an H×W image to multiples of ``d`` at the bottom/right, as
    :func:`~lightning_seg.models.outputs.pad_to_multiple` does: reflection when both pads are shorter
    than their side, else replication."""
    sides = []
    reflect = None
    for n in (h, w):
        size = d * ((n + d - 1) // d)
        index = torch.arange(size, device=device)
        sides.append((torch.where(index < n, index, 2 * (n - 1) - index), index.clamp(max=n - 1)))
        # a tensor, not a Python bool: the choice stays in the graph for every H and W
        fits = torch.full((), size - n, device=device) < n
        reflect = fits if reflect is None else reflect & fits
    assert reflect is not None
    (rows_r, rows_e), (cols_r, cols_e) = sides
    return torch.where(reflect, rows_r, rows_e), torch.where(reflect, cols_r, cols_e)


def export_program(net: DeployableNet, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of ``net`` with a dynamic batch, height and width.

    Args:
        net: the deployable net (eval mode).
        example: uint8 B×3×H×W; a batch of one is repeated to two (export would fix a size-1 batch).
    """
    if example.shape[0] < 2:
        example = example.expand(2, *example.shape[1:]).contiguous()
    dynamic = torch.export.Dim.DYNAMIC
    # DYNAMIC, not named Dims: a guard a net adds for tiny sizes (is a feature map one pixel wide?)
    # narrows the program's accepted range (checked when it runs) instead of failing the export
    with torch.no_grad():
        return torch.export.export(
            net, (example,), dynamic_shapes={"image": {0: dynamic, 2: dynamic, 3: dynamic}}
        )


def write_onnx(
    program: torch.export.ExportedProgram,
    example: torch.Tensor,
    path: Path,
    opset: int,
    output_names: Sequence[str],
) -> None:
    """``program`` → ONNX at ``opset`` with named inputs, outputs and dynamic axes, in one file (the
    weights go to ``<path>.data`` only beyond protobuf's 2 GB)."""
    onnx_program = torch.onnx.export(
        program,
        (example,),
        dynamic_shapes={"image": {0: "batch", 2: "height", 3: "width"}},  # names the axes in the file
        input_names=["image"],
        output_names=list(output_names),
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    if onnx_program is None:
        raise ConfigError("export: torch.onnx.export returned no program")
    onnx_program.save(str(path))
