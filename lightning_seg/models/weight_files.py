"""Pretrained weights from a local file, for every net that takes pretrained weights.

A net's weights argument (``SMPNet``/``ResNetUNet`` ``encoder_weights``, ``TorchvisionNet``
``weights``/``weights_backbone``) takes, besides a library's weight name:

* a path: ``~/weights/resnet50.pth`` (a string ending in ``.pth``, ``.pt``, ``.bin``, ``.safetensors``,
  ``.ckpt`` or ``.tar``, holding a ``/``, or naming a file that exists); its tensors load by name;
* a mapping ``{file: PATH, keys: names | order}``: ``keys: order`` is the opt-in for a port whose names
  differ (from TensorFlow, from another library), paired by order and shape (see
  :mod:`lightning_seg.models.key_matching`);
* the name of weights that install from the package index (:mod:`lightning_seg.models.packaged_weights`).

Files are read with ``torch.load(weights_only=True)`` or safetensors, never by unpickling arbitrary objects.
A state dict may be nested (under ``state_dict``, ``model``, ``module``, ``teacher``, ...) and its names
prefixed (``module.``, ``backbone.``, ...). The normalisation comes from the file's companion config when it
has one (:func:`companion_normalization`); otherwise the CLI asks for ``data.mean``/``data.std`` rather than
assume ImageNet's. Once trained, a checkpoint holds the weights: the file is needed by ``fit`` only.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Required, TypedDict

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_info
from torch import nn

from lightning_seg.errors import ConfigError, short_path, truncate
from lightning_seg.models.key_matching import MESSAGE, KeyMapping, KeyMatch, match_keys
from lightning_seg.models.packaged_weights import PACKAGED_WEIGHTS, PackagedWeights
from lightning_seg.models.weights import Normalization, checked_normalization, processor_normalization

WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar")
NESTED_KEYS = (
    "state_dict",
    "state_dict_ema",
    "model",
    "model_ema",
    "model_state_dict",
    "module",
    "teacher",
    "student",
    "net",
    "params",
)
"""Keys a training script nests a state dict under (Lightning, torchvision's references, DINO, timm's EMA);
a file with two of them is refused until the user saves the one meant."""
COMPANION_FILES = ("{stem}.json", "config.json", "preprocessor_config.json")
"""Files beside a weights file that may describe it, first found wins: a sidecar of the same stem, then the
Hugging Face Hub layouts (timm's and SMP's ``config.json``, transformers' ``preprocessor_config.json``)."""
CLASS_NAME_KEYS = ("class_names", "classes", "categories")


class WeightsFile(TypedDict, total=False):
    """A weights file as a mapping in YAML: ``{file: PATH, keys: names | order}`` (``keys`` default names)."""

    file: Required[str]
    keys: Literal["names", "order"]


@dataclass(frozen=True)
class WeightsSource:
    """A weights file a config names: where it is and how its keys map, resolved without reading it.

    ``packaged`` is set for weights installed from the package index (their path is looked up on use).
    """

    given: str
    keys: KeyMapping
    option: str
    packaged: PackagedWeights | None = None

    @property
    def label(self) -> str:
        """The file as messages name it: ``"encoder_weights file ~/w.pth"``."""
        if self.packaged is not None:
            return f"{self.option} {self.packaged.distribution!r}"
        return f"{self.option} file {short_path(self.given)}"

    def path(self) -> Path:
        """The file on disk; raises ConfigError in one line when it is not there."""
        if self.packaged is not None:
            return self.packaged.path(self.option)
        path = Path(self.given).expanduser()
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise ConfigError(f"{self.label}: {what} (paths are relative to the working directory)")
        return path

    def normalization(self) -> Normalization:
        """What the weights expect: the package entry's statistics, the companion config's, or unknown."""
        if self.packaged is not None:
            entry = self.packaged
            return Normalization(entry.mean, entry.std, f"{self.option} {entry.distribution!r}")
        found = companion_normalization(self.path())
        return found if found is not None else Normalization.unknown(self.label)


def weights_source(
    value: str | Mapping[str, Any] | None,
    option: str,
    who: str | None = None,
    encoder_name: str | None = None,
) -> WeightsSource | None:
    """The weights file ``value`` names, or None when it names a library's weights (``"imagenet"``,
    ``"IMAGENET1K_V1"``) or none. Reads nothing (a checkpoint that follows makes the file unnecessary).

    Args:
        value: the config's value: a path, a ``{file, keys}`` mapping, a packaged weights name, a weight name.
        option: the argument, for messages (``"encoder_weights"``).
        who: the net, for messages (``"SMPNet"``); given, packaged weights are checked against the net.
        encoder_name: the net's encoder choice (SMPNet's ``encoder_name``; None for a net without one).
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"file", "keys"})
        keys = value.get("keys", "names")
        if unknown or "file" not in value or keys not in ("names", "order"):
            raise ConfigError(f"{option}: a weights file mapping is {{file: PATH, keys: names | order}}")
        return WeightsSource(str(value["file"]), keys, option)
    text = str(value)
    if text.lstrip().startswith("{"):
        raise ConfigError(
            f"{option}: {text!r} is not a weights file mapping: {{file: PATH, keys: names | order}}"
        )
    if text in PACKAGED_WEIGHTS:
        entry = PACKAGED_WEIGHTS[text]
        if who is not None:
            entry.check_encoder(encoder_name, f"{who}: {option}")
        return WeightsSource(text, entry.keys, option, entry)
    if (
        text.lower().endswith(WEIGHT_FILE_SUFFIXES)
        or any(sep in text for sep in "/\\")
        or text.startswith("~")
        or Path(text).is_file()
    ):
        return WeightsSource(text, "names", option)
    return None


def read_state_dict(path: Path, label: str) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` of a weights file, unnested.

    ``.safetensors`` through safetensors; anything else through ``torch.load(weights_only=True)``, so a file
    that pickles Python objects is refused rather than executed. Raises ConfigError in one line for an
    unreadable file, one with no tensors, or one that nests several state dicts (``teacher`` and ``student``,
    ``state_dict`` and ``state_dict_ema``): which one is meant is the user's call.
    """
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's text runs to paragraphs (and advises weights_only=False): only the objects it met
        found = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(error))))
        objects = f" ({', '.join(found[:3])})" if found else ""
        raise ConfigError(
            truncate(
                f"{label}: pickles Python objects{objects}, which a weights-only load refuses; save its tensors "
                "alone: torch.save(model.state_dict(), 'weights.pth')",
                MESSAGE,
            )
        ) from error
    except Exception as error:  # a truncated zip, safetensors' header errors, a file of another format
        first = str(error).strip().split("\n")[0]
        raise ConfigError(
            truncate(f"{label}: cannot be read as weights ({type(error).__name__}: {first})", MESSAGE)
        ) from error
    return _unnest(content, label)


