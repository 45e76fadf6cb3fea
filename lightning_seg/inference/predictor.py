"""``Inference``: a normalised batch → float32 class probabilities at each image's original size.

One object, configured in YAML as ``model.init_args.inference``, used by ``predict`` and ``test`` alike:

* ``mode: resize`` — the net sees the whole image as the data module made it; probabilities are resized
  back (bilinear) to each image's original size before any decision.
* ``mode: slide`` — windows of ``crop`` pixels every ``stride`` pixels, batched on the device, their logits
  blended where they overlap (``blend: gaussian`` weighs window centres more, ``constant`` averages),
  through MONAI's ``sliding_window_inference`` (well tested, pads images smaller than a window).
* test-time augmentation: ``hflip``, ``vflip`` and ``scales``; each variant's probabilities are mapped back
  to the un-augmented frame and averaged. Flipped copies go through the net in one batch with the original.

Probabilities are the softmax of the logits (sigmoid for a one-channel head), averaged over the variants;
resizing and averaging probabilities keeps them probabilities. The class map is decided from them by the
module (:meth:`EvaluationPath.classes_from_probabilities`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch.nn import functional as F

from lightning_seg.errors import ConfigError

Logits = Callable[[torch.Tensor], torch.Tensor]
"""float32 B×3×H×W normalised images → float B×K×H×W logits at the input size."""


def to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """B×K×H×W logits → float32 probabilities (softmax over K; sigmoid for a one-channel head)."""
    logits = logits.float()
    return logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(1)


class Inference:
    """How ``predict`` and ``test`` turn images into class probabilities (see the module's docstring).

    Args:
        mode: "resize" (the whole image at once) or "slide" (windows of ``crop`` every ``stride``).
        crop: window height and width for "slide".
        stride: step between windows; None: half the crop (each pixel in up to four windows).
        blend: weights of overlapping windows, "gaussian" or "constant".
        window_batch_size: windows per forward pass.
        hflip: also predict the horizontally flipped image.
        vflip: also predict the vertically flipped image.
        scales: image scales to predict at (1.0: as given); more than one is multi-scale TTA.
        pad: pad an image smaller than a window (constant 0, i.e. the mean colour after normalisation);
            False refuses such an image instead.
    """

    def __init__(
        self,
        mode: Literal["resize", "slide"] = "resize",
        crop: tuple[int, int] | None = None,
        stride: tuple[int, int] | None = None,
        blend: Literal["gaussian", "constant"] = "gaussian",
        window_batch_size: int = 8,
        hflip: bool = False,
        vflip: bool = False,
        scales: Sequence[float] = (1.0,),
        pad: bool = True,
    ) -> None:
        if stride is not None and crop is None:
            raise ConfigError("model.inference.stride needs a crop (the window size)")
        if mode == "slide" and crop is None:
            raise ConfigError("model.inference.crop: mode slide needs a window size, e.g. crop: [512, 512]")
        for name, value in (("crop", crop), ("stride", stride)):
            if value is not None and (len(value) != 2 or min(value) < 1):
                raise ConfigError(
                    f"model.inference.{name} must be [height, width], positive, got {list(value)}"
                )
        if (
            stride is not None
            and crop is not None
            and not all(0 < s <= c for s, c in zip(stride, crop, strict=True))
        ):
            raise ConfigError(
                f"model.inference.stride must be in (0, crop], got {list(stride)} for crop {list(crop)}"
            )
        if not scales or min(scales) <= 0:
            raise ConfigError(f"model.inference.scales must be positive, got {list(scales)}")
        if window_batch_size < 1:
            raise ConfigError(f"model.inference.window_batch_size must be >= 1, got {window_batch_size}")
        self.mode = mode
        self.crop = tuple(crop) if crop is not None else None
        # half a window by default: each pixel in up to four windows
        self.stride = (
            tuple(stride)
            if stride is not None
            else (tuple(max(1, c // 2) for c in self.crop) if self.crop is not None else None)
        )
        self.blend = blend
        self.window_batch_size = window_batch_size
        self.hflip = hflip
        self.vflip = vflip
        self.scales = tuple(float(s) for s in scales)
        self.pad = pad

    @property
    def is_plain(self) -> bool:
        """One forward pass of the whole image: the training step's own logits give the same result."""
        return self.mode == "resize" and not self.hflip and not self.vflip and self.scales == (1.0,)

    def describe(self) -> str:
        """One line for logs and summaries, e.g. ``slide 512×512/256 gaussian + hflip``."""
        text = self.mode
        if self.mode == "slide" and self.crop is not None and self.stride is not None:
            text += f" {self.crop[0]}×{self.crop[1]}/{self.stride[0]}×{self.stride[1]} {self.blend}"
        extras = [name for name, on in (("hflip", self.hflip), ("vflip", self.vflip)) if on]
        if self.scales != (1.0,):
            extras.append("scales " + ",".join(f"{s:g}" for s in self.scales))
        return text + (" + " + " + ".join(extras) if extras else "")

    # ------------------------------------------------------------------------------------ the path
    def probabilities(
        self, logits_of: Logits, image: torch.Tensor, plain_logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Averaged probabilities over the augmented variants, at the input size.

        Args:
            logits_of: the net (see :data:`Logits`).
            image: float32 B×3×H×W normalised images.
            plain_logits: the net's B×K×H×W logits of ``image`` as it is, when already computed (``test``
                has them from its loss): in resize mode they stand for the un-flipped variant at scale 1,
                sparing that forward pass.

        Returns:
            float32 B×K×H×W probabilities.
        """
        height, width = image.shape[-2:]
        total: torch.Tensor | None = None
        count = 0
        flips = [()] + ([(-1,)] if self.hflip else []) + ([(-2,)] if self.vflip else [])
        for scale in self.scales:
            scaled = image
            if scale != 1.0:
                # to a whole size, so that resizing back maps pixel centres onto each other
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                scaled = F.interpolate(
                    image, size=size, mode="bilinear", align_corners=False, antialias=scale < 1
                )
            reuse = plain_logits is not None and scale == 1.0 and self.mode == "resize"
            variants = flips[1:] if reuse else flips
            # the flipped copies ride in the same batch as the original: one pass through the net
            parts = []
            if variants:
                copies = torch.cat([scaled.flip(dims) if dims else scaled for dims in variants])
                parts.append(self._logits(logits_of, copies))
            if reuse:
                assert plain_logits is not None
                parts.insert(0, plain_logits)
            probabilities = to_probabilities(torch.cat(parts))
            for index, dims in enumerate(flips):
                part = probabilities[index * len(image) : (index + 1) * len(image)]
                part = part.flip(dims) if dims else part
                if part.shape[-2:] != (height, width):
                    part = F.interpolate(part, size=(height, width), mode="bilinear", align_corners=False)
                total = part if total is None else total + part
                count += 1
        assert total is not None
        return total / count

    def _logits(self, logits_of: Logits, image: torch.Tensor) -> torch.Tensor:
        if self.mode == "resize":
            return logits_of(image)
        from monai.inferers import sliding_window_inference  # imported only when sliding

        assert self.crop is not None and self.stride is not None
        if not self.pad and any(c > s for c, s in zip(self.crop, image.shape[-2:], strict=True)):
            raise ConfigError(
                f"model.inference.crop {list(self.crop)} is larger than the image "
                f"({image.shape[-2]}×{image.shape[-1]}) and pad is false; use a smaller crop or pad: true"
            )
        # MONAI derives the stride as int(crop * (1 - overlap)): 1 - stride/crop loses a little in floating
        # point and comes out one pixel short (96/32 → 31: 16 windows instead of 9); half a pixel of margin
        # gives the stride exactly
        overlap = [(c - s - 0.5) / c if s < c else 0.0 for s, c in zip(self.stride, self.crop, strict=True)]
        return sliding_window_inference(
            image,
            roi_size=self.crop,
            sw_batch_size=self.window_batch_size,
            predictor=logits_of,
            overlap=overlap,
            mode=self.blend,
            padding_mode="constant",
        )

    def at_size(self, probabilities: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """K×H×W probabilities of one image → K×h×w at its original size (bilinear). One image at a time:
        a batch of them at full resolution can take gigabytes."""
        if tuple(probabilities.shape[-2:]) == tuple(size):
            return probabilities
        return F.interpolate(probabilities[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
