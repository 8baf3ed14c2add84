"""Video in, video out: ``--ref clip.mp4@N``, ``--save-video`` decoded back, resume and interruption.

Every clip here is synthesised by the test with PyAV; the outputs are decoded
again and checked for frame count, size, frame rate, rotation and alpha.
"""

from __future__ import annotations

import os
import signal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from tests.conftest import save_png, source_records, textured_scene, write_clip

av = pytest.importorskip("av")

runner = CliRunner()
FAST = ["--head-steps", "20", "--size", "128", "--no-edges", "--quiet"]
H, W = 96, 128


def _frame(i: int) -> tuple[np.ndarray, np.ndarray]:
    return textured_scene(H, W, (30, 10 + 8 * i, 40, 50), seed=100 + i)


def make_clip(path: Path, count: int = 6, rate=Fraction(25), rotation: int = 0, codec: str = "mpeg4") -> Path:
    """A clip of an object sliding right, coded at W x H; ``rotation`` goes into its display matrix."""
    return write_clip(path, [_frame(i)[0] for i in range(count)], rate, codec, rotation=rotation)


def decode(path: Path, decoder: str | None = None) -> dict:
    """What a player sees in ``path``: frames (as coded), rate, coded size, rotation, pixel format."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {"rate": Fraction(stream.average_rate), "size": (stream.codec_context.width,
                                                               stream.codec_context.height)}
        if decoder is None:
            frames = list(container.decode(stream))
        else:  # FFmpeg's own VP9 decoder drops the alpha plane; libvpx's keeps it
            ctx = av.codec.CodecContext.create(decoder, "r")
            frames = [f for packet in container.demux(stream) for f in ctx.decode(packet)]
        info["frames"] = frames
        info["rotation"] = frames[0].rotation if frames else None
        info["format"] = frames[0].format.name if frames else None
        info["pts_s"] = [float(f.pts * f.time_base) for f in frames]
    return info


def _propagate(*args):
    return runner.invoke(app, ["propagate", *args, *FAST])


@pytest.fixture(scope="module")
def rotated_run(tmp_path_factory):
    """One clip-to-cutout run: a 29.97 fps clip shot 'sideways' (display matrix 90 degrees)."""
    root = tmp_path_factory.mktemp("rotated")
    clip = make_clip(root / "clip.mp4", count=6, rate=Fraction(30000, 1001), rotation=90)
    _, mask = _frame(0)
    save_png(root / "first_mask.png", np.rot90(mask * 255, 1).copy())  # as the frame is displayed
    out = root / "out"
    res = _propagate("--video", str(clip), "--ref", f"{clip}@0", "--mask", str(root / "first_mask.png"),
                     "-o", str(out), "--save-video", "mask,matte,cutout,overlay")
    return root, clip, out, res


def test_a_clip_goes_in_and_a_cutout_with_alpha_and_a_mask_video_come_out(rotated_run):
    root, clip, out, res = rotated_run
    assert res.exit_code == 0, res.output
    source = decode(clip)
    assert source["rotation"] == 90 and len(source["frames"]) == 6
    for kind in ("mask", "matte", "cutout", "overlay"):
        video = decode(out / f"{kind}.mov")
        assert len(video["frames"]) == 6, kind
        assert video["size"] == source["size"] == (W, H), kind       # coded as the source
        assert video["rotation"] == 90, kind                          # and shown as the source
        assert video["rate"] == Fraction(30000, 1001), kind
        assert video["pts_s"] == pytest.approx(source["pts_s"], abs=1e-6), kind
    cutout = decode(out / "cutout.mov")
    assert cutout["format"].startswith("yuva444p")                   # ProRes 4444 with its alpha plane
    alpha = cutout["frames"][3].to_ndarray(format="rgba")[..., 3]
    png = np.asarray(Image.open(out / "cutout" / "00003.png"))      # displayed: 128 high, 96 wide
    assert png.shape == (W, H, 4)
    assert np.abs(np.rot90(alpha, 1).astype(int) - png[..., 3]).max() <= 2
    assert alpha.min() == 0 and alpha.max() == 255
    mask = decode(out / "mask.mov")["frames"][5].to_ndarray(format="gray")
    written = np.asarray(Image.open(out / "masks" / "00005.png"))
    assert np.array_equal(np.rot90(mask, 1) >= 128, written >= 128)
    # the masks found the object, which slides right as coded (down as displayed)
    truth = np.rot90(_frame(5)[1].astype(bool), 1)
    iou = np.logical_and(written >= 128, truth).sum() / np.logical_or(written >= 128, truth).sum()
    assert iou > 0.6, iou


def test_the_overlay_is_the_source_with_the_mask_tinted(rotated_run):
    root, clip, out, res = rotated_run
    overlay = decode(out / "overlay.mov")["frames"][2].to_ndarray(format="rgb24").astype(int)
    source = decode(clip)["frames"][2].to_ndarray(format="rgb24").astype(int)
    mask = np.rot90(np.asarray(Image.open(out / "masks" / "00002.png")), -1) >= 128
    inside = np.abs(overlay - source).mean(axis=2)[mask].mean()
    outside = np.abs(overlay - source).mean(axis=2)[~mask].mean()
    assert outside < 6 and inside > 30, (inside, outside)  # colours kept outside, tinted inside


def test_webm_cutout_keeps_alpha_and_timing(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", count=4, rate=Fraction(24))
    save_png(tmp_path / "m.png", _frame(0)[1] * 255)
    out = tmp_path / "out"
    res = _propagate("--video", str(clip), "--ref", f"{clip}@0", "--mask", str(tmp_path / "m.png"), "-o", str(out),
                     "--save-video", "cutout,mask", "--video-format", "webm")
    assert res.exit_code == 0, res.output
    cutout = decode(out / "cutout.webm", decoder="libvpx-vp9")
    assert len(cutout["frames"]) == 4 and cutout["size"] == (W, H) and cutout["format"] == "yuva420p"
    assert cutout["rate"] == 24
    alpha = cutout["frames"][1].to_ndarray(format="rgba")[..., 3]
    png = np.asarray(Image.open(out / "cutout" / "00001.png"))[..., 3]
    assert alpha.min() < 10 and alpha.max() > 245 and np.abs(alpha.astype(int) - png).mean() < 3
    mask = decode(out / "mask.webm")
    assert len(mask["frames"]) == 4
    written = np.asarray(Image.open(out / "masks" / "00003.png"))
    frame = mask["frames"][3]
    luma = np.frombuffer(frame.planes[0], np.uint8).reshape(frame.height, -1)[:, :frame.width]
    assert frame.color_range == 2 and np.array_equal(luma, written)  # lossless, full range: the PNG's levels


def _frames_folder(folder: Path, count: int) -> None:
    for i in range(count):
        save_png(folder / f"f{i}.png", _frame(i)[0])


def test_a_folder_of_frames_gets_videos_at_the_rate_given(tmp_path):
    _frames_folder(tmp_path / "frames", 5)
    save_png(tmp_path / "m.png", _frame(0)[1] * 255)
    common = ["--video", str(tmp_path / "frames"), "--ref", str(tmp_path / "frames" / "f0.png"),
              "--mask", str(tmp_path / "m.png"), "-o", str(tmp_path / "out"), "--save-video", "mask"]
    refused = _propagate(*common)
    assert refused.exit_code == 2 and "--fps" in refused.output and "Traceback" not in refused.output
    res = _propagate(*common, "--fps", "12.5")
    assert res.exit_code == 0, res.output
    video = decode(tmp_path / "out" / "mask.mov")
    assert len(video["frames"]) == 5 and video["rate"] == Fraction(25, 2) and video["size"] == (W, H)
    assert video["pts_s"] == pytest.approx([i / 12.5 for i in range(5)])


@pytest.mark.parametrize("args, words", [
    (["--save-video", "mask,sparkles"], "--save-video takes"),
    (["--save-video", "mask", "--video-format", "avi"], "--video-format takes"),
    (["--save-video", "mask", "--fps", "25"], "keeps its own timing"),
    (["--fps", "25"], "go with --save-video"),
])
def test_video_output_usage_errors_are_one_line_before_the_model(tmp_path, args, words, monkeypatch):
    monkeypatch.setattr("icm_cli.predictor.Predictor.__init__",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("the model was loaded")))
    clip = make_clip(tmp_path / "clip.mp4", count=2)
    save_png(tmp_path / "m.png", _frame(0)[1] * 255)
    res = _propagate("--video", str(clip), "--ref", f"{clip}@0", "--mask", str(tmp_path / "m.png"),
                     "-o", str(tmp_path / "out"), *args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], res.output


def test_save_video_needs_a_sequence(tmp_path, small_scene):
    res = runner.invoke(app, ["propagate", str(small_scene / "src"), "--ref", str(small_scene / "ref.png"),
                              "--mask", str(small_scene / "ref_mask.png"), "-o", str(tmp_path / "o"),
                              "--save-video", "mask", *FAST])
    assert res.exit_code == 2 and "give --video" in res.output


# ------------------------------------------------------------------ references from a clip

def test_a_reference_frame_of_a_clip_by_index_or_time(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", count=5, rate=Fraction(10))
    from icm_cli.video import parse_frame_ref, read_frame, read_image_or_frame

    frames = [f.to_ndarray(format="rgb24") for f in decode(clip)["frames"]]
    assert np.array_equal(read_image_or_frame(f"{clip}@3"), frames[3])
    for at, index in (("0.35s", 3), ("0.4s", 4), ("00:00:00.2", 2), ("00:00.1", 1), ("0s", 0)):
        assert np.array_equal(read_frame(parse_frame_ref(f"{clip}@{at}")), frames[index]), at
    assert parse_frame_ref(str(tmp_path / "photo@2x.png")) is None


@pytest.mark.parametrize("at, words", [("9", "has 5 frames (0 to 4)"), ("0.5s", "is 0.500s long"),
                                       ("soon", "names no frame")])
def test_a_bad_frame_reference_is_one_line_naming_the_file(tmp_path, at, words):
    clip = make_clip(tmp_path / "clip.mp4", count=5, rate=Fraction(10))
    save_png(tmp_path / "m.png", _frame(0)[1] * 255)
    res = _propagate("--video", str(clip), "--ref", f"{clip}@{at}", "--mask", str(tmp_path / "m.png"),
                     "-o", str(tmp_path / "out"))
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"clip.mp4@{at}" in lines[0] and words in lines[0], res.output


def test_inspect_attn_and_review_show_the_reference_frame_of_the_clip(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", count=5, rotation=-90)
    shown = [np.rot90(f.to_ndarray(format="rgb24"), -1) for f in decode(clip)["frames"]]
    _, mask = _frame(3)
    save_png(tmp_path / "m3.png", np.rot90(mask * 255, -1).copy())
    save_png(tmp_path / "target.png", shown[4])
    res = runner.invoke(app, ["inspect-attn", str(tmp_path / "target.png"), "--ref", f"{clip}@3",
                              "--mask", str(tmp_path / "m3.png"), "-o", str(tmp_path / "attn"), *FAST[:-2]])
    assert res.exit_code == 0, res.output
    montage = np.asarray(Image.open(tmp_path / "attn" / "target.png")).astype(int)
    panel = montage[40:, 20:60]  # inside the reference panel, below its caption

    def distance(frame):
        from icm_cli import render
        expected = render.fit_height(frame, montage.shape[0]).astype(int)[40:, 20:60]
        return np.abs(expected - panel).mean()

    assert distance(shown[3]) < 0.5 * min(distance(shown[0]), distance(shown[1]))
    # review: the run's reference card is that frame, as displayed, linked to the clip
    out = tmp_path / "out"
    assert _propagate(str(tmp_path / "target.png"), "--ref", f"{clip}@3", "--mask", str(tmp_path / "m3.png"),
                      "-o", str(out)).exit_code == 0
    page = runner.invoke(app, ["review", str(out)])
    assert page.exit_code == 0, page.output
    html = (out / "review.html").read_text(encoding="utf-8")
    assert 'href="../clip.mp4"' in html and "clip.mp4@3" in html and "reference not readable" not in html


# ------------------------------------------------------------------ resume and interruption

def test_an_interrupted_video_write_leaves_no_file_and_the_rerun_writes_it(tmp_path, monkeypatch):
    _frames_folder(tmp_path / "frames", 5)
    save_png(tmp_path / "m.png", _frame(0)[1] * 255)
    out = tmp_path / "out"
    args = ["--video", str(tmp_path / "frames"), "--ref", str(tmp_path / "frames" / "f0.png"), "--mask",
            str(tmp_path / "m.png"), "-o", str(out), "--save-video", "mask,cutout", "--fps", "25"]
    from icm_cli.video_out import VideoWriter

    write = VideoWriter.write
    calls = []

    def interrupted_write(self, picture, pts):
        calls.append(pts)
        if len(calls) == 3:  # Ctrl-C while the third picture is encoded
            os.kill(os.getpid(), signal.SIGINT)
        return write(self, picture, pts)

    monkeypatch.setattr(VideoWriter, "write", interrupted_write)
    res = _propagate(*args)
    assert res.exit_code == 130, res.output
    assert "interrupted while writing the videos" in res.output and "rerun" in res.output
    assert not (out / "mask.mov").exists() and not (out / "cutout.mov").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]   # the temporary files went too
    assert len(list((out / "masks").iterdir())) == 5                    # every frame is done

    monkeypatch.setattr(VideoWriter, "write", write)
    monkeypatch.setattr("icm_cli.predictor.Predictor.__init__",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("the model was loaded")))
    rerun = _propagate(*args)  # every frame is skipped: the videos are rebuilt from the PNGs
    assert rerun.exit_code == 0, rerun.output
    assert len(decode(out / "mask.mov")["frames"]) == 5 and len(decode(out / "cutout.mov")["frames"]) == 5
    assert [r["status"] for r in source_records(out / "manifest.jsonl")][-5:] == ["skipped"] * 5


def test_a_rerun_that_recomputes_frames_rebuilds_the_video_and_a_missing_frame_is_named(tmp_path):
    _frames_folder(tmp_path / "frames", 4)
    save_png(tmp_path / "m.png", _frame(0)[1] * 255)
    out = tmp_path / "out"
    args = ["--video", str(tmp_path / "frames"), "--ref", str(tmp_path / "frames" / "f0.png"), "--mask",
            str(tmp_path / "m.png"), "-o", str(out), "--save-video", "mask", "--fps", "25"]
    assert _propagate(*args).exit_code == 0
    first = (out / "mask.mov").stat().st_mtime_ns
    (out / "masks" / "f2.png").unlink()          # as if frame f2 had not been finished
    os.utime(out / "mask.mov", ns=(first - 10**9, first - 10**9))
    rerun = _propagate(*args)
    assert rerun.exit_code == 0, rerun.output
    assert (out / "mask.mov").stat().st_mtime_ns > first - 10**9   # rebuilt with the new f2
    assert len(decode(out / "mask.mov")["frames"]) == 4
    # a frame that cannot be read fails, and the video is not written over
    (tmp_path / "frames" / "f3.png").write_bytes(b"not a png")
    broken = _propagate(*args, "--overwrite")
    assert broken.exit_code == 1, broken.output
    # f3's old mask is still there, but it is not this run's: the video would mix runs
    assert "f3.png" in broken.output and "mask.mov: not written: 1 frame failed" in broken.output
    assert len(decode(out / "mask.mov")["frames"]) == 4  # the earlier complete video is kept
    (out / "masks" / "f3.png").unlink()
    (tmp_path / "frames" / "f3.png").unlink()
    (out / "mask.mov").unlink()
    fewer = _propagate(*args)  # the folder has 3 frames now: a video of 3
    assert fewer.exit_code == 0, fewer.output
    assert len(decode(out / "mask.mov")["frames"]) == 3
