"""Reading images and masks from disk, and turning raw mask pixels into class indices.

Decoding goes through ``torchvision.io`` (libpng/libjpeg-turbo, no PIL round trip), once per sample.
PIL is the fallback only where torchvision cannot be trusted or cannot read the file: palette PNGs with
fewer than 8 bits per pixel (torchvision returns the packed bytes, not the indices) and formats
torchvision does not decode (BMP, TIFF).

Every problem with a file raises :class:`~lightning_seg.errors.ConfigError` with one line that names the
file and the problem, so the command line can print it as is.

Mask encoders turn a decoded mask into int64 class indices with whole-tensor operations (lookup tables,
``searchsorted``), never a Python loop over pixels:

- :class:`IndexMaskEncoder`: pixel values are class indices (8/16-bit grey or palette PNG), optionally
  remapped through a value table (Oxford pets trimaps, VOC's 255 border).
- :class:`ColorMaskEncoder`: an RGB colour per class.
- :class:`BinaryMaskEncoder`: foreground where the brightest channel reaches a threshold (robust to JPEG
  noise).
"""

from __future__ import annotations

import dataclasses
import functools
import io as _io
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image, read_file

from lightning_seg.errors import ConfigError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MASK_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
# lossy formats: a mask saved this way has noise around every value, so 0/1 masks cannot be told from noise
LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".webp")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_PALETTE = 3
# PIL modes of images deeper than 8 bits per channel (16-bit and 32-bit integer grey, float grey)
_PIL_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# EXIF orientations that swap width and height (transpose, rotations by 90° and 270°)
_EXIF_ORIENTATION_TAG = 0x0112
_EXIF_SWAPS_AXES = (5, 6, 7, 8)


# ------------------------------------------------------------------------------------------ decoding
def _check_file(path: Path) -> None:
    """A missing or empty file: one line naming it (before a decoder says something vaguer)."""
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, where an image or mask file was expected")
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ConfigError(f"{path}: empty file")


def _read_bytes(path: Path) -> torch.Tensor:
    path = Path(path)
    _check_file(path)
    try:
        return read_file(str(path))
    except RuntimeError as err:  # permissions, I/O errors
        raise ConfigError(f"{path}: cannot read file ({_short(err)})") from None


def _short(err: BaseException) -> str:
    """The useful part of a torchvision/PIL error: drop the C++ source location and keep one line."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    # torchvision prefixes "function, /path/file.cpp:79, " to its messages
    if ".cpp:" in text:
        text = text.split(".cpp:", 1)[1].split(", ", 1)[-1]
    return text.strip()


def _torchvision_decodes(head: bytes) -> bool:
    """True for the formats torchvision decodes natively (PNG, JPEG, GIF, WebP), judged by magic bytes."""
    return (
        head.startswith(_PNG_MAGIC)
        or head.startswith(b"\xff\xd8\xff")
        or head.startswith(b"GIF8")
        or (head.startswith(b"RIFF") and head[8:12] == b"WEBP")
    )


def _png_depth_and_type(head: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG from its first 26 bytes, or None for other formats."""
    # IHDR is always the first chunk: bytes 24 and 25 are the bit depth and the colour type
    return (head[24], head[25]) if head.startswith(_PNG_MAGIC) and len(head) == 26 else None


def _deep_colour_tiff(img) -> bool:
    """A TIFF with more than 8 bits per sample that PIL opens as 8-bit RGB (keeping the high byte)."""
    if img.format != "TIFF" or img.mode in _PIL_DEEP_MODES:
        return False
    bits = img.tag_v2.get(258, (8,))  # BitsPerSample
    return max(bits if isinstance(bits, tuple) else (bits,)) > 8


