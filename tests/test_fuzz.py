"""Fuzzing: random bytes and random arrays at the readers, random tensors at the core.

Only two outcomes are allowed: a clean error a caller can report (InputError
from the readers; ValueError / TypeError from the core) or a valid result
(right shape, finite, in range). Bounded so the whole file runs in seconds.
"""

from __future__ import annotations

import io as pyio
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from icm_cli import core, io

# ICM_FUZZ_EXAMPLES=5000 for a long hunt; the default keeps the suite fast.
FUZZ = settings(max_examples=int(os.environ.get("ICM_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
MAX_PIXELS = 1_000_000  # a fuzzed header may claim any size: never let one allocate much
CLEAN_CORE_ERRORS = (ValueError, TypeError)

_DIR = Path(tempfile.mkdtemp(prefix="icm-fuzz-"))


# ----------------------------------------------------------------- readers

MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xe1", b"GIF89a", b"BM",
         b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 "]


def _small_image_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(len(fmt))
    buf = pyio.BytesIO()
    Image.fromarray(rng.integers(0, 255, (9, 11, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


VALID = {fmt: _small_image_bytes(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}


@st.composite
def image_like_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "magic", "mutated", "truncated"]))
    if kind == "random":
        return draw(st.binary(max_size=600))
    if kind == "magic":
        return draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=600))
    data = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))])
    if kind == "truncated":
        return bytes(data[: draw(st.integers(0, len(data)))])
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    return bytes(data)


def _check_image(arr: np.ndarray, shape: tuple | None = None) -> None:
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    assert 1 <= arr.shape[0] * arr.shape[1] <= MAX_PIXELS
    if shape is not None:
        assert arr.shape[:2] == shape


def _check_mask(arr: np.ndarray, shape: tuple | None = None) -> None:
    assert arr.dtype == np.float32 and arr.ndim == 2
    assert np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 1.0
    if shape is not None:
        assert arr.shape == shape


def _read_both(path: Path, shape: tuple | None = None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns on odd files; warnings are not failures
        for reader, check in ((io.read_image, _check_image), (io.read_mask, _check_mask)):
            try:
                out = reader(path, max_pixels=MAX_PIXELS)
            except io.InputError as exc:
                message = str(exc)
                assert str(path) in message and "\n" not in message
                continue
            check(out, shape)


@FUZZ
@given(data=image_like_bytes(), suffix=st.sampled_from(sorted(io.IMAGE_SUFFIXES)))
def test_readers_on_random_bytes_give_an_input_error_or_a_valid_array(data, suffix):
    path = _DIR / f"fuzz{suffix}"
    path.write_bytes(data)
    _read_both(path)


DTYPES = [np.uint8, np.uint16, np.float32, np.bool_]


@st.composite
def arrays(draw) -> np.ndarray:
    dtype = draw(st.sampled_from(DTYPES))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    channels = draw(st.sampled_from([None, 3, 4]))
    shape = (h, w) if channels is None else (h, w, channels)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    special = draw(st.sampled_from(["random", "zeros", "ones", "max", "weird"]))
    if dtype == np.bool_:
        return rng.random(shape) < 0.5 if special == "random" else np.full(shape, special in ("ones", "max"))
    if dtype == np.float32:
        if special == "weird":
            return rng.choice(np.array([np.nan, np.inf, -np.inf, -1.0, 0.0, 0.5, 1.0, 300.0], np.float32), shape)
        top = {"random": 1.0, "zeros": 0.0, "ones": 1.0, "max": 255.0}[special]
        return (rng.random(shape) * top).astype(np.float32)
    info = np.iinfo(dtype)
    if special == "random" or special == "weird":
        return rng.integers(0, int(info.max) + 1, shape, dtype=dtype)
    return np.full(shape, {"zeros": 0, "ones": 1, "max": int(info.max)}[special], dtype=dtype)


def _save(arr: np.ndarray, fmt: str, path: Path) -> bool:
    """Write ``arr`` the way other tools would; False where no writer takes that combination."""
    try:
        if fmt == "tif":
            import tifffile

            photometric = "minisblack" if arr.ndim == 2 else "rgb"
            data = arr.astype(np.uint8) * 255 if arr.dtype == np.bool_ else arr
            tifffile.imwrite(path, data, photometric=photometric)
            return True
        if arr.dtype == np.bool_ and arr.ndim == 2:
            Image.fromarray(arr).save(path)  # a 1-bit PNG
            return True
        if arr.dtype in (np.uint8, np.uint16):
            import cv2

            return bool(cv2.imwrite(str(path), arr if arr.ndim == 2 else arr[..., ::-1].copy()))
    except Exception:
        return False
    return False


@FUZZ
@given(arr=arrays(), fmt=st.sampled_from(["png", "tif"]))
def test_readers_on_random_arrays_give_an_input_error_or_the_right_shape(arr, fmt):
    path = _DIR / f"array.{fmt}"
    assume(_save(arr, fmt, path))
    _read_both(path, shape=arr.shape[:2])


# ----------------------------------------------------------------- core

@st.composite
def tensors(draw, min_dims: int = 4, max_dims: int = 4, channels: int | None = None,
            max_side: int = 9, values: str = "unit") -> torch.Tensor:
    dims = draw(st.integers(min_dims, max_dims))
    shape = [draw(st.integers(1, max_side)) for _ in range(dims)]
    if dims >= 2:
        shape[0] = draw(st.integers(1, 2))
    if channels is not None and dims == 4:
        shape[1] = channels
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bool, torch.uint8]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.rand(shape, generator=gen)
    if draw(st.booleans()):
        x = (x > 0.5).float()
    if dtype == torch.bool:
        return x > 0.5
    if dtype == torch.uint8:
        return (x > 0.5).to(torch.uint8)
    return x.to(dtype)


