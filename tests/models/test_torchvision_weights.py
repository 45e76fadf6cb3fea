"""Pretrained torchvision weights: TorchvisionNet's full-model ``weights`` (COCO with VOC labels), the
classifier kept or replaced by the data's classes, ``weights_backbone`` and ResNetUNet's ``encoder_weights``.

Nothing is downloaded: ``WeightsEnum.get_state_dict`` (what torchvision and the nets call for the file) is
patched to return the state dict of a randomly built torchvision model of the weights' shape, and torch.hub's
cache is an empty ``$TORCH_HOME`` under ``tmp_path``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from helpers import assert_checkpoint_rebuilds, tiny_args
from torch import nn
from torchvision.models import WeightsEnum
from torchvision.models import segmentation as tv_seg

import lightning_seg.models.torchvision as tv_net
from lightning_seg.cli import run_cli
from lightning_seg.data.voc import VOC_CLASSES
from lightning_seg.errors import ConfigError
from lightning_seg.models import ResNetUNet, TorchvisionNet
from lightning_seg.models.weights import checkpoint_follows

COCO = "COCO_WITH_VOC_LABELS_V1"
DEEPLAB = "deeplabv3_mobilenet_v3_large"  # the smallest arch with an aux head
LRASPP = "lraspp_mobilenet_v3_large"  # no aux head, two output convs
OTHER_CLASSES = ["background", "road", "car", "tree", "sky"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# the torchvision model whose random state dict stands in for each weights enum's file
_FAKE_MODELS = {
    "DeepLabV3_MobileNet_V3_Large_Weights": lambda: tv_seg.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True
    ),
    "LRASPP_MobileNet_V3_Large_Weights": lambda: tv_seg.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=21
    ),
    "MobileNet_V3_Large_Weights": lambda: torchvision.models.mobilenet_v3_large(),
    "ResNet18_Weights": lambda: torchvision.models.resnet18(),
}


class FakeHub:
    """Stands in for torch.hub: ``state(entry_name)`` is what "downloading" that entry returns; ``fail``
    makes the next loads raise it (as torch.hub does offline)."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, torch.Tensor]] = {}
        self.fail: BaseException | None = None
        self.calls = 0

    def state(self, enum_name: str) -> dict[str, torch.Tensor]:
        if enum_name not in self.states:
            torch.manual_seed(len(self.states))
            model = _FAKE_MODELS[enum_name]()
            # non-zero running statistics and biases, so a freshly built layer can never equal them
            for value in model.state_dict().values():
                if value.is_floating_point():
                    value.uniform_(0.5, 1.5)
            self.states[enum_name] = {k: v.clone() for k, v in model.state_dict().items()}
        return self.states[enum_name]

    def get_state_dict(self, entry: WeightsEnum, *args, **kwargs) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return self.state(type(entry).__name__)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(
        WeightsEnum, "get_state_dict", lambda entry, *a, **k: fake.get_state_dict(entry, *a, **k)
    )
    monkeypatch.setattr(tv_net, "reachable", lambda url: True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return fake


def _equal(net: nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> list[str]:
    """Keys of ``state`` whose values equal the net's ``prefix + key`` entries."""
    ours = net.state_dict()
    return [k for k, v in state.items() if prefix + k in ours and torch.equal(ours[prefix + k], v)]


OUTPUT_CONVS = {
    DEEPLAB: ("classifier.4.", "aux_classifier.4."),
    LRASPP: ("classifier.low_classifier.", "classifier.high_classifier."),
}


@pytest.mark.parametrize("arch", [DEEPLAB, LRASPP])
def test_voc_classes_keep_the_whole_pretrained_net(hub: FakeHub, arch: str) -> None:
    # names compared loosely: case, spaces, "_" and "-" (the VOC data module says "background")
    names = [*VOC_CLASSES[:16], "Potted Plant", *VOC_CLASSES[17:]]
    net = TorchvisionNet(21, arch=arch, weights=COCO, class_names=names)
    pretrained = hub.state(type(tv_net.verify_torchvision_weights(arch, COCO, "")).__name__)
    assert net.head_is_pretrained
    assert set(net.model.state_dict()) == set(pretrained)
    assert len(_equal(net.model, pretrained)) == len(pretrained)
    with torch.no_grad():
        out = net.eval()(torch.randn(1, 3, 32, 32))
    assert out["mask"].shape == (1, 21, 32, 32) and ("aux" in out) == (arch == DEEPLAB)


@pytest.mark.parametrize("arch", [DEEPLAB, LRASPP])
def test_other_classes_get_new_output_convs_only(
    hub: FakeHub, arch: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        net = TorchvisionNet(5, arch=arch, weights=COCO, class_names=OTHER_CLASSES)
    assert not net.head_is_pretrained
    assert "21 categories of" in caplog.text and f"{COCO} vs the data's 5 classes" in caplog.text
    pretrained = hub.state(type(tv_net.verify_torchvision_weights(arch, COCO, "")).__name__)
    new = {k for k in pretrained if k.startswith(OUTPUT_CONVS[arch])}
    assert new and {k.rsplit(".", 1)[1] for k in new} == {"weight", "bias"}
    state = net.model.state_dict()
    for key in new:
        assert state[key].shape[0] == 5 and not torch.equal(state[key][:5], pretrained[key][:5])
    # the backbone and every other layer of both heads keep the pretrained values
    assert set(_equal(net.model, pretrained)) == set(pretrained) - new
    assert any(k.startswith("classifier.") for k in set(pretrained) - new)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 32, 32))["mask"].shape == (1, 5, 32, 32)


def test_same_count_other_names_replaces_the_head_and_no_names_compares_counts(hub: FakeHub) -> None:
    renamed = ["background", *(f"thing{i}" for i in range(20))]
    assert not TorchvisionNet(21, arch=LRASPP, weights=COCO, class_names=renamed).head_is_pretrained
    assert TorchvisionNet(21, arch=LRASPP, weights=COCO).head_is_pretrained  # built outside the module


def test_aux_head_loaded_then_dropped_when_not_wanted(hub: FakeHub) -> None:
    net = TorchvisionNet(5, arch=DEEPLAB, weights=COCO, aux_loss=False, class_names=OTHER_CLASSES)
    assert net.model.aux_classifier is None
    assert not [name for name, _ in net.named_parameters() if "aux" in name]
    pretrained = hub.state("DeepLabV3_MobileNet_V3_Large_Weights")
    kept = {k for k in pretrained if not k.startswith(("aux_classifier.", "classifier.4."))}
    assert set(_equal(net.model, pretrained)) == kept
    out = net(torch.randn(2, 3, 32, 32))
    assert set(out) == {"mask"}
    out["mask"].mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_bad_weight_names_are_refused_before_any_download(hub: FakeHub) -> None:
    with pytest.raises(ConfigError, match=f"unknown weights 'VOC' for {LRASPP}; valid: {COCO}"):
        TorchvisionNet(21, arch=LRASPP, weights="VOC")
    with pytest.raises(ConfigError, match="not both .*the full-model weights include the backbone"):
        TorchvisionNet(21, arch=LRASPP, weights=COCO, weights_backbone="IMAGENET1K_V1")
    with pytest.raises(ConfigError, match="class_names has 5 names for 21 classes"):
        TorchvisionNet(21, arch=LRASPP, weights=COCO, class_names=OTHER_CLASSES)
    assert hub.calls == 0


def test_nothing_is_downloaded_when_a_checkpoint_follows(hub: FakeHub) -> None:
    """Inside ``checkpoint_follows`` the nets have the trained architecture, random weights, no download."""
    trained = {
        "head": TorchvisionNet(5, arch=DEEPLAB, weights=COCO, aux_loss=False),
        "backbone": TorchvisionNet(5, arch=DEEPLAB, weights_backbone="IMAGENET1K_V1"),
        "resnet_unet": ResNetUNet(5, stage_blocks=(2, 2, 2, 2), encoder_weights="IMAGENET1K_V1"),
    }
    hub.fail = AssertionError("downloaded inside checkpoint_follows")
    with checkpoint_follows():
        rebuilt = {
            "head": TorchvisionNet(5, arch=DEEPLAB, weights=COCO, aux_loss=False),
            "backbone": TorchvisionNet(5, arch=DEEPLAB, weights_backbone="IMAGENET1K_V1"),
            "resnet_unet": ResNetUNet(5, stage_blocks=(2, 2, 2, 2), encoder_weights="IMAGENET1K_V1"),
        }
        with pytest.raises(ConfigError, match="unknown weights 'VOC'"):  # still checked
            TorchvisionNet(5, arch=DEEPLAB, weights="VOC")
    for name, net in rebuilt.items():
        net.load_state_dict(trained[name].state_dict())  # strict: the same keys and shapes
    assert not rebuilt["head"].head_is_pretrained


def test_pretrained_backbone_and_resnet_unet_encoder_load(hub: FakeHub) -> None:
    net = TorchvisionNet(5, arch=LRASPP, weights_backbone="MobileNet_V3_Large_Weights.IMAGENET1K_V1")
    features = {
        k.removeprefix("features."): v
        for k, v in hub.state("MobileNet_V3_Large_Weights").items()
        if k.startswith("features.")
    }
    assert len(_equal(net.backbone, features)) == len(features) == len(net.backbone.state_dict())
    unet = ResNetUNet(3, stage_blocks=(2, 2, 2, 2), encoder_weights="IMAGENET1K_V1")
    resnet = {k: v for k, v in hub.state("ResNet18_Weights").items() if not k.startswith("fc.")}
    assert len(_equal(unet.encoder, resnet)) == len(resnet) == len(unet.encoder.state_dict())


@pytest.mark.parametrize(
    "build",
    [
        lambda: TorchvisionNet(21, arch=LRASPP, weights=COCO),
        lambda: ResNetUNet(3, stage_blocks=(2, 2, 2, 2), encoder_weights="IMAGENET1K_V1"),
    ],
    ids=["torchvision_weights", "resnet_unet_encoder_weights"],
)
def test_failed_download_names_the_file_and_the_cache(hub: FakeHub, tmp_path: Path, build) -> None:
    hub.fail = URLError("[Errno -3] Temporary failure in name resolution")
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    with pytest.raises(ConfigError, match="could not fetch .*name resolution") as raised:
        build()
    message = str(raised.value)
    assert "\n" not in message and f"into {cache}/" in message
    assert ("lraspp_mobilenet_v3_large-d234d4ea.pth" in message) or ("resnet18-f37072fd.pth" in message)


def test_unreachable_server_fails_fast_unless_the_file_is_cached(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tv_net, "reachable", lambda url: False)
    with pytest.raises(ConfigError, match="download.pytorch.org cannot be reached; download https://"):
        TorchvisionNet(21, arch=LRASPP, weights=COCO)
    assert hub.calls == 0
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "lraspp_mobilenet_v3_large-d234d4ea.pth").touch()  # torch.hub loads it without the network
    assert TorchvisionNet(21, arch=LRASPP, weights=COCO).head_is_pretrained