def _pil_decode(data: torch.Tensor, path: Path, as_index: bool, alpha: bool = False) -> torch.Tensor:
    """Decode with PIL, EXIF orientation applied: C×H×W.

    ``as_index``: the stored values of one-channel files (palette indices, grey levels; uint8, or uint16
    for 16-bit), else RGB uint8. Images of more than 8 bits per channel (16-bit and 32-bit integer, float)
    keep their values and dtype so that :func:`read_image` can scale them by a known range."""
    import numpy as np
    from PIL import Image, ImageOps

    try:
        with Image.open(_io.BytesIO(data.numpy().tobytes())) as opened:
            if _deep_colour_tiff(opened):
                raise ConfigError(
                    f"{path}: a colour TIFF of more than 8 bits per channel, which PIL reads as its high "
                    "byte only; save it as a 16-bit PNG (then set data.image_value_range)"
                )
            img = ImageOps.exif_transpose(opened)  # a copy with the orientation applied (or the image)
            img.load()
            if img.mode in _PIL_DEEP_MODES:
                array = np.asarray(img)
                if as_index:
                    if array.dtype.kind == "f" or array.min() < 0 or array.max() > 65535:
                        raise ConfigError(
                            f"{path}: mask values must be integers in 0..65535 (found {img.mode} data)"
                        )
                    array = array.astype(np.uint16 if array.max() > 255 else np.uint8)
                elif array.dtype.kind not in "uf" or array.dtype.itemsize > 4:
                    array = array.astype(np.float64)
            elif as_index and img.mode in ("1", "P", "L", "LA", "PA"):
                # palette indices or grey levels as stored (with their alpha, which read_mask checks)
                array = np.asarray(img).astype(np.uint8)
            elif alpha and (img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info):
                array = np.asarray(img.convert("RGBA"))
            else:
                # '1' (bilevel) becomes 0/255 like libpng's expansion of 1-bit greyscale
                array = np.asarray(img.convert("RGB"))
    except ConfigError:
        raise
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise ConfigError(f"{path}: cannot decode image ({_short(err)})") from None
    tensor = torch.from_numpy(np.array(array))  # a writable copy
    return tensor.permute(2, 0, 1).contiguous() if tensor.ndim == 3 else tensor[None]


def _decode(data: torch.Tensor, path: Path, mode: ImageReadMode) -> torch.Tensor:
    try:
        # EXIF orientation applied: annotation tools draw masks on the image as a viewer shows it
        decoded = decode_image(data, mode=mode, apply_exif_orientation=True)
    except RuntimeError as err:
        raise ConfigError(f"{path}: cannot decode image ({_short(err)})") from None
    # an animated GIF decodes to N×C×H×W: its first frame is the image (what a viewer shows first)
    return decoded[0] if decoded.ndim == 4 else decoded


def _decode_raw(path: Path, as_index: bool, alpha: bool = False) -> torch.Tensor:
    """Decode a file, EXIF orientation applied: ``as_index``: the stored values, 1 or more channels (palette
    indices, 16-bit and 1/2/4-bit grey values as stored, alpha kept); else RGB, 3 channels (1 for deep grey
    images; 4 with ``alpha``: RGBA), uint8 or, for images of more than 8 bits, their own dtype (uint16,
    int32, float32)."""
    data = _read_bytes(path)
    head = bytes(data[:26].tolist())
    png = _png_depth_and_type(head)
    # torchvision returns the packed bytes of 1/2/4-bit palette PNGs, not the indices, a GIF's colours, not
    # its palette indices, and an undefined alpha channel for palette PNGs (PIL gets all three right)
    palette = png is not None and png[1] == _PNG_PALETTE
    if (
        not _torchvision_decodes(head)
        or (palette and (png[0] < 8 or (alpha and not as_index)))  # index masks need no palette colours
        or (head.startswith(b"GIF8") and (as_index or alpha))
    ):
        return _pil_decode(data, path, as_index=as_index, alpha=alpha)
    # UNCHANGED keeps palette indices, 16-bit values and alpha; GRAY would turn a palette into luminance.
    # RGB_ALPHA only where the file has an alpha channel (grey+alpha, RGBA PNGs) to check
    with_alpha = alpha and png is not None and png[1] in (4, 6)
    mode = (
        ImageReadMode.UNCHANGED if as_index else ImageReadMode.RGB_ALPHA if with_alpha else ImageReadMode.RGB
    )
    raw = _decode(data, path, mode)
    if as_index and png is not None and png[1] == 0 and png[0] < 8:
        # libpng scales 1/2/4-bit grey to 0..255 (1 → 255); an index mask means the stored values
        raw = raw // (255 // (2 ** png[0] - 1))
    return raw


def _describe_depth(image: torch.Tensor) -> str:
    """E.g. "16-bit image (values 0..4095)", for error lines."""
    kind = "float" if image.is_floating_point() else f"{image.dtype.itemsize * 8}-bit"
    values = image.to(torch.float64)
    return f"{kind} image (values {float(values.min()):g}..{float(values.max()):g})"