def _tensors(content: Any) -> bool:
    return (
        isinstance(content, Mapping)
        and bool(content)
        and all(isinstance(value, torch.Tensor) for value in content.values())
    )


def _unnest(content: Any, label: str) -> dict[str, torch.Tensor]:
    """The state dict inside ``content``: itself when every value is a tensor, else the one nested under a
    known key (recursively)."""
    if _tensors(content):
        return dict(content)
    if not isinstance(content, Mapping):
        raise ConfigError(f"{label}: holds a {type(content).__name__}, not a state dict of tensors")
    nested = {key: content[key] for key in NESTED_KEYS if isinstance(content.get(key), Mapping)}
    if len(nested) > 1:
        raise ConfigError(
            f"{label}: holds several state dicts ({', '.join(nested)}): save the one to load alone, e.g. "
            f"torch.save(checkpoint[{next(iter(nested))!r}], 'weights.pth')"
        )
    if not nested:
        keys = ", ".join(sorted(map(str, content))[:8])
        raise ConfigError(truncate(f"{label}: no state dict of tensors in it (its keys: {keys})", MESSAGE))
    return _unnest(next(iter(nested.values())), label)


def _companions(path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The companion configs beside ``path`` (:data:`COMPANION_FILES`), parsed, in order."""
    for pattern in COMPANION_FILES:
        candidate = path.with_name(pattern.format(stem=path.stem))
        if candidate == path or not candidate.is_file():
            continue
        try:
            config = json.loads(candidate.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(
                truncate(f"{candidate}: not a readable JSON file ({error})", MESSAGE)
            ) from error
        if isinstance(config, dict):
            yield candidate, config


def companion_normalization(path: Path) -> Normalization | None:
    """The normalisation a companion config beside ``path`` states (:data:`COMPANION_FILES`), or None.

    Understands ``mean``/``std`` at the top (SMP's ``input_range`` converted, its ``input_space: BGR``
    refused), timm's ``pretrained_cfg.mean``/``std`` and transformers' image processor settings
    (``image_mean``/``image_std`` after ``rescale_factor``; BGR refused). A companion that states none of
    them is passed over; values that cannot be [0, 1]-unit statistics are refused in one line.
    """
    for candidate, config in _companions(path):
        source = f"the companion config {short_path(candidate)}"
        for block in (config, config.get("pretrained_cfg")):
            if isinstance(block, dict) and block.get("mean") is not None and block.get("std") is not None:
                if str(block.get("input_space", "RGB")).upper() != "RGB":
                    raise ConfigError(f"{source}: the weights expect {block['input_space']} input; RGB only")
                input_max = float(list(block.get("input_range") or [0, 1])[1])
                found = Normalization.of(block["mean"], block["std"], source, input_max)
                return checked_normalization(found, "weights file")
        found = processor_normalization(config, source, "weights file")
        if found is not None:
            return found
    return None


def companion_class_names(path: Path) -> list[str] | None:
    """The class names a companion config beside ``path`` lists (``class_names``/``classes``/``categories``,
    or transformers' ``id2label`` in id order), or None."""
    for _, config in _companions(path):
        for key in CLASS_NAME_KEYS:
            if isinstance(config.get(key), list):
                return [str(name) for name in config[key]]
        labels = config.get("id2label")
        if isinstance(labels, dict):
            return [str(labels[k]) for k in sorted(labels, key=int)]
    return None


def load_weights_file(
    target: nn.Module,
    source: WeightsSource,
    replaceable: frozenset[str] = frozenset(),
    aliases: Mapping[str, str] | None = None,
) -> KeyMatch:
    """Read ``source`` and load it into ``target`` (an encoder, a backbone, a whole net).

    File tensors no net tensor takes, and net tensors the file does not fill, are said in one line; a net
    left mostly random, a shape that differs, and a port by order that does not fit are refused in one line
    (:func:`lightning_seg.models.key_matching.match_keys`).

    Args:
        target: the module the weights are for.
        source: the file.
        replaceable: ``target`` keys whose shape may differ from the file's (they stay as built).
        aliases: ``target`` key → the name the library that made the module uses for it, where the two
            differ (timm's feature wrapper renames ``stem.0`` to ``stem_0``); files are matched on those.

    Returns the match, in the aliased names.
    """
    label = source.label
    path = source.path()
    ordered = path.suffix.lower() != ".safetensors"  # safetensors lists tensors by dtype and name
    if source.keys == "order" and not ordered:
        raise ConfigError(
            f"{label}: keys: order needs the file's tensors in module order; safetensors sorts them by name: "
            "use the .pth the port was made as"
        )
    state = read_state_dict(path, label)
    aliases = dict(aliases or {})
    current = target.state_dict()
    own_names = {aliases.get(key, key): key for key in current}
    target_state = {name: current[key] for name, key in own_names.items()}
    match = match_keys(
        state, target_state, source.keys, label, frozenset(aliases.get(k, k) for k in replaceable), ordered
    )
    target.load_state_dict(
        {own_names[mine]: state[theirs] for mine, theirs in match.pairs.items()}, strict=False
    )
    stripped = f" (prefix {match.prefix!r} stripped)" if match.prefix else ""
    unused = (
        f"; {len(match.unexpected)} in the file unused: {_few(match.unexpected)}" if match.unexpected else ""
    )
    missing = (
        f"; {len(match.missing)} of the net's left as built: {_few(match.missing)}" if match.missing else ""
    )
    loaded = sum(1 for key in match.pairs if not key.endswith("num_batches_tracked"))
    rank_zero_info(
        truncate(f"{label}: loaded {loaded} tensors by {source.keys}{stripped}{missing}{unused}", MESSAGE)
    )
    return match


def _few(keys: list[str], shown: int = 3) -> str:
    return ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")
