"""Pretrained weights: what input they expect, and fetching them only when a config names them.

Each net class that can load pretrained weights says, from its init arguments alone (nothing built, only small
settings files read), how its weights want the image normalised::

    @staticmethod
    def weights_normalization(**init_args) -> Normalization | None: ...

The CLI reads it before building anything and fills ``data.mean``/``data.std`` with it where the config left
them null (:func:`lightning_seg.cli.pretrained.link_normalization`). Sources: torchvision's weight
enums (their ``transforms()``), SMP's per-weights ``config.json`` on the Hugging Face Hub, timm's pretrained
config, and a transformers image processor's ``preprocessor_config.json``.

Weights from a local file, and those that install from the package index, are read by
:mod:`lightning_seg.models.weight_files`; their normalisation comes from a companion config, or is
``Normalization.unknown`` and then asked of the user.

Downloads go through :func:`from_hub`: the local cache first, then, only when the hub answers within seconds,
the network; otherwise one line names the weights and how to use a local copy (the hub's client would retry
for about half a minute first, with a screenful of warnings).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from lightning_seg.errors import ConfigError, truncate
from lightning_seg.utils.network import reachable

T = TypeVar("T")


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``mean``/``std`` in the data module's units (images scaled to [0, 1]) and where they came
    from (``source``, e.g. ``"torchvision DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1"``)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    @classmethod
    def of(
        cls, mean: Sequence[float], std: Sequence[float], source: str, input_max: float = 1.0
    ) -> Normalization:
        """From ``mean``/``std`` stated for inputs in [0, ``input_max``] (255 for weights that take raw
        pixels): ``(x·input_max − m) / s`` equals ``(x − m/input_max) / (s/input_max)`` for x in [0, 1]."""
        return cls(
            tuple(round(float(m) / input_max, 6) for m in mean),
            tuple(round(float(s) / input_max, 6) for s in std),
            source,
        )

    @classmethod
    def unknown(cls, source: str) -> Normalization:
        """Weights whose training statistics nothing states (a file with no companion config): the data's
        ``mean``/``std`` must be given, never assumed (``known`` is False)."""
        return cls((), (), source)

    @property
    def known(self) -> bool:
        """Whether the weights' statistics are stated (False for :meth:`unknown`)."""
        return bool(self.mean)

    def differs(self, mean: Sequence[float], std: Sequence[float], tolerance: float = 1e-3) -> bool:
        """Whether ``mean``/``std`` (one value each per channel) differ from these by more than ``tolerance``."""
        ours = (*self.mean, *self.std)
        theirs = (*(float(m) for m in mean), *(float(s) for s in std))
        return len(ours) != len(theirs) or any(
            abs(a - b) > tolerance for a, b in zip(ours, theirs, strict=True)
        )


