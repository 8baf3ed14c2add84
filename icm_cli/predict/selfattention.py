"""Refining a coarse mask with the image's own self-attention (ICM's intra step)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from icm_cli.backbones.base import Backbone
from icm_cli.core import refine_mask_by_attention
from icm_cli.geometry import WorkingGeometry
from icm_cli.predict.context import to_tensor


@torch.no_grad()
def refine_mask_with_attention(backbone: Backbone, image: np.ndarray, mask: np.ndarray, size: int,
                               iterations: int = 3, score_type: str = "classification",
                               device: torch.device | str = "cpu",
                               dtype: torch.dtype = torch.float32) -> tuple[np.ndarray, bool]:
    """Refine a full-size mask by attention voting on the backbone's attention grid.

    image ``[H, W, 3]`` uint8, mask ``[H, W]`` float in [0, 1]. The mask is
    area-averaged onto the attention grid and refined with
    :func:`icm_cli.core.refine_mask_by_attention`; only the grid cells whose
    label the refinement changed are rewritten in the full-size mask (with
    the refined label, upsampled bilinearly), so the user's own edges survive
    wherever attention agrees with them. Returns ``([H, W] bool, converged)``.
    """
    h, w = mask.shape
    geo = WorkingGeometry.fit(h, w, size, backbone.multiple)
    canvas = geo.to_canvas(to_tensor(image)).to(device, dtype)
    feats = backbone(canvas, with_attention=True)
    grid, attn = next(iter(feats.attn.items()))
    mask_t = torch.from_numpy((mask >= 0.5).astype(np.float32))[None, None]
    coarse = F.adaptive_avg_pool2d(geo.mask_to_canvas(mask_t), grid)  # [1, 1, gh, gw] soft
    refined, converged = refine_mask_by_attention(coarse.to(attn.device, attn.dtype), attn, iterations, score_type)
    refined = refined.float().cpu()
    valid = geo.valid_mask(*grid)[None, None]
    changed = ((refined >= 0.5) != (coarse >= 0.5)) & valid
    changed_full = geo.to_original(changed.float(), mode="nearest")[0, 0].numpy() > 0.5
    refined_full = geo.to_original(refined)[0, 0].numpy() >= 0.5
    out = np.where(changed_full, refined_full, mask >= 0.5)
    return out, bool(converged[0])
