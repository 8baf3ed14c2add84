"""Videos of a ``--video`` run's results (``--save-video``), assembled from its PNGs with PyAV.

The PNGs stay the per-frame record of the run: they are what a rerun
resumes from, so a video is assembled from them once every frame is done,
written under a temporary name and renamed at the end. An interrupted run
therefore never leaves a truncated video under the final name, and the
rerun (every frame skipped) rebuilds what is missing from the PNGs.

Kinds, and the PNGs each is made of:

- ``mask``: the masks as grey (``OUT/masks``);
- ``matte``: the alpha mattes as grey (``OUT/alpha``);
- ``cutout``: the cut-outs with their alpha channel (``OUT/cutout``);
- ``overlay``: the source with the mask tinted over it, for checking (``OUT/masks``).

Containers: ``mov`` (default) holds ProRes 422 HQ, and ProRes 4444 with
alpha for the cut-out, as editors expect; ``webm`` holds VP9 (the masks and
mattes losslessly, the cut-out with alpha, ``yuva420p``). Frame count,
timestamps (so the frame rate), coded size and display matrix (rotation)
are the source's; a folder of frames takes ``--fps``. Colours are written
as BT.709, video range (lossless grey VP9: full range), and tagged so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from icm_cli import atomic, io, render
from icm_cli.errors import SettingError, VideoOutputError  # noqa: F401 (VideoOutputError re-exported)
from icm_cli.runner.signals import stop_signals
from icm_cli.runner.outputs import output_folder, output_path
from icm_cli.video import ClipInfo, FrameSequence, Orientation, decode_clip, require_av

VIDEO_KINDS = ("mask", "matte", "cutout", "overlay")
VIDEO_FORMATS = ("mov", "webm")

#: The PNG folder each kind of video is assembled from.
PNG_KIND = {"mask": "masks", "matte": "alpha", "cutout": "cutout", "overlay": "masks"}

#: (format, kind) -> codec, pixel format, the array layout fed to it, encoder options.
_ENCODING = {
    ("mov", "mask"): ("prores_ks", "yuv422p10le", "gray", {"profile": "3"}),
    ("mov", "matte"): ("prores_ks", "yuv422p10le", "gray", {"profile": "3"}),
    ("mov", "overlay"): ("prores_ks", "yuv422p10le", "rgb24", {"profile": "3"}),
    ("mov", "cutout"): ("prores_ks", "yuva444p10le", "rgba", {"profile": "4"}),
    ("webm", "mask"): ("libvpx-vp9", "yuv420p", "gray", {"lossless": "1", "row-mt": "1", "cpu-used": "4"}),
    ("webm", "matte"): ("libvpx-vp9", "yuv420p", "gray", {"lossless": "1", "row-mt": "1", "cpu-used": "4"}),
    ("webm", "overlay"): ("libvpx-vp9", "yuv420p", "rgb24", {"crf": "24", "b": "0", "row-mt": "1", "cpu-used": "4"}),
    ("webm", "cutout"): ("libvpx-vp9", "yuva420p", "rgba", {"crf": "20", "b": "0", "row-mt": "1", "cpu-used": "4"}),
}
_DESCRIBE = {"prores_ks": {"3": "ProRes 422 HQ", "4": "ProRes 4444 with alpha"}, "libvpx-vp9": "VP9"}

#: Decimal rates people type for the NTSC family, as the exact fractions cameras record.
_NTSC = {"23.976": Fraction(24000, 1001), "29.97": Fraction(30000, 1001), "47.952": Fraction(48000, 1001),
         "59.94": Fraction(60000, 1001), "119.88": Fraction(120000, 1001)}


def parse_fps(text: str) -> Fraction:
    """``"25"``, ``"29.97"`` (read as 30000/1001) or ``"30000/1001"`` -> a positive Fraction; else ValueError."""
    text = str(text).strip()
    try:
        rate = _NTSC.get(text) or Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise SettingError(f"fps takes frames per second, e.g. 25, 29.97 or 30000/1001 (got {text!r})",
                           option="--fps") from None
    if not 0 < rate <= 1000:
        raise SettingError(f"fps must be above 0 and at most 1000 (got {text})", option="--fps")
    return rate


@dataclass(frozen=True)
class VideoOutputConfig:
    """What ``--save-video`` asks for: kinds, container, and the frame rate of a folder of frames."""

    kinds: tuple[str, ...]
    format: str = "mov"
    fps: Fraction | None = None

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in VIDEO_KINDS]
        if unknown or not self.kinds:
            raise SettingError(f"kinds must be a list of {', '.join(VIDEO_KINDS)}; "
                             f"got {','.join(self.kinds) or 'nothing'}")
        if self.format not in VIDEO_FORMATS:
            raise SettingError(f"format takes {' or '.join(VIDEO_FORMATS)} (got {self.format!r})", option="--video-format")

    @classmethod
    def parse(cls, kinds: str, fmt: str = "mov", fps: str | None = None) -> "VideoOutputConfig":
        from icm_cli.kinds import parse_video_kinds

        return cls(parse_video_kinds(kinds, VIDEO_KINDS), fmt.strip().lower().lstrip("."),
                   parse_fps(fps) if fps is not None else None)

    @property
    def png_kinds(self) -> tuple[str, ...]:
        """The PNG outputs (``--save`` kinds) the videos are made of."""
        return tuple(dict.fromkeys(PNG_KIND[k] for k in self.kinds))

    def path(self, root: Path, kind: str) -> Path:
        return Path(root) / f"{kind}.{self.format}"

    def paths(self, root: Path) -> dict[str, Path]:
        return {kind: self.path(root, kind) for kind in self.kinds}

    def check_encoders(self) -> None:
        """PyAV is installed and its FFmpeg has the encoders; ValueError with the way out if not."""
        try:
            av = require_av()
        except io.InputError as exc:
            raise SettingError(f"--save-video: {exc}") from None
        for kind in self.kinds:
            codec = _ENCODING[(self.format, kind)][0]
            try:
                av.codec.Codec(codec, "w")
            except Exception:
                other = "webm" if self.format == "mov" else "mov"
                raise SettingError(f"--save-video {kind}: this PyAV build has no {codec} encoder for "
                                 f".{self.format}; try --video-format {other}") from None


def describe(fmt: str, kind: str) -> str:
    codec, _, _, options = _ENCODING[(fmt, kind)]
    name = _DESCRIBE[codec]
    if isinstance(name, dict):
        return name[options["profile"]]
    return f"{name}{' with alpha' if kind == 'cutout' else ''}{' lossless' if options.get('lossless') else ''}"


# ------------------------------------------------------------------ one video file

class VideoWriter:
    """Encodes frames given as displayed into ``path`` with the source's timing, size and display matrix.

    Written to a hidden temporary file in the same folder (see
    :func:`io.remove_stale_temp_files`) and renamed by :meth:`finish`;
    :meth:`abort` removes it. ``[H, W]`` grey, ``[H, W, 3]`` RGB or
    ``[H, W, 4]`` RGBA uint8 as the kind needs.
    """

    def __init__(self, path: Path, kind: str, fmt: str, info: ClipInfo) -> None:
        av = require_av(path)
        from av.video.reformatter import ColorRange, Colorspace

        self.path = Path(path)
        self.info = info
        self.frames = 0
        codec, self.pix_fmt, self.layout, options = _ENCODING[(fmt, kind)]
        # Lossless grey (VP9) keeps every level only at full range; everything else is video range.
        full = options.get("lossless") == "1"
        self._av, self._colorspace = av, Colorspace.ITU709
        self._range = ColorRange.JPEG if full else ColorRange.MPEG
        self._full = ColorRange.JPEG
        try:
            fd, self.temp = atomic.temp_file(self.path.parent)  # the encoder opens it by name
            os.close(fd)
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        try:
            self.container = av.open(self.temp, "w", format=fmt)
            stream = self.container.add_stream(codec, rate=info.rate, options=dict(options))
            stream.width, stream.height, stream.pix_fmt = info.width, info.height, self.pix_fmt
            stream.codec_context.time_base = info.time_base
            stream.time_base = info.time_base
            cc = stream.codec_context
            cc.colorspace, cc.color_primaries, cc.color_trc = 1, 1, 1  # BT.709
            cc.color_range = int(self._range)
            if info.orientation.matrix is not None:
                stream.set_display_matrix(list(info.orientation.matrix))
            self.stream = stream
        except BaseException as exc:
            self._remove_temp()
            if isinstance(exc, OSError):
                raise _write_error(self.path, exc) from None
            if isinstance(exc, Exception):
                raise VideoOutputError(f"{self.path}: cannot start the video ({_reason(exc)})") from None
            raise

    def write(self, displayed: np.ndarray, pts: int) -> None:
        coded = self.info.orientation.to_coded(displayed)
        if coded.shape[:2] != (self.info.height, self.info.width):
            shown = self.info.orientation.displayed_size(self.info.width, self.info.height)
            raise VideoOutputError(f"{self.path}: a frame is {displayed.shape[1]}x{displayed.shape[0]}, the video "
                                   f"{shown[0]}x{shown[1]}")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(coded), format=self.layout)
        frame = frame.reformat(format=self.pix_fmt, src_color_range=self._full, dst_colorspace=self._colorspace,
                               dst_color_range=self._range)  # PNG pixels are full range
        frame.pts, frame.time_base = pts, self.info.time_base
        try:
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        except OSError as exc:  # PyAV's errors for a full disk, a quota, a read-only file system
            raise _write_error(self.path, exc) from None
        self.frames += 1

    def finish(self) -> None:
        """Flush, close and rename to the final name (an :class:`io.OutputError` when the disk refuses)."""
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            os.chmod(self.temp, atomic.FILE_MODE)
            os.replace(self.temp, self.path)
        except OSError as exc:
            self.abort()
            raise _write_error(self.path, exc) from None
        except Exception as exc:
            self.abort()
            raise VideoOutputError(f"{self.path}: cannot finish the video ({_reason(exc)})") from None

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass
        self._remove_temp()

    def _remove_temp(self) -> None:
        try:
            os.unlink(self.temp)
        except OSError:
            pass


def _write_error(path: Path, exc: OSError) -> io.OutputError:
    """The project's output error for an OSError of the encoder, the muxer or the file system
    (:func:`io.fatal_write_error` then tells a full disk from a one-off failure)."""
    return io.OutputError(f"{path}: cannot write ({exc.strerror or _reason(exc)})", exc.errno)


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ------------------------------------------------------------------ frames of the source

@dataclass
class _SourceFrame:
    index: int
    stem: str
    pts: int
    image: object  # a callable giving the displayed RGB frame (decoded only when a video needs it)


def _clip_frames(sequence: FrameSequence, max_pixels: int) -> tuple[ClipInfo, Iterator[_SourceFrame]]:
    info, frames = decode_clip(sequence.path, max_pixels=max_pixels)

    def walk() -> Iterator[_SourceFrame]:
        last = -1
        for frame in frames:
            # Some files carry no timestamps: count frames at the average rate instead.
            pts = frame.pts if frame.pts is not None else round(frame.index / info.rate / info.time_base)
            pts = max(pts, last + 1)  # encoders need rising timestamps
            last = pts
            yield _SourceFrame(frame.index, sequence.frame_source(frame.index).stem, pts, frame.image)

    return info, walk()


def _folder_frames(sequence: FrameSequence, fps: Fraction, root: Path, first_kind: str,
                   max_pixels: int) -> tuple[ClipInfo, Iterator[_SourceFrame]]:
    first = sequence.frame_source(0)
    size = _png_size(output_path(root, first_kind, first.stem))
    info = ClipInfo(rate=fps, time_base=1 / fps, width=size[0], height=size[1], orientation=Orientation())

    def walk() -> Iterator[_SourceFrame]:
        for index, source in enumerate(sequence.sources):
            yield _SourceFrame(index, source.stem, index,
                               lambda path=source.path: io.read_image(path, max_pixels=max_pixels))

    return info, walk()


def _png_size(path: Path) -> tuple[int, int]:
    from icm_cli.process_settings import open_unguarded

    try:
        with open_unguarded(path) as img:  # icm's own output: its size was checked when the source was read
            return img.size
    except (OSError, ValueError) as exc:
        raise VideoOutputError(f"{path}: cannot read ({_reason(exc)})") from None


def _read_png(path: Path, mode: str) -> np.ndarray:
    from icm_cli.process_settings import open_unguarded

    try:
        with open_unguarded(path) as img:  # icm's own output: its size was checked when the source was read
            return np.asarray(img.convert(mode))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise VideoOutputError(f"{path}: cannot read ({_reason(exc)})") from None


def _picture(kind: str, root: Path, frame: _SourceFrame) -> np.ndarray:
    """The displayed picture of one video frame, from the run's PNGs (and the source for ``overlay``)."""
    png = output_path(root, PNG_KIND[kind], frame.stem)
    if kind == "cutout":
        return _read_png(png, "RGBA")
    grey = _read_png(png, "L")
    if kind == "overlay":
        return render.tint(frame.image(), grey >= 128)
    return grey


