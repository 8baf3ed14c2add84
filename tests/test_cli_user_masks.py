"""What the user drew is the result: a reference that is also a source gets the user's mask, pixel for pixel.

Each test runs the CLI on images, frame folders and a clip it writes, and
checks what a user would: the mask PNG, the manifest, the note, and that
`icm eval` leaves such results out.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.predict.fullres import mask_to_trimap_u8
from icm_cli.render import overlay
from tests.conftest import FAST, save_png, source_records, textured_scene, write_clip

runner = CliRunner()
KERNEL = 6


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _drawn_mask(truth: np.ndarray) -> np.ndarray:
    """A mask as a person might draw it: the object with a notch cut out and a stray square, so no
    prediction from the model's feature grid would give it pixel for pixel. ``[H, W]`` 0/1 uint8."""
    mask = truth.astype(np.uint8).copy()
    h, w = mask.shape
    mask[h // 2 - 3:h // 2 + 3, :w // 2] = 0
    mask[2:7, w - 9:w - 3] = 1
    return mask


@pytest.fixture
def photos(tmp_path):
    """``photos/ref.png`` (also the reference), ``photos/p0.png``, ``photos/p1.png`` and the drawn mask of ref."""
    img, truth = textured_scene(72, 96, (18, 24, 36, 40), seed=1)
    save_png(tmp_path / "photos" / "ref.png", img)
    for i in range(2):
        s_img, _ = textured_scene(72, 96, (12 + 4 * i, 20 + 6 * i, 36, 40), seed=10 + i)
        save_png(tmp_path / "photos" / f"p{i}.png", s_img)
    return tmp_path, _drawn_mask(truth)


def _propagate(*args, quiet=True):
    return runner.invoke(app, ["propagate", *args, *(FAST if quiet else FAST[:-1])])


def _by_stem(out, manifest="manifest.jsonl") -> dict[str, dict]:
    return {r["stem"]: r for r in source_records(out / manifest)}


@pytest.mark.parametrize("scale", [255, 1], ids=["0-255", "0-1"])
def test_a_photo_among_the_sources_gets_the_users_mask_pixel_for_pixel(photos, scale):
    root, drawn = photos
    save_png(root / "ref_mask.png", drawn * scale)
    out = root / "out"
    res = _propagate("--ref", str(root / "photos" / "ref.png"), "--mask", str(root / "ref_mask.png"),
                     str(root / "photos"), "-o", str(out), "--save", "masks,trimaps,heatmaps,alpha",
                     "--kernel", str(KERNEL), quiet=False)
    assert res.exit_code == 0, res.output
    assert np.array_equal(_png(out / "masks" / "ref.png"), drawn * 255)
    records = _by_stem(out)
    assert records["ref"]["from_reference"] is True and records["ref"]["confidence"] == 1.0
    assert records["ref"]["mask_area"] == pytest.approx(drawn.mean(), abs=1e-6)
    assert "from_reference" not in records["p0"] and records["p0"]["confidence"] < 1.0
    # the other outputs are made from that mask, as for any result
    image = _png(root / "photos" / "ref.png")
    trimap = _png(out / "trimaps" / "ref.png")
    assert np.array_equal(trimap, mask_to_trimap_u8(drawn.astype(np.float32), KERNEL, KERNEL))
    assert np.array_equal(_png(out / "heatmaps" / "ref.png"), overlay(image, drawn.astype(np.float32)))
    alpha = _png(out / "alpha" / "ref.png")
    assert (alpha[trimap == 255] == 255).all() and (alpha[trimap == 0] == 0).all()
    # one short note, and no talk of the result being "found again"
    flat = " ".join(res.output.split())
    assert flat.count("1 source is also a reference: its result is the mask you gave (confidence 1)") == 1
    assert "found again" not in flat and "flatters" not in flat


def test_the_reference_reached_by_another_path_is_still_the_same_photo(photos, monkeypatch):
    root, drawn = photos
    save_png(root / "ref_mask.png", drawn * 255)
    monkeypatch.chdir(root)
    res = _propagate("--ref", "photos/../photos/ref.png", "--mask", "ref_mask.png", str(root / "photos" / "ref.png"),
                     "photos/p0.png", "-o", "out")
    assert res.exit_code == 0, res.output
    assert np.array_equal(_png(root / "out" / "masks" / "ref.png"), drawn * 255)
    assert _by_stem(root / "out")["ref"]["from_reference"] is True


def test_the_fix_loop_writes_the_corrected_mask_exactly(photos):
    root, drawn = photos
    save_png(root / "ref_mask.png", drawn * 255)
    out = root / "out"
    first = ["--ref", str(root / "photos" / "ref.png"), "--mask", str(root / "ref_mask.png"), str(root / "photos"),
             "-o", str(out)]
    assert _propagate(*first).exit_code == 0
    before = _by_stem(out)
    predicted_p1 = _png(out / "masks" / "p1.png")
    p0_before = (out / "masks" / "p0.png").read_bytes()
    # p1 corrected by hand: its predicted mask with a block added, given back as one more reference
    fixed = (predicted_p1 > 127).astype(np.uint8)
    fixed[40:60, 5:20] = 1
    save_png(root / "fixed" / "p1.png", fixed * 255)
    # --only-below 0.01: no earlier result is that unsure, yet the corrected photo is rewritten
    res = _propagate(*first, "--ref", str(root / "photos" / "p1.png"), "--mask", str(root / "fixed" / "p1.png"),
                     "--overwrite", "--only-below", "0.01", "--json")
    assert res.exit_code == 0, res.output
    assert np.array_equal(_png(out / "masks" / "p1.png"), fixed * 255)
    after = _by_stem(out)
    assert after["p1"]["from_reference"] is True and after["p1"]["confidence"] == 1.0
    assert after["p1"]["run"] != before["p1"]["run"]
    assert after["p0"]["run"] == before["p0"]["run"] and (out / "masks" / "p0.png").read_bytes() == p0_before
    # the first reference is a source too: rewritten as well, with the same mask
    assert after["ref"]["from_reference"] is True and np.array_equal(_png(out / "masks" / "ref.png"), drawn * 255)


def test_a_later_mask_of_the_same_photo_wins(photos):
    root, drawn = photos
    save_png(root / "ref_mask.png", drawn * 255)
    corrected = drawn.copy()
    corrected[:10, :10] = 1
    save_png(root / "corrected.png", corrected * 255)
    ref = str(root / "photos" / "ref.png")
    res = _propagate("--ref", ref, "--mask", str(root / "ref_mask.png"), "--ref", ref, "--mask",
                     str(root / "corrected.png"), ref, "-o", str(root / "out"))
    assert res.exit_code == 0, res.output
    assert np.array_equal(_png(root / "out" / "masks" / "ref.png"), corrected * 255)


def test_a_mask_drawn_on_the_stored_pixels_of_a_turned_photo_is_refused_saying_so(tmp_path):
    img, truth = textured_scene(64, 96, (16, 24, 30, 40), seed=3)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees: displayed 64 wide, 96 high
    Image.fromarray(img).save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    save_png(tmp_path / "stored.png", truth * 255)  # drawn on the pixels as stored: 96x64
    displayed = np.rot90(truth, -1)                 # the same mask as a viewer shows the photo
    save_png(tmp_path / "shown.png", np.ascontiguousarray(displayed) * 255)
    photo = str(tmp_path / "turned.jpg")
    bad = _propagate("--ref", photo, "--mask", str(tmp_path / "stored.png"), photo, "-o", str(tmp_path / "bad"))
    assert bad.exit_code == 2 and "as displayed" in bad.output and "draw it on the image as a viewer shows it" in \
        " ".join(bad.output.split())
    good = _propagate("--ref", photo, "--mask", str(tmp_path / "shown.png"), photo, "-o", str(tmp_path / "good"))
    assert good.exit_code == 0, good.output
    assert np.array_equal(_png(tmp_path / "good" / "masks" / "turned.png"), displayed * 255)


# ------------------------------------------------------------------ --video

def _frames(folder, count=5) -> list[np.ndarray]:
    """An object sliding right, one PNG a frame; returns the true masks."""
    truths = []
    for i in range(count):
        img, mask = textured_scene(72, 96, (20, 8 + 8 * i, 30, 36), seed=200 + i)
        save_png(folder / f"{i:05d}.png", img)
        truths.append(mask)
    return truths


def test_video_frame_zero_is_the_users_mask_and_a_resumed_run_matches(tmp_path):
    truths = _frames(tmp_path / "frames")
    drawn = _drawn_mask(truths[0])
    save_png(tmp_path / "first_mask.png", drawn)  # 0/1
    args = ["--video", str(tmp_path / "frames"), "--ref", str(tmp_path / "frames" / "00000.png"),
            "--mask", str(tmp_path / "first_mask.png"), "--save", "masks,trimaps"]
    full = tmp_path / "full"
    res = _propagate(*args, "-o", str(full), quiet=False)
    assert res.exit_code == 0, res.output
    assert "1 frame is also a reference" in " ".join(res.output.split())
    assert np.array_equal(_png(full / "masks" / "00000.png"), drawn * 255)
    records = _by_stem(full)
    assert records["00000"]["from_reference"] is True and records["00000"]["confidence"] == 1.0
    assert not any(records[f"{i:05d}"].get("from_reference") for i in range(1, 5))
    # "interrupted" after frame 0: the rerun starts frame 1 from the written mask, the user's, as the
    # uninterrupted run did, and gives the same masks
    part = tmp_path / "part"
    shutil.copytree(full, part)
    for kind in ("masks", "trimaps"):
        for i in range(1, 5):
            (part / kind / f"{i:05d}.png").unlink()
    res = _propagate(*args, "-o", str(part), "--json")
    assert res.exit_code == 0, res.output
    statuses = [json.loads(line)["status"] for line in res.stdout.splitlines() if line.startswith("{")]
    assert statuses == ["skipped"] + ["done"] * 4
    for kind in ("masks", "trimaps"):
        for i in range(5):
            name = f"{i:05d}.png"
            assert np.array_equal(_png(full / kind / name), _png(part / kind / name)), (kind, name)
    assert _by_stem(part)["00000"]["from_reference"] is True  # skipped, and still the user's mask


def test_video_frames_after_the_reference_start_from_the_users_mask(tmp_path):
    truths = _frames(tmp_path / "frames")
    drawn = _drawn_mask(truths[0])
    save_png(tmp_path / "first_mask.png", drawn * 255)
    shutil.copy(tmp_path / "frames" / "00000.png", tmp_path / "elsewhere.png")  # the same pixels, not a source
    # --memory 0: the memory holds the references and the previous frame only. (With slots, frame 0 set by
    # hand is an ordinary frame that also takes a slot, while a reference among the frames is only the
    # permanent slot it already has: the two runs would hold different memories by design.)
    common = ["--video", str(tmp_path / "frames"), "--mask", str(tmp_path / "first_mask.png"), "--memory", "0"]
    among = tmp_path / "among"
    assert _propagate(*common, "--ref", str(tmp_path / "frames" / "00000.png"), "-o", str(among)).exit_code == 0
    apart = tmp_path / "apart"  # the same context, but frame 0 predicted and frame 1 started from that prediction
    assert _propagate(*common, "--ref", str(tmp_path / "elsewhere.png"), "-o", str(apart)).exit_code == 0
    assert not np.array_equal(_png(apart / "masks" / "00000.png"), drawn * 255)
    assert not np.array_equal(_png(apart / "masks" / "00001.png"), _png(among / "masks" / "00001.png"))
    # frame 0 set to the user's mask by hand and the rest redone: what the run with the reference among
    # its frames gave
    save_png(apart / "masks" / "00000.png", drawn * 255)
    for i in range(1, 5):
        (apart / "masks" / f"{i:05d}.png").unlink()
    res = _propagate(*common, "--ref", str(tmp_path / "elsewhere.png"), "-o", str(apart), "--json")
    assert res.exit_code == 0, res.output
    assert [json.loads(line)["status"] for line in res.stdout.splitlines() if line.startswith("{")] == \
        ["skipped"] + ["done"] * 4
    for i in range(1, 5):
        name = f"{i:05d}.png"
        assert np.array_equal(_png(apart / "masks" / name), _png(among / "masks" / name)), name


def _clip(path, count=5) -> list[np.ndarray]:
    pytest.importorskip("av")
    scenes = [textured_scene(72, 96, (20, 8 + 8 * i, 30, 36), seed=200 + i) for i in range(count)]
    write_clip(path, [img for img, _ in scenes], 5)
    return [mask for _, mask in scenes]


@pytest.mark.parametrize("at,index", [("0", 0), ("0.4s", 2)])
def test_video_file_frame_named_by_the_reference_is_the_users_mask(tmp_path, at, index):
    clip = tmp_path / "clip.mp4"
    truths = _clip(clip)
    drawn = _drawn_mask(truths[index])
    save_png(tmp_path / "mask.png", drawn * 255)
    out = tmp_path / "out"
    res = _propagate("--video", str(clip), "--ref", f"{clip}@{at}", "--mask", str(tmp_path / "mask.png"),
                     "-o", str(out), quiet=False)
    assert res.exit_code == 0, res.output
    assert "1 frame is also a reference" in " ".join(res.output.split())
    assert np.array_equal(_png(out / "masks" / f"{index:05d}.png"), drawn * 255)
    records = _by_stem(out)
    assert sorted(records) == [f"{i:05d}" for i in range(5)]
    assert [s for s, r in records.items() if r.get("from_reference")] == [f"{index:05d}"]
    assert records[f"{index:05d}"]["confidence"] == 1.0


def test_a_frame_of_another_clip_is_no_source_of_this_one(tmp_path):
    clip, other = tmp_path / "clip.mp4", tmp_path / "other.mp4"
    truths = _clip(clip, count=3)
    _clip(other, count=3)
    save_png(tmp_path / "mask.png", truths[0] * 255)
    out = tmp_path / "out"
    res = _propagate("--video", str(clip), "--ref", f"{other}@0", "--mask", str(tmp_path / "mask.png"),
                     "-o", str(out), quiet=False)
    assert res.exit_code == 0, res.output
    assert "also a reference" not in res.output
    assert not any(r.get("from_reference") for r in source_records(out / "manifest.jsonl"))


# ------------------------------------------------------------------ icm eval

def test_eval_leaves_the_users_masks_out_and_says_how_many(photos):
    root, drawn = photos
    save_png(root / "ref_mask.png", drawn * 255)
    out = root / "runs" / "one"
    assert _propagate("--ref", str(root / "photos" / "ref.png"), "--mask", str(root / "ref_mask.png"),
                      str(root / "photos"), "-o", str(out)).exit_code == 0
    gt = root / "gt" / "one"
    for p in (out / "masks").iterdir():  # truth: the predictions themselves (J 1), the reference a different mask
        save_png(gt / p.name, _png(p))
    save_png(gt / "ref.png", np.zeros_like(drawn))
    for pred in (out, out / "masks", root / "runs"):
        args = ["eval", str(pred), str(gt), "--json"] if pred != root / "runs" else \
            ["eval", "-r", str(pred), str(gt.parent), "--json"]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (pred, res.output)
        report = json.loads(res.stdout)
        assert report["scored"] == 2 and report["mean"]["J"] == 1.0, pred
        assert [n.rsplit("/", 1)[-1] for n in report["references_left_out"]] == ["ref"]
        assert "left out 1 result that is the user's own mask" in " ".join(res.stderr.split())
        assert "ref" not in report["unpredicted"] and "one/ref" not in report["unpredicted"]
    kept = runner.invoke(app, ["eval", str(out), str(gt), "--json", "--include-references"])
    assert kept.exit_code == 0, kept.output
    report = json.loads(kept.stdout)
    assert report["scored"] == 3 and report["references_left_out"] == [] and report["mean"]["J"] < 1.0
    assert "left out" not in kept.stderr


# ------------------------------------------------------------------ the parts behind it

def test_a_ray_worker_writes_the_users_mask_as_the_local_engine_does(photos, monkeypatch):
    """The Ray engine's actor, run in this process (no Ray needed): same rule, same record."""
    from icm_cli.engines.ray_engine import PredictWorker

    root, drawn = photos
    save_png(root / "ref_mask.png", drawn * 255)
    monkeypatch.chdir(root)
    # The actor owns its process under Ray and sets torch's grad mode and threads there: put them back here.
    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    try:
        _run_worker(PredictWorker, root, drawn)
    finally:
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)


