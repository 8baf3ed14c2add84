"""What the propagator found in one source: its in-context evidence, typed.

:meth:`Propagator.evidence <icm_cli.predict.propagator.Propagator.evidence>` builds
one :class:`Evidence` per source, for still images, video frames and the
attention maps of ``icm inspect-attn`` alike. The learned decoder, the
confidence and the decoder's training read it; nothing else looks inside.

Every map is ``[1, 1, h, w]`` on the source's stride-8 feature grid unless
noted, values in [0, 1] for probabilities and heat, cosine similarities for
``sim_fg`` / ``sim_bg``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from icm_cli.geometry import WorkingGeometry


@dataclass
class Evidence:
    """One source's evidence over its working canvas.

    prob: the training-free object probability (nearest-neighbour contrast
        fused with the object head, gated by ICM's intra heat, times any
        prior); what the training-free path thresholds.
    nearest: the foreground-vs-background nearest-neighbour contrast.
    sim_fg, sim_bg: the mean top-k similarities to the object and to the
        background side, from which ``nearest`` is made.
    head: the object head's probability (None without a head).
    inter, intra: ICM's cross-attention heat of the reference's ROI tokens,
        and the same spread by the source's own self-attention (None when
        neither the gate nor the decoder needed them).
    base: ``prob`` before the window, the decoder's starting point (None
        unless the propagator collects decoder inputs).
    prior: a prior mask for this source, ``[1, 1, Hc/4, Wc/4]``: its object
        share of each stride-4 cell of the canvas (the previous frame's mask,
        a coarse mask to refine, ``--prior``), which a decoder that reads
        priors takes in; None without one.
    prior_weight: the share of the decoder's pass that reads the prior; the
        rest comes from the prior-free decoder (video: 0.5, so that a prior's
        errors do not carry over whole from frame to frame).
    window: a ``[1, 1, h, w]`` window in [0, 1] multiplied into ``prob``
        (video: where the object may be now), or None.
    levels: the backbone's finer activations ``{stride: [1, C_s, H/s, W/s]}``
        the decoder reads (empty unless decoder inputs are collected).
    canvas: ``[1, 3, Hc, Wc]`` the source on its working canvas in [0, 1], which
        the decoder reads, where the features came with it (else the decoder
        makes it again from the image).
    readout: ``[1, 1, h, w]`` the object probability read from the memory of
        earlier frames (video, :mod:`~icm_cli.predict.memory`), or None;
        readout_weight: its share of the result's probability.
    """

    geometry: WorkingGeometry
    prob: torch.Tensor
    nearest: torch.Tensor
    sim_fg: torch.Tensor
    sim_bg: torch.Tensor
    head: torch.Tensor | None = None
    inter: torch.Tensor | None = None
    intra: torch.Tensor | None = None
    base: torch.Tensor | None = None
    prior: torch.Tensor | None = None
    prior_weight: float = 1.0
    window: torch.Tensor | None = None
    levels: dict[int, torch.Tensor] = field(default_factory=dict)
    canvas: torch.Tensor | None = None
    readout: torch.Tensor | None = None
    readout_weight: float = 0.0

    def with_readout(self, prob: torch.Tensor) -> torch.Tensor:
        """``prob`` ``[1, 1, H, W]`` (any grid over the canvas) mixed with the memory's readout, upsampled
        to it; ``prob`` itself without a readout."""
        if self.readout is None or self.readout_weight <= 0:
            return prob
        read = torch.nn.functional.interpolate(self.readout.to(prob), size=prob.shape[-2:], mode="bilinear",
                                               align_corners=False)
        return (1 - self.readout_weight) * prob + self.readout_weight * read

    @property
    def decodable(self) -> bool:
        """Whether it holds what the learned decoder reads (the propagator collected decoder inputs)."""
        return self.base is not None and bool(self.levels)
