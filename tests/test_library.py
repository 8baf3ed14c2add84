"""The Python API: the README's Library example runs as written, and the predictor keeps its promises."""

from __future__ import annotations

import contextlib
import io as pyio
import os
import re
from pathlib import Path

import numpy as np
import pytest

from icm_cli import ModelConfig, Predictor, VideoConfig
from tests.conftest import textured_scene

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_library_example_runs(monkeypatch):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    library = readme.split("## Library", 1)[1]
    code = re.search(r"```python\n(.*?)```", library, flags=re.S).group(1)
    monkeypatch.chdir(ROOT)
    out = pyio.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("(") and "bool" in lines[0] and "of the image" in lines[0]
    assert lines[1:4] == ["False", "False", "True"]  # the video found the cup; refine trimmed the crude mask
    assert lines[4].endswith("True")
    assert lines[5] == "no/such/photo.jpg: file not found"
    j, f = map(float, re.fullmatch(r"J (\d\.\d\d)  F (\d\.\d\d)", lines[6]).groups())
    assert j >= 0.9 and f >= 0.9  # the demo's moved brick is found


@pytest.fixture(scope="module")
def predictor():
    img, mask = textured_scene(72, 96, (18, 24, 36, 40), seed=1)
    p = Predictor(ModelConfig(device="cpu", size=96, head_steps=10, edges=False))
    p.set_reference(img, mask.astype(bool))
    return p


def test_predict_batch_matches_one_at_a_time_and_takes_any_image_kind(predictor):
    from PIL import Image

    a, _ = textured_scene(72, 96, (10, 30, 36, 40), seed=2)
    b, _ = textured_scene(60, 80, (10, 20, 30, 30), seed=3)
    batch = predictor.predict_batch([a, Image.fromarray(b), a])
    singles = [predictor.predict(a), predictor.predict(b)]
    assert [r.mask.shape for r in batch] == [(72, 96), (60, 80), (72, 96)]
    np.testing.assert_array_equal(batch[0].mask, singles[0].mask)
    np.testing.assert_array_equal(batch[1].mask, singles[1].mask)
    assert batch[0].probability.dtype == np.float32 and 0 < batch[0].area < 1 and not batch[0].empty
    assert set(np.unique(batch[0].trimap(5)).tolist()) <= {0, 128, 255}


def test_the_confidence_follows_the_path_that_made_the_probability(predictor):
    from icm_cli.predict.confidence import combine, confidence_signals, reference_area_share

    src, _ = textured_scene(72, 96, (10, 30, 36, 40), seed=2)
    none = Predictor(ModelConfig(device="cpu", size=96, head_steps=10, edges=False, decoder="none"))
    ref, ref_mask = textured_scene(72, 96, (18, 24, 36, 40), seed=1)
    none.set_reference(ref, ref_mask.astype(bool))
    for p, decodes in ((predictor, True), (none, False)):  # the fixture runs the default (learned) decoder
        coarse = p.pipeline.predict_coarse([src])[0]
        assert p.propagator.decodes(coarse) is decodes
        _, path_mask, learned = p.propagator.finish_path(src, coarse)  # the gate may keep the training-free result
        assert learned is False or decodes
        result = p.pipeline.finish(src, coarse)
        np.testing.assert_array_equal(result.mask, path_mask)
        signals = confidence_signals(result.probability, result.mask, coarse, reference_area_share(p.propagator.context))
        assert result.confidence == pytest.approx(combine(signals, learned))
        assert result.confidence != pytest.approx(combine(signals, not learned))


