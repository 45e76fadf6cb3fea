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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lightning_seg.callbacks.model_record import model_record_of
from lightning_seg.checkpoints.load import load_weights, write_bundle
from lightning_seg.checkpoints.read import read_checkpoint
from lightning_seg.errors import ConfigError, short_path
from lightning_seg.utils.atomic import atomic_write

if TYPE_CHECKING:
    import lightning as L

    from lightning_seg.task.module import SegmentationModule


from lightning_seg.commands.export.constants import (
    BUNDLE,
    DEFAULT_OPSET,
    EXPORT_FORMAT,
    FILES,
    FORMATS,
    MIN_OPSET,
    ONNX_INSTALL,
    ONNX_MODULES,
    ExportParityError,
    Format,
)
from lightning_seg.commands.export.description import describe_export
from lightning_seg.commands.export.graph import DeployableNet, export_program, write_onnx
from lightning_seg.commands.export.parity import (
    Parity,
    Runner,
    check_parity,
    measure_parity,
    onnx_runner,
    parity_batches,
    program_runner,
    reference_runner,
)

__all__ = [
    "BUNDLE",
    "DEFAULT_OPSET",
    "EXPORT_FORMAT",
    "FILES",
    "FORMATS",
    "MIN_OPSET",
    "ONNX_INSTALL",
    "ONNX_MODULES",
    "DeployableNet",
    "ExportParityError",
    "Format",
    "Parity",
    "Runner",
    "check_onnx_installed",
    "check_parity",
    "describe_export",
    "export_model",
    "export_program",
    "measure_parity",
    "onnx_runner",
    "parity_batches",
    "program_runner",
    "reference_runner",
    "write_onnx",
    "written_opset",
]


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
    checkpoint = read_checkpoint(ckpt_path, weights_only, cache=True) if ckpt_path else None
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
        write_bundle(model, checkpoint, ckpt_path, folder / BUNDLE, model_record_of(trainer))

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
