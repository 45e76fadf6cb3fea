"""TransformersNet (the transformers library's segmentation models), class mappings for zero-shot baselines, and
the normalisation that follows the weights. Tiny random configs and local folders only: nothing is downloaded."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from data_trees import voc_tree
from helpers import TinyRun, assert_checkpoint_rebuilds, assert_one_line_error, tiny_args
from jsonargparse import Namespace

from lightning_seg.cli import run_cli
from lightning_seg.cli.pretrained import link_normalization
from lightning_seg.data.voc import VOC_CLASSES
from lightning_seg.errors import ConfigError
from lightning_seg.models import SMPNet, TransformersNet
from lightning_seg.models.class_mapping import ClassMapping

try:
    import transformers
except ImportError:  # the tests of SMP, timm, class mappings and normalisation records run without it
    transformers = None
needs_transformers = pytest.mark.skipif(
    transformers is None, reason="needs transformers (pip install 'lightning_seg[hf]')"
)


def _four_stage_backbone(model_type: str, **settings: object) -> dict:
    """A tiny transformers backbone config: four stages of one block, each stage's features out."""
    return {
        "model_type": model_type,
        "depths": [1, 1, 1, 1],
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
        **settings,
    }


SEGFORMER = {
    "model_type": "segformer",
    "hidden_sizes": [8, 16, 24, 32],
    "decoder_hidden_size": 16,
    "depths": [1, 1, 1, 1],
    "num_attention_heads": [1, 1, 1, 1],
}
UPERNET = {
    "model_type": "upernet",
    "backbone_config": _four_stage_backbone("convnext", hidden_sizes=[8, 16, 24, 32]),
    "hidden_size": 16,
    "auxiliary_channels": 8,
}
DPT = {
    "model_type": "dpt",
    "hidden_size": 16,
    "num_hidden_layers": 4,
    "num_attention_heads": 1,
    "intermediate_size": 16,
    "image_size": 64,
    "patch_size": 16,
    "neck_hidden_sizes": [8, 8, 16, 16],
    "fusion_hidden_size": 16,
    "backbone_out_indices": [0, 1, 2, 3],
}
MASK2FORMER = {
    "model_type": "mask2former",
    "backbone_config": _four_stage_backbone("swin", embed_dim=8, num_heads=[1, 1, 1, 1], window_size=2),
    "hidden_dim": 32,
    "mask_feature_size": 32,
    "num_queries": 6,
    "encoder_layers": 1,
    "decoder_layers": 2,
    "dim_feedforward": 32,
    "num_attention_heads": 1,
    "encoder_feedforward_dim": 32,
    "feature_size": 32,
}
DETR = {
    "model_type": "detr",
    "backbone_config": _four_stage_backbone("resnet", embedding_size=8, hidden_sizes=[8, 16, 24, 32]),
    "d_model": 32,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_ffn_dim": 32,
    "decoder_ffn_dim": 32,
    "encoder_attention_heads": 8,  # DETR's mask head needs d_model + heads divisible by 8
    "decoder_attention_heads": 8,
    "num_queries": 6,
}
CONFIGS = {"segformer": SEGFORMER, "upernet": UPERNET, "dpt": DPT, "mask2former": MASK2FORMER, "detr": DETR}
# a COCO-panoptic-like label set: DETR's id gaps ("N/A"), four VOC classes, and categories VOC calls background
COCO_LIKE = ["N/A", "person", "bicycle", "car", "banner", "dining table", "wall-other-merged", "tv"]


def _net_args(root: Path, net: dict, *extra: str, epochs: int = 1) -> list[str]:
    """tiny_args with another net (the U-Net's own overrides left out)."""
    args = [a for a in tiny_args(root, epochs=epochs) if "net.init_args" not in a]
    return [*args, f"--model.init_args.net={json.dumps(net)}", *extra]


def _voc_args(root: Path, net: dict, voc: Path) -> list[str]:
    """_net_args on a tiny VOC tree (32 px, two images a batch) instead of the synthetic shapes."""
    args = [a for a in _net_args(root, net) if not a.startswith("--data.init_args.")]
    return [
        *args,
        "--data=lightning_seg.data.VOCDataModule",
        f"--data.init_args.root={voc}",
        "--data.init_args.size=[32, 32]",
        "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=0",
        "--data.init_args.allow_absent_classes=true",  # a few tiny masks cannot hold all 21 classes
    ]


