"""The batch runner's view of a :class:`~icm_cli.predictor.Predictor`: its step split in two.

A library caller asks a :class:`~icm_cli.predictor.Predictor` for a result; the
runner overlaps the backbone with the full-size finishing on several threads,
so it needs the step's halves: :meth:`PipelineAdapter.predict_coarse` (the
feature-grid evidence; for one source also :meth:`~PipelineAdapter.encode_batch`,
the backbone alone) and :meth:`PipelineAdapter.finish` (full size), plus how many
finishing threads to run. For a sequence :class:`VideoPipeline` splits a frame's
step the same way: :meth:`~VideoPipeline.encode` (the backbone, independent of
earlier frames), :meth:`~VideoPipeline.predict_encoded`, :meth:`~VideoPipeline.finish`
and :meth:`~VideoPipeline.observe_encoded`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from icm_cli.config import VideoConfig
from icm_cli.predict.evidence import Evidence


@dataclass
class Encoded:
    """A frame's backbone output, its evidence before the window and prior (all of the frame's search
    that does not wait for the previous frame's mask), for the motion cue its half-size grey image, and
    for the memory its ``[D, h, w]`` keys; kept until the previous frame's mask is known."""

    geometry: object
    features: object
    grey: np.ndarray | None = None
    found: Evidence | None = None
    keys: torch.Tensor | None = None


