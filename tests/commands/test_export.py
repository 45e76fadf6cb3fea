"""``export``: every net family exported once with dynamic batch, height and width and fed two sizes (one
not a multiple of 32) through onnxruntime; fit → export → onnxruntime's classes and those of model.pt2
(loaded with ``torch.export.load``) equal what ``predict`` writes; one-line errors without onnxruntime
and when a file disagrees with the checkpoint.

Nets are built small with random weights (nothing downloaded); an ONNX export takes a few seconds each.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TinyRun, assert_one_line_error, tiny_args
from torchvision.io import decode_png, read_file

from lightning_seg.cli import main, run_cli
from lightning_seg.commands import export as export_command
from lightning_seg.commands.export import (
    DeployableNet,
    ExportParityError,
    Parity,
    check_parity,
    export_program,
    measure_parity,
    onnx_runner,
    reference_runner,
    write_onnx,
)
from lightning_seg.models import MicroUNet, ResNetUNet, SMPNet, TorchvisionNet, UNet
from lightning_seg.task.module import SegmentationModule


def _needs_onnx() -> None:
    """Skips a test that writes ONNX (onnxscript) and runs it (onnxruntime) where those are missing."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")


FAMILIES: dict[str, Callable[..., torch.nn.Module]] = {
    "UNet": functools.partial(UNet, base_width=4, depth=3),
    "ResNetUNet": functools.partial(ResNetUNet, base_width=8, stage_blocks=(1, 1, 1, 1)),
    "MicroUNet": functools.partial(MicroUNet, base_width=4, expand_ratio=1),  # with an image-level head
    "SMPNet": functools.partial(
        SMPNet,
        arch="Unet",
        encoder_name="resnet18",
        encoder_depth=3,
        decoder_kwargs={"decoder_channels": [32, 16, 8]},
    ),
    # the fastest to export of torchvision's (fewer graph nodes than the MobileNetV3 ones)
    "TorchvisionNet": functools.partial(TorchvisionNet, arch="fcn_resnet50", aux_loss=False),
}
SIZES = ((64, 64), (72, 88))  # 72×88: not a multiple of 32 (nor of 16), so the graph pads and crops
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _module(builder: Callable[..., torch.nn.Module], num_classes: int = 4) -> SegmentationModule:
    torch.manual_seed(0)
    return SegmentationModule(builder, num_classes=num_classes, mean=MEAN, std=STD).eval()


def _normalise(image: torch.Tensor) -> torch.Tensor:
    """What SegDataModule.prepare_batch does to an evaluation batch (no eval augmentations)."""
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (MEAN, STD))
    return (image.to(torch.float32).div_(255) - mean) / std


