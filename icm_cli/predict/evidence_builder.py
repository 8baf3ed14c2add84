"""From a source's backbone features to its :class:`~icm_cli.predict.evidence.Evidence`.

The one builder of the image path, the video path, refinement and the attention maps:
:func:`find` compares a batch's features with the reference context (nearest-neighbour
contrast, object head, ICM's intra-heat gate); :func:`placed` adds what a video frame or a
coarse mask brings afterwards (a search window, a prior mask and its weight, the memory's readout).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from icm_cli.backbones.base import Features
from icm_cli.core import cross_attention_heat, peak_normalise, propagate_heat
from icm_cli.geometry import WorkingGeometry
from icm_cli.predict.context import ReferenceContext
from icm_cli.predict.evidence import Evidence
from icm_cli.predict.nearest import contrast_similarities


def find(propagator, feats: Features, geo: WorkingGeometry, context: ReferenceContext,
         heat: bool = False) -> list[Evidence]:
    """Each source's evidence before any window or prior: what it shows against ``context``.

    ``propagator`` lends its settings, whether decoder inputs are collected and the decoder's strides."""
    s, ctx = propagator.settings, context
    ft, attn = feats.ft, feats.attn
    fg, bg = ctx.tokens.fg, ctx.tokens.bg
    counts = {}
    if "fg" in ctx.compact:
        fg, counts["fg_counts"] = ctx.compact["fg"]
    if "bg" in ctx.compact:
        bg, counts["bg_counts"] = ctx.compact["bg"]
    sim_fg, sim_bg = contrast_similarities(ft, fg.to(ft.device), bg.to(ft.device), k=s.k,
                                           source_floor=ctx.background_floor if s.source_background else None,
                                           **{name: c.to(ft.device) for name, c in counts.items()})
    prob_nn = torch.sigmoid((sim_fg - sim_bg) / s.temperature)
    prob = prob_nn
    head = inter = intra = None
    if ctx.head is not None:
        head = ctx.head.to(ft.device).probability_map(ft)
        prob = (1 - s.head_weight) * prob_nn + s.head_weight * head
    collect = propagator.collect_decoder_inputs
    if (s.intra_gate > 0 or collect or heat) and attn:
        inter, intra = icm_heat(ft, attn, ctx)
        if s.intra_gate > 0:
            prob = prob * (intra / s.intra_gate).clamp(max=1.0)
    base = prob if collect else None
    levels = {}
    if collect:  # the decoder's fine levels, computed by the backbone anyway
        strides = propagator.decoders.strides()
        strides = tuple(feats.levels) if strides is None else strides
        levels = {stride: feats.levels[stride] for stride in strides}

    def one(t: torch.Tensor | None, i: int) -> torch.Tensor | None:
        return None if t is None else t[i:i + 1].cpu()

    return [Evidence(geometry=geo, prob=one(prob, i), nearest=one(prob_nn, i), sim_fg=one(sim_fg, i),
                     sim_bg=one(sim_bg, i), head=one(head, i), inter=one(inter, i), intra=one(intra, i),
                     base=one(base, i), levels={stride: lv[i:i + 1] for stride, lv in levels.items()},
                     canvas=one(feats.canvas, i) if collect else None)
            for i in range(ft.shape[0])]


def placed(evidence: Evidence, window: torch.Tensor | None = None, prior: torch.Tensor | None = None,
           prior_weight: float | None = None, readout: torch.Tensor | None = None,
           readout_weight: float = 0.0) -> Evidence:
    """``evidence`` with a search window ``[1, 1, h, w]`` multiplied into its probability, a prior mask
    ``[1, 1, Hc/4, Wc/4]`` attached (NaN: none) and the prior's weight in the decoder's pass (None: the
    evidence's own), and the memory's readout ``[1, 1, h, w]`` mixed in at ``readout_weight``. Video
    frames get them once the previous frame's mask is known; their evidence is found ahead (:func:`find`)."""
    changes = {}
    prob = evidence.prob
    if prior is not None and not torch.isnan(prior).any():
        changes["prior"] = prior.float().cpu()
    if readout is not None and readout_weight > 0:  # the decoder mixes it into its own result (it reads ``base``)
        changes.update(readout=readout.float().cpu(), readout_weight=readout_weight)
        prob = replace(evidence, **changes).with_readout(prob)
    if window is not None:
        window = window.to(prob)
        prob = prob * window
        changes["window"] = window.expand_as(prob).cpu()
    if prob is not evidence.prob:
        changes["prob"] = prob
    if prior_weight is not None and prior_weight != evidence.prior_weight:
        changes["prior_weight"] = prior_weight
    return replace(evidence, **changes) if changes else evidence


def prior_on_grid(mask: np.ndarray, geo: WorkingGeometry) -> torch.Tensor:
    """A full-size ``[H, W]`` prior mask -> ``[1, 1, Hc/4, Wc/4]``: its object share of each
    stride-4 cell of the working canvas (what the decoder reads)."""
    return geo.mask_share(mask, (geo.padded_h // 4, geo.padded_w // 4))


def icm_heat(ft: torch.Tensor, attn: dict, context: ReferenceContext) -> tuple[torch.Tensor, torch.Tensor]:
    """ICM's inter and intra heat on the feature grid, each ``[B, 1, h, w]`` with peak 1."""
    inter = cross_attention_heat(ft, context.roi_tokens.to(ft.device), context.roi_valid.to(ft.device))
    grid, a = next(iter(attn.items()))
    intra = propagate_heat(F.adaptive_avg_pool2d(inter, grid), a.float())
    intra = peak_normalise(intra)
    return inter, F.interpolate(intra, size=ft.shape[-2:], mode="bilinear", align_corners=False)
