"""cross_attention_heat / propagate_heat / calculate_attention_score / refine_mask_by_attention
and the training-free attention modules."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from icm_cli.core import (
    SCORE_TYPES,
    TrainingFreeAttention,
    TrainingFreeAttentionBlocks,
    calculate_attention_score,
    cross_attention_heat,
    propagate_heat,
    refine_mask_by_attention,
    roi_tokens,
)

FAST = settings(max_examples=25, deadline=None)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_attention(batch: int, height: int, width: int, seed: int = 0, sharpness: float = 3.0, dtype=torch.float32):
    """Row-stochastic ``[B, h, w, h*w]`` self-attention with some structure (softmax of random logits)."""
    logits = sharpness * torch.randn(
        batch, height, width, height * width, generator=generator(seed), dtype=torch.float64
    )
    return logits.softmax(dim=-1).to(dtype)


def cluster_attention(cluster: torch.Tensor, cross: bool = False) -> torch.Tensor:
    """``[1, h, w, h*w]``: every position attends uniformly to its own cluster (or, ``cross``, to the other one).

    cluster: ``[h, w]`` bool, True for cluster A.
    """
    height, width = cluster.shape
    flat = cluster.flatten()
    same = flat.unsqueeze(1) == flat.unsqueeze(0)  # [hw, hw]
    targets = ~same if cross else same
    attn = targets.double() / targets.sum(dim=1, keepdim=True)
    return attn.reshape(1, height, width, height * width)


def naive_attention_score(mask: torch.Tensor, attn: torch.Tensor, score_type: str) -> torch.Tensor:
    """The seed's way, per sample: repeat the mask to a dense ``[hw, h, w]`` stack and sum products."""
    batch, height, width, positions = attn.shape
    scores = []
    for item in range(batch):
        foreground = (mask[item, 0] > 0.5).to(attn.dtype)
        stacked = foreground.unsqueeze(0).repeat(positions, 1, 1)  # [hw, h, w]
        maps = attn[item].reshape(positions, height, width)
        fg_count, bg_count = foreground.sum(), positions - foreground.sum()
        if fg_count == 0:
            scores.append(torch.zeros(1, height, width, dtype=attn.dtype))
            continue
        if bg_count == 0:
            scores.append(torch.ones(1, height, width, dtype=attn.dtype))
            continue
        fg_mean = (maps * stacked).sum(dim=(1, 2)) / fg_count
        bg_mean = (maps * (1 - stacked)).sum(dim=(1, 2)) / bg_count
        if score_type == "classification":
            score = (fg_mean > bg_mean).to(attn.dtype)
        elif score_type == "softmax":
            score = torch.stack([fg_mean, bg_mean]).mul(positions).softmax(dim=0)[0]
        else:
            score = fg_mean / (fg_mean + bg_mean)
        scores.append(score.reshape(1, height, width))
    return torch.stack(scores)


def block_cluster(height: int, width: int, rows: slice, cols: slice) -> torch.Tensor:
    cluster = torch.zeros(height, width, dtype=torch.bool)
    cluster[rows, cols] = True
    return cluster


# --- propagate_heat ------------------------------------------------------------------------------------


def test_identity_attention_returns_the_heat_on_a_non_square_grid():
    heat = torch.rand(2, 1, 3, 5, generator=generator(1))
    identity = torch.eye(15).reshape(1, 3, 5, 15).repeat(2, 1, 1, 1)
    torch.testing.assert_close(propagate_heat(heat, identity), heat)


def test_uniform_attention_spreads_the_mean_heat_everywhere():
    heat = torch.rand(1, 1, 4, 2, generator=generator(2))
    uniform = torch.full((1, 4, 2, 8), 1 / 8)
    torch.testing.assert_close(propagate_heat(heat, uniform), heat.mean().expand(1, 1, 4, 2))


def test_propagation_is_heat_times_attention_transposed():
    heat, attn = torch.rand(2, 1, 2, 3, generator=generator(3)), random_attention(2, 2, 3, seed=4)
    expected = heat.reshape(2, 1, 6) @ attn.reshape(2, 6, 6).transpose(1, 2)
    torch.testing.assert_close(propagate_heat(heat, attn), expected.reshape(2, 1, 2, 3))


def test_propagate_heat_rejects_attention_whose_last_axis_is_not_h_times_w():
    with pytest.raises(ValueError, match=r"not h\*w"):
        propagate_heat(torch.zeros(1, 1, 2, 3), torch.zeros(1, 2, 3, 5))