def _images(size: tuple[int, int], batch: int = 2, seed: int = 0) -> torch.Tensor:
    """uint8 RGB with structure (smooth blobs plus noise), so that logits differ from pixel to pixel."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size[0] // 8 + 1, size[1] // 8 + 1, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    noise = torch.rand(batch, 3, *size, generator=generator) * 0.2
    return ((smooth * 0.8 + noise) * 255).round().clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_net_family_exports_with_dynamic_sizes_and_agrees(family: str, tmp_path: Path) -> None:
    _needs_onnx()
    model = _module(FAMILIES[family])
    net = DeployableNet(model).eval()
    program = export_program(net, _images(SIZES[0]))
    path = tmp_path / "model.onnx"
    write_onnx(program, _images(SIZES[0]), path, 20, net.output_names)

    # one exported graph, fed both sizes (and another batch size)
    batches = [_images(size, batch=b, seed=i) for i, (size, b) in enumerate(zip(SIZES, (2, 3), strict=True))]
    reference = reference_runner(model, _normalise)
    for batch in batches:
        logits = reference(batch)[0]
        assert logits.std() > 1e-3, "degenerate logits would make the agreement meaningless"
    parity = measure_parity(onnx_runner(path), reference, batches, model.classes_from_logits)
    assert parity.sizes == {"64×64": 2, "72×88": 3}
    assert parity.agreement >= 0.999, parity.line(family)
    assert parity.max_abs_logit_diff < 1e-3, parity.line(family)
    if family == "MicroUNet":
        assert net.output_names == ["logits", "label_logits"]
        assert parity.max_abs_label_logit_diff is not None and parity.max_abs_label_logit_diff < 1e-3
    else:
        assert parity.max_abs_label_logit_diff is None


@pytest.mark.parametrize(
    ("builder", "sizes"),
    [
        (FAMILIES["UNet"], [(5, 7), (8, 8), (13, 30)]),  # divisor 8: reflect, none, reflect
        (FAMILIES["ResNetUNet"], [(10, 40), (40, 10), (33, 64), (20, 20)]),  # replicate where pad >= side
    ],
)
def test_graph_padding_is_the_modules_padding(builder: Callable[..., torch.nn.Module], sizes) -> None:
    """The gather-based padding of the graph reproduces ``pad_to_multiple`` (reflect, or replicate where
    the image is smaller than its pad) exactly, run eagerly."""
    model = _module(builder)
    net = DeployableNet(model).eval()
    for size in sizes:
        image = _images(size)
        with torch.no_grad():
            assert torch.equal(net(image), model(_normalise(image)).mask), size


def test_fit_export_onnx_classes_equal_predict_masks(
    run_root: Path, tiny_run: TinyRun, capsys: pytest.CaptureFixture
) -> None:
    """(the session's tiny fit) → tune → predict (plain: no post-processing) → export with the tuned
    thresholds in the config: onnxruntime's and model.pt2's argmax on the predict images is what predict wrote; model.json names the thresholds
    the graph leaves out."""
    _needs_onnx()
    ckpt = str(tiny_run.last)
    assert run_cli(["tune", *tiny_args(run_root), "--ckpt_path", ckpt]) is not None
    predict = run_cli(["predict", *tiny_args(run_root), "--ckpt_path", ckpt])
    masks = Path(predict.trainer.log_dir) / "predictions"
    capsys.readouterr()
    thresholds = "--model.init_args.postprocess+=lightning_seg.postprocess.ClassThresholds"
    cli = run_cli(["export", *tiny_args(run_root, thresholds), "--ckpt_path", ckpt])
    assert cli is not None
    lines = capsys.readouterr().out.splitlines()
    (folder,) = (Path(ckpt).parent.parent / "export").iterdir()
    assert {p.name for p in folder.iterdir()} == {"model.onnx", "model.pt2", "model.ckpt", "model.json"}
    for name in ("onnx", "torch_export"):
        assert any(
            line.startswith(f"export: {name} ") and "class agreement 100.0000%" in line for line in lines
        )

    record = json.loads((folder / "model.json").read_text())
    assert record["input"]["dtype"] == "uint8" and record["input"]["shape"] == ["batch", 3, "height", "width"]
    assert record["outputs"][0]["shape"] == ["batch", 5, "height", "width"]
    assert record["class_names"] == list(cli.datamodule.class_names)
    assert record["normalization"]["folded"] is True and record["opset"] == 20
    assert record["parity"]["split"] == "predict"
    assert (
        record["model_postprocess"] == ["thresholds"] and len(record["class_thresholds"]["thresholds"]) == 5
    )
    assert any(
        "class thresholds" in item and "(this model's: thresholds)" in item for item in record["not_in_graph"]
    )
    for name in ("onnx", "torch_export"):
        assert record["parity"][name]["agreement"] >= 0.999
        assert record["parity"][name]["sizes"] == {"32×32": 4, "29×29": 4}  # predict images + a crop

    # a deployment: raw uint8 RGB into onnxruntime, and into the torch.export program (model.pt2) loaded
    # as a user would, argmax, against the PNGs predict wrote
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    program = torch.export.load(str(folder / "model.pt2")).module()
    compared = 0
    for batch in cli.datamodule.predict_dataloader():
        (logits,) = session.run(None, {"image": batch["image"].numpy()})
        with torch.no_grad():
            exported = program(batch["image"])
        exported = exported[0] if isinstance(exported, tuple | list) else exported
        assert exported.shape == (len(batch["name"]), 5, 32, 32)
        for name, classes, pt2_classes in zip(
            batch["name"], logits.argmax(1), exported.argmax(1), strict=True
        ):
            written = decode_png(read_file(str(masks / f"{name}_index.png")))[0].numpy()
            assert np.array_equal(classes, written), name
            assert np.array_equal(pt2_classes.numpy(), written), name
            compared += 1
    assert compared == 4


def test_export_without_onnxruntime_says_what_to_install(
    run_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    assert main(["export", *tiny_args(run_root), "--allow_untrained", "true"]) == 2
    assert_one_line_error(capsys, "pip install 'lightning_seg[onnx]'")


def test_export_fails_in_one_line_when_a_file_disagrees(
    run_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A program whose classes differ from the checkpoint's (here: negated logits) is refused."""
    real = export_command.program_runner

    def negated(program):  # noqa: ANN001, ANN202
        run = real(program)
        return lambda image: tuple(-t if t is not None else None for t in run(image))

    monkeypatch.setattr(export_command, "program_runner", negated)
    args = [*tiny_args(run_root), "--allow_untrained", "true", "--formats", "[torch_export]"]
    assert main(["export", *args]) == 2
    assert_one_line_error(capsys, "model.pt2 agrees with the checkpoint on", "below --min_agreement 99.9%")


def test_check_parity_names_the_file_and_the_numbers(tmp_path: Path) -> None:
    good = Parity(images=1, pixels=1000, agreeing=1000)
    check_parity({"onnx": good}, 0.999, tmp_path)
    bad = Parity(images=1, pixels=1000, agreeing=998, max_abs_logit_diff=0.5)
    with pytest.raises(ExportParityError, match=r"model\.onnx agrees .* 99\.800% .* 99\.9%"):
        check_parity({"onnx": bad}, 0.999, tmp_path)


@pytest.mark.parametrize(
    ("binary", "temperatures"),
    [(False, [2.5]), (False, [1.0, 3.0, 0.5, 2.0]), (True, [1.7, 0.6])],
    ids=["K channels", "K channels, per class", "one channel, two"],
)
def test_the_graph_folds_in_the_chains_temperature(binary: bool, temperatures: list[float]) -> None:
    """With a TemperatureScaling step, the graph's logits are the tempered ones: their softmax (sigmoid) is
    what the step gives the chain (two temperatures of a one-channel head included)."""
    from lightning_seg.postprocess import Prediction, TemperatureScaling

    torch.manual_seed(0)
    model = SegmentationModule(
        functools.partial(UNet, base_width=4, depth=2),
        num_classes=2 if binary else 4,
        binary_head=binary,
        postprocess=[TemperatureScaling(temperature=temperatures, per_class=len(temperatures) > 1)],
        mean=MEAN,
        std=STD,
    ).eval()
    net = DeployableNet(model).eval()
    image = _images((16, 16))
    with torch.no_grad():
        logits = net(image)
        plain = model(_normalise(image)).mask
    probabilities = model.evaluation.two_channels(torch.sigmoid(plain) if binary else plain.softmax(1))
    predictions = [Prediction(probabilities=p.clone()) for p in probabilities]
    model.postprocess.steps[0].apply(predictions)
    expected = torch.stack([p.probabilities for p in predictions])
    got = model.evaluation.two_channels(torch.sigmoid(logits) if binary else logits.softmax(1))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
