"""`PropagateJob`: one typed shape (inputs, run options, configs) checked before any model loads."""

from __future__ import annotations

import io as pyio
import sys

import pytest

from icm_cli.config import ModelConfig, OutputConfig, VideoConfig
from icm_cli.jobs import PropagateJob, RunInputs, RunOptions, UsageProblem
from tests.conftest import save_png, textured_scene


@pytest.fixture()
def pair(tmp_path):
    img, mask = textured_scene(40, 48, (10, 12, 20, 20), seed=4)
    ref = save_png(tmp_path / "ref.png", img)
    ref_mask = save_png(tmp_path / "ref_mask.png", mask.astype("uint8") * 255)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        save_png(frames / f"f{i}.png", textured_scene(40, 48, (8 + i, 12, 20, 20), seed=5 + i)[0])
    return ref, ref_mask, frames


def _check(inputs, options, **configs):
    return PropagateJob.check(inputs, options, model=configs.get("model", ModelConfig(device="cpu")),
                              outputs=configs.get("outputs", OutputConfig()), video_config=VideoConfig())


def test_a_job_is_checked_from_typed_inputs_and_options_without_a_model(pair, tmp_path):
    ref, ref_mask, frames = pair
    job = _check(RunInputs(sources=[str(frames)], refs=[ref], masks=[ref_mask]),
                 RunOptions(output=tmp_path / "out", shard="1/1"))
    assert job.total == 3 and [s.stem for s in job.sources] == ["f0", "f1", "f2"]
    assert job.manifest_name == "manifest.1-of-1.jsonl" and job.predictor is None
    assert not job.nothing_to_do and job.output == tmp_path / "out"
    assert job.inputs.sources == (str(frames),) and job.options.command == ("icm", "propagate")

    video = _check(RunInputs(video=frames, refs=[ref], masks=[ref_mask]), RunOptions(output=tmp_path / "v"),
                   outputs=OutputConfig(("heatmaps",)))
    assert video.total == 3 and video.plan.kinds == ("masks", "heatmaps") and video.video_config is not None


def test_stdin_sources_stay_a_stream_and_done_outputs_mean_nothing_to_do(pair, tmp_path, monkeypatch):
    ref, ref_mask, frames = pair
    monkeypatch.setattr(sys, "stdin", pyio.StringIO(f"{frames / 'f0.png'}\n"))
    job = _check(RunInputs(sources=["-"], refs=[ref], masks=[ref_mask]), RunOptions(output=tmp_path / "out"))
    assert job.total is None and not job.nothing_to_do

    out = tmp_path / "done"
    for kind in ("masks", "trimaps", "heatmaps"):
        (out / kind).mkdir(parents=True)
        for i in range(3):
            (out / kind / f"f{i}.png").write_bytes(b"x")
    assert _check(RunInputs(sources=[str(frames)], refs=[ref], masks=[ref_mask]), RunOptions(output=out)).nothing_to_do


@pytest.mark.parametrize("inputs, options, message", [
    (dict(), dict(), "no SOURCES given"),
    (dict(sources=["x"], video="v"), dict(), "either SOURCES or --video"),
    (dict(sources=["{frames}"]), dict(engine="spark"), "--engine takes local or ray"),
    (dict(sources=["{frames}"]), dict(workers=2), "need --engine ray"),
    (dict(sources=["{frames}"]), dict(shard="3/2"), "--shard takes I/N"),
    (dict(sources=["{frames}"], refs=[]), dict(), "--ref is required"),
])
def test_a_job_that_cannot_start_is_one_usage_problem(pair, tmp_path, inputs, options, message):
    ref, ref_mask, frames = pair
    given = {"refs": [ref], "masks": [ref_mask], **inputs}
    given["sources"] = [s.format(frames=frames) for s in given.get("sources", [])]
    with pytest.raises(UsageProblem, match=message):
        _check(RunInputs(**given), RunOptions(output=tmp_path / "out", **options))
