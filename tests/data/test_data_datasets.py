"""CamVid, Oxford pets, VOC, MSD and COCO modules on tiny trees in their real layouts (plus the real
CamVid copy where it is present), and the example data configs."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightning_seg.data import (
    CamVidDataModule,
    COCOSemanticDataModule,
    MSDDataModule,
    OxfordPetDataModule,
    SegDataModule,
    VOCDataModule,
)
from lightning_seg.data.base import mask_wire_dtype
from lightning_seg.data.camvid import CAMVID_CLASSES
from lightning_seg.data.io import read_mask
from lightning_seg.errors import ConfigError
from tests.data_trees import (
    block_mask,
    camvid_tree,
    coco_tree,
    msd_tree,
    pets_tree,
    real_camvid_root,
    voc_kaggle_tree,
    voc_tree,
)

REPO = Path(__file__).resolve().parents[2]
CAMVID = real_camvid_root()
needs_camvid = pytest.mark.skipif(
    not (CAMVID / "trainannot").is_dir(), reason=f"CamVid not found at {CAMVID}"
)


def first_batch(dm: SegDataModule, split: str = "train") -> dict:
    return next(iter(dm._loader(split, shuffle=False)))


def assert_labels(mask: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    # a batch's masks travel in the narrowest dtype (widened on the device), a sample's are int64
    assert mask.dtype == mask_wire_dtype(num_classes, ignore_index) or mask.dtype == torch.int64
    assert bool(((mask >= 0) & (mask < num_classes) | (mask == ignore_index)).all()), mask.unique()


# ------------------------------------------------------------------------------------------- CamVid
def test_camvid_fake_tree(tmp_path: Path):
    root = camvid_tree(tmp_path / "camvid")
    dm = CamVidDataModule(str(root), size=None, batch_size=2)
    assert dm.num_classes == 11 and dm.ignore_index == 11 and dm.class_names == CAMVID_CLASSES
    dm.setup("fit")
    assert (len(dm.datasets["train"]), len(dm.datasets["val"])) == (6, 2)
    batch = first_batch(dm)
    assert batch["image"].shape == (2, 3, 36, 48) and batch["mask"].shape == (2, 36, 48)
    assert_labels(batch["mask"], 11, 11)
    stored = read_mask(root / "trainannot" / f"{batch['name'][0]}.png")[0].long()
    assert torch.equal(batch["mask"][0], stored)  # 11 stays 11 = ignore_index
    dm.setup("predict")
    assert len(dm.datasets["predict"]) == 3 and "mask" not in dm.datasets["predict"][0]


def test_camvid_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = camvid_tree(tmp_path / "elsewhere", counts={"train": 2, "val": 1})
    monkeypatch.setenv("LIGHTNING_SEG_CAMVID", str(root))
    assert CamVidDataModule().root == root
    with pytest.raises(ConfigError, match=r"elsewhere/test: folder not found; CamVid needs"):
        CamVidDataModule().setup("test")


@needs_camvid
def test_camvid_real_data_batch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("LIGHTNING_SEG_CACHE", str(tmp_path / "cache"))
    dm = CamVidDataModule(str(CAMVID), batch_size=4)
    dm.setup("fit")
    assert (len(dm.datasets["train"]), len(dm.datasets["val"])) == (367, 101)
    batch = first_batch(dm)
    assert batch["image"].shape == (4, 3, 360, 480) and batch["image"].dtype == torch.uint8
    assert_labels(batch["mask"], 11, 11)
    assert (batch["mask"] == 11).any()  # real frames have unlabelled pixels
    prepared = dm.prepare_batch(batch, train=True)
    assert prepared["image"].shape == (4, 3, 360, 480) and prepared["image"].dtype == torch.float32
    assert_labels(prepared["mask"], 11, 11)


@needs_camvid
def test_camvid_real_class_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Median-frequency weights agree with SegNet's published ones (its CamVid prototxt) within 25% for
    every class but SignSymbol, whose published weight is ~2.5x ours (their counting is not documented)."""
    monkeypatch.setenv("LIGHTNING_SEG_CACHE", str(tmp_path / "cache"))
    dm = CamVidDataModule(str(CAMVID))
    weights = dm.class_weights("median_frequency")
    segnet = torch.tensor(
        [0.2595, 0.1826, 4.5640, 0.1417, 0.9051, 0.3826, 9.6446, 1.8418, 0.6823, 6.2478, 7.3614]
    )
    ratio = weights / segnet
    others = torch.ones(11, dtype=torch.bool)
    others[CAMVID_CLASSES.index("SignSymbol")] = False
    assert bool(((ratio[others] > 0.8) & (ratio[others] < 1.25)).all()), ratio
    freq = dm.class_frequencies()
    assert abs(float(freq.sum()) - 1) < 1e-9 and int(freq.argmax()) == CAMVID_CLASSES.index("Road")


