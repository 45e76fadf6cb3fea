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


def forward_at_input_size(
    net: torch.nn.Module, image: torch.Tensor, size_divisor: int = 1, channels_last: bool = False
) -> NetOutput:
    """``net`` on float B×3×H×W ``image`` padded to multiples of ``size_divisor`` (and in channels-last
    memory format on request), its mask (and aux) logits brought back to B×K×H×W at the input size:
    upsampled bilinearly where the net predicts at a lower stride, then cropped."""
    padded, (h, w) = pad_to_multiple(image, size_divisor)
    if channels_last:
        padded = padded.contiguous(memory_format=torch.channels_last)
    out = as_net_output(net(padded))

    def to_input_size(logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != padded.shape[-2:]:  # nets (or aux heads) that predict at a lower stride
            logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :h, :w]

    out.mask = to_input_size(out.mask)
    if out.aux is not None:
        out.aux = to_input_size(out.aux)
    return out
