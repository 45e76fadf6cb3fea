"""Kornia augmentations on image + mask batches: masks stay int64 labels, move with the image, invented
pixels become ignore_index, colour transforms leave masks alone, large labels survive exactly.

The image of each test batch encodes its mask (every channel = ``encode(mask)``), so after a geometric
transform the image says which label every mask pixel should have.
"""

from __future__ import annotations

from pathlib import Path

import kornia.augmentation as K
import pytest
import torch
import yaml

from lightning_seg.data import (
    CamVidDataModule,
    COCOSemanticDataModule,
    FolderDataModule,
    MSDDataModule,
    OxfordPetDataModule,
    SegDataModule,
    SyntheticDataModule,
    VOCDataModule,
)
from lightning_seg.data.augment import SegAugmentation, natural_image_augmentations
from tests.data_trees import block_mask

# Kornia's elastic warp calls affine_grid without align_corners; the warning is not ours
pytestmark = pytest.mark.filterwarnings("ignore:Default grid_sample and affine_grid behavior")

REPO = Path(__file__).resolve().parents[2]
B, H, W = 4, 48, 64
NUM_CLASSES, IGNORE = 5, 255

# every Kornia class a default pipeline or a config uses must be here (see test_every_used_class_is_covered)
GEOMETRIC = {
    "RandomHorizontalFlip": lambda **kw: K.RandomHorizontalFlip(p=1.0),
    "RandomVerticalFlip": lambda **kw: K.RandomVerticalFlip(p=1.0),
    "RandomResizedCrop": lambda **kw: K.RandomResizedCrop((H, W), scale=(0.2, 1.0), p=1.0, **kw),
    "RandomResizedCrop resample": lambda **kw: K.RandomResizedCrop(
        (H, W), scale=(0.2, 1.0), p=1.0, cropping_mode="resample", **kw
    ),
    "RandomAffine": lambda **kw: K.RandomAffine(
        degrees=30.0, translate=(0.2, 0.2), scale=(0.7, 1.3), p=1.0, **kw
    ),
    "RandomRotation": lambda **kw: K.RandomRotation(40.0, p=1.0, **kw),
    "RandomCrop": lambda **kw: K.RandomCrop((H, W), padding=8, p=1.0, **kw),
    "RandomPerspective": lambda **kw: K.RandomPerspective(0.5, p=1.0, **kw),
    "RandomElasticTransform": lambda **kw: K.RandomElasticTransform(
        (15, 15), (4.0, 4.0), (2.0, 2.0), p=1.0, **kw
    ),
}
# flips have no resampling: they are exact with or without a resample argument
NO_RESAMPLE = {"RandomHorizontalFlip", "RandomVerticalFlip"}
INTENSITY = {
    "ColorJitter": lambda: K.ColorJitter(0.3, 0.3, 0.3, 0.1, p=1.0),
    "ColorJiggle": lambda: K.ColorJiggle(0.3, 0.3, 0.3, 0.1, p=1.0),
    "RandomGaussianBlur": lambda: K.RandomGaussianBlur((5, 5), (1.0, 2.0), p=1.0),
    "RandomGaussianNoise": lambda: K.RandomGaussianNoise(std=0.05, p=1.0),
    "RandomBrightness": lambda: K.RandomBrightness((0.7, 1.3), p=1.0),
    "RandomContrast": lambda: K.RandomContrast((0.7, 1.3), p=1.0),
    "RandomGamma": lambda: K.RandomGamma((0.7, 1.5), p=1.0),
    "RandomGrayscale": lambda: K.RandomGrayscale(p=1.0),
}