class PipelineAdapter:
    """The runner's split step of ``predictor`` (a :class:`~icm_cli.predictor.Predictor`)."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor

    @property
    def propagator(self):
        return self.predictor.propagator

    def predict_coarse(self, images: list[np.ndarray], encoded=None, priors: list | None = None) -> list[Evidence]:
        """The feature-grid :class:`~icm_cli.predict.evidence.Evidence` of same-size ``[H, W, 3]`` uint8
        images (one forward pass; none when ``encoded``, what :meth:`encode_batch` returned for them, is
        given); ``priors``: a ``[H, W]`` bool prior mask or None per image."""
        self.predictor.check_ready()
        propagator = self.propagator
        with torch.no_grad():
            return propagator.predict_grid(images, priors if propagator.reads_priors else None, features=encoded)

    def encode_batch(self, images: list[np.ndarray]):
        """The backbone's part of :meth:`predict_coarse` for same-size images (the runner's model thread);
        the rest runs in ``predict_coarse(images, encoded=...)`` on a finishing thread."""
        self.predictor.check_ready()
        with torch.no_grad():
            return self.propagator.source_features(images)

    def stream_workers(self) -> int:
        """Finishing threads for a stream of sources: on a CPU one per core torch may use (the backbone's
        thread then runs only the backbone, the finishing threads the rest), at most 16 (each holds about
        two sources in memory); 1 on a GPU."""
        return min(16, max(1, torch.get_num_threads())) if self.predictor.device.type == "cpu" else 1

    @contextlib.contextmanager
    def streaming(self, workers: int):
        """While ``workers`` finishing threads run, torch computes on one thread in each of them: the
        threads themselves use the cores (ONNX Runtime keeps its own pool for the backbone)."""
        threads = torch.get_num_threads()
        if workers > 1 and self.predictor.device.type == "cpu":
            torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def finish(self, image: np.ndarray, coarse: Evidence):
        """The full-size :class:`~icm_cli.predictor.Result` of a coarse prediction (GrabCut, cleaning,
        confidence); thread-safe."""
        from icm_cli.predict.confidence import assess
        from icm_cli.predictor import Result

        prob, mask, learned = self.propagator.finish_path(image, coarse)
        quality = assess(prob, mask, coarse, self.predictor.reference_area, learned=learned)
        return Result(probability=prob, mask=mask, confidence=quality.confidence)

    def cell_pixels(self, reference) -> float:
        """The side of one feature cell in ``reference``'s own pixels (for the reference's warnings)."""
        geo = self.propagator.geometry_for(*reference.image.shape[:2])
        return self.propagator.backbone.stride * reference.image.shape[0] / geo.resized_h

    def video(self, config: VideoConfig | None = None) -> "VideoPipeline":
        return VideoPipeline(self, config or VideoConfig())


class VideoPipeline:
    """The runner's split step of one sequence's frames, in order (what
    :class:`~icm_cli.predictor.VideoPredictor` runs): the previous frame's mask gives the next
    frame's search window and the decoder's prior, and the memory of segmented frames
    (the references first) is read for each frame."""

    def __init__(self, pipeline: PipelineAdapter, config: VideoConfig) -> None:
        from icm_cli.predict.memory import builtin_keys
        from icm_cli.predict.temporal import TemporalContext

        self.pipeline = pipeline
        self.config = config
        propagator = pipeline.propagator
        # the readout serves the probability, or the prior of a decoder that reads one
        self.reads_memory = config.readout_weight > 0 or (config.readout_prior > 0 and propagator.reads_priors)
        keys = builtin_keys(propagator.backbone) if self.reads_memory else None
        self.temporal = TemporalContext(config, keys)
        if self.reads_memory:  # permanent slots: the user's masks, on the features their context was made from
            references = pipeline.predictor.references
            with torch.no_grad():
                maps = propagator.reference_feature_maps([r.image for r in references])
                for reference, (ft, geo) in zip(references, maps):
                    self.temporal.add_reference(self.temporal.frame_keys(ft[None]), reference.mask >= 0.5, geo)

    def encode(self, image: np.ndarray) -> Encoded:
        propagator = self.pipeline.propagator
        with torch.no_grad():
            geo, feats = propagator.source_features([image])
            # the whole search is done here, where a runner can overlap it with finishing the previous frame
            found = propagator.evidence(feats, geo)[0] if propagator.context is not None else None
            keys = self.temporal.frame_keys(feats.ft.cpu()) if self.reads_memory else None
        grey = None
        if self.config.motion and propagator.reads_priors:
            from icm_cli.predict.motion import grey_half

            grey = grey_half(image, geo)
        return Encoded(geo, feats, grey, found, keys)

    def predict_encoded(self, encoded: Encoded) -> Evidence:
        self.pipeline.predictor.check_ready()
        feats, propagator = encoded.features, self.pipeline.propagator
        with torch.no_grad():
            prior = self.temporal.prior(encoded.geometry, encoded.grey) if propagator.reads_priors else None
            window = self.temporal.window(tuple(feats.ft.shape[-2:]))
            readout = None if encoded.keys is None else self.temporal.readout(encoded.keys, encoded.geometry, window)
            if readout is not None and prior is not None and self.config.readout_prior > 0:
                share = self.config.readout_prior
                prior = (1 - share) * prior + share * torch.nn.functional.interpolate(
                    readout, size=prior.shape[-2:], mode="bilinear", align_corners=False)
            found = encoded.found if encoded.found is not None else propagator.evidence(feats, encoded.geometry)[0]
            return propagator.placed(found, window=window, prior=prior, prior_weight=self.config.prior_weight,
                                     readout=readout, readout_weight=self.config.readout_weight)

    def finish(self, image: np.ndarray, coarse: Evidence):
        return self.pipeline.finish(image, coarse)

    def observe_encoded(self, encoded: Encoded, mask: np.ndarray, index: int | None = None,
                        given: bool = False) -> None:
        """A frame's final mask: the next frame's prior and window, and (frame number ``index``) what the
        memory may keep; ``given``: the mask is the user's (the frame is a reference)."""
        self.temporal.update(np.asarray(mask, bool), encoded.geometry, encoded.features.ft.cpu(), encoded.grey,
                             keys=encoded.keys, index=index, given=given)

    @property
    def memory_frames(self) -> int:
        """How many frames before a frame a resumed run reads again to rebuild what it carries."""
        return self.config.memory_span
