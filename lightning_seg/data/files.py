"""Files on disk: finding images and masks, pairing each image with its mask, samples named by lists.

A sample is a :class:`SampleFile`: an image, its mask (or None), a name for outputs, optionally an
image-level label, and the problem found while pairing (a missing mask), if any.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_warn

from lightning_seg.data.io import MASK_EXTENSIONS
from lightning_seg.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SampleFile:
    """One sample on disk.

    Attributes:
        image: the image file.
        mask: the mask file; None means "no annotation file": an all-background mask where the split has
            masks (MSD's defect-free images, COCO images without instances), nothing in ``predict``.
        name: identifies the sample in outputs (the image path relative to its folder, without suffix).
        label: image-level class index, or None.
        foreground_class: for binary (0/1) masks, the class their foreground becomes (MSD defect types).
        error: a problem found while pairing files (e.g. a missing mask); the sample is bad.
    """

    image: Path
    mask: Path | None = None
    name: str = ""
    label: int | None = None
    foreground_class: int | None = None
    error: str | None = None


def find_files(directory: Path, extensions: Sequence[str], exclude: Path | None = None) -> dict[str, Path]:
    """Files under ``directory`` (recursively) by relative stem, e.g. ``{"cat/x": Path(".../cat/x.jpg")}``.

    Hidden files and folders and anything under ``exclude`` are skipped. Two files with the same stem
    (``x.png`` and ``x.jpg``) are an error: the pairing would be ambiguous.
    """
    directory = Path(directory)
    if directory.is_file():
        raise ConfigError(f"{directory}: a file, where a folder of images was expected (give its folder)")
    if not directory.is_dir():
        raise ConfigError(f"{directory}: folder not found")
    # an excluded folder only matters when it lies inside ``directory`` (e.g. images/masks/)
    skip: tuple[str, ...] | None = None
    if exclude is not None and Path(exclude).resolve().is_relative_to(directory.resolve()):
        skip = Path(exclude).resolve().relative_to(directory.resolve()).parts
    found: dict[str, Path] = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.suffix.lower() not in extensions or any(part.startswith(".") for part in relative.parts):
            continue
        if skip is not None and relative.parts[: len(skip)] == skip:
            continue
        key = relative.with_suffix("").as_posix()
        if key in found:
            raise ConfigError(f"{path}: two files with the stem {key!r} ({found[key].name} and {path.name})")
        found[key] = path
    return found


@dataclasses.dataclass
class Pairing:
    """Images paired with their masks.

    Attributes:
        pairs: (key, image, mask or None when missing), sorted by key.
        unused_masks: mask files no image pairs with (a mask without its image).
        suffix_hint: for missing masks, the ``mask_suffix`` the unused masks suggest (``x_mask.png`` for
            ``x.jpg`` → "_mask"), or None.
    """

    pairs: list[tuple[str, Path, Path | None]]
    unused_masks: list[Path]
    suffix_hint: str | None = None


def pair_masks(
    images: dict[str, Path],
    mask_dir: Path,
    mask_suffix: str = "",
    extensions: Sequence[str] = MASK_EXTENSIONS,
) -> Pairing:
    """Pair each image with the mask of the same relative stem (plus ``mask_suffix``).

    A mask is looked up by the image's relative stem first (``masks/cat/x.png`` for ``images/cat/x.jpg``),
    then, for images in sub-folders, by file name at the top of ``mask_dir`` (a flat ``masks/`` folder),
    never in another sub-folder.

    Raises:
        ConfigError: two images would share one mask of the flat folder (the same file name in two image
            sub-folders). Both paths are named.
    """
    masks = find_files(mask_dir, extensions)
    pairs = []
    claimed: dict[Path, Path] = {}  # mask → the image paired with it
    for key, image in sorted(images.items()):
        mask = masks.get(key + mask_suffix)
        if mask is None and "/" in key:
            mask = masks.get(key.rsplit("/", 1)[-1] + mask_suffix)
        if mask is not None and mask in claimed:
            raise ConfigError(
                f"{image}: ambiguous pairing, {claimed[mask]} pairs with the same mask {mask}; "
                f"mirror the image sub-folders under {mask_dir}"
            )
        if mask is not None:
            claimed[mask] = image
        pairs.append((key, image, mask))
    # with images and masks in one folder (mask_suffix), the images are found as masks too
    image_files = set(images.values())
    unused = [path for path in masks.values() if path not in claimed and path not in image_files]
    return Pairing(pairs, unused, _suffix_hint(pairs, unused, mask_suffix))


def _suffix_hint(
    pairs: list[tuple[str, Path, Path | None]], unused: list[Path], mask_suffix: str
) -> str | None:
    """The ``mask_suffix`` that would pair most of the images without a mask with unused masks (``x`` and
    ``x_mask``), or None."""
    missing = [key.rsplit("/", 1)[-1] for key, _, mask in pairs if mask is None]
    if not missing or mask_suffix:
        return None
    stems = {path.stem for path in unused}
    first = next((stem for stem in stems if stem.startswith(missing[0]) and stem != missing[0]), None)
    if first is None:
        return None
    suffix = first[len(missing[0]) :]
    return suffix if 2 * sum(name + suffix in stems for name in missing) >= len(missing) else None


def paired_samples(
    images: dict[str, Path],
    mask_dir: Path,
    mask_suffix: str = "",
    extensions: Sequence[str] = MASK_EXTENSIONS,
) -> list[SampleFile]:
    """:func:`pair_masks` as samples named by their key: an image without its mask is a bad sample (its
    error says where the mask was looked for), and masks without an image are counted in one warning."""
    pairing = pair_masks(images, mask_dir, mask_suffix, extensions)
    if pairing.unused_masks:
        rank_zero_warn(
            f"{mask_dir}: {len(pairing.unused_masks)} mask(s) have no image and are not used "
            f"(first: {pairing.unused_masks[0]})"
        )
    hint = (
        f"; the masks look named with data.mask_suffix: {pairing.suffix_hint!r}"
        if pairing.suffix_hint
        else ""
    )
    samples = []
    for key, image, mask in pairing.pairs:
        error = None
        if mask is None:
            error = (
                f"{image}: mask missing (looked for {Path(mask_dir) / (key + mask_suffix)}.png/.jpg){hint}"
            )
        samples.append(SampleFile(image, mask, key, error=error))
    return samples


def require_list_file(list_file: Path, layout: str, download: bool) -> None:
    """Fail with one line when a split list of a dataset in torchvision's ``layout`` is missing."""
    if not list_file.is_file():
        hint = " (or set data.download true)" if not download else ""
        raise ConfigError(f"{list_file}: not found; expected torchvision's {layout} layout{hint}")


def listed_sample(image: Path, mask: Path, name: str, label: int | None = None) -> SampleFile:
    """A sample whose files a split list names: a missing mask file makes it bad."""
    error = None if mask.is_file() else f"{image}: mask missing ({mask})"
    return SampleFile(image, mask, name, label, error=error)
