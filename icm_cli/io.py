"""Reading images and masks, finding sources, writing outputs atomically.

The one place that turns user files into arrays and arrays into files. Every
error raised here is an :class:`InputError` whose message names the file and
the problem in one line, so a batch can record it and go on.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}

#: Images with more pixels than this are refused before they are decoded
#: (about 16k x 16k); ``--max-pixels`` changes it.
DEFAULT_MAX_PIXELS = 260_000_000

# PIL's own bomb guard would raise its own warning/error types at a limit we
# do not control; we check the header size ourselves against max_pixels.
Image.MAX_IMAGE_PIXELS = None


class InputError(Exception):
    """A problem with one user file; the message is one line for people."""


def _open(path: Path, max_pixels: int) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image")
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image PIL can read (unknown or corrupt format)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc})") from None
    w, h = img.size
    if w < 1 or h < 1:
        raise InputError(f"{path}: image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise InputError(
            f"{path}: {w}x{h} = {w * h} pixels is over the limit of {max_pixels} (raise it with --max-pixels)"
        )
    try:
        img.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: image data is truncated or corrupt ({exc})") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not cost the pixels
        pass
    return img


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 or mode.startswith("I;16") else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.max() <= 1.0 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Transparent pixels carry arbitrary colours: composite on white so
        # cut-outs used as references look like what a person sees.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read any still image as RGB.

    Returns ``[H, W, 3]`` uint8 in display orientation (EXIF rotation applied);
    16-bit, greyscale, palette, CMYK and RGBA inputs are converted.
    """
    path = Path(path)
    img = _open(path, max_pixels)
    try:
        return np.array(_to_uint8_rgb(img), dtype=np.uint8, order="C", copy=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot convert to RGB ({exc})") from None


def mask_to_float(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale a decoded mask to ``[H, W]`` float32 in [0, 1].

    Palette masks use their indices (any index > 0 is object: 1.0); masks
    whose largest value is 1 are 0/1 masks; otherwise the range of the
    storage type (255 or 65535) is 1.0. Colour masks use their brightest
    channel, so a pure-blue object on black counts as object.
    """
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2) if arr.shape[2] >= 3 else arr[..., 0]
    arr = arr.astype(np.float32)
    if mode == "P":
        return (arr > 0).astype(np.float32)
    top = float(arr.max()) if arr.size else 0.0
    if top <= 1.0:
        return np.clip(arr, 0.0, 1.0)
    full = 65535.0 if (mode.startswith("I") or top > 255) else 255.0
    return np.clip(arr / full, 0.0, 1.0)


def read_mask(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a mask as ``[H, W]`` float32 in [0, 1] (see :func:`mask_to_float`).

    Threshold at 0.5 for a binary mask ("half the range").
    """
    path = Path(path)
    img = _open(path, max_pixels)
    mode = img.mode
    if mode in ("RGBA", "LA"):
        img = img.convert("RGB" if mode == "RGBA" else "L")
        mode = img.mode
    if mode == "CMYK":
        img = img.convert("RGB")
        mode = "RGB"
    if mode == "1":
        img = img.convert("L")
        return (np.asarray(img) > 0).astype(np.float32)
    try:
        arr = np.asarray(img)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read mask pixels ({exc})") from None
    return mask_to_float(arr, mode)


def binary_mask(mask: np.ndarray) -> np.ndarray:
    """``[H, W]`` float in [0, 1] -> ``[H, W]`` bool, thresholded at half range."""
    return mask >= 0.5


# --------------------------------------------------------------------- sources

def _walk(folder: Path, recursive: bool, seen: set) -> Iterator[Path]:
    try:
        real = folder.resolve()
    except (OSError, RuntimeError):
        return
    if real in seen:  # symlink loop
        return
    seen.add(real)
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir():
            if recursive:
                yield from _walk(entry, recursive, seen)
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            yield entry


def iter_sources(items: Iterable[str | os.PathLike], recursive: bool = False,
                 stdin=None) -> Iterator[Path]:
    """Expand SOURCES arguments into image paths, lazily.

    A folder yields its images sorted by name (``recursive`` descends, symlink
    loops are visited once); ``-`` yields one path per line of ``stdin``; any
    other item is yielded as given, so a missing file is reported when it is
    read rather than silently dropped.
    """
    for item in items:
        if str(item) == "-":
            stream = stdin if stdin is not None else sys.stdin
            for line in stream:
                line = line.strip()
                if line:
                    yield Path(line)
            continue
        p = Path(item)
        if p.is_dir():
            yield from _walk(p, recursive, set())
        else:
            yield p


# --------------------------------------------------------------------- outputs

_UNSAFE = re.compile(r"[^\w.\-+=@,~ ]", re.UNICODE)


def safe_stem(path: str | os.PathLike) -> str:
    """The output name for a source: its stem, made safe to join to a folder.

    Separators, ``..`` and control characters cannot escape the output folder;
    undecodable bytes in names are replaced.
    """
    stem = Path(path).stem
    stem = stem.encode("utf-8", "replace").decode("utf-8", "replace")
    stem = _UNSAFE.sub("_", stem).strip(" .")
    return stem or "_"


class StemAllocator:
    """Gives every source a unique output stem within one run.

    The first source with a stem keeps it; later sources with the same stem
    (from other folders) get ``<stem>~2``, ``<stem>~3``... so nothing is
    overwritten. Same inputs in the same order give the same names.
    """

    def __init__(self) -> None:
        self._count: dict[str, int] = {}

    def __call__(self, path: str | os.PathLike) -> str:
        stem = safe_stem(path)
        n = self._count.get(stem, 0) + 1
        self._count[stem] = n
        return stem if n == 1 else f"{stem}~{n}"


def write_image_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``[H, W]`` (L), ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA) uint8 as PNG.

    Written to a temporary file in the same folder, then renamed, so a killed
    run never leaves a half-written PNG under the final name.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path.parent}: cannot create output folder ({exc.strerror or exc})") from None
    arr = np.ascontiguousarray(array)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {arr.dtype}")
    fd, tmp = None, None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fd = None
            Image.fromarray(arr).save(fh, format="PNG", compress_level=1)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace a small text file atomically (same folder temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
