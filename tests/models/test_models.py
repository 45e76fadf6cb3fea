"""The nets of ``lightning_seg.models``: output shapes and keys, heads, gradients, config errors.

Every net is built with random weights (nothing is downloaded) and kept small so the file runs in seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from lightning_seg.errors import ConfigError
from lightning_seg.models import MicroUNet, ResNetUNet, SMPNet, TorchvisionNet, as_net_output

# SMP's lightest encoders that every listed architecture accepts
LIGHT_ENCODER = "mobilenet_v2"


def _mask(out: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    return as_net_output(out).mask


def _backward_reaches_every_parameter(net: nn.Module, x: torch.Tensor) -> None:
    out = net(x)
    loss = sum(v.float().mean() for v in (out.values() if isinstance(out, dict) else [out]))
    loss.backward()
    missing = [name for name, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"


def _check_backbone(net: nn.Module) -> None:
    backbone = net.backbone
    assert isinstance(backbone, nn.Module)
    own = {id(p) for p in net.parameters()}
    inside = {id(p) for p in backbone.parameters()}
    assert inside and inside < own  # a real part of the net, not all of it


# ---------------------------------------------------------------------------------------------- ResNetUNet
@pytest.mark.parametrize("bilinear", [True, False])
@pytest.mark.parametrize("size", [(32, 32), (64, 96)])
def test_resnet_unet_shapes(bilinear: bool, size: tuple[int, int]) -> None:
    net = ResNetUNet(num_classes=5, base_width=8, bilinear=bilinear)
    assert net.size_divisor == 32
    out = net(torch.randn(2, 3, *size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 5, *size) and out.dtype == torch.float32


def test_resnet_unet_one_channel_head_backward_and_backbone() -> None:
    net = ResNetUNet(num_classes=1, in_channels=4, base_width=8, stage_blocks=(1, 1, 1, 1))
    x = torch.randn(2, 4, 64, 64)
    assert net(x).shape == (2, 1, 64, 64)
    _backward_reaches_every_parameter(net, x)
    _check_backbone(net)
    assert net.backbone is net.encoder


@pytest.mark.parametrize(("builder", "blocks"), [("resnet18", (2, 2, 2, 2)), ("resnet34", (3, 4, 6, 3))])
def test_resnet_unet_encoder_matches_torchvision_layout(builder: str, blocks: tuple[int, ...]) -> None:
    """torchvision's ImageNet weights load into the encoder as is (checked with random weights: no download)."""
    import torchvision

    reference = getattr(torchvision.models, builder)(weights=None).state_dict()
    net = ResNetUNet(num_classes=2, stage_blocks=blocks)
    state = {k: v for k, v in reference.items() if not k.startswith("fc.")}
    net.encoder.load_state_dict(state)  # strict: same names and shapes


def test_resnet_unet_rejects_bad_encoder_weights_before_downloading() -> None:
    with pytest.raises(ConfigError, match="valid: IMAGENET1K_V1"):
        ResNetUNet(num_classes=2, encoder_weights="NOPE")
    with pytest.raises(ConfigError, match="base_width=64"):
        ResNetUNet(num_classes=2, base_width=16, encoder_weights="IMAGENET1K_V1")


# ----------------------------------------------------------------------------------------------- MicroUNet
@pytest.mark.parametrize("bilinear", [True, False])
@pytest.mark.parametrize("size", [(32, 32), (48, 80)])
def test_micro_unet_mask_and_label(bilinear: bool, size: tuple[int, int]) -> None:
    net = MicroUNet(num_classes=4, base_width=8, bilinear=bilinear)
    assert net.size_divisor == 16
    out = net(torch.randn(3, 3, *size))
    assert set(out) == {"mask", "label"}
    assert out["mask"].shape == (3, 4, *size)
    assert out["label"].shape == (3, 4)  # num_labels=None: one logit per mask class


def test_micro_unet_binary_head_and_label_count() -> None:
    net = MicroUNet(num_classes=2, base_width=8, binary_head=True, num_labels=7, expand_ratio=2)
    x = torch.randn(2, 3, 32, 48)
    out = net(x)
    assert out["mask"].shape == (2, 1, 32, 48)
    assert out["label"].shape == (2, 7)
    _backward_reaches_every_parameter(net, x)
    _check_backbone(net)


