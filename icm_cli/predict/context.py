"""The reference context: what the labelled references say about the object, built once per run.

:func:`build_context` turns ``(image, mask)`` pairs into a :class:`ReferenceContext`
(pooled object/background tokens, the object head, ICM's ROI tokens and the
decoder's prototypes); :class:`~icm_cli.predict.propagator.Propagator` keeps one
and every source is compared with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from icm_cli.core import roi_tokens
from icm_cli.geometry import WorkingGeometry
from icm_cli.predict.decoder import combine_prototypes, reference_prototypes
from icm_cli.predict.head import ObjectHead, augment_reference, train_object_head
from icm_cli.predict.nearest import background_floor, compact_tokens, topk_mean_similarity
from icm_cli.predict.tokens import ReferenceTokens, mask_area_on_grid, pool_reference_tokens


@dataclass
class ReferenceContext:
    tokens: ReferenceTokens
    head: ObjectHead | None
    feature_dim: int
    background_floor: float = float("nan")
    roi_tokens: torch.Tensor | None = None   # [1, N, C] min-pooled ICM query tokens
    roi_valid: torch.Tensor | None = None    # [1, N] bool
    prototypes: dict[int, torch.Tensor] | None = None  # decoder: {stride: [2, C]} object/background
    reference_features: list = field(default_factory=list)  # [(ft [C, h, w], WorkingGeometry)] per reference
    # the nearest-neighbour contrast's compact token sets: {"fg"|"bg": (prototypes [P, C], counts [P])}
    # for a side with more tokens than PropagateSettings.token_budget (a side not in it keeps its tokens)
    compact: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` uint8 -> ``[1, 3, H, W]`` float32 in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div_(255.0)


def reference_tokens(propagator, image: torch.Tensor, mask: torch.Tensor, prototypes: bool = False
                     ) -> tuple[ReferenceTokens, torch.Tensor, torch.Tensor, WorkingGeometry, dict | None]:
    """image ``[1, 3, H, W]``, mask ``[1, 1, H, W]`` -> tokens, ``[C, h, w]`` features,
    the ``[1, 1, Hc, Wc]`` mask on the canvas, the geometry and (with
    ``prototypes``) the decoder's ``{stride: [2, C]}`` prototypes."""
    geo = propagator.geometry_for(image.shape[-2], image.shape[-1])
    canvas = geo.to_canvas(image)
    mask_canvas = geo.mask_to_canvas(mask, mode="bilinear")
    feats = propagator.features(canvas)
    ft = feats.ft[0]
    grid = tuple(ft.shape[-2:])
    area = mask_area_on_grid(mask_canvas.to(ft.device), grid)[0, 0]
    valid = geo.valid_mask(*grid).to(ft.device)
    protos = (reference_prototypes(feats.levels, mask_canvas, (geo.resized_h, geo.resized_w))
              if prototypes else None)
    return pool_reference_tokens(ft, area, valid), ft, mask_canvas, geo, protos


def icm_roi_tokens(ft: torch.Tensor, mask_canvas: torch.Tensor, fallback: ReferenceTokens) -> torch.Tensor:
    """ICM query tokens ``[N, C]``: features of the cells the mask covers whole."""
    try:
        tokens, valid = roi_tokens(ft[None], mask_canvas.to(ft.device))
        return tokens[0][valid[0]]
    except ValueError:  # a mask smaller than one cell: use its best-covered cells
        return fallback.fg


@torch.no_grad()
def build_context(propagator, references: list[tuple[np.ndarray, np.ndarray]]) -> ReferenceContext:
    """A :class:`ReferenceContext` of ``(image [H,W,3] uint8, mask [H,W] float)`` pairs, made with
    ``propagator``'s backbone and settings."""
    s = propagator.settings
    generator = torch.Generator().manual_seed(s.seed)
    reference_features: list[tuple[torch.Tensor, WorkingGeometry]] = []
    token_sets, head_sets, roi_sets, proto_sets = [], [], [], []
    for image_np, mask_np in references:
        image = to_tensor(image_np)
        mask = torch.from_numpy((mask_np >= 0.5).astype(np.float32))[None, None]
        if mask.sum() == 0:
            raise ValueError("the reference mask is empty")
        tokens, ref_ft, ref_mask_canvas, ref_geo, protos = reference_tokens(
            propagator, image, mask, prototypes=propagator.collect_decoder_inputs)
        if protos is not None:
            proto_sets.append(protos)
        roi_sets.append(icm_roi_tokens(ref_ft, ref_mask_canvas, fallback=tokens))
        reference_features.append((ref_ft.cpu(), ref_geo))
        if tokens.fg.shape[0] == 0:
            # A tiny object covers no whole cell: take its best-covered cells.
            tokens.fg = tokens.cells[tokens.cell_targets >= tokens.cell_targets.max() * 0.5]
        token_sets.append(tokens)
        if s.head_steps > 0:
            head_sets.append(tokens)
            for _ in range(s.augmentations):
                aug_img, aug_mask = augment_reference(image[0], mask[0], generator)
                aug_tokens = reference_tokens(propagator, aug_img[None], aug_mask[None])[0]
                head_sets.append(aug_tokens)
    tokens = ReferenceTokens.concat(token_sets)
    head = None
    if s.head_steps > 0:
        all_cells = ReferenceTokens.concat(head_sets)
        head = train_object_head(all_cells.cells, all_cells.cell_targets, steps=s.head_steps,
                                 batch=s.head_batch, seed=s.seed, hidden=s.head_hidden)
    floor = background_floor(tokens.fg, tokens.bg, s.k, s.background_quantile)
    roi = torch.cat(roi_sets)[None]
    compact = {}
    for side, other in (("fg", "bg"), ("bg", "fg")):
        side_tokens, other_tokens = getattr(tokens, side), getattr(tokens, other)
        if 0 < s.token_budget < side_tokens.shape[0]:
            hardness = topk_mean_similarity(side_tokens[None], other_tokens, s.k)[0]
            compact[side] = compact_tokens(side_tokens, s.token_budget, hardness, s.token_exact_share, seed=s.seed)
    return ReferenceContext(tokens=tokens, head=head, feature_dim=tokens.fg.shape[1],
                            background_floor=floor, roi_tokens=roi,
                            roi_valid=torch.ones(roi.shape[:2], dtype=torch.bool),
                            prototypes=combine_prototypes(proto_sets) if proto_sets else None,
                            reference_features=reference_features, compact=compact)
