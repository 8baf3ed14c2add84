"""`icm propagate --video`: frame order, bounded memory, resume equivalence, video files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.config import VideoConfig
from icm_cli.predict.temporal import TemporalContext
from icm_cli.geometry import WorkingGeometry
from tests.conftest import save_png, source_records, textured_scene, write_clip

runner = CliRunner()
FAST = ["--head-steps", "20", "--size", "128", "--quiet"]


def _frames(folder, count=6, names=None):
    """An object sliding right; frames written out of name order on purpose."""
    names = names or [f"{i:03d}" for i in range(count)]
    truths = {}
    for i in reversed(range(count)):
        img, mask = textured_scene(96, 128, (30, 10 + 12 * i, 40, 50), seed=100 + i)
        save_png(folder / f"{names[i]}.png", img)
        truths[names[i]] = mask.astype(bool)
    return truths


def _run(args):
    res = runner.invoke(app, ["propagate", *args, *FAST])
    return res


def test_video_processes_frames_in_name_order_and_writes_every_mask(tmp_path):
    truths = _frames(tmp_path / "frames")
    ref, ref_mask = textured_scene(96, 128, (30, 10, 40, 50), seed=100)
    save_png(tmp_path / "ref.png", ref)
    save_png(tmp_path / "ref_mask.png", ref_mask * 255)
    out = tmp_path / "out"
    res = _run(["--video", str(tmp_path / "frames"), "--ref", str(tmp_path / "ref.png"),
                "--mask", str(tmp_path / "ref_mask.png"), "-o", str(out), "--memory", "2"])
    assert res.exit_code == 0, res.output
    records = source_records(out / "manifest.jsonl")
    assert [r["stem"] for r in records] == sorted(truths)
    for stem, truth in truths.items():
        mask = np.asarray(Image.open(out / "masks" / f"{stem}.png")) > 127
        iou = np.logical_and(mask, truth).sum() / np.logical_or(mask, truth).sum()
        assert iou > 0.6, (stem, iou)


@pytest.mark.parametrize("memory", ["2", "0"])  # 2: slots (--memory-every 1); 0: references + previous frame
def test_resume_gives_the_same_masks_as_an_uninterrupted_run(tmp_path, memory):
    _frames(tmp_path / "frames", count=6)
    ref, ref_mask = textured_scene(96, 128, (30, 10, 40, 50), seed=100)
    save_png(tmp_path / "ref.png", ref)
    save_png(tmp_path / "ref_mask.png", ref_mask * 255)
    common = ["--ref", str(tmp_path / "ref.png"), "--mask", str(tmp_path / "ref_mask.png"), "--memory", memory,
              "--memory-every", "1", "--save", "masks,trimaps"]
    full = tmp_path / "full"
    assert _run(["--video", str(tmp_path / "frames"), "-o", str(full), *common]).exit_code == 0
    # An "interrupted" run: only the first 3 frames were done, then the rest on rerun.
    part = tmp_path / "part"
    partial_frames = tmp_path / "first3"
    for p in sorted((tmp_path / "frames").iterdir())[:3]:
        save_png(partial_frames / p.name, np.asarray(Image.open(p)))
    assert _run(["--video", str(partial_frames), "-o", str(part), *common]).exit_code == 0
    res = _run(["--video", str(tmp_path / "frames"), "-o", str(part), *common, "--json"])
    assert res.exit_code == 0, res.output
    statuses = [json.loads(l)["status"] for l in res.stdout.splitlines() if l.startswith("{")]
    assert statuses == ["skipped"] * 3 + ["done"] * 3
    for kind in ("masks", "trimaps"):
        for p in sorted((full / kind).iterdir()):
            assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(part / kind / p.name))), p.name


def test_temporal_memory_is_a_bounded_ring_buffer():
    import torch
    ctx = TemporalContext(VideoConfig(radius=1, memory=3, memory_every=1, motion=False))
    geo = WorkingGeometry.fit(64, 64, 64, 32)
    ft = torch.nn.functional.normalize(torch.randn(1, 8, 8, 8), dim=1)
    keys = ctx.frame_keys(ft)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    for index in range(50):
        ctx.update(mask, geo, ft, keys=keys, index=index)
    # 3 admitted frames (the newest three); the previous frame is the newest of them, not held twice
    assert [s.index for s in ctx.memory.recent] == [47, 48, 49]
    assert len(ctx.memory.frames) == 3
    cells = int(geo.valid_mask(8, 8).sum())
    assert all(s.keys.shape == (keys.shape[0], cells) and s.values.shape == (cells,) for s in ctx.memory.frames)
    prior = ctx.window((8, 8))
    assert prior.shape == (1, 1, 8, 8)
    assert prior[0, 0, 1:7, 1:7].eq(1).all() and prior[0, 0, 0, 0] == 0  # grown by one cell


def test_object_leaving_the_frame_lifts_the_window():
    import torch
    ctx = TemporalContext(VideoConfig(radius=2, memory=0, motion=False))
    geo = WorkingGeometry.fit(64, 64, 64, 32)
    ctx.update(np.zeros((64, 64), bool), geo, torch.zeros(1, 4, 8, 8))
    assert ctx.window((8, 8)) is None


def test_video_file_frames_are_named_by_index(tmp_path):
    pytest.importorskip("av")
    path = write_clip(tmp_path / "clip.mp4",
                      [textured_scene(96, 128, (30, 10 + 12 * i, 40, 50), seed=100 + i)[0] for i in range(4)], 5)
    ref, ref_mask = textured_scene(96, 128, (30, 10, 40, 50), seed=100)
    save_png(tmp_path / "ref.png", ref)
    save_png(tmp_path / "ref_mask.png", ref_mask * 255)
    out = tmp_path / "out"
    res = _run(["--video", str(path), "--ref", str(tmp_path / "ref.png"), "--mask", str(tmp_path / "ref_mask.png"),
                "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:05d}.png" for i in range(4)]


def test_video_and_sources_together_is_an_error(tmp_path):
    res = _run(["--video", str(tmp_path), str(tmp_path), "--ref", "r.png", "--mask", "m.png", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--video" in res.output
