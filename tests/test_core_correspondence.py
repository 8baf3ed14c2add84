"""compute_correspondence_matrix / roi_tokens / InContextCorrespondence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from icm_cli.core import InContextCorrespondence, compute_correspondence_matrix, maskpooling, roi_tokens

FAST = settings(max_examples=25, deadline=None)


def seeded(*shape: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def indexed_features(batch: int, height: int, width: int) -> torch.Tensor:
    """``[B, h*w, h, w]``: the feature at cell p is the one-hot vector e_p (a feature names its cell)."""
    eye = torch.eye(height * width)
    return eye.reshape(height * width, height, width).unsqueeze(0).repeat(batch, 1, 1, 1)


# --- compute_correspondence_matrix ------------------------------------------------------------------


def test_correspondence_is_the_cosine_of_every_pair_on_non_square_grids():
    source, reference = seeded(2, 5, 3, 4, seed=1), seeded(2, 5, 2, 7, seed=2)
    matrix = compute_correspondence_matrix(source, reference)
    assert matrix.shape == (2, 12, 14)
    src = source.flatten(2).transpose(1, 2)  # [B, 12, C]
    ref = reference.flatten(2).transpose(1, 2)  # [B, 14, C]
    expected = F.cosine_similarity(src.unsqueeze(2), ref.unsqueeze(1), dim=-1)
    torch.testing.assert_close(matrix, expected, atol=1e-5, rtol=1e-5)


def test_correspondence_ignores_feature_scale_and_broadcasts_one_reference():
    source, reference = seeded(3, 4, 2, 3, seed=3), seeded(1, 4, 3, 2, seed=4)
    matrix = compute_correspondence_matrix(source, reference)
    assert matrix.shape == (3, 6, 6)
    torch.testing.assert_close(compute_correspondence_matrix(7 * source, 0.01 * reference), matrix)
    torch.testing.assert_close(matrix[1], compute_correspondence_matrix(source[1:2], reference)[0])


def test_correspondence_of_zero_features_is_zero_not_nan():
    matrix = compute_correspondence_matrix(torch.zeros(1, 3, 2, 2, dtype=torch.float16), seeded(1, 3, 2, 2).half())
    assert not matrix.isnan().any()


def test_correspondence_channel_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="same channel count"):
        compute_correspondence_matrix(torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 2, 2))


# --- roi_tokens --------------------------------------------------------------------------------------


def test_roi_tokens_are_the_covered_cells_in_raster_order_padded_per_item():
    ref_ft = indexed_features(2, 3, 4)  # feature of cell p = e_p
    mask = torch.zeros(2, 1, 3, 4)
    mask[0, 0, 0, 1] = mask[0, 0, 2, 0] = mask[0, 0, 1, 3] = 1  # cells 1, 7, 8
    mask[1, 0, 2, 3] = 1  # cell 11
    tokens, valid = roi_tokens(ref_ft, mask)
    assert tokens.shape == (2, 3, 12) and valid.tolist() == [[True, True, True], [True, False, False]]
    assert tokens[0].argmax(dim=-1).tolist() == [1, 7, 8]
    assert tokens[1, 0].argmax().item() == 11
    assert torch.all(tokens[1, 1:] == 0)


def test_roi_tokens_min_pool_a_fine_mask_onto_the_feature_grid():
    ref_ft = indexed_features(1, 2, 3)
    mask = torch.zeros(1, 1, 8, 12)
    mask[0, 0, 0:4, 0:8] = 1  # covers cells (0, 0), (0, 1)
    mask[0, 0, 4:8, 8:11] = 1  # three quarters of cell (1, 2): not a token
    tokens, valid = roi_tokens(ref_ft, mask)
    assert valid.all() and tokens.argmax(dim=-1).tolist() == [[0, 1]]


def test_roi_tokens_of_a_mask_covering_no_cell_is_a_clear_value_error():
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, 0, :8, :8] = 1
    mask[1, 0, 0:3, 0:3] = 1  # smaller than one 4x4 cell
    with pytest.raises(ValueError, match=r"covers no whole feature cell.*\[1\].*larger mask or a finer grid"):
        roi_tokens(seeded(2, 5, 4, 4), mask)


def test_roi_tokens_do_not_touch_their_inputs():
    ref_ft, mask = seeded(1, 3, 4, 5), (seeded(1, 1, 8, 10, seed=9) > 0).float() * 0.8
    before = (ref_ft.clone(), mask.clone())
    roi_tokens(ref_ft, mask)
    assert torch.equal(ref_ft, before[0]) and torch.equal(mask, before[1])


@FAST
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 4), height=st.integers(1, 5), width=st.integers(1, 6))
def test_roi_tokens_batch_equals_each_single_item(seed, batch, height, width):
    ref_ft = seeded(batch, 4, height, width, seed=seed)
    mask = (torch.rand(batch, 1, height, width, generator=torch.Generator().manual_seed(seed)) < 0.6).float()
    mask[:, :, 0, 0] = 1  # every item keeps at least one token
    tokens, valid = roi_tokens(ref_ft, mask)
    for item in range(batch):
        single_tokens, single_valid = roi_tokens(ref_ft[item : item + 1], mask[item : item + 1])
        count = int(single_valid.sum())
        assert int(valid[item].sum()) == count
        assert torch.equal(tokens[item, :count], single_tokens[0])
        assert torch.all(tokens[item, count:] == 0)


# --- InContextCorrespondence -------------------------------------------------------------------------


def test_matched_mask_looks_up_the_pooled_reference_mask_at_the_argmax():
    ref_ft = indexed_features(1, 2, 3)  # reference cell p has feature e_p
    ref_mask = torch.zeros(1, 1, 4, 6)
    ref_mask[0, 0, 0:2, 2:6] = 1  # cells 1 and 2 covered
    ref_mask[0, 0, 2:4, 0:1] = 1  # half of cell 3: pooled away
    # Source (2x2) positions copy reference cells 2, 3, 0, 1 (with noise that keeps the argmax).
    matched = torch.tensor([2, 3, 0, 1])
    source_ft = torch.eye(6)[matched].T.reshape(1, 6, 2, 2) + 0.01 * seeded(1, 6, 2, 2)
    result = InContextCorrespondence(kernel_size=1)(source_ft, ref_ft, ref_mask)
    assert result.matched_index.tolist() == [[2, 3, 0, 1]]
    assert result.mask.flatten().tolist() == [1.0, 0.0, 0.0, 1.0]
    assert result["mask"] is result.mask and set(dict(result)) == {"mask", "trimap", "similarity", "matched_index"}
    assert torch.all(result.similarity > 0.99)
    assert torch.equal(result.trimap, result.mask)  # kernel 1: no band


def test_kernel_size_is_a_constructor_parameter_and_even_sizes_keep_the_shape():
    source_ft, ref_ft = seeded(2, 8, 6, 10, seed=1), seeded(1, 8, 5, 7, seed=2)
    ref_mask = torch.zeros(1, 1, 20, 28)
    ref_mask[..., 4:16, 4:20] = 1
    module = InContextCorrespondence(kernel_size=4)
    assert module.kernel_size == 4 and "kernel_size=4" in repr(module)
    result = module(source_ft, ref_ft, ref_mask)
    assert result.mask.shape == result.trimap.shape == result.similarity.shape == (2, 1, 6, 10)
    big = module(source_ft, ref_ft, ref_mask, output_size=(48, 80))
    assert big.trimap.shape == (2, 1, 48, 80)
    assert torch.equal(big.mask, result.mask)
    assert set(big.trimap.unique().tolist()) <= {0.0, 0.5, 1.0}


def test_bad_kernel_size_is_a_value_error():
    with pytest.raises(ValueError, match="kernel_size"):
        InContextCorrespondence(kernel_size=0)


@FAST
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 3))
def test_correspondence_batch_equals_stacked_singles(seed, batch):
    source_ft, ref_ft = seeded(batch, 6, 3, 5, seed=seed), seeded(batch, 6, 4, 2, seed=seed + 1)
    ref_mask = (torch.rand(batch, 1, 8, 4, generator=torch.Generator().manual_seed(seed)) < 0.5).float()
    module = InContextCorrespondence(kernel_size=3)
    result = module(source_ft, ref_ft, ref_mask)
    for item in range(batch):
        single = module(source_ft[item : item + 1], ref_ft[item : item + 1], ref_mask[item : item + 1])
        assert torch.equal(result.mask[item], single.mask[0])
        assert torch.equal(result.trimap[item], single.trimap[0])
    pooled = maskpooling(ref_mask, (4, 2)).flatten(1)
    assert torch.equal(result.mask.flatten(1), torch.gather(pooled, 1, result.matched_index))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_correspondence_runs_without_nan(dtype):
    source_ft, ref_ft = seeded(2, 8, 4, 6, dtype=dtype), seeded(2, 8, 3, 3, seed=5, dtype=dtype)
    ref_mask = torch.ones(2, 1, 3, 3, dtype=dtype)
    result = InContextCorrespondence(kernel_size=2)(source_ft, ref_ft, ref_mask)
    assert result.mask.dtype == dtype and torch.all(result.mask == 1)
    assert not result.similarity.isnan().any()
