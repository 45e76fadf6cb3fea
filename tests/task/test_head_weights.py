"""A head the loss gives weight 0 (torchvision's aux head, an image-level label head) is not built.

Built, it would run every step for nothing, and its parameters, without gradients, stop DDP (which runs
without ``find_unused_parameters``; the 2-process run is ``tests/cli/test_ddp.py``'s slow aux-head test).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import tiny_args
from torch import nn

from lightning_seg.cli import run_cli
from lightning_seg.errors import ConfigError
from lightning_seg.losses import CompoundLoss
from lightning_seg.models import MicroUNet, SMPNet, TorchvisionNet
from lightning_seg.task.module import SegmentationModule

# the smallest torchvision arch with an aux head (lraspp has none)
ARCH = "deeplabv3_mobilenet_v3_large"
LABELS = ["none", "scratch", "stain"]


def _cli_builder(class_path: str, init_args: dict) -> Callable[..., nn.Module]:
    """The net builder as the CLI makes it: a partial whose keywords hold every init_arg, defaults included."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--net", type=Callable[[int], nn.Module])
    config = parser.parse_args([f"--net={{'class_path': '{class_path}', 'init_args': {init_args}}}"])
    return parser.instantiate_classes(config).net


def _parameter_names(module: nn.Module, part: str) -> list[str]:
    return [name for name, _ in module.named_parameters() if part in name]


@pytest.mark.parametrize("cli", [False, True], ids=["partial", "cli_builder"])
@pytest.mark.parametrize("aux_weight", [0.4, 0.0])
def test_aux_head_is_built_only_when_the_loss_weighs_it(cli: bool, aux_weight: float) -> None:
    net = (
        _cli_builder("lightning_seg.models.TorchvisionNet", {"arch": ARCH})
        if cli
        else functools.partial(TorchvisionNet, arch=ARCH)
    )
    module = SegmentationModule(net=net, num_classes=3, loss=CompoundLoss(aux_weight=aux_weight)).eval()
    built = bool(_parameter_names(module.net, "aux_classifier"))
    assert built == (aux_weight > 0)
    with torch.no_grad():
        out = module(torch.randn(2, 3, 32, 32))
    assert (out.aux is not None) == (aux_weight > 0) and out.mask.shape == (2, 3, 32, 32)


@pytest.mark.parametrize("label_names", [None, LABELS], ids=["derived_labels", "data_labels"])
def test_label_head_of_micro_unet_is_not_built_at_label_weight_0(label_names: list[str] | None) -> None:
    """MicroUNet makes a head when ``num_labels`` is null; the module passes 0 instead."""
    for cli in (False, True):
        net = (
            _cli_builder("lightning_seg.models.MicroUNet", {"base_width": 4})
            if cli
            else functools.partial(MicroUNet, base_width=4)
        )
        module = SegmentationModule(
            net=net, num_classes=3, label_names=label_names, loss=CompoundLoss(label_weight=0.0)
        )
        assert module.net.label_head is None and not _parameter_names(module.net, "label_head")
        with torch.no_grad():
            out = module.eval()(torch.randn(2, 3, 32, 32))
        assert out.label is None and out.mask.shape == (2, 3, 32, 32)
        # at the default weight, the same builder makes the head
        trained = SegmentationModule(net=net, num_classes=3, label_names=label_names)
        assert trained.net.label_head is not None


def test_label_head_of_smp_net_is_not_built_at_label_weight_0() -> None:
    net = functools.partial(SMPNet, arch="FPN", encoder_name="resnet18")
    module = SegmentationModule(
        net=net, num_classes=3, label_names=LABELS, loss=CompoundLoss(label_weight=0.0)
    )
    assert module.net.label_head is None and not _parameter_names(module.net, "classification_head")
    with torch.no_grad():
        assert module.eval()(torch.randn(1, 3, 64, 64)).label is None
    trained = SegmentationModule(net=net, num_classes=3, label_names=LABELS)
    assert trained.net.label_head is not None
    # num_labels=0 is no head too, as for MicroUNet
    assert SMPNet(num_classes=3, arch="FPN", encoder_name="resnet18", num_labels=0).label_head is None


