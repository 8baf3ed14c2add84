"""Small JPEG thumbnails for the review page, made once and reused while their files are unchanged.

Per result two pictures: the source with the mask as a translucent fill and
an outline (``<id>.o.jpg``), and the heat map (``<id>.h.jpg``). ``<id>`` is
a hash of the result's key, so file names never need escaping. An index
(``index.json``) keeps, per thumbnail, the size and modification time of
the files it was made from; a rerun only stats them.
"""

from __future__ import annotations

import hashlib
import io as _bytes_io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import Image, ImageOps

from icm_cli.atomic import atomic_write, remove_stale_temp_files
from icm_cli.process_settings import open_unguarded, opencv_single_threaded
from icm_cli.video import decode_clip, parse_frame_ref, read_frame, source_file

#: Thumbnails fit in this box (width, height), aspect kept.
BOX = (320, 240)
#: Bumped whenever the pictures change, so old thumbnails are remade.
VERSION = 1
FILL = np.array([255, 0, 170], np.float32)   # translucent object fill (rare in photos)
OUTLINE = (255, 236, 0)                      # mask boundary
FILL_OPACITY = 0.38
JPEG_QUALITY = 82


@dataclass
class Job:
    """What one result's thumbnails are made from (paths may be None or missing)."""

    key: str
    source: str | None = None
    mask: str | None = None
    heat: str | None = None

    @property
    def ident(self) -> str:
        return hashlib.sha1(self.key.encode("utf-8", "surrogatepass")).hexdigest()[:20]


@dataclass
class Thumbs:
    """The thumbnails of one result: file names inside the thumbnail folder, their size, problems."""

    overlay: str | None = None
    heat: str | None = None
    size: tuple[int, int] | None = None        # (width, height) of both pictures
    problems: list[str] = field(default_factory=list)
    reused: bool = False


def _stat(path: str | None):
    if not path:
        return None
    try:
        st = os.stat(source_file(path))  # a reference may be a frame of a clip: clip.mp4@12
    except (OSError, ValueError):
        return None
    return [st.st_size, st.st_mtime_ns]


def signature(job: Job) -> list:
    """What the thumbnails depend on: the version, the box, and each file's (size, mtime)."""
    return [VERSION, list(BOX), job.source, _stat(job.source), job.mask, _stat(job.mask), job.heat, _stat(job.heat)]


def _fit(width: int, height: int) -> tuple[int, int]:
    scale = min(BOX[0] / width, BOX[1] / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


_TRANSPOSING = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def _displayed(img: Image.Image) -> Image.Image:
    """The image as displayed: EXIF rotation applied (no copy when there is none)."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not cost the picture
        return img
    return ImageOps.exif_transpose(img) if orientation not in (None, 1) else img


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def _shrink(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (array.shape[1], array.shape[0]) == size:
        return array
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA)


def _read_small(path: str) -> np.ndarray:
    """An image decoded near thumbnail size (JPEG DCT scaling), displayed orientation, RGB uint8.

    A reference taken from a clip (``clip.mp4@12``) is that frame, decoded whole.
    """
    ref = parse_frame_ref(path)
    if ref is not None:
        picture = read_frame(ref)
        return _shrink(picture, _fit(picture.shape[1], picture.shape[0]))
    with open_unguarded(path) as img:  # sizes were checked when the run read these files
        w, h = img.size
        try:
            swap = img.getexif().get(0x0112, 1) in _TRANSPOSING
        except Exception:
            swap = False
        fw, fh = _fit(h, w) if swap else _fit(w, h)
        img.draft("RGB", (fh, fw) if swap else (fw, fh))  # JPEG: decode at 1/2..1/8 scale; others: no-op
        img.load()
        picture = np.asarray(_rgb(_displayed(img)))
    return _shrink(np.ascontiguousarray(picture), _fit(picture.shape[1], picture.shape[0]))


def _read_heat_small(path: str) -> np.ndarray:
    """A heat map PNG (plain RGB, written by icm) at thumbnail size; OpenCV decodes PNG about 1.5x faster than PIL."""
    data = np.fromfile(path, np.uint8)  # any file name, undecodable bytes included
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if bgr is None:
        return _read_small(path)  # not a plain PNG: PIL reads it or says why not
    return _shrink(np.ascontiguousarray(bgr[..., ::-1]), _fit(bgr.shape[1], bgr.shape[0]))


def _read_mask_small(path: str, size: tuple[int, int]) -> np.ndarray:
    """A mask (any format icm reads) as ``[h, w]`` bool at ``size`` (width, height)."""
    from icm_cli import io

    with open_unguarded(path) as img:  # sizes were checked when the run read these files
        if img.mode == "L":  # icm's own 0/255 masks: no float copy of the full image
            img.load()
            return _shrink(np.asarray(_displayed(img)), size) >= 128
    mask = io.read_mask(path)  # 0/1, palette, 16-bit, RGB masks (references)
    return _shrink(mask, size) >= 0.5


def draw_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``[h, w, 3]`` uint8 with ``[h, w]`` bool mask as a translucent fill and an outline."""
    out = image.astype(np.float32)
    out[mask] = (1 - FILL_OPACITY) * out[mask] + FILL_OPACITY * FILL
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, OUTLINE, 2 if max(out.shape[:2]) >= 160 else 1, cv2.LINE_AA)
    return out


