"""icm as a library: set a reference once, then ask for masks.

    from icm_cli import Predictor
    predictor = Predictor()                        # EfficientNet-Lite0, CPU or GPU
    predictor.set_reference("ref.jpg", "ref_mask.png")
    result = predictor.predict("photo.jpg")        # result.mask [H, W] bool, result.probability [H, W]
    video = predictor.video()                      # frame after frame, each near the last mask
    for frame in frames:
        mask = video.step(frame).mask

Images may be paths, PIL images or ``[H, W, 3]`` uint8 arrays; masks paths,
PIL images or ``[H, W]`` arrays (bool, 0/1, 0/255). The batch runner, which
overlaps the backbone with the full-size finishing on several threads, splits
each step through :attr:`Predictor.pipeline` (:mod:`icm_cli.pipeline`).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from icm_cli.config import CONTRAST_TEMPERATURE, DEFAULT_TRIMAP_KERNEL, ModelConfig, VideoConfig
from icm_cli.errors import NotReadyError, SettingError
from icm_cli.core import peak_normalise
from icm_cli.pipeline import Encoded, PipelineAdapter, VideoPipeline  # noqa: F401  (Encoded re-exported)
from icm_cli.predict.propagator import Propagator
from icm_cli.references import Reference, as_image, as_mask, check_reference


@dataclass
class Result:
    """One source's prediction at its own size.

    probability: ``[H, W]`` float32 in [0, 1]; mask: ``[H, W]`` bool;
    confidence: how far this result can be trusted, 0..1, or None.
    """

    probability: np.ndarray
    mask: np.ndarray
    confidence: float | None = None

    @property
    def area(self) -> float:
        """The object's share of the image, 0..1."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def empty(self) -> bool:
        """No object pixel: the object was not found."""
        return not bool(self.mask.any())

    def trimap(self, kernel: int = DEFAULT_TRIMAP_KERNEL, dilate: int | None = None) -> np.ndarray:
        """``[H, W]`` uint8 0 / 128 / 255: the mask eroded by ``kernel`` is object, the band out to
        its dilation (by ``dilate``, default ``kernel``) is unknown."""
        from icm_cli.predict.fullres import mask_to_trimap_u8

        return mask_to_trimap_u8(self.mask.astype(np.float32), kernel, dilate or kernel)


@dataclass
class AttentionMaps:
    """Why a mask came out as it did, each map ``[H, W]`` float in [0, 1] at the source's size.

    inter: ICM's cross-attention heat of the reference's ROI tokens; intra:
    the same spread by the source's own self-attention; point: where one
    reference location attends (when asked); result: the prediction itself.
    """

    inter: np.ndarray
    intra: np.ndarray
    result: Result
    point: np.ndarray | None = None


