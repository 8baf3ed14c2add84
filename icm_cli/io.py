"""Reading images and masks, writing outputs atomically.

The one place that turns user files into arrays and arrays into files. Every
error raised here is an :class:`InputError` whose message names the file and
the problem in one line, so a batch can record it and go on.
"""

from __future__ import annotations

import errno
import os
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from icm_cli import atomic
from icm_cli.config import DEFAULT_MAX_PIXELS
from icm_cli.errors import InputError, OutputError  # noqa: F401 (re-exported)
from icm_cli.process_settings import open_unguarded

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}

#: The raster formats Pillow may open. Naming them keeps it from handing a file
#: that only claims to be an image (PostScript, EPS, ...) to an outside program
#: such as Ghostscript. (Phones' multi-picture JPEGs, MPO, open as JPEG.)
RASTER_FORMATS = ("JPEG", "PNG", "BMP", "DIB", "WEBP", "TIFF", "GIF")

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "InputError", "OutputError", "read_image", "read_mask",
           "read_trimap", "binary_mask", "write_image_atomic", "write_text_atomic", "ensure_output_folder",
           "remove_stale_temp_files", "fatal_write_error"]


def _open(path: Path, max_pixels: int) -> Image.Image | np.ndarray:
    """The decoded image: a PIL image, or an array for TIFFs Pillow cannot decode (float RGB)."""
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise InputError(f"{path}: broken or looping symbolic link (its target cannot be reached)")
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image")
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes), not an image")
        # The common plugins (JPEG, PNG, BMP/DIB, GIF) are registered here; Pillow registers the rest
        # itself when a file is none of those (about 20 ms of start-up a run of JPEGs and PNGs never needs).
        Image.preinit()
        # Pillow's bomb guard is the host's setting: icm checks the size against max_pixels below.
        img = open_unguarded(path, formats=RASTER_FORMATS)
    except InputError:
        raise
    except UnidentifiedImageError:
        if _is_tiff(path):
            return _read_tiff(path, max_pixels)
        real = sniff_format(path)
        if real:
            raise InputError(f"{path}: is {real} (whatever its name says), not an image icm reads (JPEG, PNG, "
                             "BMP, WebP, TIFF or GIF); convert it, e.g. to PNG") from None
        raise InputError(f"{path}: not an image icm can read (JPEG, PNG, BMP, WebP, TIFF or GIF), "
                         "or its data is corrupt") from None
    except Exception as exc:  # PIL's parsers raise many types on junk headers; all mean "unreadable"
        raise InputError(f"{path}: not a readable image ({_reason(exc)})") from None
    try:
        w, h = img.size
        if w < 1 or h < 1:
            raise InputError(f"{path}: image has no pixels ({w}x{h})")
        if w * h > max_pixels:
            raise InputError(
                f"{path}: {w}x{h} = {w * h} pixels is over the limit of {max_pixels} (raise it with --max-pixels)"
            )
        try:
            img.load()
        except MemoryError:
            raise InputError(f"{path}: not enough memory to decode {w}x{h} pixels") from None
        except Exception as exc:  # decoders raise OSError, ValueError, SyntaxError, struct.error ...
            raise InputError(f"{path}: image data is truncated or corrupt ({_reason(exc)})") from None
    except BaseException:
        img.close()
        raise
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not cost the pixels
        pass
    return img


