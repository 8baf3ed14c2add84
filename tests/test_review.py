"""`icm review` and the manifest reading behind it (and `status --worst`), on OUT folders the tests write."""

from __future__ import annotations

import html
import json
import os
import re
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.runner.manifest import SourceRecord, below_confidence, least_confident, read_manifests
from tests.conftest import save_png, textured_scene
from tests.review_fixtures import (ODD_NAMES, iso, reference, run_record, standard_out, write_manifest,
                                   write_result)

runner = CliRunner()


def _cards(page: str) -> list[dict]:
    """The result cards of a page, in document order, as their data attributes."""
    found = []
    for attrs in re.findall(r"<article ([^>]*)>", page):
        found.append({k: html.unescape(v) for k, v in re.findall(r'(data-[a-z]+)="([^"]*)"', attrs)})
    return found


# ------------------------------------------------------------------ manifest reading

def test_latest_record_wins_across_manifests_and_skipped_keeps_the_confidence(tmp_path):
    out, src = tmp_path / "out", tmp_path / "src"
    ref = reference(tmp_path)
    a1 = write_result(out, src, "a", 0.2, second=1)
    b1 = write_result(out, src, "b", 0.9, second=2)
    c_old = write_result(out, src, "c", None, second=3, legacy=True)  # before confidences existed
    a_rerun = {**write_result(out, src, "a", 0.8, second=20, run="run0002")}
    b_skip = {**b1, "status": "skipped", "confidence": None, "empty": None, "mask_area": None, "time": iso(21),
              "run": "run0002"}
    write_manifest(out / "manifest.1-of-2.jsonl", [run_record(out, [ref]), a1, '{"input": "cut short'])
    write_manifest(out / "manifest.2-of-2.jsonl", [b1, c_old, "[1, 2]", {"record": "future-kind", "x": 1}])
    write_manifest(out / "manifest.jsonl", [run_record(out, [ref], run="run0002", second=19), a_rerun, b_skip])
    res = read_manifests(out)
    assert sorted(res.manifests) == ["manifest.1-of-2.jsonl", "manifest.2-of-2.jsonl", "manifest.jsonl"]
    assert [r.run for r in res.runs] == ["run0001", "run0002"]
    assert res.unreadable_lines == 2  # the torn line and the JSON that is not an object
    by_stem = {r.stem: r for r in res.records()}
    assert by_stem["a"].confidence == 0.8 and by_stem["a"].run == "run0002"
    assert by_stem["b"].status == "skipped" and by_stem["b"].confidence == 0.9  # inherited from the done run
    assert by_stem["b"].made_by == "run0001"
    assert by_stem["c"].confidence is None
    assert res.counts == {"done": 2, "skipped": 1, "failed": 0}


def test_below_confidence_and_least_confident_known_answers(tmp_path):
    lines = [{"input": "/s/a.jpg", "stem": "a", "status": "done", "confidence": 0.49},
             {"input": "/s/b.jpg", "stem": "b", "status": "done", "confidence": 0.5},
             {"input": "/s/c.jpg", "stem": "c", "status": "skipped", "confidence": 0.1},
             {"input": "/s/d.jpg", "stem": "d", "status": "failed", "confidence": None},
             {"input": "/s/e.jpg", "stem": "e", "status": "done"},                       # older line
             {"input": "/s/f.jpg", "stem": "f", "status": "done", "confidence": "high"},  # not a number
             {"input": "/s/g.jpg", "stem": "g", "status": "done", "confidence": 0.05}]
    recs = [SourceRecord.from_dict(line) for line in lines]
    assert recs[5].confidence is None  # "high" is no confidence
    write_manifest(tmp_path / "manifest.jsonl", lines)
    state = read_manifests(tmp_path)
    assert below_confidence(state, 0.5) == {"/s/g.jpg", "/s/c.jpg", "/s/a.jpg"}
    assert below_confidence(state, 0.0) == set()
    assert [r.stem for r in least_confident(recs, 2)] == ["g", "c"]
    assert [r.stem for r in least_confident(recs, 10)] == ["g", "c", "a", "b"]
    assert least_confident(recs, 0) == []


