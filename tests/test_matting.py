"""solve_alpha, the guided filter and cut-outs on small synthetic images with a known matte."""

from __future__ import annotations

import numpy as np
import pytest

from icm_cli import matting

FG = np.array([220.0, 60.0, 40.0])
BG = np.array([30.0, 90.0, 200.0])


def soft_edge(h=40, w=60, start=25, stop=35, seed=0):
    """Two colours blended by a known alpha ramp; returns image, true alpha, trimap."""
    rng = np.random.default_rng(seed)
    x = np.arange(w, dtype=np.float64)
    alpha = np.clip((stop - x) / (stop - start), 0.0, 1.0)
    alpha = np.tile(alpha, (h, 1))
    image = alpha[..., None] * FG + (1 - alpha[..., None]) * BG + rng.normal(0, 1.0, (h, w, 3))
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    trimap = np.full((h, w), 0.5, np.float32)
    trimap[:, :start - 4] = 1.0
    trimap[:, stop + 4:] = 0.0
    return image, alpha, trimap


@pytest.mark.parametrize("method", ["sm-cf", "cf"])
def test_solve_alpha_recovers_a_soft_edge_and_keeps_known_pixels(method):
    image, truth, trimap = soft_edge()
    alpha = matting.solve_alpha(image, trimap, method=method)
    assert alpha.shape == trimap.shape and alpha.dtype == np.float32
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    assert np.all(alpha[trimap == 1.0] == 1.0)
    assert np.all(alpha[trimap == 0.0] == 0.0)
    unknown = trimap == 0.5
    assert np.abs(alpha - truth)[unknown].mean() < 0.03
    assert np.abs(alpha - truth)[unknown].max() < 0.15


def test_solve_alpha_accepts_uint8_trimaps_0_128_255():
    image, truth, trimap = soft_edge()
    u8 = np.where(trimap == 1.0, 255, np.where(trimap == 0.0, 0, 128)).astype(np.uint8)
    a = matting.solve_alpha(image, u8, method="cf")
    b = matting.solve_alpha(image, trimap, method="cf")
    assert np.allclose(a, b)


def test_trimap_without_unknown_pixels_is_returned_as_is():
    image, _, _ = soft_edge()
    trimap = np.zeros((40, 60), np.float32)
    trimap[:, :30] = 1.0
    info = {}
    alpha = matting.solve_alpha(image, trimap, info=info)
    assert np.array_equal(alpha, trimap)
    assert info["method_used"] == "none"


def test_one_sided_trimaps_give_constant_unknowns_and_no_known_is_an_error():
    image, _, _ = soft_edge()
    only_bg = np.zeros((40, 60), np.float32)
    only_bg[:, 20:40] = 0.5
    assert np.array_equal(matting.solve_alpha(image, only_bg), np.zeros((40, 60), np.float32))
    only_fg = np.ones((40, 60), np.float32)
    only_fg[:, 20:40] = 0.5
    assert np.array_equal(matting.solve_alpha(image, only_fg), np.ones((40, 60), np.float32))
    with pytest.raises(ValueError, match="no known pixel"):
        matting.solve_alpha(image, np.full((40, 60), 0.5, np.float32))


def test_bad_inputs_are_value_errors_with_a_sentence():
    image, _, trimap = soft_edge()
    with pytest.raises(ValueError, match="unknown matting method"):
        matting.solve_alpha(image, trimap, method="magic")
    with pytest.raises(ValueError, match="trimap is 59x40 but the image is 60x40"):
        matting.solve_alpha(image, trimap[:, :59])


def test_failing_preconditioner_falls_back_to_jacobi(monkeypatch):
    image, truth, trimap = soft_edge()

    def broken(matrix):
        raise ValueError("Thresholded incomplete Cholesky decomposition failed")

    monkeypatch.setattr(matting, "_quiet_ichol", broken)
    info = {}
    alpha = matting.solve_alpha(image, trimap, method="cf", info=info)
    assert info["preconditioner"] == "jacobi"
    assert any("ichol" in f for f in info["fallbacks"])
    assert np.abs(alpha - truth)[trimap == 0.5].mean() < 0.03


def test_failing_sampling_step_falls_back_to_closed_form(monkeypatch):
    import pymatting

    def broken(*args, **kwargs):
        raise RuntimeError("sampling exploded")

    monkeypatch.setattr(pymatting, "estimate_alpha_sm", broken)
    image, truth, trimap = soft_edge()
    info = {}
    alpha = matting.solve_alpha(image, trimap, info=info)
    assert any("sm failed" in f for f in info["fallbacks"])
    assert np.abs(alpha - truth)[trimap == 0.5].mean() < 0.03


def test_every_method_failing_raises_matting_error(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no")

    monkeypatch.setattr(matting, "_solve_constrained", broken)
    import pymatting
    monkeypatch.setattr(pymatting, "estimate_alpha_sm", broken)
    image, _, trimap = soft_edge()
    with pytest.raises(matting.MattingError, match="every matting method failed"):
        matting.solve_alpha(image, trimap)


def test_only_the_unknown_band_is_solved():
    image, truth, trimap = soft_edge(h=40, w=200, start=25, stop=35)
    info = {}
    matting.solve_alpha(image, trimap, method="cf", info=info)
    y0, y1, x0, x1 = info["crop"]
    assert (y0, y1) == (0, 40) and x0 == 5 and x1 == 39 + 16


def test_large_images_are_solved_downscaled_and_upsampled_along_edges():
    image, truth, trimap = soft_edge(h=120, w=180, start=70, stop=100)
    info = {}
    alpha = matting.solve_alpha(image, trimap, max_pixels=3000, info=info)
    assert 0.0 < info["scale"] < 0.6
    assert np.all(alpha[trimap == 1.0] == 1.0) and np.all(alpha[trimap == 0.0] == 0.0)
    assert np.abs(alpha - truth)[trimap == 0.5].mean() < 0.05


def test_guided_filter_keeps_constants_and_blocks_do_not_change_the_result():
    rng = np.random.default_rng(1)
    guide = rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)
    const = np.full((50, 40), 0.3, np.float32)
    assert np.allclose(matting.guided_filter(guide, const, 3), 0.3, atol=1e-4)
    src = rng.random((50, 40)).astype(np.float32)
    whole = matting.guided_filter(guide, src, 3, rows_per_block=1000)
    blocks = matting.guided_filter(guide, src, 3, rows_per_block=7)
    assert np.allclose(whole, blocks, atol=1e-5)


