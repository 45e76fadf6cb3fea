"""``TorchvisionNet``: the ``torchvision.models.segmentation`` nets behind the net contract."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import WeightsEnum, get_model_weights
from torchvision.models import segmentation as tv_seg

from lightning_seg.errors import ConfigError

# arch → the backbone's output stride: resnets run dilated at stride 8, MobileNetV3 at 16. Padding to it keeps
# the strided features aligned with the pixels (the heads resize back to any input size anyway).
_ARCHS: dict[str, int] = {
    "deeplabv3_resnet50": 8,
    "deeplabv3_resnet101": 8,
    "deeplabv3_mobilenet_v3_large": 16,
    "fcn_resnet50": 8,
    "fcn_resnet101": 8,
    "lraspp_mobilenet_v3_large": 16,
}


def verify_torchvision_weights(arch: str, weights: str, who: str) -> WeightsEnum:
    """The weights entry of torchvision model ``arch`` named ``weights``, checked before any download.

    ``weights`` is a name such as ``"IMAGENET1K_V1"`` or ``"ResNet50_Weights.IMAGENET1K_V2"``. An unknown name
    raises ``ConfigError("{who} {weights!r} for {arch}; valid: ...")``, ``who`` naming the caller and option
    (e.g. ``"ResNetUNet: unknown encoder_weights"``).
    """
    enum = get_model_weights(arch)
    try:
        return enum.verify(weights)
    except (KeyError, ValueError) as err:
        valid = ", ".join(entry.name for entry in enum)
        raise ConfigError(f"{who} {weights!r} for {arch}; valid: {valid}") from err


class TorchvisionNet(nn.Module):
    """A torchvision segmentation model (DeepLabV3, FCN, LR-ASPP) returning ``{"mask", "aux"?}`` logits.

    Args:
        num_classes: mask channels; 1 for a sigmoid/binary head.
        arch: one of deeplabv3_resnet50, deeplabv3_resnet101, deeplabv3_mobilenet_v3_large, fcn_resnet50,
            fcn_resnet101, lraspp_mobilenet_v3_large.
        weights_backbone: ``None`` = random init (the default: nothing is downloaded; note torchvision's own
            default would download ImageNet weights) or a weight name of the backbone, e.g. ``"IMAGENET1K_V1"``
            or ``"ResNet50_Weights.IMAGENET1K_V2"``, downloaded on first use.
        aux_loss: build the auxiliary FCN head on the stride-8/16 features (returned as ``"aux"``). ``None``
            (the default): built, unless SegmentationModule passes ``False`` because the loss's
            ``aux_weight`` is 0 (an untrained head costs compute, and DDP refuses its gradient-less
            parameters); ``True`` with ``aux_weight`` 0 is refused there. Ignored by
            ``lraspp_mobilenet_v3_large``, which has none.

    Shapes: float32 B×in×H×W (3 channels) → ``{"mask": B×num_classes×H×W, "aux": B×num_classes×H×W}`` (no
    ``"aux"`` without the aux head); any H, W work, ``size_divisor`` (8 for ResNets, 16 for MobileNetV3) avoids
    misaligned strided features.
    ``backbone`` is ``model.backbone`` (the ResNet / MobileNetV3 feature extractor). The DeepLabV3 ASPP pooling
    branch has BatchNorm on a 1×1 map: train with batch size >= 2.
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "deeplabv3_resnet50",
        weights_backbone: str | None = None,
        aux_loss: bool | None = None,
    ) -> None:
        super().__init__()
        if arch not in _ARCHS:
            raise ConfigError(f"TorchvisionNet: unknown arch {arch!r}; valid: {', '.join(_ARCHS)}")
        if weights_backbone is not None:
            # deeplabv3_resnet50 → resnet50, lraspp_mobilenet_v3_large → mobilenet_v3_large
            backbone = arch.split("_", 1)[1]
            verify_torchvision_weights(backbone, weights_backbone, "TorchvisionNet: unknown weights_backbone")
        builder = getattr(tv_seg, arch)
        kwargs = {} if arch.startswith("lraspp") else {"aux_loss": True if aux_loss is None else aux_loss}
        # weights=None always: full-model weights fix num_classes to 21 (COCO-with-VOC-labels)
        self.model = builder(
            weights=None, weights_backbone=weights_backbone, num_classes=num_classes, **kwargs
        )
        self.size_divisor: int = _ARCHS[arch]

    @property
    def backbone(self) -> nn.Module:
        """The ResNet / MobileNetV3 feature extractor (an ``IntermediateLayerGetter``)."""
        return self.model.backbone

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(x)
        result = {"mask": out["out"]}
        if "aux" in out:
            result["aux"] = out["aux"]
        return result