@needs_camvid
@pytest.mark.slow
def test_camvid_real_training_steps(tmp_path: Path):
    import lightning as L

    from lightning_seg.models.unet import UNet
    from lightning_seg.task.module import SegmentationModule

    dm = CamVidDataModule(str(CAMVID), size=(96, 128), batch_size=4)
    model = SegmentationModule(
        net=functools.partial(UNet, base_width=4, depth=2),
        num_classes=dm.num_classes,
        ignore_index=dm.ignore_index,
        class_names=dm.class_names,
    )
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 4
    loss = trainer.callback_metrics["val/loss"]
    assert torch.isfinite(loss)


# --------------------------------------------------------------------------------------------- pets
@pytest.mark.parametrize(
    ("mode", "ignore_border", "border_label", "classes"),
    [("binary", True, 255, 2), ("binary", False, 1, 2), ("trimap", True, 2, 3)],
)
def test_oxford_pets(tmp_path: Path, mode: str, ignore_border: bool, border_label: int, classes: int):
    root = pets_tree(tmp_path / "pets")
    dm = OxfordPetDataModule(
        str(root), mode=mode, ignore_border=ignore_border, size=None, batch_size=2, val_fraction=0.25
    )
    assert dm.num_classes == classes
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.datasets["train"]), len(dm.datasets["val"]), len(dm.datasets["test"])) == (9, 3, 4)
    # stratified by breed: the val split has three different breeds
    assert len({s.name.rsplit("_", 1)[0] for s in dm.datasets["val"].samples}) == 3
    item = dm.datasets["train"][0]
    assert "label" not in item  # breeds only stratify the split
    assert item["mask"][0, 0] == 0 and item["mask"][15, 15] == 1 and item["mask"][9, 9] == border_label
    assert_labels(first_batch(dm)["mask"], classes, 255)


def test_oxford_pets_resized_and_root_variants(tmp_path: Path):
    root = pets_tree(tmp_path / "pets")
    dm = OxfordPetDataModule(str(root / "oxford-iiit-pet"), batch_size=3)  # the folder itself works too
    dm.setup("fit")
    batch = first_batch(dm)
    assert batch["image"].shape == (3, 3, 256, 256) and batch["orig_size"][0].tolist() == [40, 36]
    with pytest.raises(
        ConfigError, match=r"trainval\.txt: not found; expected torchvision's Oxford-IIIT Pet layout"
    ):
        OxfordPetDataModule(str(tmp_path / "nothing")).setup("fit")


def test_download_flags_call_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []

    def fake(name):
        def record(*args, **kwargs):
            calls.append((name, args, kwargs))

        return record

    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd, "OxfordIIITPet", fake("pets"))
    monkeypatch.setattr(tvd, "VOCSegmentation", fake("voc"))
    OxfordPetDataModule(str(tmp_path)).prepare_data()
    VOCDataModule(str(tmp_path)).prepare_data()
    assert calls == []  # download=False never touches the network
    OxfordPetDataModule(str(tmp_path), download=True).prepare_data()
    VOCDataModule(str(tmp_path), year="2012", download=True).prepare_data()
    assert [(name, kwargs["download"]) for name, _, kwargs in calls] == [("pets", True), ("voc", True)]


# ---------------------------------------------------------------------------------------------- VOC
def test_voc_palette_masks_and_border(tmp_path: Path):
    root = voc_tree(tmp_path / "voc")
    # four tiny masks cannot hold all 21 classes
    dm = VOCDataModule(str(root), size=(32, 32), batch_size=2, allow_absent_classes=True)
    assert dm.num_classes == 21 and dm.class_names[15] == "person"
    dm.setup("fit")
    dm.setup("test")
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    item = VOCDataModule(str(root), size=None, batch_size=1).build_dataset("train")[1]
    expected = block_mask(34, 40, num_classes=21, seed=101)
    expected[0, :] = 255
    assert torch.equal(item["mask"], expected)  # palette indices, border 255 = ignore_index
    # another ignore_index remaps the border
    other = VOCDataModule(str(root), size=None, batch_size=1, ignore_index=-1).build_dataset("train")[1]
    assert torch.equal(other["mask"], torch.where(expected == 255, -1, expected))
    assert_labels(first_batch(dm)["mask"], 21, 255)


