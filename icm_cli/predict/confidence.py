"""How much to trust one propagated mask: a confidence in [0, 1] from what the prediction already has.

Nothing here is learned and nothing runs the model again: the signals are
read off the coarse prediction (:class:`~icm_cli.predict.evidence.Evidence`),
the full-size probability and the final mask, on a small analysis raster
(about a quarter of the working size), so one result costs a few
milliseconds whatever the image size.

Signals (each in [0, 1], higher = more trustworthy; see :func:`confidence_signals`):

- ``self_iou`` -- the IoU the mask would have if the fused probability were
  the truth: ``sum(p * m) / (sum(m) + sum(p * (1 - m)))``. It is low when the
  mask holds lukewarm pixels or leaves probable object out.
- ``crisp`` -- the share of the object-or-uncertain area that is not
  uncertain (0.25 < p < 0.75): decisive maps are usually right ones
  (when a learned decoder made them; see :func:`combine`).
- ``grabcut`` -- IoU of the final mask with the thresholded probability:
  GrabCut moving the mask a lot means colour and features disagree.
- ``nearest_mask`` / ``head_mask`` -- the soft IoU of the final mask with the
  nearest-neighbour and with the object-head map alone: two matchers that
  both back the mask are rarely both wrong.
- ``nearest_head`` -- the soft IoU of the two matchers with each other.
- ``intra`` -- the share of ICM's intra heat (the attention spread from where
  the reference tokens landed) that falls inside the mask.
- ``area`` -- the mask's object share against the reference's,
  ``exp(-(ln ratio / ln 4)^2)``: 1 for the same share, 0.37 at 4x or 1/4.
- ``peak`` -- the 99th percentile of the probability: is anything clearly object?
- ``border`` -- the share of the image's outer edge the mask does *not*
  cover. Regions that run along the frame are mostly background (the
  "boundary prior" of salient-object detection: Wei et al. 2012, Zhu et al.
  2014); a mask that spread into sky, ground or a hillside touches the edges.

:func:`combine` turns them into the confidence: ``crisp * border`` when the
probability is the learned decoder's, ``grabcut * border * nearest_mask ** 0.25``
on the training-free path (why these: on it).
Parts a prediction lacks (a learned decoder may replace ``"nearest"``) are
left out of the combination, never guessed; an empty mask scores at most
0.1, so it is always among the first results a person looks at.

The reference's object share, for ``reference_area``: the mean of
``Propagator.context.tokens.cell_targets`` (the mask's area fraction in each
valid reference cell, over every reference); :func:`reference_area_share`
reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from icm_cli.errors import ArrayError

#: Every signal :func:`confidence_signals` reports.
SIGNALS = ("self_iou", "crisp", "grabcut", "nearest_mask", "head_mask", "nearest_head", "intra", "area", "peak",
           "border")

#: Signals :func:`combine` uses on the training-free path, with their weights (see :func:`combine` for why these).
WEIGHTS = {"grabcut": 1.0, "border": 1.0, "nearest_mask": 0.25}

#: ... and where the probability is the learned decoder's (``--decoder``, the default).
LEARNED_WEIGHTS = {"crisp": 1.0, "border": 1.0}

#: Longest side of the analysis raster, in pixels.
ANALYSIS_SIDE = 192

#: The most an empty mask can score.
EMPTY_CEILING = 0.1


@dataclass
class Assessment:
    """The confidence of one result and what it was made of.

    ``confidence`` in [0, 1]; ``empty``: the mask holds no pixel;
    ``mask_area``: the object's share of the image; ``signals``: every
    signal of :func:`confidence_signals` (NaN where a part was missing).
    """

    confidence: float
    empty: bool
    mask_area: float
    signals: dict[str, float] = field(default_factory=dict)

    def record_fields(self) -> dict:
        """The manifest fields of a source record: ``confidence``, ``empty``, ``mask_area``."""
        return {"confidence": round(self.confidence, 4), "empty": self.empty,
                "mask_area": round(self.mask_area, 6)}


def reference_area_share(context) -> float | None:
    """The references' object share of their image area, from a ``ReferenceContext``.

    ``context.tokens.cell_targets`` ``[Nc]`` is the mask's area fraction in
    each valid cell of every reference; their mean is the object's share.
    None when there is no context or no cell.
    """
    targets = getattr(getattr(context, "tokens", None), "cell_targets", None)
    if targets is None or targets.numel() == 0:
        return None
    return float(targets.float().mean())


def _analysis_size(height: int, width: int, side: int = ANALYSIS_SIDE) -> tuple[int, int]:
    scale = min(1.0, side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _shrink(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` array -> ``[h, w]`` float32 area average (strided first when far larger)."""
    h, w = size
    step = max(1, min(array.shape[0] // (4 * h), array.shape[1] // (4 * w)))
    a = array[::step, ::step].astype(np.float32, copy=False)
    if a.shape == (h, w):
        return a
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA)


def grid_to_image(grid_map: torch.Tensor, geometry, size: tuple[int, int]) -> np.ndarray:
    """A ``[1, 1, gh, gw]`` map over the working canvas -> ``[h, w]`` float32 over the image at ``size``.

    The same mapping as ``WorkingGeometry.to_original`` (padding cells cut
    at their exact extent), to a small size instead of the original one.
    """
    gh, gw = grid_map.shape[-2:]
    vh, vw = geometry.valid_cells(gh, gw)
    ext_h = geometry.resized_h * gh / geometry.padded_h
    ext_w = geometry.resized_w * gw / geometry.padded_w
    h, w = size
    th, tw = max(h, round(h * vh / ext_h)), max(w, round(w * vw / ext_w))
    crop = grid_map[..., :vh, :vw].float()
    up = F.interpolate(crop.reshape(1, 1, vh, vw), size=(th, tw), mode="bilinear", align_corners=False)
    return up[0, 0, :h, :w].numpy()


def _soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.maximum(a, b).sum()
    return float(np.minimum(a, b).sum() / union) if union > 0 else float("nan")


def confidence_signals(prob: np.ndarray, mask: np.ndarray, prediction=None,
                       reference_area: float | None = None) -> dict[str, float]:
    """Every signal of the module docstring for one result.

    prob: ``[H, W]`` float object probability at the source's size (what
    ``Propagator.finish`` returns); mask: ``[H, W]`` bool final mask;
    prediction: the :class:`~icm_cli.predict.evidence.Evidence` it came from
    (its ``nearest``, ``head`` and ``intra`` grid maps are read where present), or None; reference_area: the references' object share
    (:func:`reference_area_share`) or None. Returns ``{name: value}`` with
    values in [0, 1], NaN where the input needed is missing.
    """
    if prob.shape != mask.shape:
        raise ArrayError(f"prob {prob.shape} and mask {mask.shape} must have the same size")
    size = _analysis_size(*mask.shape)
    m = _shrink(mask, size) >= 0.5
    p = np.clip(_shrink(prob, size), 0.0, 1.0)
    mf = m.astype(np.float32)
    out = {k: float("nan") for k in SIGNALS}
    area = float(mask.mean()) if mask.size else 0.0
    out["mask_area"] = area
    out["peak"] = float(np.quantile(p, 0.99)) if p.size else float("nan")

    denom = mf.sum() + (p * (1.0 - mf)).sum()
    out["self_iou"] = float((p * mf).sum() / denom) if denom > 0 else float("nan")
    uncertain = (p > 0.25) & (p < 0.75)
    relevant = uncertain | (p >= 0.5) | m
    out["crisp"] = 1.0 - float(uncertain.sum() / relevant.sum()) if relevant.any() else float("nan")
    thresholded = p >= 0.5
    union = (thresholded | m).sum()
    out["grabcut"] = float((thresholded & m).sum() / union) if union else float("nan")
    if m.any():
        edge = np.concatenate([m[0], m[-1], m[1:-1, 0], m[1:-1, -1]])
        out["border"] = 1.0 - float(edge.mean())

    maps = {}
    if prediction is not None:
        for name in ("nearest", "head", "intra"):
            grid_map = getattr(prediction, name)
            if grid_map is not None:
                maps[name] = np.clip(grid_to_image(grid_map, prediction.geometry, size), 0.0, 1.0)
    if "nearest" in maps:
        out["nearest_mask"] = _soft_iou(maps["nearest"], mf)
    if "head" in maps:
        out["head_mask"] = _soft_iou(maps["head"], mf)
    if "nearest" in maps and "head" in maps:
        out["nearest_head"] = _soft_iou(maps["nearest"], maps["head"])
    if "intra" in maps:
        heat = maps["intra"]
        total = heat.sum()
        out["intra"] = float((heat * mf).sum() / total) if total > 0 else float("nan")
    if reference_area is not None and reference_area > 0 and area > 0:
        ratio = math.log(area / reference_area) / math.log(4.0)
        out["area"] = math.exp(-ratio * ratio)
    elif reference_area is not None and area == 0:
        out["area"] = 0.0
    return out


def combine(signals: dict[str, float], learned: bool = False) -> float:
    """The confidence: the weighted product of :data:`LEARNED_WEIGHTS` (``crisp * border``) when
    ``learned`` (the probability is the learned decoder's), else of :data:`WEIGHTS`
    (``grabcut * border * nearest_mask ** 0.25``).

    Why these (measured with benchmarks/confidence.py on the dev sets; the
    README lists the figures):

    With the learned decoder (the default path):

    - ``crisp``, how decisive the decoder's probability is, is the strongest
      single signal on every set, category-level cows included. The decoder
      was trained (BCE + soft IoU against true masks) to be unsure where it
      is likely wrong, so its indecision is evidence, which the
      training-free map's is not (below).
    - ``border`` vetoes the confidently wrong mask, as on the training-free
      path. With it the product ranks about as ``crisp`` alone (DAVIS 0.827
      vs 0.816, cows 0.820 vs 0.826, DAVIS as video 0.834 vs 0.825) and
      keeps the one guard against a decisive map that spread into the
      background. Its 0.5 line flags about as many DAVIS dev results as are
      truly under IoU 0.5 (22 vs 23, 12 of them right), where the
      training-free formula applied to the decoder's output flagged 4.
    - ``grabcut`` ranks well alone (0.78) but adds nothing once ``crisp`` is
      in (``crisp * grabcut * border``: DAVIS 0.822, PerSeg 0.66 vs 0.83),
      and it pushes good results under 0.5.

    On the training-free path (``--decoder none``, or a backbone without weights):

    - ``grabcut``, the stability of the mask when the image's own colours
      get a say, is the strongest single signal on every set: where the
      features are unsure or wrong, GrabCut moves the boundary a lot.
    - ``border`` catches what nothing else does, a probability map that is
      confidently wrong: on category-level data (a new cow on a dark
      hillside) the matchers, the head and GrabCut all agree on a mask that
      includes the hill. Such masks run along the frame; objects mostly do not.
    - ``nearest_mask`` at a quarter weight breaks ties among the many results
      both signals above call fine, and keeps a ranking where GrabCut is off
      (``--no-edges``/``--threshold``: ``grabcut`` is then about 1 everywhere).
      It needs no object head, so ``--head-steps 0`` changes nothing.
    - Signals that agree with the training-free map (``self_iou``, ``crisp``,
      ``head_mask``, ``intra``) rank DAVIS well but invert on category-level
      data, where a right mask of a different-looking instance is lukewarm
      and a wrong one crisp; here they are reported, not used.

    A product, so that each signal can veto ("all of these must hold"); it
    is not normalised (a geometric mean would rank the same), which keeps its
    scale near the IoU it predicts (DAVIS dev, mean confidence / mean IoU:
    0.74 / 0.77 with the decoder, 0.66 / 0.69 training-free), so 0.5 is a
    useful line for ``--only-below``. Signals that are NaN
    (a part the prediction lacks) count as 1. An empty mask is capped at
    :data:`EMPTY_CEILING`.
    """
    weights = LEARNED_WEIGHTS if learned else WEIGHTS
    if not any(signals.get(name, float("nan")) == signals.get(name, float("nan")) for name in weights):
        return 0.0  # nothing to judge by
    confidence = 1.0
    for name, w in weights.items():
        value = signals.get(name, float("nan"))
        if value != value:  # NaN: missing
            continue
        confidence *= max(float(value), 0.0) ** w
    if signals.get("mask_area", 1.0) == 0.0:
        confidence = min(confidence, EMPTY_CEILING)
    return float(min(max(confidence, 0.0), 1.0))


def assess(prob: np.ndarray, mask: np.ndarray, prediction=None,
           reference_area: float | None = None, learned: bool = False) -> Assessment:
    """Confidence, emptiness and object share of one result (see :func:`confidence_signals`);
    ``learned``: ``prob`` is the learned decoder's (``Propagator.decodes``), which picks the formula."""
    signals = confidence_signals(prob, mask, prediction, reference_area)
    return Assessment(confidence=combine(signals, learned), empty=not bool(mask.any()),
                      mask_area=signals["mask_area"], signals=signals)

