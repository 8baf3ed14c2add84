"""Training-free attention: inter (cross) heat, intra (self-attention) propagation, refinement.

The ICM paper's inter- and intra-similarity, as batched tensor code:

- *inter*: each reference ROI token ``t`` puts a softmax over source
  positions, ``softmax_p(<t, f_p> / temperature)``; summed over tokens it is
  a heat map of where the reference object is in the source;
- *intra*: the source's own self-attention ``A`` (``[h*w, h*w]``,
  row-stochastic) spreads that heat over the whole object:
  ``heat' = heat · Aᵀ``;
- *refinement*: a position is foreground when it attends more (on average)
  to the current foreground than to the background; repeat until the mask
  stops changing.

Self-attention maps are ``[B, h, w, h*w]`` (the backbone contract): entry
``[b, i, j, :]`` is position ``(i, j)``'s attention over all ``h*w``
positions in raster order, summing to 1.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import (
    binarize,
    broadcast_batch,
    float_dtype,
    require_4d,
    require_attention,
    require_mask,
    require_positive_int,
    require_size,
)
from .correspondence import l2_normalise, roi_tokens
from .morphology import resize_mask
from .results import AttentionResult

#: Default softmax temperature of the inter heat. The seed's default was 1
#: (``temp_softmax=1``) on unnormalised diffusion features, whose dot
#: products span tens of units; on L2-normalised features (the backbone
#: contract) dot products are cosines in [-1, 1], where a temperature of 1
#: makes every token's softmax nearly uniform. 0.1 gives logits in [-10, 10];
#: temperatures of 0.025-0.1 measured the same here (shared/RESEARCH.md).
DEFAULT_TEMPERATURE = 0.1

#: Default refinement iterations (the seed's 3).
DEFAULT_ITERATIONS = 3

SCORE_TYPES = ("classification", "softmax", "ratio")


def _require_score_type(score_type: str) -> str:
    if score_type not in SCORE_TYPES:
        raise ValueError(f"score_type must be one of {', '.join(SCORE_TYPES)}; got {score_type!r}.")
    return score_type


def _require_grid_match(mask: torch.Tensor, attn_grid: tuple[int, int], name: str) -> None:
    if tuple(mask.shape[-2:]) != attn_grid:
        raise ValueError(
            f"{name} is on a {mask.shape[-2]}x{mask.shape[-1]} grid but the attention map is "
            f"{attn_grid[0]}x{attn_grid[1]}; resize it first (resize_mask) or use refine_mask_by_attention, "
            f"which does."
        )


def peak_normalise(heat: torch.Tensor) -> torch.Tensor:
    """Each image's heat divided by its maximum, so its peak is 1 (``[B, ...]`` -> the same shape and dtype).

    An all-zero map stays zero: the divisor is floored at the dtype's smallest normal number.
    """
    peak = heat.flatten(1).amax(dim=1).clamp_min(torch.finfo(heat.dtype).tiny)
    return heat / peak.view(-1, *([1] * (heat.dim() - 1)))


def cross_attention_heat(
    source_ft: torch.Tensor,
    tokens: torch.Tensor,
    valid: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
) -> torch.Tensor:
    """The "inter" heat: where the reference tokens land in each source image.

    source_ft: ``[B, C, h, w]``; tokens: ``[B, N, C]`` or ``[1, N, C]``;
    valid: ``[B, N]`` or ``[1, N]`` bool (from :func:`roi_tokens`).
    Features are expected L2-normalised (the backbone contract), so the dot
    product is a cosine; they are not normalised here.

    For each token, ``softmax_p(<token, f_p> / temperature)`` over the
    ``h*w`` source positions; the valid tokens' softmaxes are summed
    (padded tokens contribute nothing) and each image's map is divided by
    its maximum, so its peak is 1. An item without valid tokens gets an
    all-zero map.
    Returns ``[B, 1, h, w]`` in [0, 1], in the features' dtype; the softmax
    and the sum run in float32 so half-precision inputs do not lose the
    small per-position probabilities.
    """
    require_4d(source_ft, "source_ft")
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3:
        raise ValueError("tokens must be shaped [B, N, C].")
    if not isinstance(valid, torch.Tensor) or valid.dim() != 2 or valid.shape != tokens.shape[:2]:
        raise ValueError(f"valid must be a [B, N] mask matching tokens {tuple(tokens.shape[:2])}.")
    if tokens.shape[-1] != source_ft.shape[1]:
        raise ValueError(
            f"tokens have {tokens.shape[-1]} channels but source_ft has {source_ft.shape[1]}; "
            f"they must come from the same backbone."
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}.")
    batch, _, height, width = source_ft.shape
    tokens = broadcast_batch(tokens, batch, "tokens", "source_ft")
    valid = broadcast_batch(valid, batch, "valid", "source_ft")
    # Scaling the (small) tokens rather than the [B, N, h*w] logits saves one logits-sized copy.
    scaled_tokens = tokens.to(source_ft.dtype) / temperature
    logits = torch.einsum("bnc,bcp->bnp", scaled_tokens, source_ft.flatten(2))  # [B, N, h*w]
    landing = logits.softmax(dim=-1, dtype=torch.float32)  # [B, N, h*w]
    heat = torch.einsum("bnp,bn->bp", landing, valid.to(torch.float32))  # [B, h*w]
    heat = peak_normalise(heat)
    return heat.to(float_dtype(source_ft)).view(batch, 1, height, width)


def propagate_heat(heat: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """The "intra" step: spread heat with the source's self-attention, ``heat · Aᵀ``.

    heat: ``[B, 1, h, w]``; attn: ``[B, h, w, h*w]`` (rows sum to 1).
    ``out[i] = sum_j A[i, j] * heat[j]``: each position takes the
    attention-weighted average of the heat, so [0, 1] stays in [0, 1].
    Returns ``[B, 1, h, w]`` in the promoted dtype of the two inputs.
    """
    require_mask(heat, "heat")
    batch, height, width = require_attention(attn)
    if heat.shape[0] != batch:
        raise ValueError(f"heat has batch {heat.shape[0]} but attn has batch {batch}.")
    _require_grid_match(heat, (height, width), "heat")
    dtype = torch.promote_types(float_dtype(heat), float_dtype(attn))
    positions = height * width
    spread = torch.bmm(attn.reshape(batch, positions, positions).to(dtype), heat.reshape(batch, positions, 1).to(dtype))
    return spread.view(batch, 1, height, width)


def calculate_attention_score(
    mask: torch.Tensor,
    attn: torch.Tensor,
    score_type: str = "classification",
) -> torch.Tensor:
    """Score each position by how much it attends to the mask's foreground vs its background.

    mask: ``[B, 1, h, w]`` binary or soft (foreground where > 0.5), on the
    attention grid; attn: ``[B, h, w, h*w]``.
    For every position, ``fg_mean`` / ``bg_mean`` = its mean attention to
    the foreground / background positions (one batched product of the
    ``[B, hw, hw]`` attention with the ``[B, hw, 2]`` fg/bg indicators).

    score_type:
      ``classification``: 1.0 where ``fg_mean > bg_mean``, else 0.0;
      ``softmax``: softmax over the two means, probability of foreground.
          The means are of order ``1 / (h*w)``, so they are first measured
          in units of uniform attention (times ``h*w``); unscaled, every
          probability would be 0.5 to four decimals. Thresholded at 0.5 it
          gives the same mask as ``classification``;
      ``ratio``: ``fg_mean / (fg_mean + bg_mean)`` (0 where both are 0).
    Empty and full masks are defined, not divided by zero: an empty
    foreground scores 0 everywhere (stays empty), a full one 1 everywhere
    (stays full).

    Returns ``[B, 1, h, w]`` in the attention's dtype.
    """
    _require_score_type(score_type)
    require_mask(mask, "mask")
    batch, height, width = require_attention(attn)
    if mask.shape[0] != batch:
        raise ValueError(f"mask has batch {mask.shape[0]} but attn has batch {batch}.")
    _require_grid_match(mask, (height, width), "mask")
    dtype = float_dtype(attn)
    positions = height * width

    foreground = binarize(mask).reshape(batch, positions)  # [B, hw]
    indicators = torch.stack([foreground, ~foreground], dim=-1)  # [B, hw, 2]
    mass = torch.bmm(attn.reshape(batch, positions, positions).to(dtype), indicators.to(dtype))  # [B, hw, 2]
    # Counts are exact integers; float16 cannot hold every integer above 2048.
    counts = indicators.sum(dim=1, keepdim=True)  # [B, 1, 2] int64
    # An empty side has zero attention mass, so clamping its count to 1 makes
    # its mean 0 instead of 0/0; the empty/full cases are then set below.
    means = mass.to(torch.float32) / counts.clamp_min(1).to(torch.float32)
    fg_mean, bg_mean = means.unbind(dim=-1)  # [B, hw] each

    if score_type == "classification":
        score = (fg_mean > bg_mean).to(torch.float32)
    elif score_type == "softmax":
        # softmax([a, b])[0] == sigmoid(a - b)
        score = torch.sigmoid((fg_mean - bg_mean) * positions)
    else:
        score = fg_mean / (fg_mean + bg_mean).clamp_min(torch.finfo(torch.float32).tiny)

    no_foreground = counts[:, :, 0] == 0  # [B, 1]
    no_background = counts[:, :, 1] == 0
    score = torch.where(no_foreground, torch.zeros_like(score), score)
    score = torch.where(no_background, torch.ones_like(score), score)
    return score.to(dtype).view(batch, 1, height, width)


def refine_mask_by_attention(
    mask: torch.Tensor,
    attn: torch.Tensor,
    iterations: int = DEFAULT_ITERATIONS,
    score_type: str = "classification",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Iterate :func:`calculate_attention_score` until the mask stops changing.

    mask: ``[B, 1, H, W]`` binary or soft (foreground where > 0.5), any
    resolution: if it is not on the attention grid it is brought there with
    :func:`resize_mask` (area average when shrinking, bilinear otherwise,
    then > 0.5). attn: ``[B, h, w, h*w]``.
    Each iteration scores the current mask and thresholds the score at 0.5
    (a no-op for ``classification``). It stops early once no item's mask
    changed; it never raises because a mask is still changing.

    Returns ``(mask, converged)``: the last mask ``[B, 1, h, w]`` (0/1, in
    the attention's dtype) and ``[B]`` bool, True where the last iteration
    left the item's mask unchanged (a fixed point: refining it again
    returns it as is).
    """
    _require_score_type(score_type)
    require_positive_int(iterations, "iterations")
    require_mask(mask, "mask")
    batch, height, width = require_attention(attn)
    if mask.shape[0] != batch:
        raise ValueError(f"mask has batch {mask.shape[0]} but attn has batch {batch}.")
    current = binarize(resize_mask(mask, (height, width)))  # [B, 1, h, w] bool
    converged = torch.zeros(batch, dtype=torch.bool, device=attn.device)
    for _ in range(iterations):
        following = calculate_attention_score(current, attn, score_type) > 0.5
        converged = (following == current).flatten(1).all(dim=1)
        current = following
        if bool(converged.all()):
            break
    return current.to(float_dtype(attn)), converged