# ------------------------------------------------------------------ icm review

def test_review_page_shows_every_result_least_confident_first_with_names_escaped(tmp_path):
    out, confs = standard_out(tmp_path)
    res = runner.invoke(app, ["review", str(out)])
    assert res.exit_code == 0, res.output
    assert "8 results (7 done, 0 skipped, 1 failed; 2 below 0.5, 1 without a confidence)" in res.stdout
    page = (out / "review.html").read_text(encoding="utf-8")
    cards = _cards(page)
    # failed first, then by confidence (lowest first), the result without a confidence last
    assert [c["data-name"] for c in cards] == ["broken", ODD_NAMES[0], "frame2", ODD_NAMES[2], ODD_NAMES[3],
                                               ODD_NAMES[1], "frame10", "legacy"]
    assert cards[-1]["data-conf"] == "" and "—" in page
    assert "not an image PIL can read" in page  # the failure's error is on its card
    # names with markup never become markup
    assert "<img src=x onerror" not in page
    assert html.escape(ODD_NAMES[0], quote=True) in page and ODD_NAMES[1] in page
    assert page.count("<script>") == 1
    # thumbnails under OUT, linked relatively; nothing from a network
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert len(srcs) == 7 * 2 + 1  # overlay + heat per done result, one reference
    assert all(s.startswith(".review/thumbs/") and (out / s).is_file() for s in srcs)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    with Image.open(out / srcs[0]) as thumb:
        assert max(thumb.size) <= 320
    # the header: counts, the command, the reference
    assert "icm propagate --ref" in page and "ref_mask.png" in page


def test_review_rerun_reuses_thumbnails_and_remakes_changed_ones(tmp_path):
    out, _ = standard_out(tmp_path)
    assert runner.invoke(app, ["review", str(out)]).exit_code == 0
    res = runner.invoke(app, ["review", str(out)])
    assert "thumbnails 0 made, 9 reused" in res.stdout
    mask = out / "masks" / "frame2.png"
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(mask)
    os.utime(mask, (1e9, 1e9))  # a new mtime even on coarse clocks
    res = runner.invoke(app, ["review", str(out)])
    assert "thumbnails 1 made, 8 reused" in res.stdout


def test_review_below_sets_the_low_line_and_the_old_threshold_name_still_works_with_a_warning(tmp_path):
    out, _ = standard_out(tmp_path)
    res = runner.invoke(app, ["review", str(out), "--below", "0.95"])
    assert res.exit_code == 0, res.output
    assert "below 0.95" in res.stdout and "deprecat" not in res.stderr and "now --below" not in res.stderr
    old = runner.invoke(app, ["review", str(out), "--threshold", "0.95"])
    assert old.exit_code == 0, old.output
    assert old.stdout.split("; thumbnails")[0] == res.stdout.split("; thumbnails")[0]
    assert "--threshold is now --below" in old.stderr
    assert "--threshold" not in runner.invoke(app, ["review", "--help"]).stdout