# --- cross_attention_heat ------------------------------------------------------------------------------


def test_a_token_equal_to_one_source_feature_lands_there():
    source = torch.nn.functional.normalize(torch.randn(1, 8, 3, 4, generator=generator(5)), dim=1)
    tokens = source.flatten(2)[:, :, [6]].transpose(1, 2)  # the feature at (1, 2)
    heat = cross_attention_heat(source, tokens, torch.ones(1, 1, dtype=torch.bool), temperature=0.01)
    assert heat.shape == (1, 1, 3, 4)
    assert heat.flatten().argmax().item() == 6 and heat.max().item() == 1.0
    assert heat.min() >= 0


def test_padded_tokens_contribute_nothing():
    source = torch.nn.functional.normalize(torch.randn(2, 6, 4, 3, generator=generator(6)), dim=1)
    tokens = torch.randn(2, 3, 6, generator=generator(7))
    valid = torch.tensor([[True, True, True], [True, False, False]])
    heat = cross_attention_heat(source, tokens, valid)
    garbage = tokens.clone()
    garbage[1, 1:] = 100 * torch.randn(2, 6, generator=generator(8))
    torch.testing.assert_close(cross_attention_heat(source, garbage, valid), heat)
    torch.testing.assert_close(heat[1:], cross_attention_heat(source[1:], tokens[1:, :1], valid[1:, :1]))


def test_heat_is_normalised_to_peak_one_per_image_and_one_token_set_serves_the_batch():
    source = torch.nn.functional.normalize(torch.randn(3, 5, 2, 7, generator=generator(9)), dim=1)
    tokens, valid = torch.randn(1, 4, 5, generator=generator(10)), torch.ones(1, 4, dtype=torch.bool)
    heat = cross_attention_heat(source, tokens, valid)
    torch.testing.assert_close(heat.flatten(1).amax(dim=1), torch.ones(3))
    torch.testing.assert_close(heat[2:], cross_attention_heat(source[2:], tokens, valid))


def test_an_item_without_valid_tokens_gets_zero_heat_not_nan():
    heat = cross_attention_heat(torch.randn(1, 3, 2, 2), torch.randn(1, 2, 3), torch.zeros(1, 2, dtype=torch.bool))
    assert torch.equal(heat, torch.zeros(1, 1, 2, 2))


@pytest.mark.parametrize("temperature", [0, -1.0])
def test_non_positive_temperature_is_a_value_error(temperature):
    with pytest.raises(ValueError, match="temperature"):
        cross_attention_heat(
            torch.randn(1, 3, 2, 2), torch.randn(1, 1, 3), torch.ones(1, 1, dtype=torch.bool), temperature
        )


# --- calculate_attention_score ---------------------------------------------------------------------------


def test_two_cluster_attention_scores_the_whole_cluster_of_a_partial_mask():
    cluster = block_cluster(3, 5, slice(0, 2), slice(0, 3))  # A: 6 of 15 positions
    attn = cluster_attention(cluster)
    mask = torch.zeros(1, 1, 3, 5, dtype=torch.float64)
    mask[0, 0, 0, 0:2] = 1  # two positions of A
    assert torch.equal(calculate_attention_score(mask, attn, "classification")[0, 0], cluster.double())

    fg_mean_a = 1 / 6  # an A position pays 1/6 to each A position, the foreground included
    bg_mean_a = (4 / 6) / 13  # the rest of its attention (4 A positions) spread over 13 background cells
    ratio = calculate_attention_score(mask, attn, "ratio")[0, 0]
    torch.testing.assert_close(
        ratio[cluster], torch.full((6,), fg_mean_a / (fg_mean_a + bg_mean_a), dtype=torch.float64)
    )
    assert torch.all(ratio[~cluster] == 0)
    softmax = calculate_attention_score(mask, attn, "softmax")[0, 0]
    expected_a = torch.sigmoid(torch.tensor(15 * (fg_mean_a - bg_mean_a), dtype=torch.float64))
    torch.testing.assert_close(softmax[cluster], expected_a.expand(6))
    assert torch.all(softmax[~cluster] < 0.5)