#: File signatures of formats people rename by mistake (an icon saved as .png, a phone's HEIC as .jpg):
#: read from the first bytes only, so a refusal can say what the file really is.
_SIGNATURES = (
    (0, b"\x00\x00\x01\x00", "an ICO (Windows icon) file"),
    (0, b"\x00\x00\x02\x00", "a CUR (Windows cursor) file"),
    (0, b"8BPS", "a Photoshop (PSD) file"),
    (0, b"%PDF", "a PDF document"),
    (0, b"%!PS", "a PostScript file"),
    (0, b"\xc5\xd0\xd3\xc6", "an EPS file"),
    (0, b"\xff\x0a", "a JPEG XL image"),
    (4, b"JXL ", "a JPEG XL image"),
    (0, b"qoif", "a QOI image"),
    (0, b"DDS ", "a DDS texture"),
    (0, b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
    (4, b"ftypheic", "a HEIC image"), (4, b"ftypheix", "a HEIC image"), (4, b"ftypmif1", "a HEIF image"),
    (4, b"ftypavif", "an AVIF image"),
    (4, b"ftyp", "an MP4/MOV video"),
    (0, b"<svg", "an SVG drawing"), (0, b"<?xml", "an XML (SVG?) text file"),
)


def sniff_format(path: str | os.PathLike) -> str | None:
    """What a file that Pillow may not open really is, from its first bytes ("an ICO (Windows icon) file"), or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    for offset, magic, name in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return name
    return None


def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
    except OSError:
        return False


def _read_tiff(path: Path, max_pixels: int) -> np.ndarray:
    """A TIFF Pillow cannot decode (3-channel float, for one) read with tifffile: ``[H, W]`` or ``[H, W, C]``."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shape = tif.pages[0].shape
            h, w = (shape[-3], shape[-2]) if len(shape) >= 3 and shape[-1] <= 4 else shape[-2:]
            if h * w > max_pixels:
                raise InputError(f"{path}: {w}x{h} = {w * h} pixels is over the limit of {max_pixels} "
                                 "(raise it with --max-pixels)")
            arr = tif.pages[0].asarray()
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{path}: not enough memory to decode it") from None
    except Exception as exc:
        raise InputError(f"{path}: TIFF data is truncated, corrupt or of a kind icm cannot read ({_reason(exc)})") from None
    if arr.ndim == 3 and arr.shape[0] <= 4 < arr.shape[-1]:  # planar [C, H, W]
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise InputError(f"{path}: TIFF of shape {arr.shape} is not an image icm can read")
    return arr


def _array_to_uint8_rgb(arr: np.ndarray) -> np.ndarray:
    """A decoded array (float in [0, 1] or [0, 255], 8/16-bit integers; 1-4 channels) -> ``[H, W, 3]`` uint8."""
    a = arr.astype(np.float64)
    if not np.isfinite(a).all():
        a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
    if arr.dtype.kind == "f":
        top = 1.0 if a.max(initial=0.0) <= 1.0 else 255.0
    else:
        top = 65535.0 if arr.dtype.itemsize >= 2 and a.max(initial=0) > 255 else 255.0
    a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=2)
    if a.shape[2] == 1:
        return np.repeat(a, 3, axis=2)
    if a.shape[2] == 2:  # grey + alpha
        return np.repeat(a[..., :1], 3, axis=2)
    return np.ascontiguousarray(a[..., :3])


def _reason(exc: BaseException) -> str:
    """An exception as a short one-line reason (its type when it has no message)."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    if isinstance(exc, (OSError, ValueError)):
        return text
    return f"{type(exc).__name__}: {text}"


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 or mode.startswith("I;16") else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
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
    if isinstance(img, np.ndarray):
        return _array_to_uint8_rgb(img)
    try:
        return np.array(_to_uint8_rgb(img), dtype=np.uint8, order="C", copy=True)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: cannot convert to RGB ({_reason(exc)})") from None


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
    if not np.isfinite(arr).all():  # float TIFFs: NaN is no object, +inf full object
        arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
    if mode in ("P", "PA"):
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
    if isinstance(img, np.ndarray):
        arr = img[..., :3] if img.ndim == 3 else img
        return mask_to_float(arr, "F" if img.dtype.kind == "f" else ("I;16" if img.dtype.itemsize >= 2 else "L"))
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
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: cannot read mask pixels ({_reason(exc)})") from None
    return mask_to_float(arr, mode)


def read_trimap(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A trimap or alpha file as ``[H, W]`` float32 in [0, 1], palette files by their grey colours.

    ``read_mask`` reads palette images as index masks (index > 0 = object),
    right for segmentation labels but not for trimaps and mattes saved with a
    grey palette (the alphamatting.com trimaps are): when the mask reading
    comes out binary but the displayed colours hold mid greys, the colours win.
    """
    values = read_mask(path, max_pixels=max_pixels)
    if np.all((values == 0.0) | (values == 1.0)):
        grey = read_image(path, max_pixels=max_pixels).max(axis=2).astype(np.float32) / 255.0
        if np.any((grey >= 0.1) & (grey <= 0.9)):
            return grey
    return values


def binary_mask(mask: np.ndarray) -> np.ndarray:
    """``[H, W]`` float in [0, 1] -> ``[H, W]`` bool, thresholded at half range."""
    return mask >= 0.5


