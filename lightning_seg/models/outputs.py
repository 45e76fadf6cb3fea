"""What a net returns, and the one function that reads it.

Every net in ``lightning_seg.models`` is an ``nn.Module`` built as ``Net(num_classes, ...)`` whose forward
takes a float32 B×C_in×H×W batch and returns either

* a float tensor B×K×H×W of mask logits (K = ``num_classes``, or 1 for a binary task with a sigmoid head), or
* a dict with ``"mask"`` (as above) and optionally ``"aux"`` (B×K×H×W auxiliary mask logits, e.g.
  torchvision's aux classifier) and ``"label"`` (B×L image-level class logits).

Nets also expose ``size_divisor`` (the input side must be a multiple of it; the module pads and crops) and,
when they have a pretrainable encoder, ``backbone`` (the ``nn.Module`` the finetuning callback freezes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class NetOutput:
    """Normalised net output: mask logits B×K×H×W, optional aux logits and image-level logits B×L."""

    mask: torch.Tensor
    aux: torch.Tensor | None = None
    label: torch.Tensor | None = None


def as_net_output(raw: torch.Tensor | dict[str, torch.Tensor]) -> NetOutput:
    """Read a net's raw return value (tensor or dict) as a :class:`NetOutput`."""
    if isinstance(raw, torch.Tensor):
        return NetOutput(mask=raw)
    return NetOutput(mask=raw["mask"], aux=raw.get("aux"), label=raw.get("label"))


def pad_to_multiple(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad B×C×H×W on the bottom/right so H and W are multiples of ``divisor``.

    Returns the padded tensor and the original (H, W), to crop the output back with ``[..., :H, :W]``.
    Reflection padding keeps image statistics at the border (zeros would read as a dark frame).
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % divisor, (-w) % divisor
    if pad_h or pad_w:
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (h, w)
