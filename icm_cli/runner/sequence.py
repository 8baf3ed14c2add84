"""`icm propagate --video`: one sequence through the batch runner, resumable frame by frame.

What a frame carries to the next (the search window, the memory) is rebuilt
from the masks already written, so a rerun after an interruption resumes at
the first unfinished frame with the same results as an uninterrupted run.
"""

from __future__ import annotations

from typing import Iterator

from icm_cli import io
from icm_cli.runner.batch import BatchRunner, Work
from icm_cli.runner.outcome import BatchOutcome
from icm_cli.runner.outputs import output_path
from icm_cli.video import FrameSequence


def resume_point(sequence: FrameSequence, runner: BatchRunner) -> int:
    """Index of the first frame whose outputs are not all written (0 with ``--overwrite``)."""
    index = 0
    while (not sequence.counted or index < len(sequence)) and runner.plan.done(sequence.frame_source(index).stem):
        index += 1
    return index


def _works(sequence: FrameSequence, start: int) -> Iterator[Work]:
    for index, (source, image) in enumerate(sequence.frames(start), start=start):
        yield Work(source, error=image, index=index) if isinstance(image, str) else Work(source, image=image, index=index)


def run_video(runner: BatchRunner, sequence: FrameSequence, model) -> BatchOutcome:
    """Every frame of ``sequence`` in order, ``model`` a :class:`~icm_cli.predictor.VideoPredictor`."""
    start = resume_point(sequence, runner)
    for index in range(start):
        runner.skip(sequence.frame_source(index))
    prime = getattr(runner.matte, "prime", None)  # steadied alphas continue from the last written one
    if start:  # the frames before the resume point lend their written masks, as they did when written
        first = max(0, start - max(model.memory_frames, 1 if prime else 0))
        for index, (source, image) in enumerate(sequence.frames(first), start=first):
            if index >= start:
                break
            if isinstance(image, str):
                continue
            mask_path = output_path(runner.plan.root, "masks", source.stem)
            if index >= start - model.memory_frames and mask_path.exists():
                given = bool(runner.user_masks) and runner.user_masks.reference_for(source) is not None
                model.observe_encoded(model.encode(image), io.read_mask(mask_path) >= 0.5, index=index, given=given)
            if prime and index == start - 1:
                alpha = _written_alpha(runner.plan.root, source.stem)
                if alpha is not None and alpha.shape == image.shape[:2]:
                    prime(image, alpha)
    return runner.run_sequence(_works(sequence, start), model)


def _written_alpha(root, stem: str):
    """A frame's alpha as written: ``alpha/<stem>.png``, else the cut-out's alpha channel; None if neither."""
    import numpy as np

    from icm_cli.process_settings import open_unguarded

    for kind, channel in (("alpha", None), ("cutout", 3)):
        path = output_path(root, kind, stem)
        try:
            with open_unguarded(path) as img:  # icm's own output: its size was checked when the source was read
                pixels = np.asarray(img)
        except (OSError, ValueError):
            continue
        pixels = pixels[..., channel] if channel is not None and pixels.ndim == 3 else pixels
        if pixels.ndim == 2:
            return pixels.astype(np.float32) / 255.0
    return None
