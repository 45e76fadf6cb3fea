"""``ImageClassifier``: an image-level classifier (any timm or torchvision classification model) for the
image labels alone, trained by :class:`~lightning_seg.task.classifier.ImageClassifierModule`.

The VOC Kaggle notebooks trained one (a CNN from scratch, EfficientNet-B3, a ViT) to fill the competition's
classification columns and to correct a segmentation map with its labels; here its ``predict`` writes
``labels.csv``, which ``submit --labels_from`` and ``LabelConsistency(labels: ...)`` read.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from lightning_seg.errors import ConfigError
from lightning_seg.models.torchvision import load_torchvision_weights
from lightning_seg.models.weight_files import WeightsFile, load_weights_file, weights_source
from lightning_seg.models.weights import (
    Normalization,
    from_hub,
    pretrained_wanted,
    timm_normalization,
    torchvision_normalization,
)


def _torchvision_features(model: nn.Module, name: str) -> int:
    """Replace the last ``nn.Linear`` of a torchvision classifier (its head) by the identity; returns its
    input width (the pooled features' length)."""
    last = None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = module_name
    if last is None:
        raise ConfigError(f"ImageClassifier: torchvision model {name!r} has no linear head to replace")
    parent_name, _, child = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    features = int(getattr(parent, child).in_features)
    setattr(parent, child, nn.Identity())
    return features


class ImageClassifier(nn.Module):
    """A classification backbone with a new linear head of ``num_labels`` logits.

    Args:
        num_labels: L, the image labels (set by the module from the data's labels).
        model_name: the timm model name (``resnet18``, ``efficientnet_b3``, ``vit_tiny_patch16_224``) or the
            torchvision one (``resnet34``, ``efficientnet_b0``).
        library: "timm" or "torchvision".
        weights: None (random init, the default; nothing is downloaded); "imagenet" (timm: its default
            pretrained tag; torchvision: ``DEFAULT``) or a torchvision weight name (``IMAGENET1K_V1``),
            downloaded on first use; or a local file (a path, or ``{file: PATH, keys: names | order}``),
            loaded into the backbone by name, its classifier head left out
            (:mod:`lightning_seg.models.weight_files`).
        drop_rate: dropout before the head.
        in_channels: input image channels (timm only).

    Shapes: float32 B×in_channels×H×W → float32 B×L image-label logits, returned as ``{"label": ...}``.
    ``backbone`` is the model without its head (what BackboneFinetuning freezes).
    """

    size_divisor: int = 1

    def __init__(
        self,
        num_labels: int,
        model_name: str = "resnet18",
        library: Literal["timm", "torchvision"] = "timm",
        weights: str | WeightsFile | None = None,
        drop_rate: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if num_labels < 1:
            raise ConfigError(f"ImageClassifier: needs at least one label, got {num_labels}")
        file = weights_source(weights, "weights", "ImageClassifier")
        library_weights = weights if file is None else None
        download = library_weights is not None and pretrained_wanted()
        hint = "or pass a local file: weights: ~/weights/<model>.pth"
        if library == "timm":
            import timm

            def build(pretrained: bool) -> nn.Module:
                return timm.create_model(
                    model_name, pretrained=pretrained, num_classes=0, in_chans=in_channels
                )

            if library_weights not in (None, "imagenet"):
                raise ConfigError(
                    f"ImageClassifier: timm weights are 'imagenet' or a local file, got {weights!r}"
                )
            self.features = (
                from_hub(lambda: build(True), f"timm {model_name} weights", hint)
                if download
                else build(False)
            )
            width = int(self.features.num_features)
        elif library == "torchvision":
            import torchvision

            if in_channels != 3:
                raise ConfigError("ImageClassifier: torchvision models take 3 channels; use library: timm")
            entry = self._torchvision_weights(model_name, library_weights)
            self.features = torchvision.models.get_model(model_name, weights=None)
            if download:  # torch.hub's cache, else downloaded, refused in one line offline
                self.features.load_state_dict(load_torchvision_weights(entry, "ImageClassifier weights"))
            width = _torchvision_features(self.features, model_name)
        else:
            raise ConfigError(f"ImageClassifier: library is 'timm' or 'torchvision', got {library!r}")
        if file is not None and pretrained_wanted():
            load_weights_file(self.features, file)
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(width, num_labels))

    @staticmethod
    def _torchvision_weights(model_name: str, weights: str | None) -> Any:
        if weights is None:
            return None
        import torchvision

        enum = torchvision.models.get_model_weights(model_name)
        name = "DEFAULT" if weights == "imagenet" else weights
        try:
            return enum[name]
        except KeyError:
            known = ", ".join(member.name for member in enum)
            raise ConfigError(
                f"ImageClassifier: torchvision {model_name} has no weights {weights!r}; known: {known}"
            ) from None

    @staticmethod
    def weights_normalization(
        weights: str | WeightsFile | None = None,
        model_name: str = "resnet18",
        library: str = "timm",
        **_: Any,
    ) -> Normalization | None:
        """The mean/std the weights expect (no download); None without weights."""
        file = weights_source(weights, "weights", "ImageClassifier")
        if file is not None:
            return file.normalization()
        if weights is None:
            return None
        if library == "torchvision":
            return torchvision_normalization(ImageClassifier._torchvision_weights(model_name, str(weights)))
        return timm_normalization(model_name) or Normalization.unknown(f"timm {model_name}")

    @property
    def backbone(self) -> nn.Module:
        """The model without its head: the part pretrained weights apply to."""
        return self.features

    @property
    def label_head(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"label": self.head(self.features(x))}
