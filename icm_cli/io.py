"""Reading images and masks, finding sources, writing outputs atomically.

The one place that turns user files into arrays and arrays into files. Every
error raised here is an :class:`InputError` whose message names the file and
the problem in one line, so a batch can record it and go on.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
import tempfile
import time
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
        if path.is_symlink():
            raise InputError(f"{path}: broken or looping symbolic link (its target cannot be reached)")
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image")
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes), not an image")
        img = Image.open(path)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image PIL can read (unknown or corrupt format)") from None
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


class OutputError(InputError):
    """An output could not be written; ``errno`` says why (``ENOSPC``: the disk is full)."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


#: Write errors after which no later output can succeed either: a batch stops
#: instead of failing every remaining source the same way.
FATAL_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def fatal_write_error(exc: BaseException) -> str | None:
    """Why no later output can be written either (e.g. "No space left on device"), or None."""
    if isinstance(exc, OutputError) and exc.errno in FATAL_WRITE_ERRNOS:
        return os.strerror(exc.errno)
    return None


#: A temporary file untouched for this long belongs to no running write.
STALE_TEMP_AGE_S = 3600.0

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
_TEMP = re.compile(r"^\..+\.icm-([A-Za-z0-9]*)-(\d+)\.[^.]*\.tmp$")


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: done once, at import
    os.umask(mask)
    return mask


#: The mode a plain ``open(path, "w")`` would give (0644 under the usual umask 022).
_FILE_MODE = 0o666 & ~_umask()


def temp_tag(pid: int | None = None, host: str | None = None) -> str:
    """The ``icm-<host>-<pid>`` part of a temporary file's name: who is writing it."""
    return f"icm-{_HOST if host is None else host}-{os.getpid() if pid is None else pid}"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike) -> int:
    """Delete temporary files that killed runs left in ``folder``; return how many.

    Outputs are written to ``.<name>.icm-<host>-<pid>.<random>.tmp`` and
    renamed. A kill -9 or a power cut can leave such a file behind; it is
    never read as an output (the name differs, and the folder walk skips
    ``.tmp``). One is removed when the process named in it no longer runs on
    this machine, or when it is older than :data:`STALE_TEMP_AGE_S` (a file of
    another machine writing to a shared folder is only judged by age), so
    parallel runs (``--shard``) never lose a file they are still writing.
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        match = _TEMP.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_AGE_S
            dead = match.group(1) == _HOST and not _pid_running(int(match.group(2)))
            if old or dead:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def ensure_output_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and parents) and check a file can be created in it; one-line InputError if not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".probe.{temp_tag()}.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write the output folder ({exc.strerror or exc})", exc.errno) from None
    return folder


def write_image_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``[H, W]`` (L), ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA) uint8 as PNG.

    Written to a temporary file in the same folder (see
    :func:`remove_stale_temp_files`), then renamed, so a killed run never
    leaves a half-written PNG under the final name. Any failure (interrupt
    included) removes the temporary file; :class:`OutputError` says why.
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
    fd, tmp = None, None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{temp_tag()}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; outputs get the usual umask-based mode
        with os.fdopen(fd, "wb") as fh:
            fd = None
            Image.fromarray(arr).save(fh, format="PNG", compress_level=1)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})", exc.errno) from None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace a small text file atomically (same folder temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{temp_tag()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), _FILE_MODE)
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
