"""DenseCRF post-processing step: it cleans a noisy prediction of a clean image, runs a batch of images of
different sizes in its process pool with the same results as in-process, and says in one line what is
wrong with its arguments or its missing extra."""

from __future__ import annotations

import copy
import pickle
import sys

import numpy as np
import pytest
import torch

from lightning_seg.errors import ConfigError
from lightning_seg.postprocess import DenseCRF, Prediction


def shapes_scene(height: int, width: int, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 3×H×W image of flat-coloured shapes on a background, and its int64 H×W class map."""
    rows = torch.arange(height)[:, None]
    cols = torch.arange(width)[None, :]
    target = torch.zeros(height, width, dtype=torch.int64)
    target[height // 6 : height // 2, width // 8 : width // 2] = 1  # a rectangle
    if classes > 2:
        disk = (rows - 2 * height // 3) ** 2 + (cols - 2 * width // 3) ** 2 <= (min(height, width) // 4) ** 2
        target[disk] = 2  # a disk, over the rectangle's corner if they meet
    if classes > 3:
        target[height - height // 8 :, : width // 3] = 3  # a strip along the bottom
    palette = torch.tensor([[40, 90, 40], [200, 60, 50], [60, 80, 210], [220, 210, 60]], dtype=torch.uint8)
    image = palette[target].permute(2, 0, 1).contiguous()
    return image, target


def noisy_probabilities(
    target: torch.Tensor, classes: int, noise: float, generator: torch.Generator
) -> torch.Tensor:
    """float32 K×H×W probabilities right on average: softmax(2·one-hot + Gaussian noise)."""
    one_hot = torch.nn.functional.one_hot(target, classes).permute(2, 0, 1).float()
    logits = 2.0 * one_hot + noise * torch.randn(one_hot.shape, generator=generator)
    return logits.softmax(0)


def mean_iou(predicted: torch.Tensor, target: torch.Tensor, classes: int) -> float:
    ious = []
    for k in range(classes):
        union = ((predicted == k) | (target == k)).sum().item()
        if union:
            ious.append(((predicted == k) & (target == k)).sum().item() / union)
    return float(np.mean(ious))


@pytest.fixture(scope="module")
def pooled_crf():
    """One DenseCRF with a two-process pool, shared by the tests of this file (the pool starts once)."""
    pytest.importorskip("pydensecrf")
    crf = DenseCRF(workers=2)
    yield crf
    crf.close()


def test_crf_raises_iou_of_a_noisy_prediction():
    pytest.importorskip("pydensecrf")
    generator = torch.Generator().manual_seed(0)
    image, target = shapes_scene(64, 80)
    probabilities = noisy_probabilities(target, 3, noise=1.5, generator=generator)
    before_argmax = probabilities.argmax(0)
    wrong = (before_argmax != target).float().mean().item()
    assert 0.15 < wrong < 0.4, f"the noise should spoil 15–40% of the pixels, spoils {wrong:.0%}"
    prediction = Prediction(probabilities=probabilities, image=image)

    DenseCRF(workers=0).apply([prediction])

    before = mean_iou(before_argmax, target, 3)
    after = mean_iou(prediction.probabilities.argmax(0), target, 3)
    assert after > before + 0.2, f"mIoU before the CRF {before:.3f}, after {after:.3f}"


def test_batch_of_different_sizes_in_the_pool_matches_in_process(pooled_crf):
    generator = torch.Generator().manual_seed(1)
    sizes = [(48, 64), (37, 53), (64, 40)]
    classes = 4
    batch = []
    for height, width in sizes:
        image, target = shapes_scene(height, width, classes)
        batch.append((image, noisy_probabilities(target, classes, noise=1.0, generator=generator)))
    # one image given as float64: the step still writes float32
    batch[1] = (batch[1][0], batch[1][1].double())

    pooled = [Prediction(probabilities=p.clone(), image=i) for i, p in batch]
    pooled_crf.apply(pooled)
    assert pooled_crf._pool is not None, "three images with workers=2 should go through the process pool"
    local = [Prediction(probabilities=p.clone(), image=i) for i, p in batch]
    DenseCRF(workers=0).apply(local)

    for (image, original), a, b in zip(batch, pooled, local, strict=True):
        assert a.probabilities.shape == original.shape
        assert a.probabilities.dtype == torch.float32
        assert a.probabilities.device == original.device
        assert a.image is image  # the image is only read
        sums = a.probabilities.sum(0)
        torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-4, rtol=0)
        assert not torch.equal(a.probabilities, original.float()), "the CRF changed nothing"
        torch.testing.assert_close(a.probabilities, b.probabilities, atol=0, rtol=0)


def test_copies_after_a_run_leave_the_pool_behind(pooled_crf):
    generator = torch.Generator().manual_seed(2)
    image, target = shapes_scene(32, 40)
    probabilities = noisy_probabilities(target, 3, noise=1.0, generator=generator)
    runs = [Prediction(probabilities=probabilities.clone(), image=image) for _ in range(2)]
    pooled_crf.apply(runs)
    assert pooled_crf._pool is not None

    copied = copy.deepcopy(pooled_crf)
    unpickled = pickle.loads(pickle.dumps(pooled_crf))
    try:
        for other in (copied, unpickled):
            assert other._pool is None
            assert (other.iterations, other.bilateral_sxy, other.workers) == (10, 121.0, 2)
            again = [Prediction(probabilities=probabilities.clone(), image=image) for _ in range(2)]
            other.apply(again)  # starts a pool of its own
            torch.testing.assert_close(again[0].probabilities, runs[0].probabilities, atol=0, rtol=0)
    finally:
        copied.close()
        unpickled.close()
    assert copied._pool is None and pooled_crf._pool is not None  # closing a copy leaves the original's


def test_describe_and_defaults():
    pytest.importorskip("pydensecrf")
    crf = DenseCRF()
    assert crf.describe() == "crf (10 iterations)"
    assert DenseCRF(iterations=1).describe() == "crf (1 iteration)"
    assert (crf.gaussian_sxy, crf.gaussian_compat) == (3.0, 3.0)
    assert (crf.bilateral_sxy, crf.bilateral_srgb, crf.bilateral_compat) == (121.0, 5.0, 4.0)
    assert 1 <= crf.processes <= 4
    assert (crf.acts_on, crf.name, crf.needs_image) == ("probabilities", "crf", True)


def test_a_weight_of_zero_switches_a_kernel_off_as_the_voc_notebook_did():
    """The VOC notebook's bilateral-only CRF (sxy 20, srgb 13, compat 21, 5 iterations) is pydensecrf with
    the bilateral kernel alone."""
    pytest.importorskip("pydensecrf")
    from pydensecrf.densecrf import DenseCRF2D
    from pydensecrf.utils import unary_from_softmax

    from lightning_seg.postprocess.crf import CLIP

    image, target = shapes_scene(24, 32)
    probabilities = noisy_probabilities(target, 3, 1.5, torch.Generator().manual_seed(0))
    crf = DenseCRF(
        iterations=5, gaussian_compat=0, bilateral_sxy=20, bilateral_srgb=13, bilateral_compat=21, workers=0
    )
    assert crf.describe() == "crf (5 iterations, gaussian kernel off)"
    refined = [Prediction(probabilities=probabilities.clone(), image=image)]
    crf.apply(refined)
    direct = DenseCRF2D(32, 24, 3)
    direct.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probabilities.numpy(), clip=CLIP)))
    rgb = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
    direct.addPairwiseBilateral(sxy=20, srgb=13, rgbim=rgb, compat=21)
    expected = np.asarray(direct.inference(5), dtype=np.float32).reshape(3, 24, 32)
    torch.testing.assert_close(refined[0].probabilities, torch.from_numpy(expected))
    both = DenseCRF(iterations=5, bilateral_sxy=20, bilateral_srgb=13, bilateral_compat=21, workers=0)
    with_gaussian = [Prediction(probabilities=probabilities.clone(), image=image)]
    both.apply(with_gaussian)
    assert not torch.allclose(with_gaussian[0].probabilities, refined[0].probabilities)


def test_missing_extra_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)  # `import pydensecrf.densecrf` fails
    with pytest.raises(ConfigError) as raised:
        DenseCRF()
    assert (
        str(raised.value) == "model.postprocess: DenseCRF needs pydensecrf2; pip install 'lightning_seg[crf]'"
    )


@pytest.mark.parametrize(
    ("arguments", "key"),
    [
        ({"iterations": 0}, "iterations"),
        ({"iterations": 2.5}, "iterations"),
        ({"gaussian_sxy": 0.0}, "gaussian_sxy"),
        ({"gaussian_compat": -3.0}, "gaussian_compat"),
        ({"bilateral_sxy": float("nan")}, "bilateral_sxy"),
        ({"bilateral_srgb": float("inf")}, "bilateral_srgb"),
        ({"bilateral_compat": -1.0}, "bilateral_compat"),
        ({"gaussian_compat": 0, "bilateral_compat": 0}, "gaussian_compat and bilateral_compat are both 0"),
        ({"workers": -1}, "workers"),
    ],
)
def test_bad_arguments_are_one_line(arguments, key):
    with pytest.raises(ConfigError) as raised:
        DenseCRF(**arguments)
    message = str(raised.value)
    assert f"model.postprocess DenseCRF{'.' if ' ' not in key else ': '}{key} " in message
    assert "\n" not in message and len(message) < 196, message


def test_prediction_without_image_or_at_another_size():
    pytest.importorskip("pydensecrf")
    crf = DenseCRF(workers=0)
    probabilities = torch.full((2, 8, 8), 0.5)
    with pytest.raises(ConfigError, match="data module must keep the original images"):
        crf.apply([Prediction(probabilities=probabilities)])
    with pytest.raises(ValueError, match="original size"):
        crf.apply([Prediction(probabilities=probabilities, image=torch.zeros(3, 8, 9, dtype=torch.uint8))])
