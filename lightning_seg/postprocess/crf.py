"""``DenseCRF``: a fully connected CRF (Krähenbühl & Koltun, 2011) that sharpens the probabilities along the
image's edges before the class map is decided, through ``pydensecrf2`` (an optional extra:
``pip install 'lightning_seg[crf]'``).

Each image's energy is the unary -log p (the net's probabilities, clipped away from 0) plus two pairwise
Potts terms over all pairs of pixels: a Gaussian on position (smooths small specks) and a bilateral kernel on
position and RGB colour (pixels alike in colour and near each other take the same class). Mean-field
inference runs on the CPU, one image per process: images of a batch are refined in parallel in a pool of
``workers`` processes, kept between batches (:meth:`DenseCRF.close` ends it).
"""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import torch

from lightning_seg.errors import ConfigError
from lightning_seg.postprocess.base import Prediction, Step

CLIP = 1e-5
"""Smallest probability the unary sees: -log(1e-5) ≈ 11.5 instead of an infinite energy for p = 0."""


def refine(
    probabilities: np.ndarray,
    image: np.ndarray,
    iterations: int,
    gaussian_sxy: float,
    gaussian_compat: float,
    bilateral_sxy: float,
    bilateral_srgb: float,
    bilateral_compat: float,
) -> np.ndarray:
    """Mean-field inference of the dense CRF for one image (what a worker process runs).

    Args:
        probabilities: float32 K×H×W class probabilities, C-contiguous.
        image: uint8 H×W×3 RGB image, C-contiguous.
        iterations: mean-field iterations.
        gaussian_sxy: position kernel's standard deviation in pixels.
        gaussian_compat: position kernel's weight (Potts compatibility); 0: no position kernel.
        bilateral_sxy: bilateral kernel's position standard deviation in pixels.
        bilateral_srgb: bilateral kernel's colour standard deviation (0–255 RGB units).
        bilateral_compat: bilateral kernel's weight (Potts compatibility); 0: no bilateral kernel.

    Returns:
        float32 K×H×W C-contiguous marginals; each pixel's K values sum to 1.
    """
    # imported here: a worker process needs only these, and the step's constructor has checked them
    from pydensecrf.densecrf import DenseCRF2D
    from pydensecrf.utils import unary_from_softmax

    classes, height, width = probabilities.shape
    crf = DenseCRF2D(width, height, classes)  # pydensecrf takes the width first
    # the C++ side reads the buffers as they lie in memory: a strided view would be read as garbage
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probabilities, clip=CLIP), dtype=np.float32))
    if gaussian_compat > 0:
        crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    if bilateral_compat > 0:
        crf.addPairwiseBilateral(
            sxy=bilateral_sxy,
            srgb=bilateral_srgb,
            rgbim=np.ascontiguousarray(image, dtype=np.uint8),
            compat=bilateral_compat,
        )
    marginals = np.asarray(crf.inference(iterations), dtype=np.float32)  # K×(H·W)
    return np.ascontiguousarray(marginals.reshape(classes, height, width))


