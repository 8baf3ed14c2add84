"""Interrupted runs: Ctrl-C stops cleanly, kill -9 never leaves a broken output, a rerun finishes the rest.

These run the real `icm` in a subprocess and signal it while it works.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from tests.conftest import save_png, textured_scene, source_records

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

FAST = ["--head-steps", "20", "--size", "128", "--quiet"]
runner = CliRunner()
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ROOT = Path(__file__).resolve().parents[1]
TEMP_NAME = re.compile(r"^\.icm-[0-9a-f]+-\d+-[A-Za-z0-9_]+\.tmp$")


def _icm(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "icm_cli", *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _wait_for_files(folder: Path, count: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.is_dir() and len(list(folder.glob("*.png"))) >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"icm ended early with {proc.returncode}: {proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no output in {folder} after {timeout}s")


def _loads(png: Path) -> None:
    with Image.open(png) as img:
        img.load()


def test_sigint_mid_batch_stops_cleanly_and_a_rerun_finishes(tmp_path):
    img, mask = textured_scene(64, 80, (14, 18, 34, 44), seed=1)
    ref = save_png(tmp_path / "ref.png", img)
    ref_mask = save_png(tmp_path / "ref_mask.png", mask * 255)
    sources = []
    for i in range(8):
        s_img, _ = textured_scene(48, 64, (8 + i % 5, 14, 24, 32), seed=20 + i)
        sources.append(save_png(tmp_path / "src" / f"s{i:02d}.png", s_img))
    out = tmp_path / "out"
    args = ["propagate", "--ref", ref, "--mask", ref_mask, "-", "-o", str(out), "--save", "masks,trimaps",
            "--no-edges", *FAST]
    proc = _icm(*args, stdin=subprocess.PIPE)
    # The paths arrive on stdin, which stays open: for icm the batch is still going on when Ctrl-C comes.
    proc.stdin.write("\n".join(sources) + "\n")
    proc.stdin.flush()
    _wait_for_files(out / "trimaps", 1, proc)
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    finally:
        proc.stdin.close()
    stderr = proc.stderr.read()
    assert code == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "rerun" in lines[0], stderr
    assert "Traceback" not in stderr
    records = source_records(out / "manifest.jsonl")
    assert records and all(r["status"] == "done" for r in records)
    for record in records:  # every recorded output is complete
        for path in record["outputs"].values():
            _loads(Path(path))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # in-flight writes finished or removed
    done_first = {r["stem"] for r in records}
    # every PNG present is whole (a source cut between its two outputs is redone by the rerun)
    for png in out.rglob("*.png"):
        _loads(png)

    rerun = runner.invoke(app, args, input="\n".join(sources) + "\n")  # in-process: torch is imported already
    assert rerun.exit_code == 0, rerun.output
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"s{i:02d}.png" for i in range(len(sources))]
    later = source_records(out / "manifest.jsonl")[len(records):]
    statuses = {r["stem"]: r["status"] for r in later}
    assert {s for s, st in statuses.items() if st == "skipped"} >= done_first
    assert all(statuses[s] == "done" for s in statuses if s not in done_first)


def _blob_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    m = np.zeros((size, size), bool)
    for _ in range(6):
        cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(size // 10, size // 4))]
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    m ^= rng.random((size, size)) < 0.02  # speckle: PNGs that take a moment to encode
    return m.astype(np.uint8) * 255


def test_sigterm_mid_video_stops_cleanly_and_a_rerun_resumes(tmp_path):
    img, mask = textured_scene(64, 80, (14, 18, 34, 44), seed=1)
    ref = save_png(tmp_path / "ref.png", img)
    ref_mask = save_png(tmp_path / "ref_mask.png", mask * 255)
    frames = tmp_path / "frames"
    for i in range(40):
        s_img, _ = textured_scene(64, 80, (14 + i % 6, 18 + i % 9, 34, 44), seed=30 + i)
        save_png(frames / f"{i:05d}.png", s_img)
    out = tmp_path / "out"
    args = ["propagate", "--video", str(frames), "--ref", ref, "--mask", ref_mask, "-o", str(out), *FAST]
    proc = _icm(*args)
    _wait_for_files(out / "masks", 2, proc)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    stderr = proc.stderr.read()
    assert code == 143, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    records = source_records(out / "manifest.jsonl")
    assert records and all(r["status"] == "done" for r in records) and len(records) < 40
    for record in records:
        for path in record["outputs"].values():
            _loads(Path(path))
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 0, rerun.output
    assert len(list((out / "masks").iterdir())) == 40


def test_kill_9_never_leaves_a_broken_output_and_a_rerun_finishes(tmp_path):
    rng = np.random.default_rng(0)
    masks = tmp_path / "masks"
    masks.mkdir()
    count = 60
    for i in range(count):
        Image.fromarray(_blob_mask(rng, 448)).save(masks / f"m{i:03d}.png", compress_level=1)
    out = tmp_path / "out"
    proc = _icm("trimap", str(masks), "-o", str(out), "--kernel", "9", "--quiet")
    _wait_for_files(out, 3, proc)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    outputs = sorted(out.glob("*.png"))
    if len(outputs) == count:  # a fast machine finished before the kill landed: nothing was cut mid-batch
        pytest.skip("the batch finished before SIGKILL landed; nothing mid-batch to check")
    assert len(outputs) >= 3
    for png in outputs:  # nothing under a final name is truncated
        _loads(png)
    for stray in [p for p in out.iterdir() if not p.name.endswith(".png") and p.name != "manifest.jsonl"]:
        assert TEMP_NAME.match(stray.name), stray.name  # only hidden temp files, never *.png

    rerun = runner.invoke(app, ["trimap", str(masks), "-o", str(out), "--kernel", "9"])
    assert rerun.exit_code == 0, rerun.output
    assert f"{len(outputs)} skipped" in rerun.output
    finished = sorted(out.glob("*.png"))
    assert [p.name for p in finished] == [f"m{i:03d}.png" for i in range(count)]
    for png in finished:
        t = np.asarray(Image.open(png))
        assert set(np.unique(t)) <= {0, 128, 255}
    # the killed process is gone, so the temp files it left were removed by the rerun
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.jsonl"] + [p.name for p in finished])