KERNELS = st.one_of(st.integers(-2, 12), st.sampled_from([2.5, "3", None, True]))


def _unit_range(out: torch.Tensor) -> None:
    assert out.is_floating_point() and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


@FUZZ
@given(mask=st.one_of(tensors(), tensors(min_dims=2, max_dims=5)), k=KERNELS)
def test_dilate_and_erode(mask, k):
    for op in (core.dilate, core.erode):
        try:
            out = op(mask, k)
        except CLEAN_CORE_ERRORS:
            continue
        assert out.shape == mask.shape
        _unit_range(out)
        assert torch.equal(mask, mask.clone())  # input untouched (trivially, but documents the contract)
    try:
        grown, shrunk = core.dilate(mask, k), core.erode(mask, k)
    except CLEAN_CORE_ERRORS:
        return
    values = mask.to(grown.dtype)
    assert (shrunk <= values + 1e-6).all() and (values <= grown + 1e-6).all()


@FUZZ
@given(mask=st.one_of(tensors(channels=1), tensors(min_dims=3, max_dims=5)), ek=KERNELS, dk=KERNELS)
def test_generate_trimap(mask, ek, dk):
    try:
        trimap = core.generate_trimap(mask, erode_kernel_size=ek, dilate_kernel_size=dk)
    except CLEAN_CORE_ERRORS:
        return
    assert trimap.shape == mask.shape
    assert set(torch.unique(trimap).tolist()) <= {0.0, 0.5, 1.0}
    assert ((trimap == 1) <= (mask.float() > 0.5)).all()  # sure foreground lies inside the mask


SIZES = st.one_of(st.tuples(st.integers(-1, 12), st.integers(-1, 12)), st.sampled_from([4, (3,), (2, 2, 2), "4x4"]))


@FUZZ
@given(mask=st.one_of(tensors(channels=1), tensors(min_dims=3, max_dims=5)), size=SIZES)
def test_maskpooling(mask, size):
    try:
        pooled = core.maskpooling(mask, size)
    except CLEAN_CORE_ERRORS:
        return
    assert pooled.shape == (mask.shape[0], 1, *size)
    assert set(torch.unique(pooled).tolist()) <= {0.0, 1.0}


@st.composite
def attention_case(draw):
    """(mask, attn): valid shapes most of the time, a broken one sometimes."""
    b, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    attn = torch.softmax(torch.randn(b, h, w, h * w, generator=gen) * 3, dim=-1).to(dtype)
    mh, mw = (h, w) if draw(st.booleans()) else (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    mask = torch.rand(b, 1, mh, mw, generator=gen)
    fill = draw(st.sampled_from(["random", "empty", "full"]))
    mask = mask > 0.5 if fill == "random" else torch.full_like(mask, fill == "full", dtype=torch.bool)
    mask = mask.to(draw(st.sampled_from([torch.bool, torch.float32, torch.uint8])))
    broken = draw(st.sampled_from([None, None, None, "attn_last_axis", "attn_3d", "batch", "mask_channels"]))
    if broken == "attn_last_axis":
        attn = attn[..., :-1] if h * w > 1 else torch.cat([attn, attn], dim=-1)
    elif broken == "attn_3d":
        attn = attn[0]
    elif broken == "batch":
        mask = torch.cat([mask, mask, mask])
    elif broken == "mask_channels":
        mask = torch.cat([mask, mask], dim=1)
    return mask, attn


SCORES = st.sampled_from(["classification", "softmax", "ratio", "bogus", 3])


@FUZZ
@given(case=attention_case(), score=SCORES)
def test_calculate_attention_score(case, score):
    mask, attn = case
    try:
        out = core.calculate_attention_score(mask, attn, score)
    except CLEAN_CORE_ERRORS:
        return
    assert out.shape == (attn.shape[0], 1, attn.shape[1], attn.shape[2])
    _unit_range(out)


@FUZZ
@given(case=attention_case(), score=SCORES, iterations=st.integers(-1, 4))
def test_refine_mask_by_attention(case, score, iterations):
    mask, attn = case
    try:
        refined, converged = core.refine_mask_by_attention(mask, attn, iterations=iterations, score_type=score)
    except CLEAN_CORE_ERRORS:
        return
    assert refined.shape == (attn.shape[0], 1, attn.shape[1], attn.shape[2])
    assert set(torch.unique(refined).tolist()) <= {0.0, 1.0}
    assert converged.shape == (attn.shape[0],) and converged.dtype == torch.bool


@pytest.mark.parametrize("bad", [None, np.zeros((2, 2)), [[0.0]], "mask"])
def test_core_refuses_non_tensors_with_a_type_error(bad):
    for call in (lambda: core.dilate(bad, 3), lambda: core.generate_trimap(bad),
                 lambda: core.maskpooling(bad, (2, 2)),
                 lambda: core.calculate_attention_score(bad, torch.ones(1, 1, 1, 1))):
        with pytest.raises(TypeError):
            call()
