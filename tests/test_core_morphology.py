"""dilate / erode / generate_trimap / maskpooling / resize_mask: known answers and properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from icm_cli.core import dilate, erode, generate_trimap, maskpooling, resize_mask, window_padding

FAST = settings(max_examples=30, deadline=None)


@st.composite
def binary_masks(draw, max_batch: int = 3, min_side: int = 1, max_side: int = 13) -> torch.Tensor:
    """A seeded random ``[B, 1, H, W]`` float32 0/1 mask of random density and (non-square) size."""
    batch = draw(st.integers(1, max_batch))
    height = draw(st.integers(min_side, max_side))
    width = draw(st.integers(min_side, max_side))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 1, height, width, generator=generator) < density).float()


def naive_seed_dilate(mask: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The seed's dilation: reflect padding of (k - 1) // 2 on every side, then max-pool."""
    pad = (kernel_size - 1) // 2
    return F.max_pool2d(F.pad(mask, (pad, pad, pad, pad), mode="reflect"), kernel_size, stride=1)


def naive_window_max(mask: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Max over the window ``i - (k-1)//2 .. i + k//2`` clipped to the map, by explicit loops."""
    values = mask.numpy()
    before, after = (kernel_size - 1) // 2, kernel_size // 2
    out = np.empty_like(values)
    height, width = values.shape[-2:]
    for i in range(height):
        for j in range(width):
            window = values[..., max(0, i - before) : i + after + 1, max(0, j - before) : j + after + 1]
            out[..., i, j] = window.max(axis=(-2, -1))
    return torch.from_numpy(out)


def single_pixel(height: int, width: int, row: int, col: int) -> torch.Tensor:
    mask = torch.zeros(1, 1, height, width)
    mask[0, 0, row, col] = 1
    return mask


# --- dilate / erode: known answers -------------------------------------------------------------


def test_dilate_single_pixel_kernel_3_gives_centred_3x3_block():
    out = dilate(single_pixel(7, 9, 3, 4), 3)
    expected = torch.zeros(1, 1, 7, 9)
    expected[0, 0, 2:5, 3:6] = 1
    assert torch.equal(out, expected)


def test_dilate_single_pixel_kernel_10_gives_10x10_block_extra_pixel_before():
    # Output i sees inputs i-4 .. i+5, so a pixel at p lights outputs p-5 .. p+4.
    out = dilate(single_pixel(20, 24, 9, 11), 10)
    expected = torch.zeros(1, 1, 20, 24)
    expected[0, 0, 4:14, 6:16] = 1
    assert out.shape == (1, 1, 20, 24)
    assert torch.equal(out, expected)


def test_dilate_kernel_1_is_identity_copy():
    mask = single_pixel(4, 5, 1, 2)
    out = dilate(mask, 1)
    assert torch.equal(out, mask)
    assert out.data_ptr() != mask.data_ptr()


@pytest.mark.parametrize("kernel_size", range(1, 13))
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 4), (9, 16)])
def test_dilate_and_erode_keep_size_even_on_maps_smaller_than_the_padding(kernel_size, size):
    mask = (torch.arange(size[0] * size[1]).reshape(1, 1, *size) % 3 == 0).float()
    assert dilate(mask, kernel_size).shape == mask.shape
    assert erode(mask, kernel_size).shape == mask.shape


def test_window_padding_odd_is_centred_even_puts_extra_after():
    assert window_padding(3) == (1, 1)
    assert window_padding(10) == (4, 5)
    assert window_padding(1) == (0, 0)


def test_erode_keeps_only_pixels_whose_whole_window_is_foreground():
    mask = torch.zeros(1, 1, 6, 7)
    mask[0, 0, 1:5, 1:6] = 1
    expected = torch.zeros(1, 1, 6, 7)
    expected[0, 0, 2:4, 2:5] = 1
    assert torch.equal(erode(mask, 3), expected)


def test_erode_does_not_eat_a_mask_from_the_map_border():
    assert torch.equal(erode(torch.ones(1, 1, 4, 5), 3), torch.ones(1, 1, 4, 5))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_bad_kernel_size_is_a_value_error(bad):
    with pytest.raises(ValueError, match="kernel_size"):
        dilate(torch.zeros(1, 1, 4, 4), bad)


