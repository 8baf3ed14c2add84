"""Frames of a sequence, in order: a folder of images, a ``.txt`` list, or a video file.

A :class:`FrameSequence` checks its argument and lists its frames' names
when it is built (before any model loads), then decodes frames on demand.
Video files are decoded with PyAV (FFmpeg's libraries bundled in a PyPI
wheel, no system install): ``pip install av``, or ``".[video]"`` in the icm checkout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from icm_cli import io
from icm_cli.console import one_line as console_line
from icm_cli.sources import NameAllocator, Source, SourceError, SourceFinder, output_name

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
VIDEO_HINT = 'reading video files needs PyAV: pip install av (or ".[video]" in the icm checkout)'


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def _list_file(path: Path) -> list[Path]:
    """Frame paths of a ``.txt`` list, one a line, relative to the list's folder.

    The list is read as bytes and decoded as the file system does, so a
    name that is not UTF-8 still names its file.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the frame list ({exc.strerror or exc})") from None
    lines = [os.fsdecode(line.strip()) for line in raw.splitlines()]
    frames = [Path(ln) if os.path.isabs(ln) else path.parent / ln for ln in lines if ln]
    if not frames:
        raise SourceError(f"{path}: the frame list is empty")
    return frames


class FrameSequence:
    """One ``--video`` SEQUENCE. Raises :class:`SourceError` when it cannot be used at all."""

    def __init__(self, path: str | os.PathLike, max_pixels: int = io.DEFAULT_MAX_PIXELS) -> None:
        self.path = Path(path)
        self.max_pixels = max_pixels
        self.sources: list[Source] | None = None  # None for a video file: frames are found by decoding
        if not self.path.exists():
            raise SourceError(f"{self.path}: not found")
        if is_video_file(self.path):
            try:
                import av
            except ImportError:
                raise SourceError(f"{self.path}: {VIDEO_HINT}") from None
            try:
                with av.open(str(self.path)) as container:
                    if not container.streams.video:
                        raise SourceError(f"{self.path}: no video stream in this file")
            except SourceError:
                raise
            except Exception as exc:  # av raises its own error family for every FFmpeg failure
                raise SourceError(f"{self.path}: cannot open video ({console_line(exc)})") from None
            return
        if self.path.is_dir():
            self.sources = [s for s in SourceFinder([self.path]) if isinstance(s, Source)]
        elif self.path.suffix.lower() == ".txt":
            names = NameAllocator()
            self.sources = []
            for frame in _list_file(self.path):
                name = output_name(frame)
                self.sources.append(Source(frame, frame.as_posix(), name, names(name)))
        else:
            raise SourceError(f"{self.path}: --video takes a folder of frames, a .txt list of frames or a "
                              f"video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
        if not self.sources:
            raise SourceError(f"{self.path}: no frames in this sequence")

    def __len__(self) -> int:
        return len(self.sources) if self.sources is not None else 0

    @property
    def counted(self) -> bool:
        return self.sources is not None

    def frame_source(self, index: int) -> Source:
        if self.sources is not None:
            return self.sources[index]
        name = f"{index:05d}"
        return Source(Path(f"{self.path}#{index}"), f"{self.path.name}#{index}", name, name)

    def frames(self, start: int = 0) -> Iterator[tuple[Source, "object"]]:
        """``(source, image or error string)`` for every frame from ``start`` on; a broken frame keeps its place."""
        if self.sources is None:
            yield from self._video_frames(start)
            return
        for source in self.sources[start:]:
            try:
                yield source, io.read_image(source.path, max_pixels=self.max_pixels)
            except io.InputError as exc:
                yield source, str(exc)

    def _video_frames(self, start: int) -> Iterator[tuple[Source, object]]:
        import av

        index = start
        try:
            container = av.open(str(self.path))
        except Exception as exc:
            yield self.frame_source(index), f"{self.path}: cannot open video ({console_line(exc)})"
            return
        with container:
            stream = container.streams.video[0]
            index = 0
            try:
                for frame in container.decode(stream):
                    if index >= start:
                        yield self.frame_source(index), frame.to_ndarray(format="rgb24")
                    index += 1
            except Exception as exc:
                yield self.frame_source(index), f"{self.path}: decoding stopped at frame {index} ({console_line(exc)})"
