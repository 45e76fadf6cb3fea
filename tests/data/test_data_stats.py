"""Class statistics: counts against a direct numpy computation, the weight rules, and the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lightning_seg.data.stats as stats_module
from lightning_seg.data import FolderDataModule, SyntheticDataModule
from lightning_seg.data.stats import ClassStatistics
from tests.data_trees import folder_tree, write_png

NUM_CLASSES = 4


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIGHTNING_SEG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "stats"


def make_module(root: Path, **kwargs) -> FolderDataModule:
    kwargs.setdefault("size", None)
    kwargs.setdefault("batch_size", 1)
    kwargs.setdefault("allow_absent_classes", True)  # class 3 never occurs: the weights must handle it
    return FolderDataModule(
        str(root), class_names=[f"c{i}" for i in range(NUM_CLASSES)], val_fraction=0.25, **kwargs
    )


def numpy_reference(masks: list[np.ndarray], ignore_index: int = 255) -> dict[str, np.ndarray]:
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    image_pixels = np.zeros(NUM_CLASSES, dtype=np.int64)
    for mask in masks:
        labelled = mask[mask != ignore_index]
        here = np.array([(labelled == c).sum() for c in range(NUM_CLASSES)])
        counts += here
        image_pixels += np.where(here > 0, labelled.size, 0)
    p = counts / counts.sum()
    f = counts / np.maximum(image_pixels, 1)
    present = counts > 0
    median = np.median(f[present])
    return {
        "counts": counts,
        "frequencies": p,
        "inverse_frequency": np.where(present, 1 / (present.sum() * np.maximum(p, 1e-300)), 0),
        "median_frequency": np.where(present, median / np.maximum(f, 1e-300), 0),
        "enet": np.where(present, 1 / np.log(1.02 + p), 0),
    }


def test_statistics_match_numpy(tmp_path: Path):
    root = folder_tree(tmp_path / "data", count=8, num_classes=3, sizes=((24, 32),))  # class 3 never occurs
    dm = make_module(root)
    dm.setup("fit")
    masks = [np.asarray(dm.datasets["train"][i]["mask"]) for i in range(len(dm.datasets["train"]))]
    reference = numpy_reference(masks)
    stats = dm.class_statistics()
    assert stats.pixel_counts.tolist() == reference["counts"].tolist()
    assert stats.num_images == len(masks) and stats.ignored_pixels == sum(
        int((m == 255).sum()) for m in masks
    )
    torch.testing.assert_close(dm.class_frequencies(), torch.from_numpy(reference["frequencies"]))
    for rule in ("inverse_frequency", "median_frequency", "enet"):
        weights = dm.class_weights(rule)
        assert weights.dtype == torch.float32 and weights.shape == (NUM_CLASSES,)
        torch.testing.assert_close(weights, torch.from_numpy(reference[rule]).float(), msg=rule)
    assert dm.class_weights("median_frequency")[3] == 0  # absent class
    with pytest.raises(ValueError, match="unknown class weight rule"):
        dm.class_weights("sqrt")


def test_statistics_follow_the_resize(tmp_path: Path):
    """Counts are taken on the masks training sees (after the CPU resize), not on the stored files."""
    root = folder_tree(tmp_path / "data", count=4, num_classes=3, sizes=((24, 32),))
    dm = make_module(root, size=(12, 16), batch_size=2)
    dm.setup("fit")
    stats = dm.class_statistics()
    assert int(stats.pixel_counts.sum()) + stats.ignored_pixels == 12 * 16 * len(dm.datasets["train"])
    expected = sum(torch.bincount(dm.datasets["train"][i]["mask"].flatten().clamp(max=4), minlength=5)[:4]
                   for i in range(len(dm.datasets["train"])))  # fmt: skip
    assert stats.pixel_counts.tolist() == expected.tolist()


def test_weight_rules_on_known_counts():
    stats = ClassStatistics(
        pixel_counts=torch.tensor([600, 300, 100, 0]),
        image_pixels=torch.tensor([1000, 1000, 200, 0]),
        image_counts=torch.tensor([1, 1, 1, 0]),
        ignored_pixels=0,
        num_images=1,
    )
    torch.testing.assert_close(stats.frequencies(), torch.tensor([0.6, 0.3, 0.1, 0.0], dtype=torch.float64))
    # f = 0.6, 0.3, 0.5 → median 0.5
    torch.testing.assert_close(
        stats.weights("median_frequency"), torch.tensor([0.5 / 0.6, 0.5 / 0.3, 1.0, 0.0])
    )
    torch.testing.assert_close(
        stats.weights("inverse_frequency"), torch.tensor([1 / 1.8, 1 / 0.9, 1 / 0.3, 0.0])
    )
    p = torch.tensor([0.6, 0.3, 0.1])
    torch.testing.assert_close(stats.weights("enet")[:3], 1 / torch.log(1.02 + p))
    # the pixel-averaged inverse weight is 1
    assert (
        abs(float((stats.frequencies()[:3] * stats.weights("inverse_frequency")[:3].double()).sum()) - 1)
        < 1e-6
    )
    again = ClassStatistics.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert torch.equal(again.pixel_counts, stats.pixel_counts) and torch.equal(
        again.image_pixels, stats.image_pixels
    )


def test_cache_is_reused_and_invalidated(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch):
    root = folder_tree(tmp_path / "data", count=6, num_classes=3, sizes=((24, 32),))
    first = make_module(root).class_frequencies()
    files = list(cache.glob("*.json"))
    assert len(files) == 1

    calls = []
    real = stats_module.count_classes
    monkeypatch.setattr(stats_module, "count_classes", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert torch.equal(make_module(root).class_frequencies(), first)  # a new module reads the file
    assert calls == []
    make_module(root, size=(12, 16)).class_frequencies()  # another resize: another key
    assert len(calls) == 1
    # a changed mask changes the key
    train_name = make_module(root).splits()["train"][0].name
    write_png(root / "masks" / f"{train_name}.png", torch.zeros(24, 32, dtype=torch.uint8))
    changed = make_module(root).class_frequencies()
    assert len(calls) == 2 and not torch.equal(changed, first)
    # a damaged cache file is recomputed
    for path in cache.glob("*.json"):
        path.write_text("{not json")
    make_module(root).class_frequencies()
    assert len(calls) == 3


def test_statistics_in_worker_processes(tmp_path: Path):
    root = folder_tree(tmp_path / "data", count=6, num_classes=3, sizes=((24, 32),))
    serial = make_module(root).class_statistics()
    parallel = stats_module.count_classes(
        make_module(root).build_dataset("train"), NUM_CLASSES, 255, num_workers=2
    )
    assert torch.equal(serial.pixel_counts, parallel.pixel_counts)
    assert torch.equal(serial.image_pixels, parallel.image_pixels)


def test_modules_without_identity_are_counted_directly(cache: Path):
    dm = SyntheticDataModule(num_train=6, num_val=2, num_test=2, size=32)
    stats = dm.class_statistics()
    masks = torch.stack([dm.build_dataset("train")[i]["mask"] for i in range(6)])
    assert stats.pixel_counts.tolist() == torch.bincount(masks.flatten(), minlength=dm.num_classes).tolist()
    assert not cache.exists() or not list(cache.iterdir())


def test_setup_checks_leave_the_global_random_stream_alone(tmp_path: Path):
    """The label checks' pass over the masks must not shift the run's augmentation and shuffling."""
    root = folder_tree(tmp_path / "data", count=8, num_classes=3, sizes=((24, 32),))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    make_module(root, num_workers=0).setup("fit")
    assert torch.equal(torch.rand(3), expected)
