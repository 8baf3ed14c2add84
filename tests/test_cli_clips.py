"""Video files as first-class as folders of frames: settings check, instant rerun, status, review,
truncated and empty clips, a full disk while a video is encoded, and clips where they do not belong.

Every clip is written by the test with PyAV: 64x48, a few frames, an object sliding right.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from tests.conftest import run_records, save_png, source_records, textured_scene, write_clip

av = pytest.importorskip("av")

runner = CliRunner()
H, W = 48, 64
FRAMES = 6
FAST = ["--head-steps", "10", "--size", "96", "--no-edges"]


def _frame(i: int) -> tuple[np.ndarray, np.ndarray]:
    return textured_scene(H, W, (12, 4 + 4 * i, 24, 28), seed=200 + i)


def make_clip(path: Path, count: int = FRAMES, *, every_frame_a_keyframe: bool = False) -> Path:
    """An MP4 with its index first (``faststart``), as cameras and editors write them, so a copy cut
    short still opens and promises all ``count`` frames."""
    # every frame a keyframe: frames of about equal size, so a cut in half keeps about half of them
    return write_clip(path, [_frame(i)[0] for i in range(count)], 10, options={"movflags": "faststart"},
                      gop_size=1 if every_frame_a_keyframe else None)


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _propagate(clip: Path, out: Path, *args: str, ref: str | None = None, mask: Path | None = None):
    mask = mask or clip.parent / "first_mask.png"
    return runner.invoke(app, ["propagate", "--video", str(clip), "--ref", ref or f"{clip}@0", "--mask", str(mask),
                               "-o", str(out), *FAST, *args])


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


class _NoModel:
    """Stands in for the predictor: a run that builds the model fails the test."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("the model was built")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished clip run with ``--save-video mask``; the progress bar's total, as the run asked for it."""
    root = tmp_path_factory.mktemp("clip")
    clip = make_clip(root / "clip.mp4")
    save_png(root / "first_mask.png", _frame(0)[1] * 255)
    asked = []

    def progress_bar(total, description, enabled):
        asked.append(total)
        from icm_cli.console import progress_bar as real
        return real(total, description, enabled)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("icm_cli.commands.propagate.progress_bar", progress_bar)
        res = _propagate(clip, root / "out", "--save-video", "mask", "--quiet")
    assert res.exit_code == 0, res.output
    return root, clip, root / "out", asked


@pytest.fixture
def rerun_out(finished, tmp_path):
    """A copy of the finished run's OUT to rerun into (the clip stays where it is, so inputs match)."""
    root, clip, out, _ = finished
    copy = root / f"rerun-{tmp_path.name}"
    shutil.copytree(out, copy, copy_function=shutil.copy2)
    yield clip, copy
    shutil.rmtree(copy, ignore_errors=True)


# ------------------------------------------------------------------ settings of a rerun

def test_a_clip_run_counts_its_frames_for_the_progress_bar(finished):
    _, _, out, asked = finished
    assert asked == [FRAMES]  # a total (and so an ETA), not "6/?"
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:05d}.png" for i in range(FRAMES)]


@pytest.mark.parametrize("change, said", [
    (["--size", "64"], "model.size: 96 -> 64"),
    (["--decoder", "none"], "model.decoder"),
    (["--no-motion"], "video.motion: True -> False"),
    (["--kernel", "10"], "outputs.kernel"),
    (["@5"], "references changed"),
])
def test_a_clip_rerun_with_another_setting_is_refused_before_the_model_loads(rerun_out, monkeypatch, change, said):
    clip, out = rerun_out
    monkeypatch.setattr("icm_cli.predictor.Predictor", _NoModel)
    manifest = (out / "manifest.jsonl").read_text(encoding="utf-8")
    if change == ["@5"]:  # the same mask, said to be drawn on frame 5
        res = _propagate(clip, out, ref=f"{clip}@5")
    else:
        res = _propagate(clip, out, *change)
    assert res.exit_code == 2, res.output
    assert _errors(res.output) == [line for line in _errors(res.output) if "other settings" in line]
    assert "holds results made with other settings" in res.output and said in res.output
    assert "--overwrite" in res.output
    assert (out / "manifest.jsonl").read_text(encoding="utf-8") == manifest  # nothing recorded, nothing written


