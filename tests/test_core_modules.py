"""Trainable modules: they build, run forward and backward, and round-trip their state dicts."""

from __future__ import annotations

import pytest
import torch

from icm_cli.core import (
    AttentionMapConv,
    ConvBNReLU,
    FusionBlock,
    MultiScaleFeatureFusion,
    OneWayAttentionBlock,
    SemiTrainingAttentionBlocks,
    TrainingCrossAttention,
)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=generator(seed))


def attention(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    return (3 * randn(batch, height, width, height * width, seed=seed)).softmax(dim=-1)


def reference_inputs(batch: int = 2, channels: int = 8):
    ref_ft = randn(batch, channels, 4, 5, seed=1)
    ref_mask = torch.zeros(batch, 1, 16, 20)
    ref_mask[0, :, 0:8, 0:12] = 1
    ref_mask[-1, :, 4:16, 8:20] = 1  # a different token count from item 0
    return ref_ft, ref_mask


def semi_inputs(batch: int = 2, channels: int = 8):
    ref_ft, ref_mask = reference_inputs(batch, channels)
    source_ft = randn(batch, channels, 6, 4, seed=2)
    attns = {(6, 4): attention(batch, 6, 4, seed=3), (3, 2): attention(batch, 3, 2, seed=4)}
    return source_ft, ref_ft, ref_mask, attns


def outputs(module: torch.nn.Module, case: str) -> torch.Tensor:
    """Run ``module`` on its fixed inputs and return one tensor to compare and back-propagate."""
    if case == "conv":
        return module(randn(2, 3, 7, 5, seed=5))
    if case == "fusion_block":
        return module(randn(2, 4, 3, 5, seed=6), randn(2, 2, 6, 10, seed=7))
    if case == "multiscale":
        return module([randn(2, 6, 3, 4, seed=8), randn(2, 4, 6, 8, seed=9), randn(2, 2, 12, 16, seed=10)])
    if case == "one_way":
        valid = torch.tensor([[True, True, False], [True, False, False]])
        return module(randn(2, 5, 8, seed=11), randn(2, 3, 8, seed=12), valid)
    if case == "cross":
        ref_ft, ref_mask = reference_inputs()
        return module(randn(2, 8, 3, 5, seed=13), ref_ft, ref_mask)
    if case == "semi":
        return module(*semi_inputs()).logits
    raise AssertionError(case)


CASES = {
    "conv": (lambda: ConvBNReLU(3, 6), (2, 6, 7, 5)),
    "attention_map_conv": (lambda: AttentionMapConv(3, 5), (2, 5, 7, 5)),
    "fusion_block": (lambda: FusionBlock(4, 2, 6), (2, 6, 6, 10)),
    "multiscale": (lambda: MultiScaleFeatureFusion([6, 4, 2], 5), (2, 5, 12, 16)),
    "one_way": (lambda: OneWayAttentionBlock(8, num_heads=2, downsample_rate=2), (2, 5, 8)),
    "cross": (lambda: TrainingCrossAttention(8, num_blocks=2, num_heads=2, downsample_rate=2), (2, 8, 3, 5)),
    "semi": (lambda: SemiTrainingAttentionBlocks(hidden_channels=4), (2, 1, 6, 4)),
}


def run_case(name: str, module: torch.nn.Module) -> torch.Tensor:
    return outputs(module, "conv" if name == "attention_map_conv" else name)


@pytest.mark.parametrize("name", CASES)
def test_forward_and_backward_give_finite_gradients_to_every_parameter(name):
    torch.manual_seed(0)
    build, shape = CASES[name]
    module = build().train()
    out = run_case(name, module)
    assert out.shape == shape and torch.isfinite(out).all()
    out.square().mean().backward()
    params = list(module.named_parameters())
    assert params
    for param_name, param in params:
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
    assert any(param.grad.abs().sum() > 0 for _, param in params)


@pytest.mark.parametrize("name", CASES)
def test_state_dict_round_trips_through_a_file(name, tmp_path):
    build, _ = CASES[name]
    torch.manual_seed(1)
    trained = build()
    # Move BatchNorm statistics off their defaults so they are part of what must round-trip.
    trained.train()
    with torch.no_grad():
        run_case(name, trained)
    trained.eval()
    path = tmp_path / f"{name}.pt"
    torch.save(trained.state_dict(), path)
    torch.manual_seed(2)
    fresh = build().eval()
    with torch.no_grad():
        assert not torch.equal(run_case(name, fresh), run_case(name, trained))
    fresh.load_state_dict(torch.load(path, weights_only=True))
    with torch.no_grad():
        assert torch.equal(run_case(name, fresh), run_case(name, trained))


def test_padded_context_tokens_do_not_change_the_output():
    block = OneWayAttentionBlock(8, num_heads=2).eval()
    queries, context = randn(1, 4, 8, seed=14), randn(1, 3, 8, seed=15)
    valid = torch.tensor([[True, True, False]])
    changed = context.clone()
    changed[0, 2] = 1e3
    torch.testing.assert_close(block(queries, context, valid), block(queries, changed, valid))
    torch.testing.assert_close(block(queries, context, valid), block(queries, context[:, :2], valid[:, :2]))


def test_all_padding_context_gives_a_finite_output():
    block = OneWayAttentionBlock(8)
    out = block(randn(2, 4, 8, seed=16), randn(2, 3, 8, seed=17), torch.zeros(2, 3, dtype=torch.bool))
    assert torch.isfinite(out).all()


def test_cross_attention_batch_with_variable_token_counts_equals_singles():
    module = TrainingCrossAttention(8, num_blocks=2, num_heads=2).eval()
    ref_ft, ref_mask = reference_inputs(batch=2)
    source_ft = randn(2, 8, 3, 5, seed=18)
    with torch.no_grad():
        batched = module(source_ft, ref_ft, ref_mask)
        for item in range(2):
            pick = slice(item, item + 1)
            torch.testing.assert_close(batched[pick], module(source_ft[pick], ref_ft[pick], ref_mask[pick]))


def test_semi_training_blocks_return_probabilities_and_the_training_free_maps():
    module = SemiTrainingAttentionBlocks(hidden_channels=4).eval()
    with torch.no_grad():
        result = module(*semi_inputs(), output_size=(12, 8))
    assert result.logits.shape == result.probability.shape == (2, 1, 12, 8)
    assert torch.all((result.probability >= 0) & (result.probability <= 1))
    assert set(result.training_free.levels) == {(6, 4), (3, 2)}


def test_multiscale_fusion_handles_odd_sizes_and_checks_the_scale_count():
    module = MultiScaleFeatureFusion([4, 2], 3)
    assert module([randn(1, 4, 3, 5), randn(1, 2, 7, 9)]).shape == (1, 3, 7, 9)
    with pytest.raises(ValueError, match="expected 2 feature maps"):
        module([randn(1, 4, 3, 5)])
    with pytest.raises(ValueError, match="at least two scales"):
        MultiScaleFeatureFusion([4], 3)


def test_attention_dims_must_split_into_heads():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        OneWayAttentionBlock(8, num_heads=3)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        OneWayAttentionBlock(8, downsample_rate=16)
