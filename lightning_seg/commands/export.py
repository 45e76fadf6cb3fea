"""``export``: the trained net as ONNX and ``torch.export`` files that take uint8 RGB, checked for parity.

``python -m lightning_seg export --config X.yaml --ckpt_path <checkpoint>`` writes into the command's record
folder ``<run>/export/<date-time>/``:

* ``model.onnx``: ONNX (opset :data:`DEFAULT_OPSET` unless ``--opset``), dynamic batch, height and width;
* ``model.pt2``: the same graph as a ``torch.export`` ExportedProgram (``torch.export.load``);
* ``model.json``: the contract: input, outputs, classes, what the graph holds and what it leaves out, the
  versions and the parity numbers.

The graph (:class:`DeployableNet`) takes uint8 B×3×H×W RGB of any size and holds the whole plain forward
pass: ``/ 255``, the normalisation, the padding to the net's ``size_divisor`` and the crop back, the net.
It returns float32 logits B×K×H×W at the input size (and B×L ``label_logits`` for a net with an
image-level head). The sliding window, TTA and the post-processing chain (CRF, thresholds, ...) are not
in it; ``model.json`` names them.

After writing, each file is run on images of the data (the predict split, else test, uint8 as the data
loader gives them, plus the first batch cropped to a size that is not a multiple of ``size_divisor``), and
compared with the checkpoint's own forward pass on the same images as the data module feeds them
(``prepare_batch``). One line per format gives the largest absolute logit difference and the share of
pixels whose class agrees; below ``--min_agreement`` the command fails with one line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from lightning_seg.checkpoints.load import load_weights, write_bundle
from lightning_seg.checkpoints.read import read_checkpoint
from lightning_seg.errors import ConfigError, short_path
from lightning_seg.utils.atomic import atomic_write

if TYPE_CHECKING:
    import lightning as L

    from lightning_seg.task.module import SegmentationModule

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


# ------------------------------------------------------------------------------------------- the graph
class DeployableNet(nn.Module):
    """The model's plain forward pass for deployment: uint8 RGB in, float32 logits out.

    Folds in what the data module does to a batch (``/ 255`` and the normalisation with the model's
    ``mean``/``std``, the same operations in the same order) and what :meth:`SegmentationModule.forward`
    does around the net (the padding to ``size_divisor`` and the crop back to the input size).

    The padding is done here, before ``forward`` is called, as an index gather rather than ``F.pad``: the
    padded side is then ``d * ceil(H / d)`` by construction, which ``torch.export`` can reason about for
    every H (with ``F.pad`` it would have to specialise H to multiples of ``d`` or to the example's case);
    ``forward``'s own padding then pads nothing. It reproduces
    :func:`~lightning_seg.models.outputs.pad_to_multiple` exactly: reflection at the bottom/right, or
    replication where the image is too small for a reflection (both chosen inside the graph). The crop
    back is a gather too (a slice would need a proof that H ≤ the padded side).

    Args:
        model: the segmentation module (eval mode; its net is run uncompiled).

    Shapes: uint8 B×3×H×W (RGB, 0..255, any H, W) → float32 ``logits`` B×K×H×W (K = ``num_classes``, or 1
    for a one-channel sigmoid head), and float32 ``label_logits`` B×L when the net has an image-level head.
    """

    def __init__(self, model: SegmentationModule) -> None:
        super().__init__()
        # the net is this module's only child, so an exported program holds its weights and nothing of
        # the Lightning module around it (losses, metrics); the module is kept outside the module tree
        self.net = model.net
        # held outside the module tree (see above); its uncompiled forward is traced, never torch.compile's
        self.__dict__["model"] = model
        self.divisor = int(model.size_divisor)
        self.register_buffer("mean", torch.tensor(model.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(model.std, dtype=torch.float32).view(1, -1, 1, 1))
        self.has_label_head = getattr(model.net, "label_head", None) is not None

    @property
    def output_names(self) -> list[str]:
        return ["logits", "label_logits"] if self.has_label_head else ["logits"]

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = (image.to(torch.float32) / 255 - self.mean) / self.std  # SegDataModule.prepare_batch's steps
        h, w = x.shape[-2], x.shape[-1]
        d = self.divisor
        if d > 1:
            rows, columns = _pad_indices(h, w, d, x.device)
            x = x.index_select(2, rows).index_select(3, columns)
        out = self.model.forward_uncompiled(x)
        logits = out.mask
        if d > 1:
            logits = logits.index_select(2, torch.arange(h, device=x.device))
            logits = logits.index_select(3, torch.arange(w, device=x.device))
        logits = logits.to(torch.float32)
        if self.has_label_head:
            if out.label is None:
                raise ConfigError("export: the net has an image-level head but returned no label logits")
            return logits, out.label.to(torch.float32)
        return logits


def _pad_indices(h: Any, w: Any, d: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 row and column indices that pad an H×W image to multiples of ``d`` at the bottom/right, as
    :func:`~lightning_seg.models.outputs.pad_to_multiple` does: reflection when both pads are shorter
    than their side, else replication."""
    sides = []
    reflect = None
    for n in (h, w):
        size = d * ((n + d - 1) // d)
        index = torch.arange(size, device=device)
        sides.append((torch.where(index < n, index, 2 * (n - 1) - index), index.clamp(max=n - 1)))
        # a tensor, not a Python bool: the choice stays in the graph for every H and W
        fits = torch.full((), size - n, device=device) < n
        reflect = fits if reflect is None else reflect & fits
    assert reflect is not None
    (rows_r, rows_e), (cols_r, cols_e) = sides
    return torch.where(reflect, rows_r, rows_e), torch.where(reflect, cols_r, cols_e)


def export_program(net: DeployableNet, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of ``net`` with a dynamic batch, height and width.

    Args:
        net: the deployable net (eval mode).
        example: uint8 B×3×H×W; a batch of one is repeated to two (export would fix a size-1 batch).
    """
    if example.shape[0] < 2:
        example = example.expand(2, *example.shape[1:]).contiguous()
    dynamic = torch.export.Dim.DYNAMIC
    # DYNAMIC, not named Dims: a guard a net adds for tiny sizes (is a feature map one pixel wide?)
    # narrows the program's accepted range (checked when it runs) instead of failing the export
    with torch.no_grad():
        return torch.export.export(
            net, (example,), dynamic_shapes={"image": {0: dynamic, 2: dynamic, 3: dynamic}}
        )


def write_onnx(
    program: torch.export.ExportedProgram,
    example: torch.Tensor,
    path: Path,
    opset: int,
    output_names: Sequence[str],
) -> None:
    """``program`` → ONNX at ``opset`` with named inputs, outputs and dynamic axes, in one file (the
    weights go to ``<path>.data`` only beyond protobuf's 2 GB)."""
    onnx_program = torch.onnx.export(
        program,
        (example,),
        dynamic_shapes={"image": {0: "batch", 2: "height", 3: "width"}},  # names the axes in the file
        input_names=["image"],
        output_names=list(output_names),
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    if onnx_program is None:
        raise ConfigError("export: torch.onnx.export returned no program")
    onnx_program.save(str(path))


# ---------------------------------------------------------------------------------- running the files
Runner = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
"""uint8 B×3×H×W → (float32 logits B×K×H×W, float32 label logits B×L or None)."""


def onnx_runner(path: str | Path) -> Runner:
    """Run ``model.onnx`` with onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        outputs = session.run(None, {"image": image.cpu().numpy()})
        label = torch.from_numpy(outputs[1]) if len(outputs) > 1 else None
        return torch.from_numpy(outputs[0]), label

    return run


def program_runner(program: torch.export.ExportedProgram) -> Runner:
    """Run an ExportedProgram (``torch.export.load("model.pt2")``)."""
    module = program.module()

    def run(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            out = module(image)
        return (out[0], out[1]) if isinstance(out, tuple | list) else (out, None)

    return run


def reference_runner(model: SegmentationModule, prepare: Callable[[torch.Tensor], torch.Tensor]) -> Runner:
    """The checkpoint itself: ``prepare`` (uint8 → the normalised float batch, as the data feeds it), then
    :meth:`SegmentationModule.forward_uncompiled` (the net the files were traced from)."""

    def run(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            out = model.forward_uncompiled(prepare(image))
        label = out.label.float() if out.label is not None else None
        return out.mask.float(), label

    return run


@dataclass
class Parity:
    """How far one exported file is from the checkpoint on the same images."""

    images: int = 0
    pixels: int = 0
    agreeing: int = 0
    max_abs_logit_diff: float = 0.0
    max_abs_label_logit_diff: float | None = None
    sizes: dict[str, int] = field(default_factory=dict)  # "H×W": images compared at that size

    @property
    def agreement(self) -> float:
        return self.agreeing / self.pixels if self.pixels else 1.0

    def add(
        self,
        logits: torch.Tensor,
        reference: torch.Tensor,
        decide: Callable[[torch.Tensor], torch.Tensor],
        label: torch.Tensor | None = None,
        reference_label: torch.Tensor | None = None,
    ) -> None:
        if logits.shape != reference.shape:
            raise ExportParityError(
                f"export: the exported graph gives logits of shape {tuple(logits.shape)}, the checkpoint "
                f"{tuple(reference.shape)}"
            )
        self.images += reference.shape[0]
        self.pixels += reference.shape[0] * reference.shape[-2] * reference.shape[-1]
        self.agreeing += int((decide(logits) == decide(reference)).sum())
        difference = (logits - reference).abs().max()
        self.max_abs_logit_diff = max(self.max_abs_logit_diff, _finite_or_inf(difference))
        size = f"{reference.shape[-2]}×{reference.shape[-1]}"
        self.sizes[size] = self.sizes.get(size, 0) + int(reference.shape[0])
        if reference_label is not None:
            if label is None or label.shape != reference_label.shape:
                raise ExportParityError(
                    "export: the exported graph gives no label logits like the checkpoint's"
                )
            gap = _finite_or_inf((label - reference_label).abs().max())
            self.max_abs_label_logit_diff = max(self.max_abs_label_logit_diff or 0.0, gap)

    def record(self) -> dict[str, Any]:
        record = asdict(self)
        record["agreement"] = self.agreement
        return record

    def line(self, name: str) -> str:
        sizes = ", ".join(f"{count} at {size}" for size, count in self.sizes.items())
        label = (
            f"; label logits max |Δ| {self.max_abs_label_logit_diff:.3g}"
            if self.max_abs_label_logit_diff is not None
            else ""
        )
        return (
            f"export: {name:<12} max |Δlogit| {self.max_abs_logit_diff:.3g}, class agreement "
            f"{100 * self.agreement:.4f}% (images: {sizes}; {self.pixels} pixels){label}"
        )


def _finite_or_inf(value: torch.Tensor) -> float:
    number = float(value)
    return number if math.isfinite(number) else math.inf


def measure_parity(
    runner: Runner,
    reference: Runner,
    batches: Sequence[torch.Tensor],
    decide: Callable[[torch.Tensor], torch.Tensor],
) -> Parity:
    """Run ``runner`` and ``reference`` on each uint8 batch and compare logits and classes."""
    parity = Parity()
    for batch in batches:
        logits, label = runner(batch)
        expected, expected_label = reference(batch)
        parity.add(logits.float(), expected, decide, label, expected_label)
    return parity


def check_parity(results: dict[str, Parity], min_agreement: float, folder: Path) -> None:
    """Fail with one line when a file's class agreement is below ``min_agreement``."""
    for name, parity in results.items():
        if not parity.agreement >= min_agreement:
            raise ExportParityError(
                f"export: {FILES[name]} agrees with the checkpoint on {100 * parity.agreement:.3f}% of pixels, "
                f"below --min_agreement {100 * min_agreement:g}% (max |Δlogit| {parity.max_abs_logit_diff:.3g}); "
                f"files kept for inspection in {short_path(folder)}"
            )


# ------------------------------------------------------------------------------------------ the images
def parity_batches(datamodule: Any, count: int, divisor: int) -> tuple[list[torch.Tensor], str]:
    """Up to ``count`` uint8 images of the predict split (else test) in the data's batches, plus the first
    batch cropped to a size that is not a multiple of ``divisor`` (the padding path). Returns the batches
    and the split's name."""
    split = _parity_split(datamodule)
    loader = datamodule.predict_dataloader() if split == "predict" else datamodule.test_dataloader()
    batches: list[torch.Tensor] = []
    taken = 0
    for batch in loader:
        image = batch["image"]
        if image.dtype != torch.uint8:
            raise ConfigError(
                f"export: the {split} loader gives {image.dtype} images; the exported graph takes uint8 RGB"
            )
        image = image[: count - taken]
        batches.append(image)
        taken += len(image)
        if taken >= count:
            break
    if not batches:
        raise ConfigError(f"export: the {split} split has no images for the parity check")
    first = batches[0]
    h, w = first.shape[-2:]
    crop_h, crop_w = _off_multiple(h, divisor), _off_multiple(w, divisor)
    if (crop_h, crop_w) != (h, w):
        batches.append(first[..., :crop_h, :crop_w].contiguous())
    return batches, split


def _off_multiple(n: int, divisor: int) -> int:
    """A size a little below ``n`` that is not a multiple of ``divisor`` (``n`` itself when it is not, or
    when the image is too small to crop)."""
    if divisor <= 1 or n % divisor:
        return n
    return n - 3 if n > 8 else n


def _parity_split(datamodule: Any) -> str:
    for split in ("predict", "test"):
        try:
            datamodule.setup(split)
        except (ConfigError, NotImplementedError, FileNotFoundError):
            continue  # no such split (or an empty one)
        return split
    raise ConfigError("export: the data has neither a predict nor a test split for the parity check")


# ------------------------------------------------------------------------------------------ the command
def check_onnx_installed() -> None:
    """One line naming the extra to install when onnx, onnxscript or onnxruntime is missing."""
    import importlib

    for name in ONNX_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ConfigError(
                f"export --formats onnx needs {name} (not importable): {ONNX_INSTALL}"
            ) from error


def _check_arguments(
    formats: Sequence[str], opset: int, parity_images: int, min_agreement: float, model: Any
) -> list[Format]:
    chosen = list(dict.fromkeys(formats))  # in order, once each
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise ConfigError(f"export --formats: choose from {list(FORMATS)}, got {list(formats)}")
    highest = _highest_opset()
    if not MIN_OPSET <= opset <= highest:
        raise ConfigError(
            f"export --opset {opset}: torch's ONNX exporter writes opsets {MIN_OPSET} to {highest} "
            f"(default {DEFAULT_OPSET})"
        )
    if parity_images < 1:
        raise ConfigError(
            f"export --parity_images must be >= 1 (the check is not optional), got {parity_images}"
        )
    if not 0 < min_agreement <= 1:
        raise ConfigError(f"export --min_agreement is a share in (0, 1], got {min_agreement}")
    if not hasattr(model, "postprocess") or not hasattr(model, "size_divisor"):
        raise ConfigError("export needs lightning_seg's SegmentationModule as the model")
    return chosen  # type: ignore[return-value]


def _highest_opset() -> int:
    """The newest opset this torch's exporter writes (23 for torch 2.9 to 2.15)."""
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):  # a private constant: its absence must not stop the command
        return 23


def written_opset(path: Path) -> int | None:
    """The default-domain opset ``model.onnx`` declares (what a runtime must implement)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)


def export_model(
    trainer: L.Trainer,
    model: SegmentationModule,
    datamodule: Any,
    ckpt_path: str | None,
    formats: Sequence[str],
    opset: int | None,
    parity_images: int,
    min_agreement: float,
    weights_only: bool | None = None,
) -> Path:
    """Export, write ``model.json``, check parity; returns the folder written."""
    opset = DEFAULT_OPSET if opset is None else opset
    chosen = _check_arguments(formats, opset, parity_images, min_agreement, model)
    if "onnx" in chosen:
        check_onnx_installed()  # before anything is loaded or written
    if datamodule is None:
        raise ConfigError("export needs a data module (data: in the config): its images check the parity")
    if trainer.world_size > 1:
        raise ConfigError("export runs in one process: drop trainer.devices / strategy for it")
    # read once: the weights now, the bundle's record, epoch and loss weights later
    checkpoint = read_checkpoint(ckpt_path, weights_only) if ckpt_path else None
    if checkpoint is not None:
        load_weights(model, checkpoint, ckpt_path)
    # the tuned thresholds (beside the checkpoint or carried by it) go into model.json and model.ckpt
    model.load_postprocess(ckpt_path)
    model.eval().cpu()
    batches, split = parity_batches(datamodule, parity_images, model.size_divisor)
    folder = Path(trainer.default_root_dir)
    folder.mkdir(parents=True, exist_ok=True)

    return _export(
        trainer,
        model,
        datamodule,
        ckpt_path,
        checkpoint,
        chosen,
        opset,
        min_agreement,
        batches,
        split,
        folder,
    )


def _export(
    trainer: L.Trainer,
    model: SegmentationModule,
    datamodule: Any,
    ckpt_path: str | None,
    checkpoint: dict[str, Any] | None,
    chosen: Sequence[str],
    opset: int,
    min_agreement: float,
    batches: list[torch.Tensor],
    split: str,
    folder: Path,
) -> Path:
    net = DeployableNet(model).eval()
    program = export_program(net, batches[0])
    if "torch_export" in chosen:
        torch.export.save(program, str(folder / FILES["torch_export"]))
    if "onnx" in chosen:
        write_onnx(program, batches[0], folder / FILES["onnx"], opset, net.output_names)
        opset = written_opset(folder / FILES["onnx"]) or opset
    if ckpt_path and checkpoint is not None:  # the checkpoint that stands alone, tuned thresholds embedded
        write_bundle(model, checkpoint, ckpt_path, folder / BUNDLE)

    def prepare(image: torch.Tensor) -> torch.Tensor:
        return datamodule.prepare_batch({"image": image}, train=False)["image"]

    reference = _cached(reference_runner(model, prepare))
    runners: dict[str, Runner] = {}
    if "onnx" in chosen:
        runners["onnx"] = onnx_runner(folder / FILES["onnx"])
    if "torch_export" in chosen:  # the file as written, loaded back
        runners["torch_export"] = program_runner(torch.export.load(str(folder / FILES["torch_export"])))
    results = {
        name: measure_parity(runner, reference, batches, model.classes_from_logits)
        for name, runner in runners.items()
    }
    channels = int(reference(batches[0])[0].shape[1])
    record = describe_export(model, net, chosen, opset, ckpt_path, datamodule, channels)
    # the graph computes in float32 (its reference too); test and predict run at the trainer's precision
    record["precision"] = {"graph": "float32", "trainer": str(trainer.precision)}
    record["parity"] = {
        "split": split,
        "reference": "the checkpoint's forward pass on the same images as the data module feeds them",
        "min_agreement": min_agreement,
        **{name: parity.record() for name, parity in results.items()},
    }
    atomic_write(folder / "model.json", json.dumps(record, indent=2))
    for name, parity in results.items():
        print(parity.line(name))
    written = [FILES[f] for f in chosen] + ([BUNDLE] if ckpt_path else []) + ["model.json"]
    print(f"export: {short_path(folder)} ({', '.join(written)})")
    check_parity(results, min_agreement, folder)
    return folder


def _cached(runner: Runner) -> Runner:
    """``runner`` computed once per batch (the reference serves every format)."""
    seen: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def run(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = id(image)
        if key not in seen:
            seen[key] = runner(image)
        return seen[key]

    return run


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
        + (", ".join(postprocess) if postprocess else "none")
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
    augmentations = getattr(datamodule, "_eval_augmentations", None)
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
    record: dict[str, Any] = {
        "format": EXPORT_FORMAT,
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
