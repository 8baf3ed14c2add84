"""The per-result confidence: known answers on synthetic predictions."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from icm_cli.geometry import WorkingGeometry
from icm_cli.predict.confidence import (ANALYSIS_SIDE, _analysis_size, EMPTY_CEILING, LEARNED_WEIGHTS, WEIGHTS, assess, combine, confidence_signals,
                                        grid_to_image, reference_area_share)
from icm_cli.predict.evidence import Evidence

H, W = 120, 200


def _disc(cy, cx, r, h=H, w=W) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _on_grid(full: np.ndarray, geo: WorkingGeometry) -> torch.Tensor:
    """A full-size map -> ``[1, 1, h, w]`` on the working grid (stride 8), as the engine's maps are."""
    canvas = geo.to_canvas(torch.from_numpy(full.astype(np.float32))[None, None])
    return F.adaptive_avg_pool2d(canvas, (geo.padded_h // 8, geo.padded_w // 8))


def _prediction(prob_full: np.ndarray, nearest=None, head=None, intra=None) -> Evidence:
    geo = WorkingGeometry.fit(H, W, 96, 32)
    grid = {name: None if m is None else _on_grid(m, geo)
            for name, m in (("nearest", nearest), ("head", head), ("intra", intra))}
    prob = _on_grid(prob_full, geo)
    return Evidence(geometry=geo, prob=prob, sim_fg=prob, sim_bg=1 - prob, **grid)


OBJECT = _disc(60, 70, 30)
ELSEWHERE = _disc(60, 160, 30)  # a background region of the same size


def _case(prob, mask, nearest=None, head=None, intra=None, ref_area=None):
    pred = _prediction(prob, nearest, head, intra)
    return assess(prob.astype(np.float32), mask, pred, ref_area)


def _crisp(region):
    return np.where(region, 0.995, 0.005)


def test_a_perfect_match_scores_high_and_above_a_half_wrong_one():
    truth = _crisp(OBJECT)
    perfect = _case(truth, OBJECT, nearest=truth, head=truth, intra=OBJECT * 1.0, ref_area=OBJECT.mean())
    # GrabCut (say) added a background region as large as the object that nothing supports.
    half_wrong = _case(truth, OBJECT | ELSEWHERE, nearest=truth, head=truth, intra=OBJECT * 1.0,
                       ref_area=OBJECT.mean())
    assert perfect.confidence > 0.85
    assert half_wrong.confidence < perfect.confidence - 0.25
    assert 0.0 <= half_wrong.confidence <= 1.0
    assert half_wrong.signals["self_iou"] == pytest.approx(0.49, abs=0.03)
    assert half_wrong.signals["grabcut"] == pytest.approx(0.5, abs=0.03)


def test_lukewarm_probabilities_are_less_crisp_and_a_mask_grabcut_moved_scores_lower():
    decisive = _case(_crisp(OBJECT), OBJECT)
    lukewarm = _case(np.where(OBJECT, 0.6, 0.4), OBJECT)
    assert lukewarm.signals["crisp"] < 0.5 < decisive.signals["crisp"]
    # GrabCut re-labels lukewarm regions by colour: where it moves the mask off the probability, trust drops.
    moved = _case(np.where(OBJECT, 0.6, 0.4), _disc(60, 85, 30))
    assert moved.signals["grabcut"] < 0.7
    assert moved.confidence < decisive.confidence - 0.15


def test_a_mask_spread_along_the_frame_scores_low():
    truth = _crisp(OBJECT)
    hillside = OBJECT.copy()
    hillside[:30, :] = True  # the object plus a band of background across the top of the frame
    prob = np.where(hillside, 0.995, 0.005)
    # Everything agrees with this mask (the map is confidently wrong); only its contact with the frame tells.
    wrong = _case(prob, hillside, nearest=prob, head=prob)
    right = _case(truth, OBJECT, nearest=truth, head=truth)
    assert wrong.signals["grabcut"] > 0.95 and wrong.signals["border"] < 0.8
    assert wrong.confidence < right.confidence - 0.1


def test_matchers_that_disagree_with_the_mask_lower_the_confidence():
    truth = _crisp(OBJECT)
    agree = _case(truth, OBJECT, nearest=truth, head=truth)
    other = _crisp(ELSEWHERE)
    disagree = _case(truth, OBJECT, nearest=other, head=other)
    assert agree.confidence > disagree.confidence + 0.2
    assert disagree.signals["nearest_mask"] < 0.1


def test_self_iou_known_values():
    left = np.zeros((H, W), bool)
    left[:, : W // 2] = True
    assert confidence_signals(left.astype(np.float32), left)["self_iou"] == pytest.approx(1.0)
    half = np.where(left, 0.5, 0.0).astype(np.float32)
    assert confidence_signals(half, left)["self_iou"] == pytest.approx(0.5, abs=1e-3)
    # probable object left out of the mask counts against it: p=1 everywhere, mask = half
    assert confidence_signals(np.ones((H, W), np.float32), left)["self_iou"] == pytest.approx(0.5, abs=1e-3)


def test_missing_parts_are_left_out_not_guessed():
    truth = _crisp(OBJECT)
    full = _case(truth, OBJECT, nearest=truth, head=truth, intra=OBJECT * 1.0)
    no_head = _case(truth, OBJECT, nearest=truth, intra=OBJECT * 1.0)   # --head-steps 0
    bare = assess(truth.astype(np.float32), OBJECT)                      # no prediction at all
    for a in (full, no_head, bare):
        assert 0.0 <= a.confidence <= 1.0 and not math.isnan(a.confidence)
    assert math.isnan(no_head.signals["head_mask"]) and math.isnan(bare.signals["nearest_mask"])
    assert no_head.confidence > 0.85 and bare.confidence > 0.85


def test_an_empty_mask_is_always_among_the_first_to_check():
    nothing = np.zeros((H, W), bool)
    a = _case(np.full((H, W), 0.01), nothing, ref_area=0.05)
    assert a.empty and a.mask_area == 0.0
    assert a.confidence <= EMPTY_CEILING
    assert a.record_fields() == {"confidence": round(a.confidence, 4), "empty": True, "mask_area": 0.0}


def test_area_far_from_the_references_lowers_the_area_signal():
    same = _case(_crisp(OBJECT), OBJECT, ref_area=OBJECT.mean())
    quarter = _case(_crisp(OBJECT), OBJECT, ref_area=OBJECT.mean() * 4)
    assert same.signals["area"] == pytest.approx(1.0, abs=1e-6)
    assert quarter.signals["area"] == pytest.approx(math.exp(-1), abs=1e-3)


def test_combine_skips_nan_and_is_bounded():
    assert combine({"grabcut": 1.0, "border": float("nan")}) == pytest.approx(1.0)
    assert combine({"grabcut": 0.5, "border": 0.5, "nearest_mask": 0.0625}) == pytest.approx(0.125)
    assert combine({}) == 0.0
    assert 0.0 <= combine({k: 0.0 for k in WEIGHTS}) < 0.01


def test_the_decoder_path_scores_decisiveness_and_the_frame_not_grabcut():
    assert combine({"crisp": 0.5, "border": 0.5, "grabcut": 0.1, "nearest_mask": 0.1}, learned=True) == \
        pytest.approx(0.25)
    assert combine({"grabcut": 0.1}, learned=True) == 0.0  # nothing it judges by
    assert 0.0 <= combine({k: 0.0 for k in LEARNED_WEIGHTS}, learned=True) < 0.01
    truth = _crisp(OBJECT)
    decisive = assess(truth.astype(np.float32), OBJECT, learned=True)
    lukewarm = assess(np.where(OBJECT, 0.6, 0.4).astype(np.float32), OBJECT, learned=True)
    assert decisive.confidence > 0.85 and lukewarm.confidence < 0.5
    # A decisive map GrabCut moved: the training-free formula distrusts it, the decoder's formula does not.
    moved = _disc(60, 85, 30)
    assert assess(truth.astype(np.float32), moved).confidence < 0.7
    assert assess(truth.astype(np.float32), moved, learned=True).confidence > 0.85
    # The confidently wrong mask along the frame is vetoed on both paths.
    hillside = OBJECT.copy()
    hillside[:30, :] = True
    wrong = assess(np.where(hillside, 0.995, 0.005).astype(np.float32), hillside, learned=True)
    assert wrong.confidence < decisive.confidence - 0.1
    nothing = np.zeros((H, W), bool)
    assert assess(np.full((H, W), 0.01, np.float32), nothing, learned=True).confidence <= EMPTY_CEILING


def test_grid_to_image_matches_the_geometry_mapping():
    geo = WorkingGeometry.fit(H, W, 96, 32)
    grid = torch.rand(1, 1, geo.padded_h // 8, geo.padded_w // 8, generator=torch.Generator().manual_seed(0))
    full = geo.to_original(grid)[0, 0].numpy()
    small = grid_to_image(grid, geo, (H // 2, W // 2))
    assert small.shape == (H // 2, W // 2)
    assert np.abs(small - full[::2, ::2]).mean() < 0.03


def test_reference_area_share_reads_the_context():
    ctx = SimpleNamespace(tokens=SimpleNamespace(cell_targets=torch.tensor([0.0, 0.5, 1.0, 0.5])))
    assert reference_area_share(ctx) == pytest.approx(0.5)
    assert reference_area_share(None) is None


def test_sizes_must_agree_and_large_images_stay_cheap():
    with pytest.raises(ValueError, match="same size"):
        confidence_signals(np.zeros((4, 4), np.float32), np.zeros((4, 5), bool))
    big_mask = np.zeros((3000, 4000), bool)
    big_mask[1000:2000, 1000:2500] = True
    prob = np.where(big_mask, 0.9, 0.1).astype(np.float32)
    # A 12 MP result is read at a bounded analysis size, so it costs what a small one does and scores the same
    # as the same picture at a quarter of the size.
    assert max(_analysis_size(3000, 4000)) <= ANALYSIS_SIDE
    small_mask, small_prob = big_mask[::4, ::4], prob[::4, ::4]
    assert assess(prob, big_mask).confidence == pytest.approx(assess(small_prob, small_mask).confidence, abs=2e-3)