def test_a_clip_rerun_with_another_setting_and_overwrite_recomputes_every_frame(rerun_out):
    clip, out = rerun_out
    res = _propagate(clip, out, "--kernel", "10", "--overwrite", "--json")
    assert res.exit_code == 0, res.output
    statuses = [r["status"] for r in source_records(out / "manifest.jsonl")][-FRAMES:]
    assert statuses == ["done"] * FRAMES
    assert run_records(out / "manifest.jsonl")[-1]["settings"]["outputs"]["kernel"] == 10


# ------------------------------------------------------------------ the instant rerun

def test_an_instant_rerun_of_a_finished_clip_loads_no_model_and_repeats_no_warning(rerun_out, monkeypatch):
    clip, out = rerun_out
    monkeypatch.setattr("icm_cli.predictor.Predictor", _NoModel)
    video = out / "mask.mov"
    made = video.stat().st_mtime_ns
    res = _propagate(clip, out, "--save-video", "mask")
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines() == [re.search(r"0 frames written, 6 skipped.*", res.output)[0]]
    assert "warning" not in res.output
    assert video.stat().st_mtime_ns == made  # newer than every PNG: nothing to encode
    records = source_records(out / "manifest.jsonl")[-FRAMES:]
    assert [r["status"] for r in records] == ["skipped"] * FRAMES


def test_a_rerun_rebuilds_a_video_older_than_its_pngs_without_the_model(rerun_out, monkeypatch):
    clip, out = rerun_out
    monkeypatch.setattr("icm_cli.predictor.Predictor", _NoModel)
    video = out / "mask.mov"
    old = video.stat().st_mtime
    os.utime(video, (old - 60, old - 60))  # the masks were recomputed since (by a run without --save-video)
    res = _propagate(clip, out, "--save-video", "mask")
    assert res.exit_code == 0, res.output
    assert "mask.mov: 6 frames" in res.output
    assert video.stat().st_mtime > old - 1


# ------------------------------------------------------------------ status and review

def test_status_of_a_clip_counts_its_frames(finished):
    _, clip, out, _ = finished
    res = runner.invoke(app, ["status", str(out), str(clip)])
    assert res.exit_code == 0, res.output
    assert f"{FRAMES} done, 0 skipped (already there), 0 failed, 0 pending of {FRAMES} sources" in res.output


def test_status_of_a_clip_with_frames_left_names_them_pending(finished, tmp_path):
    _, _, out, _ = finished
    longer = make_clip(tmp_path / "clip.mp4", count=FRAMES + 2)
    partial = tmp_path / "out"
    shutil.copytree(out, partial)
    manifest = partial / "manifest.jsonl"  # the run's records, as if this longer clip had been run
    manifest.write_text(manifest.read_text(encoding="utf-8").replace(str(out.parent / "clip.mp4"), str(longer)),
                        encoding="utf-8")
    res = runner.invoke(app, ["status", str(partial), str(longer), "--json"])
    import json
    data = json.loads(res.stdout)
    assert res.exit_code == 1 and (data["done"], data["pending"]) == (FRAMES, 2)
    assert data["pending_inputs"] == [f"{longer}#{FRAMES}", f"{longer}#{FRAMES + 1}"]