def hub_endpoint() -> str:
    """The Hugging Face Hub the client talks to (``HF_ENDPOINT``, else huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def from_hub(load: Callable[[], T], what: str, local_hint: str) -> T:
    """``load()`` from the local Hugging Face cache, else from the Hub when it can be reached.

    The first call runs with the hub client in offline mode (``huggingface_hub.constants.HF_HUB_OFFLINE``, which
    huggingface_hub, transformers, timm and SMP all consult), so cached files load with no network at all.

    Args:
        load: the loading call (``hf_hub_download``, ``from_pretrained``, ``smp.create_model``, ...).
        what: the weights, for the error line (e.g. ``"SMP encoder_weights 'imagenet' of resnet34"``).
        local_hint: how to use a local copy instead (e.g. ``"set model: <folder saved by save_pretrained>"``).

    Raises ConfigError in one line when the files are neither cached nor downloadable (no network,
    ``HF_HUB_OFFLINE=1``, an unknown repository).

    Cache first means a branch name (``revision: main``) is not refreshed once cached: pin a commit, or clear
    the cache, to get newer files. The offline switch is process-wide while ``load`` runs (not thread-safe).
    """
    from huggingface_hub import constants

    offline_before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        return load()
    except OSError as cached_error:  # huggingface_hub and transformers report a file not cached as OSError
        if offline_before:
            raise fetch_error(what, "HF_HUB_OFFLINE is set", local_hint) from cached_error
    finally:
        constants.HF_HUB_OFFLINE = offline_before
    endpoint = hub_endpoint()
    if not reachable(endpoint):
        raise fetch_error(what, f"{endpoint} cannot be reached", local_hint)
    try:
        return load()
    except OSError as error:
        raise fetch_error(what, str(error).split("\n")[0], local_hint) from error


def fetch_error(what: str, why: str, local_hint: str) -> ConfigError:
    """The one line for weights that could not be fetched: which, why, and how to use a local copy."""
    return ConfigError(truncate(f"could not fetch {what}: {why}; {local_hint}", 300))


def hub_json(repo_id: str, filename: str, revision: str | None, what: str, local_hint: str) -> dict[str, Any]:
    """A JSON file of a Hub repository (cached, or downloaded when the hub can be reached), parsed."""
    import json

    from huggingface_hub import hf_hub_download

    path = from_hub(lambda: hf_hub_download(repo_id, filename, revision=revision), what, local_hint)
    with open(path) as file:
        return json.load(file)


def processor_normalization(settings: dict[str, Any], where: str, who: str) -> Normalization | None:
    """The data module's mean/std equivalent to a transformers image processor's settings (its JSON, with
    the class defaults filled in where known): ``rescale_factor`` converts to [0, 1] inputs; a processor
    that does not normalise gives mean 0, std 1 in its units; None when it states no mean/std.

    Raises ConfigError in one line for BGR input (``do_flip_channel_order``) and for values that are not in
    [0, 1] units after the conversion. ``where`` names the settings, ``who`` the net, for messages."""
    if settings.get("do_flip_channel_order"):
        raise ConfigError(f"{who}: {where} feeds the model BGR images; not supported (RGB only)")
    scale = (
        255.0 * float(settings.get("rescale_factor") or 1 / 255)
        if settings.get("do_rescale", True)
        else 255.0
    )
    if settings.get("do_normalize") is False:
        return Normalization.of((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), where, input_max=scale)
    mean, std = settings.get("image_mean"), settings.get("image_std")
    if mean is None or std is None:
        return None
    return checked_normalization(Normalization.of(mean, std, where, input_max=scale), who)


def checked_normalization(found: Normalization, who: str) -> Normalization:
    """``found``, refused in one line when its values cannot be [0, 1]-unit statistics (a mean above 1: values
    stated for 0..255 inputs without saying so; a std that is not positive)."""
    if max(found.mean) > 1 or min(found.std) <= 0:
        raise ConfigError(
            truncate(
                f"{who}: {found.source} gives mean {list(found.mean)}, std {list(found.std)}: not statistics "
                "of [0, 1] inputs; state input_range [0, 255] beside them, or set data.mean and data.std",
                300,
            )
        )
    return found


def torchvision_normalization(weights: Any) -> Normalization:
    """The normalisation of a torchvision weights entry (``WeightsEnum`` member): its ``transforms()`` preset's
    mean and std (no download)."""
    preset = weights.transforms()
    return Normalization.of(preset.mean, preset.std, f"torchvision {type(weights).__name__}.{weights.name}")


def timm_normalization(model_name: str) -> Normalization | None:
    """The normalisation of timm model ``model_name`` (``"resnet18"``, ``"vit_tiny_patch16_224.augreg_in21k"``)
    from its pretrained config (in timm's code; no download); None when timm has no pretrained weights for it."""
    import timm

    if not timm.models.is_model_pretrained(model_name):
        return None
    config = timm.models.get_pretrained_cfg(model_name)
    if config is None or config.mean is None or config.std is None:
        return None
    return Normalization.of(config.mean, config.std, f"timm {model_name}")


_CHECKPOINT_FOLLOWS = False


@contextmanager
def checkpoint_follows() -> Iterator[None]:
    """Nets built inside skip their pretrained weights: a checkpoint's full state dict replaces them next
    (``--ckpt_path``, :func:`lightning_seg.load`), so downloading them would cost time and fail offline."""
    global _CHECKPOINT_FOLLOWS
    before, _CHECKPOINT_FOLLOWS = _CHECKPOINT_FOLLOWS, True
    try:
        yield
    finally:
        _CHECKPOINT_FOLLOWS = before


def pretrained_wanted() -> bool:
    """Whether a net being built should load the pretrained weights its config names (False inside
    :func:`checkpoint_follows`)."""
    return not _CHECKPOINT_FOLLOWS
