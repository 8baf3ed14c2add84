"""The propagation model: reference context once, then batches of sources.

numpy images in, numpy probabilities and masks out; the backbone and all
tensor work run on the propagator's device. No files and no printing here.
:class:`Propagator` composes the steps, each in its own module: the reference
context (:mod:`~icm_cli.predict.context`), the evidence
(:mod:`~icm_cli.predict.evidence_builder`), the learned decoder
(:mod:`~icm_cli.predict.decoding`), the full-size finish
(:mod:`~icm_cli.predict.finish`) and the gate between the learned and the
training-free result (:mod:`~icm_cli.predict.gate`).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from icm_cli.backbones.base import Backbone, Features
from icm_cli.config import PropagateSettings
from icm_cli.geometry import WorkingGeometry
from icm_cli.predict import evidence_builder
from icm_cli.predict.context import ReferenceContext, build_context, to_tensor
from icm_cli.predict.decoder import MaskDecoder
from icm_cli.predict.decoding import Decoders
from icm_cli.predict.evidence import Evidence
from icm_cli.predict.finish import full_size
from icm_cli.predict.gate import gated

__all__ = ["PropagateSettings", "Propagator", "ReferenceContext", "to_tensor"]


class Propagator:
    """The model behind :class:`~icm_cli.predictor.Predictor`: a backbone, the reference
    context and the optional learned decoder.

    collect_decoder_inputs: keep what the decoder reads in each :class:`Evidence`
    (``base``, ``levels``, the reference prototypes); default: when a decoder
    is loaded. The decoder's training turns it on without a decoder.
    """

    def __init__(self, backbone: Backbone, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, settings: PropagateSettings | None = None,
                 collect_decoder_inputs: bool | None = None) -> None:
        self.backbone = backbone.to(device=device, dtype=dtype).eval()
        self.device = torch.device(device)
        self.dtype = dtype
        self.settings = settings or PropagateSettings()
        self.context: ReferenceContext | None = None
        self.backbone_seconds = 0.0  # wall time spent in backbone forwards (for benchmarks)
        self.decoders = Decoders(self.settings.decoder, self.backbone, self.device)
        self.collect_decoder_inputs = (self.decoder is not None if collect_decoder_inputs is None
                                       else collect_decoder_inputs)

    @property
    def decoder(self) -> MaskDecoder | None:
        return self.decoders.decoder

    @property
    def prior_decoder(self) -> MaskDecoder | None:
        return self.decoders.prior_decoder

    # ---------------------------------------------------------------- geometry
    def geometry_for(self, height: int, width: int) -> WorkingGeometry:
        """Working canvas of an image: short side ``size`` (small images
        upscaled to at most ``min_size``), long side at most 4x ``size``."""
        s = self.settings
        short = min(height, width)
        target = min(s.size, max(short, s.min_size))
        return WorkingGeometry.fit(height, width, target, self.backbone.multiple, max_long_side=4 * s.size)

    @torch.no_grad()
    def features(self, canvas: torch.Tensor, with_attention: bool = False) -> Features:
        """``[B, 3, H, W]`` canvas in [0, 1] -> backbone features (float32 ``ft``)."""
        t0 = time.perf_counter()
        feats = self.backbone(canvas.to(self.device, self.dtype), with_attention=with_attention)
        feats.ft = feats.ft.float()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.backbone_seconds += time.perf_counter() - t0
        return feats

    def source_features(self, images: list[np.ndarray],
                        with_attention: bool | None = None) -> tuple[WorkingGeometry, Features]:
        """Features of same-size ``[H, W, 3]`` uint8 images on their working canvas.

        ``with_attention`` defaults to what the settings need (the ICM gate).
        """
        geo = self.geometry_for(*images[0].shape[:2])
        batch = torch.cat([geo.to_canvas(to_tensor(im)) for im in images])
        if with_attention is None:
            with_attention = self.settings.intra_gate > 0 or self.collect_decoder_inputs
        feats = self.features(batch, with_attention=with_attention)
        if self.collect_decoder_inputs:  # the decoder reads the canvas again: made once
            feats.canvas = batch
        return geo, feats

    # --------------------------------------------------------------- reference
    @torch.no_grad()
    def set_references(self, references: list[tuple[np.ndarray, np.ndarray]]) -> ReferenceContext:
        """Build the context from ``(image [H,W,3] uint8, mask [H,W] float)`` pairs and keep it
        as the context of every later call."""
        self.context = self.build_context(references)
        return self.context

    @property
    def reference_features(self) -> list[tuple[torch.Tensor, WorkingGeometry]]:
        """Each reference's ``[C, h, w]`` features and geometry (for the attention of one point)."""
        return self.context.reference_features if self.context is not None else []

    @reference_features.setter
    def reference_features(self, value) -> None:  # a stored context comes without them (see context_store)
        if self.context is not None:
            self.context.reference_features = list(value or [])

    def reference_feature_maps(self, images: list[np.ndarray]) -> list[tuple[torch.Tensor, WorkingGeometry]]:
        """The ``[C, h, w]`` features and geometry of the first references, ``images`` (``[H, W, 3]`` uint8):
        those the context kept when it was built here, else made now and kept (a stored context comes
        without them)."""
        kept = self.reference_features
        if len(kept) < len(images):
            kept = []
            for image in images:
                geo = self.geometry_for(*image.shape[:2])
                kept.append((self.features(geo.to_canvas(to_tensor(image))).ft[0].cpu(), geo))
            self.reference_features = kept
        return kept[:len(images)]

    def build_context(self, references: list[tuple[np.ndarray, np.ndarray]]) -> ReferenceContext:
        """A :class:`ReferenceContext` of ``(image [H,W,3] uint8, mask [H,W] float)`` pairs
        (``set_references`` keeps one; ``icm refine`` builds one per image)."""
        return build_context(self, references)

    # ----------------------------------------------------------------- sources
    @torch.no_grad()
    def predict_grid(self, images: list[np.ndarray], priors: list[np.ndarray | None] | None = None,
                     features: tuple[WorkingGeometry, Features] | None = None) -> list[Evidence]:
        """The evidence of images of one size (one batched forward pass); ``priors``: a full-size
        ``[H, W]`` prior mask per image, or None (see :meth:`evidence`); ``features``: what
        :meth:`source_features` returned for ``images``, when the backbone already ran (on another
        thread)."""
        if self.context is None:
            raise RuntimeError("set_references() must come first")
        geo, feats = features if features is not None else self.source_features(images)
        prior = None
        if priors is not None and any(p is not None for p in priors):
            prior = torch.cat([self.prior_on_grid(p, geo) if p is not None else torch.full(
                (1, 1, geo.padded_h // 4, geo.padded_w // 4), float("nan")) for p in priors])
        return self.evidence(feats, geo, prior=prior)

    prior_on_grid = staticmethod(evidence_builder.prior_on_grid)
    placed = staticmethod(evidence_builder.placed)

    @torch.no_grad()
    def evidence(self, feats: Features, geo: WorkingGeometry, prior: torch.Tensor | None = None,
                 window: torch.Tensor | None = None, heat: bool = False, context: ReferenceContext | None = None,
                 prior_weight: float | None = None) -> list[Evidence]:
        """Each source's :class:`Evidence` from its backbone features (:mod:`~icm_cli.predict.evidence_builder`).

        feats: a batch's :class:`Features` (``ft`` ``[B, C, h, w]``, its ``attn``
        and ``levels``) on ``geo``'s canvas. prior: optional ``[B, 1, Hc/4, Wc/4]``
        prior mask share (:meth:`prior_on_grid`; NaN for an image without one),
        which a decoder that reads priors takes in; window: optional ``[B, 1, h, w]``
        in [0, 1] multiplied into the probability (video: where the object may be
        now); heat: compute ICM's inter/intra heat even where
        neither the gate nor the decoder needs it (``inspect-attn``); context:
        another reference context than the one :meth:`set_references` keeps;
        prior_weight: the prior's share of the decoder's pass (None: all of it).
        """
        found = evidence_builder.find(self, feats, geo, context or self.context, heat=heat)
        return [self.placed(ev, window=None if window is None else window[i:i + 1],
                            prior=None if prior is None else prior[i:i + 1], prior_weight=prior_weight)
                for i, ev in enumerate(found)]

    @torch.no_grad()
    def attention_maps(self, images: list[np.ndarray]) -> list[tuple[Evidence, torch.Tensor]]:
        """ICM's training-free attention for images of one size: per image its
        :class:`Evidence` (with ``inter`` and ``intra`` heat) and its ``[1, C, h, w]``
        features (for the attention of one reference point)."""
        geo, feats = self.source_features(images, with_attention=True)
        found = self.evidence(feats, geo, heat=True)
        return [(ev, feats.ft[i:i + 1].cpu()) for i, ev in enumerate(found)]

    def icm_heat(self, ft: torch.Tensor, attn: dict, context: ReferenceContext | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """ICM's inter and intra heat on the feature grid, each ``[B, 1, h, w]`` with peak 1."""
        return evidence_builder.icm_heat(ft, attn, context or self.context)

    # ----------------------------------------------------------------- decoder
    def decode(self, image: np.ndarray, evidence: Evidence, context: ReferenceContext | None = None
               ) -> torch.Tensor:
        """The decoder's ``[1, 1, Hc/s, Wc/s]`` object probability over the canvas (s = 4 or 2)."""
        return self.decoders.decode(image, evidence, context or self.context)

    @property
    def reads_priors(self) -> bool:
        """Whether the loaded decoder reads a prior mask (video, refinement, ``--prior``)."""
        return self.decoders.reads_priors

    def decodes(self, evidence: Evidence, context: ReferenceContext | None = None) -> bool:
        """Whether :meth:`finish` takes ``evidence`` through the learned decoder (its probability is then
        the decoder's, not the fused training-free map)."""
        return self.decoders.decodes(evidence, context or self.context)

    # ----------------------------------------------------------------- full size
    def finish(self, image: np.ndarray, evidence: Evidence, context: ReferenceContext | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Full-size ``(prob [H, W] float32, mask [H, W] bool)`` for one source."""
        prob, mask, _ = self.finish_path(image, evidence, context)
        return prob, mask

    def finish_path(self, image: np.ndarray, evidence: Evidence, context: ReferenceContext | None = None
                    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """:meth:`finish`, and whether the learned decoder made the result.

        With the gate on (``settings.gate``) and no prior, the more confident of the two paths is kept
        (:mod:`~icm_cli.predict.gate`); the training-free one is judged on a GrabCut at
        ``gate_probe_scale`` and finished only when it wins."""
        s = self.settings
        if not self.decodes(evidence, context):
            return (*full_size(s, image, evidence.geometry.to_original(evidence.prob)[0, 0].numpy()), False)
        learned = full_size(s, image, evidence.geometry.to_original(
            self.decode(image, evidence, context))[0, 0].numpy())
        if not s.gate or evidence.prior is not None:
            return (*learned, True)
        free_prob = evidence.geometry.to_original(evidence.prob)[0, 0].numpy()
        if not s.grabcut or not 0 < s.gate_probe_scale < s.grabcut_scale:
            return gated(full_size(s, image, free_prob), learned, evidence)
        # The training-free result is judged on a coarser GrabCut (its confidence reads the mask on a
        # ~192-pixel raster) and finished at full quality only when it wins, which it rarely does.
        probe = full_size(replace(s, grabcut_scale=s.gate_probe_scale), image, free_prob)
        if gated(probe, learned, evidence)[2]:
            return (*learned, True)
        return (*full_size(s, image, free_prob), False)