class DenseCRF(Step):
    """Dense-CRF refinement of each image's probabilities (see the module's docstring).

    Defaults follow DeepLab (Chen et al., ICLR 2015 and TPAMI 2017), which fix the position kernel at
    w2 = 3, σγ = 3 and cross-validate the bilateral kernel on PASCAL VOC val; the bilateral defaults are the
    VOC values of the DeepLab-LargeFOV release (w1 = 4, σα = 121, σβ = 5), with 10 mean-field iterations.
    (The DeepLab-v2 ResNet-101 release uses w1 = 4, σα = 67, σβ = 3 and σγ = 1.) The σ's are in pixels of
    images about 500 pixels wide; tune them on your own validation set, larger images want a larger σα.

    Args:
        iterations: mean-field iterations (DeepLab: 10).
        gaussian_sxy: position kernel's standard deviation in pixels (σγ).
        gaussian_compat: position kernel's weight (w2); 0 switches the position kernel off (one VOC notebook
            used the bilateral kernel alone: sxy 20, srgb 13, compat 21, 5 iterations).
        bilateral_sxy: bilateral kernel's position standard deviation in pixels (σα).
        bilateral_srgb: bilateral kernel's colour standard deviation, in 0–255 RGB units (σβ).
        bilateral_compat: bilateral kernel's weight (w1); 0 switches the bilateral kernel off.
        workers: processes refining the images of a batch in parallel; None: min(4, CPUs available);
            0 or 1: in this process.
    """

    acts_on = "probabilities"
    name = "crf"
    needs_image = True

    def __init__(
        self,
        iterations: int = 10,
        gaussian_sxy: float = 3.0,
        gaussian_compat: float = 3.0,
        bilateral_sxy: float = 121.0,
        bilateral_srgb: float = 5.0,
        bilateral_compat: float = 4.0,
        workers: int | None = None,
    ) -> None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ConfigError(
                f"model.postprocess DenseCRF.iterations must be an integer >= 1, got {iterations!r}"
            )
        for key, value in (
            ("gaussian_sxy", gaussian_sxy),
            ("gaussian_compat", gaussian_compat),
            ("bilateral_sxy", bilateral_sxy),
            ("bilateral_srgb", bilateral_srgb),
            ("bilateral_compat", bilateral_compat),
        ):
            off = key.endswith("compat") and value == 0  # a weight of 0 switches its kernel off
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or (value <= 0 and not off)
            ):
                raise ConfigError(
                    f"model.postprocess DenseCRF.{key} must be a positive number"
                    f"{' (or 0: that kernel off)' if key.endswith('compat') else ''}, got {value!r}"
                )
        if gaussian_compat == 0 and bilateral_compat == 0:
            raise ConfigError(
                "model.postprocess DenseCRF: gaussian_compat and bilateral_compat are both 0 (no kernel left); "
                "leave the step out instead"
            )
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise ConfigError(
                f"model.postprocess DenseCRF.workers must be an integer >= 0 (or null), got {workers!r}"
            )
        try:
            import pydensecrf.densecrf  # noqa: F401
            import pydensecrf.utils  # noqa: F401
        except ImportError as error:
            raise ConfigError(
                "model.postprocess: DenseCRF needs pydensecrf2; pip install 'lightning_seg[crf]'"
            ) from error
        self.iterations = iterations
        self.gaussian_sxy = float(gaussian_sxy)
        self.gaussian_compat = float(gaussian_compat)
        self.bilateral_sxy = float(bilateral_sxy)
        self.bilateral_srgb = float(bilateral_srgb)
        self.bilateral_compat = float(bilateral_compat)
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    @property
    def processes(self) -> int:
        """Worker processes the pool uses (``workers``, or min(4, CPUs this process may run on))."""
        if self.workers is not None:
            return self.workers
        try:
            available = len(os.sched_getaffinity(0))  # a container's CPU set, not the host's
        except AttributeError:  # not on Linux
            available = os.cpu_count() or 1
        return min(4, available)

    def describe(self) -> str:
        kernels = [
            name
            for name, weight in (("gaussian", self.gaussian_compat), ("bilateral", self.bilateral_compat))
            if weight == 0
        ]
        off = f", {kernels[0]} kernel off" if kernels else ""
        return f"crf ({self.iterations} iteration{'s' if self.iterations != 1 else ''}{off})"

    def apply(self, predictions: list[Prediction]) -> None:
        """Refine each prediction's probabilities in place.

        Each :attr:`Prediction.probabilities` (float K×H×W) becomes the CRF's float32 K×H×W marginals, on
        the device it was on; :attr:`Prediction.image` (uint8 3×H×W) must be given.
        """
        inputs = [self._numpy_inputs(index, prediction) for index, prediction in enumerate(predictions)]
        parameters = (
            self.iterations,
            self.gaussian_sxy,
            self.gaussian_compat,
            self.bilateral_sxy,
            self.bilateral_srgb,
            self.bilateral_compat,
        )
        if self.processes <= 1 or len(inputs) <= 1:
            # one image gains nothing from a pool: sending it there and back only costs a copy
            results = [refine(probabilities, image, *parameters) for probabilities, image in inputs]
        else:
            pool = self._get_pool()
            try:
                futures = [
                    pool.submit(refine, probabilities, image, *parameters) for probabilities, image in inputs
                ]
                results = [future.result() for future in futures]
            except BrokenProcessPool as error:
                self.close()  # a broken pool takes no more work; the next batch starts a new one
                raise RuntimeError(
                    "a DenseCRF worker process ended abruptly (out of memory? fewer "
                    "model.postprocess DenseCRF.workers use less; the main script must also be safe to "
                    "import, under if __name__ == '__main__')"
                ) from error
        for prediction, marginals in zip(predictions, results, strict=True):
            prediction.probabilities = torch.from_numpy(marginals).to(prediction.probabilities.device)

    def _numpy_inputs(self, index: int, prediction: Prediction) -> tuple[np.ndarray, np.ndarray]:
        """float32 K×H×W probabilities and uint8 H×W×3 image of one prediction, C-contiguous, on the CPU."""
        probabilities = prediction.probabilities
        if probabilities.ndim != 3 or probabilities.shape[0] < 2:
            raise ValueError(
                f"DenseCRF: image {index} of the batch: probabilities must be K×H×W with K >= 2, "
                f"got shape {tuple(probabilities.shape)}"
            )
        if prediction.image is None:
            raise ConfigError(
                f"model.postprocess DenseCRF: image {index} of the batch came without its RGB image; "
                "the data module must keep the original images for a step that needs them"
            )
        image = prediction.image
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(
                f"DenseCRF: image {index} of the batch must be uint8 3×H×W RGB, "
                f"got {image.dtype} of shape {tuple(image.shape)}"
            )
        if image.shape[1:] != probabilities.shape[1:]:
            raise ValueError(
                f"DenseCRF: image {index} of the batch is {tuple(image.shape[1:])} but its probabilities "
                f"are {tuple(probabilities.shape[1:])}: both must be at the original size"
            )
        # float32 first: numpy has no bfloat16, and the unary is computed in float32 anyway
        probabilities_np = np.ascontiguousarray(probabilities.detach().to("cpu", torch.float32).numpy())
        image_np = np.ascontiguousarray(image.detach().cpu().permute(1, 2, 0).numpy())
        return probabilities_np, image_np

    def _get_pool(self) -> ProcessPoolExecutor:
        """The worker pool, started on first use and kept for the next batches."""
        if self._pool is None:
            # never fork: the parent may hold CUDA state (and threads) that a forked child cannot use.
            # forkserver forks the workers from one clean server process; preloading this module there
            # pays the import of lightning_seg (seconds, and its memory, shared copy-on-write) once rather
            # than in each worker. '__main__' stays in the list as the default has it, so that the workers
            # do not run the main script again each. The preload only counts if the server is not running
            # yet (it is one per process); otherwise each worker imports the module itself. Measured with
            # two workers: first batch 5 s and ~190 MB (PSS) a worker, against 11 s and ~620 MB with spawn.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["__main__", __name__])
            self._pool = ProcessPoolExecutor(max_workers=self.processes, mp_context=context)
        return self._pool

    def close(self) -> None:
        """End the worker pool (started again if the step is used after)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __getstate__(self) -> dict[str, Any]:
        # a pool cannot be pickled or copied (LightningCLI deep-copies config objects): a copy starts its own
        state = self.__dict__.copy()
        state["_pool"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