def test_each_run_shows_its_own_reference_thumbnails(tmp_path):
    out, _ = standard_out(tmp_path)
    pictures = {}
    for name, colour in (("red", (230, 20, 20)), ("blue", (20, 20, 230))):
        img = np.zeros((40, 60, 3), np.uint8)
        img[:] = colour
        mask = np.zeros((40, 60), np.uint8)
        mask[10:30, 20:40] = 255
        pictures[name] = (save_png(tmp_path / f"{name}.png", img), save_png(tmp_path / f"{name}_mask.png", mask))
    first = run_record(out, [pictures["red"]], run="first", second=40)
    first["references"].insert(0, {"image": str(tmp_path / "no_mask_recorded.png")})  # cannot be shown: skipped
    second = run_record(out, [pictures["blue"]], run="second", second=41)
    write_manifest(out / "manifest.1-of-2.jsonl", [first])
    write_manifest(out / "manifest.2-of-2.jsonl", [second])
    assert runner.invoke(app, ["review", str(out)]).exit_code == 0
    page = (out / "review.html").read_text(encoding="utf-8")
    shown = {}
    for block in page.split('<details class="run"')[1:]:
        names = re.findall(r'<figcaption title="[^"]*">([^<]*)<br>', block)
        thumbs = re.findall(r'<img[^>]* src="([^"]+)"', block)
        for name, thumb in zip(names, thumbs):
            with Image.open(out / thumb) as picture:
                r, _, b = np.asarray(picture.convert("RGB"), np.float64).reshape(-1, 3).mean(0)
            shown[name] = "red" if r > b else "blue"
    assert shown == {"red.png": "red", "blue.png": "blue", "ref.jpg": shown.get("ref.jpg")}
    assert "no_mask_recorded" not in page


def test_review_sort_by_name_limit_and_own_output_path(tmp_path):
    out, _ = standard_out(tmp_path)
    page_path = tmp_path / "elsewhere" / "sheet.html"
    res = runner.invoke(app, ["review", str(out), "-o", str(page_path), "--sort", "name", "--limit", "3"])
    assert res.exit_code == 0, res.output
    assert "3 of 8 results" in res.stdout
    page = page_path.read_text(encoding="utf-8")
    names = [c["data-name"] for c in _cards(page)]
    assert names == sorted(names, key=lambda n: [int(t) if t.isdigit() else t.casefold()
                                                 for t in re.split(r"(\d+)", n) if t])[:3]
    assert "showing the first 3 of 8" in page
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert srcs and all(s.startswith("../out/.review/thumbs/") for s in srcs)
    assert (page_path.parent / srcs[0]).is_file()


def test_review_of_a_real_propagate_run_shows_results_without_confidence(tmp_path):
    img, mask = textured_scene(64, 80, (14, 18, 34, 44), seed=1)
    ref = save_png(tmp_path / "ref.png", img)
    ref_mask = save_png(tmp_path / "ref_mask.png", mask * 255)
    for i, box in enumerate([(10, 10, 30, 40), (20, 30, 30, 36)]):
        save_png(tmp_path / "src" / f"s{i}.png", textured_scene(64, 80, box, seed=10 + i)[0])
    (tmp_path / "src" / "junk.png").write_bytes(b"junk")
    out = tmp_path / "out"
    res = runner.invoke(app, ["propagate", "--ref", ref, "--mask", ref_mask, str(tmp_path / "src"), "-o", str(out),
                              "--head-steps", "20", "--size", "128", "--quiet"])
    assert res.exit_code == 1  # the junk file failed
    res = runner.invoke(app, ["review", str(out)])
    assert res.exit_code == 0, res.output
    page = (out / "review.html").read_text(encoding="utf-8")
    cards = _cards(page)
    assert [c["data-status"] for c in cards] == ["failed", "done", "done"]
    if all(c["data-conf"] == "" for c in cards):  # confidences not wired into this runner yet
        assert page.count(">—<") == 3
    else:
        assert all(c["data-conf"] != "" for c in cards[1:])
    assert len(re.findall(r'<img[^>]* src="\.review/thumbs/[^"]+"', page)) >= 4


