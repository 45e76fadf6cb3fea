"""``TransformersNet``: segmentation models of the Hugging Face ``transformers`` library behind the net contract.

Two families, both turned into per-class logits at the input size, so the loss, metrics, inference path and
finetuning callbacks treat them like any other net:

* semantic-segmentation models (SegFormer, UperNet, DPT, BEiT, ...): their B×K×h×w ``logits``
  (at 1/4 of the input for SegFormer), resized bilinearly to H×W as their image processors do;
* query-based universal/panoptic models (Mask2Former, MaskFormer, DETR panoptic, EoMT): Q queries each with a
  class distribution over C+1 labels (the last is "no object") and a mask. Their semantic post-processing
  (``post_process_semantic_segmentation``) scores class c at a pixel as Σ_q softmax(class_q)[c] ·
  sigmoid(mask_q); the net returns the log of that score (clamped at 1e-6), so softmax over classes gives the
  scores normalised per pixel and argmax is their semantic map. They train here with the loss of the config
  on those logits, not with their own bipartite-matching loss.

With ``class_mapping`` a model keeps its own label set and predicts the data's classes through a mapping
table (:mod:`lightning_seg.models.class_mapping`): a zero-shot baseline that ``test`` scores with no training.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_info
from torch import nn
from torch.nn import functional as F

from lightning_seg.errors import ConfigError
from lightning_seg.models.class_mapping import ClassMapping, classes_differ
from lightning_seg.models.weights import Normalization, from_hub, pretrained_wanted, processor_normalization

_LOCAL_COPY = (
    "download it where there is a network (model.save_pretrained(DIR), or `hf download NAME --local-dir DIR`) "
    "and set model.init_args.net.init_args.model: DIR"
)
# model_type → the attribute path of the pretrained feature extractor (BackboneFinetuning's ``backbone``)
_BACKBONES = {
    "segformer": "segformer",
    "upernet": "backbone",
    "dpt": "dpt",
    "beit": "beit",
    "data2vec-vision": "data2vec_vision",
    "mobilevit": "mobilevit",
    "mobilevitv2": "mobilevitv2",
    "mobilenet_v2": "mobilenet_v2",
    "mask2former": "model.pixel_level_module.encoder",
    "maskformer": "model.pixel_level_module.encoder",
    "detr": "detr.model.backbone",
}
_UNSUPPORTED = {"oneformer": "it needs a task text input per image"}
T = TypeVar("T")
_PROCESSOR_FILE = "preprocessor_config.json"
LOG_SCORE_FLOOR = 1e-6
"""Query-based scores are clamped here before the log: a pixel no query covers scores 0 for every class."""


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise ConfigError(
            "TransformersNet needs the transformers library: pip install 'lightning_seg[hf]'"
        ) from error
    return transformers


def _is_local(model: str) -> bool:
    return Path(model).expanduser().is_dir()


def _from_model(model: str, load: Callable[[], T], what: str) -> T:
    """``load()`` of ``model``'s files: straight from a local folder, else from the Hugging Face Hub, cache
    first (:func:`~lightning_seg.models.weights.from_hub`; ``what`` names the files for its error line)."""
    if model.startswith(("/", "./", "../", "~")) and not _is_local(model):
        raise ConfigError(f"model.init_args.net.init_args.model: no folder {model}")
    if _is_local(model):
        return load()
    return from_hub(load, f"{what} of transformers model {model!r}", _LOCAL_COPY)


def _load_config(model: str, revision: str | None) -> Any:
    transformers = _require_transformers()
    return _from_model(
        model, lambda: transformers.AutoConfig.from_pretrained(model, revision=revision), "the config"
    )


def _model_class(config: Any) -> tuple[type, bool]:
    """The transformers class for ``config`` and whether it is query-based (universal/panoptic)."""
    transformers = _require_transformers()
    from transformers.models.auto import modeling_auto as auto

    kind = config.model_type
    if kind in _UNSUPPORTED:
        raise ConfigError(f"TransformersNet: model_type {kind!r} is not supported: {_UNSUPPORTED[kind]}")
    for names, query_based in (
        (auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES, False),
        (auto.MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES, True),
    ):
        if kind in names:
            return getattr(transformers, names[kind]), query_based
    valid = sorted(
        {
            *auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES,
            *auto.MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES,
        }
        - set(_UNSUPPORTED)
    )
    raise ConfigError(
        f"TransformersNet: model_type {kind!r} is not a segmentation model; valid: {', '.join(valid)}"
    )


def _processor_settings(model: str, revision: str | None) -> dict[str, Any] | None:
    """A model's image-processor settings (its folder's or its Hub repository's), or None when it has none."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    if _is_local(model):
        path = Path(model).expanduser() / _PROCESSOR_FILE
        return json.loads(path.read_text()) if path.is_file() else None
    try:
        path = hf_hub_download(model, _PROCESSOR_FILE, revision=revision)
    except RemoteEntryNotFoundError:  # the repository answered: no such file
        return None
    return json.loads(Path(path).read_text())


