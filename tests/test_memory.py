"""The video memory (:mod:`icm_cli.predict.memory`): the readout's known answers, which frames take a
slot, the key projection's file, and the settings that steer it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from icm_cli.config import VideoConfig
from icm_cli.errors import IcmError, SettingError
from icm_cli.geometry import WorkingGeometry
from icm_cli.predict.evidence import Evidence
from icm_cli.predict.evidence_builder import placed
from icm_cli.predict.memory import FrameMemory, KeyProjection, builtin_keys, load_keys, readout, save_keys
from icm_cli.predict.temporal import TemporalContext

R = 1 / math.sqrt(2)
#: Three unit keys in 2-D: along x, along y, and halfway; their values 1, 0 and 0.5.
KEYS = torch.tensor([[1.0, 0.0, R], [0.0, 1.0, R]])
VALUES = torch.tensor([1.0, 0.0, 0.5])


# ------------------------------------------------------------------ readout
def test_top1_readout_takes_the_value_of_the_best_matching_key():
    query = torch.tensor([[1.0, 0.0, 0.6], [0.0, 1.0, 0.8]])  # along x, along y, nearest the halfway key
    out = readout(query, KEYS, VALUES, temperature=0.05, topk=1)
    assert out.tolist() == pytest.approx([1.0, 0.0, 0.5])


def test_topk_readout_is_the_softmax_of_the_best_affinities():
    query = torch.tensor([[1.0], [0.0]])  # affinities 1, 0, 1/sqrt(2); top-2: keys 0 and 2
    out = readout(query, KEYS, VALUES, temperature=0.5, topk=2)
    w0, w2 = math.exp(1 / 0.5), math.exp(R / 0.5)
    assert out.item() == pytest.approx((w0 * 1.0 + w2 * 0.5) / (w0 + w2), abs=1e-6)  
    assert out.item() == pytest.approx(0.82120, abs=1e-4)  # (1 + 0.5 e^-0.586) / (1 + e^-0.586)


def test_topk_beyond_the_memory_reads_every_cell():
    query = torch.tensor([[0.0], [1.0]])  # affinities 0, 1, 1/sqrt(2)
    out = readout(query, KEYS, VALUES, temperature=1.0, topk=50)
    w = [math.exp(0.0), math.exp(1.0), math.exp(R)]
    assert out.item() == pytest.approx((w[0] * 1.0 + w[1] * 0.0 + w[2] * 0.5) / sum(w), abs=1e-6)


def test_a_cold_readout_does_not_overflow():
    query = torch.tensor([[1.0], [0.0]])
    out = readout(query, KEYS, VALUES, temperature=1e-4, topk=3)  # exp(1 / 1e-4) unshifted would be inf
    assert torch.isfinite(out).all() and out.item() == pytest.approx(1.0)


# ------------------------------------------------------------------ slots
def _frame(value: float, cells: int = 4, dim: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.nn.functional.normalize(torch.ones(dim, cells), dim=0), torch.full((cells,), value)


def test_frames_take_a_slot_only_on_multiples_of_every_with_the_object_in_them():
    memory = FrameMemory(slots=10, every=5)
    for index in range(23):
        keys, values = _frame(0.0 if index == 10 else 1.0)  # frame 10: the object is gone
        memory.remember(keys, values, index)
    assert [s.index for s in memory.recent] == [0, 5, 15, 20]
    assert memory.previous.index == 22
    assert [s.index for s in memory.frames] == [0, 5, 15, 20, 22]  # the previous frame is read last


def test_the_oldest_slot_leaves_first_and_at_most_slots_are_kept():
    memory = FrameMemory(slots=2, every=3)
    for index in range(1, 14):
        memory.remember(*_frame(1.0), index)
    assert [s.index for s in memory.recent] == [9, 12]
    assert [s.index for s in memory.frames] == [9, 12, 13]


def test_a_slot_leaves_once_older_than_what_a_resumed_run_replays():
    """slots 2, every 3: a resumed run replays the last 2 * 3 + 1 = 7 frames; while the object is gone
    no new slot pushes the old ones out, so they leave by age instead."""
    memory = FrameMemory(slots=2, every=3)
    for index in range(20):
        gone = 8 <= index <= 16
        memory.remember(*_frame(0.0 if gone else 1.0), index)
        held = [s.index for s in memory.recent]
        assert all(index - h <= 2 * 3 for h in held), (index, held)
        if index == 9:
            assert held == [3, 6]  # 6 is 3 frames old, 3 is 6 frames old: both within the replay
        if index == 10:
            assert held == [6]
    assert [s.index for s in memory.recent] == [18]
    assert VideoConfig(memory=2, memory_every=3).memory_span == 2 * 3 + 1


def test_the_previous_frame_is_not_held_twice_when_it_took_a_slot():
    memory = FrameMemory(slots=2, every=3)
    for index in range(13):
        memory.remember(*_frame(1.0), index)
    assert [s.index for s in memory.frames] == [9, 12]


def test_a_given_frame_is_only_the_previous_frame():
    memory = FrameMemory(slots=4, every=5)
    memory.add_reference(*_frame(1.0))
    memory.remember(*_frame(1.0), 5, given=True)  # a keyframe among the sources: already a permanent slot
    assert list(memory.recent) == [] and memory.previous.index == 5
    assert len(memory.frames) == 2


def test_no_slots_keeps_only_the_references_and_the_previous_frame():
    memory = FrameMemory(slots=0, every=1)
    memory.add_reference(*_frame(1.0))
    for index in range(10):
        memory.remember(*_frame(1.0), index)
    assert list(memory.recent) == []
    assert [s.index for s in memory.frames] == [None, 9]


def test_references_are_always_read():
    ref_keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # the reference: object along x, background along y
    memory = FrameMemory(slots=2, every=1, topk=1)
    memory.add_reference(ref_keys, torch.tensor([1.0, 0.0]))
    away = torch.nn.functional.normalize(torch.tensor([[-1.0, -1.0], [1.0, 0.2]]), dim=0)
    for index in range(300):  # frames whose keys are far from the reference's x key, all background
        memory.remember(away, torch.zeros(2), index)
    assert memory.frames[0].index is None
    assert memory.read(torch.tensor([[1.0], [0.0]])).item() == pytest.approx(1.0)  # still found in frame 0


def test_an_empty_memory_reads_nothing():
    assert FrameMemory().read(torch.ones(2, 3)) is None


@pytest.mark.parametrize("every", [1, 7])
def test_memory_stays_bounded_over_a_long_clip(every):
    slots, references = 4, 2
    memory = FrameMemory(slots=slots, every=every)
    for _ in range(references):
        memory.add_reference(*_frame(1.0, cells=6, dim=8))
    for index in range(300):
        memory.remember(*_frame(1.0, cells=6, dim=8), index)
        assert len(memory.frames) <= slots + references + 1
    assert len(memory.recent) == slots
    held = sum(s.keys.numel() + s.values.numel() for s in memory.frames)
    assert held <= (slots + references + 1) * (8 * 6 + 6)


def test_temporal_context_bounded_over_a_long_clip():
    """Through the video path's own carrier: 300 frames, memory 3, every 2, one reference."""
    ctx = TemporalContext(VideoConfig(radius=2, memory=3, memory_every=2, motion=False))
    geo = WorkingGeometry.fit(40, 40, 32, 8)
    ft = torch.randn(1, 16, 4, 4)
    keys = ctx.frame_keys(ft)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    ctx.add_reference(keys, mask, geo)
    for index in range(300):
        ctx.update(mask, geo, ft, keys=keys, index=index)
    assert len(ctx.memory.frames) == 3 + 1 + 1
    assert [s.index for s in ctx.memory.recent] == [294, 296, 298]