@pytest.mark.parametrize(
    ("net", "loss", "message"),
    [
        (
            functools.partial(TorchvisionNet, arch=ARCH, aux_loss=True),
            CompoundLoss(aux_weight=0.0),
            r"model\.net aux_loss: true contradicts model\.loss aux_weight: 0",
        ),
        (
            functools.partial(MicroUNet, base_width=4, num_labels=3),
            CompoundLoss(label_weight=0.0),
            r"model\.net num_labels: 3 contradicts model\.loss label_weight: 0",
        ),
    ],
    ids=["aux", "label"],
)
def test_a_head_the_config_asks_for_at_weight_0_is_refused(
    net: Callable[..., nn.Module], loss: CompoundLoss, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        SegmentationModule(net=net, num_classes=3, label_names=LABELS, loss=loss)


def test_a_head_the_config_turns_off_is_accepted_at_weight_0() -> None:
    aux_off = SegmentationModule(
        net=functools.partial(TorchvisionNet, arch=ARCH, aux_loss=False),
        num_classes=3,
        loss=CompoundLoss(aux_weight=0.0),
    )
    assert not _parameter_names(aux_off.net, "aux_classifier")
    labels_off = SegmentationModule(
        net=functools.partial(MicroUNet, base_width=4, num_labels=0),
        num_classes=3,
        label_names=LABELS,
        loss=CompoundLoss(label_weight=0.0),
    )
    assert labels_off.net.label_head is None


class EveryParameterGetsAGradient(L.Callback):
    """Fails a step in which a trainable parameter got no gradient (what DDP refuses)."""

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        missing = [n for n, p in pl_module.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"no gradient for {missing[:5]}"


FITS = {
    "torchvision, aux_weight 0": (
        [
            "--model.init_args.net=lightning_seg.models.TorchvisionNet",
            f"--model.init_args.net.init_args.arch={ARCH}",
            "--model.init_args.loss.init_args.aux_weight=0",
        ],
        "aux",
    ),
    "micro_unet, label_weight 0": (
        [
            "--model.init_args.net=lightning_seg.models.MicroUNet",
            "--model.init_args.net.init_args.base_width=4",
            "--model.init_args.loss.init_args.label_weight=0",
        ],
        "label",
    ),
}


@pytest.mark.parametrize("setup", FITS)
def test_fit_and_predict_without_the_head(run_root: Path, setup: str) -> None:
    extra, head = FITS[setup]
    # the default config's U-Net width/depth do not fit these nets
    common = [a for a in tiny_args(run_root) if not a.startswith("--model.init_args.net.")]
    common += [*extra, "--data.init_args.num_train=8", "--data.init_args.num_val=4"]
    fit = run_cli(["fit", *common, f"--trainer.callbacks+={__name__}.EveryParameterGetsAGradient"])
    metrics = set(fit.trainer.callback_metrics)
    assert "val/mIoU" in metrics and "train/loss/ce" in metrics
    assert f"train/loss/{head}" not in metrics and not any(m.startswith("val/label_") for m in metrics)
    best = fit.trainer.checkpoint_callback.best_model_path
    run_cli(["predict", *common, "--ckpt_path", best])
    run = Path(best).parent.parent
    assert len(list(run.glob("predict/*/predictions/*_index.png"))) == 4
    assert not list(run.rglob("labels*.csv"))  # no head, no image-level predictions


@pytest.mark.parametrize("net", ["MicroUNet", "SMPNet"])
def test_label_consistency_refuses_a_net_whose_head_was_not_built(net: str) -> None:
    """LabelConsistency reads the label head (SMPNet's too): at label_weight 0 there is none to read."""
    from lightning_seg.postprocess import LabelConsistency

    builder = (
        functools.partial(MicroUNet, base_width=4)
        if net == "MicroUNet"
        else functools.partial(SMPNet, arch="FPN", encoder_name="resnet18")
    )

    def module(label_weight: float) -> SegmentationModule:
        return SegmentationModule(
            net=builder,
            num_classes=3,
            label_names=LABELS,
            label_mode="multi",
            postprocess=[LabelConsistency()],
            loss=CompoundLoss(label_weight=label_weight),
        )

    module(0.5).check_label_consistency()  # a head: accepted
    with pytest.raises(ConfigError, match="has no image-level head.*label_weight > 0"):
        module(0.0).check_label_consistency()


def test_a_checkpoint_with_a_head_loads_into_a_model_that_does_not_build_it(
    run_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint written with the head (as every run with weight 0 was before heads at weight 0 were
    left out) loads: the head's weights are left out, in one line, and the masks are unchanged."""
    micro = ["--model.init_args.net=lightning_seg.models.MicroUNet", "--model.init_args.net.base_width=8"]
    fit = run_cli(["fit", *tiny_args(run_root, *micro)])
    ckpt = fit.trainer.checkpoint_callback.last_model_path
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any(".label_head." in key for key in state)
    without = "--model.init_args.loss.init_args.label_weight=0"
    tested = run_cli(["test", *tiny_args(run_root, *micro, without), "--ckpt_path", ckpt])
    assert tested is not None and getattr(tested.model.net, "label_head", None) is None
    assert "left out 2 weights of a head this model does not build (net.label_head.3.weight" in caplog.text
    with_head = run_cli(["test", *tiny_args(run_root, *micro), "--ckpt_path", ckpt])
    assert float(tested.trainer.callback_metrics["test/mIoU"]) == float(
        with_head.trainer.callback_metrics["test/mIoU"]
    )
