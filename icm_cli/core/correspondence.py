"""Matching source features to a labelled reference.

Shapes: source features ``[B, C, h, w]``, reference features
``[B, C, h2, w2]`` (or ``[1, C, h2, w2]``: one cached reference serves a
whole source batch), reference masks ``[B, 1, H, W]`` (or ``[1, 1, H, W]``)
at any resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._checks import broadcast_batch, require_4d, require_mask, require_positive_int, require_size
from .morphology import generate_trimap, maskpooling
from .results import CorrespondenceResult

#: Norms are clamped to this before dividing. Small enough not to change any
#: real feature, large enough to be representable in float16 (1e-12, the
#: usual default, rounds to 0 there and turns zero vectors into NaN).
NORM_EPS = 1e-6


def l2_normalise(features: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Unit-length vectors along ``dim`` (zero vectors stay zero, never NaN)."""
    return F.normalize(features, p=2.0, dim=dim, eps=NORM_EPS)


def _require_same_channels(source_ft: torch.Tensor, ref_ft: torch.Tensor) -> None:
    if source_ft.shape[1] != ref_ft.shape[1]:
        raise ValueError(
            f"source and reference features must have the same channel count; got "
            f"{source_ft.shape[1]} and {ref_ft.shape[1]} (were they made by the same backbone?)."
        )


def compute_correspondence_matrix(source_ft: torch.Tensor, ref_ft: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every source position to every reference position.

    source_ft: ``[B, C, h, w]``; ref_ft: ``[B, C, h2, w2]`` or ``[1, C, h2, w2]``.
    Both are L2-normalised along C here, so they need not be already.
    Returns ``[B, h*w, h2*w2]`` (row ``i`` = source position ``i`` in raster
    order, column ``j`` = reference position ``j``), values in [-1, 1].
    """
    require_4d(source_ft, "source_ft")
    require_4d(ref_ft, "ref_ft")
    _require_same_channels(source_ft, ref_ft)
    ref_ft = broadcast_batch(ref_ft, source_ft.shape[0], "ref_ft", "source_ft")
    source = l2_normalise(source_ft.flatten(2), dim=1)  # [B, C, h*w]
    reference = l2_normalise(ref_ft.flatten(2), dim=1)  # [B, C, h2*w2]
    return torch.einsum("bci,bcj->bij", source, reference)


def roi_tokens(ref_ft: torch.Tensor, ref_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference feature vectors of the grid cells the mask covers entirely.

    ref_ft: ``[B, C, h, w]``; ref_mask: ``[B, 1, H, W]`` or ``[1, 1, H, W]``,
    binary or soft (foreground where > 0.5), any resolution: it is
    min-pooled onto the ``(h, w)`` grid (:func:`maskpooling`).

    Returns ``(tokens, valid)``:
      tokens: ``[B, N, C]``, item ``b``'s covered cells in raster order, then
              zero vectors up to ``N`` = the largest count in the batch;
      valid:  ``[B, N]`` bool, True for real tokens, False for padding.
    The features are returned as given (not re-normalised).

    Raises ValueError when an item's mask covers no whole cell: there would
    be nothing to match, and a softmax over nothing is NaN.
    """
    require_4d(ref_ft, "ref_ft")
    require_mask(ref_mask, "ref_mask")
    batch, channels, height, width = ref_ft.shape
    covered = maskpooling(ref_mask, (height, width))  # [B|1, 1, h, w]
    covered = broadcast_batch(covered, batch, "ref_mask", "ref_ft").flatten(1) > 0.5  # [B, h*w]
    counts = covered.sum(dim=1)  # [B]
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"reference mask covers no whole feature cell of the {height}x{width} feature grid "
            f"(batch item(s) {empty}); use a larger mask or a finer grid."
        )
    token_count = int(counts.max())
    # A stable sort on "not covered" brings the covered cells to the front in
    # raster order, for every item at once (no per-item Python loop).
    order = torch.argsort((~covered).to(torch.uint8), dim=1, stable=True)[:, :token_count]  # [B, N]
    features = rearrange(ref_ft, "b c h w -> b (h w) c")
    tokens = torch.gather(features, 1, order.unsqueeze(-1).expand(-1, -1, channels))  # [B, N, C]
    valid = torch.arange(token_count, device=ref_ft.device).unsqueeze(0) < counts.unsqueeze(1)  # [B, N]
    tokens = tokens.masked_fill(~valid.unsqueeze(-1), 0)
    return tokens, valid


class InContextCorrespondence(nn.Module):
    """Label each source position with the reference mask at its best match.

    kernel_size: erosion and dilation kernel of the trimap (the seed read an
    attribute that was never set; here it is a constructor parameter).
    No trainable parameters.
    """

    def __init__(self, kernel_size: int = 10) -> None:
        super().__init__()
        self.kernel_size = require_positive_int(kernel_size, "kernel_size")

    def forward(
        self,
        source_ft: torch.Tensor,
        ref_ft: torch.Tensor,
        ref_mask: torch.Tensor,
        output_size: tuple[int, int] | None = None,
    ) -> CorrespondenceResult:
        """Match and look up.

        source_ft: ``[B, C, h, w]``; ref_ft: ``[B|1, C, h2, w2]``;
        ref_mask: ``[B|1, 1, H, W]`` (min-pooled onto ``(h2, w2)``).
        output_size: ``(H', W')`` at which to build the trimap (the matched
        mask is enlarged nearest-neighbour first, so ``kernel_size`` counts
        output pixels); default ``(h, w)``.
        Returns a :class:`CorrespondenceResult` (``mask`` and ``similarity``
        ``[B, 1, h, w]``, ``trimap`` ``[B, 1, H', W']``, ``matched_index``
        ``[B, h*w]``).
        """
        require_4d(source_ft, "source_ft")
        require_4d(ref_ft, "ref_ft")
        require_mask(ref_mask, "ref_mask")
        batch, _, height, width = source_ft.shape
        similarity_matrix = compute_correspondence_matrix(source_ft, ref_ft)  # [B, h*w, h2*w2]
        similarity, matched_index = similarity_matrix.max(dim=-1)  # [B, h*w] each
        ref_covered = maskpooling(ref_mask, tuple(ref_ft.shape[-2:]))  # [B|1, 1, h2, w2]
        ref_covered = broadcast_batch(ref_covered, batch, "ref_mask", "source_ft").flatten(1)  # [B, h2*w2]
        mask = torch.gather(ref_covered, 1, matched_index).view(batch, 1, height, width)
        if output_size is not None:
            trimap_input = F.interpolate(mask, size=require_size(output_size, "output_size"), mode="nearest")
        else:
            trimap_input = mask
        trimap = generate_trimap(trimap_input, self.kernel_size, self.kernel_size)
        return CorrespondenceResult(
            mask=mask,
            trimap=trimap,
            similarity=similarity.view(batch, 1, height, width),
            matched_index=matched_index,
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"
