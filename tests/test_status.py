"""`icm status`: merged manifests of a sharded run, the latest record per input winning."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from icm_cli.cli import app

runner = CliRunner()


def _record(src, name, status, time=None, error=None):
    rec = {"input": str(src / f"{name}.png"), "stem": name, "status": status, "outputs": {}, "error": error,
           "timing": {}, "run": f"run-{time or 0}"}
    if time:
        rec["time"] = f"2026-01-01T10:00:{time:02d}.000+00:00"
    return json.dumps(rec)


def _write(path, *lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _run(tmp_path):
    """Shard 1 did a, failed b; shard 2 did c, failed d; a later rerun fixed b. e never ran."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for name in "abcde":
        (src / f"{name}.png").write_bytes(b"")
    _write(out / "manifest.1-of-2.jsonl", _record(src, "a", "done", 1),
           _record(src, "b", "failed", 2, error=f"{src / 'b.png'}: image data is truncated or corrupt"))
    _write(out / "manifest.2-of-2.jsonl", _record(src, "c", "done", 3),
           _record(src, "d", "failed", 4, error="model failed: out of memory"))
    _write(out / "manifest.jsonl", _record(src, "b", "done", 9), _record(src, "a", "skipped", 8))
    return src, out


def test_status_counts_done_failed_and_pending_with_reasons(tmp_path):
    src, out = _run(tmp_path)
    res = runner.invoke(app, ["status", str(out), str(src)])
    assert res.exit_code == 1
    # a was made by shard 1 and kept by the rerun: done, in an earlier run
    assert "3 done (1 of them in an earlier run), 0 skipped (already there), 1 failed, 1 pending of 5 sources " \
           "(3 manifests)" in res.stdout
    assert "model failed: out of memory" in res.stdout and "d.png" in res.stdout
    assert "truncated" not in res.stdout  # b's failure was superseded by a later success
    assert str(src / "e.png") in res.stdout.split("pending:")[1]


def test_status_json_lists_everything(tmp_path):
    src, out = _run(tmp_path)
    res = runner.invoke(app, ["status", str(out), str(src), "--json"])
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert {k: data[k] for k in ("done", "skipped", "failed", "pending", "complete")} == \
        {"done": 3, "skipped": 0, "failed": 1, "pending": 1, "complete": False}
    assert data["done_earlier"] == 1
    assert [f["stem"] for f in data["failures"]] == ["d"]
    assert data["pending_inputs"] == [str(src / "e.png")]
    assert sorted(data["manifests"]) == ["manifest.1-of-2.jsonl", "manifest.2-of-2.jsonl", "manifest.jsonl"]


def test_status_without_sources_and_all_done_exits_zero(tmp_path):
    src, out = _run(tmp_path)
    _write(out / "manifest.2-of-2.jsonl", _record(src, "c", "done", 3), _record(src, "d", "done", 5),
           '{"input": "cut short by a kil')
    res = runner.invoke(app, ["status", str(out)])
    assert res.exit_code == 0, res.stdout
    assert "4 done (1 of them in an earlier run), 0 skipped (already there), 0 failed, 0 pending (3 manifests)" \
        in res.stdout
    assert "1 manifest line(s) could not be read" in res.stdout
    # Naming the sources brings e back as pending.
    assert runner.invoke(app, ["status", str(out), str(src)]).exit_code == 1


def test_records_without_time_are_ordered_by_file_age_then_line(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    out.mkdir()
    _write(out / "manifest.jsonl", _record(src, "a", "failed", error="old"), _record(src, "a", "done"))
    _write(out / "manifest.1-of-1.jsonl", _record(src, "b", "done"), _record(src, "a", "failed", error="newest"))
    os.utime(out / "manifest.jsonl", (1_000, 1_000))
    data = json.loads(runner.invoke(app, ["status", str(out), "--json"]).stdout)
    assert [f["error"] for f in data["failures"]] == ["newest"]


def test_status_of_a_folder_without_manifests_is_an_error(tmp_path):
    res = runner.invoke(app, ["status", str(tmp_path)])
    assert res.exit_code == 2
    assert "no manifest.jsonl" in res.output