def _run_worker(PredictWorker, root, drawn):
    from icm_cli.config import ModelConfig, OutputConfig
    from icm_cli.runner.outputs import OutputPlan

    worker = PredictWorker(ModelConfig(device="cpu", size=96, head_steps=10, edges=False),
                           {"refs": ["photos/ref.png"], "masks": ["ref_mask.png"]},
                           OutputPlan(root / "out", OutputConfig(("masks",))), "run1", 1, 1, str(root))
    images = [np.array(Image.open(root / "photos" / name)) for name in ("ref.png", "p0.png")]
    batch = {"path": ["photos/ref.png", "photos/p0.png"], "key": ["ref.png", "p0.png"], "name": ["ref", "p0"],
             "stem": ["ref", "p0"], "image": images, "error": ["", ""], "decode_s": [0.0, 0.0]}
    records = [json.loads(line) for line in worker(batch)["record"]]
    assert [(r["stem"], r.get("from_reference", False)) for r in records] == [("ref", True), ("p0", False)]
    assert np.array_equal(_png(root / "out" / "masks" / "ref.png"), drawn * 255)


def test_user_masks_match_by_file_and_by_clip_frame_and_check_the_size(tmp_path):
    import os

    from icm_cli import io
    from icm_cli.references import Reference
    from icm_cli.runner.user_masks import UserMasks
    from icm_cli.sources import Source

    img = np.zeros((4, 6, 3), np.uint8)
    mask = np.zeros((4, 6), np.float32)
    mask[1:3, 2:5] = 0.6  # thresholded at half range, as masks are read
    save_png(tmp_path / "a.png", img)
    os.link(tmp_path / "a.png", tmp_path / "same.png")  # another name of the same file
    save_png(tmp_path / "b.png", img)
    found = UserMasks([Reference(img, mask, str(tmp_path / "a.png"), "m.png")])

    def source(path):
        return Source(path, path.name, path.stem, path.stem)

    assert found.reference_for(source(tmp_path / "same.png")) is not None
    assert found.reference_for(source(tmp_path / "b.png")) is None
    assert np.array_equal(found.mask_for(source(tmp_path / "a.png"), img), mask >= 0.5)
    with pytest.raises(io.InputError, match=r"a.png: it is a reference, but its mask m.png is 6x4 and the image, "
                                            r"as displayed, is 4x6"):
        found.mask_for(source(tmp_path / "a.png"), np.zeros((6, 4, 3), np.uint8))

    (tmp_path / "clip.mp4").write_bytes(b"")  # only its name and identity are read here

    class Clip:  # what UserMasks reads of a --video clip
        path = tmp_path / "clip.mp4"

        @staticmethod
        def frame_source(index):
            return Source(tmp_path / f"clip#{index}", f"clip#{index}", f"{index:05d}", f"{index:05d}")

    at_7 = Reference(img, mask, f"{tmp_path / 'clip.mp4'}@7", "m.png", frame=7)
    frames = UserMasks([at_7], clip=Clip)
    assert frames.frames == [str(tmp_path / "clip#7")]
    assert frames.reference_for(Clip.frame_source(7)) is not None and frames.reference_for(Clip.frame_source(6)) is None
    assert not UserMasks([at_7])  # no --video clip: a frame reference is no source
