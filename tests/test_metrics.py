"""Known answers for the mask and alpha metrics on hand-made arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from icm_cli import metrics


def square(h, w, top, left, size):
    m = np.zeros((h, w), bool)
    m[top:top + size, left:left + size] = True
    return m


# ------------------------------------------------------------------- iou

def test_iou_known_values():
    a = square(10, 10, 0, 0, 4)          # 16 px
    b = square(10, 10, 2, 2, 4)          # 16 px, overlap 2x2 = 4
    assert metrics.iou(a, b) == pytest.approx(4 / 28)
    assert metrics.iou(a, a) == 1.0
    assert metrics.iou(a, ~a) == 0.0


def test_iou_both_empty_is_one_and_one_empty_is_zero():
    empty = np.zeros((5, 5), bool)
    assert metrics.iou(empty, empty) == 1.0
    assert metrics.iou(empty, square(5, 5, 1, 1, 2)) == 0.0


def test_iou_thresholds_uint8_and_float_at_half_range():
    a = np.array([[0, 255], [127, 128]], np.uint8)   # object: 255, 128
    b = np.array([[0.0, 1.0], [0.0, 0.6]])
    assert metrics.iou(a, b) == 1.0


def test_iou_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in size"):
        metrics.iou(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


# ------------------------------------------------------------ boundary F

def test_mask_boundary_is_the_inner_ring_and_ignores_the_frame():
    m = square(8, 8, 2, 2, 4)
    b = metrics.mask_boundary(m)
    assert b.sum() == 12                      # 4x4 square: 16 - 2x2 inside
    assert not b[3:5, 3:5].any()
    full = np.ones((6, 6), bool)
    assert metrics.mask_boundary(full).sum() == 0   # the frame is not an edge


def test_boundary_f_identical_masks_is_perfect():
    m = square(50, 50, 10, 10, 20)
    assert metrics.boundary_f(m, m) == (1.0, 1.0, 1.0)


def test_boundary_f_shift_within_and_beyond_tolerance():
    a = square(100, 100, 20, 20, 40)
    b = square(100, 100, 20, 22, 40)          # shifted 2 px right
    # diagonal 141.4 * 0.008 -> radius 2: every boundary pixel has a partner
    assert metrics.boundary_f(a, b).f == pytest.approx(1.0)
    # zero tolerance: only the overlapping parts of the top and bottom rows match
    p, r, f = metrics.boundary_f(a, b, tolerance=0)
    # boundary of a 40x40 square: 156 px; top/bottom rows overlap in 38 px each
    # minus corners that are on a side in one mask and interior in the other
    pb, gb = metrics.mask_boundary(a), metrics.mask_boundary(b)
    expected = (pb & gb).sum() / 156
    assert p == pytest.approx(expected) and r == pytest.approx(expected)
    assert f == pytest.approx(expected)
    assert f < 0.6


def test_boundary_f_empty_cases():
    empty = np.zeros((20, 20), bool)
    m = square(20, 20, 5, 5, 6)
    assert metrics.boundary_f(empty, empty) == (1.0, 1.0, 1.0)
    assert metrics.boundary_f(empty, m) == (1.0, 0.0, 0.0)
    assert metrics.boundary_f(m, empty) == (0.0, 1.0, 0.0)


def test_boundary_f_precision_and_recall_are_asymmetric():
    gt = square(60, 60, 10, 10, 20)
    pred = gt | square(60, 60, 40, 40, 10)    # an extra far-away blob
    p, r, f = metrics.boundary_f(pred, gt, tolerance=1)
    assert r == 1.0
    n_gt, n_extra = 76, 36                    # boundary sizes of 20x20 and 10x10 squares
    assert p == pytest.approx(n_gt / (n_gt + n_extra))
    assert f == pytest.approx(2 * p / (p + 1))


# ---------------------------------------------------------------- alpha

def test_sad_mse_l2_known_values():
    gt = np.zeros((10, 10))
    pred = np.zeros((10, 10))
    pred[0, :4] = 0.5                          # 4 px off by 0.5
    assert metrics.sad(pred, gt) == pytest.approx(2.0 / 1000)
    assert metrics.mse(pred, gt) == pytest.approx(4 * 0.25 / 100)
    region = np.zeros((10, 10), bool)
    region[0, :8] = True                       # 8 px, 4 of them wrong
    assert metrics.mse(pred, gt, region) == pytest.approx(4 * 0.25 / 8)
    assert metrics.sad(pred, gt, region) == pytest.approx(2.0 / 1000)
    assert metrics.l2_unknown(pred, gt, region) == pytest.approx(math.sqrt(4 * 0.25))
    assert metrics.mse(pred, gt, np.zeros((10, 10), bool)) == 0.0


def test_alpha_metrics_read_uint8_as_0_to_255():
    gt = np.zeros((4, 4), np.uint8)
    pred = np.full((4, 4), 255, np.uint8)
    assert metrics.sad(pred, gt) == pytest.approx(16 / 1000)
    assert metrics.mse(pred, gt) == pytest.approx(1.0)


def test_gradient_magnitude_of_a_ramp_is_its_slope():
    ramp = np.tile(np.arange(40) * 0.02, (30, 1))
    g = metrics.gradient_magnitude(ramp)
    assert np.allclose(g[8:-8, 8:-8], 0.02)
    assert np.allclose(metrics.gradient_magnitude(ramp.T)[8:-8, 8:-8], 0.02)


def test_gradient_error_known_value():
    ramp = np.tile(np.arange(40) * 0.02, (30, 1))
    flat = np.full_like(ramp, 0.4)
    region = np.zeros(ramp.shape, bool)
    region[8:-8, 8:-8] = True                  # 14 x 24 interior pixels
    assert metrics.gradient_error(flat, ramp, region) == pytest.approx(14 * 24 * 0.02 ** 2 / 1000)
    assert metrics.gradient_error(ramp, ramp) == 0.0


def test_connectivity_error_of_a_detached_island():
    gt = np.zeros((20, 20))
    gt[2:10, 2:10] = 1.0
    pred = gt.copy()
    pred[15:18, 15:18] = 0.8                   # 9 px, not connected to the object
    # island: l = 0 (lost at the first threshold), d_pred = 0.8 >= 0.15 -> phi 0.2;
    # gt there is 0 -> phi 1. Everything else agrees.
    assert metrics.connectivity_error(pred, gt) == pytest.approx(9 * 0.8 / 1000)
    assert metrics.connectivity_error(gt, gt) == 0.0


def test_connectivity_error_ignores_small_differences_below_theta():
    gt = np.zeros((10, 10))
    gt[2:8, 2:8] = 1.0
    pred = gt.copy()
    pred[0, 0] = 0.1                           # detached but d = 0.1 < theta = 0.15
    assert metrics.connectivity_error(pred, gt) == 0.0


def test_connected_soft_edge_costs_nothing_but_a_detached_one_does():
    gt = np.zeros((12, 12))
    gt[:, :6] = 1.0
    gt[:, 6] = 0.5                             # soft column touching the object
    assert metrics.connectivity_error(gt, gt) == 0.0
    pred = gt.copy()
    pred[:, 9] = 0.5                           # same values, but separated by a 0 column
    # column 9: l = 0, d = 0.5 -> phi_pred 0.5 vs phi_gt 1 (gt is 0 there)
    assert metrics.connectivity_error(pred, gt) == pytest.approx(12 * 0.5 / 1000)


def test_temporal_stability_known_values():
    from icm_cli.metrics import temporal_stability
    a = np.zeros((4, 4), bool)
    a[:2] = True  # 8 pixels
    b = np.zeros((4, 4), bool)
    b[1:3] = True  # overlaps a in 4 of 12
    assert temporal_stability([a, a, a]) == 1.0
    assert temporal_stability([a, b]) == pytest.approx(4 / 12)
    assert temporal_stability([a, b, b]) == pytest.approx((4 / 12 + 1) / 2)
    assert np.isnan(temporal_stability([a]))
