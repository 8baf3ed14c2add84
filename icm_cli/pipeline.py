"""Streaming orchestration: decode ahead, batch, predict, finish and write behind.

Sources are decoded on a background thread while the model runs; each
finished coarse prediction is handed to a writer thread that refines it to
full size (GrabCut, trimap, heat map, matte) and writes the files, so the
backbone rarely waits for I/O. At most a few batches are in flight: memory
does not grow with the number of sources.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from icm_cli import io, render
from icm_cli.console import BatchOutcome

OUTPUT_KINDS = ("masks", "trimaps", "heatmaps", "alpha", "cutout")
DEFAULT_KINDS = ("masks", "trimaps", "heatmaps")


def parse_kinds(text: str) -> tuple[str, ...]:
    """``"masks,trimaps"`` -> ``("masks", "trimaps")``; unknown names raise ValueError."""
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in OUTPUT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"--save takes a comma-separated list of {', '.join(OUTPUT_KINDS)}; got {text!r}")
    return kinds


@dataclass
class OutputPlan:
    """Where each kind of output of a source goes: ``root/<kind>/<stem>.png``."""

    root: Path
    kinds: tuple[str, ...] = DEFAULT_KINDS
    kernel: int = 10
    overwrite: bool = False

    def paths(self, stem: str) -> dict[str, Path]:
        return {kind: self.root / kind / f"{stem}.png" for kind in self.kinds}

    def done(self, stem: str) -> bool:
        return not self.overwrite and all(p.exists() for p in self.paths(stem).values())


class Manifest:
    """``manifest.jsonl``: one JSON object per source, appended and flushed as each finishes."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.echo = echo
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()
        if self.echo:
            self.echo(line)

    def close(self) -> None:
        self._fh.close()


@dataclass
class Item:
    path: Path
    stem: str
    image: np.ndarray | None = None
    error: str | None = None
    decode_s: float = 0.0


