"""Prior masks: Predictor.refine, icm refine with a prior-reading decoder, propagate's priors, video priors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import save_png, textured_scene
from icm_cli import Predictor
from icm_cli.cli import app
from icm_cli.config import ModelConfig
from icm_cli.errors import IcmError
from icm_cli.io import InputError
from icm_cli.predict.decoder import DecoderConfig, MaskDecoder, save_decoder

runner = CliRunner()


@pytest.fixture(scope="module")
def prior_decoder(tmp_path_factory):
    """A small decoder that reads priors, random weights, saved and loaded through the real loader."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dec") / "prior.safetensors"
    save_decoder(MaskDecoder(DecoderConfig(prior=True, width8=8, width4=8)).eval(), path, {"trained_on": "test"})
    return path


def _iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def test_refine_runs_the_decoder_with_the_coarse_mask_as_prior(prior_decoder):
    image, mask = textured_scene(96, 128, (20, 30, 40, 50), seed=3)
    predictor = Predictor(ModelConfig(device="cpu", decoder=str(prior_decoder), size=128, head_steps=10))
    assert predictor.propagator.reads_priors
    coarse = np.zeros_like(mask, dtype=bool)
    coarse[25:55, 35:75] = True
    result = predictor.refine(image, coarse)
    assert result.mask.shape == mask.shape and result.probability.dtype == np.float32
    assert 0.0 <= result.confidence <= 1.0
    with pytest.raises(InputError, match="empty"):
        predictor.refine(image, np.zeros_like(coarse))
    with pytest.raises(InputError, match="of another size|but the image is"):
        predictor.refine(image, coarse[:50])
    # The prior reaches the decoder: another coarse mask gives another probability.
    other = np.zeros_like(coarse)
    other[60:90, 90:120] = True
    assert not np.array_equal(predictor.refine(image, other).probability, result.probability)


def test_refine_without_a_prior_reading_decoder_is_an_icm_error():
    image, mask = textured_scene(64, 64, (10, 10, 30, 30), seed=1)
    predictor = Predictor(ModelConfig(device="cpu", decoder="none", size=64, head_steps=0))
    with pytest.raises(IcmError, match="prior"):
        predictor.refine(image, mask > 0)


def test_icm_refine_decoder_method_through_the_cli(tmp_path, prior_decoder):
    image, mask = textured_scene(96, 128, (20, 30, 40, 50), seed=4)
    save_png(tmp_path / "images" / "shot.jpg", image)
    coarse = np.zeros_like(mask)
    coarse[22:58, 28:82] = 255
    save_png(tmp_path / "coarse" / "shot.png", coarse)
    save_png(tmp_path / "coarse" / "blank.png", np.zeros_like(mask))
    save_png(tmp_path / "images" / "blank.jpg", image)
    out = tmp_path / "out"
    res = runner.invoke(app, ["refine", str(tmp_path / "coarse"), "--images", str(tmp_path / "images"), "-o", str(out),
                              "--decoder", str(prior_decoder), "--size", "128", "--head-steps", "10", "--quiet"])
    assert res.exit_code == 1, res.output                 # the empty mask failed, the other was written
    assert "blank.png" in res.output and "empty" in res.output
    written = np.asarray(Image.open(out / "shot.png"))
    assert written.shape == mask.shape and set(np.unique(written)) <= {0, 255}
    # --method decoder with a decoder that reads no priors: one line, exit 2.
    res = runner.invoke(app, ["refine", str(tmp_path / "coarse"), "--images", str(tmp_path / "images"), "-o",
                              str(tmp_path / "o2"), "--method", "decoder", "--decoder", "none", "--size", "128"])
    assert res.exit_code == 2 and "prior" in res.output


def test_predict_with_a_prior_reaches_the_decoder(prior_decoder):
    ref, ref_mask = textured_scene(96, 128, (20, 30, 40, 50), seed=1)
    src, _ = textured_scene(96, 128, (30, 50, 40, 50), seed=2)
    predictor = Predictor(ModelConfig(device="cpu", decoder=str(prior_decoder), size=128, head_steps=10))
    predictor.set_reference(ref, ref_mask)
    plain = predictor.predict(src)
    prior = np.zeros(src.shape[:2], bool)
    prior[30:70, 50:100] = True
    with_prior = predictor.predict(src, prior=prior)
    assert not np.array_equal(plain.probability, with_prior.probability)
    with pytest.raises(InputError):
        predictor.predict(src, prior=prior[:10])


