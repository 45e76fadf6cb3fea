"""``TorchvisionNet``: the ``torchvision.models.segmentation`` nets behind the net contract."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchvision.models import WeightsEnum, get_model_weights
from torchvision.models import segmentation as tv_seg

from lightning_seg.errors import ConfigError, truncate
from lightning_seg.models.class_mapping import classes_differ
from lightning_seg.models.weight_files import (
    WeightsFile,
    WeightsSource,
    companion_class_names,
    load_weights_file,
    weights_source,
)
from lightning_seg.models.weights import (
    Normalization,
    fetch_error,
    pretrained_wanted,
    torchvision_normalization,
)
from lightning_seg.utils.network import reachable

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
DEFAULT_ARCH = "deeplabv3_resnet50"


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


def load_torchvision_weights(entry: WeightsEnum, who: str) -> dict[str, Any]:
    """The state dict of torchvision weights ``entry``: torch.hub's cached file, else downloaded into it.

    Raises ConfigError in one line (which weights, why, where to put the file by hand) when the file is not
    cached and the server cannot be reached within seconds (torch.hub would wait on the socket) or the
    download fails. ``who`` names the caller and option (e.g. ``"TorchvisionNet weights"``).
    """
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    file_name = Path(urlparse(entry.url).path).name
    # kept short: fetch_error cuts the line at 300 characters, and the URL and folder must survive
    what = f"{who} {entry.name}"
    hint = f"download {entry.url} into {folder}/ (set by $TORCH_HOME)"
    if not (folder / file_name).is_file() and not reachable(entry.url):
        raise fetch_error(what, f"{urlparse(entry.url).hostname} cannot be reached", hint)
    try:
        return entry.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad hash or file a RuntimeError
        why = str(getattr(error, "reason", None) or error)  # URLError's reason, without "<urlopen error>"
        raise fetch_error(what, truncate(why, 60), hint) from error


def _backbone_arch(arch: str) -> str:
    """deeplabv3_resnet50 → resnet50, lraspp_mobilenet_v3_large → mobilenet_v3_large."""
    return arch.split("_", 1)[1]


Weights = WeightsEnum | WeightsSource
"""A torchvision weights entry, or a local file (:mod:`lightning_seg.models.weight_files`)."""


def _verified_weights(
    arch: str, weights: str | WeightsFile | None, weights_backbone: str | WeightsFile | None
) -> tuple[Weights | None, Weights | None]:
    """The (full-model, backbone) weights named by the config: torchvision entries checked without any
    download, or files (not read yet)."""
    if arch not in _ARCHS:
        raise ConfigError(f"TorchvisionNet: unknown arch {arch!r}; valid: {', '.join(_ARCHS)}")
    if weights is not None and weights_backbone is not None:
        raise ConfigError(
            "TorchvisionNet: set weights or weights_backbone, not both (the full-model weights include the "
            "backbone); set weights_backbone: null"
        )
    full: Weights | None = weights_source(weights, "weights", "TorchvisionNet")
    if full is None and weights is not None:
        full = verify_torchvision_weights(arch, str(weights), "TorchvisionNet: unknown weights")
    backbone: Weights | None = weights_source(weights_backbone, "weights_backbone", "TorchvisionNet")
    if backbone is None and weights_backbone is not None:
        backbone = verify_torchvision_weights(
            _backbone_arch(arch), str(weights_backbone), "TorchvisionNet: unknown weights_backbone"
        )
    return full, backbone


def _output_convs(head: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of the 1×1 convs that produce a head's class logits: LR-ASPP's two classifiers, or
    the last layer of a DeepLabHead / FCNHead (``nn.Sequential``)."""
    if hasattr(head, "low_classifier"):
        return [(head, "low_classifier"), (head, "high_classifier")]
    return [(head, str(len(head) - 1))]


