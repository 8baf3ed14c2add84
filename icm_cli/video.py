"""Frames of a sequence, in order: a folder of images, a list file, or a video file.

Video files are decoded with PyAV (FFmpeg's libraries bundled in a PyPI wheel,
no system install): ``pip install "icm-cli[video]"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from icm_cli import io

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif"}


@dataclass
class Frame:
    """One frame: its output stem, where it came from, and pixels or an error."""

    index: int
    stem: str
    source: str
    image: np.ndarray | None = None
    error: str | None = None


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES - {".gif"}


def frame_paths(sequence: Path) -> list[Path]:
    """Image paths of a frame folder (sorted by name) or a ``.txt`` list (one path a line)."""
    if sequence.is_dir():
        return list(io.iter_sources([sequence]))
    if sequence.suffix.lower() == ".txt":
        base = sequence.parent
        lines = [ln.strip() for ln in sequence.read_text(encoding="utf-8").splitlines()]
        return [(base / ln) if not Path(ln).is_absolute() else Path(ln) for ln in lines if ln]
    raise io.InputError(f"{sequence}: --video takes a folder of frames, a .txt list of frames or a video file")


def iter_frames(sequence: Path, max_pixels: int = io.DEFAULT_MAX_PIXELS, start: int = 0,
                names: list[str] | None = None) -> Iterator[Frame]:
    """Decode the frames of ``sequence`` from index ``start`` on.

    Folder and list frames keep their own stems (duplicates get ``~2``...);
    video frames are named ``%05d``. A frame that fails to decode is yielded
    with ``error`` set, so the sequence goes on.
    """
    sequence = Path(sequence)
    if not sequence.exists():
        raise io.InputError(f"{sequence}: not found")
    if is_video_file(sequence):
        yield from _video_frames(sequence, start)
        return
    paths = frame_paths(sequence)
    stems = names or sequence_stems(paths)
    for i, path in enumerate(paths):
        if i < start:
            continue
        try:
            yield Frame(i, stems[i], str(path), image=io.read_image(path, max_pixels=max_pixels))
        except io.InputError as exc:
            yield Frame(i, stems[i], str(path), error=str(exc))


def sequence_stems(paths: list[Path]) -> list[str]:
    alloc = io.StemAllocator()
    return [alloc(p) for p in paths]


def _video_frames(path: Path, start: int) -> Iterator[Frame]:
    try:
        import av
    except ImportError:
        raise io.InputError(f"{path}: reading video files needs PyAV: pip install \"icm-cli[video]\"") from None
    try:
        container = av.open(str(path))
    except Exception as exc:  # av raises its own error family for every FFmpeg failure
        raise io.InputError(f"{path}: cannot open video ({exc})") from None
    with container:
        stream = container.streams.video[0] if container.streams.video else None
        if stream is None:
            raise io.InputError(f"{path}: no video stream in this file")
        index = 0
        try:
            for frame in container.decode(stream):
                if index >= start:
                    yield Frame(index, f"{index:05d}", f"{path}#{index}", image=frame.to_ndarray(format="rgb24"))
                index += 1
        except Exception as exc:
            yield Frame(index, f"{index:05d}", f"{path}#{index}", error=f"{path}: decoding stopped at frame {index} ({exc})")
