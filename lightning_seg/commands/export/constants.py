"""What ``export`` writes and the opsets it targets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from lightning_seg.errors import ConfigError

if TYPE_CHECKING:
    pass


Format = Literal["onnx", "torch_export"]
FORMATS: tuple[Format, ...] = ("onnx", "torch_export")
FILES: dict[str, str] = {"onnx": "model.onnx", "torch_export": "model.pt2"}
BUNDLE = "model.ckpt"
"""The checkpoint that stands alone (weights, model record, tuned thresholds), for ``lightning_seg.load``."""
EXPORT_FORMAT = "lightning_seg.export/1"

DEFAULT_OPSET = 20
"""ONNX opset of ``model.onnx``. torch's exporter (torch.export + onnxscript's torchlib) writes opset 18 and
up natively (below 18 it runs a version converter that may fail) and 20 is its default, so the graph is
emitted without conversion; onnxruntime implements opset 20 since 1.17 (early 2024) and in every release
since, the current one included, so the file also runs where the runtime is a few releases old. The ops
this graph uses (Conv, Resize, Gather, Where, ...) gained nothing after opset 20 that it needs.
``--opset`` overrides it (torch's exporter accepts up to 23)."""

MIN_OPSET = 18
"""Below it torch's exporter converts the graph down and keeps 18 where the conversion fails."""

ONNX_INSTALL = "pip install 'lightning_seg[onnx]'"
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")


class ExportParityError(ConfigError):
    """An exported file disagrees with the checkpoint on more pixels than ``--min_agreement`` allows (a
    ConfigError: the command line prints it as one line and exits with code 2)."""