def _save_jpeg(path: Path, array: np.ndarray) -> None:
    buf = _bytes_io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=JPEG_QUALITY)
    atomic_write(path, buf.getvalue())


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def make(job: Job, folder: Path, expect_source: bool = True, base: np.ndarray | None = None) -> Thumbs:
    """Make one result's thumbnails in ``folder``. Problems are reported, never raised.

    ``expect_source``: whether an unreadable source is a problem (it is not
    for a failed result, which often failed because of it). ``base``: the
    source already decoded at thumbnail size (a clip's frame), else it is read.
    """
    out = Thumbs()
    if base is None and job.source:
        try:
            base = _read_small(job.source)
        except Exception as exc:  # PIL raises many types on bad files
            if expect_source:
                out.problems.append(f"{job.source}: {_reason(exc)}")
    mask = None
    if job.mask:
        try:
            size = (base.shape[1], base.shape[0]) if base is not None else None
            if size is None:
                with open_unguarded(job.mask) as probe:
                    size = _fit(*_displayed(probe).size)
            mask = _read_mask_small(job.mask, size)
        except Exception as exc:
            out.problems.append(f"{job.mask}: {_reason(exc)}")
    heat = None
    if job.heat:
        try:
            heat = _read_heat_small(job.heat)
        except Exception as exc:
            out.problems.append(f"{job.heat}: {_reason(exc)}")
    if base is None and mask is not None:  # source gone: the mask alone, on dark grey
        base = np.full((*mask.shape, 3), 48, np.uint8)
    if base is not None:
        picture = draw_overlay(base, mask) if mask is not None else base
        name = f"{job.ident}.o.jpg"
        _save_jpeg(folder / name, picture)
        out.overlay, out.size = name, (picture.shape[1], picture.shape[0])
    if heat is not None:
        if out.size is not None and (heat.shape[1], heat.shape[0]) != out.size:
            heat = cv2.resize(heat, out.size, interpolation=cv2.INTER_AREA)
        name = f"{job.ident}.h.jpg"
        _save_jpeg(folder / name, heat)
        out.heat = name
        out.size = out.size or (heat.shape[1], heat.shape[0])
    return out


def _clip_bases(clip: Path, wanted: dict[int, list[int]]) -> Iterator[tuple[int, np.ndarray | None]]:
    """``(job, the frame at thumbnail size)`` for every job of ``wanted`` (frame index -> jobs), decoding
    ``clip`` once up to the last frame wanted. Frames it cannot give (a clip cut short) come with None:
    :func:`make` then reads them itself and says why they cannot be shown."""
    left = dict(wanted)
    try:
        _, frames = decode_clip(clip)
        try:
            for frame in frames:
                jobs = left.pop(frame.index, None)
                if jobs is not None:
                    picture = frame.image()
                    base = _shrink(picture, _fit(picture.shape[1], picture.shape[0]))
                    yield from ((i, base) for i in jobs)
                if not left:
                    break
        finally:
            frames.close()
    except Exception:  # PyAV raises many types on broken files; each frame left says why in make()
        pass
    for jobs in left.values():
        yield from ((i, None) for i in jobs)


class ThumbnailCache:
    """The thumbnail folder and its index; :meth:`get_all` makes what is missing or stale."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.index_path = self.folder / "index.json"
        self.index: dict[str, dict] = {}
        try:
            loaded = json.loads(self.index_path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict) and loaded.get("version") == VERSION:
                self.index = loaded.get("thumbs", {})
        except (OSError, ValueError):
            pass
        self.made = 0
        self.reused = 0

    def _cached(self, job: Job, sig: list) -> Thumbs | None:
        entry = self.index.get(job.ident)
        if not entry or entry.get("sig") != sig:
            return None
        for name in (entry.get("overlay"), entry.get("heat")):
            if name and not (self.folder / name).is_file():
                return None
        size = entry.get("size")
        return Thumbs(entry.get("overlay"), entry.get("heat"), tuple(size) if size else None,
                      list(entry.get("problems", [])), reused=True)

    def get_all(self, jobs: list[tuple[Job, bool]], workers: int = 0) -> list[Thumbs]:
        """Thumbnails for ``(job, expect_source)`` pairs, in order; stale or missing ones are made in parallel."""
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.folder)  # what a killed run left
        sigs = [signature(job) for job, _ in jobs]
        results: list[Thumbs | None] = [self._cached(job, sig) for (job, _), sig in zip(jobs, sigs)]
        todo = [i for i, r in enumerate(results) if r is None]
        workers = workers or min(8, os.cpu_count() or 1)
        if todo:
            with opencv_single_threaded(), ThreadPoolExecutor(  # parallel over thumbnails, not inside each
                    max_workers=max(1, workers), thread_name_prefix="icm-thumb") as pool:
                made = {}
                by_clip: dict[Path, dict[int, list[int]]] = {}  # clip -> frame index -> jobs showing it
                for i in todo:
                    frame = parse_frame_ref(jobs[i][0].source) if jobs[i][0].source else None
                    if frame is not None and frame.index is not None:
                        by_clip.setdefault(frame.path, {}).setdefault(frame.index, []).append(i)
                    else:
                        made[i] = pool.submit(make, jobs[i][0], self.folder, jobs[i][1])
                for clip, wanted in by_clip.items():  # one pass over each clip, not one decode per frame
                    for i, base in _clip_bases(clip, wanted):
                        made[i] = pool.submit(make, jobs[i][0], self.folder, jobs[i][1], base)
                for i in todo:
                    thumbs = results[i] = made[i].result()
                    self.index[jobs[i][0].ident] = {"sig": sigs[i], "overlay": thumbs.overlay, "heat": thumbs.heat,
                                                    "size": list(thumbs.size) if thumbs.size else None,
                                                    "problems": thumbs.problems}
        self.made += len(todo)
        self.reused += len(jobs) - len(todo)
        return results  # type: ignore[return-value]

    def save(self) -> None:
        """Write the index (atomically)."""
        from icm_cli import io

        io.write_text_atomic(self.index_path, json.dumps({"version": VERSION, "thumbs": self.index},
                                                         ensure_ascii=True))
