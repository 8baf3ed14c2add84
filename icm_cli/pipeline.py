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
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from icm_cli import console, io, render
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
    kernel: int = 20
    overwrite: bool = False

    def paths(self, stem: str) -> dict[str, Path]:
        return {kind: self.root / kind / f"{stem}.png" for kind in self.kinds}

    def done(self, stem: str) -> bool:
        return not self.overwrite and all(p.exists() for p in self.paths(stem).values())

    def remove_stale_temp_files(self) -> int:
        """Delete temporary files killed runs left in the output folders (:func:`io.remove_stale_temp_files`)."""
        return sum(io.remove_stale_temp_files(folder) for folder in (self.root, *(self.root / k for k in self.kinds)))


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Manifest:
    """``manifest.jsonl``: one JSON object per source, appended and flushed as each finishes."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.echo = echo
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_last_line(path)
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        """Append one record; a ``time`` (UTC, ISO 8601) is added so `icm status` can order records across manifests.

        File names that are not valid UTF-8 (possible on Linux) are written
        as ``\\udcXX`` escapes, so every line stays valid JSON and
        ``os.fsencode(record["input"])`` gives the original bytes back.
        Raises :class:`io.OutputError` when the line cannot be written.
        """
        record = {**record, "time": record.get("time") or _utc_now()}
        line = json.dumps(record, ensure_ascii=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            line = json.dumps(record)
        with self._lock:
            try:
                self._fh.write(line + "\n")
                self._fh.flush()
            except OSError as exc:
                raise io.OutputError(f"{self.path}: cannot append to the manifest ({exc.strerror or exc})",
                                     exc.errno) from None
        if self.echo:
            self.echo(line)

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:  # every record was flushed when written; nothing is lost here
            pass


def _cut_torn_last_line(path: Path) -> None:
    """Drop a last line without its newline (a run killed mid-write), so appended records start on their own line."""
    try:
        with open(path, "rb+") as fh:
            end = fh.seek(0, 2)
            if end == 0:
                return
            fh.seek(end - 1)
            if fh.read(1) == b"\n":
                return
            pos = end
            while pos > 0:
                start = max(0, pos - 65536)
                fh.seek(start)
                cut = fh.read(pos - start).rfind(b"\n")
                if cut >= 0:
                    fh.truncate(start + cut + 1)
                    return
                pos = start
            fh.truncate(0)
    except FileNotFoundError:
        return


@dataclass
class Item:
    path: Path
    stem: str
    image: np.ndarray | None = None
    error: str | None = None
    decode_s: float = 0.0


def prefetch(iterator: Iterable, depth: int, halt: threading.Event | None = None) -> Iterator:
    """Run ``iterator`` on a background thread, at most ``depth`` items ahead.

    Once ``halt`` is set the consumer side ends within 0.1 s, even while the
    iterator is blocked (a slow stdin); the thread is a daemon and is dropped.
    """
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
            try:
                x = q.get(timeout=0.1)
            except queue.Empty:
                if halt is not None and halt.is_set():
                    return
                continue
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
    except MemoryError:
        return Item(path, stem, error=f"{path}: not enough memory to decode it")
    except Exception as exc:  # a decoder bug must not end the batch
        return Item(path, stem, error=console.unexpected(exc, str(path)))


@contextmanager
def _signals_stop(handler: Callable) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler`` while inside (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _Abandoned(Exception):
    """A source dropped unrecorded because the batch stopped; a rerun does it."""


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
        #: Set to stop taking new sources: by Ctrl-C / SIGTERM, or a full disk.
        self.halt = threading.Event()

    def _on_signal(self, signum, frame) -> None:
        """First Ctrl-C: finish what is predicted, record it, stop. Second: stop now (KeyboardInterrupt)."""
        if self.outcome.interrupted:
            raise KeyboardInterrupt
        self.outcome.interrupted = signum
        self.halt.set()

    def _stop(self, reason: str) -> None:
        """Stop the batch for a reason that would fail every later source too."""
        if not self.outcome.stopped:
            self.outcome.stopped = reason
        self.halt.set()

    # ------------------------------------------------------------ per source
    def _record(self, item: Item, status: str, outputs: dict | None = None, error: str | None = None,
                timing: dict | None = None) -> None:
        try:
            self.manifest.write({"input": str(item.path), "stem": item.stem, "status": status,
                                 "outputs": {k: str(v) for k, v in (outputs or {}).items()},
                                 "error": error, "timing": timing or {}})
        except io.OutputError as exc:
            if not self.outcome.stopped:
                console.error_line(str(exc))
            self._stop(f"the manifest cannot be written ({io.fatal_write_error(exc) or 'write error'})")

    def skip(self, item: Item) -> None:
        """Record a source whose outputs are all there already (free resume)."""
        self.outcome.skipped += 1
        self._record(item, "skipped", self.plan.paths(item.stem))
        self.advance(1)

    def _fail(self, item: Item, message: str) -> None:
        message = console.one_line(message)
        self.outcome.fail(str(item.path), message)
        self._record(item, "failed", error=message)
        self.advance(1)

    def _finish_and_write(self, item: Item, pred, model_s: float) -> None:
        if self.outcome.stopped:  # the disk filled up meanwhile: leave this source to the rerun
            raise _Abandoned
        t0 = time.perf_counter()
        arrays = self.render(item.image, pred)
        paths = self.plan.paths(item.stem)
        written = {}
        for kind, path in paths.items():
            try:
                io.write_image_atomic(path, arrays[kind])
            except io.OutputError as exc:
                reason = io.fatal_write_error(exc)
                if reason:  # a full disk fails every later source too: stop now, a rerun finishes
                    self._stop(f"cannot write to {self.plan.root} ({reason})")
                raise
            written[kind] = path
        finish_s = time.perf_counter() - t0
        self.stats.finish_s += finish_s
        self._record(item, "done", written, timing={"decode_s": round(item.decode_s, 4),
                                                   "model_s": round(model_s, 4),
                                                   "finish_s": round(finish_s, 4)})
        item.image = None  # written: let the pixels go

    def render(self, image: np.ndarray, pred) -> dict[str, np.ndarray]:
        """All requested outputs of one source as uint8 arrays at its own size."""
        from icm_cli.predict.fullres import mask_to_trimap_u8

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

    def _settle(self, item: Item, finish: Callable[[], None]) -> None:
        """Run ``finish`` (render and write one source); count it done or record why it failed."""
        try:
            finish()
            self.outcome.done += 1
            self.advance(1)
        except _Abandoned:
            pass
        except io.InputError as exc:
            self._fail(item, str(exc))
        except Exception as exc:  # a bug or a library error on one image
            self._fail(item, f"{item.path}: {type(exc).__name__}: {exc}")

    def _predict(self, batch: list[Item]) -> tuple[list, float]:
        """Coarse predictions of same-size items and the model seconds per item; ``[]`` if the model failed."""
        t0 = time.perf_counter()
        try:
            preds = self.propagator.predict_grid([it.image for it in batch])
        except Exception as exc:  # one batch's failure is recorded; the next batch still runs
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            for it in batch:
                self._fail(it, f"{it.path}: model failed: {first}")
            return [], 0.0
        self.stats.model_s += time.perf_counter() - t0
        return preds, (time.perf_counter() - t0) / len(batch)

    def complete(self, items: list[Item]) -> BatchOutcome:
        """Synchronous twin of :meth:`run` for sources decoded elsewhere (the Ray engine's workers).

        Consecutive items of one size are predicted together (at most
        ``batch_size``), then rendered, written and recorded exactly as
        :meth:`run` does; an item with ``error`` set is recorded as failed.
        """
        batch: list[Item] = []

        def flush() -> None:
            if batch:
                preds, model_s = self._predict(batch)
                for it, pred in zip(batch, preds):
                    self._settle(it, lambda: self._finish_and_write(it, pred, model_s))
                batch.clear()

        for item in items:
            if item.error is not None:
                self._fail(item, item.error)
                continue
            if batch and (item.image.shape != batch[0].image.shape or len(batch) >= self.batch_size):
                flush()
            batch.append(item)
        flush()
        self.stats.images = self.outcome.done
        return self.outcome

    # ------------------------------------------------------------------ run
    def _items(self, sources: Iterable[Path | tuple[Path, str]]) -> Iterator[Item]:
        stems = io.StemAllocator()
        for entry in sources:
            # (path, stem) pairs come named already (``shard.named_sources``); bare paths are named here.
            path, stem = entry if isinstance(entry, tuple) else (entry, stems(entry))
            if self.plan.done(stem):
                yield Item(path, stem, error="__skip__")
                continue
            yield _decode(path, stem, self.max_pixels)

    def run(self, sources: Iterable[Path | tuple[Path, str]], prefetch_depth: int = 4) -> BatchOutcome:
        """Process a stream of source paths, or of ``(path, stem)`` pairs already named."""
        pending: deque[tuple[Item, Future]] = deque()
        max_pending = 2 * self.batch_size + 2
        batch: list[Item] = []

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="icm-write") as writer:
            def drain(limit: int) -> None:
                while len(pending) > limit:
                    item, fut = pending.popleft()
                    self._settle(item, fut.result)

            def flush() -> None:
                if not batch:
                    return
                preds, model_s = self._predict(batch)
                for it, pred in zip(batch, preds):
                    pending.append((it, writer.submit(self._finish_and_write, it, pred, model_s)))
                batch.clear()
                drain(max_pending)

            items = prefetch(self._items(sources), prefetch_depth, halt=self.halt)
            try:
                with _signals_stop(self._on_signal):
                    self._loop(items, batch, flush)
                    if not self.halt.is_set():
                        flush()
                    drain(0)  # what is predicted is written and recorded, even when stopping
            except BaseException:  # a second Ctrl-C: abandon queued writes, let the running one finish
                for _, fut in pending:
                    fut.cancel()
                raise
            finally:
                items.close()
        self.stats.images = self.outcome.done
        return self.outcome

    def _loop(self, items: Iterator[Item], batch: list[Item], flush: Callable[[], None]) -> None:
        """Take sources until they run out or :attr:`halt` is set; batch items of one size."""
        for item in items:
            if self.halt.is_set():
                return
            if item.error == "__skip__":
                self.skip(item)
                continue
            if item.error is not None:
                self._fail(item, item.error)
                continue
            if batch and (item.image.shape != batch[0].image.shape or len(batch) >= self.batch_size):
                flush()
            batch.append(item)
            if len(batch) >= self.batch_size:
                flush()