def test_review_of_a_rerun_clip_counts_kept_results_done_and_shows_each_frame(rerun_out, monkeypatch):
    clip, out = rerun_out
    monkeypatch.setattr("icm_cli.predictor.Predictor", _NoModel)
    assert _propagate(clip, out, "--quiet").exit_code == 0  # a rerun: every frame skipped
    res = runner.invoke(app, ["review", str(out)])
    assert res.exit_code == 0, res.output
    assert f"({FRAMES} done ({FRAMES} of them in earlier runs), 0 skipped, 0 failed" in res.stdout
    page = (out / "review.html").read_text(encoding="utf-8")
    assert re.search(rf'class="k k-done"[^>]*><b>{FRAMES}</b> done', page)
    assert re.search(r'class="k k-skipped"[^>]*><b>0</b> skipped', page)
    assert 'href="../clip.mp4"' in page  # a card's source is the clip
    thumbs = sorted((out / ".review" / "thumbs").glob("*.o.jpg"))
    frames = decoded_frames(clip)
    # Each card's picture is its frame under the mask, not the mask on flat grey: outside the
    # (tinted) mask the thumbnail is the frame's own pixels, up to JPEG.
    matched = set()
    for thumb in thumbs:
        picture = np.asarray(Image.open(thumb).convert("RGB")).astype(float)
        assert picture.shape[:2] == (H, W)  # smaller than the thumbnail box: kept as it is
        errors = []
        for index, frame in enumerate(frames):
            mask = np.asarray(Image.open(out / "masks" / f"{index:05d}.png")) > 127
            away = _grow(mask, 3) == 0  # outside the tint and the outline
            errors.append(np.abs(picture[away] - frame[away]).mean())
        best = int(np.argmin(errors))
        assert errors[best] < 12, errors
        matched.add(best)
    assert matched == set(range(FRAMES))


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    import cv2
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8))


# ------------------------------------------------------------------ broken clips

def test_a_truncated_clip_is_one_error_line_and_keeps_the_frames_it_holds(tmp_path):
    whole = make_clip(tmp_path / "whole.mp4", count=10, every_frame_a_keyframe=True)
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    save_png(tmp_path / "first_mask.png", _frame(0)[1] * 255)
    out = tmp_path / "out"
    res = _propagate(cut, out, "--save-video", "mask", "--quiet")
    assert res.exit_code == 1, res.output
    said = [line for line in _errors(res.output) if "holds only" in line]
    assert len(said) == 1 and str(cut) in said[0], res.output
    readable = int(re.search(r"holds only (\d+) readable frames? of 10 promised", said[0])[1])
    assert 0 < readable < 10
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:05d}.png" for i in range(readable)]
    assert not (out / "mask.mov").exists() and not list(out.glob(".*.tmp"))
    records = source_records(out / "manifest.jsonl")
    assert [r["status"] for r in records] == ["done"] * readable + ["failed"]
    # Without --save-video the truncation is the only error line.
    res = _propagate(cut, out, "--quiet")
    assert res.exit_code == 1 and len(_errors(res.output)) == 1 and "truncated: holds only" in res.output, res.output
    assert len(list((out / "masks").iterdir())) == readable  # what was written is kept

    # A reference on a frame the cut-off copy lost says so (before any model loads).
    res = _propagate(cut, tmp_path / "out7", ref=f"{cut}@7")
    assert res.exit_code == 2, res.output
    assert f"{cut}@7: {cut} is truncated: holds only {readable} readable frame" in res.output
    assert "of 10 promised" in res.output


def test_a_clip_whose_header_promises_frames_it_does_not_hold_is_refused(tmp_path):
    whole = make_clip(tmp_path / "whole.mp4")
    data = whole.read_bytes()
    hollow = tmp_path / "hollow.mp4"
    hollow.write_bytes(data[: data.index(b"mdat") + 4])  # the index, then no frame data at all
    with av.open(str(hollow)) as container:
        assert container.streams.video[0].frames == FRAMES  # it does promise them
    save_png(tmp_path / "first_mask.png", _frame(0)[1] * 255)
    res = runner.invoke(app, ["propagate", "--video", str(hollow), "--ref", str(tmp_path / "whole.mp4@0"),
                              "--mask", str(tmp_path / "first_mask.png"), "-o", str(tmp_path / "out"), *FAST])
    assert res.exit_code == 2, res.output
    assert _errors(res.output) == [f"error: {hollow}: holds no frame that can be decoded (its header promises "
                                   f"{FRAMES} frames)"]
    assert not (tmp_path / "out" / "masks").exists()


