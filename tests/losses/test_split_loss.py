"""Evaluation losses over a split: sums added batch by batch and divided once equal the loss of one batch
holding the whole split, whatever the batching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from data_trees import folder_args, folder_tree
from helpers import tiny_args

from lightning_seg.cli import run_cli
from lightning_seg.losses import PIXEL_TERMS, CompoundLoss
from lightning_seg.models.outputs import NetOutput

IGNORE = 255
WEIGHTS = [0.5, 1.0, 2.0, 4.0]


def _split(channels: int, seed: int = 0) -> tuple[NetOutput, torch.Tensor, torch.Tensor]:
    """6 images: logits (with an aux head and a 4-label head), masks with ignored pixels (one image wholly
    ignored, one without class 3), and single-label targets."""
    generator = torch.Generator().manual_seed(seed)
    classes = max(channels, 2)
    mask = torch.randint(0, classes, (6, 10, 12), generator=generator)
    mask[torch.rand(6, 10, 12, generator=generator) < 0.25] = IGNORE
    mask[2] = IGNORE
    if classes > 3:
        mask[4][mask[4] == 3] = 1
    output = NetOutput(
        mask=torch.randn(6, channels, 10, 12, generator=generator),
        aux=torch.randn(6, channels, 10, 12, generator=generator),
        label=torch.randn(6, 4, generator=generator),
    )
    return output, mask, torch.tensor([0, 3, 1, 1, 2, 0])


def _loss(terms: list[str], channels: int) -> CompoundLoss:
    binary = channels == 1
    loss = CompoundLoss(
        weights={name: 1.0 + i for i, name in enumerate(terms)},
        class_weights=None if binary else WEIGHTS,
        label_smoothing=0.1,
        label_class_weights=[1.0, 2.0, 0.5, 3.0],
        # the notebooks' knobs: each term's split value must still be the whole split's
        focal_alpha=0.25,
        dice_smooth=0.5,
        tversky_gamma=0.75,
    )
    return loss.for_task(2 if binary else channels, IGNORE, "single", 4)


def _batched_value(loss: CompoundLoss, output: NetOutput, mask: torch.Tensor, label: torch.Tensor, size: int):
    total: dict[str, torch.Tensor] = {}
    for start in range(0, len(mask), size):
        part = slice(start, start + size)
        batch = NetOutput(output.mask[part], output.aux[part], output.label[part])
        for name, value in loss.split_sums(batch, mask[part], label[part]).items():
            total[name] = total.get(name, 0) + value
    return loss.from_split_sums(total)


@pytest.mark.parametrize("channels", [1, 4])
def test_split_value_equals_the_whole_split_as_one_batch_for_any_batching(channels: int) -> None:
    terms = [t for t in PIXEL_TERMS if t != "lovasz" and (channels == 1 or t != "bce")]
    loss = _loss(terms, channels)
    output, mask, label = _split(channels)
    whole = loss(output, mask, label)
    for size in (1, 2, 4, 6):
        split = _batched_value(loss, output, mask, label, size)
        assert set(split) == set(whole)
        for name in whole:
            torch.testing.assert_close(
                split[name], whole[name], rtol=1e-5, atol=1e-6, msg=f"{name}, batch {size}"
            )


def test_lovasz_is_the_image_weighted_mean_of_batch_values() -> None:
    loss = _loss(["lovasz"], 4)
    output, mask, label = _split(4)
    # one batch: the batch's own value
    torch.testing.assert_close(
        _batched_value(loss, output, mask, label, 6)["lovasz"], loss(output, mask)["lovasz"]
    )
    # three batches of two: weighted by the images with a labelled pixel (batch 2 holds the ignored image)
    values = [loss(NetOutput(output.mask[i : i + 2]), mask[i : i + 2])["lovasz"] for i in (0, 2, 4)]
    expected = (2 * values[0] + 1 * values[1] + 2 * values[2]) / 5
    torch.testing.assert_close(_batched_value(loss, output, mask, label, 2)["lovasz"], expected)


def _args(data: Path) -> list[str]:
    # folder data: classes a, b, c; class weights weigh CE's mean and Dice's class mean
    return [*folder_args(data), "--model.init_args.loss.init_args.class_weights=[0.5,1.0,4.0]"]


def _validate_losses(tmp_path: Path, data: Path, ckpt: str, batch_size: int) -> dict[str, float]:
    run_cli(
        [
            "validate",
            *tiny_args(tmp_path / "runs", *_args(data), f"--data.batch_size={batch_size}"),
            "--ckpt_path",
            ckpt,
        ]
    )
    summary = sorted(Path(ckpt).parent.parent.glob("validate/*/summary.json"))[-1]
    metrics = json.loads(summary.read_text())["metrics"]
    return {name: value for name, value in metrics.items() if name.startswith("val/loss")}


def test_validation_losses_do_not_depend_on_the_batch_size(tmp_path: Path) -> None:
    # 12 images of two sizes, half with an ignored corner
    data = folder_tree(tmp_path / "data", count=12)
    fit = run_cli(["fit", *tiny_args(tmp_path / "runs", *_args(data))])
    ckpt = fit.trainer.checkpoint_callback.last_model_path
    one, three = (_validate_losses(tmp_path, data, ckpt, size) for size in (1, 3))
    assert {"val/loss", "val/loss/ce", "val/loss/dice"} <= set(one)
    assert one == pytest.approx(three, rel=1e-5)
