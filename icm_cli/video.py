"""Frames of a sequence, in order: a folder of images, a ``.txt`` list, or a video file.

A :class:`FrameSequence` checks its argument and lists its frames' names
when it is built (before any model loads), then decodes frames on demand.
Video files are decoded with PyAV (FFmpeg's libraries bundled in a PyPI
wheel, no system install): ``pip install -c constraints.txt ".[video]"``.

Frames of a video file come out as people see them: the file's display
matrix (the rotation a phone records, mirroring too) is applied, as EXIF
rotation is for photos. :class:`Orientation` does that and its inverse, so
videos written from the results (:mod:`icm_cli.video_out`) can hold the
source's own coded pixels and display matrix.

A single frame of a clip can stand for an image: ``clip.mp4@12`` (frame
index, counted from 0 as ``--video`` names frames), ``clip.mp4@1.5s``
(seconds from the start) or ``clip.mp4@00:01:02.5`` (``[HH:]MM:SS[.s]``);
see :func:`parse_frame_ref` and :func:`read_frame`.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from icm_cli import io
from icm_cli.console import one_line as console_line
from icm_cli.errors import TruncatedClip  # noqa: F401 (re-exported)
from icm_cli.sources import NameAllocator, Source, SourceError, SourceFinder, natural_key, output_name

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
VIDEO_HINT = 'reading video files needs PyAV: pip install -c constraints.txt ".[video]" in the icm checkout'


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def has_video_suffix(text: str | os.PathLike) -> bool:
    """``text`` names a video file by its suffix (``clip.MP4``), whether or not it exists."""
    return Path(os.fspath(text)).suffix.lower() in VIDEO_SUFFIXES


def whole_clip_hint(text: str | os.PathLike, role: str) -> str | None:
    """Why a video file cannot stand where one image (or one SOURCE) is expected, or None.

    ``role`` is ``"ref"`` (``--ref clip.mp4``: which frame?) or ``"source"``
    (``icm propagate clip.mp4``: frames of a clip go through ``--video``).
    A folder with a video-like name is not a video; a file really named
    ``x.mp4@2`` is taken as that file.
    """
    text = os.fspath(text)
    if not has_video_suffix(text) or not os.path.isfile(text):
        return None  # a folder named like a video is a folder; a missing file is reported as missing
    if role == "ref":
        return (f"{text}: is a video; name the frame the mask is drawn on: --ref {text}@0 (frame 0), "
                f"{text}@N (frame N) or {text}@1.5s (by time)")
    return (f"{text}: is a video file, not an image; did you mean `--video {text}`? (its frames are then the "
            "sources, named 00000.png, 00001.png, ...)")


def require_av(path: str | os.PathLike = "") -> object:
    """The ``av`` module, or an :class:`io.InputError` saying how to install it."""
    try:
        import av
    except ImportError:
        raise io.InputError(f"{path}: {VIDEO_HINT}" if path else VIDEO_HINT) from None
    return av


# ------------------------------------------------------------------ orientation

@dataclass(frozen=True)
class Orientation:
    """How a clip's coded pixels become the picture people see, from its display matrix.

    FFmpeg's display matrix maps a coded pixel ``(x, y)`` to ``(a x + c y, b x + d y)``
    (plus a translation); for the eight right-angle orientations that is a
    transpose or not, then flips. ``matrix`` keeps the nine raw integers so a
    written video can carry exactly the source's.
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    matrix: tuple[int, ...] | None = None

    @classmethod
    def from_matrix(cls, matrix: tuple[int, ...] | None) -> "Orientation":
        if matrix is None or len(matrix) != 9:
            return cls()
        a, b, c, d = (v / 65536.0 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
        if abs(a) >= abs(b):  # x' = a x, y' = d y: no transpose (also the fallback for odd angles)
            return cls(False, d < 0, a < 0, tuple(matrix))
        return cls(True, b < 0, c < 0, tuple(matrix))  # x' = c y, y' = b x

    @classmethod
    def of_frame(cls, frame) -> "Orientation":
        """The orientation a decoded PyAV frame carries (its DISPLAYMATRIX side data)."""
        for item in getattr(frame, "side_data", ()) or ():
            if "DISPLAYMATRIX" in str(getattr(item, "type", "")):
                raw = bytes(item)
                if len(raw) >= 36:
                    return cls.from_matrix(struct.unpack("<9i", raw[:36]))
        return cls()

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def to_display(self, coded: np.ndarray) -> np.ndarray:
        """``[H, W(, C)]`` as coded -> as displayed."""
        out = np.swapaxes(coded, 0, 1) if self.transpose else coded
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def to_coded(self, displayed: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_display`."""
        out = displayed
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        if self.transpose:
            out = np.swapaxes(out, 0, 1)
        return np.ascontiguousarray(out)

    def displayed_size(self, width: int, height: int) -> tuple[int, int]:
        return (height, width) if self.transpose else (width, height)


# ------------------------------------------------------------------ decoding a clip

@dataclass(frozen=True)
class ClipInfo:
    """What an output video copies from its source clip: timing, coded size, display matrix."""

    rate: Fraction            # frames per second (average; the pts below are exact)
    time_base: Fraction       # of the pts
    width: int                # coded size
    height: int
    orientation: Orientation


class ClipFrame:
    """One decoded frame: its index, its time, and its pixels on demand."""

    __slots__ = ("index", "pts", "seconds", "_frame")

    def __init__(self, index: int, pts: int | None, seconds: float, frame) -> None:
        self.index = index
        self.pts = pts            # in ClipInfo.time_base, from the first frame's (None when the file has none)
        self.seconds = seconds    # presentation time from the first frame
        self._frame = frame

    def image(self) -> np.ndarray:
        """``[H, W, 3]`` uint8 as displayed (the display matrix applied)."""
        return Orientation.of_frame(self._frame).to_display(self._frame.to_ndarray(format="rgb24"))


def _open_clip(path: Path):
    av = require_av(path)
    if not path.exists():
        raise io.InputError(f"{path}: file not found")
    try:
        container = av.open(str(path))
    except Exception as exc:  # av raises its own error family for every FFmpeg failure
        raise io.InputError(f"{path}: cannot open video ({console_line(exc)})") from None
    if not container.streams.video:
        container.close()
        raise io.InputError(f"{path}: no video stream in this file")
    return container


def _rate(stream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return Fraction(25)


def decode_clip(path: str | os.PathLike, max_pixels: int = io.DEFAULT_MAX_PIXELS
                ) -> tuple[ClipInfo, Iterator[ClipFrame]]:
    """Open a clip: its :class:`ClipInfo` and an iterator over every frame in presentation order.

    The iterator raises :class:`io.InputError` naming the file and the frame
    when decoding fails part-way, :class:`TruncatedClip` at the end when the
    file holds fewer frames than its container promises (FFmpeg's frame
    threads drop the frames of a cut-off file without an error, so the
    frames are counted), and an :class:`io.InputError` when no frame at all
    could be decoded; it closes the file when it ends or is closed. Raises
    :class:`io.InputError` at once when the file cannot be opened, has no
    video stream, or has frames over ``max_pixels``.
    """
    path = Path(path)
    orientation = _first_orientation(path)
    container = _open_clip(path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
    rate = _rate(stream)
    width, height = stream.codec_context.width, stream.codec_context.height
    try:
        _check_pixels(path, stream, max_pixels)
    except io.InputError:
        container.close()
        raise
    info = ClipInfo(rate, time_base, width, height, orientation)
    promised = max(int(stream.frames or 0), 0)  # 0: the container does not say (Matroska, WebM)

    def frames() -> Iterator[ClipFrame]:
        index, start, packets, failed = 0, None, 0, None
        try:
            try:
                for packet in container.demux(stream):
                    if packet.size:
                        packets += 1
                    for frame in packet.decode():
                        if start is None:
                            start = frame.pts if frame.pts is not None else 0
                        rel = None if frame.pts is None else frame.pts - start
                        seconds = float(rel * time_base) if rel is not None else index / float(rate)
                        yield ClipFrame(index, rel, seconds, frame)
                        index += 1
            except Exception as exc:  # av raises its own error family for every FFmpeg failure
                failed = exc
                packets += _count_rest(container, stream)
        finally:
            container.close()
        if promised and packets < promised:  # the file ends before the frames its header lists
            raise TruncatedClip(path, index, promised)
        if failed is not None:
            raise io.InputError(f"{path}: decoding stopped at frame {index} ({console_line(failed)})")
        if index == 0:
            raise io.InputError(f"{path}: holds no frame that can be decoded")

    return info, frames()


def _check_pixels(path: Path, stream, max_pixels: int) -> None:
    """Refuse frames over ``max_pixels`` from the stream's header, before any frame is decoded."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > max_pixels:
        raise io.InputError(f"{path}: {width}x{height} = {width * height} pixels a frame is over the limit of "
                            f"{max_pixels} (raise it with --max-pixels)")


def _count_rest(container, stream) -> int:
    """Packets of ``stream`` left after a decoding error (to tell a file cut short from a broken frame)."""
    count = 0
    try:
        for packet in container.demux(stream):
            count += 1 if packet.size else 0
    except Exception:
        pass
    return count


def probe_frame_count(path: str | os.PathLike, *, first_frame: bool = False,
                      max_pixels: int = io.DEFAULT_MAX_PIXELS) -> int:
    """How many frames a clip holds, without decoding them: the count its container records (MP4,
    MOV, AVI), else its video packets counted (Matroska, WebM record none). A header probe: a
    fraction of a second even for a long clip in MP4.

    ``first_frame``: also decode the first frame (frames over ``max_pixels`` are refused first),
    and raise :class:`io.InputError` when there is none (a header that promises frames the file
    does not hold). Raises :class:`io.InputError` when the file cannot be opened.
    """
    path = Path(path)
    container = _open_clip(path)
    try:
        stream = container.streams.video[0]
        promised = int(stream.frames) if stream.frames and stream.frames > 0 else 0
        if first_frame:
            _check_pixels(path, stream, max_pixels)
        if first_frame and not _decodes_a_frame(container, stream):
            said = f" (its header promises {promised} frame{'s' if promised != 1 else ''})" if promised else ""
            raise io.InputError(f"{path}: holds no frame that can be decoded{said}")
        return promised or _count_packets(path)
    finally:
        container.close()


def _count_packets(path: Path) -> int:
    """The video packets of a clip (one per frame), read without decoding; a file of its own is opened,
    so frames another reader has decoded are counted too."""
    container = _open_clip(path)
    try:
        return _count_rest(container, container.streams.video[0])
    finally:
        container.close()


def _decodes_a_frame(container, stream) -> bool:
    try:
        for _ in container.decode(stream):
            return True
    except Exception:  # a first frame that cannot be decoded: none
        return False
    return False


def _first_orientation(path: Path) -> Orientation:
    """The display matrix of the clip's first frame (FFmpeg copies the stream's onto every frame)."""
    try:
        container = _open_clip(path)
    except io.InputError:
        return Orientation()
    try:
        for frame in container.decode(video=0):
            return Orientation.of_frame(frame)
    except Exception:
        pass
    finally:
        container.close()
    return Orientation()


# ------------------------------------------------------------------ one frame as an image

@dataclass(frozen=True)
class FrameRef:
    """``clip.mp4@12`` (``index``) or ``clip.mp4@1.5s`` / ``@00:00:01.5`` (``seconds``)."""

    path: Path
    text: str
    index: int | None = None
    seconds: float | None = None


_AT = re.compile(r"^(?P<path>.+)@(?P<at>[^@/\\]*)$")
_CLOCK = re.compile(r"^(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+(?:\.\d*)?)$")


def parse_frame_ref(text: str | os.PathLike) -> FrameRef | None:
    """``clip.mp4@N`` -> a :class:`FrameRef`; None for anything that names no frame of a video.

    The part before ``@`` must end in a video suffix, and a file really named
    ``x.mp4@2`` is taken as that file. Raises :class:`io.InputError` for a
    video frame reference whose ``@`` part is neither a frame index nor a time.
    """
    text = os.fspath(text)
    match = _AT.match(text)
    if not match or Path(match["path"]).suffix.lower() not in VIDEO_SUFFIXES or os.path.exists(text):
        return None
    at = match["at"].strip()
    path = Path(match["path"])
    if at.isdigit():
        return FrameRef(path, text, index=int(at))
    seconds = None
    if at.endswith("s") and _is_number(at[:-1]):
        seconds = float(at[:-1])
    elif _CLOCK.match(at):
        clock = _CLOCK.match(at)
        seconds = int(clock["h"] or 0) * 3600 + int(clock["m"]) * 60 + float(clock["s"])
    if seconds is None or not np.isfinite(seconds) or seconds < 0:
        raise io.InputError(f"{text}: '@{at}' names no frame: give a frame index (@0, @120) or a time "
                            "(@1.5s, @00:01:02.5)")
    return FrameRef(path, text, seconds=seconds)


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", text))


def read_frame(ref: FrameRef, max_pixels: int = io.DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The frame ``ref`` names as ``[H, W, 3]`` uint8, as displayed; one-line InputError naming the file.

    ``@N`` is the N-th frame in presentation order (as ``--video`` numbers
    them); ``@T`` the frame on screen T seconds after the first one starts.
    Frames are decoded from the start (exact for any clip, variable frame
    rate included), so a reference late in a long clip takes a moment.
    """
    return locate_frame(ref, max_pixels)[1]


def locate_frame(ref: FrameRef, max_pixels: int = io.DEFAULT_MAX_PIXELS) -> tuple[int, np.ndarray]:
    """:func:`read_frame` with the frame's index (``--video`` numbering): ``@1.5s`` resolved to the
    frame on screen then, so a reference given by time is known as the frame it is."""
    info, frames = decode_clip(ref.path, max_pixels=max_pixels)
    frame_s = 1.0 / float(info.rate)
    chosen, count, end = None, 0, 0.0
    try:
        for frame in _until_truncated(frames, ref):
            count += 1
            end = frame.seconds + frame_s
            if ref.index is not None:
                if frame.index == ref.index:
                    return frame.index, frame.image()
            elif frame.seconds <= ref.seconds + 1e-6:
                chosen = frame  # the latest frame on screen at that time
            else:
                found = chosen if chosen is not None else frame
                return found.index, found.image()
        if ref.seconds is not None and chosen is not None and ref.seconds < end - 1e-6:
            return chosen.index, chosen.image()
    finally:
        frames.close()
    plural = "s" if count != 1 else ""
    if ref.index is not None:
        return _raise(f"{ref.text}: {ref.path} has {count} frame{plural}" + (f" (0 to {count - 1})" if count else ""))
    return _raise(f"{ref.text}: {ref.path} is {end:.3f}s long ({count} frame{plural})")


def _raise(message: str):
    raise io.InputError(message)


def _until_truncated(frames: Iterator[ClipFrame], ref: FrameRef) -> Iterator[ClipFrame]:
    """``frames``; a clip cut short before the frame ``ref`` names is an error saying so (not "has N frames")."""
    try:
        yield from frames
    except TruncatedClip as cut:
        raise io.InputError(f"{ref.text}: {cut.path} is {cut.detail}") from None


def read_image_or_frame(text: str | os.PathLike, max_pixels: int = io.DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file, or a frame of a clip (``clip.mp4@12``): ``[H, W, 3]`` uint8 as displayed."""
    ref = parse_frame_ref(text)
    if ref is not None:
        return read_frame(ref, max_pixels)
    hint = whole_clip_hint(text, "ref")
    if hint is not None:
        raise io.InputError(hint)
    return io.read_image(text, max_pixels=max_pixels)


_FRAME_INPUT = re.compile(r"^(?P<path>.+)#(?P<index>\d+)$")


def frame_of_input(text: str | os.PathLike) -> FrameRef | None:
    """The frame a ``--video`` run's record names (``/abs/clip.mp4#12``, as :meth:`FrameSequence.frame_source`
    writes it) as ``clip.mp4@12``; None for anything else, or when the clip is not there any more."""
    match = _FRAME_INPUT.match(os.fspath(text))
    if not match or not has_video_suffix(match["path"]) or not os.path.isfile(match["path"]):
        return None
    index = int(match["index"])
    return FrameRef(Path(match["path"]), f"{match['path']}@{index}", index=index)


def source_file(text: str | os.PathLike) -> str:
    """The file behind ``text``: ``clip.mp4`` for ``clip.mp4@12``, else ``text`` itself."""
    try:
        ref = parse_frame_ref(text)
    except io.InputError:
        ref = None
    return str(ref.path) if ref is not None else os.fspath(text)


# ------------------------------------------------------------------ a sequence of frames

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
        #: A video file's frames as its container counts them (:func:`probe_frame_count`); decoding
        #: finds fewer in a file cut short, and says so (:class:`TruncatedClip`).
        self.frame_count = 0
        if not self.path.exists():
            raise SourceError(f"{self.path}: not found")
        if is_video_file(self.path):
            try:
                require_av(self.path)
                self.frame_count = probe_frame_count(self.path, first_frame=True, max_pixels=max_pixels)
            except io.InputError as exc:
                raise SourceError(str(exc)) from None
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

    @property
    def is_clip(self) -> bool:
        """A video file (rather than a folder or a list of frames)."""
        return self.sources is None

    def listed_frames(self) -> list[Source]:
        """Every frame as a :class:`Source`: a folder's or list's, or those a clip's container counts."""
        if self.sources is not None:
            return list(self.sources)
        return [self.frame_source(i) for i in range(self.frame_count)]

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
        index = -1
        try:
            _, frames = decode_clip(self.path, max_pixels=self.max_pixels)
            for frame in frames:
                index = frame.index
                if index >= start:
                    yield self.frame_source(index), frame.image()
        except io.InputError as exc:  # the broken frame keeps its place; nothing after it can be decoded
            yield self.frame_source(max(index + 1, start)), str(exc)


def is_same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


__all__ = ["VIDEO_SUFFIXES", "ClipFrame", "ClipInfo", "FrameRef", "FrameSequence", "Orientation", "TruncatedClip",
           "decode_clip", "frame_of_input", "has_video_suffix", "is_video_file", "locate_frame", "natural_key",
           "parse_frame_ref", "probe_frame_count", "read_frame", "read_image_or_frame", "source_file",
           "whole_clip_hint"]