@pytest.mark.parametrize("score_type", SCORE_TYPES)
def test_empty_mask_stays_empty_and_full_mask_stays_full(score_type):
    attn = random_attention(2, 3, 4, seed=11)
    empty_and_full = torch.stack([torch.zeros(1, 3, 4), torch.ones(1, 3, 4)])
    score = calculate_attention_score(empty_and_full, attn, score_type)
    assert torch.equal(score[0], torch.zeros(1, 3, 4)) and torch.equal(score[1], torch.ones(1, 3, 4))


def test_unknown_score_type_and_off_grid_masks_are_value_errors():
    with pytest.raises(ValueError, match="score_type must be one of"):
        calculate_attention_score(torch.zeros(1, 1, 2, 2), random_attention(1, 2, 2), "vote")
    with pytest.raises(ValueError, match="resize"):
        calculate_attention_score(torch.zeros(1, 1, 4, 4), random_attention(1, 2, 2))


@FAST
@given(
    seed=st.integers(0, 10_000),
    batch=st.integers(1, 3),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    density=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
    score_type=st.sampled_from(SCORE_TYPES),
)
def test_batched_score_matches_the_seeds_dense_per_sample_form(seed, batch, height, width, density, score_type):
    attn = random_attention(batch, height, width, seed=seed, dtype=torch.float64)
    mask = (torch.rand(batch, 1, height, width, generator=generator(seed + 1)) < density).double()
    before = (mask.clone(), attn.clone())
    score = calculate_attention_score(mask, attn, score_type)
    torch.testing.assert_close(score, naive_attention_score(mask, attn, score_type))
    assert torch.equal(mask, before[0]) and torch.equal(attn, before[1])


# --- refine_mask_by_attention ------------------------------------------------------------------------------


def test_refinement_grows_a_seed_to_its_cluster_and_converges():
    cluster = block_cluster(4, 6, slice(1, 3), slice(0, 4))
    mask = torch.zeros(1, 1, 4, 6)
    mask[0, 0, 1, 1] = 1
    refined, converged = refine_mask_by_attention(mask, cluster_attention(cluster).float())
    assert torch.equal(refined[0, 0], cluster.float()) and converged.tolist() == [True]


def test_an_oscillating_mask_returns_unconverged_instead_of_raising():
    cluster = block_cluster(2, 4, slice(0, 2), slice(0, 2))
    attn = cluster_attention(cluster, cross=True).repeat(2, 1, 1, 1)  # A attends to B and B to A
    masks = torch.stack([cluster.float(), torch.zeros(2, 4)]).unsqueeze(1)  # item 1 is empty: a fixed point
    refined, converged = refine_mask_by_attention(masks, attn, iterations=3)
    assert converged.tolist() == [False, True]
    assert torch.equal(refined[0, 0], (~cluster).double())  # three flips: A -> B -> A -> B
    assert torch.all(refined[1] == 0)


@pytest.mark.parametrize("score_type", SCORE_TYPES)
def test_every_score_type_refines_the_two_cluster_case_alike(score_type):
    cluster = block_cluster(3, 5, slice(0, 3), slice(3, 5))
    mask = torch.zeros(1, 1, 3, 5)
    mask[0, 0, 2, 4] = 1
    refined, converged = refine_mask_by_attention(mask, cluster_attention(cluster), score_type=score_type)
    assert torch.equal(refined[0, 0], cluster.double()) and converged.item()


def test_a_mask_at_another_resolution_is_resized_to_the_attention_grid():
    cluster = block_cluster(3, 4, slice(0, 3), slice(0, 2))
    fine = torch.zeros(1, 1, 30, 40)
    fine[..., 0:10, 0:10] = 1  # covers grid cell (0, 0)
    refined, _ = refine_mask_by_attention(fine, cluster_attention(cluster))
    assert refined.shape == (1, 1, 3, 4) and torch.equal(refined[0, 0], cluster.double())


def test_bad_iterations_are_a_value_error():
    with pytest.raises(ValueError, match="iterations"):
        refine_mask_by_attention(torch.zeros(1, 1, 2, 2), random_attention(1, 2, 2), iterations=0)