def to_8bit(image: torch.Tensor, path: Path, value_range: tuple[float, float] | None) -> torch.Tensor:
    """An image of any depth → uint8, mapping ``value_range`` (low, high) linearly onto 0..255.

    8-bit images are returned as they are. Deeper images (16-bit, 32-bit, float) need ``value_range``:
    taking their high byte would keep 16 grey levels of 12-bit data, and a float image in 0..1 would be
    black. Values outside the range are clipped.
    """
    if image.dtype == torch.uint8:
        return image
    if value_range is None:
        raise ConfigError(
            f"{path}: {_describe_depth(image)}; set data.image_value_range: [low, high] to map it to 8 bits "
            "(e.g. [0, 4095] for 12-bit, [0, 65535] for 16-bit, [0, 1] for float data)"
        )
    low, high = value_range
    scaled = (image.to(torch.float64) - low) * (255.0 / (high - low))
    return scaled.round_().clamp_(0, 255).to(torch.uint8)


def read_image(path: str | Path, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Decode an image file as RGB, EXIF orientation applied (the first frame of an animated GIF).

    Args:
        path: PNG, JPEG, WebP, GIF, BMP or TIFF.
        value_range: (low, high) of the stored values of images deeper than 8 bits, mapped onto 0..255
            (see :func:`to_8bit`); None refuses such images.

    Returns:
        uint8 3×H×W (grey, palette, CMYK and alpha images are converted).

    Raises:
        ConfigError: the file is missing, empty, truncated or not an image, or deeper than 8 bits without
            ``value_range``.
    """
    path = Path(path)
    image = to_8bit(_decode_raw(path, as_index=False), path, value_range)
    return image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image


def read_mask(path: str | Path, color: bool = False) -> torch.Tensor:
    """Decode a mask file without changing its values.

    Args:
        path: PNG (8/16-bit grey, palette, RGB), JPEG, GIF, BMP or TIFF.
        color: False: one channel of stored values (palette PNGs give their indices, not colours);
            True: the colours a viewer shows, 3 channels (palette expanded, grey repeated).

    Returns:
        ``color=False``: uint8 or uint16 1×H×W; ``color=True``: uint8 3×H×W.

    Raises:
        ConfigError: unreadable file, or a colour mask read as an index mask.
    """
    path = Path(path)
    raw = _decode_raw(path, as_index=not color, alpha=True)
    if raw.shape[0] in (2, 4):  # grey+alpha, RGBA
        raw = _without_alpha(raw, path)
    if color:
        if raw.dtype != torch.uint8:
            raise ConfigError(f"{path}: {_describe_depth(raw)}; colour and binary masks must be 8-bit")
        return raw.expand(3, -1, -1) if raw.shape[0] == 1 else raw
    if raw.shape[0] == 3:
        # an index mask saved as RGB with equal channels is fine; real colours need mask_mode "rgb"
        if not (torch.equal(raw[0], raw[1]) and torch.equal(raw[0], raw[2])):
            raise ConfigError(
                f"{path}: mask has colours, not class indices (use an RGB mask mode with colors)"
            )
        raw = raw[:1]
    return raw


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What a file's header says: the (height, width) a viewer shows (EXIF orientation applied), whether
    the pixels are deeper than 8 bits per channel, and whether an EXIF orientation rotates them."""

    size: tuple[int, int]
    deep: bool = False
    rotated: bool = False


def _without_alpha(raw: torch.Tensor, path: Path) -> torch.Tensor:
    """Drop a mask's alpha channel, unless it may carry the label.

    Uniform alpha, or transparency only over black (a label painted on an empty transparent canvas), says
    nothing the values do not say. Transparency over other values is ambiguous: the label may be the
    opaque region (a viewer shows it so) while the values say otherwise.
    """
    values, alpha = raw[:-1], raw[-1]
    transparent = alpha < alpha.max()
    if bool(transparent.any()) and bool((values[:, transparent] != 0).any()):
        raise ConfigError(
            f"{path}: mask has transparency ({int(transparent.sum())} pixels) over non-black values, so "
            "its label may be in the alpha channel; save the mask without transparency"
        )
    return values


def image_header(path: str | Path) -> ImageHeader:
    """Read the header only (no decode): cheap enough to check a whole dataset at setup."""
    from PIL import Image

    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION_TAG)
            if orientation in _EXIF_SWAPS_AXES:
                width, height = height, width
            # PIL opens 16-bit RGB PNGs and TIFFs as 8-bit RGB: the file's own bit depth is the truth there
            with path.open("rb") as file:
                png = _png_depth_and_type(file.read(26))
            deep = img.mode in _PIL_DEEP_MODES or (png is not None and png[0] > 8) or _deep_colour_tiff(img)
    except Image.DecompressionBombError as err:
        raise ConfigError(f"{path}: {_bomb_line(err)}") from None
    except Exception as err:
        if "truncated" in str(err).lower():
            raise ConfigError(f"{path}: {TRUNCATED}") from None
        raise ConfigError(f"{path}: cannot read image header ({_short(err)})") from None
    if path.suffix.lower() in (".jpg", ".jpeg") and not _ends_with_jpeg_marker(path):
        raise ConfigError(f"{path}: truncated JPEG (no end-of-image marker): {TRUNCATED}")
    return ImageHeader((height, width), deep, rotated=orientation not in (None, 1))