class Predictor:
    """In-context segmentation with one model: references in, masks out.

    ``config`` says which backbone, device and settings (see
    :class:`~icm_cli.config.ModelConfig`); keyword arguments override its
    fields (``Predictor(device="cpu", size=480)``). ``settings`` (for
    experiments, e.g. ``benchmarks/quality.py --set k=3``) replaces the
    model's :class:`~icm_cli.config.PropagateSettings` derived from
    ``config``. Building loads the backbone's weights; raises
    :class:`~icm_cli.backbones.WeightsError` or
    :class:`~icm_cli.device.DeviceError` with a one-line reason.
    """

    def __init__(self, config: ModelConfig | None = None, *, settings=None, reference_cache: bool = True,
                 **overrides) -> None:
        from icm_cli.backbones import create_backbone
        from icm_cli.backbones.onnx_trunk import attach
        from icm_cli.device import default_dtype, resolve_device

        config = config or ModelConfig()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.device = resolve_device(config.device)
        backbone = create_backbone(config.backbone, config.weights)
        #: What runs the backbone ("onnx" or "torch") and, when ``auto`` fell back to torch, why.
        self.runtime, self.runtime_note = attach(backbone, config.runtime, self.device.type)
        #: The model itself (:class:`~icm_cli.predict.propagator.Propagator`).
        self.propagator = Propagator(backbone, device=self.device, dtype=default_dtype(self.device),
                                     settings=settings or config.propagate_settings())
        # The learned decoder runs where the backbone does (ONNX Runtime: its cached export, checked).
        self.runtime_note = self.runtime_note or self.propagator.decoders.use_runtime(self.runtime)
        #: The batch runner's split step (:class:`~icm_cli.pipeline.PipelineAdapter`).
        self.pipeline = PipelineAdapter(self)
        #: Reference contexts are kept in the cache folder and reused (see predict/context_store.py).
        self.reference_cache = reference_cache
        self.reused_context = False
        self.references: list[Reference] = []
        self.reference_area: float | None = None  # the references' object share, for the confidence

    @property
    def engine(self) -> Propagator:
        """Deprecated name of :attr:`propagator` ("engine" now names only ``--engine``'s back-ends)."""
        warnings.warn("Predictor.engine is now Predictor.propagator", DeprecationWarning, stacklevel=2)
        return self.propagator

    # ------------------------------------------------------------ references
    def set_reference(self, image, mask) -> None:
        """One labelled example: the image and the mask of the object in it."""
        self.set_references([(image, mask)])

    def set_references(self, pairs) -> None:
        """Several labelled examples, pooled into one context: ``[(image, mask), ...]`` or
        :class:`~icm_cli.references.Reference` objects. Raises ValueError / InputError for a bad pair."""
        refs = []
        for pair in pairs:
            if isinstance(pair, Reference):
                refs.append(pair)
                continue
            image, mask = pair
            img, msk = as_image(image), as_mask(mask)
            check_reference(img, msk, str(image) if isinstance(image, str) else "the reference",
                            str(mask) if isinstance(mask, str) else "the mask")
            refs.append(Reference(img, msk, image if isinstance(image, str) else None,
                                  mask if isinstance(mask, str) else None))
        if not refs:
            raise SettingError("give at least one reference (image, mask) pair")
        from icm_cli.predict.confidence import reference_area_share

        from icm_cli.predict import context_store

        store = context_store.ContextStore.default() if self.reference_cache else None
        with torch.no_grad():
            self.reused_context = context_store.set_references(
                self.propagator, [(r.image, r.mask) for r in refs], self.runtime, store)
        self.references = refs
        self.reference_area = reference_area_share(self.propagator.context)

    # ------------------------------------------------------------ images
    def predict(self, image, prior=None) -> Result:
        """The object's mask in one image; ``prior``: an optional rough mask of it (last week's mask,
        another tool's), which a decoder that reads priors weighs against the evidence."""
        img = as_image(image)
        priors = None if prior is None else [self._prior_mask(prior, img)]
        return self.pipeline.finish(img, self.pipeline.predict_coarse([img], priors=priors)[0])

    @staticmethod
    def _prior_mask(prior, image: np.ndarray) -> np.ndarray:
        from icm_cli.io import InputError

        m = as_mask(prior) >= 0.5
        if m.shape != image.shape[:2]:
            raise InputError(f"the prior mask is {m.shape[1]}x{m.shape[0]} but the image is "
                             f"{image.shape[1]}x{image.shape[0]}")
        return m

    def predict_batch(self, images) -> list[Result]:
        """Masks for several images; those of one size share a forward pass."""
        imgs = [as_image(i) for i in images]
        out: list[Result | None] = [None] * len(imgs)
        by_shape: dict[tuple, list[int]] = {}
        for i, img in enumerate(imgs):
            by_shape.setdefault(img.shape, []).append(i)
        for idx in by_shape.values():
            for i, coarse in zip(idx, self.pipeline.predict_coarse([imgs[i] for i in idx])):
                out[i] = self.pipeline.finish(imgs[i], coarse)
        return out

    def refine(self, image, coarse_mask, method: str = "decoder", *, iterations: int = 3,
               score: str = "classification") -> Result:
        """A better mask from a rough one (a brush mask, a box, another tool's output).

        method ``decoder``: the coarse mask is the decoder's prior, and the image's own
        features under it are the in-context reference, so the decoder can outvote what
        the mask wrongly includes or leaves out; references set with
        :meth:`set_reference` join that context. Needs a decoder that reads
        priors (the built-in one does); raises :class:`~icm_cli.errors.SettingError` otherwise.
        ``attention``: ICM's training-free attention vote on the backbone's own attention grid, no
        decoder and no reference (``iterations`` at most, ``score``: classification, softmax or ratio);
        only the cells whose label changes are rewritten, so the mask's own edges stay where attention
        agrees; its result's probability is the mask itself and its confidence None. ``auto``: the
        decoder when it reads priors, else attention. Raises :class:`~icm_cli.io.InputError` for an
        empty mask or one of another size.
        """
        from icm_cli.config import REFINE_METHODS
        from icm_cli.io import InputError
        from icm_cli.predict.confidence import assess, reference_area_share

        propagator = self.propagator
        if method not in REFINE_METHODS:
            raise SettingError(f"the refine method is one of {', '.join(REFINE_METHODS)} (got {method!r})")
        if method == "auto":
            method = "decoder" if propagator.reads_priors else "attention"
        if method == "decoder" and not propagator.reads_priors:
            raise SettingError("learned refinement needs a decoder that reads prior masks (--decoder auto or "
                             "builtin with efficientnet-lite0); --method attention works without one")
        img, soft = as_image(image), as_mask(coarse_mask)
        coarse = soft >= 0.5
        if coarse.shape != img.shape[:2]:
            raise InputError(f"the coarse mask is {coarse.shape[1]}x{coarse.shape[0]} but the image is "
                             f"{img.shape[1]}x{img.shape[0]}")
        if not coarse.any():
            raise InputError("the coarse mask is empty: nothing to refine")
        if method == "attention":
            return self._refine_by_attention(img, soft, iterations, score)
        pairs = [(img, coarse.astype(np.float32))] + [(r.image, r.mask) for r in self.references]
        with torch.no_grad():
            context = propagator.build_context(pairs)
            geo, feats = propagator.source_features([img])
            evidence = propagator.evidence(feats, geo, prior=propagator.prior_on_grid(coarse, geo),
                                           context=context)[0]
            prob, mask, learned = propagator.finish_path(img, evidence, context=context)
        quality = assess(prob, mask, evidence, reference_area_share(context), learned=learned)
        return Result(probability=prob, mask=mask, confidence=quality.confidence)

    def _refine_by_attention(self, image: np.ndarray, coarse: np.ndarray, iterations: int, score: str) -> Result:
        """:meth:`refine`'s ``attention`` method: ``coarse`` ``[H, W]`` float in [0, 1], checked."""
        from icm_cli.core import SCORE_TYPES
        from icm_cli.predict.selfattention import refine_mask_with_attention

        if score not in SCORE_TYPES:
            raise SettingError(f"the attention score is one of {', '.join(SCORE_TYPES)} (got {score!r})")
        if iterations < 1:
            raise SettingError(f"refinement takes at least 1 iteration (got {iterations})")
        p = self.propagator
        refined, _ = refine_mask_with_attention(p.backbone, image, coarse, p.settings.size, iterations, score,
                                                p.device, p.dtype)
        return Result(probability=refined.astype(np.float32), mask=refined, confidence=None)

    def check_ready(self) -> None:
        if self.propagator.context is None:
            raise NotReadyError("set_reference() must come before predict()")

    # ------------------------------------------------------------ attention
    def attention(self, image, point: tuple[int, int] | None = None) -> AttentionMaps:
        """ICM's attention behind one prediction; ``point`` (x, y) in the first reference adds where it attends."""
        self.check_ready()
        img = as_image(image)
        with torch.no_grad():
            evidence, features = self.propagator.attention_maps([img])[0]
            full = lambda grid: evidence.geometry.to_original(grid)[0, 0].numpy()  # noqa: E731
            point_map = None
            if point is not None:
                point_map = full(self._point_attention(point, features))
            result = self.pipeline.finish(img, evidence)
            return AttentionMaps(inter=full(evidence.inter), intra=full(evidence.intra), result=result,
                                 point=point_map)

    def _point_attention(self, point: tuple[int, int], source_ft: torch.Tensor,
                         temperature: float = CONTRAST_TEMPERATURE) -> torch.Tensor:
        """Softmax attention of one reference location over the source grid.

        source_ft ``[1, C, h, w]``; returns ``[1, 1, h, w]`` scaled to peak 1.
        """
        with torch.no_grad():
            ref_ft, geo = self.propagator.reference_feature_maps([self.references[0].image])[0]
        x, y = point
        if not (0 <= x < geo.orig_w and 0 <= y < geo.orig_h):
            raise SettingError(f"the point {x},{y} lies outside the first reference ({geo.orig_w}x{geo.orig_h})")
        gh, gw = ref_ft.shape[-2:]
        row = min(gh - 1, int(y * geo.resized_h / geo.orig_h * gh / geo.padded_h))
        col = min(gw - 1, int(x * geo.resized_w / geo.orig_w * gw / geo.padded_w))
        token = ref_ft[:, row, col]  # [C]
        logits = torch.einsum("c,bchw->bhw", token, source_ft) / temperature
        att = logits.flatten(1).softmax(-1).reshape(logits.shape)[:, None]
        return peak_normalise(att)

    # ------------------------------------------------------------ video
    def video(self, config: VideoConfig | None = None, **overrides) -> "VideoPredictor":
        """A predictor for the frames of one sequence, in order (see :class:`VideoPredictor`)."""
        config = config or VideoConfig()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        return VideoPredictor(self, config)