@FAST
@given(
    seed=st.integers(0, 10_000),
    height=st.integers(1, 6),
    width=st.integers(1, 7),
    score_type=st.sampled_from(SCORE_TYPES),
)
def test_refinement_is_idempotent_at_convergence_and_batch_equals_singles(seed, height, width, score_type):
    attn = random_attention(3, height, width, seed=seed, dtype=torch.float64)
    mask = (torch.rand(3, 1, height, width, generator=generator(seed + 7)) < 0.5).double()
    before = mask.clone()
    refined, converged = refine_mask_by_attention(mask, attn, iterations=10, score_type=score_type)
    assert torch.equal(mask, before)
    again, converged_again = refine_mask_by_attention(refined, attn, iterations=1, score_type=score_type)
    assert torch.equal(again[converged], refined[converged]) and torch.all(converged_again[converged])
    for item in range(3):
        single, single_converged = refine_mask_by_attention(
            mask[item : item + 1], attn[item : item + 1], 10, score_type
        )
        assert torch.equal(single[0], refined[item]) and single_converged.item() == converged[item].item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("score_type", SCORE_TYPES)
def test_half_precision_refinement_runs_without_nan(dtype, score_type):
    attn = random_attention(2, 5, 6, seed=12, dtype=dtype)
    mask = (torch.rand(2, 1, 5, 6, generator=generator(13)) < 0.5).to(dtype)
    score = calculate_attention_score(mask, attn, score_type)
    assert score.dtype == dtype and not score.isnan().any()
    refined, _ = refine_mask_by_attention(mask, attn, score_type=score_type)
    assert refined.dtype == dtype and set(refined.unique().tolist()) <= {0.0, 1.0}


# --- TrainingFreeAttention / TrainingFreeAttentionBlocks -----------------------------------------------------


def two_object_scene(height: int = 4, width: int = 6, channels: int = 8):
    """A source whose cells in ``object_cells`` look like the reference's masked region, the rest like its background."""
    object_cells = block_cluster(height, width, slice(0, 2), slice(0, 4))
    noise = 0.05 * torch.randn(1, channels, height, width, generator=generator(14))
    source_ft = torch.zeros(1, channels, height, width)
    source_ft[0, 0] = object_cells.float()
    source_ft[0, 1] = (~object_cells).float()
    ref_ft = torch.zeros(1, channels, 3, 3)
    ref_ft[0, 1] = 1
    ref_ft[0, :, 0:2, 0:2] = 0
    ref_ft[0, 0, 0:2, 0:2] = 1
    ref_mask = torch.zeros(1, 1, 30, 30)
    ref_mask[..., 0:20, 0:20] = 1
    return source_ft + noise, ref_ft, ref_mask, object_cells


def test_training_free_attention_finds_the_object_in_a_two_object_scene():
    source_ft, ref_ft, ref_mask, object_cells = two_object_scene()
    result = TrainingFreeAttention()(source_ft, ref_ft, ref_mask, cluster_attention(object_cells).float())
    assert torch.equal(result.mask[0, 0], object_cells.float()) and result.converged.item()
    assert result.inter.shape == result.intra.shape == (1, 1, 4, 6)
    assert result.intra.max().item() == pytest.approx(1.0)
    assert torch.all(result.inter[0, 0][object_cells] > 0.5) and torch.all(result.inter[0, 0][~object_cells] < 0.5)
    assert set(dict(result)) == {"inter", "intra", "mask", "converged", "levels"}


def test_blocks_fuse_two_grids_onto_the_finest():
    source_ft, ref_ft, ref_mask, object_cells = two_object_scene()
    coarse = block_cluster(2, 3, slice(0, 1), slice(0, 2))
    attns = {(4, 6): cluster_attention(object_cells).float(), (2, 3): cluster_attention(coarse).float()}
    result = TrainingFreeAttentionBlocks()(source_ft, ref_ft, ref_mask, attns)
    assert list(result.levels) == [(4, 6), (2, 3)] and result.levels[(2, 3)].mask.shape == (1, 1, 2, 3)
    assert torch.equal(result.levels[(2, 3)].mask[0, 0], coarse.float())
    assert torch.equal(result.mask[0, 0], object_cells.float()) and result.converged.item()
    assert TrainingFreeAttentionBlocks()(source_ft, ref_ft, ref_mask, attns, output_size=(8, 12)).mask.shape == (
        1,
        1,
        8,
        12,
    )