def test_wrong_rank_is_a_value_error():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        dilate(torch.zeros(4, 4), 3)


# --- dilate / erode: properties ------------------------------------------------------------------


@FAST
@given(mask=binary_masks(), kernel_size=st.sampled_from([1, 3, 5, 7]))
def test_odd_kernels_give_exactly_the_seeds_reflect_padded_result(mask, kernel_size):
    pad = (kernel_size - 1) // 2
    if min(mask.shape[-2:]) <= pad:  # reflect padding cannot run there; the seed crashed
        return
    assert torch.equal(dilate(mask, kernel_size), naive_seed_dilate(mask, kernel_size))


@FAST
@given(mask=binary_masks(min_side=6), kernel_size=st.sampled_from([2, 4, 6, 10]))
def test_even_kernels_agree_with_the_seed_wherever_the_seed_had_an_output(mask, kernel_size):
    seed = naive_seed_dilate(mask, kernel_size)  # one pixel short in each direction
    assert seed.shape[-2:] == (mask.shape[-2] - 1, mask.shape[-1] - 1)
    assert torch.equal(dilate(mask, kernel_size)[..., :-1, :-1], seed)


@FAST
@given(mask=binary_masks(max_side=9), kernel_size=st.integers(1, 10))
def test_dilate_is_the_max_over_its_window_clipped_to_the_map(mask, kernel_size):
    assert torch.equal(dilate(mask, kernel_size), naive_window_max(mask, kernel_size))


@FAST
@given(mask=binary_masks(), kernel_size=st.integers(1, 11))
def test_erode_dilate_duality_and_nesting(mask, kernel_size):
    eroded, dilated = erode(mask, kernel_size), dilate(mask, kernel_size)
    assert torch.equal(erode(1 - mask, kernel_size), 1 - dilated)
    assert torch.all(eroded <= mask) and torch.all(mask <= dilated)


@FAST
@given(mask=binary_masks(), kernel_size=st.integers(1, 11))
def test_batch_result_is_the_stack_of_single_results(mask, kernel_size):
    singles = torch.cat([dilate(item[None], kernel_size) for item in mask])
    assert torch.equal(dilate(mask, kernel_size), singles)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_give_the_float32_answer_in_their_dtype(dtype):
    mask = (torch.rand(2, 1, 9, 14, generator=torch.Generator().manual_seed(3)) < 0.4).float()
    for op in (dilate, erode):
        out = op(mask.to(dtype), 4)
        assert out.dtype == dtype
        assert torch.equal(out.float(), op(mask, 4))
    trimap = generate_trimap(mask.to(dtype), 3, 4)
    assert trimap.dtype == dtype
    assert torch.equal(trimap.float(), generate_trimap(mask, 3, 4))


def test_bool_masks_are_worked_on_as_float32():
    mask = single_pixel(5, 5, 2, 2).bool()
    assert dilate(mask, 3).dtype == torch.float32
    assert dilate(mask, 3).sum() == 9


# --- generate_trimap ------------------------------------------------------------------------------


def test_trimap_exact_values_on_a_square():
    mask = torch.zeros(1, 1, 8, 9)
    mask[0, 0, 2:6, 2:7] = 1
    expected = torch.zeros(1, 1, 8, 9)
    expected[0, 0, 1:7, 1:8] = 0.5
    expected[0, 0, 3:5, 3:6] = 1
    assert torch.equal(generate_trimap(mask, 3, 3), expected)


def test_trimap_with_default_even_kernels_keeps_the_size():
    mask = torch.zeros(2, 1, 30, 41)
    mask[:, :, 5:25, 8:30] = 1
    trimap = generate_trimap(mask)
    assert trimap.shape == mask.shape
    assert set(trimap.unique().tolist()) == {0.0, 0.5, 1.0}


def test_trimap_thresholds_soft_masks_at_one_half():
    soft = torch.tensor([[[[0.2, 0.5, 0.51, 0.9]]]])
    assert generate_trimap(soft, 1, 1).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


