"""`icm propagate --engine local` (the default): one :class:`~icm_cli.predictor.Predictor` in this
process, the sources streamed through the batch runner (images in any order, or one ``--video``
sequence frame after frame)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from icm_cli.config import ModelConfig, VideoConfig, batch_size_for
from icm_cli.engines import Prepared
from icm_cli.runner.outcome import BatchOutcome

if TYPE_CHECKING:
    from icm_cli.predictor import Predictor
    from icm_cli.runner.batch import BatchRunner
    from icm_cli.video import FrameSequence


class LocalEngine:
    """``prepare`` builds the predictor and the reference context; ``run`` streams the sources through it.

    ``batch_size`` 0 is the device's default; ``video`` the settings of a ``--video`` run.
    """

    def __init__(self, model: ModelConfig, *, batch_size: int = 0, video: VideoConfig | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        self.video = video
        self.predictor: Predictor | None = None

    def prepare(self, references) -> Prepared:
        from icm_cli.predictor import Predictor

        self.predictor = Predictor(self.model)
        prepared = Prepared(self.predictor.runtime, self.predictor.runtime_note)
        self.predictor.set_references(references)
        return prepared

    def run(self, runner: BatchRunner, sources, sequence: FrameSequence | None = None) -> BatchOutcome:
        predictor = self.predictor
        pipeline = predictor.pipeline  # the runner's split step, not the predictor's public face
        if sequence is not None:
            from icm_cli.runner.sequence import run_video

            # three threads share the cores (backbone ahead, the serial chain, writing): one torch thread each
            with pipeline.streaming(pipeline.stream_workers()):
                return run_video(runner, sequence, predictor.video(self.video).pipeline)
        batch = batch_size_for(self.batch_size, on_gpu=predictor.device.type != "cpu")
        workers = pipeline.stream_workers()
        with pipeline.streaming(workers):
            return runner.run_images(sources, pipeline, batch_size=batch, workers=workers)
