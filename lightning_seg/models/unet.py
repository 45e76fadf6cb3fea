"""``UNet``: the classic encoder/decoder of DoubleConv blocks (Ronneberger et al., 2015), from scratch."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lightning_seg.errors import ConfigError


class DoubleConv(nn.Sequential):
    """(3×3 conv → BatchNorm → ReLU) × 2, then channel dropout when ``dropout`` > 0; the conv has no bias
    because BatchNorm follows. The dropout comes last and has no parameters: checkpoint keys are the same
    with or without it."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


def upsample2x(in_channels: int, out_channels: int, bilinear: bool, bias: bool = True) -> nn.Module:
    """×2 upsampling to ``out_channels``: bilinear + 1×1 conv (``bilinear=True``) or a 2×2 transposed conv.

    The bilinear variant is an ``nn.Sequential`` (parameters ``1.weight``/``1.bias``), the other a bare
    ``nn.ConvTranspose2d`` (``weight``/``bias``); checkpoint keys depend on this layout.
    """
    if bilinear:
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=bias),
        )
    return nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, bias=bias)


def match_size(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Resize ``x`` bilinearly to ``skip``'s height and width if they differ (only when the caller skipped the
    net's padding to ``size_divisor``)."""
    if x.shape[-2:] != skip.shape[-2:]:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
    return x


class Up(nn.Module):
    """Upsample ×2, concatenate the skip, DoubleConv.

    ``bilinear=True`` upsamples bilinearly and halves channels with a 1×1 conv (no checkerboard artefacts,
    fewer parameters); ``False`` uses a learned 2×2 transposed conv.
    """

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, bilinear: bool, dropout: float = 0.0
    ) -> None:
        super().__init__()
        half = in_channels // 2
        self.up = upsample2x(in_channels, half, bilinear)
        self.conv = DoubleConv(half + skip_channels, out_channels, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = match_size(self.up(x), skip)
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net with ``depth`` max-pool stages; channel widths ``base_width * 2**i``.

    Args:
        num_classes: output channels (mask logits), background included.
        in_channels: input image channels.
        base_width: channels of the first stage (64 in the paper; 16 trains fast on a CPU).
        depth: number of down-sampling stages.
        bilinear: bilinear upsampling + 1×1 conv (True) or transposed convolution (False).
        dropout: channel dropout (``Dropout2d``) after every block but the first, in training only (0.3 in
            one of the source notebooks); 0: none.

    Shapes: float32 B×in_channels×H×W → B×num_classes×H×W, H and W multiples of ``2**depth``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        base_width: int = 64,
        depth: int = 4,
        bilinear: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= dropout < 1:
            raise ConfigError(f"model.net UNet.dropout must be in [0, 1), got {dropout}")
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.size_divisor = 2**depth
        self.stem = DoubleConv(in_channels, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1], dropout))
            for i in range(depth)
        )
        self.ups = nn.ModuleList(
            Up(widths[i + 1], widths[i], widths[i], bilinear, dropout) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)