def test_video_carries_the_previous_mask_and_finds_an_object_that_comes_back(prior_decoder):
    from icm_cli.config import VideoConfig

    ref, ref_mask = textured_scene(96, 128, (20, 30, 40, 50), seed=1)
    predictor = Predictor(ModelConfig(device="cpu", decoder=str(prior_decoder), size=128, head_steps=10))
    predictor.set_reference(ref, ref_mask)
    video = predictor.video(VideoConfig(radius=2, motion=True))
    frame, _ = textured_scene(96, 128, (22, 34, 40, 50), seed=5)
    video.step(frame)
    assert video.temporal.previous_fine is not None and video.temporal.previous_grey is not None
    # The object leaves: no prior, no window, so nothing stops it being found when it returns.
    video.observe(frame, np.zeros(frame.shape[:2], bool))
    geo = predictor.propagator.geometry_for(*frame.shape[:2])
    assert video.temporal.prior(geo) is None and video.temporal.window((geo.padded_h // 8, geo.padded_w // 8)) is None
    back = video.step(frame)
    assert back.mask.shape == frame.shape[:2]


def test_propagate_prior_folder_pairs_by_name_and_judges_each_source(tmp_path, prior_decoder):
    ref, ref_mask = textured_scene(96, 128, (20, 30, 40, 50), seed=1)
    save_png(tmp_path / "ref.png", ref)
    save_png(tmp_path / "ref_mask.png", ref_mask * 255)
    for i, name in enumerate(("a", "b", "c")):
        src, truth = textured_scene(96, 128, (25, 35 + 5 * i, 40, 50), seed=10 + i)
        save_png(tmp_path / "src" / f"{name}.jpg", src)
        if name == "a":
            save_png(tmp_path / "priors" / "a.png", truth * 255)          # a usable prior
        if name == "b":
            save_png(tmp_path / "priors" / "b.png", np.zeros((10, 10), np.uint8))  # of another size
    out = tmp_path / "out"
    args = ["propagate", str(tmp_path / "src"), "--ref", str(tmp_path / "ref.png"), "--mask",
            str(tmp_path / "ref_mask.png"), "-o", str(out), "--decoder", str(prior_decoder), "--size", "128",
            "--head-steps", "10", "--prior", str(tmp_path / "priors"), "--save", "masks"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    assert "b.jpg" in res.output and "prior" in res.output
    assert (out / "masks" / "a.png").is_file() and (out / "masks" / "c.png").is_file()  # c: no prior, as usual
    assert not (out / "masks" / "b.png").exists()
    res = runner.invoke(app, ["propagate", "--video", str(tmp_path / "src"), "--ref", str(tmp_path / "ref.png"),
                              "--mask", str(tmp_path / "ref_mask.png"), "-o", str(tmp_path / "v"),
                              "--prior", str(tmp_path / "priors")])
    assert res.exit_code == 2 and "--prior" in res.output


def test_placing_a_window_and_a_prior_on_found_evidence():
    from icm_cli.predict.propagator import Propagator
    from icm_cli.predict.evidence import Evidence

    ones = torch.ones(1, 1, 2, 3)
    found = Evidence(geometry=None, prob=torch.full((1, 1, 2, 3), 0.8), nearest=ones, sim_fg=ones, sim_bg=ones)
    window = torch.tensor([[[[1.0, 0.0, 1.0], [0.0, 0.5, 1.0]]]])
    prior = torch.full((1, 1, 4, 6), 0.25)
    placed = Propagator.placed(found, window=window, prior=prior)
    assert torch.allclose(placed.prob, torch.tensor([[[[0.8, 0.0, 0.8], [0.0, 0.4, 0.8]]]]))
    assert placed.window.tolist() == window.tolist() and placed.prior.tolist() == prior.tolist()
    assert found.prob.unique().tolist() == [pytest.approx(0.8)]  # the found evidence is left as it was
    assert Propagator.placed(found, prior=torch.full((1, 1, 4, 6), float("nan"))).prior is None  # NaN: no prior
    assert Propagator.placed(found) is found


def test_a_video_frame_searched_ahead_equals_one_searched_after_the_previous_mask(prior_decoder):
    """The frame's search is made on the backbone's thread, before the previous mask is known; placing
    the window and prior (and the memory's readout) then gives the evidence of searching with them."""
    from icm_cli.config import VideoConfig

    ref, ref_mask = textured_scene(96, 128, (20, 30, 40, 50), seed=1)
    predictor = Predictor(ModelConfig(device="cpu", decoder=str(prior_decoder), size=128, head_steps=10))
    predictor.set_reference(ref, ref_mask)
    first, _ = textured_scene(96, 128, (22, 34, 40, 50), seed=5)
    second, _ = textured_scene(96, 128, (24, 36, 40, 50), seed=6)
    video = predictor.video(VideoConfig(radius=2, motion=False, readout_weight=0.0, readout_prior=0.0))  # no memory
    video.step(first)
    encoded = video.pipeline.encode(second)
    assert encoded.found is not None and encoded.keys is None
    ahead = video.pipeline.predict_encoded(encoded)
    # the video's prior weight is the evidence's from its construction; the evidence found ahead is not changed
    assert ahead.prior_weight == VideoConfig().prior_weight != 1.0 and encoded.found.prior_weight == 1.0
    engine = predictor.propagator
    geo = encoded.geometry
    window = video.temporal.window(tuple(encoded.features.ft.shape[-2:]))
    assert window is not None and not bool(window.all())  # the window does cut the search
    at_once = engine.evidence(encoded.features, geo, prior=video.temporal.prior(geo), window=window,
                              prior_weight=video.config.prior_weight)[0]
    assert at_once.prior_weight == ahead.prior_weight
    for name in ("prob", "nearest", "sim_fg", "sim_bg", "head", "inter", "intra", "base", "prior", "window"):
        assert torch.equal(getattr(ahead, name), getattr(at_once, name)), name
    assert video.pipeline.finish(second, ahead).mask.tolist() == video.pipeline.finish(second, at_once).mask.tolist()

    # with the memory on, the search is still made ahead; the readout is mixed in before the window
    memory = predictor.video(VideoConfig(radius=2, motion=False, readout_weight=0.5, readout_prior=0.0))
    memory.step(first)
    encoded = memory.pipeline.encode(second)
    assert encoded.found is not None and encoded.keys is not None
    ahead = memory.pipeline.predict_encoded(encoded)
    read = memory.temporal.readout(encoded.keys, geo)
    assert read is not None and ahead.readout_weight == 0.5 and torch.equal(ahead.readout, read)
    window = memory.temporal.window(tuple(encoded.features.ft.shape[-2:]))
    expected = (0.5 * encoded.found.prob + 0.5 * read) * window  # readout on the same grid as prob
    assert torch.allclose(ahead.prob, expected, atol=1e-6)
    at_once = engine.evidence(encoded.features, geo, prior=memory.temporal.prior(geo), window=window,
                              prior_weight=memory.config.prior_weight)[0]
    for name in ("nearest", "sim_fg", "sim_bg", "head", "base", "prior", "window"):
        assert torch.equal(getattr(ahead, name), getattr(at_once, name)), name



    # at the defaults the readout is half of the decoder's prior (the previous mask the other half)
    import torch.nn.functional as F

    default = predictor.video(VideoConfig(radius=2, motion=False))
    default.step(first)
    encoded = default.pipeline.encode(second)
    placed_prior = default.pipeline.predict_encoded(encoded).prior
    previous = default.temporal.prior(geo)
    read = default.temporal.readout(encoded.keys, geo, default.temporal.window(tuple(encoded.features.ft.shape[-2:])))
    expected = 0.5 * previous + 0.5 * F.interpolate(read, size=previous.shape[-2:], mode="bilinear", align_corners=False)
    assert torch.allclose(placed_prior, expected, atol=1e-6) and not torch.equal(placed_prior, previous)