class TorchvisionNet(nn.Module):
    """A torchvision segmentation model (DeepLabV3, FCN, LR-ASPP) returning ``{"mask", "aux"?}`` logits.

    With ``weights`` (e.g. the COCO-trained ``"COCO_WITH_VOC_LABELS_V1"``, 21 PASCAL VOC categories) the whole
    net starts pretrained. When the data's classes are those categories (same count, and the same names up to
    case, spaces, ``_`` and ``-``; ``"background"`` matches ``"__background__"``), the pretrained classifier
    is kept (``head_is_pretrained``), so the net scores without any training (``test`` with no checkpoint).
    Otherwise only the final 1×1 convs of the classifier and aux classifier (LR-ASPP: ``low_classifier`` and
    ``high_classifier``) are replaced by new ones with ``num_classes`` outputs, and one line says why.

    Args:
        num_classes: mask channels; 1 for a sigmoid/binary head.
        arch: one of deeplabv3_resnet50, deeplabv3_resnet101, deeplabv3_mobilenet_v3_large, fcn_resnet50,
            fcn_resnet101, lraspp_mobilenet_v3_large.
        weights: ``None`` (the default) or a full-model weight name of ``arch``, e.g.
            ``"COCO_WITH_VOC_LABELS_V1"`` or ``"DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1"``,
            downloaded on first use into torch.hub's cache (``$TORCH_HOME/hub/checkpoints``). Excludes
            ``weights_backbone`` (the full weights include the backbone).
        weights_backbone: ``None`` = random init (the default: nothing is downloaded; note torchvision's own
            default would download ImageNet weights) or a weight name of the backbone, e.g. ``"IMAGENET1K_V1"``
            or ``"ResNet50_Weights.IMAGENET1K_V2"``, downloaded on first use.
            Both also take a local file (a path, or ``{file: PATH, keys: names | order}``; see
            :mod:`lightning_seg.models.weight_files`): for ``weights``, a whole model's state dict, whose final
            classifier convs are kept only when a companion config (``<file stem>.json`` with
            ``class_names``, or ``config.json`` with ``id2label``) names its classes and they are the data's;
            for ``weights_backbone``, a torchvision classifier's (its ``fc``/``classifier`` unused).
        aux_loss: build the auxiliary FCN head on the stride-8/16 features (returned as ``"aux"``). ``None``
            (the default): built, unless SegmentationModule passes ``False`` because the loss's
            ``aux_weight`` is 0 (an untrained head costs compute, and DDP refuses its gradient-less
            parameters); ``True`` with ``aux_weight`` 0 is refused there. Ignored by
            ``lraspp_mobilenet_v3_large``, which has none. With ``weights`` and ``False``, the pretrained aux
            head is loaded and then dropped.
        class_names: the data's K class names, compared with the categories of ``weights``
            (SegmentationModule passes its own when this is null); ``None`` compares the counts only.

    Inside :func:`~lightning_seg.models.weights.checkpoint_follows` nothing is downloaded: the net is built
    with random weights in the shape the pretrained one would have (``num_classes`` outputs), for a
    checkpoint's state dict to fill. ``head_is_pretrained`` is True when ``weights`` were loaded and their
    classifier kept.

    Shapes: float32 B×in×H×W (3 channels) → ``{"mask": B×num_classes×H×W, "aux": B×num_classes×H×W}`` (no
    ``"aux"`` without the aux head); any H, W work, ``size_divisor`` (8 for ResNets, 16 for MobileNetV3) avoids
    misaligned strided features.
    ``backbone`` is ``model.backbone`` (the ResNet / MobileNetV3 feature extractor). The DeepLabV3 ASPP pooling
    branch has BatchNorm on a 1×1 map: train with batch size >= 2.
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = DEFAULT_ARCH,
        weights: str | WeightsFile | None = None,
        weights_backbone: str | WeightsFile | None = None,
        aux_loss: bool | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        full, backbone = _verified_weights(arch, weights, weights_backbone)
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(
                f"TorchvisionNet: class_names has {len(class_names)} names for {num_classes} classes"
            )
        if not pretrained_wanted():
            full = backbone = None  # a checkpoint's state dict replaces them next
        with_aux = not arch.startswith("lraspp") and aux_loss is not False
        mismatch = None
        if isinstance(full, WeightsEnum):
            categories = list(full.meta["categories"])
            source = f"the {len(categories)} categories of {type(full).__name__}.{full.name}"
            mismatch = classes_differ(categories, class_names, num_classes, source)
        builder = getattr(tv_seg, arch)
        kwargs = {} if arch.startswith("lraspp") else {"aux_loss": with_aux or isinstance(full, WeightsEnum)}
        # weights=None and weights_backbone=None: the files are loaded below, where a failed download gets
        # one clear line (and torchvision's default weights_backbone would download ImageNet weights)
        self.model = builder(
            weights=None,
            weights_backbone=None,
            num_classes=len(full.meta["categories"]) if isinstance(full, WeightsEnum) else num_classes,
            **kwargs,
        )
        if isinstance(full, WeightsSource):
            mismatch = self._load_model_file(full, num_classes, class_names)
        elif full is not None:
            self.model.load_state_dict(load_torchvision_weights(full, "TorchvisionNet weights"))
            if not with_aux:
                self.model.aux_classifier = None  # loaded only because the state dict has it
            if mismatch is not None:
                self._replace_classifier(num_classes)
                rank_zero_info(
                    f"TorchvisionNet: new final classifier convs for {num_classes} classes: {mismatch}"
                )
        elif isinstance(backbone, WeightsSource):
            load_weights_file(self.model.backbone, backbone)
        elif backbone is not None:
            self._load_backbone(load_torchvision_weights(backbone, "TorchvisionNet weights_backbone"))
        self.head_is_pretrained: bool = full is not None and mismatch is None
        self.size_divisor: int = _ARCHS[arch]

    @staticmethod
    def pretrained_head_named(init_args: dict[str, Any]) -> bool:
        """Whether a config's init args name full-model ``weights`` (whose classifier may score the data
        without training; the built net's ``head_is_pretrained`` says whether it does)."""
        return init_args.get("weights") is not None

    @staticmethod
    def weights_normalization(
        arch: str = DEFAULT_ARCH,
        weights: str | WeightsFile | None = None,
        weights_backbone: str | WeightsFile | None = None,
        **_: Any,
    ) -> Normalization | None:
        """The mean/std the named weights expect (their torchvision ``transforms()``; no download; a file's
        companion config, else unknown); None without weights."""
        full, backbone = _verified_weights(arch, weights, weights_backbone)
        entry = full or backbone
        if isinstance(entry, WeightsSource):
            return entry.normalization()
        return None if entry is None else torchvision_normalization(entry)

    def _load_model_file(
        self, file: WeightsSource, num_classes: int, class_names: Sequence[str] | None
    ) -> str | None:
        """Load a whole model's state dict from ``file``; its final classifier convs only when a companion
        config names its classes and they are the data's (:func:`classes_differ`), never on a count alone.
        Returns why they were replaced (None when kept); one line says so."""
        heads = [self.model.classifier, getattr(self.model, "aux_classifier", None)]
        convs = [
            getattr(parent, name)
            for head in heads
            if head is not None
            for parent, name in _output_convs(head)
        ]
        names = {id(module): qualified for qualified, module in self.model.named_modules()}
        outputs = frozenset(f"{names[id(conv)]}.{tensor}" for conv in convs for tensor in ("weight", "bias"))
        categories = companion_class_names(file.path())
        if categories is None:
            why = f"{file.label} names no classes (a companion <file stem>.json with class_names would)"
        else:
            source = f"the {len(categories)} classes of {file.label}"
            why = classes_differ(categories, class_names, num_classes, source)
        load_weights_file(self.model, file, outputs if why is not None else frozenset())
        if why is not None:
            self._replace_classifier(num_classes)  # new convs, whatever the file held
            rank_zero_info(f"TorchvisionNet: new final classifier convs for {num_classes} classes: {why}")
        return why

    def _replace_classifier(self, num_classes: int) -> None:
        """New 1×1 output convs with ``num_classes`` channels in the classifier and aux classifier; the rest of
        both heads keeps its pretrained weights."""
        heads = [self.model.classifier, getattr(self.model, "aux_classifier", None)]
        for parent, name in (pair for head in heads if head is not None for pair in _output_convs(head)):
            old: nn.Conv2d = getattr(parent, name)
            setattr(parent, name, nn.Conv2d(old.in_channels, num_classes, 1))

    def _load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        """Load a torchvision ResNet / MobileNetV3 classifier's state dict into ``backbone``, which holds that
        net's stem and stages (a MobileNetV3's ``features``) without its classifier."""
        prefix = "features." if any(key.startswith("features.") for key in state) else ""
        kept = {name for name, _ in self.model.backbone.named_children()}
        ours = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        self.model.backbone.load_state_dict({k: v for k, v in ours.items() if k.split(".")[0] in kept})

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