def test_weights_normalization_and_pretrained_head_named() -> None:
    for arch in (DEEPLAB, "fcn_resnet50"):
        normalization = TorchvisionNet.weights_normalization(arch=arch, weights=COCO, aux_loss=None)
        assert (normalization.mean, normalization.std) == (IMAGENET_MEAN, IMAGENET_STD)
        assert COCO in normalization.source
    assert (
        TorchvisionNet.weights_normalization(arch=LRASPP, weights_backbone="IMAGENET1K_V1").std
        == IMAGENET_STD
    )
    assert TorchvisionNet.weights_normalization(arch=LRASPP, weights=None, class_names=None) is None
    assert ResNetUNet.weights_normalization(encoder_weights="IMAGENET1K_V1").mean == IMAGENET_MEAN
    assert ResNetUNet.weights_normalization(encoder_weights=None, base_width=16) is None
    with pytest.raises(ConfigError, match="unknown weights 'VOC'"):
        TorchvisionNet.weights_normalization(arch=LRASPP, weights="VOC")
    assert TorchvisionNet.pretrained_head_named({"arch": LRASPP, "weights": COCO})
    assert not TorchvisionNet.pretrained_head_named(
        {"arch": LRASPP, "weights": None, "weights_backbone": "X"}
    )


def test_fit_fine_tunes_coco_weights_on_other_classes(hub: FakeHub, run_root: Path) -> None:
    """``fit`` from the COCO weights on the synthetic shapes (5 classes): the head is replaced, the net trains
    and its checkpoint is written."""
    args = [a for a in tiny_args(run_root) if not a.startswith("--model.init_args.net.")]
    fit = run_cli(
        [
            "fit",
            *args,
            "--model.init_args.net=lightning_seg.models.TorchvisionNet",
            f"--model.init_args.net.init_args.arch={LRASPP}",
            f"--model.init_args.net.init_args.weights={COCO}",
            "--data.init_args.num_train=4",
            "--data.init_args.num_val=2",
            "--data.init_args.batch_size=2",
        ]
    )
    assert hub.calls == 1
    net = fit.model.net
    assert not net.head_is_pretrained and net.model.classifier.high_classifier.out_channels == 5
    pretrained = hub.state("LRASPP_MobileNet_V3_Large_Weights")
    trained = {k: v.cpu() for k, v in net.model.state_dict().items()}
    assert not torch.equal(trained["backbone.0.0.weight"], pretrained["backbone.0.0.weight"])  # it trained
    last = Path(fit.trainer.checkpoint_callback.last_model_path)
    state = torch.load(last, weights_only=True)["state_dict"]
    assert state["net.model.classifier.high_classifier.weight"].shape[0] == 5
    summary = json.loads((Path(fit.trainer.log_dir) / "summary.json").read_text())
    assert summary["status"] == "completed"
    # predicting from the checkpoint, and loading it, download nothing (offline here) and rebuild the net
    hub.fail = OSError("offline")
    net_args = [
        "--model.init_args.net=lightning_seg.models.TorchvisionNet",
        f"--model.init_args.net.init_args.arch={LRASPP}",
        f"--model.init_args.net.init_args.weights={COCO}",
    ]
    predict = run_cli(["predict", *args, *net_args, "--ckpt_path", str(last)])
    assert len(list((Path(predict.trainer.log_dir) / "predictions").glob("*_index.png"))) == 4
    assert_checkpoint_rebuilds(last, fit.model, side=32)
    assert hub.calls == 1