def prefetch(iterator: Iterable, depth: int) -> Iterator:
    """Run ``iterator`` on a background thread, at most ``depth`` items ahead."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    end = object()
    stop = threading.Event()

    def worker() -> None:
        try:
            for x in iterator:
                while not stop.is_set():
                    try:
                        q.put(x, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # surfaced on the consumer side
            q.put(exc)
        q.put(end)

    thread = threading.Thread(target=worker, daemon=True, name="icm-decode")
    thread.start()
    try:
        while True:
            x = q.get()
            if x is end:
                return
            if isinstance(x, BaseException):
                raise x
            yield x
    finally:
        stop.set()


def _decode(path: Path, stem: str, max_pixels: int) -> Item:
    t0 = time.perf_counter()
    try:
        image = io.read_image(path, max_pixels=max_pixels)
        return Item(path, stem, image=image, decode_s=time.perf_counter() - t0)
    except io.InputError as exc:
        return Item(path, stem, error=str(exc))


@dataclass
class RunStats:
    backbone_s: float = 0.0
    model_s: float = 0.0
    finish_s: float = 0.0
    images: int = 0
    per_item: list = field(default_factory=list)


class PropagateRun:
    """One `icm propagate` run over a stream of sources.

    ``finisher(image, prediction) -> dict[kind, array]`` turns a coarse
    prediction into the output arrays; it runs on a writer thread.
    """

    def __init__(self, propagator, plan: OutputPlan, manifest: Manifest, batch_size: int = 1,
                 max_pixels: int = io.DEFAULT_MAX_PIXELS, advance: Callable[[int], None] = lambda n=1: None,
                 quiet: bool = False, matte: Callable | None = None) -> None:
        self.propagator = propagator
        self.plan = plan
        self.manifest = manifest
        self.batch_size = max(1, batch_size)
        self.max_pixels = max_pixels
        self.advance = advance
        self.quiet = quiet
        self.matte = matte
        self.outcome = BatchOutcome()
        self.stats = RunStats()

    # ------------------------------------------------------------ per source
    def _record(self, item: Item, status: str, outputs: dict | None = None, error: str | None = None,
                timing: dict | None = None) -> None:
        self.manifest.write({"input": str(item.path), "stem": item.stem, "status": status,
                             "outputs": {k: str(v) for k, v in (outputs or {}).items()},
                             "error": error, "timing": timing or {}})

    def _fail(self, item: Item, message: str) -> None:
        self.outcome.fail(str(item.path), message)
        self._record(item, "failed", error=message)
        self.advance(1)

    def _finish_and_write(self, item: Item, pred, model_s: float) -> None:
        t0 = time.perf_counter()
        arrays = self.render(item.image, pred)
        paths = self.plan.paths(item.stem)
        written = {}
        for kind, path in paths.items():
            io.write_image_atomic(path, arrays[kind])
            written[kind] = path
        finish_s = time.perf_counter() - t0
        self.stats.finish_s += finish_s
        self._record(item, "done", written, timing={"decode_s": round(item.decode_s, 4),
                                                   "model_s": round(model_s, 4),
                                                   "finish_s": round(finish_s, 4)})
        item.image = None  # written: let the pixels go

    def render(self, image: np.ndarray, pred) -> dict[str, np.ndarray]:
        """All requested outputs of one source as uint8 arrays at its own size."""
        from icm_cli.commands.trimap import mask_to_trimap_u8

        kinds = self.plan.kinds
        prob, mask = self.propagator.finish(image, pred)
        out: dict[str, np.ndarray] = {}
        if "masks" in kinds:
            out["masks"] = mask.astype(np.uint8) * 255
        trimap = None
        if any(k in kinds for k in ("trimaps", "alpha", "cutout")):
            trimap = mask_to_trimap_u8(mask.astype(np.float32), self.plan.kernel, self.plan.kernel)
            if "trimaps" in kinds:
                out["trimaps"] = trimap
        if "heatmaps" in kinds:
            out["heatmaps"] = render.overlay(image, prob)
        if "alpha" in kinds or "cutout" in kinds:
            alpha = self.matte(image, trimap.astype(np.float32) / 255.0)
            if "alpha" in kinds:
                out["alpha"] = (np.clip(alpha, 0, 1) * 255 + 0.5).astype(np.uint8)
            if "cutout" in kinds:
                from icm_cli.matting import cutout_rgba
                out["cutout"] = cutout_rgba(image, alpha)
        return out

    # ------------------------------------------------------------------ run
    def _items(self, sources: Iterable[Path]) -> Iterator[Item]:
        stems = io.StemAllocator()
        for path in sources:
            stem = stems(path)
            if self.plan.done(stem):
                yield Item(path, stem, error="__skip__")
                continue
            yield _decode(path, stem, self.max_pixels)

    def run(self, sources: Iterable[Path], prefetch_depth: int = 4) -> BatchOutcome:
        pending: deque[tuple[Item, Future]] = deque()
        max_pending = 2 * self.batch_size + 2
        batch: list[Item] = []

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="icm-write") as writer:
            def drain(limit: int) -> None:
                while len(pending) > limit:
                    item, fut = pending.popleft()
                    try:
                        fut.result()
                        self.outcome.done += 1
                        self.advance(1)
                    except io.InputError as exc:
                        self._fail(item, str(exc))
                    except Exception as exc:  # a bug or a library error on one image
                        self._fail(item, f"{item.path}: {type(exc).__name__}: {exc}")

            def flush() -> None:
                if not batch:
                    return
                t0 = time.perf_counter()
                try:
                    preds = self.propagator.predict_grid([it.image for it in batch])
                except (RuntimeError, ValueError) as exc:
                    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    for it in batch:
                        self._fail(it, f"{it.path}: model failed: {first}")
                    batch.clear()
                    return
                model_s = (time.perf_counter() - t0) / len(batch)
                self.stats.model_s += time.perf_counter() - t0
                for it, pred in zip(batch, preds):
                    pending.append((it, writer.submit(self._finish_and_write, it, pred, model_s)))
                batch.clear()
                drain(max_pending)

            for item in prefetch(self._items(sources), prefetch_depth):
                if item.error == "__skip__":
                    self.outcome.skipped += 1
                    self._record(item, "skipped", self.plan.paths(item.stem))
                    self.advance(1)
                    continue
                if item.error is not None:
                    self._fail(item, item.error)
                    continue
                if batch and (item.image.shape != batch[0].image.shape or len(batch) >= self.batch_size):
                    flush()
                batch.append(item)
                if len(batch) >= self.batch_size:
                    flush()
            flush()
            drain(0)
        self.stats.images = self.outcome.done
        return self.outcome
