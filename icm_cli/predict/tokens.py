"""Reference tokens: features under (and outside) the reference mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ReferenceTokens:
    """Tokens pooled from one or more references.

    fg: ``[Nf, C]`` features of cells the mask covers (area fraction >= fg_min).
    bg: ``[Nb, C]`` features of cells the mask misses (area fraction <= bg_max).
    cells: ``[Nc, C]`` every valid cell's features, with ``cell_targets``
        ``[Nc]`` the mask's area fraction in that cell (for training heads).
    """

    fg: torch.Tensor
    bg: torch.Tensor
    cells: torch.Tensor
    cell_targets: torch.Tensor

    @staticmethod
    def concat(items: list["ReferenceTokens"]) -> "ReferenceTokens":
        return ReferenceTokens(*(torch.cat([getattr(t, k) for t in items]) for k in
                                 ("fg", "bg", "cells", "cell_targets")))


def mask_area_on_grid(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Fraction of each grid cell covered by the mask.

    mask: ``[B, 1, H, W]`` in [0, 1] at canvas resolution; returns ``[B, 1, h, w]``.
    """
    return F.adaptive_avg_pool2d(mask.float(), grid)


def pool_reference_tokens(ft: torch.Tensor, area: torch.Tensor, valid: torch.Tensor,
                          fg_min: float = 0.9, bg_max: float = 0.1) -> ReferenceTokens:
    """Split one reference's cells into object and background tokens.

    ft: ``[C, h, w]``; area: ``[h, w]`` mask fraction per cell; valid:
    ``[h, w]`` bool, False on padding cells.
    """
    c = ft.shape[0]
    flat = ft.reshape(c, -1).T
    a = area.reshape(-1)
    v = valid.reshape(-1)
    return ReferenceTokens(fg=flat[v & (a >= fg_min)], bg=flat[v & (a <= bg_max)],
                           cells=flat[v], cell_targets=a[v])
