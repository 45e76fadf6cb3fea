"""``ResNetUNet``: a ResNet-18/34 style encoder with a U-Net decoder, built from scratch.

The encoder's module names mirror ``torchvision.models.ResNet`` (``conv1``, ``bn1``, ``layer1``..``layer4``,
``downsample.0/1``), so torchvision's ImageNet weights load into it unchanged when the shape matches
(``base_width=64``, ``in_channels=3``, ``stage_blocks`` (2, 2, 2, 2) or (3, 4, 6, 3)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models import WeightsEnum

from lightning_seg.errors import ConfigError
from lightning_seg.models.torchvision import load_torchvision_weights, verify_torchvision_weights
from lightning_seg.models.unet import DoubleConv, Up, upsample2x
from lightning_seg.models.weight_files import WeightsFile, load_weights_file, weights_source
from lightning_seg.models.weights import Normalization, pretrained_wanted, torchvision_normalization

# torchvision builder per block layout, for ``encoder_weights``
_TORCHVISION_RESNETS = {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34"}


def _encoder_weights_entry(
    weights: str, in_channels: int, base_width: int, stage_blocks: Sequence[int]
) -> WeightsEnum:
    """The torchvision ResNet-18/34 weights entry named ``weights``, checked against the encoder's shape (no
    download)."""
    arch = _TORCHVISION_RESNETS.get(tuple(stage_blocks))
    if arch is None or in_channels != 3 or base_width != 64:
        raise ConfigError(
            "ResNetUNet: encoder_weights needs in_channels=3, base_width=64 and stage_blocks "
            f"(2, 2, 2, 2) or (3, 4, 6, 3); got in_channels={in_channels}, base_width={base_width}, "
            f"stage_blocks={tuple(stage_blocks)}"
        )
    return verify_torchvision_weights(arch, weights, "ResNetUNet: unknown encoder_weights")


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity (or strided 1×1 projection) shortcut (He et al., 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetEncoder(nn.Module):
    """ResNet stem and four residual stages; returns the five feature maps the decoder needs.

    Args:
        in_channels: input image channels.
        base_width: channels of the stem and first stage; stages use ``base_width * (1, 2, 4, 8)``.
        stage_blocks: BasicBlocks per stage, (3, 4, 6, 3) for ResNet-34, (2, 2, 2, 2) for ResNet-18.

    Shapes: float32 B×in_channels×H×W → list of five tensors at strides 2, 4, 8, 16, 32 with
    ``base_width * (1, 1, 2, 4, 8)`` channels.
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_width: int = 64,
        stage_blocks: tuple[int, int, int, int] = (3, 4, 6, 3),
    ) -> None:
        super().__init__()
        widths = [base_width * m for m in (1, 2, 4, 8)]
        self.out_channels = [base_width, *widths]
        self.conv1 = nn.Conv2d(in_channels, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        in_ch = base_width
        for i, (width, blocks) in enumerate(zip(widths, stage_blocks, strict=True)):
            stride = 1 if i == 0 else 2  # the max-pool already halved the resolution before stage 1
            layers = [BasicBlock(in_ch, width, stride)] + [
                BasicBlock(width, width) for _ in range(blocks - 1)
            ]
            stages.append(nn.Sequential(*layers))
            in_ch = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero the last BN of every residual branch: each block starts as the identity, which makes training
        # from scratch markedly more stable (Goyal et al., 2017, "zero-γ").
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(stem))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [stem, f1, f2, f3, f4]