def test_temporal_readout_is_zero_off_the_image_and_none_without_a_readout():
    geo = WorkingGeometry.fit(16, 40, 16, 16)  # 16 x 40 padded to 16 x 48: a 2 x 6 grid, its last column padding
    h, w = geo.padded_h // 8, geo.padded_w // 8
    valid = geo.valid_mask(h, w)
    assert (~valid).any()
    ft = torch.randn(1, 8, h, w)
    ctx = TemporalContext(VideoConfig(memory=2, memory_every=1, motion=False))
    keys = ctx.frame_keys(ft)
    assert ctx.readout(keys, geo) is None  # nothing held yet
    ctx.add_reference(keys, np.ones((16, 40), bool), geo)
    out = ctx.readout(keys, geo)
    assert out.shape == (1, 1, h, w)
    assert out[0, 0][~valid].eq(0).all()
    assert out[0, 0][valid].gt(0.5).all()  # every cell matches itself in a reference that is all object
    off = TemporalContext(VideoConfig(readout_weight=0.0, readout_prior=0.0, motion=False))
    off.add_reference(keys, np.ones((16, 40), bool), geo)
    assert off.readout(keys, geo) is None


# ------------------------------------------------------------------ mixing into the probability
def test_readout_is_mixed_into_the_probability_at_its_weight():
    geo = WorkingGeometry.fit(32, 32, 32, 8)
    prob = torch.full((1, 1, 4, 4), 0.2)
    zero = torch.zeros(1, 1, 4, 4)
    evidence = Evidence(geometry=geo, prob=prob, nearest=zero, sim_fg=zero, sim_bg=zero)
    read = torch.ones(1, 1, 4, 4)
    mixed = placed(evidence, readout=read, readout_weight=0.25)
    assert torch.allclose(mixed.prob, torch.full((1, 1, 4, 4), 0.75 * 0.2 + 0.25 * 1.0))
    assert mixed.with_readout(torch.zeros(1, 1, 8, 8)).eq(0.25).all()  # upsampled to any grid
    assert placed(evidence, readout=read, readout_weight=0.0).prob is prob