# ------------------------------------------------------------------ all videos of a run

@dataclass
class VideoReport:
    written: list[tuple[Path, str]]   # path, one-line description
    problems: list[str]               # one line each, naming the file
    interrupted: int = 0              # the signal that stopped the writing, or 0
    stopped: str | None = None        # why no video can be written now (a full disk), as the batch says it


def _stale(video: Path, pngs: Path) -> bool:
    """``video`` is missing, or older than a PNG in the folder it is made from (recomputed since)."""
    try:
        made = video.stat().st_mtime_ns
    except OSError:
        return True
    try:
        with os.scandir(pngs) as entries:
            return any(e.name.endswith(".png") and e.stat().st_mtime_ns > made for e in entries)
    except OSError:
        return False  # no PNG folder to compare with: the writing itself says what is missing


def write_videos(config: VideoOutputConfig, root: Path, sequence: FrameSequence, *, rebuild: bool,
                 max_pixels: int = io.DEFAULT_MAX_PIXELS) -> VideoReport:
    """Assemble every video of ``config`` from the PNGs under ``root`` (one pass over the frames).

    ``rebuild``: frames were (re)computed by this run, so existing videos
    are stale; otherwise only videos that are missing or older than a PNG
    they are made of are written (a finished run's videos are left as
    they are: nothing to decode, nothing to encode). A video is
    written only when every frame of the source has its PNG: otherwise it is
    a problem naming the first frame without one, and nothing is written
    under its name. Ctrl-C / SIGTERM stop the writing and remove the
    temporary files (``interrupted`` says which signal).
    """
    root = Path(root)
    report = VideoReport([], [])
    todo = {kind: path for kind, path in config.paths(root).items()
            if rebuild or _stale(path, output_folder(root, PNG_KIND[kind]))}
    if not todo:
        return report
    writers: dict[str, VideoWriter] = {}
    try:
        if sequence.is_clip:
            info, frames = _clip_frames(sequence, max_pixels)
        else:
            if config.fps is None:
                raise VideoOutputError(f"{sequence.path}: a folder of frames needs --fps to be written as a video")
            info, frames = _folder_frames(sequence, config.fps, root, PNG_KIND[next(iter(todo))], max_pixels)
        with stop_signals() as stop:
            for kind, path in todo.items():
                writers[kind] = VideoWriter(path, kind, config.format, info)
            count = 0
            for frame in frames:
                if stop.signum:
                    report.interrupted = stop.signum
                    break
                count += 1
                for kind, writer in writers.items():
                    try:
                        picture = _picture(kind, root, frame)
                    except FileNotFoundError:
                        raise VideoOutputError(f"{writer.path}: not written: frame {frame.stem} has no "
                                               f"{PNG_KIND[kind]}/{frame.stem}.png (it failed or was not run); "
                                               "rerun to finish it") from None
                    writer.write(picture, frame.pts)
            if stop.signum:
                report.interrupted = stop.signum
            if report.interrupted:
                for writer in writers.values():
                    writer.abort()
                return report
            if not count:
                raise VideoOutputError(f"{next(iter(todo.values()))}: not written: the source has no frames")
            for kind, writer in writers.items():
                writer.finish()
                shown = info.orientation.displayed_size(info.width, info.height)
                report.written.append((writer.path, f"{writer.frames} frames, {shown[0]}x{shown[1]}, "
                                                    f"{_fps_text(info.rate)} fps, {describe(config.format, kind)}"))
    except (VideoOutputError, io.InputError, io.OutputError) as exc:
        for writer in writers.values():
            writer.abort()
        report.problems.append(str(exc))
        reason = io.fatal_write_error(exc)
        if reason:  # the other videos cannot be written either; the PNGs (and videos already there) stay
            report.stopped = f"cannot write to {root} ({reason})"
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    return report


def _fps_text(rate: Fraction) -> str:
    value = float(rate)
    return f"{value:g}" if rate.denominator == 1 else f"{value:.3f}".rstrip("0").rstrip(".")


__all__ = ["PNG_KIND", "VIDEO_FORMATS", "VIDEO_KINDS", "VideoOutputConfig", "VideoOutputError", "VideoReport",
           "VideoWriter", "parse_fps", "write_videos"]