def test_the_gate_keeps_whichever_path_is_more_confident(predictor):
    import dataclasses

    from icm_cli.predict.confidence import assess
    from icm_cli.predict.finish import full_size

    engine = predictor.propagator
    gated = engine.settings
    try:
        for seed in (2, 3, 5):
            src, _ = textured_scene(72, 96, (10, 30, 36, 40), seed=seed)
            coarse = predictor.pipeline.predict_coarse([src])[0]
            engine.settings = dataclasses.replace(gated, gate=False)
            decoder_prob, decoder_mask, learned = engine.finish_path(src, coarse)
            assert learned is True
            engine.settings = dataclasses.replace(gated, gate=True)
            prob, mask, learned = engine.finish_path(src, coarse)
            free_prob = coarse.geometry.to_original(coarse.prob)[0, 0].numpy()
            free_prob, free_mask = full_size(engine.settings, src, free_prob)
            # the training-free path is judged on its GrabCut at gate_probe_scale, finished at grabcut_scale
            probe = dataclasses.replace(engine.settings, grabcut_scale=engine.settings.gate_probe_scale)
            assert probe.grabcut_scale < engine.settings.grabcut_scale
            probe_prob, probe_mask = full_size(probe, src, free_prob)
            by_decoder = assess(decoder_prob, decoder_mask, coarse, learned=True).confidence
            training_free = assess(probe_prob, probe_mask, coarse).confidence
            np.testing.assert_array_equal(mask, decoder_mask if learned else free_mask)
            np.testing.assert_array_equal(prob, decoder_prob if learned else free_prob)
            assert learned is (by_decoder >= training_free)
            # with the probe at the finishing scale the gate judges the finished training-free result
            engine.settings = dataclasses.replace(gated, gate=True, gate_probe_scale=gated.grabcut_scale)
            _, mask_same, learned_same = engine.finish_path(src, coarse)
            assert learned_same is (by_decoder >= assess(free_prob, free_mask, coarse).confidence)
            np.testing.assert_array_equal(mask_same, decoder_mask if learned_same else free_mask)
    finally:
        engine.settings = gated


def test_api_errors_are_sentences(predictor):
    fresh = Predictor(ModelConfig(device="cpu", size=96, head_steps=0))
    img, mask = textured_scene(40, 40, (10, 10, 20, 20), seed=4)
    with pytest.raises(RuntimeError, match="set_reference"):
        fresh.predict(img)
    with pytest.raises(Exception, match="empty"):
        fresh.set_reference(img, np.zeros((40, 40), bool))
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(img.astype(np.float32))
    with pytest.raises(ValueError, match="^size must be at least 64"):  # the setting's name, not the option's
        ModelConfig(size=10)


def test_video_predictor_follows_the_last_mask_and_can_be_corrected(predictor):
    video = predictor.video(VideoConfig(radius=2))
    frames = [textured_scene(72, 96, (18 + 2 * i, 24 + 3 * i, 36, 40), seed=20 + i) for i in range(3)]
    results = [video.step(img) for img, _ in frames]
    assert all(not r.empty for r in results)
    assert video.temporal.previous is not None
    video.observe(frames[0][0], np.zeros((72, 96), bool))  # the object left: search everywhere again
    assert video.temporal.window(tuple(video.temporal.previous.shape[-2:])) is None


def test_configs_are_frozen_and_picklable():
    import dataclasses
    import pickle

    cfg = ModelConfig(size=480, threshold=0.4)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.size = 10
    assert cfg.propagate_settings().grabcut is False and cfg.propagate_settings().threshold == 0.4
    assert "device" not in cfg.result_settings() and os.environ is not None


def test_each_default_is_declared_once_and_every_layer_reads_it():
    import inspect

    from icm_cli.config import (DEFAULT_TRIMAP_KERNEL, OUTPUT_KINDS, OutputConfig, batch_size_for)
    from icm_cli.predictor import Result
    from icm_cli.runner.outputs import OutputPlan

    assert batch_size_for(0, on_gpu=False) == 1 and batch_size_for(0, on_gpu=True) == 8
    assert batch_size_for(3, on_gpu=False) == 3 and batch_size_for(3, on_gpu=True) == 3
    assert OutputConfig().kernel == OutputConfig.parse("masks").kernel == DEFAULT_TRIMAP_KERNEL == 20
    assert inspect.signature(Result.trimap).parameters["kernel"].default == DEFAULT_TRIMAP_KERNEL
    assert [p.name for p in OutputPlan(Path("o")).written_folders] == list(OUTPUT_KINDS)


def test_every_icm_error_is_an_icm_error_and_keeps_its_old_base():
    from icm_cli import IcmError
    from icm_cli.backbones import WeightsError
    from icm_cli.device import DeviceError
    from icm_cli.engines.ray_engine import RayEngineError
    from icm_cli.errors import SettingError
    from icm_cli.io import InputError, OutputError
    from icm_cli.jobs import UsageProblem
    from icm_cli.matting import MattingError
    from icm_cli.review import ReviewError
    from icm_cli.sources import SourceError

    for kind in (WeightsError, DeviceError, RayEngineError, InputError, OutputError, UsageProblem, MattingError,
                 ReviewError, SourceError, SettingError):
        assert issubclass(kind, IcmError), kind
    assert issubclass(SourceError, InputError)
    assert not issubclass(OutputError, InputError)  # an unwritable output is not bad input
    assert issubclass(MattingError, RuntimeError) and issubclass(SettingError, ValueError)


