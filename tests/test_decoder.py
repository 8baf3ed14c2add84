"""The learned mask decoder: builds, trains on tiny synthetic episodes, saves and
reloads bit-identically, the shipped weights load, and the engine uses it (or not)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from icm_cli.backbones import WeightsError, create_backbone
from icm_cli.predict.decoder import (BUILTIN, MAP_CHANNELS, DecoderConfig, MaskDecoder, load_decoder,
                                     read_metadata, reference_prototypes, resolve_decoder, save_decoder)
from icm_cli.predict.propagator import PropagateSettings, Propagator, to_tensor

from conftest import textured_scene

SMALL = PropagateSettings(size=64, min_size=64, head_steps=5, augmentations=1)


def _inputs(b=2, h=6, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(b, len(MAP_CHANNELS), h, w, generator=g)
    canvas = torch.rand(b, 3, 8 * h, 8 * w, generator=g)
    levels = {2: torch.randn(b, 16, 4 * h, 4 * w, generator=g), 4: torch.randn(b, 24, 2 * h, 2 * w, generator=g)}
    protos = {s: torch.nn.functional.normalize(torch.randn(b, 2, c, generator=g), dim=-1)
              for s, c in ((2, 16), (4, 24))}
    return maps, canvas, levels, protos


@pytest.mark.parametrize("width2, stride", [(0, 4), (8, 2)])
def test_decoder_output_grid_and_untrained_residual(width2, stride):
    torch.manual_seed(0)
    model = MaskDecoder(DecoderConfig(width8=8, width4=8, width2=width2)).eval()
    maps, canvas, levels, protos = _inputs()
    with torch.no_grad():
        logits = model(maps, canvas, levels, protos)
    assert logits.shape == (2, 1, 48 // stride, 64 // stride)
    # Zero-initialised residual heads: an untrained decoder is the engine's logit, upsampled.
    base = torch.logit(maps[:, :1].clamp(1e-4, 1 - 1e-4))
    up = torch.nn.functional.interpolate(base, size=(12, 16), mode="bilinear", align_corners=False)
    if stride == 4:
        torch.testing.assert_close(logits, up, atol=1e-5, rtol=0)
    assert model.config.out_stride == stride


def test_save_and_reload_is_bit_identical_and_refuses_other_files(tmp_path):
    torch.manual_seed(1)
    model = MaskDecoder(DecoderConfig(width8=8, width4=8, width2=4))
    with torch.no_grad():  # move the BatchNorm statistics off their defaults
        model.train()(*_inputs())
    path = tmp_path / "dec.safetensors"
    save_decoder(model.eval(), path, {"trained_on": "unit test"})
    loaded = load_decoder(path)
    assert loaded.config == model.config
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    with torch.no_grad():
        assert torch.equal(model(*_inputs(seed=3)), loaded(*_inputs(seed=3)))
    assert read_metadata(path)["trained_on"] == "unit test"
    # Not a decoder / not safetensors / junk: one-line WeightsError.
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    torch.save(model.state_dict(), tmp_path / "dec.pth")
    for bad in ("other.safetensors", "junk.safetensors", "dec.pth", "missing.safetensors"):
        with pytest.raises(WeightsError) as exc:
            load_decoder(tmp_path / bad) if bad != "missing.safetensors" else resolve_decoder(str(tmp_path / bad), "x")
        assert "\n" not in str(exc.value)


def test_shipped_weights_load_and_resolve():
    path = BUILTIN["efficientnet-lite0"]
    assert path.is_file() and path.stat().st_size < 4 * 2 ** 20
    model = load_decoder(path)
    assert "DAVIS" in read_metadata(path)["trained_on"]
    assert resolve_decoder("builtin", "efficientnet-lite0") == path
    assert resolve_decoder("auto", "efficientnet-lite0") == path
    assert resolve_decoder("auto", "dinov2-small") is None
    assert resolve_decoder("none", "efficientnet-lite0") is None
    with pytest.raises(WeightsError):
        resolve_decoder("builtin", "dinov2-small")
    with torch.no_grad():
        assert torch.isfinite(model(*_inputs())).all()


def test_prototypes_average_under_and_outside_the_mask():
    level = torch.zeros(1, 2, 4, 4)
    level[0, 0, :2] = 1.0   # top half points one way
    level[0, 1, 2:] = 1.0   # bottom half the other
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :] = 1.0
    protos = reference_prototypes({4: level}, mask, (16, 16))[4]
    torch.testing.assert_close(protos, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_engine_uses_the_decoder_and_none_keeps_the_training_free_path():
    torch.set_grad_enabled(False)
    net = create_backbone("efficientnet-lite0")
    ref, ref_mask = textured_scene(96, 128, (20, 30, 40, 50), seed=1)
    src, truth = textured_scene(96, 128, (30, 50, 40, 50), seed=2)
    masks = {}
    for decoder in ("none", "builtin"):
        prop = Propagator(net, settings=dataclasses.replace(SMALL, decoder=decoder))
        prop.set_references([(ref, ref_mask.astype(np.float32))])
        pred = prop.predict_grid([src])[0]
        prob, mask = prop.finish(src, pred)
        assert prob.shape == mask.shape == src.shape[:2]
        masks[decoder] = mask
        if decoder == "none":
            assert prop.decoder is None and pred.base is None and not pred.levels and not prop.decodes(pred)
        else:
            assert prop.decoder is not None and pred.base is not None and set(pred.levels) == {4}
            assert pred.decodable and prop.decodes(pred)
            # The levels come from the one forward pass: recomputing them from the canvas gives the same.
            canvas = pred.geometry.to_canvas(to_tensor(src))
            again = dataclasses.replace(pred, levels={4: net.levels(canvas)[4]})
            assert torch.equal(prop.decode(src, again), prop.decode(src, pred))
    for mask in masks.values():
        iou = (mask & (truth > 0)).sum() / (mask | (truth > 0)).sum()
        assert iou > 0.6