class _FullDisk:
    """A PyAV output container whose muxer meets a full disk after the first packet."""

    def __init__(self, real):
        self._real, self._packets = real, 0

    def mux(self, packet):
        self._packets += 1
        if self._packets > 1:
            raise av.error.OSError(errno.ENOSPC, "No space left on device")
        return self._real.mux(packet)

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_a_full_disk_while_a_video_is_encoded_stops_with_the_batch_line(rerun_out, monkeypatch):
    clip, out = rerun_out
    (out / "mask.mov").unlink()
    import types

    import icm_cli.video_out as video_out

    real_av = video_out.require_av()
    shim = types.SimpleNamespace(**{k: getattr(real_av, k) for k in ("VideoFrame", "codec", "error")},
                                 open=lambda *a, **k: _FullDisk(real_av.open(*a, **k)))
    monkeypatch.setattr(video_out, "require_av", lambda path="": shim)
    monkeypatch.setattr("icm_cli.predictor.Predictor", _NoModel)
    pngs = sorted((out / "masks").iterdir())
    res = _propagate(clip, out, "--save-video", "mask,overlay", "--quiet")
    assert res.exit_code == 1, res.output
    assert "unexpected" not in res.output
    assert f"stopped: cannot write to {out} (No space left on device)" in res.output
    assert not (out / "mask.mov").exists() and not (out / "overlay.mov").exists()
    assert not list(out.glob(".*.tmp"))  # the half-written video is gone
    assert sorted((out / "masks").iterdir()) == pngs  # the PNGs are kept


# ------------------------------------------------------------------ clips where they do not belong

def test_a_clip_given_as_a_source_asks_for_video_and_leaves_nothing(finished, tmp_path):
    root, clip, _, _ = finished
    out = tmp_path / "out"
    res = runner.invoke(app, ["propagate", str(clip), "--ref", f"{clip}@0", "--mask", str(root / "first_mask.png"),
                              "-o", str(out), *FAST])
    assert res.exit_code == 2, res.output
    assert _errors(res.output) == [f"error: {clip}: is a video file, not an image; did you mean `--video {clip}`? "
                                   "(its frames are then the sources, named 00000.png, 00001.png, ...)"]
    assert not out.exists()
    upper = tmp_path / "CLIP.MOV"  # any video suffix, any case
    shutil.copy(clip, upper)
    res = runner.invoke(app, ["propagate", str(tmp_path / "first.png"), str(upper), "--ref", f"{clip}@0",
                              "--mask", str(root / "first_mask.png"), "-o", str(out), *FAST])
    assert res.exit_code == 2 and "did you mean `--video" in res.output and not out.exists()


def test_a_whole_clip_as_reference_asks_for_its_frame_and_leaves_nothing(finished, tmp_path):
    root, clip, _, _ = finished
    out = tmp_path / "out"
    res = _propagate(clip, out, ref=str(clip))
    assert res.exit_code == 2, res.output
    assert len(_errors(res.output)) == 1
    assert f"--ref {clip}@0 (frame 0)" in res.output and "@N" in res.output
    assert not out.exists()


def test_frames_are_counted_without_decoding_also_where_the_container_keeps_no_count(tmp_path):
    from icm_cli.video import FrameSequence, probe_frame_count

    for suffix, codec in ((".mkv", "mpeg4"), (".webm", "libvpx-vp9"), (".mp4", "mpeg4")):
        path = tmp_path / f"clip{suffix}"
        write_clip(path, [_frame(i)[0] for i in range(5)], 10, codec)
        with av.open(str(path)) as opened:
            recorded = opened.streams.video[0].frames
        assert recorded == (5 if suffix == ".mp4" else 0), suffix  # Matroska and WebM keep no count
        assert probe_frame_count(path) == 5 == len(decoded_frames(path)), suffix
        assert [s.stem for s in FrameSequence(path).listed_frames()] == [f"{i:05d}" for i in range(5)]


def test_a_clip_over_the_pixel_limit_is_refused_from_its_header_before_any_frame_is_decoded(finished, tmp_path,
                                                                                          monkeypatch):
    root, clip, _, _ = finished
    monkeypatch.setattr("icm_cli.predictor.Predictor", _NoModel)
    res = runner.invoke(app, ["propagate", "--video", str(clip), "--ref", str(root / "first_mask.png"),
                              "--mask", str(root / "first_mask.png"), "-o", str(tmp_path / "out"),
                              "--max-pixels", "1000", *FAST])
    assert res.exit_code == 2, res.output
    assert _errors(res.output) == [f"error: {clip}: 64x48 = 3072 pixels a frame is over the limit of 1000 "
                                   "(raise it with --max-pixels)"]