def _processor_normalization(settings: dict[str, Any] | None, model: str) -> Normalization | None:
    """The data module's mean/std equivalent to an image processor's ``settings`` (its JSON): the processor
    class's own defaults fill what the file leaves out; ``rescale_factor`` converts to [0, 1] inputs; a
    processor that does not normalise gives mean 0, std 1 in its units."""
    if not settings:
        return None
    processor_class = getattr(_require_transformers(), str(settings.get("image_processor_type")), None)
    if processor_class is not None:
        try:  # resolved attributes, class defaults included (no download: from the settings alone)
            settings = {**vars(processor_class.from_dict(settings)), **settings}
        except Exception:  # a processor that needs more than its settings: the file alone
            pass
    return processor_normalization(settings, f"the image processor of {model}", "TransformersNet")


def _label_names(config: Any) -> list[str]:
    return [str(config.id2label[i]) for i in range(config.num_labels)]


class TransformersNet(nn.Module):
    """A ``transformers`` segmentation model returning B×num_classes×H×W logits at the input size.

    Args:
        num_classes: classes of the data (from the data module).
        model: a Hugging Face Hub name (``"nvidia/segformer-b0-finetuned-ade-512-512"``,
            ``"facebook/detr-resnet-50-panoptic"``, ``"facebook/mask2former-swin-tiny-coco-panoptic"``) or a
            local folder written by ``save_pretrained``; its weights are loaded (downloaded on first use).
        config: instead of ``model``, a transformers config as a dict with ``model_type`` (e.g.
            ``{"model_type": "segformer", "depths": [1, 1, 1, 1]}``): the architecture with random weights.
        class_mapping: keep the model's own label set and predict the data's classes through this mapping
            table (``"coco_to_voc"`` or a YAML path; see :mod:`lightning_seg.models.class_mapping`). Without
            it, a model whose labels are the data's classes (by name) keeps its head; any other gets a new
            head of ``num_classes`` outputs (the rest pretrained).
        class_names: the data's class names (given by the module).
        revision: the Hub revision (branch, tag or commit) of ``model``.
        size_divisor: the side the module pads inputs to a multiple of (32 suits the hierarchical encoders
            and ViTs of patch 16 behind DPT).

    Auxiliary heads of UperNet/DPT/BEiT are not built (``use_auxiliary_head=False``): transformers computes them
    only for its own loss, and untrained parameters would stop DDP. For the same reason the parameters the
    mask logits do not depend on (DETR's box regressor, a ViT's final norm under DPT) are frozen once built
    (``unused`` names them).

    Shapes: float32 B×3×H×W (normalised as the weights expect; see ``weights_normalization``) →
    ``{"mask": B×num_classes×H×W}`` float logits. ``backbone`` is the pretrained feature extractor.
    """

    def __init__(
        self,
        num_classes: int,
        model: str | None = None,
        config: dict[str, Any] | None = None,
        class_mapping: str | None = None,
        class_names: Sequence[str] | None = None,
        revision: str | None = None,
        size_divisor: int = 32,
    ) -> None:
        super().__init__()
        if (model is None) == (config is None):
            raise ConfigError("TransformersNet: set exactly one of model (a hub name or folder) and config")
        transformers = _require_transformers()
        if config is not None:
            settings = dict(config)
            model_type = settings.pop("model_type", None)
            if not model_type:
                raise ConfigError("TransformersNet: config needs a model_type (e.g. segformer, mask2former)")
            try:
                hf_config = transformers.AutoConfig.for_model(model_type, **settings)
            except (ValueError, TypeError) as error:
                raise ConfigError(f"TransformersNet: config: {str(error).splitlines()[0]}") from error
        else:
            hf_config = _load_config(model, revision)
        self.source = model or f"config {hf_config.model_type}"
        cls, self.query_based = _model_class(hf_config)
        categories = _label_names(hf_config)

        overrides: dict[str, Any] = {}
        if hasattr(hf_config, "use_auxiliary_head"):
            overrides["use_auxiliary_head"] = False
        source = f"the {len(categories)} labels of {self.source}"
        mismatch = (
            None
            if class_mapping is not None
            else classes_differ(categories, class_names, num_classes, source)
        )
        keeps_head = mismatch is None
        if not keeps_head:
            names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
            overrides["id2label"] = dict(enumerate(names))
            overrides["label2id"] = {name: i for i, name in enumerate(names)}
            overrides["num_labels"] = num_classes
        pretrained = model is not None and pretrained_wanted()
        self.model = self._build(cls, hf_config, model, revision, overrides, pretrained, not keeps_head)
        self.head_is_pretrained = pretrained and keeps_head
        if model is not None and not keeps_head:
            rank_zero_info(
                f"TransformersNet {model}: a new head of {num_classes} classes ({mismatch}; set class_mapping "
                "to keep the model's labels)"
            )

        self.mapping: ClassMapping | None = None
        if class_mapping is not None:
            if not class_names or len(class_names) != num_classes:
                raise ConfigError("TransformersNet: class_mapping needs the data's class_names")
            self.mapping = ClassMapping(
                categories, class_names, class_mapping, f"TransformersNet {self.source}"
            )
        self.size_divisor: int = size_divisor
        # DPT's semantic head reshapes ViT tokens to a square grid (transformers does not pass it the patch grid)
        self.square_inputs = hf_config.model_type == "dpt" and not getattr(hf_config, "is_hybrid", False)
        self.unused: list[str] | None = None

    def freeze_unused_parameters(self) -> list[str]:
        """Freeze the parameters the mask logits do not depend on, found once by one backward pass of a small
        input: DETR's box regressor, the ViT's final norm under DPT, Swin's final norm under Mask2Former, ...
        They could not learn here, and DDP (without ``find_unused_parameters``) stops on parameters without
        gradients. SegmentationModule calls it when ``fit`` sets up (inference needs none of it). Returns
        (and keeps in ``unused``) their names."""
        if self.unused is not None:
            return self.unused
        side = max(64, self.size_divisor)
        was_training = self.training
        self.eval()  # no BatchNorm statistics move
        try:
            # built under no_grad/inference_mode (a user's lightning_seg.load, say), the probe still needs autograd
            with torch.inference_mode(False), torch.enable_grad():
                self(torch.zeros(1, 3, side, side))["mask"].float().sum().backward()
        finally:
            self.train(was_training)
        unused = []
        for name, parameter in self.named_parameters():
            if parameter.requires_grad and parameter.grad is None:
                parameter.requires_grad_(False)
                unused.append(name)
            parameter.grad = None
        self.unused = unused
        return unused

    @staticmethod
    def _build(
        cls: type,
        hf_config: Any,
        model: str | None,
        revision: str | None,
        overrides: dict,
        pretrained: bool,
        new_head: bool,
    ) -> nn.Module:
        """The model: ``hf_config`` with ``overrides``, random (``pretrained`` False) or loaded. Only a
        ``new_head`` may differ in shape from the saved weights: any other mismatch is an error, not silently
        re-initialised weights in a model scored as pretrained."""
        for key, value in overrides.items():
            setattr(hf_config, key, value)
        if not pretrained:
            return cls(hf_config)  # random weights; a checkpoint's replace them when one follows
        return _from_model(
            model,
            lambda: cls.from_pretrained(
                model, config=hf_config, revision=revision, ignore_mismatched_sizes=new_head
            ),
            "the weights",
        )

    @staticmethod
    def weights_normalization(
        model: str | None = None, revision: str | None = None, **_: Any
    ) -> Normalization | None:
        """The mean/std of the model's image processor (its ``preprocessor_config.json``, converted to [0, 1]
        inputs from ``rescale_factor``); None for a random-weight ``config`` or a model without one."""
        if model is None:
            return None
        settings = _from_model(model, lambda: _processor_settings(model, revision), "the image processor")
        return _processor_normalization(settings, model)

    @staticmethod
    def pretrained_head_named(init_args: dict[str, Any]) -> bool:
        """Whether the config loads pretrained weights (their head is kept when the labels match the data's
        or a class mapping is given; ``head_is_pretrained`` tells once built)."""
        return init_args.get("model") is not None

    @property
    def backbone(self) -> nn.Module:
        """The pretrained feature extractor (SegFormer's encoder, UperNet's backbone, Mask2Former's pixel-level
        encoder, DETR's CNN, ...)."""
        path = _BACKBONES.get(self.model.config.model_type)
        if path is None:
            base = self.model.base_model
            if base is self.model:
                raise AttributeError(f"TransformersNet: no known backbone for {self.model.config.model_type}")
            return base
        module: nn.Module = self.model
        for part in path.split("."):
            module = getattr(module, part)
        return module

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = x.shape[-2:]
        if self.square_inputs and height != width:
            side = max(height, width)
            x = F.pad(x, (0, side - width, 0, side - height), mode="replicate")
        out = self.model(pixel_values=x)
        size = x.shape[-2:]
        if not self.query_based and self.mapping is None:
            logits = F.interpolate(out.logits, size=size, mode="bilinear", align_corners=False)
            return {"mask": logits[..., :height, :width]}
        # scores are sums of probabilities: float32 even under autocast, where einsum would run in bf16 (its
        # rounding moved the argmax of a few % of pixels); mapped at the model's resolution, before the
        # upsampling, since both are linear (K channels upsampled, not every category)
        with torch.autocast(x.device.type, enabled=False):
            if not self.query_based:
                probabilities = out.logits.float().softmax(dim=1)
                if self.mapping is not None:
                    probabilities = self.mapping(probabilities.movedim(1, -1)).movedim(-1, 1)
                scores = probabilities
            else:
                class_logits = getattr(out, "class_queries_logits", None)
                mask_logits = getattr(out, "masks_queries_logits", None)
                if class_logits is None:  # DETR's names
                    class_logits, mask_logits = out.logits, out.pred_masks
                # transformers' semantic post-processing: Σ_q softmax(class_q)[c] · sigmoid(mask_q)
                classes = class_logits.float().softmax(dim=-1)[..., :-1]  # B×Q×C, "no object" dropped
                if self.mapping is not None:
                    classes = self.mapping(classes)  # B×Q×K
                scores = torch.einsum("bqc,bqhw->bchw", classes, mask_logits.float().sigmoid())
            scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
            return {"mask": scores[..., :height, :width].clamp_min(LOG_SCORE_FLOOR).log()}

    ARCHITECTURE_ARGS = ("model", "revision", "config")
    """The init args that say which architecture is built: a checkpoint's record replaces them (below), and
    the CLI takes them from that record when it loads the checkpoint (:mod:`lightning_seg.cli.pretrained`)."""

    def record_init_args(self) -> dict[str, Any]:
        """What replaces this net's init args in a checkpoint's model record: the resolved architecture
        (``config``, its labels and overrides included) instead of ``model``, so a checkpoint rebuilds with no
        hub, cache or folder (:mod:`lightning_seg.checkpoints.record`)."""
        return {"model": None, "revision": None, "config": self.model.config.to_dict()}