def test_micro_unet_without_label_head() -> None:
    out = MicroUNet(num_classes=3, base_width=8, num_labels=0)(torch.randn(2, 3, 32, 32))
    assert set(out) == {"mask"}


# -------------------------------------------------------------------------------------------------- SMPNet
# arch → (encoder, input side, expected size_divisor); PAN needs >= 128 px, DPT a timm ViT
SMP_ARCHS = {
    "Unet": (LIGHT_ENCODER, 64, 32),
    "UnetPlusPlus": (LIGHT_ENCODER, 64, 32),
    "FPN": (LIGHT_ENCODER, 64, 32),
    "PSPNet": (LIGHT_ENCODER, 64, 8),
    "DeepLabV3": (LIGHT_ENCODER, 64, 8),
    "DeepLabV3Plus": (LIGHT_ENCODER, 64, 16),
    "Linknet": (LIGHT_ENCODER, 64, 32),
    "MAnet": (LIGHT_ENCODER, 64, 32),
    "PAN": (LIGHT_ENCODER, 128, 16),
    "UPerNet": (LIGHT_ENCODER, 64, 32),
    "Segformer": ("mit_b0", 64, 32),
    "DPT": ("tu-vit_tiny_patch16_224", 64, 32),
}


@pytest.mark.parametrize("arch", list(SMP_ARCHS))
def test_smp_archs(arch: str) -> None:
    encoder, side, divisor = SMP_ARCHS[arch]
    net = SMPNet(num_classes=3, arch=arch, encoder_name=encoder).eval()
    assert net.size_divisor == divisor
    with torch.no_grad():
        out = net(torch.randn(1, 3, side, side + divisor))  # rectangular, a multiple of size_divisor
    assert set(out) == {"mask"}
    assert out["mask"].shape == (1, 3, side, side + divisor)
    _check_backbone(net)
    assert net.backbone is net.model.encoder


def test_smp_label_head_one_channel_and_backward() -> None:
    net = SMPNet(num_classes=1, arch="FPN", encoder_name="resnet18", num_labels=6, in_channels=4)
    x = torch.randn(2, 4, 64, 64)
    out = net(x)
    assert out["mask"].shape == (2, 1, 64, 64)
    assert out["label"].shape == (2, 6)
    _backward_reaches_every_parameter(net, x)


def test_smp_kwargs_reach_the_architecture() -> None:
    net = SMPNet(
        num_classes=2,
        encoder_name="tu-mobilenetv3_small_100",
        encoder_depth=4,
        decoder_kwargs={"decoder_channels": [32, 16, 8, 8]},
        encoder_kwargs={"drop_path_rate": 0.1},
    )
    assert net.size_divisor == 16  # 2**encoder_depth
    assert net.model.decoder.blocks[-1].conv2[0].out_channels == 8
    assert _mask(net(torch.randn(2, 3, 48, 48))).shape == (2, 2, 48, 48)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "UNetX"}, "unknown arch 'UNetX'; valid: Unet, UnetPlusPlus"),
        ({"encoder_name": "resnet343"}, "did you mean resnet34"),
        ({"encoder_name": "tu-not_a_timm_model"}, "unknown timm model"),
        ({"arch": "DPT", "encoder_name": "resnet18"}, "Only Timm encoders"),
        ({"arch": "Linknet", "encoder_name": "mit_b0"}, "not supported"),
        ({"decoder_kwargs": {"decoder_chanels": [8]}}, r"\['decoder_chanels'\] not accepted by smp.Unet"),
        ({"decoder_kwargs": {"activation": "sigmoid"}}, "not accepted"),
        ({"encoder_kwargs": {"drop_path_rate": 0.1}}, "only apply to timm"),
        ({"encoder_depth": 3}, "decoder_channels"),
        ({"encoder_weights": "nope"}, "Available options are: \\['imagenet'"),  # raised before any download
    ],
)
def test_smp_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SMPNet(num_classes=2, **{"encoder_name": "resnet18", **kwargs})


