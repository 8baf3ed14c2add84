"""`icm propagate --video`: frames in order, each using what the last ones found.

Frame t+1's backbone forward runs while frame t is finished and written on the
writer thread; the search window for t+1 then comes from t's written mask.
Because the carried state is rebuilt from written masks, a rerun after an
interruption resumes at the first unfinished frame with the same results.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from icm_cli import io
from icm_cli.console import BatchOutcome
from icm_cli.pipeline import Item, Manifest, OutputPlan, PropagateRun, prefetch
from icm_cli.predict.engine import Propagator
from icm_cli.predict.temporal import TemporalContext
from icm_cli.video import Frame, is_video_file, iter_frames


def _list_stems(sequence: Path) -> list[str] | None:
    """Output stems of every frame, without decoding (None for video files: count unknown)."""
    from icm_cli.video import frame_paths, sequence_stems
    if is_video_file(sequence):
        return None
    return sequence_stems(frame_paths(sequence))


class VideoRun:
    def __init__(self, propagator: Propagator, plan: OutputPlan, manifest: Manifest, temporal: TemporalContext,
                 max_pixels: int = io.DEFAULT_MAX_PIXELS, advance: Callable[[int], None] = lambda n=1: None,
                 quiet: bool = False, matte: Callable | None = None) -> None:
        self.propagator = propagator
        self.plan = plan
        self.temporal = temporal
        self.max_pixels = max_pixels
        self.frames = PropagateRun(propagator, plan, manifest, max_pixels=max_pixels, advance=advance,
                                   quiet=quiet, matte=matte)
        self.outcome: BatchOutcome = self.frames.outcome

    # --------------------------------------------------------------- resume
    def _resume_point(self, stems: list[str] | None) -> int:
        """Index of the first frame whose outputs are not all written (``stems`` None: a video file)."""
        if stems is None:  # a video file: probe frame names as we go
            i = 0
            while self.plan.done(f"{i:05d}"):
                i += 1
            return i
        for i, stem in enumerate(stems):
            if not self.plan.done(stem):
                return i
        return len(stems)

    def _rebuild_state(self, sequence: Path, start: int) -> None:
        """Feed the temporal context the written masks of the frames before ``start``."""
        keep = max(1, self.temporal.memory_size)
        first = max(0, start - keep)
        for frame in iter_frames(sequence, self.max_pixels, start=first):
            if frame.index >= start:
                break
            mask_path = self.plan.root / "masks" / f"{frame.stem}.png"
            if frame.error or not mask_path.exists():
                continue
            mask = io.read_mask(mask_path) >= 0.5
            geo, feats = self.propagator.source_features([frame.image])
            self.temporal.update(mask, geo, feats.ft)

    # ----------------------------------------------------------------- run
    def run(self, sequence: Path) -> BatchOutcome:
        sequence = Path(sequence)
        stems = _list_stems(sequence)
        start = 0 if self.plan.overwrite else self._resume_point(stems)
        for stem in (stems or [f"{i:05d}" for i in range(start)])[:start]:
            self.frames.outcome.skipped += 1
            self.frames._record(Item(Path(str(sequence)), stem), "skipped", self.plan.paths(stem))
            self.frames.advance(1)
        if start:
            self._rebuild_state(sequence, start)

        pending: tuple[Frame, Future, object] | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="icm-write") as writer:
            def settle() -> None:
                nonlocal pending
                if pending is None:
                    return
                frame, fut, (geo, ft) = pending
                pending = None
                try:
                    mask = fut.result()
                    self.outcome.done += 1
                    self.frames.advance(1)
                    self.temporal.update(mask, geo, ft)
                except io.InputError as exc:
                    self.frames._fail(Item(Path(frame.source), frame.stem), str(exc))
                except Exception as exc:
                    self.frames._fail(Item(Path(frame.source), frame.stem),
                                      f"{frame.source}: {type(exc).__name__}: {exc}")

            for frame in prefetch(iter_frames(sequence, self.max_pixels, start=start), 3):
                if frame.error:
                    settle()
                    self.frames._fail(Item(Path(frame.source), frame.stem), frame.error)
                    continue
                t0 = time.perf_counter()
                try:
                    geo, feats = self.propagator.source_features([frame.image])
                except (RuntimeError, ValueError) as exc:
                    settle()
                    self.frames._fail(Item(Path(frame.source), frame.stem),
                                      f"{frame.source}: model failed: {str(exc).splitlines()[0]}")
                    continue
                settle()  # frame t is written; its mask sets the window for this one
                pred = self.propagator.predict_from_features(
                    feats.ft, geo, feats.attn, prior=self.temporal.prior(tuple(feats.ft.shape[-2:])),
                    memory=self.temporal.memory_tokens())[0]
                model_s = time.perf_counter() - t0
                item = Item(Path(frame.source), frame.stem, image=frame.image)
                fut = writer.submit(self._finish, item, pred, model_s)
                pending = (frame, fut, (geo, feats.ft.cpu()))
            settle()
        self.frames.stats.images = self.outcome.done
        return self.outcome

    def _finish(self, item: Item, pred, model_s: float) -> np.ndarray:
        """Write one frame's outputs; returns its full-size bool mask for the next frame."""
        t0 = time.perf_counter()
        arrays = self.frames.render(item.image, pred)
        mask_bool = arrays["masks"] > 127  # video runs always save masks: resume reads them back
        written = {}
        for kind, path in self.plan.paths(item.stem).items():
            io.write_image_atomic(path, arrays[kind])
            written[kind] = path
        self.frames._record(item, "done", written, timing={"model_s": round(model_s, 4),
                                                          "finish_s": round(time.perf_counter() - t0, 4)})
        return mask_bool
