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
    assert lines[1:3] == ["False", "False"] and lines[3].endswith("True")


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
    for p, learned in ((predictor, True), (none, False)):  # the fixture runs the default (learned) decoder
        coarse = p.predict_coarse([src])[0]
        assert p.engine.decodes(coarse) is learned
        result = p.finish(src, coarse)
        signals = confidence_signals(result.probability, result.mask, coarse, reference_area_share(p.engine.context))
        assert result.confidence == pytest.approx(combine(signals, learned))
        assert result.confidence != pytest.approx(combine(signals, not learned))


def test_api_errors_are_sentences(predictor):
    fresh = Predictor(ModelConfig(device="cpu", size=96, head_steps=0))
    img, mask = textured_scene(40, 40, (10, 10, 20, 20), seed=4)
    with pytest.raises(RuntimeError, match="set_reference"):
        fresh.predict(img)
    with pytest.raises(Exception, match="empty"):
        fresh.set_reference(img, np.zeros((40, 40), bool))
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(img.astype(np.float32))
    with pytest.raises(ValueError, match="--size"):
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
    assert cfg.engine_settings().grabcut is False and cfg.engine_settings().threshold == 0.4
    assert "device" not in cfg.result_settings() and os.environ is not None