# --------------------------------------------------------------------- outputs

#: Write errors after which no later output can succeed either: a batch stops
#: instead of failing every remaining source the same way.
FATAL_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def fatal_write_error(exc: BaseException) -> str | None:
    """Why no later output can be written either (e.g. "No space left on device"), or None."""
    if isinstance(exc, OutputError) and exc.errno in FATAL_WRITE_ERRNOS:
        return os.strerror(exc.errno)
    return None


# Temporary files, their mode and their cleaning are :mod:`icm_cli.atomic`'s; named here too for callers
# of this module's older API.
STALE_TEMP_AGE_S = atomic.STALE_TEMP_AGE_S
output_file_mode = atomic.output_file_mode
temp_tag = atomic.temp_tag
remove_stale_temp_files = atomic.remove_stale_temp_files


def ensure_output_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and parents) and check a file can be created in it; one-line OutputError if not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = atomic.temp_file(folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write the output folder ({exc.strerror or exc})", exc.errno) from None
    return folder


#: zlib level of every PNG icm writes: the fastest that still compresses (level 0 stores raw rows).
PNG_ZLIB_LEVEL = 1


def encode_png(array: np.ndarray) -> bytes:
    """``[H, W]`` grey, ``[H, W, 3]`` RGB or ``[H, W, 4]`` RGBA uint8 as the bytes of an 8-bit PNG.

    Encoded by OpenCV's libpng at zlib level 1 with one fixed row filter
    instead of Pillow's trial of every filter on every row (854x480, one
    core: a heat map 17-23 ms instead of 33-38, a mask about 1 ms instead of
    2.5; ``benchmarks/bench_outputs.py``). One channel (masks and trimaps:
    long runs of 0, 128 or 255) is left unfiltered with run-length matching,
    which makes their files smaller than Pillow's (a soft alpha's about a
    third larger); colour is "Sub"-filtered, within 2% of Pillow's size. The
    file decodes to exactly ``array``; Pillow writes what OpenCV cannot (other
    shapes, OpenCV before 4.10).
    """
    import cv2  # not at import: the command line's start does not wait for OpenCV

    arr = np.ascontiguousarray(array)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {arr.dtype}")
    if not hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV before 4.10 cannot be told the row filter
        return _encode_png_pillow(arr)
    if arr.ndim == 2:
        pixels, row_filter, strategy = arr, cv2.IMWRITE_PNG_FILTER_NONE, cv2.IMWRITE_PNG_STRATEGY_RLE
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        # OpenCV takes blue first: the swapped copy is what it writes back in red-first order.
        code = cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        pixels, row_filter, strategy = cv2.cvtColor(arr, code), cv2.IMWRITE_PNG_FILTER_SUB, cv2.IMWRITE_PNG_STRATEGY_DEFAULT
    else:
        return _encode_png_pillow(arr)
    try:
        ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, PNG_ZLIB_LEVEL,
                                                 cv2.IMWRITE_PNG_STRATEGY, strategy,
                                                 cv2.IMWRITE_PNG_FILTER, row_filter])
    except cv2.error:
        ok = False
    return buf.tobytes() if ok else _encode_png_pillow(arr)


def _encode_png_pillow(arr: np.ndarray) -> bytes:
    out = BytesIO()
    Image.fromarray(arr).save(out, format="PNG", compress_level=PNG_ZLIB_LEVEL)
    return out.getvalue()


def write_image_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``[H, W]`` (L), ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA) uint8 as PNG (:func:`encode_png`).

    Written through :func:`icm_cli.atomic.atomic_file` (a temporary file in
    the same folder, see :func:`remove_stale_temp_files`, then renamed), so a
    killed run never leaves a half-written PNG under the final name. Any
    failure (interrupt included) removes the temporary file;
    :class:`OutputError` says why.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot create output folder ({exc.strerror or exc})",
                          exc.errno) from None
    arr = np.ascontiguousarray(array)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {arr.dtype}")
    data = encode_png(arr)
    try:
        with atomic.atomic_file(path) as fh:
            fh.write(data)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})", exc.errno) from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace a small text file atomically (same folder temp file + rename, :func:`icm_cli.atomic.atomic_write`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.atomic_write(path, text)