# ------------------------------------------------------------------ key projection file
def test_key_projection_round_trips_through_its_file(tmp_path):
    torch.manual_seed(3)
    model = KeyProjection(24, dim=8, temperature=0.07)
    path = tmp_path / "keys.safetensors"
    save_keys(model, path, {"backbone": "test"})
    loaded = load_keys(path)
    ft = torch.randn(2, 24, 5, 6)
    with torch.no_grad():
        assert torch.allclose(model(ft), loaded(ft))
    assert loaded.temperature == pytest.approx(0.07)
    assert loaded(ft).norm(dim=1).sub(1).abs().max() < 1e-5  # unit-length keys
    assert not any(p.requires_grad for p in loaded.parameters())


def test_a_corrupt_key_file_is_a_clear_error(tmp_path):
    path = tmp_path / "keys.safetensors"
    path.write_bytes(b"\x00" * 7 + b"not a safetensors file")
    with pytest.raises(IcmError, match="not a key projection file") as err:
        load_keys(path)
    assert str(path) in str(err.value)


def test_a_key_file_without_its_bias_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "keys.safetensors"
    save_file({"weight": torch.zeros(4, 8, 1, 1)}, str(path))
    with pytest.raises(IcmError, match="not a key projection file"):
        load_keys(path)


def test_builtin_keys_fit_only_their_backbone():
    class Backbone:
        def __init__(self, name, feature_dim):
            self.name, self.feature_dim = name, feature_dim

    assert builtin_keys(Backbone("no-such-backbone", 32)) is None
    shipped = builtin_keys(Backbone("efficientnet-lite0", 0))
    if shipped is None:
        pytest.skip("no shipped key projection for efficientnet-lite0")
    channels = shipped.project.in_channels
    assert builtin_keys(Backbone("efficientnet-lite0", channels)) is not None
    assert builtin_keys(Backbone("efficientnet-lite0", channels + 1)) is None  # another width: features as keys


# ------------------------------------------------------------------ settings
def test_memory_every_zero_is_refused():
    with pytest.raises(SettingError) as err:
        VideoConfig(memory_every=0)
    assert err.value.option == "--memory-every"


@pytest.mark.parametrize("weight", [1.5, -0.1])
@pytest.mark.parametrize("name", ["readout_weight", "readout_prior"])
def test_readout_shares_outside_0_1_are_refused(weight, name):
    with pytest.raises(SettingError) as err:
        VideoConfig(**{name: weight})
    assert err.value.option == "--" + name.replace("_", "-")


def test_memory_span_covers_every_slot():
    assert VideoConfig(memory=4, memory_every=5).memory_span == 21
    assert VideoConfig(memory=0, memory_every=5).memory_span == 1
    assert VideoConfig(memory=4, readout_weight=0.0, readout_prior=0.0).memory_span == 1
    assert not VideoConfig(readout_weight=0.0, readout_prior=0.0).reads_memory
    assert VideoConfig(readout_weight=0.0).reads_memory  # the default: the readout serves the decoder's prior