class ResNetUNet(nn.Module):
    """U-Net whose encoder is a ResNet (34 layers by default), trained from scratch unless weights are given.

    The decoder climbs back through the four skip levels (strides 16, 8, 4, 2) with :class:`Up` blocks and a
    last skip-less ×2 stage to full resolution, then a 1×1 head.

    Args:
        num_classes: output channels (mask logits), background included; 1 for a sigmoid/binary head.
        in_channels: input image channels.
        base_width: stem width; encoder stages use ``base_width * (1, 2, 4, 8)`` (64 = ResNet-34; 16 trains
            fast on a CPU).
        bilinear: bilinear upsampling + 1×1 conv (True) or 2×2 transposed convolution (False) in the decoder.
        stage_blocks: BasicBlocks per encoder stage; (3, 4, 6, 3) = ResNet-34, (2, 2, 2, 2) = ResNet-18.
        encoder_weights: ``None`` (random init, the default; nothing is downloaded) or a torchvision weight
            name for the matching ResNet, e.g. ``"IMAGENET1K_V1"`` — downloaded on first use into torch.hub's
            cache (``$TORCH_HOME/hub/checkpoints``; not inside
            :func:`~lightning_seg.models.weights.checkpoint_follows`, where a checkpoint replaces them). Needs
            ``in_channels=3``, ``base_width=64`` and a ResNet-18/34 ``stage_blocks``. Or a local file (a
            path, or ``{file: PATH, keys: names | order}``): a torchvision ResNet's state dict loads by name,
            its ``fc`` left out (:mod:`lightning_seg.models.weight_files`).

    Shapes: float32 B×in_channels×H×W → B×num_classes×H×W; H and W multiples of ``size_divisor`` (32).
    ``backbone`` is the encoder (what :class:`~lightning_seg.callbacks.BackboneFinetuning` freezes).
    """

    size_divisor: int = 32

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        base_width: int = 64,
        bilinear: bool = True,
        stage_blocks: tuple[int, int, int, int] = (3, 4, 6, 3),
        encoder_weights: str | WeightsFile | None = None,
    ) -> None:
        super().__init__()
        if base_width < 2 or base_width % 2:
            raise ConfigError(f"ResNetUNet: base_width must be an even number >= 2, got {base_width}")
        self.encoder = ResNetEncoder(in_channels, base_width, tuple(stage_blocks))
        c_stem, c1, c2, c3, c4 = self.encoder.out_channels
        self.decoder = nn.ModuleList(
            [
                Up(c4, c3, c3, bilinear),  # stride 32 → 16
                Up(c3, c2, c2, bilinear),  # 16 → 8
                Up(c2, c1, c1, bilinear),  # 8 → 4
                Up(c1, c_stem, c_stem, bilinear),  # 4 → 2
            ]
        )
        # The stride-2 stem is the shallowest feature; the last ×2 has no skip (as in SMP's Unet) and works at
        # half the stem width, because full resolution is where a decoder spends most of its FLOPs.
        half = c_stem // 2
        self.final_up = nn.Sequential(upsample2x(c_stem, half, bilinear), DoubleConv(half, half))
        self.head = nn.Conv2d(half, num_classes, 1)
        file = weights_source(encoder_weights, "encoder_weights", "ResNetUNet")
        if file is not None:
            if pretrained_wanted():
                load_weights_file(self.encoder, file)
        elif encoder_weights is not None:
            entry = _encoder_weights_entry(encoder_weights, in_channels, base_width, stage_blocks)
            if pretrained_wanted():
                state = load_torchvision_weights(entry, "ResNetUNet encoder_weights")
                self.encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})

    @staticmethod
    def weights_normalization(
        encoder_weights: str | WeightsFile | None = None,
        in_channels: int = 3,
        base_width: int = 64,
        stage_blocks: Sequence[int] = (3, 4, 6, 3),
        **_: Any,
    ) -> Normalization | None:
        """The mean/std ``encoder_weights`` expect (their torchvision ``transforms()``; no download; a file's
        companion config, else unknown); None without weights."""
        file = weights_source(encoder_weights, "encoder_weights", "ResNetUNet")
        if file is not None:
            return file.normalization()
        if encoder_weights is None:
            return None
        return torchvision_normalization(
            _encoder_weights_entry(encoder_weights, in_channels, base_width, stage_blocks)
        )

    @property
    def backbone(self) -> nn.Module:
        """The ResNet encoder: the part pretrained weights apply to, frozen first when finetuning."""
        return self.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        y = features.pop()
        for up in self.decoder:
            y = up(y, features.pop())
        return self.head(self.final_up(y))