# ----------------------------------------------------------------------------------------------- the wrapper
@needs_transformers
@pytest.mark.parametrize("family", list(CONFIGS))
def test_each_family_gives_logits_at_the_input_size_with_a_backbone(family: str) -> None:
    net = TransformersNet(num_classes=4, config=CONFIGS[family], class_names=["bg", "a", "b", "c"])
    with torch.inference_mode():  # as when fit sets up; the probe works even here
        net.freeze_unused_parameters()
    x = torch.randn(2, 3, 64, 96)  # not square: DPT's square-grid head is padded for
    out = net(x)
    assert set(out) == {"mask"} and out["mask"].shape == (2, 4, 64, 96) and out["mask"].dtype == torch.float32
    assert torch.isfinite(out["mask"]).all()
    out["mask"].mean().backward()
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in net.parameters() if p.requires_grad)
    backbone = {id(p) for p in net.backbone.parameters()}
    assert backbone and backbone < {id(p) for p in net.parameters()}
    assert not net.head_is_pretrained  # random weights
    if family == "detr":
        assert any("bbox_predictor" in name for name in net.unused)  # boxes play no part in segmentation


@needs_transformers
def test_query_based_logits_are_the_log_of_the_semantic_score() -> None:
    """Mask2Former's logits are log Σ_q softmax(class_q)[c]·sigmoid(mask_q), upsampled: transformers' own
    semantic post-processing gives the same class map."""
    net = TransformersNet(num_classes=4, config=MASK2FORMER).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = net(x)["mask"].argmax(1)
        raw = net.model(pixel_values=x)
    processor = transformers.Mask2FormerImageProcessor()
    theirs = processor.post_process_semantic_segmentation(raw, target_sizes=[(64, 64)])[0]
    assert (ours[0] == theirs).float().mean() > 0.97  # they resize the mask logits first; borders may differ


@needs_transformers
def test_config_errors_are_one_line() -> None:
    with pytest.raises(ConfigError, match="exactly one of model"):
        TransformersNet(num_classes=2)
    with pytest.raises(ConfigError, match="needs a model_type"):
        TransformersNet(num_classes=2, config={"depths": [1]})
    with pytest.raises(ConfigError, match="not a segmentation model"):
        TransformersNet(num_classes=2, config={"model_type": "bert"})


@needs_transformers
def test_a_hub_model_offline_names_the_weights_and_a_local_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: "no network", whatever CI has
    with pytest.raises(
        ConfigError, match=r"could not fetch the config of transformers model 'nobody/none'.*model: DIR"
    ):
        TransformersNet(num_classes=2, model="nobody/none")


# ----------------------------------------------------------------------------------------------- class mapping
def test_class_mapping_adds_up_each_class_of_categories(caplog: pytest.LogCaptureFixture) -> None:
    voc = list(VOC_CLASSES)
    with caplog.at_level(logging.INFO):
        mapping = ClassMapping(COCO_LIKE, voc, "coco_to_voc", "test")
    scores = torch.rand(2, len(COCO_LIKE), 3, 5)
    mapped = mapping(scores.movedim(1, -1)).movedim(-1, 1)
    assert mapped.shape == (2, 21, 3, 5)
    background = scores[:, [0, 4, 6]].sum(1)  # N/A, banner, wall-other-merged
    torch.testing.assert_close(mapped[:, 0], background)
    torch.testing.assert_close(mapped[:, voc.index("person")], scores[:, 1])
    torch.testing.assert_close(mapped[:, voc.index("diningtable")], scores[:, 5])
    torch.testing.assert_close(mapped[:, voc.index("tvmonitor")], scores[:, 7])
    assert mapped[:, voc.index("sheep")].abs().max() == 0
    torch.testing.assert_close(mapped.sum(1), scores.sum(1))  # no mass lost or counted twice
    assert mapping.unmapped == ["banner", "wall-other-merged"]  # the placeholder is not listed
    lines = [r.getMessage() for r in caplog.records if "class_mapping coco_to_voc" in r.getMessage()]
    assert lines[0] == (
        "test: class_mapping coco_to_voc: categories without an entry count as background (2 of 8): "
        "banner, wall-other-merged"
    )
    assert (
        "classes never predicted: aeroplane" in lines[1] and "entries the model lacks: airplane" in lines[1]
    )


