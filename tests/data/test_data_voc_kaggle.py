"""VOCKaggleDataModule: the PASCAL VOC 2009 Kaggle layout (.npy images and masks, label CSVs)."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from data_trees import VOC_KAGGLE_TEST_IDS, VOC_KAGGLE_TRAIN_IDS, voc_kaggle_tree
from helpers import voc_kaggle_args

from lightning_seg.cli import run_cli
from lightning_seg.data import VOCKaggleDataModule
from lightning_seg.data.voc import VOC_CLASSES
from lightning_seg.errors import ConfigError


def _module(root: Path, **kwargs) -> VOCKaggleDataModule:
    options = {"size": (32, 32), "batch_size": 2, "allow_absent_classes": True, "val_fraction": 0.25}
    return VOCKaggleDataModule(str(root), **{**options, **kwargs})


def _csv_labels(root: Path) -> dict[str, list[int]]:
    with (root / "train" / "train_set.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Id", *VOC_CLASSES[1:]]
    return {row[0]: [int(v) for v in row[1:]] for row in rows[1:]}


def test_classes_labels_and_one_batch(tmp_path: Path) -> None:
    root = voc_kaggle_tree(tmp_path / "voc")
    dm = _module(root)
    assert dm.class_names == VOC_CLASSES and dm.num_classes == 21 and dm.ignore_index == 255
    assert dm.label_names == VOC_CLASSES[1:]
    dm.setup("fit")
    labels = _csv_labels(root)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert batch["mask"].shape == (2, 32, 32)
    assert batch["label"].shape == (2, 20) and batch["label"].dtype == torch.int64
    for name, label, size in zip(batch["name"], batch["label"], batch["orig_size"], strict=True):
        assert label.tolist() == labels[name]
        stored = np.load(root / "train" / "img" / f"train_{name}.npy")
        assert size.tolist() == list(stored.shape[:2]) and size.dtype == torch.int64
    assert bool((batch["mask"] == 255).any())  # the void border stays ignore_index

    dm.setup("test")  # test = the val split, scored against the masks as stored
    batch = next(iter(dm.test_dataloader()))
    assert batch["name"] == [s.name for s in dm.datasets["val"].samples][:2]
    for name, orig in zip(batch["name"], batch["orig_mask"], strict=True):
        stored = np.load(root / "train" / "seg" / f"train_{name}.npy")
        assert np.array_equal(orig.numpy(), stored) and bool((orig[0] == 255).all())


def test_seeded_stratified_split(tmp_path: Path) -> None:
    root = voc_kaggle_tree(tmp_path / "voc")
    a, b = _module(root), _module(root)
    a.setup("fit"), b.setup("fit")
    names = {split: [s.name for s in a.datasets[split].samples] for split in ("train", "val")}
    assert names == {split: [s.name for s in b.datasets[split].samples] for split in ("train", "val")}
    assert len(names["val"]) == 2 and not set(names["val"]) & set(names["train"])
    assert sorted(names["train"] + names["val"]) == sorted(VOC_KAGGLE_TRAIN_IDS)
    other = _module(root, split_seed=1, test_fraction=0.25)
    other.setup("fit"), other.setup("test")
    val, test = (set(other.competition_ids(split)) for split in ("val", "test"))
    assert len(val) == len(test) == 2 and not val & test
    counts = other.label_image_counts("train")
    assert counts.shape == (20,) and int(counts.sum()) == int(other.multi_hot_labels("train").sum())


def test_predict_is_the_competition_test_set_in_csv_order(tmp_path: Path) -> None:
    root = voc_kaggle_tree(tmp_path / "voc")
    dm = _module(root, batch_size=3)
    dm.setup("predict")
    assert dm.competition_ids() == list(VOC_KAGGLE_TEST_IDS)  # "12", "2", "77": not sorted
    batch = next(iter(dm.predict_dataloader()))
    assert batch["name"] == list(VOC_KAGGLE_TEST_IDS)
    assert "mask" not in batch and "label" not in batch and "orig_mask" not in batch
    assert batch["image"].shape == (3, 3, 32, 32)
    sizes = [list(np.load(root / "test" / "img" / f"test_{i}.npy").shape[:2]) for i in VOC_KAGGLE_TEST_IDS]
    assert batch["orig_size"].tolist() == sizes


# ------------------------------------------------------------------------------------------ bad input
def _missing_image(root: Path) -> Path:
    path = root / "train" / "img" / "train_42.npy"
    path.unlink()
    return path


def _missing_mask(root: Path) -> Path:
    path = root / "train" / "seg" / "train_8.npy"
    path.unlink()
    return path


def _float_image(root: Path) -> Path:
    path = root / "train" / "img" / "train_3.npy"
    np.save(path, np.load(path).astype(np.float32))
    return path


def _grey_image(root: Path) -> Path:
    path = root / "train" / "img" / "train_17.npy"
    np.save(path, np.load(path)[..., 0])
    return path


def _mask_size(root: Path) -> Path:
    path = root / "train" / "seg" / "train_61.npy"
    np.save(path, np.load(path)[:-2])
    return path


def _mask_values(root: Path) -> Path:
    path = root / "train" / "seg" / "train_23.npy"
    mask = np.load(path)
    mask[3:6, 3:6] = 30
    np.save(path, mask)
    return path


def _label_values(root: Path) -> Path:
    path = root / "train" / "train_set.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][: -len(",0")] + ",2"
    path.write_text("\n".join(lines) + "\n")
    return path


def _header(root: Path) -> Path:
    path = root / "train" / "train_set.csv"
    path.write_text(path.read_text().replace(",tvmonitor", ",tv", 1))
    return path


def _test_image(root: Path) -> Path:
    path = root / "test" / "img" / "test_2.npy"
    path.unlink()
    return path


BAD_INPUTS: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    # case: (break the tree, the stage that refuses it, what the line says)
    "missing_image": (_missing_image, "fit", r"not found \(Id 42 of .*train_set\.csv\)"),
    "missing_mask": (_missing_mask, "fit", r"not found \(Id 8 of .*train_set\.csv\)"),
    "image_dtype": (_float_image, "fit", r"image array is float32 \d+x\d+x3, expected uint8 HxWx3"),
    "image_rank": (_grey_image, "fit", r"image array is uint8 \d+x\d+, expected uint8 HxWx3"),
    "mask_size": (_mask_size, "fit", r"mask is \d+x\d+ but its image .*train_61\.npy is"),
    "mask_values": (_mask_values, "fit", r"mask values \[30\] are outside 0\.\.20 and void 255"),
    "label_values": (_label_values, "fit", r"Id 3: label value '2' is not 0 or 1"),
    "header": (_header, "fit", r"header must be Id then the 20 VOC classes.*unknown \['tv'\]"),
    "test_image": (_test_image, "predict", r"not found \(Id 2 of .*test_set\.csv\)"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    breaker, stage, message = BAD_INPUTS[case]
    path = breaker(voc_kaggle_tree(tmp_path / "voc"))
    with pytest.raises(ConfigError) as error:
        _module(tmp_path / "voc").setup(stage)
    text = str(error.value)
    assert "\n" not in text and text.startswith(str(path)), text
    assert re.search(message, text), text


# ----------------------------------------------------------------------------------------- through the CLI
def test_fit_trains_the_multi_label_head_from_the_csv_and_predicts_in_csv_order(tmp_path: Path) -> None:
    data = voc_kaggle_tree(tmp_path / "voc")
    runs = tmp_path / "runs"
    fit = run_cli(["fit", *voc_kaggle_args(runs, data)])
    assert fit is not None
    model = fit.model
    assert model.label_mode == "multi" and model.label_names == list(VOC_CLASSES[1:])
    assert model.num_classes == 21 and not model.label_task.derived
    assert {"train/loss/label", "val/label_f1", "val/label_mAP", "val/mIoU"} <= set(
        fit.trainer.callback_metrics
    )
    best = fit.trainer.checkpoint_callback.best_model_path
    # without data.test_fraction, test scores the val split: the summary says so beside the numbers
    tested = run_cli(["test", *voc_kaggle_args(runs, data), "--ckpt_path", best])
    summary = json.loads((Path(tested.trainer.log_dir) / "summary.json").read_text())
    assert any("the test split is the val split" in note for note in summary["notes"])

    predicted = run_cli(["predict", *voc_kaggle_args(runs, data), "--ckpt_path", best])
    assert predicted is not None
    out = Path(predicted.trainer.log_dir) / "predictions"
    with (out / "labels.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:2] == ["name", "labels"] and rows[0][2:] == list(VOC_CLASSES[1:])
    assert [row[0] for row in rows[1:]] == list(VOC_KAGGLE_TEST_IDS)
    assert predicted.datamodule.competition_ids() == list(VOC_KAGGLE_TEST_IDS)