# ---------------------------------------------------------------------------------------------- MSD
def test_msd_binary_masks_and_labels(tmp_path: Path):
    root = msd_tree(tmp_path / "msd")
    dm = MSDDataModule(str(root), size=(32, 64), batch_size=4, val_fraction=0.25, test_fraction=0.25)
    assert dm.label_names == ("None", "Scratch", "Stain", "Oil") and dm.class_names == (
        "background",
        "defect",
    )
    dm.setup("fit")
    dm.setup("test")
    every = [s for split in ("train", "val", "test") for s in dm.datasets[split].samples]
    assert len(every) == 17 and len({s.name for s in every}) == 17
    assert {s.label for s in dm.datasets["val"].samples} >= {1, 2, 3}  # stratified by defect type
    batch = first_batch(dm)
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (4,)
    raw = MSDDataModule(str(root), size=None, val_fraction=0.25, test_fraction=0.25)
    for split in ("train", "val", "test"):
        dataset = raw.build_dataset(split)
        for i in range(len(dataset)):
            item = dataset[i]
            label = int(item["label"])
            assert item["name"].split("/")[0] == ("good", "scratch", "stain", "oil")[label]
            if label == 0:
                assert not item["mask"].any()  # good images: empty masks
            else:  # RGB and palette masks alike: the drawn rectangle, nothing else
                k = int(item["name"].rsplit("_", 1)[1]) - 1
                expected = torch.zeros(27, 48, dtype=torch.int64)
                expected[5 + k : 12 + k, 10:30] = 1
                assert torch.equal(item["mask"], expected), item["name"]


def test_msd_defect_type_mode(tmp_path: Path):
    root = msd_tree(tmp_path / "msd", good=0)
    dm = MSDDataModule(str(root), mask_mode="defect_type", size=None, val_fraction=0.2, test_fraction=0.2)
    assert dm.class_names == ("background", "scratch", "stain", "oil")
    dataset = dm.build_dataset("train")
    for i in range(len(dataset)):
        item = dataset[i]
        assert set(item["mask"].unique().tolist()) == {0, int(item["label"])}


def test_msd_layout_errors(tmp_path: Path):
    root = msd_tree(tmp_path / "msd")
    (root / "ground_truth_2" / "Oil_0002.png").unlink()
    with pytest.raises(ConfigError, match=r"Oil_0002\.jpg: mask missing"):
        MSDDataModule(str(root)).setup("fit")
    with pytest.raises(ConfigError, match=r"empty/scratch: folder not found; MSD needs"):
        MSDDataModule(str(tmp_path / "empty")).setup("fit")