def test_blocks_batch_equals_stacked_singles_and_inputs_are_untouched():
    batch, channels = 3, 6
    source_ft = torch.randn(batch, channels, 6, 8, generator=generator(15))
    ref_ft = torch.randn(batch, channels, 5, 5, generator=generator(16))
    ref_mask = torch.zeros(batch, 1, 20, 20)
    ref_mask[0, :, 2:14, 2:14] = 1
    ref_mask[1, :, 8:20, 0:8] = 1
    ref_mask[2, :, 0:20, 10:20] = 1  # token counts differ per item: padding is exercised
    attns = {(6, 8): random_attention(batch, 6, 8, seed=17), (3, 4): random_attention(batch, 3, 4, seed=18)}
    inputs = (source_ft, ref_ft, ref_mask, attns[(6, 8)], attns[(3, 4)])
    before = [tensor.clone() for tensor in inputs]
    blocks = TrainingFreeAttentionBlocks()
    result = blocks(source_ft, ref_ft, ref_mask, attns)
    assert all(torch.equal(tensor, copy) for tensor, copy in zip(inputs, before))
    assert roi_tokens(ref_ft, ref_mask)[1].sum(dim=1).unique().numel() == 3
    for item in range(batch):
        pick = slice(item, item + 1)
        single = blocks(source_ft[pick], ref_ft[pick], ref_mask[pick], {key: attn[pick] for key, attn in attns.items()})
        torch.testing.assert_close(result.inter[pick], single.inter)
        torch.testing.assert_close(result.intra[pick], single.intra)
        assert torch.equal(result.mask[pick], single.mask)
        assert result.converged[item].item() == single.converged.item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_blocks_run_in_half_precision_without_nan(dtype):
    source_ft = torch.randn(2, 8, 6, 4, generator=generator(19)).to(dtype)
    ref_ft = torch.randn(1, 8, 4, 4, generator=generator(20)).to(dtype)
    ref_mask = torch.ones(1, 1, 4, 4, dtype=dtype)
    attns = {
        (6, 4): random_attention(2, 6, 4, seed=21, dtype=dtype),
        (3, 2): random_attention(2, 3, 2, seed=22, dtype=dtype),
    }
    result = TrainingFreeAttentionBlocks()(source_ft, ref_ft, ref_mask, attns)
    for name in ("inter", "intra", "mask"):
        value = getattr(result, name)
        assert value.dtype == dtype and not value.isnan().any()


def test_blocks_need_at_least_one_attention_map():
    source_ft, ref_ft, ref_mask, _ = two_object_scene()
    with pytest.raises(ValueError, match="at least one"):
        TrainingFreeAttentionBlocks()(source_ft, ref_ft, ref_mask, {})


def test_peak_normalise_divides_each_image_by_its_own_maximum():
    from icm_cli.core import peak_normalise

    heat = torch.tensor([[[[0.0, 1.0, 2.0]]], [[[0.0, 0.0, 4.0]]], [[[0.0, 0.0, 0.0]]]])  # [3, 1, 1, 3]
    out = peak_normalise(heat)
    assert out.shape == heat.shape and out.dtype == heat.dtype
    assert out.flatten(1).tolist() == [[0.0, 0.5, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]  # zeros stay zeros
    assert peak_normalise(torch.tensor([[3.0, 6.0]], dtype=torch.float64)).tolist() == [[0.5, 1.0]]


def test_seed_compatible_attention_computes_the_engines_heat():
    """TrainingFreeAttention (the seed's API) and the engine's ICM heat agree on a shared grid."""
    from types import SimpleNamespace

    from icm_cli.backbones.base import affinity_attention
    from icm_cli.core import TrainingFreeAttention, roi_tokens
    from icm_cli.predict.propagator import Propagator

    g = torch.Generator().manual_seed(0)
    ft = torch.nn.functional.normalize(torch.randn(2, 16, 6, 10, generator=g), dim=1)
    ref_ft = torch.nn.functional.normalize(torch.randn(1, 16, 6, 10, generator=g), dim=1)
    ref_mask = torch.zeros(1, 1, 48, 80)
    ref_mask[..., 8:40, 16:56] = 1.0
    attn = affinity_attention(ft, 0.05)                   # [2, 6, 10, 60]: the same grid as ft
    tokens, valid = roi_tokens(ref_ft, ref_mask)
    engine = SimpleNamespace(context=SimpleNamespace(roi_tokens=tokens, roi_valid=valid))
    inter, intra = Propagator.icm_heat(engine, ft, {(6, 10): attn})
    seed = TrainingFreeAttention().attend(ft, tokens, valid, attn)
    torch.testing.assert_close(seed.inter, inter)
    torch.testing.assert_close(seed.intra, intra)
