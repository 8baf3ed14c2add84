"""Alpha matting from a trimap, foreground colours and RGBA cut-outs.

numpy in, numpy out: no files, no printing. The solvers come from pymatting;
this module decides what to solve (only the part of the image around the
unknown band, downscaled above a pixel budget), keeps the known regions
exact, and falls back to a simpler preconditioner or method instead of
failing when a solver does.

Default method ``"sm-cf"``: Shared Matting (Gastal & Oliveira 2010, a
sampling method) gives a first alpha; the closed-form matting Laplacian
(Levin et al. 2008) then smooths it, minimising
``a^T L a + lam * |a - a_sm|^2`` over the unknown pixels with the known
pixels fixed (the data term of Wang & Cohen's robust matting, with a uniform
confidence). On alphamatting.com GT01-GT08 (trimap1) it lowers the mean L2
error over the unknown pixels from 34.7 (pymatting closed-form defaults) to
20.65; see ``benchmarks/bench_matting.py``. The prior's last two steps use
smaller windows than pymatting's defaults and the conjugate gradient stops at
a tolerance suited to 8-bit alpha: an 854x480 video frame's band takes about
0.6 s of one core, about what ``propagate`` spends on its mask.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
from typing import Optional

import cv2
import numpy as np

from icm_cli.config import DEFAULT_MATTE_METHOD as DEFAULT_METHOD  # noqa: F401 - re-exported
from icm_cli.config import DEFAULT_SOLVE_PIXELS, MATTE_METHODS as METHODS  # noqa: F401
from icm_cli.errors import ArrayError, MattingError, SettingError  # noqa: F401 (MattingError re-exported)

#: Trimap values at or below this are background, at or above ``1 - this``
#: foreground, anything between is unknown (tolerates JPEG-damaged 0/128/255).
KNOWN_TOLERANCE = 0.1

#: Weight of the sampling prior in ``"sm-cf"`` (flat between 0.001 and 0.01
#: on the development images).
PRIOR_WEIGHT = 0.003

#: Relative residual at which the conjugate gradient stops. Alpha is written
#: with 8 bits; on the development images 1e-4 scores as 1e-6 did (mean L2
#: 20.93 vs 20.95, ``benchmarks/bench_matting.py``) in a third of the iterations.
CG_RTOL = 1e-4

#: Window radii of shared matting's last two steps (sample refinement, local
#: smoothing) when it is the prior of ``"sm-cf"``. The Laplacian smooths after
#: it, so pymatting's defaults (5, 5) mostly blurred detail and cost time:
#: development mean L2 20.93 with (5, 5), 20.63 with (5, 4), 20.41 with (5, 3),
#: 21.20 with (3, 5), 20.65 with (3, 3) in 60% of the prior's time
#: (``benchmarks/bench_matting.py``).
PRIOR_REFINEMENT_RADIUS = 3
PRIOR_SMOOTHING_RADIUS = 3

# Pixels of context kept around the unknown band, at working resolution.
_MARGIN = 16
# Guided-filter upsampling: radius in low-resolution pixels, regularisation.
_GF_RADIUS_LOW = 2.0
_GF_EPS = 1e-4


# --------------------------------------------------------------------- trimaps

def split_trimap(trimap: np.ndarray, tolerance: float = KNOWN_TOLERANCE
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[H, W]`` trimap in [0, 1] -> (foreground, background, unknown), each ``[H, W]`` bool.

    ``<= tolerance`` is background, ``>= 1 - tolerance`` foreground, the rest unknown.
    """
    t = np.asarray(trimap, dtype=np.float32)
    if t.ndim != 2:
        raise ArrayError(f"trimap must be [H, W], got shape {t.shape}")
    fg = t >= 1.0 - tolerance
    bg = t <= tolerance
    return fg, bg, ~(fg | bg)