class VideoPredictor:
    """Frames of one sequence in order: each is searched near where the object was in the last one.

    :meth:`step` predicts a frame and remembers its mask for the next;
    :meth:`observe` tells it a frame's true mask instead (a correction, or
    the written masks of a resumed run). The runner splits a step through
    :attr:`pipeline` (:class:`~icm_cli.pipeline.VideoPipeline`).
    """

    def __init__(self, predictor: Predictor, config: VideoConfig) -> None:
        self.predictor = predictor
        self.config = config
        #: The split step and what the sequence carries from frame to frame.
        self.pipeline = VideoPipeline(predictor.pipeline, config)
        self.index = 0  # the next frame's number

    @property
    def temporal(self):
        return self.pipeline.temporal

    def step(self, image) -> Result:
        img = as_image(image)
        p = self.pipeline
        encoded = p.encode(img)
        result = p.finish(img, p.predict_encoded(encoded))
        p.observe_encoded(encoded, result.mask, index=self.index)
        self.index += 1
        return result

    def observe(self, image, mask) -> None:
        """Use ``mask`` as this frame's result for what follows (it counts as a frame)."""
        self.pipeline.observe_encoded(self.pipeline.encode(as_image(image)), as_mask(mask) >= 0.5, index=self.index)
        self.index += 1