# --------------------------------------------------------------------------------------------- COCO
@pytest.fixture
def coco(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIGHTNING_SEG_CACHE", str(tmp_path / "cache"))
    return coco_tree(tmp_path / "coco")


def coco_module(root: Path, **kwargs) -> COCOSemanticDataModule:
    kwargs.setdefault("categories", ["person", "car"])
    kwargs.setdefault("size", None)
    kwargs.setdefault("batch_size", 1)
    kwargs.setdefault("allow_absent_classes", True)  # a few tiny images do not hold every category
    return COCOSemanticDataModule(str(root), **kwargs)


def test_coco_rendering_rules(coco: Path):
    dm = coco_module(coco)
    assert dm.class_names == ("background", "person", "car")
    dm.setup("fit")
    train = dm.datasets["train"]
    assert [s.name for s in train.samples] == ["000000000100", "000000000101"]  # 102 has no instances
    first, second = train[0]["mask"], train[1]["mask"]
    assert first[8, 4] == 1 and first[7, 12] == 2  # the small car lies on top of the big person
    assert first[4, 25] == 0  # a dog: not a chosen category → background
    assert second[9, 6] == 1  # a person in front of the crowd keeps its class
    assert second[2, 20] == 255 and second[15, 20] == 0  # crowd → ignore_index; below it, background
    assert_labels(first_batch(dm)["mask"], 3, 255)
    assert len(dm.datasets["val"]) == 2


def test_coco_overlap_ignore_and_options(coco: Path):
    dm = coco_module(coco, overlap="ignore", drop_empty_train=False)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 3
    mask = dm.datasets["train"][0]["mask"]
    assert mask[7, 12] == 255 and mask[8, 4] == 1
    assert not dm.datasets["train"][2]["mask"].any()  # no annotations: all background
    voc = COCOSemanticDataModule(str(coco))
    assert voc.num_classes == 21 and voc.class_names[1] == "airplane"
    assert COCOSemanticDataModule(str(coco), categories="all").num_classes == 81
    with pytest.raises(ConfigError, match=r"unknown: \['unicorn'\]"):
        coco_module(coco, categories=["person", "unicorn"])
    ann = coco / "annotations" / "instances_train2017.json"
    data = json.loads(ann.read_text())
    data["categories"] = [c for c in data["categories"] if c["name"] != "airplane"]
    ann.write_text(json.dumps(data))
    with pytest.raises(
        ConfigError, match=r"instances_train2017\.json: categories \['airplane'\] are not in this"
    ):
        COCOSemanticDataModule(str(coco), categories=["airplane", "person"]).setup("fit")


def test_coco_renders_once(coco: Path, monkeypatch: pytest.MonkeyPatch):
    coco_module(coco).setup("fit")
    import lightning_seg.data.coco as coco_module_

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(coco_module_, "render_semantic_mask", no_render)
    dm = coco_module(coco)
    dm.setup("fit")  # a new module reads the cache
    dm.datasets["train"][0]
    with pytest.raises(AssertionError, match="rendered again"):
        coco_module(coco, overlap="ignore").setup("fit")  # other rules: another cache entry


def test_coco_without_pycocotools(coco: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(ConfigError, match=r"pip install lightning_seg\[coco\]"):
        coco_module(coco).setup("fit")


# ------------------------------------------------------------------------------------------ configs
def make_tree(name: str, tmp_path: Path) -> Path:
    if name == "folder":
        root = tmp_path / "polyps"
        for i in range(10):
            mask = block_mask(40, 40, 2, seed=i)
            from tests.data_trees import image_for, write_jpeg, write_png

            write_jpeg(root / "images" / f"p{i}.jpg", image_for(mask))
            write_png(root / "masks" / f"p{i}.png", (mask * 255).to(torch.uint8))
        return root
    builders = {
        "camvid": camvid_tree,
        "pets": pets_tree,
        "voc": voc_tree,
        "msd": msd_tree,
        "coco": coco_tree,
        "voc_kaggle": voc_kaggle_tree,
    }
    return builders[name](tmp_path / name)


@pytest.mark.parametrize("name", ["folder", "camvid", "pets", "voc", "msd", "coco", "voc_kaggle"])
def test_data_configs_compose_with_the_default(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``--config configs/default.yaml --config configs/data/<name>.yaml`` builds the module; setup works."""
    from lightning_seg.cli import build_cli

    monkeypatch.setenv("LIGHTNING_SEG_CACHE", str(tmp_path / "cache"))
    config = REPO / "configs" / "data" / f"{name}.yaml"
    assert set(yaml.safe_load(config.read_text())) == {"data"}
    root = make_tree(name, tmp_path)
    args = [
        "--config", str(REPO / "configs" / "default.yaml"),
        "--config", str(config),
        f"--data.init_args.root={root}",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=2",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
    ]  # fmt: skip
    if name in ("msd", "pets", "coco", "folder", "voc_kaggle"):
        args.append("--data.init_args.size=[32,32]")
    if name in ("voc", "coco", "voc_kaggle"):
        args.append("--data.init_args.allow_absent_classes=true")  # tiny trees miss most of the 21 classes
    cli = build_cli(args, run=False)
    dm = cli.datamodule
    assert cli.model.num_classes == dm.num_classes and cli.model.ignore_index == dm.ignore_index
    dm.setup("fit")
    batch = dm.prepare_batch(first_batch(dm), train=True)
    assert batch["image"].dtype == torch.float32
    assert_labels(batch["mask"], dm.num_classes, dm.ignore_index)
