"""``model.json``: what a deployment needs to feed the exported files and read their outputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from lightning_seg.commands.export.graph import DeployableNet
    from lightning_seg.task.module import SegmentationModule

from lightning_seg.commands.export.constants import BUNDLE, EXPORT_FORMAT, FILES, ONNX_MODULES


# ---------------------------------------------------------------------------------------- model.json
def describe_export(
    model: SegmentationModule,
    net: DeployableNet,
    formats: Sequence[str],
    opset: int,
    ckpt_path: str | None,
    datamodule: Any,
    channels: int,
) -> dict[str, Any]:
    """``model.json`` without the parity numbers: what a deployment needs to feed and read the files
    (``channels``: K of the logits, 1 for a one-channel sigmoid head)."""
    one_channel = channels == 1
    outputs: list[dict[str, Any]] = [
        {
            "name": "logits",
            "dtype": "float32",
            "shape": ["batch", channels, "height", "width"],
            "meaning": (
                "per-pixel logit of the foreground (sigmoid → probability)"
                if one_channel
                else "per-pixel class logits (softmax over axis 1 → probabilities)"
            ),
        }
    ]
    if net.has_label_head:
        outputs.append(
            {
                "name": "label_logits",
                "dtype": "float32",
                "shape": ["batch", len(model.label_names)],
                "meaning": (
                    "image-level label logits ("
                    + (
                        "softmax: one label per image"
                        if model.label_mode == "single"
                        else "sigmoid per label"
                    )
                    + ")"
                ),
            }
        )
    postprocess = model.postprocess.describe()
    not_in_graph = [
        "sliding window and flip/scale TTA (this model's inference: "
        + ("none, the whole image once" if model.inference.is_plain else model.inference.describe())
        + ")",
        "the post-processing chain: CRF, class thresholds, label consistency, small components (this model's: "
        + (", ".join(p for p in postprocess if not p.startswith("temperature")) or "none")
        + ")",
        "the decision: "
        + (
            f"sigmoid(logits) > binary_threshold {model.binary_threshold}"
            if one_channel
            else "argmax over axis 1"
        ),
    ]
    if net.has_label_head:
        not_in_graph.append("the image-level decision (softmax argmax or per-label thresholds)")
    augmentations = getattr(datamodule, "eval_augmentations", None)
    if augmentations:
        not_in_graph.append(
            "the data's eval_augmentations (" + ", ".join(type(a).__name__ for a in augmentations) + ")"
        )
    loading = {
        key: list(value) if isinstance(value, tuple | list) else value
        for key in ("size", "image_value_range")
        if (value := getattr(datamodule, key, None)) is not None
    }
    not_in_graph.append(
        "the data's loading (an image resized to the training scale on load goes in at that scale"
        + (f"; data: {loading}" if loading else "")
        + ") and predict's resizing of probabilities back to each image's original size"
    )
    in_graph = (
        {"temperature": [round(float(t), 6) for t in net.temperature.values.tolist()]}
        if net.temperature is not None and net.temperature.values is not None
        else {}
    )
    record: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        # the chain's temperature is divided into the logits inside the graph (TemperatureScaling.on_logits)
        "in_graph": in_graph,
        "checkpoint": str(ckpt_path) if ckpt_path else None,
        "files": {
            **{name: FILES[name] for name in formats},
            **({"checkpoint": BUNDLE} if ckpt_path else {}),
        },
        "input": {
            "name": "image",
            "dtype": "uint8",
            "layout": "NCHW",
            "channels": "RGB",
            "shape": ["batch", 3, "height", "width"],
            "range": [0, 255],
            "sizes": "any height and width; the graph pads to the net's size_divisor and crops back "
            "(model.pt2 checks its input at run time and may refuse images of a few pixels)",
        },
        "outputs": outputs,
        "num_classes": model.num_classes,
        "class_names": list(model.class_names),
        "ignore_index": model.ignore_index,
        "normalization": {
            "mean": list(model.mean),
            "std": list(model.std),
            "folded": True,
            "in_graph": "(image / 255 - mean) / std, per channel; feed raw uint8 RGB",
        },
        "size_divisor": net.divisor,
        "decision": (
            {"rule": "sigmoid(logits) > binary_threshold", "binary_threshold": model.binary_threshold}
            if one_channel
            else {"rule": "argmax over the class axis"}
        ),
        "graph": "the plain forward pass of the whole image once: / 255, normalisation, padding to "
        "size_divisor, the net, crop back to the input size",
        "model_inference": model.inference.describe(),
        "model_postprocess": postprocess,
        "not_in_graph": not_in_graph,
        "opset": opset if "onnx" in formats else None,
        "versions": _versions(formats),
    }
    if net.has_label_head:
        tuned = model.tuned_label_thresholds()
        label_thresholds = tuned if tuned is not None else model.label_task.thresholds
        record["labels"] = {
            "names": list(model.label_names),
            "mode": model.label_mode,
            "rule": "argmax of softmax(label_logits)"
            if model.label_mode == "single"
            else "sigmoid(label_logits) >= threshold, per label",
            "thresholds": [round(float(t), 6) for t in label_thresholds.tolist()]
            if model.label_mode == "multi"
            else None,
            "thresholds_tuned": tuned is not None,
        }
    thresholds = model.postprocess.thresholds
    if thresholds is not None and thresholds.thresholds is not None:
        record["class_thresholds"] = {
            "rule": thresholds.rule,
            "fallback": thresholds.fallback,
            "thresholds": [None if t != t else round(float(t), 6) for t in thresholds.thresholds.tolist()],
            "source": str(thresholds.source) if thresholds.source is not None else None,
            "applied_to": "the probabilities softmax(logits) ([1 - p, p], p = sigmoid(logits), for a "
            "one-channel head), outside the graph (rule: lightning_seg.postprocess.thresholds)",
        }
    return record


def _versions(formats: Sequence[str]) -> dict[str, str | None]:
    import importlib.metadata

    versions: dict[str, str | None] = {"torch": torch.__version__}
    names = ("lightning_seg", *(ONNX_MODULES if "onnx" in formats else ()))
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
