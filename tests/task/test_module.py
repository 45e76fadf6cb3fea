"""SegmentationModule pieces: net building, padding to the net's stride, image-level heads."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from helpers import tiny_args

from lightning_seg.cli import run_cli
from lightning_seg.labels import NO_LABEL, dominant_class
from lightning_seg.models import MicroUNet, SMPNet, UNet
from lightning_seg.task.module import SegmentationModule


def test_num_labels_comes_from_the_data_labels() -> None:
    labels = ["None", "Scratch", "Stain", "Oil"]
    micro = SegmentationModule(
        net=functools.partial(MicroUNet, num_labels=None), num_classes=2, label_names=labels
    )
    out = micro(torch.randn(2, 3, 32, 32))
    assert out.label.shape == (2, 4) and out.mask.shape == (2, 2, 32, 32)
    smp = SegmentationModule(
        net=functools.partial(SMPNet, encoder_name="resnet18", num_labels=None),
        num_classes=2,
        label_names=labels,
    )
    assert smp(torch.randn(2, 3, 64, 64)).label.shape == (2, 4)
    # a value the config states is kept
    fixed = SegmentationModule(
        net=functools.partial(MicroUNet, num_labels=3), num_classes=2, label_names=labels
    )
    assert fixed(torch.randn(1, 3, 32, 32)).label.shape == (1, 3)


@pytest.mark.parametrize("size", [(33, 47), (64, 64), (17, 100)])
def test_inputs_of_any_size_are_padded_and_cropped_back(size) -> None:
    module = SegmentationModule(net=functools.partial(UNet, base_width=4, depth=3), num_classes=3).eval()
    out = module(torch.randn(2, 3, *size))
    assert out.mask.shape == (2, 3, *size)


def test_dominant_class_of_a_mask() -> None:
    mask = torch.zeros(3, 4, 4, dtype=torch.long)
    mask[0, :2] = 2
    mask[0, 3, :1] = 1
    mask[1, :, :] = 255  # all ignored: nothing is known of the image, so no label (not "background")
    mask[2, 0, 0] = 3
    assert dominant_class(mask, 4, 255).tolist() == [2, NO_LABEL, 3]
    mask[1, 0, 0] = 0  # one labelled background pixel: background
    assert dominant_class(mask, 4, 255).tolist() == [2, 0, 3]


def test_class_head_trained_and_scored_without_data_labels(run_root: Path) -> None:
    cli = run_cli(
        [
            "fit",
            *tiny_args(
                run_root,
                "--model.init_args.net=lightning_seg.models.MicroUNet",
                "--model.init_args.net.base_width=8",
                # the phone-defect notebook's selection rule, as a monitorable score
                "--model.init_args.score={image_mIoU: 0.75, label_f1: 0.25}",
            ),
        ]
    )
    metrics = cli.trainer.callback_metrics
    assert {"train/loss/label", "val/label_f1", "val/label_acc", "val/mIoU", "val/image_mIoU"} <= set(metrics)
    assert 0.0 <= float(metrics["val/label_f1"]) <= 1.0
    expected = 0.75 * float(metrics["val/image_mIoU"]) + 0.25 * float(metrics["val/label_f1"])
    assert float(metrics["val/score"]) == pytest.approx(expected, abs=1e-6)
    assert any(key.startswith("val/Dice/") for key in metrics)  # per-class Dice beside per-class IoU


def test_a_score_naming_a_metric_the_stage_does_not_log_is_one_line(run_root: Path, capsys) -> None:
    from helpers import assert_one_line_error

    from lightning_seg.cli import main

    assert main(["fit", *tiny_args(run_root, "--model.init_args.score={label_f1: 1.0}")]) == 2
    assert_one_line_error(capsys, "model.score: val logs no 'label_f1'")


def test_class_weight_rule_resolved_from_the_data_and_kept_in_checkpoints(run_root: Path) -> None:
    rule = "--model.init_args.loss.init_args.class_weights=median_frequency"
    cli = run_cli(
        ["fit", *tiny_args(run_root, rule, "--trainer.callbacks+=helpers.StopAfterEpoch", epochs=2)]
    )
    weights = cli.model.loss.weight_tensor
    assert weights is not None and weights.shape == (5,)
    # background covers most pixels: its median-frequency weight is the smallest
    assert int(weights.argmin()) == 0 and bool((weights > 0).all())
    best = cli.trainer.checkpoint_callback.best_model_path
    assert torch.equal(torch.load(best, weights_only=False)["loss_class_weights"], weights)
    # the checkpoint loads for evaluation (weights restored, no statistics pass) and for resuming
    tested = run_cli(["test", *tiny_args(run_root, rule), "--ckpt_path", best])
    assert torch.equal(tested.model.loss.weight_tensor, weights)
    resumed = run_cli(["fit", *tiny_args(run_root, rule, epochs=2), "--ckpt_path", "last"])
    assert resumed.trainer.current_epoch == 2


NETS = {
    "UNet": [],
    "ResNetUNet": ["--model.init_args.net.base_width=8"],
    "MicroUNet": ["--model.init_args.net.base_width=8"],
    "SMPNet": ["--model.init_args.net.arch=FPN", "--model.init_args.net.encoder_name=mobilenet_v2"],
    "TorchvisionNet": ["--model.init_args.net.arch=lraspp_mobilenet_v3_large"],
}


@pytest.mark.parametrize("net", NETS)
def test_every_net_fits_and_predicts_through_the_cli(run_root: Path, net: str) -> None:
    chosen = [f"--model.init_args.net=lightning_seg.models.{net}", *NETS[net]] if net != "UNet" else []
    fit = run_cli(["fit", *tiny_args(run_root, *chosen)])
    assert type(fit.model.net).__name__ == net
    assert 0.0 <= float(fit.trainer.callback_metrics["val/mIoU"]) <= 1.0
    best = fit.trainer.checkpoint_callback.best_model_path
    predict = run_cli(["predict", *tiny_args(run_root, *chosen), "--ckpt_path", best])
    assert predict is not None
    written = sorted((Path(best).parent.parent / "predict").glob("*/predictions/*_index.png"))
    assert len(written) == 4


def test_any_net_takes_a_one_channel_sigmoid_head_for_two_classes(tmp_path: Path) -> None:
    """The Pet notebook's U-Net with one sigmoid channel and BCE: fit, then test and predict decide by
    binary_threshold, as MicroUNet's binary head does."""
    from data_trees import folder_args, folder_tree

    from lightning_seg.errors import ConfigError

    data = folder_tree(tmp_path / "data", count=8, num_classes=2)
    args = [value if value != "[a,b,c]" else "[background,pet]" for value in folder_args(data)]
    head = ["--model.init_args.binary_head=true", "--model.init_args.loss.init_args.weights={ce: 1, dice: 1}"]
    fit = run_cli(["fit", *tiny_args(tmp_path / "runs", *args, *head)])
    assert fit.model.net.head.out_channels == 1
    assert {"train/loss/ce", "val/mIoU", "val/IoU_fg"} <= set(fit.trainer.callback_metrics)
    best = fit.trainer.checkpoint_callback.best_model_path
    tested = run_cli(["test", *tiny_args(tmp_path / "runs", *args, *head), "--ckpt_path", best])
    assert (
        tested.model.evaluation.binary_head and 0 <= float(tested.trainer.callback_metrics["test/mIoU"]) <= 1
    )
    with pytest.raises(ConfigError, match="model.binary_head: one sigmoid channel is for two classes"):
        SegmentationModule(
            net=functools.partial(UNet, base_width=4, depth=2), num_classes=3, binary_head=True
        )
