"""Trainable modules of the ICM decoder.

No trained weights exist for these in this project: they build, run forward
and backward, and save/load state dicts, so they can be trained later. All
shapes are documented on each ``forward``; token sequences are ``[B, N, C]``
and feature maps ``[B, C, h, w]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._checks import require_4d, require_positive_int, require_size
from .attention import DEFAULT_ITERATIONS, DEFAULT_TEMPERATURE, TrainingFreeAttentionBlocks, _heat_on_grid
from .correspondence import roi_tokens
from .results import SemiTrainingResult


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (padding 1, no bias) + BatchNorm + ReLU.

    ``[B, in_channels, h, w]`` -> ``[B, out_channels, ceil(h / stride), ceil(w / stride)]``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        require_positive_int(in_channels, "in_channels")
        require_positive_int(out_channels, "out_channels")
        require_positive_int(stride, "stride")
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class AttentionMapConv(nn.Module):
    """LayerNorm over channels + ReLU + 3x3 convolution, for attention and heat maps.

    Attention maps carry no batch statistics worth learning (each row is a
    distribution), so they are normalised per position across channels
    rather than with BatchNorm.
    ``[B, in_channels, h, w]`` -> ``[B, out_channels, h, w]``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        require_positive_int(in_channels, "in_channels")
        require_positive_int(out_channels, "out_channels")
        self.norm = nn.LayerNorm(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        require_4d(maps, "maps")
        normalised = rearrange(self.norm(rearrange(maps, "b c h w -> b h w c")), "b h w c -> b c h w")
        return self.conv(F.relu(normalised))


class FusionBlock(nn.Module):
    """Upsample a coarse map to its skip's size (nominally x2), concatenate, 3x3 ConvBNReLU.

    coarse: ``[B, in_channels, h, w]``; skip: ``[B, skip_channels, H, W]``
    (usually ``H = 2h``, ``W = 2w``; any size works, the upsampling goes to
    the skip's exact size). Returns ``[B, out_channels, H, W]``.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        require_positive_int(skip_channels, "skip_channels")
        self.conv = ConvBNReLU(in_channels + skip_channels, out_channels)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        require_4d(coarse, "coarse")
        require_4d(skip, "skip")
        upsampled = F.interpolate(coarse, size=tuple(skip.shape[-2:]), mode="bilinear", align_corners=False)
        return self.conv(torch.cat([upsampled, skip], dim=1))


class MultiScaleFeatureFusion(nn.Module):
    """Chain of :class:`FusionBlock` from the coarsest scale to the finest.

    channels: channel count of each input scale, coarsest first (at least
    two); out_channels: channels of every fused map.
    """

    def __init__(self, channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        channels = list(channels)
        if len(channels) < 2:
            raise ValueError(f"MultiScaleFeatureFusion needs at least two scales, got channels={channels}.")
        require_positive_int(out_channels, "out_channels")
        self.channels = channels
        in_channels = [channels[0]] + [out_channels] * (len(channels) - 2)
        self.blocks = nn.ModuleList(
            FusionBlock(coarse, skip, out_channels) for coarse, skip in zip(in_channels, channels[1:])
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """features: ``[B, channels[i], h_i, w_i]`` coarsest first.

        Returns ``[B, out_channels, h_last, w_last]`` (the finest scale's size).
        """
        if len(features) != len(self.channels):
            raise ValueError(f"expected {len(self.channels)} feature maps (coarsest first), got {len(features)}.")
        fused = features[0]
        for block, skip in zip(self.blocks, features[1:]):
            fused = block(fused, skip)
        return fused


class ProjectedAttention(nn.Module):
    """Multi-head attention whose q/k/v live in ``dim // downsample_rate`` channels (SAM's habit).

    queries: ``[B, Nq, dim]``; keys, values: ``[B, Nk, dim]``;
    key_valid: ``[B, Nk]`` bool or None (False = padding, never attended).
    Returns ``[B, Nq, dim]``. A query whose keys are all padding gets a zero
    attention output (not NaN).
    """

    def __init__(self, dim: int, num_heads: int = 1, downsample_rate: int = 1) -> None:
        super().__init__()
        require_positive_int(dim, "dim")
        require_positive_int(num_heads, "num_heads")
        require_positive_int(downsample_rate, "downsample_rate")
        internal_dim = dim // downsample_rate
        if internal_dim == 0 or internal_dim % num_heads:
            raise ValueError(
                f"dim // downsample_rate = {internal_dim} must be a positive multiple of num_heads = {num_heads}."
            )
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, internal_dim)
        self.k_proj = nn.Linear(dim, internal_dim)
        self.v_proj = nn.Linear(dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, dim)

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        key_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        split = "b n (heads d) -> b heads n d"
        q = rearrange(self.q_proj(queries), split, heads=self.num_heads)
        k = rearrange(self.k_proj(keys), split, heads=self.num_heads)
        v = rearrange(self.v_proj(values), split, heads=self.num_heads)
        logits = torch.einsum("bhqd,bhkd->bhqk", q, k) * q.shape[-1] ** -0.5
        if key_valid is not None:
            allowed = key_valid[:, None, None, :]  # [B, 1, 1, Nk]
            # A finite minimum (not -inf) keeps an all-padding row finite;
            # multiplying by `allowed` afterwards zeroes it.
            logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
            weights = logits.softmax(dim=-1) * allowed
        else:
            weights = logits.softmax(dim=-1)
        attended = torch.einsum("bhqk,bhkd->bhqd", weights, v)
        return self.out_proj(rearrange(attended, "b heads n d -> b n (heads d)"))


class OneWayAttentionBlock(nn.Module):
    """Queries attend to a context, one way (the context is not updated).

    Post-norm residual layout as in SAM's decoder blocks:
    ``q = LN(q + Attn(q, ctx, ctx))``; ``q = LN(q + MLP(q))`` with a GELU MLP
    of ``mlp_ratio * dim`` hidden units.
    queries: ``[B, Nq, dim]``; context: ``[B, Nk, dim]``;
    context_valid: ``[B, Nk]`` bool or None. Returns ``[B, Nq, dim]``.
    """

    def __init__(self, dim: int, num_heads: int = 1, downsample_rate: int = 1, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio!r}.")
        self.attn = ProjectedAttention(dim, num_heads, downsample_rate)
        self.norm1 = nn.LayerNorm(dim)
        hidden = max(1, round(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self,
        queries: torch.Tensor,
        context: torch.Tensor,
        context_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        queries = self.norm1(queries + self.attn(queries, context, context, context_valid))
        return self.norm2(queries + self.mlp(queries))


class TrainingCrossAttention(nn.Module):
    """Source positions attend to the reference's ROI tokens through :class:`OneWayAttentionBlock` s.

    dim: feature channels C; num_blocks: blocks in sequence; the rest as in
    :class:`OneWayAttentionBlock`.
    """

    def __init__(
        self,
        dim: int,
        num_blocks: int = 1,
        num_heads: int = 1,
        downsample_rate: int = 1,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        require_positive_int(num_blocks, "num_blocks")
        self.blocks = nn.ModuleList(
            OneWayAttentionBlock(dim, num_heads, downsample_rate, mlp_ratio) for _ in range(num_blocks)
        )

    def forward(self, source_ft: torch.Tensor, ref_ft: torch.Tensor, ref_mask: torch.Tensor) -> torch.Tensor:
        """source_ft: ``[B, C, h, w]``; ref_ft: ``[B|1, C, h2, w2]``;
        ref_mask: ``[B|1, 1, H, W]`` (pooled with :func:`roi_tokens`).
        Returns ``[B, C, h, w]``, the source features after attending to
        the reference's ROI tokens.
        """
        require_4d(ref_ft, "ref_ft")
        tokens, valid = roi_tokens(ref_ft, ref_mask)
        return self.attend(source_ft, tokens, valid)

    def attend(self, source_ft: torch.Tensor, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """source_ft: ``[B, C, h, w]``; tokens: ``[B|1, N, C]``; valid: ``[B|1, N]``.

        Returns ``[B, C, h, w]``.
        """
        require_4d(source_ft, "source_ft")
        batch, _, height, width = source_ft.shape
        if tokens.shape[0] == 1 and batch > 1:
            tokens = tokens.expand(batch, -1, -1)
            valid = valid.expand(batch, -1)
        queries = rearrange(source_ft, "b c h w -> b (h w) c")
        for block in self.blocks:
            queries = block(queries, tokens, valid)
        return rearrange(queries, "b (h w) c -> b c h w", h=height, w=width)


class SemiTrainingAttentionBlocks(nn.Module):
    """:class:`TrainingFreeAttentionBlocks` plus small trainable conv blocks on its maps.

    For every attention level, the maps ``[inter, intra, refined mask]``
    (``[B, 3, ha, wa]``) go through :class:`AttentionMapConv` (3 ->
    hidden_channels), :class:`ConvBNReLU` and a 1x1 convolution to one
    foreground logit per position; the levels' logits are resized
    bilinearly to the fusion grid and averaged. The weights do not depend on
    the grid sizes, so one module serves any resolution.
    """

    def __init__(
        self,
        hidden_channels: int = 16,
        temperature: float = DEFAULT_TEMPERATURE,
        iterations: int = DEFAULT_ITERATIONS,
        score_type: str = "classification",
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        require_positive_int(hidden_channels, "hidden_channels")
        self.training_free = TrainingFreeAttentionBlocks(temperature, iterations, score_type, threshold)
        self.map_conv = AttentionMapConv(3, hidden_channels)
        self.conv = ConvBNReLU(hidden_channels, hidden_channels)
        self.head = nn.Conv2d(hidden_channels, 1, kernel_size=1)

    def forward(
        self,
        source_ft: torch.Tensor,
        ref_ft: torch.Tensor,
        ref_mask: torch.Tensor,
        attns: Mapping[tuple[int, int], torch.Tensor],
        output_size: tuple[int, int] | None = None,
    ) -> SemiTrainingResult:
        """Arguments as :meth:`TrainingFreeAttentionBlocks.forward`.

        Returns a :class:`SemiTrainingResult`: ``logits`` and
        ``probability`` ``[B, 1, h, w]`` on the fusion grid (default the
        finest attention grid) and the training-free result they came from.
        """
        free = self.training_free(source_ft, ref_ft, ref_mask, attns, output_size)
        size = require_size(output_size, "output_size") if output_size is not None else tuple(free.mask.shape[-2:])
        weight_dtype = self.head.weight.dtype
        level_logits = []
        for level in free.levels.values():
            maps = torch.cat([level.inter, level.intra, level.mask], dim=1).to(weight_dtype)  # [B, 3, ha, wa]
            level_logits.append(_heat_on_grid(self.head(self.conv(self.map_conv(maps))), size))
        logits = torch.stack(level_logits).mean(dim=0)
        return SemiTrainingResult(logits=logits, probability=torch.sigmoid(logits), training_free=free)