def test_review_errors_are_one_line_naming_the_file(tmp_path):
    res = runner.invoke(app, ["review", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "nothing: no such folder" in res.output
    res = runner.invoke(app, ["review", str(tmp_path)])
    assert res.exit_code == 2 and "no manifest.jsonl" in res.output
    out, _ = standard_out(tmp_path)
    (tmp_path / "a_file").write_text("x")
    res = runner.invoke(app, ["review", str(out), "-o", str(tmp_path / "a_file" / "page.html")])
    assert res.exit_code == 2 and "a_file" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["review", str(out), "--sort", "size"])
    assert res.exit_code == 2 and "--sort takes confidence or name" in res.output


def test_review_missing_output_files_are_named_and_exit_1(tmp_path):
    out, _ = standard_out(tmp_path)
    (out / "heatmaps" / "frame2.png").write_bytes(b"\x89PNG broken")
    res = runner.invoke(app, ["review", str(out)])
    assert res.exit_code == 1
    assert "frame2.png" in res.output
    page = (out / "review.html").read_text(encoding="utf-8")
    assert len(_cards(page)) == 8  # the page is still written, with what could be shown


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names")
def test_review_survives_undecodable_file_names(tmp_path):
    out, src = tmp_path / "out", tmp_path / "src"
    rec = write_result(out, src, "plain", 0.3)
    raw = os.fsdecode(b"caf\xe9")  # not UTF-8: written as a \udcXX escape
    os.rename(rec["input"], str(src / (raw + ".jpg")))
    rec = {**rec, "input": str(src / (raw + ".jpg")), "stem": "caf_"}
    write_manifest(out / "manifest.jsonl", [json.dumps(rec)])
    res = runner.invoke(app, ["review", str(out)])
    assert res.exit_code == 0, res.output
    page = (out / "review.html").read_bytes().decode("utf-8")  # valid UTF-8
    assert "caf\ufffd.jpg" in page and "caf%E9.jpg" in page


# ------------------------------------------------------------------ status --worst

def test_status_worst_lists_the_least_confident(tmp_path):
    out, _ = standard_out(tmp_path)
    res = runner.invoke(app, ["status", str(out), "--worst", "2"])
    assert "least confident" in res.stdout
    lines = res.stdout.split("least confident")[1].strip().splitlines()[1:]
    assert "0.12" in lines[0] and "0.35" in lines[1] and "frame2" in lines[1]
    data = json.loads(runner.invoke(app, ["status", str(out), "--worst", "3", "--json"]).stdout)
    assert [w["confidence"] for w in data["worst"]] == [0.12, 0.35, 0.5]


def test_review_after_the_fix_loop_shows_both_runs_and_who_made_each_result(tmp_path):
    out, src = tmp_path / "out", tmp_path / "src"
    ref = reference(tmp_path)
    fixed = (src / "b.jpg", out / "masks" / "b.png")
    first = [run_record(out, [ref]), write_result(out, src, "a", 0.9, second=1, seed=1),
             write_result(out, src, "b", 0.2, second=2, seed=2), write_result(out, src, "c", 0.4, second=3, seed=3)]
    second = [run_record(out, [ref, fixed], run="run0002", second=10, extra=["--overwrite", "--only-below", "0.5"]),
              {**first[1], "status": "skipped", "confidence": None, "run": "run0002", "time": iso(11)},
              write_result(out, src, "b", 0.95, second=12, run="run0002", seed=2),
              write_result(out, src, "c", 0.85, second=13, run="run0002", seed=3)]
    write_manifest(out / "manifest.jsonl", first + second)
    assert below_confidence(read_manifests(out), 0.5) == set()  # nothing left to rerun
    res = runner.invoke(app, ["review", str(out)])
    assert res.exit_code == 0, res.output
    page = (out / "review.html").read_text(encoding="utf-8")
    cards = {c["data-name"]: c for c in _cards(page)}
    assert [c["data-name"] for c in _cards(page)] == ["c", "a", "b"]
    assert cards["a"]["data-conf"] == "0.9000"  # skipped in run 2, made (and scored) by run 1
    for name, run in (("a", "run 1"), ("b", "run 2"), ("c", "run 2")):
        card = page[page.index(f'data-name="{name}"'):]
        assert f'class="tag t-run" title="the run that made this result">{run}<' in card[:card.index("</article>")]
    assert page.count('<pre class="cmd">') == 2 and "--only-below 0.5" in page


def test_below_confidence_gives_absolute_inputs_for_only_below(tmp_path, monkeypatch):
    out, src = tmp_path / "out", tmp_path / "src"
    ref = reference(tmp_path)
    rel = write_result(out, src, "rel", 0.1, second=2)
    rel["input"] = "src/rel.jpg"  # recorded relative to the run's cwd (tmp_path)
    write_manifest(out / "manifest.jsonl", [run_record(out, [ref]), write_result(out, src, "low", 0.3, second=1),
                                            rel, write_result(out, src, "high", 0.8, second=3)])
    monkeypatch.chdir(out)  # not where the run was started
    assert below_confidence(read_manifests(out), 0.5) == {str(src / "low.jpg"), str(src / "rel.jpg")}
    assert below_confidence(read_manifests(out), 0.05) == set()


def test_review_of_a_resumed_video_run_shows_every_frame(tmp_path):
    frames = tmp_path / "frames"
    for i in range(3):
        save_png(frames / f"{i:03d}.png", textured_scene(64, 80, (20, 10 + 10 * i, 30, 36), seed=40 + i)[0])
    img, mask = textured_scene(64, 80, (20, 10, 30, 36), seed=40)
    ref, ref_mask = save_png(tmp_path / "ref.png", img), save_png(tmp_path / "ref_mask.png", mask * 255)
    out = tmp_path / "out"
    args = ["propagate", "--video", str(frames), "--ref", ref, "--mask", ref_mask, "-o", str(out),
            "--head-steps", "20", "--size", "128", "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, args).exit_code == 0  # the rerun skips every frame (recorded with the folder as input)
    res = runner.invoke(app, ["review", str(out)])
    assert res.exit_code == 0, res.output
    page = (out / "review.html").read_text(encoding="utf-8")
    assert sorted(c["data-name"] for c in _cards(page)) == ["000", "001", "002"]
    assert len(re.findall(r'<img class="ov"', page)) == 3 and len(re.findall(r'<img class="hm"', page)) == 3
    assert page.count('title="open the source"') == 3  # each frame found in the folder the skips name


def test_the_fix_loop_end_to_end_recomputes_only_the_results_under_the_line(small_scene, tmp_path):
    """propagate writes confidences; a corrected mask as one more reference plus --only-below
    redoes just the results under the line, and status/review see the new run."""
    from tests.conftest import propagate_args, source_records

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.open(small_scene / "src" / f"s{i}.png").save(src / f"s{i}.png")
    clutter = np.random.default_rng(5).integers(0, 255, (72, 96, 3), dtype=np.uint8)
    save_png(src / "z_noise.png", clutter)  # no object at all: the result to distrust
    out = tmp_path / "out"
    assert runner.invoke(app, propagate_args(small_scene, str(src), "-o", str(out))).exit_code == 0
    first = {r["stem"]: r["confidence"] for r in source_records(out / "manifest.jsonl")}
    assert all(0.0 <= c <= 1.0 for c in first.values())
    line = sorted(first.values())[1]  # between the least confident result and the rest
    low = {s for s, c in first.items() if c < line}
    fixed = tmp_path / "fixed.png"
    save_png(fixed, np.zeros((72, 96), np.uint8) + np.pad(np.full((20, 20), 255, np.uint8), ((26, 26), (38, 38))))
    res = runner.invoke(app, propagate_args(small_scene, "--ref", str(src / "s0.png"), "--mask", str(fixed),
                                            str(src), "-o", str(out), "--only-below", str(line)))
    assert res.exit_code == 0, res.output
    second = source_records(out / "manifest.jsonl")[4:]
    # under the line, and s0: a reference now, whose result is the corrected mask as given
    assert {r["stem"] for r in second if r["status"] == "done"} == low | {"s0"}
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "s0.png")), np.asarray(Image.open(fixed)))
    status = runner.invoke(app, ["status", str(out), "--worst", "1", "--json"])
    assert json.loads(status.stdout)["done"] == 4
    review = runner.invoke(app, ["review", str(out), "-q"])
    assert review.exit_code == 0 and (out / "review.html").is_file()
