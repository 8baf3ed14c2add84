"""One settings check for every command: a rerun into an OUT made with other settings is refused with what
changed (exit 2, nothing written) or recomputed with --overwrite; the same settings skip, as before.

`trimap`, `refine` and `matte` record their run in OUT/manifest.jsonl as `propagate` does; `propagate`
on images and on a folder of frames (`--video`) is checked here for each setting a user is likely to change.
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from icm_cli.cli import app
from tests.conftest import run_records, save_png, textured_scene

runner = CliRunner()


def _stamp(folder, manifest: bool = False) -> dict:
    """Each PNG under ``folder`` (and with ``manifest`` its manifests) -> (mtime_ns, bytes)."""
    files = sorted(folder.rglob("*.png")) + (sorted(folder.glob("manifest*.jsonl")) if manifest else [])
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


def _refused(res, out, before, *needles):
    """Refused with the diff; no output rewritten and no run record appended (``before`` is :func:`_stamp`'s)."""
    assert res.exit_code == 2, res.output
    line = " ".join(res.output.split())
    assert "holds results made with other settings" in line and "--overwrite" in line, res.output
    for needle in needles:
        assert needle in line, (needle, res.output)
    assert _stamp(out, manifest=True) == before  # refused before any work: nothing rewritten or recorded


# ------------------------------------------------------------------ trimap

def test_trimap_rerun_with_another_kernel_or_other_masks_is_refused(tmp_path):
    for folder in ("masks", "other"):
        save_png(tmp_path / folder / "a.png", textured_scene(40, 50, (10, 10, 20, 25), seed=1)[1] * 255)
    out = tmp_path / "tri"
    base = ["trimap", str(tmp_path / "masks"), "-o", str(out), "-q"]
    assert runner.invoke(app, base).exit_code == 0
    assert run_records(out / "manifest.jsonl")[-1]["settings"]["erode"] == 10
    kept = _stamp(out)
    res = runner.invoke(app, base)  # the same settings: skipped, as before
    assert res.exit_code == 0 and _stamp(out) == kept
    # a file of the same folder is the same input
    assert runner.invoke(app, ["trimap", str(tmp_path / "masks" / "a.png"), "-o", str(out), "-q"]).exit_code == 0
    before = _stamp(out, manifest=True)
    _refused(runner.invoke(app, base + ["--kernel", "4"]), out, before, "erode: 10 -> 4", "dilate: 10 -> 4")
    _refused(runner.invoke(app, base + ["--dilate", "6"]), out, before, "dilate: 10 -> 6")
    _refused(runner.invoke(app, ["trimap", str(tmp_path / "other"), "-o", str(out), "-q"]), out, before, "masks:")
    res = runner.invoke(app, base + ["--kernel", "4", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert _stamp(out) != kept  # recomputed
    assert run_records(out / "manifest.jsonl")[-1]["settings"]["erode"] == 4
    # now the last run is --kernel 4: its rerun keeps its results
    assert runner.invoke(app, base + ["--kernel", "4"]).exit_code == 0


def test_status_and_review_name_the_command_that_made_a_file_command_out(tmp_path):
    save_png(tmp_path / "masks" / "a.png", textured_scene(40, 50, (10, 10, 20, 25), seed=1)[1] * 255)
    out = tmp_path / "tri"
    assert runner.invoke(app, ["trimap", str(tmp_path / "masks"), "-o", str(out), "-q"]).exit_code == 0
    for command in (["status", str(out)], ["review", str(out)]):
        res = runner.invoke(app, command)
        assert res.exit_code == 2, res.output
        assert "made by icm trimap" in " ".join(res.output.split()), res.output


# ------------------------------------------------------------------ matte

def _matte_photos(root):
    rng = np.random.default_rng(0)
    for stem in ("one", "two"):
        image = rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)
        trimap = np.zeros((32, 40), np.uint8)
        trimap[:, 20:] = 255
        trimap[:, 16:24] = 128
        save_png(root / "images" / f"{stem}.png", image)
        save_png(root / "trimaps" / f"{stem}.png", trimap)
        save_png(root / "trimaps2" / f"{stem}.png", np.where(trimap == 128, 255, trimap).astype(np.uint8))
    return root


@pytest.mark.parametrize("change,needle", [
    (["--method", "cf"], "method: sm-cf -> cf"),
    (["--solve-pixels", "2048"], "solve_pixels: 1000000 -> 2048"),
    (["--trimaps", "{root}/trimaps2"], "trimaps:"),
])
def test_matte_rerun_with_another_setting_is_refused_and_overwrite_recomputes(tmp_path, change, needle):
    root = _matte_photos(tmp_path)
    out = root / "alpha"

    def matte(*extra):
        args = ["matte", str(root / "images"), "--trimaps", str(root / "trimaps"), "-o", str(out), "-q"]
        extra = [e.replace("{root}", str(root)) for e in extra]
        if "--trimaps" in extra:  # the changed setting replaces the default trimaps folder
            i = extra.index("--trimaps")
            args[3] = extra[i + 1]
            extra = extra[:i] + extra[i + 2:]
        return runner.invoke(app, args + extra)

    assert matte().exit_code == 0
    kept = _stamp(out)
    assert matte().exit_code == 0 and _stamp(out) == kept               # same settings: kept
    assert matte("--cutout").exit_code == 0                            # a cut-out of the same alphas: not refused
    assert (out / "cutout" / "one.png").is_file()
    before = _stamp(out, manifest=True)
    _refused(matte(*change), out, before, needle)
    cutouts = {p: p.stat().st_ino for p in (out / "cutout").glob("*.png")}
    res = matte(*change, "--overwrite")  # without --cutout: the cut-outs there are remade with their alphas
    assert res.exit_code == 0, res.output
    assert len(cutouts) == 2 and all(p.stat().st_ino != ino for p, ino in cutouts.items())  # a new file each
    record = run_records(out / "manifest.jsonl")[-1]
    assert record["settings"]["command"] == "matte" and "--overwrite" in record["command"]


# ------------------------------------------------------------------ refine

@pytest.fixture
def rough(tmp_path):
    """One photo, its coarse mask in two versions (rough/ and rough_dil/), a reference pair."""
    img, truth = textured_scene(64, 80, (16, 20, 32, 40), seed=3)
    save_png(tmp_path / "images" / "shot.png", img)
    coarse = np.zeros_like(truth)
    coarse[12:52, 16:64] = 1
    save_png(tmp_path / "rough" / "shot.png", coarse * 255)
    dilated = np.zeros_like(truth)
    dilated[8:56, 10:70] = 1
    save_png(tmp_path / "rough_dil" / "shot.png", dilated * 255)
    ref, ref_mask = textured_scene(64, 80, (20, 24, 30, 36), seed=4)
    save_png(tmp_path / "ref.png", ref)
    save_png(tmp_path / "ref_mask.png", ref_mask * 255)
    return tmp_path


def _refine(root, masks="rough", *extra):
    return runner.invoke(app, ["refine", str(root / masks), "--images", str(root / "images"), "-o",
                               str(root / "rint"), "--size", "64", "--head-steps", "5", "-q", *extra])


def test_refine_rerun_from_other_coarse_masks_or_method_is_refused(rough):
    out = rough / "rint"
    res = _refine(rough)
    assert res.exit_code == 0, res.output
    settings = run_records(out / "manifest.jsonl")[-1]["settings"]
    assert settings["command"] == "refine" and settings["method"] == "decoder"  # auto, resolved before loading
    kept = _stamp(out)
    assert _refine(rough).exit_code == 0 and _stamp(out) == kept             # same settings: skipped
    assert _refine(rough, "rough", "--method", "decoder").exit_code == 0       # what auto chose: the same run
    before = _stamp(out, manifest=True)
    _refused(_refine(rough, "rough_dil"), out, before, "masks:", "rough_dil")
    _refused(_refine(rough, "rough", "--method", "attention"), out, before, "method: decoder -> attention")
    _refused(_refine(rough, "rough", "--size", "96"), out, before, "size: 64 -> 96")
    _refused(_refine(rough, "rough", "--head-steps", "6"), out, before, "head_steps: 5 -> 6")
    _refused(_refine(rough, "rough", "--ref", str(rough / "ref.png"), "--mask", str(rough / "ref_mask.png")),
             out, before, "references changed")
    res = _refine(rough, "rough_dil", "--overwrite")
    assert res.exit_code == 0, res.output
    assert _stamp(out) != kept  # recomputed
    assert "rough_dil" in run_records(out / "manifest.jsonl")[-1]["settings"]["masks"]


def test_refine_attention_settings_are_checked_too(rough):
    out = rough / "rint"
    assert _refine(rough, "rough", "--method", "attention", "--iterations", "1").exit_code == 0
    before = _stamp(out, manifest=True)
    _refused(_refine(rough, "rough", "--method", "attention", "--iterations", "2"), out, before,
             "iterations: 1 -> 2")
    _refused(_refine(rough, "rough", "--method", "attention", "--iterations", "1", "--score", "ratio"), out, before,
             "score: classification -> ratio")
    assert _refine(rough, "rough", "--method", "attention", "--iterations", "2", "--overwrite").exit_code == 0


# ------------------------------------------------------------------ propagate: images and a folder of frames

@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Three frames of an object sliding right, a reference (frame 0's mask) and a second reference."""
    root = tmp_path_factory.mktemp("frames")
    for i in range(3):
        img, mask = textured_scene(48, 64, (12, 6 + 6 * i, 20, 26), seed=60 + i)
        save_png(root / "frames" / f"{i:03d}.png", img)
        if i == 0:
            save_png(root / "ref.png", img)
            save_png(root / "ref_mask.png", mask * 255)
    other, other_mask = textured_scene(48, 64, (10, 20, 24, 30), seed=70)
    save_png(root / "ref2.png", other)
    save_png(root / "ref2_mask.png", other_mask * 255)
    return root


_CHANGES = [
    (["--size", "128"], "model.size: 96 -> 128"),
    (["--decoder", "none"], "model.decoder: auto -> none"),
    (["--ref", "{root}/ref2.png", "--mask", "{root}/ref2_mask.png"], "references changed"),
    (["--kernel", "10"], "outputs.kernel: 20 -> 10"),
]


@pytest.mark.parametrize("video", [False, True], ids=["images", "video-folder"])
def test_propagate_rerun_with_each_changed_setting_is_refused(frames, tmp_path, video):
    out = tmp_path / "out"
    inputs = ["--video", str(frames / "frames")] if video else [str(frames / "frames")]
    base = ["propagate", *inputs, "-o", str(out), "--head-steps", "5", "--no-edges", "--quiet"]
    size = ["--size", "96"]
    ref = ["--ref", str(frames / "ref.png"), "--mask", str(frames / "ref_mask.png")]
    res = runner.invoke(app, base + size + ref)
    assert res.exit_code == 0, res.output
    before = _stamp(out, manifest=True)
    changes = _CHANGES + ([(["--no-motion"], "video.motion: True -> False")] if video else [])
    for change, needle in changes:
        change = [c.replace("{root}", str(frames)) for c in change]
        args = base + (change if change[0] == "--size" else size + change)
        if "--ref" not in change:
            args += ref
        _refused(runner.invoke(app, args), out, before, needle)
    res = runner.invoke(app, base + size + ref + ["--no-motion" if video else "--kernel", *([] if video else ["10"]),
                                                  "--overwrite"])
    assert res.exit_code == 0, res.output
