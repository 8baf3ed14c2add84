"""`icm propagate --video` with the memory of segmented frames: an object whose look changes over the
clip is kept where frames matched against the reference alone lose it; keyframes; resume identity;
the memory's options refused out of range."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from tests.conftest import FAST, save_png, source_records

runner = CliRunner()
H, W = 72, 96


def _background(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """The textured green-grey ground of conftest's ``textured_scene``."""
    return np.stack([90 + 30 * np.sin(xx / 7.0), 120 + 25 * np.cos(yy / 5.0), 90 + 20 * np.sin((xx + yy) / 9.0)], -1)


def _look_a(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """The object's look in frame 0: red stripes (``textured_scene``'s object)."""
    return np.stack([200 + 30 * np.sin(xx / 3.0), 40 + 20 * np.cos(yy / 2.0), 50 + 15 * np.sin(xx / 2.0)], -1)


def _look_b(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """The look it turns to: a coarse checker in the background's own colours, so a frame matched
    against frame 0 alone finds nothing like the object in it."""
    checker = (((yy // 4) + (xx // 4)) % 2) * 2 - 1
    return np.stack([95 + 40 * checker, 125 - 40 * checker, 95 + 40 * checker], -1)


def turning_clip(count: int = 40, step: float = 0.5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` frames ``([H, W, 3]`` uint8, ``[H, W]`` bool truth): an ellipse drifting right by ``step``
    pixels a frame whose texture blends from look A to look B over the first 60% of the clip, then
    stays B (an object that turns to show another side)."""
    yy, xx = np.mgrid[0:H, 0:W]
    frames = []
    for i in range(count):
        rng = np.random.default_rng(seed + i)
        img = _background(yy, xx) + rng.normal(0, 6, (H, W, 3))
        t = min(1.0, i / (0.6 * count))
        shift = step * i
        inside = ((yy - 36) / 20) ** 2 + ((xx - 30 - shift) / 22) ** 2 <= 1.0
        look = (1 - t) * _look_a(yy, xx - shift) + t * _look_b(yy, xx - shift)  # the texture moves with it
        img[inside] = look[inside] + rng.normal(0, 6, (int(inside.sum()), 3))
        frames.append((np.clip(img, 0, 255).astype(np.uint8), inside))
    return frames


def _write_frames(folder, frames) -> None:
    for i, (img, _) in enumerate(frames):
        save_png(folder / f"{i:05d}.png", img)


def _drawn(truth: np.ndarray) -> np.ndarray:
    """A keyframe's mask as a person draws it: the object with a notch cut out, so no prediction gives
    it pixel for pixel. 0/1 uint8."""
    mask = truth.astype(np.uint8).copy()
    ys, xs = np.nonzero(mask)
    cy, cx = int(ys.mean()), int(xs.mean())
    mask[cy - 3:cy + 3, cx:] = 0
    return mask


def _propagate(*args):
    return runner.invoke(app, ["propagate", *args, *FAST])


def _mask(path) -> np.ndarray:
    return np.asarray(Image.open(path)) > 127


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))


def _statuses(output: str) -> list[str]:
    return [json.loads(line)["status"] for line in output.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def turning(tmp_path_factory):
    """The 40-frame turning clip as ``frames/00000.png`` ..., frame 0's mask as ``m0.png``; the truths."""
    root = tmp_path_factory.mktemp("turning")
    frames = turning_clip()
    _write_frames(root / "frames", frames)
    save_png(root / "m0.png", frames[0][1].astype(np.uint8) * 255)
    return root, [truth for _, truth in frames]


def test_the_memory_keeps_an_object_that_changes_its_look_where_frame_0_alone_loses_it(turning, tmp_path):
    """Measured when written (72x96, FAST settings, the last 10 frames' mean IoU): --video with
    --readout-weight 0.5 0.88 (0.86 to 0.88 over drifts of 0, 0.5 and 1 px a frame, and with the features
    themselves as keys), --video without the memory 0.21, independent frames 0.19. At the defaults (the
    readout only in the decoder's prior, chosen on DAVIS dev) the decoder outvotes it here: 0.22."""
    root, truths = turning
    ref = ["--ref", str(root / "frames" / "00000.png"), "--mask", str(root / "m0.png")]
    runs = {"memory": ["--video", str(root / "frames"), "--readout-weight", "0.5"],
            "no memory": ["--video", str(root / "frames"), "--readout-weight", "0", "--readout-prior", "0"],
            "independent": [str(root / "frames")]}
    last = {}
    for name, args in runs.items():
        res = _propagate(*ref, *args, "-o", str(tmp_path / name))
        assert res.exit_code == 0, (name, res.output)
        ious = [_iou(_mask(tmp_path / name / "masks" / f"{i:05d}.png"), truths[i]) for i in range(len(truths))]
        assert min(ious[:10]) > 0.8, (name, ious[:10])  # while the object still looks as in frame 0 all find it
        last[name] = float(np.mean(ious[-10:]))
    assert last["memory"] > 0.7, last
    assert last["no memory"] < 0.45 and last["independent"] < 0.45, last
    assert last["memory"] - max(last["no memory"], last["independent"]) > 0.3, last


def test_keyframes_are_their_masks_and_the_frames_after_the_later_one_are_predicted(turning, tmp_path):
    root, truths = turning
    frames = tmp_path / "frames"
    shutil.copytree(root / "frames", frames)
    for i in range(30, len(truths)):  # a shorter clip: 0 ... 29, a keyframe at 25
        (frames / f"{i:05d}.png").unlink()
    m0, m25 = _drawn(truths[0]), _drawn(truths[25])
    save_png(tmp_path / "m0.png", m0 * 255)
    save_png(tmp_path / "m25.png", m25 * 255)
    out = tmp_path / "out"
    res = _propagate("--video", str(frames), "--ref", str(frames / "00000.png"), "--mask", str(tmp_path / "m0.png"),
                     "--ref", str(frames / "00025.png"), "--mask", str(tmp_path / "m25.png"), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "00000.png")), m0 * 255)
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "00025.png")), m25 * 255)
    records = {r["stem"]: r for r in source_records(out / "manifest.jsonl")}
    assert sorted(records) == [f"{i:05d}" for i in range(30)]
    assert records["00000"]["from_reference"] and records["00025"]["from_reference"]
    for i in range(26, 30):  # after the later keyframe: predicted, and the object (look B by now) is found
        record = records[f"{i:05d}"]
        assert not record.get("from_reference") and record["status"] == "done", record
        assert _iou(_mask(out / "masks" / f"{i:05d}.png"), truths[i]) > 0.7, i


def test_keyframes_of_a_video_file_are_named_by_frame_number(tmp_path):
    """``--ref clip.mp4@N``: the frame the sequence decodes as N is that keyframe."""
    pytest.importorskip("av")
    from tests.conftest import write_clip

    frames = turning_clip(count=12, step=1.0, seed=7)
    clip = write_clip(tmp_path / "clip.mp4", [img for img, _ in frames], 10)
    m0, m8 = _drawn(frames[0][1]), _drawn(frames[8][1])
    save_png(tmp_path / "m0.png", m0 * 255)
    save_png(tmp_path / "m8.png", m8 * 255)
    out = tmp_path / "out"
    res = _propagate("--video", str(clip), "--ref", f"{clip}@0", "--mask", str(tmp_path / "m0.png"),
                     "--ref", f"{clip}@8", "--mask", str(tmp_path / "m8.png"), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "00000.png")), m0 * 255)
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "00008.png")), m8 * 255)
    records = {r["stem"]: r for r in source_records(out / "manifest.jsonl")}
    assert [stem for stem, r in sorted(records.items()) if r.get("from_reference")] == ["00000", "00008"]
    assert all(records[f"{i:05d}"]["status"] == "done" and _mask(out / "masks" / f"{i:05d}.png").any()
               for i in range(9, 12))


def test_a_resumed_run_with_the_memory_gives_the_masks_of_an_uninterrupted_one(tmp_path):
    frames = turning_clip(count=20, step=1.0, seed=50)
    _write_frames(tmp_path / "frames", frames)
    save_png(tmp_path / "m0.png", frames[0][1].astype(np.uint8) * 255)
    # every 3rd frame takes a slot, two are kept: frames 12 and 9 (and the references) hold the memory at frame 15
    common = ["--video", str(tmp_path / "frames"), "--ref", str(tmp_path / "frames" / "00000.png"),
              "--mask", str(tmp_path / "m0.png"), "--memory", "2", "--memory-every", "3", "--save", "masks,trimaps"]
    full = tmp_path / "full"
    assert _propagate(*common, "-o", str(full)).exit_code == 0
    part = tmp_path / "part"
    shutil.copytree(full, part)
    for kind in ("masks", "trimaps"):  # "interrupted" after frame 12
        for i in range(13, 20):
            (part / kind / f"{i:05d}.png").unlink()
    res = _propagate(*common, "-o", str(part), "--json")
    assert res.exit_code == 0, res.output
    assert _statuses(res.stdout) == ["skipped"] * 13 + ["done"] * 7
    for kind in ("masks", "trimaps"):
        for i in range(13, 20):
            name = f"{i:05d}.png"
            assert (full / kind / name).read_bytes() == (part / kind / name).read_bytes(), (kind, name)


def test_resume_identity_holds_when_the_object_left_the_frames_that_would_have_taken_slots(tmp_path):
    """The object is out of frames 9-16: no slot is taken there, and a run resumed at frame 17 (which
    replays frames 10-16) holds the same memory as the uninterrupted one (the slots of frames 3 and 6
    left by age, in both)."""
    from tests.conftest import textured_scene

    count = 22
    for i in range(count):
        box = (18, 10 + 2 * (i % 9), 36, 40) if not 9 <= i <= 16 else (0, 0, 1, 1)  # 1 px: no object
        img, mask = textured_scene(H, W, box, seed=300 + i)
        save_png(tmp_path / "frames" / f"{i:05d}.png", img)
        if i == 0:
            save_png(tmp_path / "m0.png", mask * 255)
    common = ["--video", str(tmp_path / "frames"), "--ref", str(tmp_path / "frames" / "00000.png"),
              "--mask", str(tmp_path / "m0.png"), "--memory", "2", "--memory-every", "3", "--readout-weight", "0.5"]
    full = tmp_path / "full"
    assert _propagate(*common, "-o", str(full)).exit_code == 0
    # (with the readout in the probability: at the defaults the prior-reading decoder keeps a phantom here)
    assert not any(_mask(full / "masks" / f"{i:05d}.png").any() for i in range(9, 17))  # found gone
    assert all(_mask(full / "masks" / f"{i:05d}.png").any() for i in range(17, count))  # and back
    part = tmp_path / "part"
    shutil.copytree(full, part)
    for i in range(17, count):
        (part / "masks" / f"{i:05d}.png").unlink()
    res = _propagate(*common, "-o", str(part), "--json")
    assert res.exit_code == 0, res.output
    assert _statuses(res.stdout) == ["skipped"] * 17 + ["done"] * (count - 17)
    for i in range(17, count):
        name = f"{i:05d}.png"
        assert (full / "masks" / name).read_bytes() == (part / "masks" / name).read_bytes(), name


@pytest.mark.parametrize("option, value", [("--memory-every", "0"), ("--readout-weight", "2"), ("--readout-prior", "1.5"),
                                           ("--readout-weight", "-0.5"), ("--memory", "-1")])
def test_memory_options_out_of_range_are_refused(tmp_path, option, value):
    frames = turning_clip(count=2)
    _write_frames(tmp_path / "frames", frames)
    save_png(tmp_path / "m0.png", frames[0][1].astype(np.uint8) * 255)
    out = tmp_path / "out"
    res = _propagate("--video", str(tmp_path / "frames"), "--ref", str(tmp_path / "frames" / "00000.png"),
                     "--mask", str(tmp_path / "m0.png"), "-o", str(out), option, value)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0], res.output
    assert not out.exists()


def test_a_rerun_with_other_memory_settings_is_refused(tmp_path):
    """The masks written so far were made with one memory; a resume with another would mix two."""
    frames = turning_clip(count=3)
    _write_frames(tmp_path / "frames", frames)
    save_png(tmp_path / "m0.png", frames[0][1].astype(np.uint8) * 255)
    out = tmp_path / "out"
    common = ["--video", str(tmp_path / "frames"), "--ref", str(tmp_path / "frames" / "00000.png"),
              "--mask", str(tmp_path / "m0.png"), "-o", str(out)]
    settings = {"--memory": "2", "--memory-every": "3", "--readout-weight": "0.5"}

    def flags(**changed):
        return [part for option, value in {**settings, **changed}.items() for part in (option, value)]

    assert _propagate(*common, *flags()).exit_code == 0
    (out / "masks" / "00002.png").unlink()  # an unfinished run
    for change, needle in (({"--memory-every": "5"}, "video.memory_every: 3 -> 5"),
                           ({"--memory": "1"}, "video.memory: 2 -> 1"),
                           ({"--readout-weight": "0.2"}, "video.readout_weight: 0.5 -> 0.2")):
        res = _propagate(*common, *flags(**change))
        assert res.exit_code == 2, res.output
        line = " ".join(res.output.split())
        assert "other settings" in line and needle in line, (needle, res.output)
        assert not (out / "masks" / "00002.png").exists()
    assert _propagate(*common, *flags()).exit_code == 0 and (out / "masks" / "00002.png").exists()