def encode(mask: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """int64 B×H×W → float B×3×H×W: label k → (k + 1) / 8, ignore → 1.0; never 0 (0 = invented)."""
    value = torch.where(mask == ignore_index, 1.0, (mask.float() + 1) / 8)
    return value[:, None].expand(-1, 3, -1, -1).contiguous()


def make_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.stack([block_mask(H, W, NUM_CLASSES, seed=seed + i) for i in range(B)])
    mask[:, :8, :8] = IGNORE
    return encode(mask), mask


def check_labels(mask: torch.Tensor, ignore_index: int = IGNORE, num_classes: int = NUM_CLASSES) -> None:
    assert mask.dtype == torch.int64
    assert bool(((mask >= 0) & (mask < num_classes) | (mask == ignore_index)).all()), mask.unique()


def run(augmentations, image, mask, ignore_index: int = IGNORE, seed: int = 0):
    torch.manual_seed(seed)
    return SegAugmentation(augmentations, ignore_index)(image.clone(), mask.clone())


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_geometric_nearest_is_exact(name: str):
    """With nearest resampling for the image too, every labelled pixel's image value is its label's code,
    and every invented pixel (image 0) is ignore_index."""
    image, mask = make_batch()
    kwargs = {} if name in NO_RESAMPLE else {"resample": "nearest"}
    out_image, out_mask = run([GEOMETRIC[name](**kwargs)], image, mask)
    check_labels(out_mask)
    assert out_mask.shape == (B, H, W) and out_image.shape == (B, 3, H, W)
    assert not torch.equal(out_mask, mask), "p=1: the transform should have changed the batch"
    invented = (out_image == 0).all(1)
    assert (out_mask[invented] == IGNORE).all()
    labelled = out_mask != IGNORE
    torch.testing.assert_close(out_image[labelled.unsqueeze(1).expand_as(out_image)], encode(out_mask)[
        labelled.unsqueeze(1).expand_as(out_image)])  # fmt: skip


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_geometric_default_resampling_moves_together(name: str):
    """Bilinear images blur label edges, masks do not; most labelled pixels still agree, labels stay
    labels (never blended into a value between two classes)."""
    image, mask = make_batch(seed=10)
    out_image, out_mask = run([GEOMETRIC[name]()], image, mask)
    check_labels(out_mask)
    labelled = out_mask != IGNORE
    agree = ((out_image[:, 0] - encode(out_mask)[:, 0]).abs() < 1e-3)[labelled].float().mean()
    assert agree > 0.6, agree
    # a mask of two far-apart labels gets no label in between
    two = torch.where(mask == IGNORE, 0, torch.where(mask > 2, 4, 0))
    _, out_two = run([GEOMETRIC[name]()], encode(two), two)
    assert set(out_two.unique().tolist()) <= {0, 4, IGNORE}


def test_large_translation_invents_ignore_pixels():
    image, mask = make_batch()
    aug = K.RandomAffine(degrees=0.0, translate=(0.5, 0.5), p=1.0, resample="nearest")
    out_image, out_mask = run([aug], image, mask, seed=3)
    invented = (out_image == 0).all(1)
    assert invented.float().mean() > 0.05  # a sizeable band was shifted in
    assert (out_mask[invented] == IGNORE).all()
    assert not (out_mask[invented] == 0).any()  # never class 0


def test_rotation_corners_become_ignore_not_background():
    mask = torch.zeros(B, H, W, dtype=torch.int64)  # only class 0: any ignore must be invented
    out_image, out_mask = run([K.RandomRotation((45.0, 45.0), p=1.0)], encode(mask), mask)
    assert (out_mask == IGNORE).float().mean() > 0.1
    assert (out_mask[(out_image == 0).all(1)] == IGNORE).all()


@pytest.mark.parametrize("name", sorted(INTENSITY))
def test_intensity_transforms_leave_masks_untouched(name: str):
    image, mask = make_batch()
    out_image, out_mask = run([INTENSITY[name]()], image, mask)
    assert torch.equal(out_mask, mask)
    assert not torch.equal(out_image, image)


def test_large_labels_survive_exactly():
    """Label 257 with ignore_index 300: float32 carrying keeps it (bf16 would round it to 256)."""
    ignore = 300
    mask = torch.stack([block_mask(H, W, 3, seed=i) for i in range(B)])
    mask = torch.where(mask == 2, 257, mask)
    mask[:, :6, :6] = ignore
    image = torch.where(mask == ignore, 1.0, torch.where(mask == 257, 0.6, (mask.float() + 1) / 8))
    image = image[:, None].expand(-1, 3, -1, -1).contiguous()
    pipeline = [
        K.RandomHorizontalFlip(p=1.0),
        K.RandomAffine(degrees=20.0, translate=(0.2, 0.2), p=1.0, resample="nearest"),
        K.RandomResizedCrop((H, W), scale=(0.5, 1.0), p=1.0, resample="nearest"),
        K.ColorJitter(0.2, p=0.0),
    ]
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out_image, out_mask = run(pipeline, image, mask, ignore_index=ignore)
        assert set(out_mask.unique().tolist()) <= {0, 1, 257, ignore}
        assert (out_mask == 257).any()
        assert torch.equal(out_mask == 257, (out_image[:, 0] - 0.6).abs() < 1e-6)


def test_prepare_batch_keeps_masks_int64_and_normalises():
    dm = SyntheticDataModule(num_train=4, num_val=2, num_test=2, size=32)
    image, mask = make_batch()
    batch = {"image": (image * 255).round().to(torch.uint8), "mask": mask.clone()}
    out = dm.prepare_batch(batch, train=False)  # no eval augmentation: identity + normalise
    assert torch.equal(out["mask"], mask)
    torch.testing.assert_close(dm.denormalize(out["image"]), image, atol=1 / 255, rtol=0)
    out = dm.prepare_batch({"image": (image * 255).round().to(torch.uint8), "mask": mask.clone()}, train=True)
    check_labels(out["mask"])
    assert out["image"].dtype == torch.float32


# ------------------------------------------------------------------------------ default pipelines
def default_pipelines(tmp_path: Path) -> dict[str, list]:
    size = (H, W)
    return {
        "base": natural_image_augmentations(size),
        "synthetic": SyntheticDataModule(num_train=1, num_val=1, num_test=1).default_train_augmentations(),
        "folder": FolderDataModule(
            str(tmp_path), class_names=["a", "b"], size=size
        ).default_train_augmentations(),
        "camvid": CamVidDataModule(str(tmp_path), size=size).default_train_augmentations(),
        "pets": OxfordPetDataModule(str(tmp_path), size=size).default_train_augmentations(),
        "voc": VOCDataModule(str(tmp_path), size=size).default_train_augmentations(),
        "msd": MSDDataModule(str(tmp_path), size=size).default_train_augmentations(),
        "coco": COCOSemanticDataModule(str(tmp_path), size=size).default_train_augmentations(),
    }


def config_augmentation_classes() -> set[str]:
    """Kornia class names any YAML under configs/ names by class_path."""
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            path = node.get("class_path")
            if isinstance(path, str) and path.startswith("kornia.augmentation."):
                found.add(path.rsplit(".", 1)[-1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for config in (REPO / "configs").rglob("*.yaml"):
        walk(yaml.safe_load(config.read_text()))
    return found


def test_every_used_class_is_covered(tmp_path: Path):
    used = {type(aug).__name__ for augs in default_pipelines(tmp_path).values() for aug in augs}
    used |= config_augmentation_classes()
    missing = used - set(GEOMETRIC) - set(INTENSITY)
    assert not missing, f"add these Kornia classes to tests/data/test_augment.py: {sorted(missing)}"


@pytest.mark.parametrize("name", ["base", "synthetic", "folder", "camvid", "pets", "voc", "msd", "coco"])
def test_default_pipelines(name: str, tmp_path: Path):
    augs = default_pipelines(tmp_path)[name]
    image, mask = make_batch(seed=20)
    for seed in range(3):
        out_image, out_mask = run(augs, image, mask, seed=seed)
        check_labels(out_mask)
        assert out_mask.shape == (B, H, W) and out_image.shape == (B, 3, H, W)
    # without the colour transforms the image still encodes the mask (bilinear edges aside)
    geometric = [a for a in augs if type(a).__name__ in GEOMETRIC]
    out_image, out_mask = run(geometric, image, mask, seed=5)
    labelled = out_mask != IGNORE
    agree = ((out_image[:, 0] - encode(out_mask)[:, 0]).abs() < 1e-3)[labelled].float().mean()
    assert agree > 0.6, agree


def test_module_pipeline_uses_its_ignore_index(tmp_path: Path):
    dm: SegDataModule = CamVidDataModule(str(tmp_path), size=(H, W))
    mask = torch.zeros(B, H, W, dtype=torch.int64)
    dm._train_augmentations = [K.RandomAffine(degrees=0.0, translate=(0.5, 0.5), p=1.0)]
    torch.manual_seed(0)
    batch = dm.prepare_batch(
        {"image": torch.full((B, 3, H, W), 128, dtype=torch.uint8), "mask": mask}, train=True
    )
    assert set(batch["mask"].unique().tolist()) == {0, 11}


def test_default_crops_are_batched_and_invent_no_pixels(tmp_path: Path):
    """The default pipelines crop the whole batch with one warp (Kornia's "resample" mode; "slice" loops over
    the images in Python), and a crop inside the image invents no ignore_index pixel."""
    crops = [
        aug
        for augs in default_pipelines(tmp_path).values()
        for aug in augs
        if isinstance(aug, K.RandomResizedCrop)
    ]
    assert crops and all(crop.flags["cropping_mode"] == "resample" for crop in crops)
    mask = torch.stack([block_mask(H, W, NUM_CLASSES, seed=30 + i) for i in range(B)])
    for seed in range(5):
        _, out_mask = run([crops[0]], encode(mask), mask, seed=seed)
        check_labels(out_mask)
        assert not (out_mask == IGNORE).any()