TRUNCATED = (
    "the file was cut short (an interrupted copy?); copy or export it again, or set data.on_bad_sample: skip"
)


def _ends_with_jpeg_marker(path: Path) -> bool:
    """Whether a JPEG's last kilobyte holds the end-of-image marker FF D9: a file cut short (an interrupted
    copy or download) does not, and would decode with a grey bottom or fail only when it is first loaded.
    Reads 1 KiB, so the header check stays cheap; data some writers append after the marker is allowed."""
    with path.open("rb") as file:
        file.seek(0, 2)
        size = file.tell()
        file.seek(max(0, size - 1024))
        return b"\xff\xd9" in file.read()


def _bomb_line(error: Exception) -> str:
    """PIL's decompression-bomb refusal as what it is: the image's pixels, the limit, and how to raise it
    for a trusted file."""
    numbers = [f"{int(n):,}" for n in re.findall(r"(\d+) pixels", str(error))]
    size, limit = (numbers + ["more", "its"])[:2] if len(numbers) < 2 else numbers[:2]
    return (
        f"{size} pixels, over PIL's decompression-bomb limit of {limit} pixels; if the image is trusted, raise "
        "it (PIL.Image.MAX_IMAGE_PIXELS = None before training, in a script), or tile the image first"
    )


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) as a viewer shows the image (EXIF orientation applied), from the header only."""
    return image_header(path).size


# -------------------------------------------------------------------------------------- mask encoders
class MaskEncoder:
    """Raw decoded mask → int64 H×W class indices. Subclasses set :attr:`color` and implement :meth:`encode`.

    Encoders are small picklable dataclasses: DataLoader workers get a copy, and ``repr`` is stable, so it
    can be part of a cache key.
    """

    #: whether :meth:`read` decodes colours (True) or stored values (False)
    color: bool = False
    #: what the masks are, for messages ("index", "colour", "binary")
    kind: str = "index"
    #: whether JPEG/WebP masks are accepted: lossy compression moves values near every edge, which turns
    #: class indices and colours into other (often valid) classes; only a threshold survives it
    accepts_lossy: bool = False

    def check_format(self, path: str | Path) -> None:
        """Refuse a mask file whose format would change its labels (a lossy format for exact values)."""
        suffix = Path(path).suffix.lower()
        if suffix in LOSSY_EXTENSIONS and not self.accepts_lossy:
            raise ConfigError(
                f"{path}: {suffix} is lossy and changes {self.kind} mask values along every edge; "
                "save the masks as PNG (only mask_mode binary accepts JPEG)"
            )

    def read(self, path: str | Path) -> torch.Tensor:
        """Decode and encode one mask file: int64 H×W."""
        self.check_format(path)
        return self.encode(read_mask(path, color=self.color), Path(path))

    def encode(self, raw: torch.Tensor, path: Path) -> torch.Tensor:
        """Args: raw: uint8/uint16 C×H×W from :func:`read_mask`; path: for error messages."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class IndexMaskEncoder(MaskEncoder):
    """Pixel values are class indices, optionally remapped.

    Args:
        num_classes: valid classes are ``0 .. num_classes - 1``.
        ignore_index: the label of "not annotated" pixels in the output.
        value_map: stored value → output label (use ``ignore_index`` as the label to ignore a value).
            None: values map to themselves, and a stored ``ignore_index`` stays ignored.
            Values missing from the map are errors.
    """

    num_classes: int
    ignore_index: int = 255
    value_map: Mapping[int, int] | None = None

    def __post_init__(self) -> None:
        if self.value_map is not None:
            # freeze to a sorted tuple so the repr (part of cache keys) does not depend on dict order
            object.__setattr__(
                self, "value_map", tuple(sorted((int(k), int(v)) for k, v in self.value_map.items()))
            )

    @classmethod
    def with_stored_ignore(cls, num_classes: int, ignore_index: int, stored_ignore: int) -> IndexMaskEncoder:
        """Class indices stored as themselves, "not annotated" stored as ``stored_ignore`` (VOC's border,
        COCO's rendered crowd regions): ``stored_ignore`` becomes ``ignore_index``."""
        value_map = None
        if ignore_index != stored_ignore:
            value_map = {**{i: i for i in range(num_classes)}, stored_ignore: ignore_index}
        return cls(num_classes, ignore_index, value_map)

    # built on first use and kept: encode runs once per sample in every DataLoader worker
    @functools.cached_property
    def _luts_8bit(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._luts(256)

    @functools.cached_property
    def _luts_16bit(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._luts(65536)

    def _luts(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Lookup tables stored value → label and stored value → "is in the map"."""
        labels = torch.zeros(size, dtype=torch.int64)
        known = torch.zeros(size, dtype=torch.bool)
        for value, label in self.value_map:
            if 0 <= value < size:
                labels[value], known[value] = label, True
        return labels, known

    def encode(self, raw: torch.Tensor, path: Path) -> torch.Tensor:
        raw = raw[0] if raw.ndim == 3 else raw
        if self.value_map is not None:
            labels, known = self._luts_8bit if raw.dtype == torch.uint8 else self._luts_16bit
            index = raw.long()
            mask, bad = labels[index], ~known[index]
            if bool(bad.any()):
                values = torch.unique(raw[bad])[:5].tolist()
                known = sorted(value for value, _ in self.value_map)
                raise ConfigError(f"{path}: mask values {values} are not in the value map {known}")
            return mask
        mask = raw.long()
        bad = (mask >= self.num_classes) & (mask != self.ignore_index)
        if bool(bad.any()):
            values = torch.unique(mask[bad])[:5].tolist()
            raise ConfigError(
                f"{path}: mask values {values} are >= num_classes {self.num_classes} and not "
                f"ignore_index {self.ignore_index}"
                + _scaled_16_bit_hint(mask, self.num_classes, self.ignore_index)
            )
        return mask


def _scaled_16_bit_hint(mask: torch.Tensor, num_classes: int, ignore_index: int) -> str:
    """A note when every value is a class × 257 (or × 256): 8-bit labels written into a 16-bit file, whose
    exporter scaled 0..255 onto 0..65535 (a common bug); empty otherwise."""
    values = torch.unique(mask)
    for factor in (257, 256):
        labels = values // factor
        if bool((values % factor == 0).all()) and bool(
            ((labels < num_classes) | (labels == ignore_index)).all()
        ):
            pairs = [f"{int(v)} = {int(v) // factor} × {factor}" for v in values[values > 0][:3]]
            return (
                f"; every value is a class × {factor} ({', '.join(pairs)}): 8-bit labels saved as 16-bit with "
                "scaling; re-export the masks as 8-bit (or divide them by the factor)"
            )
    return ""


def _color_keys(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 3×… → int64 … keys ``r << 16 | g << 8 | b``."""
    rgb = rgb.long()
    return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]


@dataclasses.dataclass(frozen=True)
class ColorMaskEncoder(MaskEncoder):
    """One RGB colour per class; pixels of any other colour are an error.

    Args:
        colors: ``colors[i]`` is the (r, g, b) of class ``i``.
        ignore_index: label of ``ignore_colors`` pixels.
        ignore_colors: colours that mean "not annotated" (a void colour).
    """

    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int = 255
    ignore_colors: tuple[tuple[int, int, int], ...] = ()
    color = True
    kind = "colour"

    def __post_init__(self) -> None:
        colors = tuple(tuple(int(v) for v in c) for c in self.colors)
        ignore = tuple(tuple(int(v) for v in c) for c in self.ignore_colors)
        for c in (*colors, *ignore):
            if len(c) != 3 or not all(0 <= v <= 255 for v in c):
                raise ConfigError(f"mask colours must be [r, g, b] with values 0..255, got {list(c)}")
        everything = colors + ignore
        if len(set(everything)) != len(everything):
            raise ConfigError(f"mask colours must be distinct, got {[list(c) for c in everything]}")
        object.__setattr__(self, "colors", colors)
        object.__setattr__(self, "ignore_colors", ignore)

    # built on first use and kept: encode runs once per sample in every DataLoader worker
    @functools.cached_property
    def _table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The known colour keys, sorted, and the label of each."""
        keys = _color_keys(torch.tensor(self.colors + self.ignore_colors, dtype=torch.int64).T)  # 3×K → K
        labels = torch.tensor([*range(len(self.colors)), *[self.ignore_index] * len(self.ignore_colors)])
        order = torch.argsort(keys)
        return keys[order], labels[order]

    def encode(self, raw: torch.Tensor, path: Path) -> torch.Tensor:
        keys, labels = self._table
        pixels = _color_keys(raw[:3])
        # vectorised table lookup: position of each pixel's key among the sorted known keys
        pos = torch.searchsorted(keys, pixels).clamp_(max=len(keys) - 1)
        known = keys[pos] == pixels
        if not bool(known.all()):
            unknown = pixels[~known]
            first = int(unknown[0])
            rgb = [first >> 16, (first >> 8) & 255, first & 255]
            kinds = int(torch.unique(unknown).numel())
            # many unknown colours are blends of the known ones: edges smoothed by antialiasing or resizing
            hint = (
                "the mask looks antialiased or resized: re-export it without smoothing"
                if kinds > len(self.colors)
                else "add it to data.colors or data.ignore_colors"
            )
            raise ConfigError(
                f"{path}: unknown colour {rgb} in an RGB mask ({int(unknown.numel())} pixels, "
                f"{kinds} unknown colours); {hint}"
            )
        return labels[pos]


@dataclasses.dataclass(frozen=True)
class BinaryMaskEncoder(MaskEncoder):
    """Foreground (1) where the brightest channel is >= ``threshold``, background (0) elsewhere.

    The brightest channel (not luminance) makes a dark-red mask on black count as foreground, and palette
    masks are judged by the colour they show. The threshold is one number for the whole dataset (see
    :func:`lightning_seg.data.binary.decide_binary_threshold`), never chosen per file: a file's own
    values cannot tell a 0/1 mask from a 0/255 mask with a stray pixel.

    Args:
        threshold: 1..255.
    """

    threshold: int = 128
    color = True
    kind = "binary"
    accepts_lossy = True

    def __post_init__(self) -> None:
        if not 1 <= self.threshold <= 255:
            raise ConfigError(f"data.binary_threshold must be in 1..255, got {self.threshold}")

    def encode(self, raw: torch.Tensor, path: Path) -> torch.Tensor:
        return (brightest_channel(raw) >= self.threshold).long()


def brightest_channel(raw: torch.Tensor) -> torch.Tensor:
    """uint8 C×H×W (or H×W) → uint8 H×W: the brightest channel of each pixel."""
    return raw.amax(dim=0) if raw.ndim == 3 else raw


# ---------------------------------------------------------------------------------------- validation
def size_mismatch_message(
    image: Path, image_size: tuple[int, int], mask: Path, mask_size: tuple[int, int]
) -> str | None:
    """The one-line problem of a mask whose (height, width) differs from its image's, or None."""
    if tuple(image_size) == tuple(mask_size):
        return None
    message = f"{mask}: mask is {mask_size[0]}x{mask_size[1]} but its image {image} is {image_size[0]}x{image_size[1]}"
    if tuple(image_size) == tuple(mask_size)[::-1] and _exif_rotates(image):
        # images are read as a viewer shows them: a camera's EXIF orientation tag rotates the pixels
        message += " (swapped: the image's EXIF orientation rotates it; rotate the mask to match)"
    return message


def _exif_rotates(path: Path) -> bool:
    """Whether an image file carries an EXIF orientation that rotates it (from its header)."""
    try:
        return image_header(path).rotated
    except ConfigError:  # only a hint in a message
        return False