def prepare_workers(config: ModelConfig, device: str) -> tuple[ModelConfig, str | None]:
    """Decide once, for workers that each build a :class:`Predictor` of ``config`` on ``device``, what
    they would each decide: a bad ``weights`` or ``decoder`` raises here (once, not in every worker),
    and the backbone's runtime is settled (``auto`` exported into the cache), so every worker runs the
    same runtime and reads the one cached export. Returns ``config`` with that runtime, and why ``auto``
    fell back to torch (or None)."""
    from icm_cli.backbones import create_backbone
    from icm_cli.backbones.onnx_trunk import attach
    from icm_cli.predict.decoder import load_decoder, resolve_decoder

    # Built on one thread, as each worker builds its own: the backbone's construction runs a probe batch
    # whose numerics depend on the thread count, and the export's cache key is a digest of the resulting
    # weights; on one thread the workers find this very export.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        backbone = create_backbone(config.backbone, config.weights)
    finally:
        torch.set_num_threads(threads)
    decoder_path = resolve_decoder(config.decoder, config.backbone)
    if decoder_path is not None:
        load_decoder(decoder_path)
    runtime, note = attach(backbone, config.runtime, device)
    if runtime == "onnx" and decoder_path is not None and note is None:
        # exported into the cache here, once, so the workers read it (and a failing export is said once)
        from icm_cli.predict.decoding import Decoders

        note = Decoders(config.decoder, backbone, torch.device(device)).use_runtime(runtime)
    return dataclasses.replace(config, runtime=runtime), note
