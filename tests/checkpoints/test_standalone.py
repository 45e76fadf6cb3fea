"""Checkpoints that stand alone (lightning_seg.checkpoints) and the notebook API (lightning_seg.segmenter)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from data_trees import folder_args, folder_tree
from helpers import TinyRun, tiny_args
from torchvision.io import read_image

import lightning_seg
from lightning_seg import SegmentationModule
from lightning_seg.checkpoints.load import write_bundle
from lightning_seg.checkpoints.read import read_checkpoint
from lightning_seg.checkpoints.record import RECORD_FORMAT, RECORD_KEY
from lightning_seg.cli import run_cli
from lightning_seg.errors import ConfigError

CHAIN = [
    "--model.init_args.postprocess+=lightning_seg.postprocess.ClassThresholds",
    "--model.init_args.postprocess+=lightning_seg.postprocess.SmallComponents",
    "--model.init_args.postprocess.min_area=4",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_run_once: Path) -> Path:
    """The default synthetic config, tiny, one epoch (the session's run, copied): its last checkpoint."""
    run = tmp_path_factory.mktemp("standalone") / "runs" / "default" / "version_0"
    shutil.copytree(tiny_run_once, run)
    return run / "checkpoints" / "last.ckpt"


def test_checkpoint_loads_with_weights_only_and_rebuilds_its_model(trained: Path) -> None:
    checkpoint = torch.load(trained, weights_only=True)  # plain data only: the safe loader reads it all
    record = checkpoint[RECORD_KEY]
    assert record["format"] == RECORD_FORMAT
    init_args = record["model"]["init_args"]
    assert record["model"]["class_path"].endswith("SegmentationModule")
    assert init_args["net"]["class_path"] == "lightning_seg.models.UNet"
    assert init_args["net"]["init_args"]["base_width"] == 4
    assert init_args["num_classes"] == 5 and init_args["class_names"][0] == "background"
    assert init_args["mean"] == [0.5, 0.5, 0.5] and init_args["ignore_index"] == 255
    assert record["input"] == {"size": [32, 32], "image_value_range": None, "eval_augmentations": None}

    module = SegmentationModule.load_from_checkpoint(trained)
    assert not module.training and module.class_names == init_args["class_names"]
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(module.state_dict()[key], value), key


def test_segmenter_predicts_what_predict_writes_with_tuned_thresholds(tmp_path: Path) -> None:
    """Folder data of three sizes, batched at 24×24, thresholds + small components: `load(ckpt).predict`
    on the predicted images gives predict's index PNGs pixel for pixel, and uses the tuned thresholds."""
    data = folder_tree(tmp_path / "data", count=12, sizes=((32, 48), (40, 40), (27, 33)))
    runs = tmp_path / "runs"
    common = folder_args(data)
    fit = run_cli(["fit", *tiny_args(runs, *common, *CHAIN, epochs=2)])
    best = Path(fit.trainer.checkpoint_callback.best_model_path)
    assert run_cli(["tune", *tiny_args(runs, *common, *CHAIN), "--ckpt_path", str(best)]) is not None
    predicted = run_cli(["predict", *tiny_args(runs, *common, *CHAIN), "--ckpt_path", str(best)])
    written = sorted((Path(predicted.trainer.log_dir) / "predictions").glob("*_index.png"))
    names = [path.name.removesuffix("_index.png") for path in written]
    assert len(names) == 4

    model = lightning_seg.load(best, batch_size=3)
    assert model.module.postprocess.thresholds.thresholds is not None  # the file beside the checkpoint
    results = model.predict([data / "images" / f"{name}.png" for name in names], probabilities=True)
    for path, result in zip(written, results, strict=True):
        assert torch.equal(result.classes, read_image(str(path))[0]), path.name
        assert result.probabilities.shape == (3, *result.classes.shape)

    # a folder gives every image in it, named by stem; one file gives one result
    everything = model.predict(data / "images")
    assert [r.name for r in everything] == sorted(f"s{i}" for i in range(12))
    one = model.predict(data / "images" / f"{names[0]}.png")
    assert torch.equal(one.classes, results[0].classes)

    # the bundle carries the thresholds: away from the file beside the checkpoint, it predicts the same,
    # in Python and as --ckpt_path of the CLI
    source = read_checkpoint(str(best), True)
    bundle = write_bundle(model.module, source, best, tmp_path / "deploy" / "model.ckpt")
    assert torch.load(bundle, weights_only=True)[RECORD_KEY]["thresholds"]["class_names"] == ["a", "b", "c"]
    again = lightning_seg.load(bundle).predict([data / "images" / f"{name}.png" for name in names])
    assert all(torch.equal(a.classes, b.classes) for a, b in zip(again, results, strict=True))
    from_bundle = run_cli(["predict", *tiny_args(runs, *common, *CHAIN), "--ckpt_path", str(bundle)])
    for path in written:
        other = Path(from_bundle.trainer.log_dir) / "predictions" / path.name
        assert torch.equal(read_image(str(other)), read_image(str(path))), path.name


def test_segmenter_takes_tensors(trained: Path) -> None:
    model = lightning_seg.load(trained)
    image = torch.randint(0, 256, (3, 37, 45), dtype=torch.uint8)
    one = model.predict(image)
    assert one.classes.shape == (37, 45) and one.classes.dtype == torch.uint8
    # a float image in [0, 1] is the same image (the data path reads 8-bit images)
    assert torch.equal(model.predict(image.float() / 255).classes, one.classes)
    batch = model.predict(torch.stack([image, image]))
    assert len(batch) == 2 and torch.equal(batch[1].classes, one.classes)
    with pytest.raises(ConfigError, match=r"float image with values in \[-1"):
        model.predict(image.float() / 128 - 1)
    with pytest.raises(ConfigError, match="expected a 3×H×W"):
        model.predict(torch.zeros(4, 8, 8))


def test_bad_checkpoints_are_one_line(trained: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(trained.read_bytes()[:5000])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    for path, needle in (
        (truncated, "not a readable checkpoint (truncated or corrupt)"),
        (foreign, "not a Lightning checkpoint"),
        (tmp_path / "missing.ckpt", "no such file"),
    ):
        with pytest.raises(ConfigError, match=r"^checkpoint .*") as error:
            lightning_seg.load(path)
        assert needle in str(error.value) and "\n" not in str(error.value)


def test_checkpoint_without_record_loads_with_its_config(trained: Path, tmp_path: Path) -> None:
    """A checkpoint written before the record: one line pointing at config.yaml, which then loads it."""
    checkpoint = torch.load(trained, weights_only=True)
    del checkpoint[RECORD_KEY]
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    old = run / "checkpoints" / "old.ckpt"
    torch.save(checkpoint, old)
    (run / "config.yaml").write_text((trained.parent.parent / "config.yaml").read_text())
    with pytest.raises(ConfigError, match=r"holds no model record .* config=.*config.yaml"):
        lightning_seg.load(old)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    old_model = lightning_seg.load(old, config=run / "config.yaml")
    assert torch.equal(old_model.predict(image).classes, lightning_seg.load(trained).predict(image).classes)


def test_a_record_naming_pretrained_weights_rebuilds_offline(trained: Path) -> None:
    """A run trained from ImageNet weights records them; rebuilding from its checkpoint must not fetch them
    (the checkpoint's weights replace them; offline, a download would fail)."""
    from lightning_seg.checkpoints.record import build_module

    record = torch.load(trained, weights_only=True)[RECORD_KEY]
    record["model"]["init_args"]["net"] = {
        "class_path": "lightning_seg.models.ResNetUNet",
        "init_args": {"encoder_weights": "IMAGENET1K_V1"},
    }
    module = build_module(record)
    assert type(module.net).__name__ == "ResNetUNet"
    assert record["model"]["init_args"]["net"]["init_args"]["encoder_weights"] == "IMAGENET1K_V1"  # untouched


def test_a_bundle_ignores_the_thresholds_path_of_its_config(
    tmp_path: Path, run_root: Path, tiny_run: TinyRun
) -> None:
    """A config naming its thresholds file (ClassThresholds.path): the bundle carries the thresholds, and
    loads away from that file (whose checksum names the training checkpoint, not the bundle)."""
    runs, last = run_root, tiny_run.last
    assert run_cli(["tune", *tiny_args(runs), "--ckpt_path", str(last)]) is not None
    named = tmp_path / "named.thresholds.json"
    last.with_name(last.stem + ".thresholds.json").rename(named)
    chain = [
        "--model.init_args.postprocess+=lightning_seg.postprocess.ClassThresholds",
        f"--model.init_args.postprocess.path={named}",
    ]
    exported = run_cli(
        ["export", *tiny_args(runs, *chain), "--ckpt_path", str(last), "--formats=[torch_export]"]
    )
    bundle = Path(exported.trainer.default_root_dir) / "model.ckpt"
    steps = torch.load(bundle, weights_only=True)[RECORD_KEY]["model"]["init_args"]["postprocess"]
    assert "path" not in steps[0]["init_args"]
    named.unlink()
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    model = lightning_seg.load(bundle)
    assert model.module.postprocess.thresholds.thresholds is not None
    assert model.predict(image).classes.shape == (32, 32)