def _features_on_grid(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, C, size]`` bilinear, then unit length along C."""
    if tuple(features.shape[-2:]) != tuple(size):
        features = F.interpolate(features, size=size, mode="bilinear", align_corners=False)
    return l2_normalise(features, dim=1)


def _heat_on_grid(heat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(heat.shape[-2:]) == tuple(size):
        return heat
    return F.interpolate(heat, size=size, mode="bilinear", align_corners=False)


class TrainingFreeAttention(nn.Module):
    """Inter heat -> intra heat -> refined mask, at one attention grid. No parameters.

    temperature: softmax temperature of the inter heat (see
    :data:`DEFAULT_TEMPERATURE`); iterations and score_type: of
    :func:`refine_mask_by_attention`; threshold: the intra heat (peak 1)
    above which a position starts as foreground before refinement.
    """

    def __init__(
        self,
        temperature: float = DEFAULT_TEMPERATURE,
        iterations: int = DEFAULT_ITERATIONS,
        score_type: str = "classification",
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}.")
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {threshold!r}.")
        self.temperature = float(temperature)
        self.iterations = require_positive_int(iterations, "iterations")
        self.score_type = _require_score_type(score_type)
        self.threshold = float(threshold)

    def forward(
        self,
        source_ft: torch.Tensor,
        ref_ft: torch.Tensor,
        ref_mask: torch.Tensor,
        attn: torch.Tensor,
    ) -> AttentionResult:
        """source_ft: ``[B, C, h, w]``; ref_ft: ``[B|1, C, h2, w2]``;
        ref_mask: ``[B|1, 1, H, W]``; attn: the source's self-attention
        ``[B, ha, wa, ha*wa]``.

        Reference tokens are pooled at the reference's own grid
        (:func:`roi_tokens`); source features are resized to the attention
        grid when they differ. Both are L2-normalised here, so the
        temperature always applies to cosines.
        Returns an :class:`AttentionResult` on the ``(ha, wa)`` grid.
        """
        require_4d(ref_ft, "ref_ft")
        tokens, valid = roi_tokens(l2_normalise(ref_ft, dim=1), ref_mask)
        return self.attend(source_ft, tokens, valid, attn)

    def attend(
        self,
        source_ft: torch.Tensor,
        tokens: torch.Tensor,
        valid: torch.Tensor,
        attn: torch.Tensor,
    ) -> AttentionResult:
        """Same as :meth:`forward` with the reference already pooled.

        tokens: ``[B|1, N, C]``; valid: ``[B|1, N]`` (from :func:`roi_tokens`;
        tokens are re-normalised here, padding stays zero).
        """
        require_4d(source_ft, "source_ft")
        batch, height, width = require_attention(attn)
        if source_ft.shape[0] != batch:
            raise ValueError(f"source_ft has batch {source_ft.shape[0]} but attn has batch {batch}.")
        source = _features_on_grid(source_ft, (height, width))
        inter = cross_attention_heat(source, l2_normalise(tokens, dim=-1), valid, self.temperature)
        # Peak-normalised again so the threshold means "relative to the hottest position".
        intra = peak_normalise(propagate_heat(inter, attn))
        mask, converged = refine_mask_by_attention(intra > self.threshold, attn, self.iterations, self.score_type)
        return AttentionResult(inter=inter, intra=intra, mask=mask, converged=converged)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, iterations={self.iterations}, "
            f"score_type={self.score_type!r}, threshold={self.threshold}"
        )


class TrainingFreeAttentionBlocks(nn.Module):
    """:class:`TrainingFreeAttention` over several attention grids, fused onto one. No parameters.

    Same constructor arguments as :class:`TrainingFreeAttention`.
    """

    def __init__(
        self,
        temperature: float = DEFAULT_TEMPERATURE,
        iterations: int = DEFAULT_ITERATIONS,
        score_type: str = "classification",
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.attention = TrainingFreeAttention(temperature, iterations, score_type, threshold)

    @staticmethod
    def fusion_grid(attns: Mapping[tuple[int, int], torch.Tensor]) -> tuple[int, int]:
        """The finest grid (most positions) of the attention maps."""
        return max((tuple(attn.shape[1:3]) for attn in attns.values()), key=lambda grid: grid[0] * grid[1])

    def forward(
        self,
        source_ft: torch.Tensor,
        ref_ft: torch.Tensor,
        ref_mask: torch.Tensor,
        attns: Mapping[tuple[int, int], torch.Tensor],
        output_size: tuple[int, int] | None = None,
    ) -> AttentionResult:
        """source_ft: ``[B, C, h, w]``; ref_ft: ``[B|1, C, h2, w2]``;
        ref_mask: ``[B|1, 1, H, W]``;
        attns: ``{(ha, wa): [B, ha, wa, ha*wa]}``, one or more grids (the
        keys are labels; the shapes are read from the tensors).
        output_size: the fusion grid, default the finest attention grid.

        The reference is pooled once and every level runs batched. Fusion:
        heat maps are resized bilinearly to the fusion grid and averaged;
        each level's refined mask is resized the same way and the fused mask
        is the majority vote (mean > 0.5); ``converged`` is True for an item
        only if every level converged.
        Returns an :class:`AttentionResult` on the fusion grid, with the
        per-level results in ``levels``.
        """
        if not attns:
            raise ValueError("attns must hold at least one self-attention map {(h, w): [B, h, w, h*w]}.")
        require_4d(ref_ft, "ref_ft")
        tokens, valid = roi_tokens(l2_normalise(ref_ft, dim=1), ref_mask)
        levels = {key: self.attention.attend(source_ft, tokens, valid, attn) for key, attn in attns.items()}
        size = require_size(output_size, "output_size") if output_size is not None else self.fusion_grid(attns)

        def fused(name: str) -> torch.Tensor:
            return torch.stack([_heat_on_grid(getattr(level, name), size) for level in levels.values()]).mean(dim=0)

        mask_vote = fused("mask")
        return AttentionResult(
            inter=fused("inter"),
            intra=fused("intra"),
            mask=(mask_vote > 0.5).to(mask_vote.dtype),
            converged=torch.stack([level.converged for level in levels.values()]).all(dim=0),
            levels=levels,
        )