# ------------------------------------------------------------------------------------------ TorchvisionNet
def test_torchvision_lraspp_has_no_aux() -> None:
    net = TorchvisionNet(num_classes=3, arch="lraspp_mobilenet_v3_large", aux_loss=True)
    assert net.size_divisor == 16
    x = torch.randn(2, 3, 64, 64)
    out = net(x)
    assert set(out) == {"mask"} and out["mask"].shape == (2, 3, 64, 64)
    _backward_reaches_every_parameter(net, x)
    _check_backbone(net)


@pytest.mark.parametrize("aux_loss", [True, False])
def test_torchvision_deeplab_mobilenet_aux(aux_loss: bool) -> None:
    net = TorchvisionNet(num_classes=1, arch="deeplabv3_mobilenet_v3_large", aux_loss=aux_loss).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 80))
    assert set(out) == ({"mask", "aux"} if aux_loss else {"mask"})
    for value in out.values():
        assert value.shape == (1, 1, 64, 80)


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch", ["deeplabv3_resnet50", "deeplabv3_resnet101", "fcn_resnet50", "fcn_resnet101"]
)
def test_torchvision_resnet_archs(arch: str) -> None:
    net = TorchvisionNet(num_classes=3, arch=arch)
    assert net.size_divisor == 8
    x = torch.randn(2, 3, 64, 64)
    out = net(x)
    assert set(out) == {"mask", "aux"} and out["mask"].shape == out["aux"].shape == (2, 3, 64, 64)
    _backward_reaches_every_parameter(net, x)


def test_torchvision_config_errors() -> None:
    with pytest.raises(ConfigError, match="valid: deeplabv3_resnet50"):
        TorchvisionNet(num_classes=2, arch="deeplabv4")
    with pytest.raises(
        ConfigError, match="unknown weights_backbone 'NOPE' for mobilenet_v3_large; valid: IMAGENET1K_V1"
    ):
        TorchvisionNet(num_classes=2, arch="lraspp_mobilenet_v3_large", weights_backbone="NOPE")


# ------------------------------------------------------------------------------ built from YAML, like the CLI
@pytest.mark.parametrize(
    ("class_path", "init_args"),
    [
        (
            "lightning_seg.models.ResNetUNet",
            {"base_width": 8, "stage_blocks": [1, 1, 1, 1], "bilinear": False},
        ),
        ("lightning_seg.models.MicroUNet", {"base_width": 8, "num_labels": 3, "binary_head": True}),
        (
            "lightning_seg.models.SMPNet",
            {"arch": "FPN", "encoder_name": LIGHT_ENCODER, "decoder_kwargs": {"decoder_dropout": 0.0}},
        ),
        ("lightning_seg.models.TorchvisionNet", {"arch": "lraspp_mobilenet_v3_large"}),
    ],
)
def test_nets_build_from_a_class_path_without_num_classes(class_path: str, init_args: dict) -> None:
    """The CLI types the module's ``net`` as a callable and calls it with ``num_classes`` only."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--net", type=Callable[[int], nn.Module])
    config = parser.parse_args([f"--net={{'class_path': '{class_path}', 'init_args': {init_args}}}"])
    builder = parser.instantiate_classes(config).net
    net = builder(num_classes=3)
    assert type(net).__name__ == class_path.rsplit(".", 1)[1]
    side = 2 * net.size_divisor
    with torch.no_grad():
        assert _mask(net.eval()(torch.randn(1, 3, side, side))).shape[-2:] == (side, side)


def test_unet_dropout_acts_in_training_only_and_keeps_the_checkpoint_keys() -> None:
    from lightning_seg.models import UNet

    torch.manual_seed(0)
    plain, dropped = UNet(3, base_width=4, depth=2), UNet(3, base_width=4, depth=2, dropout=0.3)
    assert plain.state_dict().keys() == dropped.state_dict().keys()  # plain checkpoints load either way
    image = torch.randn(2, 3, 16, 16)
    dropped.train()
    assert not torch.equal(dropped(image), dropped(image))  # a different channel mask each pass
    dropped.load_state_dict(plain.state_dict())  # the same weights and batch-norm statistics
    plain.eval(), dropped.eval()
    torch.testing.assert_close(dropped(image), plain(image))
    with pytest.raises(ConfigError, match="UNet.dropout must be in \\[0, 1\\)"):
        UNet(3, dropout=1.0)