@FAST
@given(mask=binary_masks(), erode_size=st.integers(1, 10), dilate_size=st.integers(1, 10))
def test_trimap_regions_nest_and_input_is_untouched(mask, erode_size, dilate_size):
    before = mask.clone()
    trimap = generate_trimap(mask, erode_size, dilate_size)
    assert torch.equal(mask, before)
    assert trimap.shape == mask.shape
    assert set(trimap.unique().tolist()) <= {0.0, 0.5, 1.0}
    sure, possible = trimap == 1, trimap > 0
    foreground = mask > 0.5
    assert torch.all(foreground[sure]) and torch.all(possible[foreground])
    assert torch.equal(sure.float(), erode(mask, erode_size))
    assert torch.equal(possible.float(), dilate(mask, dilate_size))


# --- maskpooling ------------------------------------------------------------------------------------


def test_maskpooling_keeps_only_fully_covered_cells_on_a_non_square_map():
    mask = torch.zeros(1, 1, 4, 6)
    mask[0, 0, 0:2, 0:2] = 1  # cell (0, 0) fully covered
    mask[0, 0, 2:4, 2:3] = 1  # half of cell (1, 1)
    mask[0, 0, 0:2, 4:6] = 1
    mask[0, 0, 1, 5] = 0  # cell (0, 2) missing one pixel
    expected = torch.tensor([[[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]])
    assert torch.equal(maskpooling(mask, (2, 3)), expected)


@FAST
@given(mask=binary_masks(min_side=2, max_side=12), out_h=st.integers(1, 5), out_w=st.integers(1, 5))
def test_maskpooling_is_the_min_over_adaptive_bins(mask, out_h, out_w):
    height, width = mask.shape[-2:]
    expected = torch.empty(mask.shape[0], 1, out_h, out_w)
    for i in range(out_h):
        rows = slice(i * height // out_h, -(-(i + 1) * height // out_h))
        for j in range(out_w):
            cols = slice(j * width // out_w, -(-(j + 1) * width // out_w))
            expected[:, 0, i, j] = mask[:, 0, rows, cols].amin(dim=(-2, -1))
    before = mask.clone()
    assert torch.equal(maskpooling(mask, (out_h, out_w)), expected)
    assert torch.equal(mask, before)


def test_maskpooling_thresholds_soft_masks_and_does_not_write_into_them():
    soft = torch.full((1, 1, 4, 4), 0.7)
    soft[0, 0, 0, 0] = 0.3
    before = soft.clone()
    assert maskpooling(soft, (2, 2)).flatten().tolist() == [0.0, 1.0, 1.0, 1.0]
    assert torch.equal(soft, before)


@pytest.mark.parametrize("size", [(0, 2), (2,), "2x2", (2.0, 2)])
def test_maskpooling_bad_size_is_a_value_error(size):
    with pytest.raises(ValueError, match="size"):
        maskpooling(torch.ones(1, 1, 4, 4), size)


def test_maskpooling_wants_one_channel():
    with pytest.raises(ValueError, match="one channel"):
        maskpooling(torch.ones(1, 3, 4, 4), (2, 2))


# --- resize_mask -------------------------------------------------------------------------------------


def test_resize_mask_shrinks_by_majority_of_each_cell():
    mask = torch.zeros(1, 1, 4, 6)
    mask[0, 0, 0:2, 0:2] = 1  # full cell
    mask[0, 0, 2:4, 2:3] = 1  # half a cell: not a majority
    mask[0, 0, 0:2, 4:6] = 1
    mask[0, 0, 1, 5] = 0  # three quarters: majority
    assert resize_mask(mask, (2, 3)).flatten().tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_resize_mask_enlarging_a_block_gives_the_block():
    mask = torch.zeros(1, 1, 3, 4)
    mask[0, 0, 1, 1:3] = 1
    expected = torch.zeros(1, 1, 6, 8)
    expected[0, 0, 2:4, 2:6] = 1
    assert torch.equal(resize_mask(mask, (6, 8)), expected)
