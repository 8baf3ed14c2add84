"""A newcomer's first hour (issue 12): usage errors, help, names, early refusals, honest summaries."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from tests.conftest import FAST, propagate_args, run_records, save_png, source_records

runner = CliRunner()
COMMANDS = ["propagate", "trimap", "refine", "matte", "inspect-attn", "eval", "status", "review", "backbones", "train"]


@pytest.fixture(scope="module")
def scene(small_scene):
    return small_scene


def _propagate(scene, *args, input=None):
    return runner.invoke(app, propagate_args(scene, *args), input=input)


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a run builds the model: these answers must come before it loads."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("icm_cli.predictor.Predictor.__init__", refuse)


# ------------------------------------------------------------------ usage errors and help

def _icm_entry_point() -> list[str]:
    exe = Path(sys.executable).with_name("icm")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "icm_cli"]


@pytest.mark.parametrize("args, words", [(["propagate", "x.png", "--ref", "r.png", "--mask", "m.png"], "--output"),
                                        (["propagate", "--size", "10", "-o", "o"], "--size"),
                                        (["propagate", "--bogus"], "--bogus"),
                                        (["propgate"], "Did you mean")])
def test_the_installed_command_exits_2_on_usage_errors_with_typers_message(args, words):
    proc = subprocess.run(_icm_entry_point() + args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and "unexpected" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("Did you mean") <= 1


def test_version_and_help_do_not_import_torch():
    code = ("import sys; from typer.testing import CliRunner; from icm_cli.cli import app; "
            "r = CliRunner().invoke(app, ['--version']); h = CliRunner().invoke(app, ['propagate', '-h']); "
            "print(r.exit_code, h.exit_code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.split()
    assert out == ["0", "0", "False"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_page_fits_80_columns_without_cut_values(command):
    res = runner.invoke(app, [command, "-h"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"}, terminal_width=80)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in res.output


def test_propagate_help_groups_options_and_names_every_save_kind():
    res = runner.invoke(app, ["propagate", "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    for panel in ("Inputs", "Outputs", "Model", "Quality", "Video", "Scale-out"):
        assert f"─ {panel}" in res.output
    flat = " ".join(res.output.split())
    assert all(kind in flat for kind in ("masks", "trimaps", "heatmaps", "alpha", "cutout"))
    assert "Required." in flat and "--ref" in flat


# ------------------------------------------------------------------ refusing runs that do nothing

def test_an_empty_folder_is_exit_2_with_a_hint_before_the_model_loads(scene, tmp_path, no_model):
    (tmp_path / "empty").mkdir()
    res = _propagate(scene, str(tmp_path / "empty"), "-o", str(tmp_path / "o"))
    assert res.exit_code == 2 and "no images in" in res.output
    nested = tmp_path / "nested"
    for sub in ("a", "b", "c"):
        save_png(nested / sub / "x.png", np.zeros((4, 4, 3), np.uint8))
    res = _propagate(scene, str(nested), "-o", str(tmp_path / "o"))
    assert res.exit_code == 2 and "it has 3 sub-folders; --recursive?" in res.output
    res = _propagate(scene, str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "o"))
    assert res.exit_code == 2 and "missing.jpg: not found" in res.output


def test_a_rerun_with_everything_done_exits_at_once_without_the_model(scene, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert _propagate(scene, str(scene / "src"), "-o", str(out)).exit_code == 0
    monkeypatch.setattr("icm_cli.predictor.Predictor.__init__",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("the model was loaded")))
    res = runner.invoke(app, ["propagate", "--ref", str(scene / "ref.png"), "--mask", str(scene / "ref_mask.png"),
                              str(scene / "src"), "-o", str(out), *FAST[:-1]])
    assert res.exit_code == 0, res.output
    assert "0 images written, 3 skipped (already there)" in res.output
    assert [r["status"] for r in source_records(out / "manifest.jsonl")] == ["done"] * 3 + ["skipped"] * 3


def test_a_rerun_with_other_settings_says_so_instead_of_skipping(scene, tmp_path):
    out = tmp_path / "out"
    assert _propagate(scene, str(scene / "src"), "-o", str(out)).exit_code == 0
    res = runner.invoke(app, ["propagate", "--ref", str(scene / "ref.png"), "--mask", str(scene / "ref_mask.png"),
                              str(scene / "src"), "-o", str(out), "--head-steps", "10", "--size", "128",
                              "--no-edges", "--quiet"])
    assert res.exit_code == 2 and "model.size: 96 -> 128" in res.output and "--overwrite" in res.output
    again = runner.invoke(app, ["propagate", "--ref", str(scene / "ref.png"), "--mask", str(scene / "ref_mask.png"),
                                str(scene / "src"), "-o", str(out), "--head-steps", "10", "--size", "128",
                                "--no-edges", "--quiet", "--overwrite"])
    assert again.exit_code == 0, again.output
    runs = run_records(out / "manifest.jsonl")
    assert [r["settings"]["model"]["size"] for r in runs] == [96, 128]
    assert runs[0]["command"][:2] == ["icm", "propagate"] and "--size" in runs[0]["command"]
    assert runs[0]["references"][0]["mask"] == str(scene / "ref_mask.png")


# ------------------------------------------------------------------ what it says about results

def test_empty_results_are_counted_and_flagged(scene, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["propagate", "--ref", str(scene / "ref.png"), "--mask", str(scene / "ref_mask.png"),
                              str(scene / "src"), "-o", str(out), "--threshold", "1.0", "--head-steps", "0",
                              "--size", "96", "--decoder", "none"])  # the engine's probabilities stay below 1
    assert res.exit_code == 0, res.output
    assert "3 images written (3 empty: object not found)" in res.output
    records = source_records(out / "manifest.jsonl")
    assert [(r["empty"], r["mask_area"]) for r in records] == [(True, 0.0)] * 3
    status = runner.invoke(app, ["status", str(out)])
    assert "3 done (3 empty: object not found)" in status.output


def test_doubtful_reference_masks_are_warned_about(scene, tmp_path):
    img = np.asarray(Image.open(scene / "ref.png"))
    tiny = np.zeros(img.shape[:2], np.uint8)
    tiny[30:32, 40:42] = 255
    save_png(tmp_path / "tiny.png", tiny)
    inverted = 255 - np.asarray(Image.open(scene / "ref_mask.png"))
    save_png(tmp_path / "inverted.png", inverted)
    for mask, words in (("tiny.png", "less than one feature cell"), ("inverted.png", "is it inverted?")):
        res = runner.invoke(app, ["propagate", "--ref", str(scene / "ref.png"), "--mask", str(tmp_path / mask),
                                  str(scene / "src" / "s0.png"), "-o", str(tmp_path / f"out_{mask[:-4]}"), *FAST])
        assert res.exit_code == 0 and "warning:" in res.output and words in res.output, res.output


def test_masks_among_the_sources_are_pointed_out_and_can_be_excluded(scene, tmp_path):
    src = tmp_path / "perseg"
    src.mkdir()
    for i in range(2):
        Image.open(scene / "src" / f"s{i}.png").convert("RGB").save(src / f"cat_0{i}.jpg")
        save_png(src / f"cat_0{i}.png", np.asarray(Image.open(scene / "ref_mask.png")))
    res = runner.invoke(app, ["propagate", "--ref", str(scene / "ref.png"), "--mask", str(scene / "ref_mask.png"),
                              str(src), "-o", str(tmp_path / "a"), *FAST[:-1]])
    assert res.exit_code == 0 and "2 sources look like masks" in res.output and "--exclude" in res.output
    res = _propagate(scene, str(src), "-o", str(tmp_path / "b"), "--exclude", "*.png")
    assert res.exit_code == 0
    assert [r["input"].rsplit("/", 1)[1] for r in source_records(tmp_path / "b" / "manifest.jsonl")] == \
        ["cat_00.jpg", "cat_01.jpg"]


# ------------------------------------------------------------------ names and folders

def test_outputs_keep_file_names_and_every_command_pairs_them(scene, tmp_path):
    src = tmp_path / "shop"
    src.mkdir()
    names = ["cup (1).jpg", "Café's cup.jpg", "photo-1%3Fixlib=rb&ixid=M3w.jpg"]
    for i, name in enumerate(names):
        Image.open(scene / "src" / f"s{i % 2}.png").convert("RGB").save(src / name)
    out = tmp_path / "out"
    res = _propagate(scene, str(src), "-o", str(out))
    assert res.exit_code == 0, res.output
    stems = sorted(Path(n).stem for n in names)
    assert sorted(p.stem for p in (out / "masks").iterdir()) == stems
    tri = runner.invoke(app, ["trimap", str(out / "masks"), "-o", str(tmp_path / "tri"), "--quiet"])
    assert tri.exit_code == 0 and sorted(p.stem for p in (tmp_path / "tri").glob("*.png")) == stems
    matte = runner.invoke(app, ["matte", str(src), "--trimaps", str(tmp_path / "tri"), "-o", str(tmp_path / "alpha"),
                                "--quiet"])
    assert matte.exit_code == 0, matte.output
    ev = runner.invoke(app, ["eval", str(out / "masks"), str(out / "masks"), "--json"])
    assert ev.exit_code == 0 and json.loads(ev.stdout)["scored"] == 3


def test_recursive_runs_mirror_sub_folders_and_eval_scores_them_per_sequence(scene, tmp_path):
    rec = tmp_path / "rec"
    for seq in ("a", "b"):
        for i in range(2):
            Image.open(scene / "src" / f"s{i}.png").save(rec / seq / f"frame{i}.png") if (rec / seq).exists() \
                else ((rec / seq).mkdir(parents=True), Image.open(scene / "src" / f"s{i}.png").save(
                      rec / seq / f"frame{i}.png"))
    out = tmp_path / "out"
    res = _propagate(scene, str(rec), "-r", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert sorted(p.relative_to(out / "masks").as_posix() for p in (out / "masks").rglob("*.png")) == \
        ["a/frame0.png", "a/frame1.png", "b/frame0.png", "b/frame1.png"]
    ev = runner.invoke(app, ["eval", str(out / "masks"), str(out / "masks"), "-r", "--json"])
    assert ev.exit_code == 0 and [s["sequence"] for s in json.loads(ev.stdout)["sequences"]] == ["a", "b"]


def test_readme_quick_start_commands_are_the_ones_documented():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    assert any("-c constraints.txt" in b and "pip install" in b for b in blocks)
    assert any("icm propagate --ref samples/demo/reference.jpg" in b for b in blocks)
    assert 'pip install -c constraints.txt ".[video]"' in readme and "icm-cli[" not in readme
    assert os.path.exists(Path(__file__).resolve().parents[1] / "constraints.txt")