def test_guided_filter_puts_the_jump_where_the_guide_has_its_edge():
    guide = np.zeros((20, 40, 3), np.uint8)
    guide[:, 20:] = 255
    blurry = np.tile(np.clip((np.arange(40) - 14) / 12, 0, 1), (20, 1)).astype(np.float32)
    sharp = matting.guided_filter(guide, blurry, 4, eps=1e-4)
    jumps = np.diff(sharp, axis=1)
    assert np.all(np.argmax(jumps, axis=1) == 19)          # between columns 19 and 20
    assert jumps[:, 19].min() > 3 * (1 / 12)               # the input rose 1/12 per column


def test_foreground_removes_the_old_background_from_soft_edges():
    image, truth, trimap = soft_edge()
    fg = matting.estimate_foreground(image, truth)
    soft = (truth > 0.2) & (truth < 0.8)
    err_fg = np.abs(fg[soft] * 255 - FG).mean()
    err_img = np.abs(image[soft].astype(float) - FG).mean()
    assert err_fg < 0.3 * err_img
    assert np.allclose(fg[truth == 1.0] * 255, image[truth == 1.0], atol=0.51)


def test_cutout_rgba_has_alpha_channel_equal_to_the_alpha():
    image, truth, _ = soft_edge()
    rgba = matting.cutout_rgba(image, truth)
    assert rgba.shape == (40, 60, 4) and rgba.dtype == np.uint8
    assert np.array_equal(rgba[..., 3], matting.alpha_to_u8(truth))


def test_solver_warnings_are_muted_for_this_thread_only(monkeypatch, capsys):
    import threading

    import pymatting

    def noisy_ichol(matrix, **kwargs):
        print("PERFORMANCE WARNING: ichol failed")
        other = threading.Thread(target=lambda: print("progress from another thread"))
        other.start()
        other.join()
        raise ValueError("diagonal shifts did not help")

    monkeypatch.setattr(pymatting, "ichol", noisy_ichol)
    image, truth, trimap = soft_edge()
    info = {}
    matting.solve_alpha(image, trimap, method="cf", info=info)
    out = capsys.readouterr().out
    assert "PERFORMANCE" not in out
    assert "progress from another thread" in out
    assert info["preconditioner"] == "jacobi"


def _spd_system(n=60, seed=3):
    """A sparse symmetric positive definite tridiagonal system with a known solution."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    off = -rng.uniform(0.2, 1.0, n - 1)
    diag = np.abs(np.r_[off, 0]) + np.abs(np.r_[0, off]) + rng.uniform(0.01, 0.1, n)
    A = sp.diags([off, diag, off], [-1, 0, 1], format="csr")
    x_true = rng.uniform(0, 1, n)
    return A, A.dot(x_true), x_true


def test_conjugate_gradient_solves_a_known_system_to_its_tolerance():
    from pymatting import jacobi

    A, b, x_true = _spd_system()
    x, converged = matting._cg(A, b, None, jacobi(A), 1000, rtol=1e-10)
    assert converged and np.abs(x - x_true).max() < 1e-6
    # the default tolerance is meant for 8-bit alpha: the residual is what was asked for
    x, converged = matting._cg(A, b, np.zeros_like(b), jacobi(A), 1000)
    assert converged
    assert np.linalg.norm(b - A.dot(x)) <= matting.CG_RTOL * np.linalg.norm(b)
    # a start at the answer stops at once; too few iterations say so and keep the iterate
    x, converged = matting._cg(A, b, x_true, jacobi(A), 0)
    assert converged and np.array_equal(x, x_true)
    x, converged = matting._cg(A, b, None, jacobi(A), 2, rtol=1e-12)
    assert not converged and np.all(np.isfinite(x))


def test_the_sm_cf_prior_uses_its_own_radii_and_sm_keeps_pymatting_defaults(monkeypatch):
    import pymatting as pm

    seen = []
    real = pm.estimate_alpha_sm

    def spy(image, trimap, **kwargs):
        seen.append(kwargs)
        return real(image, trimap, **kwargs)

    monkeypatch.setattr(pm, "estimate_alpha_sm", spy)
    image, truth, trimap = soft_edge()
    matting.solve_alpha(image, trimap, method="sm-cf")
    matting.solve_alpha(image, trimap, method="sm")
    assert seen[0]["sample_refinement_radius"] == matting.PRIOR_REFINEMENT_RADIUS == 3
    assert seen[0]["local_smoothing_radius1"] == matting.PRIOR_SMOOTHING_RADIUS == 3
    assert seen[1]["sample_refinement_radius"] == 5 and seen[1]["local_smoothing_radius1"] == 5


def test_foreground_estimate_leaves_numba_thread_count_as_it_was():
    import numba

    before = numba.get_num_threads()
    image, truth, _ = soft_edge()
    matting.estimate_foreground(image, truth)
    assert numba.get_num_threads() == before
