"""Stored reference contexts: reused when nothing that shapes them changed, rebuilt when anything did,
never trusted when damaged; reuse gives the same masks as a fresh build."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.predict import context_store
from tests.conftest import textured_scene


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ICM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def scene():
    img, mask = textured_scene(72, 96, (18, 24, 36, 40), seed=1)
    src, _ = textured_scene(72, 96, (14, 30, 36, 40), seed=11)
    return img, mask, src


def _predictor(**kw):
    from icm_cli import Predictor

    return Predictor(device="cpu", size=96, head_steps=10, **kw)


def test_reference_digest_knows_size_pixels_and_thresholded_mask():
    img = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    mask = np.array([[0, 1, 1, 0], [0, 0.6, 0.2, 0]], np.float32)
    d = context_store.reference_digest(img, mask)
    assert d == context_store.reference_digest(img.copy(), (mask >= 0.5).astype(np.float32))  # as the engine reads it
    assert d != context_store.reference_digest(img.reshape(4, 2, 3), mask.reshape(4, 2))      # same bytes, other size
    other = img.copy()
    other[0, 0, 0] += 1
    assert d != context_store.reference_digest(other, mask)
    assert d != context_store.reference_digest(img, np.where(np.isclose(mask, 0.6), 0.4, mask))  # 0.6 -> 0.4 drops a pixel


def test_every_setting_that_shapes_the_context_changes_its_key(scene):
    img, mask, _ = scene
    predictor = _predictor()
    engine = predictor.propagator
    refs = [(img, mask.astype(np.float32))]
    base = context_store.context_key(engine, refs, "onnx")
    assert base == context_store.context_key(engine, refs, "onnx")
    original = engine.settings
    for field in dataclasses.fields(original):
        value = getattr(original, field.name)
        changed = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v * 2 + 0.1,
                   str: lambda v: v + "x"}[type(value)](value)
        engine.settings = dataclasses.replace(original, **{field.name: changed})
        key = context_store.context_key(engine, refs, "onnx")
        if field.name in context_store.SOURCE_ONLY_SETTINGS:
            assert key == base, f"{field.name} acts on sources only; it must not invalidate the context"
        else:
            assert key != base, f"changing {field.name} must invalidate the stored context"
    engine.settings = original
    assert context_store.context_key(engine, refs, "torch") != base                      # another runtime
    assert context_store.context_key(engine, refs + refs, "onnx") != base                # more references
    flipped = mask.copy()
    flipped[0, 0] = 1 - flipped[0, 0]
    assert context_store.context_key(engine, [(img, flipped.astype(np.float32))], "onnx") != base
    engine.collect_decoder_inputs = not engine.collect_decoder_inputs
    assert context_store.context_key(engine, refs, "onnx") != base
    engine.collect_decoder_inputs = not engine.collect_decoder_inputs
    with torch.no_grad():  # other backbone weights (a fresh module: the digest is computed once per module)
        from icm_cli.backbones import create_backbone
        from icm_cli.predict.propagator import Propagator

        other = create_backbone("efficientnet-lite0")
        other.stem[0].weight.mul_(1.01)
        assert context_store.context_key(Propagator(other, settings=original), refs, "onnx") != base


def test_a_reused_context_gives_the_same_results_as_a_fresh_one(cache, scene):
    img, mask, src = scene
    fresh = _predictor()
    fresh.set_reference(img, mask)
    assert not fresh.reused_context
    files = list((cache / "contexts").glob("*.safetensors"))
    assert len(files) == 1
    again = _predictor()
    again.set_reference(img, mask)
    assert again.reused_context
    a, b = fresh.predict(src), again.predict(src)
    assert np.array_equal(a.probability, b.probability) and np.array_equal(a.mask, b.mask)
    assert a.confidence == b.confidence
    # inspect-attn's --point needs the first reference's features, which are not stored: recomputed.
    assert np.allclose(fresh.attention(src, point=(40, 30)).point, again.attention(src, point=(40, 30)).point, atol=1e-6)
    assert _predictor(reference_cache=False).reference_cache is False


def test_context_arrays_round_trip_exactly(scene):
    img, mask, _ = scene
    predictor = _predictor()
    # a small token budget, so that both sides of this small reference are compacted
    predictor.propagator.settings = dataclasses.replace(predictor.propagator.settings, token_budget=4)
    ctx = predictor.propagator.set_references([(img, mask.astype(np.float32))])
    assert set(ctx.compact) == {"fg", "bg"}
    back = context_store.context_from_arrays(*context_store.context_arrays(ctx))
    for name in ("fg", "bg", "cells", "cell_targets"):
        assert torch.equal(getattr(ctx.tokens, name), getattr(back.tokens, name))
    assert torch.equal(ctx.roi_tokens, back.roi_tokens) and torch.equal(ctx.roi_valid, back.roi_valid)
    assert ctx.prototypes.keys() == back.prototypes.keys()
    assert all(torch.equal(ctx.prototypes[s], back.prototypes[s]) for s in ctx.prototypes)
    assert ctx.background_floor == back.background_floor and ctx.feature_dim == back.feature_dim
    assert ctx.compact.keys() == back.compact.keys()
    assert all(torch.equal(a, b) for side in ctx.compact for a, b in zip(ctx.compact[side], back.compact[side]))
    x = torch.randn(1, ctx.feature_dim, 3, 4)
    assert torch.equal(ctx.head.probability_map(x), back.head.probability_map(x))


@pytest.mark.parametrize("damage", ["truncated", "tensor bytes changed", "another key", "not safetensors"])
def test_a_damaged_context_is_rebuilt_not_trusted(cache, scene, damage):
    img, mask, src = scene
    first = _predictor()
    first.set_reference(img, mask)
    path = next((cache / "contexts").glob("*.safetensors"))
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "tensor bytes changed":  # a valid file whose arrays no longer match their digest
        path.write_bytes(data[:-8] + bytes(8))
    elif damage == "another key":
        from safetensors.torch import load_file, save_file
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata())
        meta["key"] = "0" * 64
        save_file(load_file(str(path)), str(path), metadata=meta)
    else:
        path.write_bytes(b"\x80\x04 not safetensors; a pickle would never be loaded")
    second = _predictor()
    second.set_reference(img, mask)
    assert not second.reused_context
    assert np.array_equal(first.predict(src).mask, second.predict(src).mask)
    third = _predictor()
    third.set_reference(img, mask)
    assert third.reused_context  # the rebuilt file is good


def test_cli_rerun_reuses_the_context_and_other_settings_build_another(small_scene, tmp_path, cache):
    runner = CliRunner()

    def run(*extra, out="o", size="96"):
        r = runner.invoke(app, ["propagate", "--ref", str(small_scene / "ref.png"), "--mask",
                                str(small_scene / "ref_mask.png"), str(small_scene / "src"), "-o", str(tmp_path / out),
                                "--overwrite", "--quiet", "--no-edges", "--head-steps", "10", "--size", size, *extra])
        assert r.exit_code == 0, r.output
        # the inode tells a rewrite (a new file renamed in) from a reuse (the same file, touched as used)
        return {p.name: p.stat().st_ino for p in (cache / "contexts").glob("*.safetensors")}

    first = run()
    assert len(first) == 1
    assert run(out="another_folder") == first            # the same references elsewhere: reused, not rewritten
    assert run("--threshold", "0.4") == first            # acts on sources only
    with_size = run(size="128")
    assert len(with_size) == 2 and all(with_size[k] == v for k, v in first.items())
    assert len(run("--runtime", "torch")) == 3
    assert not [p for p in (cache / "contexts").iterdir() if p.name.startswith(".")]  # no temporaries left