def test_a_library_user_catching_icm_error_gets_each_bad_input(tmp_path):
    from icm_cli import IcmError

    with pytest.raises(IcmError, match="size must be at least 64"):
        ModelConfig(size=10)
    p = Predictor(ModelConfig(device="cpu", size=96, head_steps=0, edges=False))
    missing = tmp_path / "no_such_ref.png"
    with pytest.raises(IcmError, match="no_such_ref.png"):
        p.set_reference(str(missing), np.ones((8, 8), bool))
    img, _ = textured_scene(40, 48, (10, 12, 20, 20), seed=4)
    with pytest.raises(IcmError, match="empty|no object"):
        p.set_reference(img, np.zeros((40, 48), bool))
    with pytest.raises(IcmError):  # a mask of another size
        p.set_reference(img, np.ones((20, 20), bool))


def test_predicting_too_early_or_on_an_unusable_array_raises_an_icm_error_that_keeps_its_old_base():
    from icm_cli import IcmError
    from icm_cli.backbones.onnx_trunk import RuntimeUnavailable
    from icm_cli.errors import ArrayError, NotReadyError
    from icm_cli.video_out import VideoOutputError

    p = Predictor(ModelConfig(device="cpu", size=96, head_steps=0, edges=False))
    img, mask = textured_scene(40, 48, (10, 12, 20, 20), seed=4)
    with pytest.raises(NotReadyError, match="set_reference"):  # before any reference
        p.predict(img)
    p.set_reference(img, mask)
    with pytest.raises(ArrayError, match="uint8"):  # a float array
        p.predict(img.astype(np.float32))
    with pytest.raises(ArrayError, match=r"\[H, W, 3\]"):  # a wrong shape
        p.predict(np.zeros((4, 40, 48, 3), np.uint8))
    with pytest.raises(ArrayError, match=r"\[H, W\] mask"):
        p.set_reference(img, np.zeros((2, 2, 2, 2), bool))
    for kind in (ArrayError, NotReadyError, VideoOutputError, RuntimeUnavailable):
        assert issubclass(kind, IcmError), kind
    assert issubclass(ArrayError, ValueError) and issubclass(NotReadyError, RuntimeError)
    assert issubclass(RuntimeUnavailable, ValueError)


def test_the_old_engine_name_warns_and_the_runner_plumbing_is_on_the_pipeline(predictor):
    from icm_cli.pipeline import PipelineAdapter

    with pytest.warns(DeprecationWarning, match="propagator"):
        assert predictor.engine is predictor.propagator
    assert isinstance(predictor.pipeline, PipelineAdapter) and predictor.pipeline.predictor is predictor
    src, _ = textured_scene(72, 96, (10, 30, 36, 40), seed=2)
    pipe = predictor.pipeline
    split = pipe.finish(src, pipe.predict_coarse([src], encoded=pipe.encode_batch([src]))[0])
    whole = predictor.predict(src)
    np.testing.assert_array_equal(split.mask, whole.mask)
    np.testing.assert_array_equal(split.probability, whole.probability)
    assert split.confidence == whole.confidence


def test_the_contrast_temperature_sets_the_nearest_neighbour_probability():
    """sigmoid((sim_fg - sim_bg) / CONTRAST_TEMPERATURE), known answer: the cell (0.8, 0.6) has similarity
    0.8 to the object token (1, 0) and 0.6 to the background one (0, 1): sigmoid(0.2 / 0.05) = 0.982
    (core's 0.1 would give 0.881)."""
    import math

    import torch

    from icm_cli.config import CONTRAST_TEMPERATURE, PropagateSettings
    from icm_cli.predict.nearest import contrast_probability

    ft = torch.tensor([0.8, 0.6]).reshape(1, 2, 1, 1)
    prob = contrast_probability(ft, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), k=1)
    assert float(prob) == pytest.approx(1 / (1 + math.exp(-4.0)), abs=5e-3)  # bfloat16 products on some CPUs
    assert PropagateSettings().temperature == CONTRAST_TEMPERATURE == 0.05