def _check_inputs(image: np.ndarray, trimap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    trimap = np.asarray(trimap)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ArrayError(f"image must be [H, W, 3] RGB, got shape {image.shape}")
    if trimap.ndim != 2:
        raise ArrayError(f"trimap must be [H, W], got shape {trimap.shape}")
    if trimap.shape != image.shape[:2]:
        raise ArrayError(f"trimap is {trimap.shape[1]}x{trimap.shape[0]} but the image is "
                         f"{image.shape[1]}x{image.shape[0]}")
    if image.dtype == np.uint8:
        pass
    elif np.issubdtype(image.dtype, np.floating):
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ArrayError(f"image must be uint8 (0-255) or float (0-1), got {image.dtype}")
    if trimap.dtype == np.bool_:
        trimap = trimap.astype(np.float32)
    elif not np.issubdtype(trimap.dtype, np.floating):
        top = 255.0 if trimap.dtype == np.uint8 else float(max(trimap.max(), 1))
        trimap = trimap.astype(np.float32) / top
    elif trimap.size and (np.nanmin(trimap) < 0.0 or np.nanmax(trimap) > 1.0):
        raise ArrayError("a float trimap must hold values in [0, 1] (0 background, 1 object, between unknown)")
    return image, trimap.astype(np.float32)


# ----------------------------------------------------------------- guided filter

def _box(x: np.ndarray, radius: int) -> np.ndarray:
    k = 2 * radius + 1
    return cv2.blur(x, (k, k), borderType=cv2.BORDER_REFLECT)


def _guided_filter_block(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Colour guided filter (He et al.) on one block; guide ``[h, w, 3]``, src ``[h, w]``, float32."""
    mean_i = [_box(guide[..., c], radius) for c in range(3)]
    mean_p = _box(src, radius)
    cov_ip = [_box(guide[..., c] * src, radius) - mean_i[c] * mean_p for c in range(3)]
    var = {}
    for a in range(3):
        for b in range(a, 3):
            var[a, b] = _box(guide[..., a] * guide[..., b], radius) - mean_i[a] * mean_i[b]
            if a == b:
                var[a, b] += eps
    # Inverse of the symmetric 3x3 [var] per pixel via cofactors.
    s00, s01, s02, s11, s12, s22 = var[0, 0], var[0, 1], var[0, 2], var[1, 1], var[1, 2], var[2, 2]
    c00 = s11 * s22 - s12 * s12
    c01 = s02 * s12 - s01 * s22
    c02 = s01 * s12 - s02 * s11
    c11 = s00 * s22 - s02 * s02
    c12 = s01 * s02 - s00 * s12
    c22 = s00 * s11 - s01 * s01
    det = s00 * c00 + s01 * c01 + s02 * c02
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    a0 = (c00 * cov_ip[0] + c01 * cov_ip[1] + c02 * cov_ip[2]) / det
    a1 = (c01 * cov_ip[0] + c11 * cov_ip[1] + c12 * cov_ip[2]) / det
    a2 = (c02 * cov_ip[0] + c12 * cov_ip[1] + c22 * cov_ip[2]) / det
    b = mean_p - a0 * mean_i[0] - a1 * mean_i[1] - a2 * mean_i[2]
    return (_box(a0, radius) * guide[..., 0] + _box(a1, radius) * guide[..., 1]
            + _box(a2, radius) * guide[..., 2] + _box(b, radius))


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float = _GF_EPS,
                  rows_per_block: int = 512) -> np.ndarray:
    """Edge-preserving smoothing of ``src`` following the edges of ``guide`` (He et al. 2010).

    guide: ``[H, W, 3]`` uint8 (or float in [0, 1]); src: ``[H, W]`` float.
    radius: box radius in pixels; eps: regularisation (guide in [0, 1] units).
    Returns ``[H, W]`` float32. Worked in blocks of rows (with a ``2 * radius``
    overlap, so the result equals the one-block filter) to bound memory.
    """
    guide = np.asarray(guide)
    if guide.ndim != 3 or guide.shape[2] != 3 or guide.shape[:2] != np.shape(src):
        raise ArrayError(f"guide must be [H, W, 3] matching src {np.shape(src)}, got {guide.shape}")
    radius = max(int(radius), 1)
    scale = 1.0 / 255.0 if guide.dtype == np.uint8 else 1.0
    h = guide.shape[0]
    out = np.empty(guide.shape[:2], dtype=np.float32)
    step = max(rows_per_block, 1)
    pad = 2 * radius
    for y0 in range(0, h, step):
        y1 = min(h, y0 + step)
        a, b = max(0, y0 - pad), min(h, y1 + pad)
        g = guide[a:b].astype(np.float32) * np.float32(scale)
        p = np.asarray(src[a:b], dtype=np.float32)
        out[y0:y1] = _guided_filter_block(g, p, radius, eps)[y0 - a:y1 - a]
    return out


# ---------------------------------------------------------------------- solvers

class _MuteThisThread:
    """A stdout that drops what one thread writes and passes everything else on."""

    def __init__(self, target, thread_id: int) -> None:
        self._target = target
        self._thread_id = thread_id

    def write(self, text: str) -> int:
        if threading.get_ident() == self._thread_id:
            return len(text)
        return self._target.write(text)

    def __getattr__(self, name):
        return getattr(self._target, name)


_STDOUT_LOCK = threading.Lock()


@contextlib.contextmanager
def _mute_this_thread():
    """Silence console prints of this thread only (pymatting's ichol prints its
    warnings); other threads, e.g. a progress display, keep printing."""
    with _STDOUT_LOCK:
        saved = sys.stdout
        sys.stdout = _MuteThisThread(saved, threading.get_ident())
    try:
        yield
    finally:
        with _STDOUT_LOCK:
            if isinstance(sys.stdout, _MuteThisThread) and sys.stdout._target is saved:
                sys.stdout = saved


def _quiet_ichol(matrix):
    """pymatting's incomplete Cholesky, its console warnings swallowed, fill bounded."""
    from pymatting import ichol

    max_nnz = int(min(4e9 / 16, max(30 * matrix.nnz, 1_000_000)))
    with _mute_this_thread():
        return ichol(matrix.tocsc(), max_nnz=max_nnz)


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a . b`` as a numpy reduction, not a BLAS call (see :func:`_cg`)."""
    return float(np.multiply(a, b).sum())


def _cg(matrix, rhs, x0, preconditioner, maxiter: int, rtol: float = CG_RTOL):
    """Preconditioned conjugate gradient for the symmetric positive definite ``matrix``.

    matrix: ``[U, U]`` sparse; rhs, x0: ``[U]`` float64 (x0 None starts from 0);
    preconditioner: a callable or a sparse matrix applied to the residual.
    Stops when ``|r| <= rtol * |rhs|``. Returns ``(x, converged)``; after
    ``maxiter`` iterations (or a breakdown) the last iterate and False.

    Written here rather than pymatting's ``cg`` because that one takes its
    dot products and norms from BLAS: on vectors this short OpenBLAS's
    worker threads mostly spin, which measured 10-15x the CPU time of the
    whole solve on a 2-core machine and, in ``propagate``, took the cores
    from the model. A numpy reduction does the same sums on one core.
    """
    apply = preconditioner if callable(preconditioner) else preconditioner.dot
    x = np.zeros_like(rhs) if x0 is None else np.array(x0, dtype=np.float64, copy=True)
    r = rhs - matrix.dot(x)
    stop = rtol * math.sqrt(_dot(rhs, rhs))
    if math.sqrt(_dot(r, r)) <= stop:
        return x, True
    z = apply(r)
    p = np.array(z, dtype=np.float64, copy=True)
    rz = _dot(r, z)
    for _ in range(maxiter):
        Ap = matrix.dot(p)
        pAp = _dot(p, Ap)
        if not (pAp > 0.0 and math.isfinite(pAp)):  # breakdown: not positive definite numerically
            return x, False
        step = rz / pAp
        x += step * p
        r -= step * Ap
        if math.sqrt(_dot(r, r)) <= stop:
            return x, True
        z = apply(r)
        rz_next = _dot(r, z)
        p *= rz_next / rz
        p += z
        rz = rz_next
    return x, False


def _solve_constrained(laplacian, fg: np.ndarray, unknown: np.ndarray, prior: Optional[np.ndarray],
                       weight: float, info: dict, local: bool = True) -> np.ndarray:
    """Minimise ``a^T L a + weight * |a - prior|^2`` over unknown pixels, known pixels fixed.

    laplacian: ``[N, N]`` sparse, N = H*W; fg, unknown: ``[H, W]`` bool;
    prior: ``[H, W]`` float or None. Returns the unknown values, ``[U]`` float64.
    Conjugate gradient with an incomplete-Cholesky preconditioner, falling
    back to Jacobi when it cannot be built. Jacobi comes first when a prior
    is given (well conditioned) and the only one with ``local=False`` (KNN,
    whose non-local Laplacian makes incomplete Cholesky fill in badly, and
    random walk, as pymatting does). A solve that does not converge keeps its
    last iterate (recorded in ``info``).
    """
    import scipy.sparse as sp

    unknown_flat = unknown.ravel()
    known_flat = ~unknown_flat
    L = laplacian.tocsr()
    rows = L[unknown_flat]
    A = rows[:, unknown_flat].tocsr()
    R = rows[:, known_flat]
    del rows
    rhs = -R.dot(fg.ravel()[known_flat].astype(np.float64))
    x0 = None
    if prior is not None and weight > 0:
        p = prior.ravel()[unknown_flat].astype(np.float64)
        A = (A + weight * sp.identity(A.shape[0], format="csr")).tocsr()
        rhs = rhs + weight * p
        x0 = p
    from pymatting import jacobi

    # The prior term makes the system well conditioned: Jacobi then needs a
    # few hundred cheap iterations, faster than building incomplete Cholesky.
    if not local:
        order = ("jacobi",)
    elif x0 is not None:
        order = ("jacobi", "ichol")
    else:
        order = ("ichol", "jacobi")
    best = None
    for name in order:
        try:
            M = jacobi(A) if name == "jacobi" else _quiet_ichol(A)
        except Exception as exc:  # preconditioner failure: seen on real images
            info.setdefault("fallbacks", []).append(f"{name} preconditioner failed ({exc})")
            continue
        try:
            x, converged = _cg(A, rhs, x0, M, 10_000)
        except Exception as exc:
            info.setdefault("fallbacks", []).append(f"cg with {name} failed ({exc})")
            continue
        if not np.all(np.isfinite(x)):
            info.setdefault("fallbacks", []).append(f"cg with {name} gave non-finite values")
            continue
        info["preconditioner"] = name
        if converged:
            return x
        info.setdefault("fallbacks", []).append(f"cg with {name} did not converge")
        best = x
    if best is not None:
        info["converged"] = False
        return best
    raise MattingError("the linear solver failed with every preconditioner")


def _laplacian(method: str, image: np.ndarray, known: np.ndarray):
    import pymatting as pm

    if method == "cf":
        return pm.cf_laplacian(image, is_known=known)
    if method == "lbdm":
        return pm.lbdm_laplacian(image)
    if method == "knn":
        return pm.knn_laplacian(image)
    if method == "rw":
        return pm.rw_laplacian(image)
    raise ValueError(method)


def _solve_working(image_u8: np.ndarray, fg: np.ndarray, bg: np.ndarray, method: str,
                   prior_weight: float, info: dict) -> np.ndarray:
    """Alpha for one working region: ``[h, w, 3]`` uint8, fg/bg ``[h, w]`` bool (both present).

    Returns ``[h, w]`` float64 in [0, 1]; known pixels exactly 0 / 1.
    """
    import pymatting as pm

    unknown = ~(fg | bg)
    image = image_u8.astype(np.float64) / 255.0
    trimap = np.full(fg.shape, 0.5)
    trimap[fg] = 1.0
    trimap[bg] = 0.0
    alpha = fg.astype(np.float64)

    def run(name: str) -> np.ndarray:
        # Inputs are validated above, so pymatting has nothing to warn about.
        if name in ("sm", "sm-prior"):
            # the prior's radii are ours; the "sm" method keeps pymatting's defaults
            refine, r = (PRIOR_REFINEMENT_RADIUS, PRIOR_SMOOTHING_RADIUS) if name == "sm-prior" else (5, 5)
            return np.asarray(pm.estimate_alpha_sm(image, trimap, sample_refinement_radius=refine,
                                                   local_smoothing_radius1=r, local_smoothing_radius2=r,
                                                   local_smoothing_radius3=r), dtype=np.float64)
        if name == "lkm":
            return np.asarray(pm.estimate_alpha_lkm(image, trimap), dtype=np.float64)
        prior, weight, lap = None, 0.0, name
        if name == "sm-cf":
            lap = "cf"
            try:
                prior, weight = run("sm-prior"), prior_weight
            except Exception as exc:
                info.setdefault("fallbacks", []).append(f"sm failed ({type(exc).__name__}: {exc}); cf alone")
        L = _laplacian(lap, image, fg | bg)
        out = fg.astype(np.float64)
        out[unknown] = _solve_constrained(L, fg, unknown, prior, weight, info, local=lap in ("cf", "lbdm"))
        return out

    chain = [method] + [m for m in ("cf", "sm") if m != method and not (method == "sm-cf" and m == "cf")]
    errors = []
    for name in chain:
        try:
            result = run(name)
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            info.setdefault("fallbacks", []).append(f"{name} failed ({type(exc).__name__}: {exc})")
            continue
        if result.shape != fg.shape or not np.all(np.isfinite(result)):
            errors.append(f"{name}: gave an invalid result")
            continue
        info["method_used"] = name
        alpha[unknown] = np.clip(result[unknown], 0.0, 1.0)
        return alpha
    raise MattingError("every matting method failed: " + "; ".join(errors))


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def solve_alpha(image: np.ndarray, trimap: np.ndarray, method: str = DEFAULT_METHOD,
                max_pixels: int = DEFAULT_SOLVE_PIXELS, *, prior_weight: float = PRIOR_WEIGHT,
                tolerance: float = KNOWN_TOLERANCE, info: Optional[dict] = None) -> np.ndarray:
    """Alpha matte of ``image`` given ``trimap``.

    image: ``[H, W, 3]`` uint8 RGB (float in [0, 1] is accepted).
    trimap: ``[H, W]`` float in [0, 1] (uint8 0/128/255 is accepted): ``<= tolerance``
        background, ``>= 1 - tolerance`` foreground, between unknown.
    method: one of :data:`METHODS`: ``"sm-cf"`` (default: shared-matting prior
        smoothed by the closed-form Laplacian), ``"cf"`` closed-form, ``"lbdm"``,
        ``"knn"``, ``"rw"`` random walk (these four with hard trimap
        constraints), ``"lkm"`` large-kernel, ``"sm"`` shared matting.
    max_pixels: working budget. Only the bounding box of the unknown band
        (plus a margin) is solved; above this many pixels it is solved
        downscaled and the alpha upsampled with a guided filter guided by
        the full-resolution image.
    info: optional dict filled with what was done (``method_used``,
        ``scale``, ``crop``, ``preconditioner``, ``fallbacks``).

    Returns ``[H, W]`` float32 in [0, 1]; known pixels are exactly 1 / 0.
    A trimap with no unknown pixel is returned as its 0/1 map; one with no
    foreground (background) pixel gives 0 (1) in the unknown band. Raises
    ``ValueError`` for bad shapes, an unknown method or a trimap without any
    known pixel, and :class:`MattingError` when every solver failed.
    """
    if method not in METHODS:
        raise SettingError(f"unknown matting method {method!r}; choose one of {', '.join(METHODS)}")
    if max_pixels < 1024:
        raise SettingError(f"max_pixels must be at least 1024, got {max_pixels}")
    info = {} if info is None else info
    image, trimap = _check_inputs(image, trimap)
    fg, bg, unknown = split_trimap(trimap, tolerance)
    alpha = fg.astype(np.float32)
    info.update(method=method, scale=1.0, crop=None)
    if not unknown.any():
        info["method_used"] = "none"
        return alpha
    if not fg.any() and not bg.any():
        raise ArrayError("the trimap has no known pixel (no 0 and no 1): nothing to propagate from")
    if not fg.any() or not bg.any():
        alpha[unknown] = 0.0 if not fg.any() else 1.0
        info["method_used"] = "constant"
        return alpha

    H, W = trimap.shape
    y0, y1, x0, x1 = _bbox(unknown)
    scale = 1.0
    for _ in range(2):  # margin is in working pixels, so it depends on the scale
        m = int(math.ceil(_MARGIN / scale))
        cy0, cy1, cx0, cx1 = max(0, y0 - m), min(H, y1 + m), max(0, x0 - m), min(W, x1 + m)
        area = (cy1 - cy0) * (cx1 - cx0)
        scale = min(1.0, math.sqrt(max_pixels / area))
    crop = (slice(cy0, cy1), slice(cx0, cx1))
    c_fg, c_bg = fg[crop], bg[crop]
    if not c_fg.any() or not c_bg.any():  # the band's box misses one side: use everything
        cy0, cy1, cx0, cx1 = 0, H, 0, W
        crop = (slice(0, H), slice(0, W))
        c_fg, c_bg = fg, bg
        scale = min(1.0, math.sqrt(max_pixels / (H * W)))
    info["crop"] = (cy0, cy1, cx0, cx1)
    c_img = image[crop]
    c_unknown = unknown[crop]
    ch, cw = c_fg.shape

    if scale >= 1.0:
        c_alpha = _solve_working(c_img, c_fg, c_bg, method, prior_weight, info)
    else:
        wh, ww = max(2, int(round(ch * scale))), max(2, int(round(cw * scale)))
        info["scale"] = scale
        w_img = cv2.resize(c_img, (ww, wh), interpolation=cv2.INTER_AREA)
        # A working pixel is known only if every full-resolution pixel under it is.
        w_fg = cv2.resize(c_fg.astype(np.float32), (ww, wh), interpolation=cv2.INTER_AREA) >= 0.999
        w_bg = cv2.resize(c_bg.astype(np.float32), (ww, wh), interpolation=cv2.INTER_AREA) >= 0.999
        if not w_fg.any() or not w_bg.any():
            raise MattingError(f"the known regions vanish when {cw}x{ch} is shrunk to {ww}x{wh}; "
                               "raise the pixel budget")
        w_alpha = _solve_working(w_img, w_fg, w_bg, method, prior_weight, info)
        up = cv2.resize(w_alpha.astype(np.float32), (cw, ch), interpolation=cv2.INTER_LINEAR)
        radius = max(1, int(round(_GF_RADIUS_LOW / scale)))
        c_alpha = guided_filter(c_img, up, radius, _GF_EPS)
    values = np.clip(c_alpha[c_unknown], 0.0, 1.0).astype(np.float32)
    alpha[crop][c_unknown] = values
    return alpha


# ------------------------------------------------------------------ foreground

@contextlib.contextmanager
def numba_threads(n: int):
    """Run pymatting's numba kernels with at most ``n`` threads in this thread
    (numba keeps the setting per calling thread), restored afterwards."""
    import numba

    saved = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, saved)))
    try:
        yield
    finally:
        numba.set_num_threads(saved)


def estimate_foreground(image: np.ndarray, alpha: np.ndarray, margin: int = 16) -> np.ndarray:
    """Foreground colours of ``image`` under ``alpha`` (pymatting's multilevel estimate).

    image: ``[H, W, 3]`` uint8 (or float in [0, 1]); alpha: ``[H, W]`` float in [0, 1].
    Returns ``[H, W, 3]`` float32 in [0, 1]: equal to the image where alpha is 1
    and, along soft edges, the colour without the old background mixed in.
    Only the bounding box of the partly transparent pixels (plus ``margin``)
    is estimated; elsewhere the image colour is kept. One numba thread: the
    multilevel passes are short, and with more threads they spent ~10x the
    CPU time waiting (measured on 854x480 frames), time the model needs in
    ``propagate``.
    """
    from pymatting import estimate_foreground_ml

    image = np.asarray(image)
    alpha = np.asarray(alpha, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or alpha.shape != image.shape[:2]:
        raise ArrayError(f"need image [H, W, 3] and alpha [H, W] of the same size, got {image.shape} and {alpha.shape}")
    img = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else np.clip(image.astype(np.float32), 0, 1)
    alpha = np.clip(alpha, 0.0, 1.0)
    out = img.copy()
    soft = (alpha > 0.0) & (alpha < 1.0)
    if not soft.any():
        return out
    H, W = alpha.shape
    y0, y1, x0, x1 = _bbox(soft)
    crop = (slice(max(0, y0 - margin), min(H, y1 + margin)), slice(max(0, x0 - margin), min(W, x1 + margin)))
    with numba_threads(1):
        fgc = estimate_foreground_ml(img[crop], alpha[crop])
    fgc = np.clip(np.asarray(fgc, dtype=np.float32), 0.0, 1.0)
    keep = alpha[crop] >= 1.0
    fgc[keep] = img[crop][keep]
    out[crop] = fgc
    return out


def alpha_to_u8(alpha: np.ndarray) -> np.ndarray:
    """``[H, W]`` float alpha in [0, 1] -> ``[H, W]`` uint8 0-255 (rounded)."""
    return (np.clip(np.asarray(alpha, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def cutout_rgba(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``[H, W, 4]`` uint8 RGBA cut-out: estimated foreground colours + alpha.

    The colour channels come from :func:`estimate_foreground`, so soft edges do
    not carry the old background; the alpha channel is :func:`alpha_to_u8` of
    ``alpha`` (the same bytes ``icm matte`` writes as the alpha PNG).
    """
    fg = estimate_foreground(image, alpha)
    rgb = (fg * 255.0 + 0.5).astype(np.uint8)
    return np.concatenate([rgb, alpha_to_u8(alpha)[..., None]], axis=2)
