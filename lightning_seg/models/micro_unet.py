"""``MicroUNet``: a small U-Net of MobileNetV2-style inverted-residual blocks, with an image-level label head.

Meant for CPUs and edge devices: depthwise 3×3 convolutions keep the cost low, and the classification head on
the bottleneck gives an image-level prediction ("is there any foreground?") for almost nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_seg.models.unet import match_size, upsample2x


class ConvBNAct(nn.Sequential):
    """Conv → BatchNorm → SiLU; no conv bias because BatchNorm follows."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            nn.SiLU(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1×1 expand → 3×3 depthwise → 1×1 linear projection (Sandler et al., 2018), SiLU activations.

    The projection has no activation: a ReLU/SiLU on the narrow output would destroy information
    (the "linear bottleneck" argument). The residual is added only when input and output shapes match.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expand_ratio: int = 4) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MicroUp(nn.Module):
    """Upsample ×2 to ``skip``'s width, concatenate the skip (if any), fuse with an inverted-residual block.

    ``bilinear=True`` upsamples bilinearly then maps channels with a 1×1 conv (no checkerboard artefacts);
    ``False`` uses a learned 2×2 transposed convolution.
    """

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, bilinear: bool, expand_ratio: int
    ) -> None:
        super().__init__()
        self.up = upsample2x(in_channels, out_channels, bilinear, bias=False)
        self.fuse = InvertedResidual(out_channels + skip_channels, out_channels, expand_ratio=expand_ratio)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([skip, match_size(x, skip)], dim=1)
        return self.fuse(x)


class MicroUNet(nn.Module):
    """Inverted-residual U-Net with a mask head and an image-level classification head.

    Encoder: a stride-2 stem (width ``w = base_width``), three stride-2 stages (2w, 4w, 8w) and a bottleneck
    of two more blocks at stride 16 (8w). Decoder: four ×2 stages back to full resolution, reusing the stem and stage outputs
    as skips (the last stage has none). Label head: global average pool → dropout → linear, on the bottleneck.

    Args:
        num_classes: mask classes, background included.
        in_channels: input image channels.
        base_width: stem width (16 gives ~0.7 M parameters).
        expand_ratio: hidden-width multiplier of the inverted-residual blocks.
        bilinear: bilinear upsampling + 1×1 conv (True) or transposed convolution (False) in the decoder.
        num_labels: outputs of the image-level head; ``None`` = ``num_classes``, ``0`` = no label head.
            SegmentationModule fills a null one in: the data's label count, or 0 when the loss's
            ``label_weight`` is 0 (an untrained head costs compute, and DDP refuses its gradient-less
            parameters).
        binary_head: one mask channel (a sigmoid / binary task) instead of ``num_classes``.
        label_dropout: dropout before the label head's linear layer.

    Shapes: float32 B×in_channels×H×W → ``{"mask": B×K×H×W, "label": B×L}`` (K = 1 if ``binary_head``
    else ``num_classes``; L = ``num_labels``; no ``"label"`` when ``num_labels=0``), H and W multiples of
    ``size_divisor`` (16). ``backbone`` is the encoder (stem, stages, bottleneck).
    """

    size_divisor: int = 16
    # a null num_labels still makes a head: the module sizes it for labels derived from the masks too, or
    # passes 0 (no head) when the loss gives the labels weight 0
    label_head_by_default: bool = True

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        base_width: int = 16,
        expand_ratio: int = 4,
        bilinear: bool = True,
        num_labels: int | None = None,
        binary_head: bool = False,
        label_dropout: float = 0.2,
    ) -> None:
        super().__init__()
        w = base_width
        widths = [w, 2 * w, 4 * w, 8 * w]
        self.encoder = nn.ModuleDict(
            {
                # the first block skips the expansion, as in MobileNetV2: at stride 2 and w channels an expanded
                # layer would be the most expensive of the net
                "stem": nn.Sequential(ConvBNAct(in_channels, w, 3, stride=2), InvertedResidual(w, w, 1, 1)),
                **{
                    f"down{i}": nn.Sequential(
                        InvertedResidual(widths[i - 1], widths[i], 2, expand_ratio),
                        InvertedResidual(widths[i], widths[i], 1, expand_ratio),
                    )
                    for i in (1, 2, 3)
                },
                "bottleneck": nn.Sequential(
                    InvertedResidual(8 * w, 8 * w, 1, expand_ratio),
                    InvertedResidual(8 * w, 8 * w, 1, expand_ratio),
                ),
            }
        )
        self.decoder = nn.ModuleList(
            [
                MicroUp(8 * w, 4 * w, 4 * w, bilinear, expand_ratio),  # stride 16 → 8
                MicroUp(4 * w, 2 * w, 2 * w, bilinear, expand_ratio),  # 8 → 4
                MicroUp(2 * w, w, w, bilinear, expand_ratio),  # 4 → 2
                # 2 → 1 without a skip, unexpanded: full resolution is where the FLOPs are
                MicroUp(w, 0, w, bilinear, expand_ratio=1),
            ]
        )
        self.mask_head = nn.Conv2d(w, 1 if binary_head else num_classes, 1)
        labels = num_classes if num_labels is None else num_labels
        self.label_head: nn.Module | None = None
        if labels > 0:
            self.label_head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(label_dropout), nn.Linear(8 * w, labels)
            )

    @property
    def backbone(self) -> nn.Module:
        """The encoder (stem, three down stages, bottleneck)."""
        return self.encoder

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stem = self.encoder["stem"](x)
        d1 = self.encoder["down1"](stem)
        d2 = self.encoder["down2"](d1)
        d3 = self.encoder["down3"](d2)
        bottom = self.encoder["bottleneck"](d3)
        y = bottom
        for up, skip in zip(self.decoder, (d2, d1, stem, None), strict=True):
            y = up(y, skip)
        out = {"mask": self.mask_head(y)}
        if self.label_head is not None:
            out["label"] = self.label_head(bottom)
        return out