def test_class_mapping_refuses_classes_the_data_lacks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="names classes the data does not have: .*aeroplane"):
        ClassMapping(COCO_LIKE, ["background", "person"], "coco_to_voc", "test")
    with pytest.raises(ConfigError, match="no such table"):
        ClassMapping(COCO_LIKE, ["background"], "coco_to_nothing", "test")
    table = tmp_path / "mine.yaml"
    table.write_text("map: {person: person}\n")
    with pytest.raises(ConfigError, match="expected 'unmapped: <class>'"):
        ClassMapping(COCO_LIKE, ["background", "person"], str(table), "test")


def _coco_detr_folder(root: Path, mean: float = 0.5, std: float = 0.5) -> Path:
    """A random-weight DETR panoptic with a COCO-like label set and its image processor, saved as a user
    would after `hf download` (a local folder)."""
    config = transformers.AutoConfig.for_model(
        "detr", **{k: v for k, v in DETR.items() if k != "model_type"}, id2label=dict(enumerate(COCO_LIKE))
    )
    torch.manual_seed(0)
    transformers.DetrForSegmentation(config).save_pretrained(root)
    transformers.DetrImageProcessor(image_mean=[mean] * 3, image_std=[std] * 3).save_pretrained(root)
    return root


@needs_transformers
def test_zero_shot_test_of_a_coco_model_on_voc(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`test` with no checkpoint scores a COCO-label model on VOC through the shipped table; the data's
    normalisation comes from the model's image processor (0.5/0.5)."""
    model_dir = _coco_detr_folder(tmp_path / "detr")
    voc = voc_tree(tmp_path / "voc", {"train": 2, "val": 3})
    runs = tmp_path / "runs"
    net = {
        "class_path": "lightning_seg.models.TransformersNet",
        "init_args": {"model": str(model_dir), "class_mapping": "coco_to_voc"},
    }
    with caplog.at_level(logging.INFO):
        cli = run_cli(["test", *_voc_args(runs, net, voc)])
    assert cli.datamodule.mean == (0.5, 0.5, 0.5) and cli.model.mean == (0.5, 0.5, 0.5)
    assert cli.model.net.head_is_pretrained
    metric = cli.trainer.callback_metrics["test/mIoU"]
    assert 0.0 <= float(metric) <= 1.0
    listed = [r.getMessage() for r in caplog.records if "without an entry" in r.getMessage()]
    assert len(listed) == 1 and listed[0].endswith("banner, wall-other-merged")


@needs_transformers
def test_zero_shot_refused_when_the_head_is_replaced(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Without a mapping the COCO labels are not the data's classes: the head is new, so `test` without a
    checkpoint would score random weights, and says so."""
    model_dir = _coco_detr_folder(tmp_path / "detr")
    runs = tmp_path / "runs"
    net = {"class_path": "lightning_seg.models.TransformersNet", "init_args": {"model": str(model_dir)}}
    assert run_cli(["test", *_net_args(runs, net)]) is None
    # transformers' load report and a normalisation warning come first: one error line, the last one
    err = capsys.readouterr().err.strip().splitlines()
    errors = "\n".join(line for line in err if line.startswith("lightning-seg: error:"))
    line = assert_one_line_error(
        errors,
        prefix="lightning-seg: error: test without --ckpt_path: TransformersNet replaced the pretrained",
    )
    assert err[-1] == line


# ----------------------------------------------------------------------------------------------- fit, reload
@needs_transformers
@pytest.mark.parametrize("family", ["segformer", "mask2former"])
def test_fit_predict_and_reload_through_the_cli(tmp_path: Path, family: str) -> None:
    runs = tmp_path / "runs"
    net = {"class_path": "lightning_seg.models.TransformersNet", "init_args": {"config": CONFIGS[family]}}
    fit = run_cli(["fit", *_net_args(runs, net)])
    last = Path(fit.trainer.checkpoint_callback.last_model_path)
    assert last.is_file() and torch.isfinite(fit.trainer.callback_metrics["train/loss"])
    predict = run_cli(["predict", *_net_args(runs, net), "--ckpt_path", str(last)])
    written = sorted((Path(predict.trainer.log_dir) / "predictions").glob("*_index.png"))
    assert len(written) == 4
    # 64 px: Mask2Former's GroupNorm needs more than one value per group at stride 32
    assert_checkpoint_rebuilds(last, fit.model, side=64)


@needs_transformers
def test_fine_tuning_a_local_model_keeps_its_weights_but_the_head(tmp_path: Path) -> None:
    """A local pretrained folder with other labels: every weight but the class head is the folder's."""
    model_dir = _coco_detr_folder(tmp_path / "detr")
    saved = transformers.DetrForSegmentation.from_pretrained(model_dir).state_dict()
    net = TransformersNet(num_classes=3, model=str(model_dir), class_names=["bg", "a", "b"])
    ours = net.model.state_dict()
    assert ours["detr.class_labels_classifier.weight"].shape[0] == 4  # 3 classes + "no object"
    same = [
        k for k in saved if k in ours and ours[k].shape == saved[k].shape and torch.equal(ours[k], saved[k])
    ]
    assert set(saved) - set(same) == {
        "detr.class_labels_classifier.weight",
        "detr.class_labels_classifier.bias",
    }
    assert not net.head_is_pretrained


# ----------------------------------------------------------------------------------------------- normalisation
def _config(net: dict, mean: list[float] | None = None, std: list[float] | None = None) -> Namespace:
    return Namespace(
        model=Namespace(
            init_args=Namespace(
                net=Namespace(class_path=net["class_path"], init_args=Namespace(**net["init_args"]))
            )
        ),
        data=Namespace(init_args=Namespace(mean=mean, std=std)),
    )


@needs_transformers
def test_normalisation_follows_the_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # a timm encoder whose weights expect 0.5/0.5 (timm's pretrained config: no download)
    smp_net = {
        "class_path": "lightning_seg.models.SMPNet",
        "init_args": {"encoder_name": "tu-vit_tiny_patch16_224.augreg_in21k", "encoder_weights": "imagenet"},
    }
    config = _config(smp_net)
    link_normalization(config)
    assert config.data.init_args.mean == [0.5, 0.5, 0.5] and config.data.init_args.std == [0.5, 0.5, 0.5]
    # a transformers processor in [0, 255] units (rescale off): converted to the data module's [0, 1]
    model_dir = _coco_detr_folder(tmp_path / "detr", mean=127.5, std=63.75)
    (model_dir / "preprocessor_config.json").write_text(
        json.dumps({**json.loads((model_dir / "preprocessor_config.json").read_text()), "do_rescale": False})
    )
    found = TransformersNet.weights_normalization(model=str(model_dir))
    assert found.mean == (0.5, 0.5, 0.5) and found.std == (0.25, 0.25, 0.25)
    # set by the config to other values: kept, with one warning line
    config = _config(smp_net, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    link_normalization(config)
    assert config.data.init_args.mean == [0.485, 0.456, 0.406]
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lightning-seg")]
    assert (
        len(err) == 1
        and "timm vit_tiny_patch16_224.augreg_in21k expects: mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5)"
        in err[0]
    )
    # random weights: the data module's own defaults stand
    config = _config({"class_path": "lightning_seg.models.SMPNet", "init_args": {"encoder_name": "resnet18"}})
    link_normalization(config)
    assert config.data.init_args.mean is None


def test_smp_weights_offline_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """SMP's own encoders keep their settings next to their weights on the Hub."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(
        ConfigError,
        match=r"could not fetch the settings of SMP encoder_weights 'imagenet' of resnet18.*HF_HOME",
    ):
        SMPNet.weights_normalization(encoder_name="resnet18", encoder_weights="imagenet")


def test_a_timm_universal_encoder_trains_through_smpnet(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    net = {
        "class_path": "lightning_seg.models.SMPNet",
        "init_args": {
            "arch": "FPN",
            "encoder_name": "tu-resnet10t",
            "decoder_kwargs": {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
        },
    }
    fit = run_cli(["fit", *_net_args(runs, net)])
    assert torch.isfinite(fit.trainer.callback_metrics["train/loss"])
    assert fit.model.net.backbone.model.__class__.__module__.startswith("timm")


def test_an_evaluation_normalises_as_its_checkpoint_trained(
    run_root: Path, tiny_run: TinyRun, capsys: pytest.CaptureFixture
) -> None:
    """The synthetic data trains with 0.5/0.25; `test` of its checkpoint with mean/std null uses the recorded
    values, not the data module's ImageNet default, and other values given on purpose get one warning."""
    runs, last = run_root, str(tiny_run.last)
    null = ["--data.init_args.mean=null", "--data.init_args.std=null"]
    evaluation = run_cli(["test", *tiny_args(runs), *null, "--ckpt_path", last])
    assert evaluation.datamodule.mean == (0.5, 0.5, 0.5) and evaluation.datamodule.std == (0.25, 0.25, 0.25)
    capsys.readouterr()
    other = ["--data.init_args.mean=[0.4, 0.4, 0.4]"]
    evaluation = run_cli(["test", *tiny_args(runs), *other, "--ckpt_path", last])
    assert evaluation.model.mean == (0.4, 0.4, 0.4)
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning: data.mean" in line]
    assert warned == [
        "lightning-seg: warning: data.mean (0.4, 0.4, 0.4) and data.std (0.25, 0.25, 0.25) differ from what the "
        "checkpoint's run expects: mean (0.5, 0.5, 0.5), std (0.25, 0.25, 0.25); set both to null to use those"
    ]


def test_a_resume_refuses_another_normalisation(
    run_root: Path, tiny_run: TinyRun, capsys: pytest.CaptureFixture
) -> None:
    runs, last = run_root, str(tiny_run.last)
    capsys.readouterr()
    resumed = run_cli(
        ["fit", *tiny_args(runs, epochs=2), "--data.init_args.std=[0.3, 0.3, 0.3]", "--ckpt_path", last]
    )
    assert resumed is None
    assert_one_line_error(
        capsys,
        prefix="lightning-seg: error: resuming: data.mean (0.5, 0.5, 0.5) and data.std (0.3, 0.3, 0.3)",
    )


@needs_transformers
def test_scores_stay_float32_under_bf16_autocast() -> None:
    """The model runs in bf16; the sum over queries of its outputs must not (bf16 einsum moved argmaxes)."""
    net = TransformersNet(num_classes=4, config=MASK2FORMER).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = net(x)["mask"]
        raw = net.model(pixel_values=x)
    assert mixed.dtype == torch.float32
    classes = raw.class_queries_logits.double().softmax(-1)[..., :-1]
    scores = torch.einsum("bqc,bqhw->bchw", classes, raw.masks_queries_logits.double().sigmoid())
    expected = torch.nn.functional.interpolate(scores, size=(64, 64), mode="bilinear").clamp_min(1e-6).log()
    torch.testing.assert_close(mixed.double(), expected, atol=1e-4, rtol=1e-4)


@needs_transformers
def test_a_checkpoint_rebuilds_without_the_model_folder(tmp_path: Path) -> None:
    """The record keeps the resolved transformers config: the folder the run started from may be gone, for
    `predict --ckpt_path` with the run's own config as for `lightning_seg.load`."""
    model_dir = _coco_detr_folder(tmp_path / "detr")
    runs = tmp_path / "runs"
    net = {
        "class_path": "lightning_seg.models.TransformersNet",
        "init_args": {"model": str(model_dir), "class_mapping": "coco_to_voc"},
    }
    voc = voc_tree(tmp_path / "voc", {"train": 2, "val": 2})
    fit = run_cli(["fit", *_voc_args(runs, net, voc)])
    last = Path(fit.trainer.checkpoint_callback.last_model_path)
    model_dir.rename(tmp_path / "moved")
    predict = run_cli(
        ["predict", *_voc_args(runs, net, voc), "--ckpt_path", str(last)]
    )  # still names the folder
    assert (
        predict is not None
        and len(list((Path(predict.trainer.log_dir) / "predictions").glob("*_index.png"))) == 2
    )
    loaded = assert_checkpoint_rebuilds(last, fit.model, side=64)
    assert loaded.module.net.mapping is not None and loaded.module.mean == (0.5, 0.5, 0.5)


@needs_transformers
def test_backbone_finetuning_leaves_what_the_net_froze_frozen(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    net = {"class_path": "lightning_seg.models.TransformersNet", "init_args": {"config": DPT}}
    callback = '--trainer.callbacks+={"class_path": "lightning_seg.callbacks.BackboneFinetuning", "init_args": {"unfreeze_at_epoch": 1}}'
    fit = run_cli(["fit", *_net_args(runs, net, callback, epochs=2), "--data.init_args.size=64"])
    net = fit.model.net
    assert net.unused and "model.dpt.layernorm.weight" in net.unused  # the ViT's final norm: never used
    frozen = {name for name, p in net.named_parameters() if not p.requires_grad}
    assert set(net.unused) <= frozen
    assert all(
        p.requires_grad
        for name, p in net.backbone.named_parameters(prefix="model.dpt")
        if name not in net.unused
    )
