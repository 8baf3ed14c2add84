"""The propagation engine: reference context once, then batches of sources.

numpy images in, numpy probabilities and masks out; the backbone and all
tensor work run on the engine's device. No files and no printing here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from icm_cli.backbones.base import Backbone, Features
from icm_cli.core import cross_attention_heat, peak_normalise, propagate_heat, roi_tokens
from icm_cli.geometry import WorkingGeometry
from icm_cli.predict import fullres
from icm_cli.config import PropagateSettings  # noqa: F401  (declared in config, torch-free; re-exported)
from icm_cli.predict.decoder import (MaskDecoder, combine_prototypes, decoder_maps, load_decoder,
                                     reference_prototypes, resolve_decoder, resolve_prior_decoder)
from icm_cli.predict.evidence import Evidence
from icm_cli.predict.head import ObjectHead, augment_reference, train_object_head
from icm_cli.predict.nearest import background_floor, contrast_similarities
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


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` uint8 -> ``[1, 3, H, W]`` float32 in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div_(255.0)


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
        self.decoder: MaskDecoder | None = None
        path = resolve_decoder(self.settings.decoder, getattr(backbone, "name", ""))
        if path is not None:
            if not hasattr(self.backbone, "levels"):
                from icm_cli.backbones.weights import WeightsError
                raise WeightsError(f"the decoder needs a backbone with fine levels (EfficientNet-Lite), "
                                   f"not {getattr(backbone, 'name', 'this one')}; use --decoder none")
            self.decoder = load_decoder(path).to(self.device)
        # With a prior mask another decoder may decode (the built-in pair: see BUILTIN_PRIOR).
        self.prior_decoder: MaskDecoder | None = None
        prior_path = resolve_prior_decoder(self.settings.decoder, getattr(backbone, "name", "")) if path else None
        if prior_path is not None:
            model = self.decoder if prior_path == path else load_decoder(prior_path).to(self.device)
            self.prior_decoder = model if model.config.prior else None
        self.collect_decoder_inputs = (self.decoder is not None if collect_decoder_inputs is None
                                       else collect_decoder_inputs)

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
            with_attention = self.settings.attention_prior > 0 or self.collect_decoder_inputs
        return geo, self.features(batch, with_attention=with_attention)

    def _reference_tokens(self, image: torch.Tensor, mask: torch.Tensor, prototypes: bool = False
                          ) -> tuple[ReferenceTokens, torch.Tensor, torch.Tensor, WorkingGeometry, dict | None]:
        """image ``[1, 3, H, W]``, mask ``[1, 1, H, W]`` -> tokens, ``[C, h, w]`` features,
        the ``[1, 1, Hc, Wc]`` mask on the canvas, the geometry and (with
        ``prototypes``) the decoder's ``{stride: [2, C]}`` prototypes."""
        geo = self.geometry_for(image.shape[-2], image.shape[-1])
        canvas = geo.to_canvas(image)
        mask_canvas = geo.mask_to_canvas(mask, mode="bilinear")
        feats = self.features(canvas)
        ft = feats.ft[0]
        grid = tuple(ft.shape[-2:])
        area = mask_area_on_grid(mask_canvas.to(ft.device), grid)[0, 0]
        valid = geo.valid_mask(*grid).to(ft.device)
        protos = (reference_prototypes(feats.levels, mask_canvas, (geo.resized_h, geo.resized_w))
                  if prototypes else None)
        return pool_reference_tokens(ft, area, valid), ft, mask_canvas, geo, protos

    @staticmethod
    def _icm_roi_tokens(ft: torch.Tensor, mask_canvas: torch.Tensor, fallback: ReferenceTokens) -> torch.Tensor:
        """ICM query tokens ``[N, C]``: features of the cells the mask covers whole."""
        try:
            tokens, valid = roi_tokens(ft[None], mask_canvas.to(ft.device))
            return tokens[0][valid[0]]
        except ValueError:  # a mask smaller than one cell: use its best-covered cells
            return fallback.fg

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

    @torch.no_grad()
    def build_context(self, references: list[tuple[np.ndarray, np.ndarray]]) -> ReferenceContext:
        """A :class:`ReferenceContext` of ``(image [H,W,3] uint8, mask [H,W] float)`` pairs
        (``set_references`` keeps one; ``icm refine`` builds one per image)."""
        s = self.settings
        generator = torch.Generator().manual_seed(s.seed)
        reference_features: list[tuple[torch.Tensor, WorkingGeometry]] = []
        token_sets, head_sets, roi_sets, proto_sets = [], [], [], []
        for image_np, mask_np in references:
            image = to_tensor(image_np)
            mask = torch.from_numpy((mask_np >= 0.5).astype(np.float32))[None, None]
            if mask.sum() == 0:
                raise ValueError("the reference mask is empty")
            tokens, ref_ft, ref_mask_canvas, ref_geo, protos = self._reference_tokens(
                image, mask, prototypes=self.collect_decoder_inputs)
            if protos is not None:
                proto_sets.append(protos)
            roi_sets.append(self._icm_roi_tokens(ref_ft, ref_mask_canvas, fallback=tokens))
            reference_features.append((ref_ft.cpu(), ref_geo))
            if tokens.fg.shape[0] == 0:
                # A tiny object covers no whole cell: take its best-covered cells.
                tokens.fg = tokens.cells[tokens.cell_targets >= tokens.cell_targets.max() * 0.5]
            token_sets.append(tokens)
            if s.head_steps > 0:
                head_sets.append(tokens)
                for _ in range(s.augmentations):
                    aug_img, aug_mask = augment_reference(image[0], mask[0], generator)
                    aug_tokens = self._reference_tokens(aug_img[None], aug_mask[None])[0]
                    head_sets.append(aug_tokens)
        tokens = ReferenceTokens.concat(token_sets)
        head = None
        if s.head_steps > 0:
            all_cells = ReferenceTokens.concat(head_sets)
            head = train_object_head(all_cells.cells, all_cells.cell_targets, steps=s.head_steps,
                                     batch=s.head_batch, seed=s.seed, hidden=s.head_hidden)
        floor = background_floor(tokens.fg, tokens.bg, s.k, s.background_quantile)
        roi = torch.cat(roi_sets)[None]
        return ReferenceContext(tokens=tokens, head=head, feature_dim=tokens.fg.shape[1],
                                background_floor=floor, roi_tokens=roi,
                                roi_valid=torch.ones(roi.shape[:2], dtype=torch.bool),
                                prototypes=combine_prototypes(proto_sets) if proto_sets else None,
                                reference_features=reference_features)

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

    @staticmethod
    def prior_on_grid(mask: np.ndarray, geo: WorkingGeometry) -> torch.Tensor:
        """A full-size ``[H, W]`` prior mask -> ``[1, 1, Hc/4, Wc/4]``: its object share of each
        stride-4 cell of the working canvas (what the decoder reads)."""
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
        return F.adaptive_avg_pool2d(geo.mask_to_canvas(m), (geo.padded_h // 4, geo.padded_w // 4))

    @torch.no_grad()
    def evidence(self, feats: Features, geo: WorkingGeometry, prior: torch.Tensor | None = None,
                 window: torch.Tensor | None = None, memory: ReferenceTokens | None = None,
                 heat: bool = False, context: ReferenceContext | None = None) -> list[Evidence]:
        """Each source's :class:`Evidence` from its backbone features: the one builder of
        the image path, the video path, refinement and the attention maps.

        feats: a batch's :class:`Features` (``ft`` ``[B, C, h, w]``, its ``attn``
        and ``levels``) on ``geo``'s canvas. prior: optional ``[B, 1, Hc/4, Wc/4]``
        prior mask share (:meth:`prior_on_grid`; NaN for an image without one),
        which a decoder that reads priors takes in; window: optional ``[B, 1, h, w]``
        in [0, 1] multiplied into the probability (video: where the object may be
        now); memory: extra object/background tokens (video: from earlier
        predicted frames); heat: compute ICM's inter/intra heat even where
        neither the gate nor the decoder needs it (``inspect-attn``); context:
        another reference context than the one :meth:`set_references` keeps.
        """
        found = self._found(feats, geo, memory=memory, heat=heat, context=context)
        return [self.placed(ev, window=None if window is None else window[i:i + 1],
                            prior=None if prior is None else prior[i:i + 1])
                for i, ev in enumerate(found)]

    def _found(self, feats: Features, geo: WorkingGeometry, memory: ReferenceTokens | None = None,
               heat: bool = False, context: ReferenceContext | None = None) -> list[Evidence]:
        """:meth:`evidence` before any window or prior: what a source shows against the references."""
        s, ctx = self.settings, context or self.context
        ft, attn = feats.ft, feats.attn
        fg, bg = ctx.tokens.fg, ctx.tokens.bg
        if memory is not None:
            fg, bg = torch.cat([fg, memory.fg.to(fg)]), torch.cat([bg, memory.bg.to(bg)])
        sim_fg, sim_bg = contrast_similarities(ft, fg.to(ft.device), bg.to(ft.device), k=s.k,
                                               source_floor=ctx.background_floor if s.source_background else None)
        prob_nn = torch.sigmoid((sim_fg - sim_bg) / s.temperature)
        prob = prob_nn
        head = inter = intra = None
        if ctx.head is not None:
            head = ctx.head.to(ft.device).probability_map(ft)
            prob = (1 - s.head_weight) * prob_nn + s.head_weight * head
        collect = self.collect_decoder_inputs
        if (s.attention_prior > 0 or collect or heat) and attn:
            inter, intra = self.icm_heat(ft, attn, ctx)
            if s.attention_prior > 0:
                prob = prob * (intra / s.attention_prior).clamp(max=1.0)
        base = prob if collect else None
        levels = {}
        if collect:  # the decoder's fine levels, computed by the backbone anyway
            strides = tuple(sorted(set(self.decoder.config.strides) | set(
                self.prior_decoder.config.strides if self.prior_decoder is not None else ()))) \
                if self.decoder is not None else tuple(feats.levels)
            levels = {stride: feats.levels[stride] for stride in strides}

        def one(t: torch.Tensor | None, i: int) -> torch.Tensor | None:
            return None if t is None else t[i:i + 1].cpu()

        return [Evidence(geometry=geo, prob=one(prob, i), nearest=one(prob_nn, i), sim_fg=one(sim_fg, i),
                         sim_bg=one(sim_bg, i), head=one(head, i), inter=one(inter, i), intra=one(intra, i),
                         base=one(base, i), levels={stride: lv[i:i + 1] for stride, lv in levels.items()})
                for i in range(ft.shape[0])]

    @staticmethod
    def placed(evidence: Evidence, window: torch.Tensor | None = None, prior: torch.Tensor | None = None
               ) -> Evidence:
        """``evidence`` with a search window ``[1, 1, h, w]`` multiplied into its probability and a
        prior mask ``[1, 1, Hc/4, Wc/4]`` attached (NaN: none). Video frames get both once the
        previous frame's mask is known; their evidence is found ahead (:meth:`evidence`)."""
        changes = {}
        if window is not None:
            window = window.to(evidence.prob)
            changes.update(prob=evidence.prob * window, window=window.expand_as(evidence.prob).cpu())
        if prior is not None and not torch.isnan(prior).any():
            changes["prior"] = prior.float().cpu()
        return replace(evidence, **changes) if changes else evidence

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
        ctx = context or self.context
        inter = cross_attention_heat(ft, ctx.roi_tokens.to(ft.device), ctx.roi_valid.to(ft.device))
        grid, a = next(iter(attn.items()))
        intra = propagate_heat(F.adaptive_avg_pool2d(inter, grid), a.float())
        intra = peak_normalise(intra)
        return inter, F.interpolate(intra, size=ft.shape[-2:], mode="bilinear", align_corners=False)

    # ----------------------------------------------------------------- decoder
    @torch.no_grad()
    def decode(self, image: np.ndarray, evidence: Evidence, context: ReferenceContext | None = None
               ) -> torch.Tensor:
        """The decoder's ``[1, 1, Hc/s, Wc/s]`` object probability over the canvas (s = 4 or 2)."""
        geo, dev = evidence.geometry, self.device
        canvas = geo.to_canvas(to_tensor(image)).to(dev)
        levels = {stride: lv.to(dev) for stride, lv in evidence.levels.items()}
        protos = {stride: p[None].to(dev) for stride, p in (context or self.context).prototypes.items()}
        maps = decoder_maps(evidence).to(dev)
        w = evidence.prior_weight
        if evidence.prior is None or not self.reads_priors or w <= 0:
            prob = torch.sigmoid(self.decoder(maps, canvas, levels, protos).float())
        else:
            prior = evidence.prior.to(dev)
            prob = torch.sigmoid(self.prior_decoder(maps, canvas, levels, protos, prior=prior).float())
            if w < 1:  # the evidence alone keeps a say: a prior's errors do not carry over whole
                alone = torch.sigmoid(self.decoder(maps, canvas, levels, protos).float())
                prob = w * prob + (1 - w) * alone
        if evidence.window is not None:
            prob = prob * F.interpolate(evidence.window.to(prob), size=prob.shape[-2:], mode="nearest")
        return prob.cpu()

    @property
    def reads_priors(self) -> bool:
        """Whether the loaded decoder reads a prior mask (video, refinement, ``--prior``)."""
        return self.prior_decoder is not None

    def decodes(self, evidence: Evidence, context: ReferenceContext | None = None) -> bool:
        """Whether :meth:`finish` takes ``evidence`` through the learned decoder (its probability is then
        the decoder's, not the fused training-free map)."""
        return self.decoder is not None and evidence.decodable and (context or self.context).prototypes is not None

    def finish(self, image: np.ndarray, evidence: Evidence, context: ReferenceContext | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Full-size ``(prob [H, W] float32, mask [H, W] bool)`` for one source."""
        prob, mask, _ = self.finish_path(image, evidence, context)
        return prob, mask

    def finish_path(self, image: np.ndarray, evidence: Evidence, context: ReferenceContext | None = None
                    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """:meth:`finish`, and whether the learned decoder made the result.

        With the gate on (``settings.gate``) and no prior, both paths are finished and the one
        whose confidence is higher is kept (:func:`~icm_cli.predict.confidence.assess`, each with
        its own formula): where the evidence lies outside what the decoder learned, the result
        does not fall below the training-free one."""
        if not self.decodes(evidence, context):
            prob, mask = self._full_size(image, evidence.geometry.to_original(evidence.prob)[0, 0].numpy())
            return prob, mask, False
        prob, mask = self._full_size(image, evidence.geometry.to_original(
            self.decode(image, evidence, context))[0, 0].numpy())
        if not self.settings.gate or evidence.prior is not None:
            return prob, mask, True
        from icm_cli.predict.confidence import assess

        free_prob, free_mask = self._full_size(image, evidence.geometry.to_original(evidence.prob)[0, 0].numpy())
        if assess(free_prob, free_mask, evidence).confidence > assess(prob, mask, evidence, learned=True).confidence:
            return free_prob, free_mask, False
        return prob, mask, True

    def _full_size(self, image: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A full-size probability -> ``(prob, mask)``: GrabCut on the uncertain band (or a threshold),
        holes filled, components without a confident core dropped."""
        s = self.settings
        if s.grabcut:
            mask = fullres.grabcut_mask(image, prob, scale=s.grabcut_scale)
        else:
            mask = prob >= s.threshold
        if s.clean:
            mask = fullres.keep_confident_components(fullres.fill_holes(mask), prob)
        return prob, mask
