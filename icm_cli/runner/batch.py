"""The one batch runner: every source of `icm propagate` (images, ``--video`` frames, Ray workers) goes through it.

It owns what happens to a source, so each behaviour exists once:

- outputs already there -> a ``skipped`` record (free resume);
- a source that is also a reference -> the user's mask is its result, no
  model (``from_reference``; in a sequence the next frame starts from it);
- a file that cannot be read, a model error, a failed write -> one error
  line naming the file, a ``failed`` record, and the batch goes on;
- a full disk (or an unwritable manifest) -> no new source starts, one
  ``stopped`` line, exit 1;
- Ctrl-C / SIGTERM -> no new source starts, what is predicted is written
  and recorded, exit 130 / 143; a second one stops at once;
- ``--json`` piped into a reader that goes away -> the run stops quietly
  and every record of what was written stays true.

Sources come in as :class:`~icm_cli.sources.Source` entries (decoded here
on a background thread) or as :class:`Work` already decoded (Ray); the
model is anything with the predictor's twin API (``predict_coarse`` +
``finish``, and for sequences ``encode`` / ``predict_encoded`` /
``observe_encoded``). Finishing (full-size refinement, rendering, PNG
writing) runs on a writer thread while the backbone works on the next
source; at most a few sources are in flight.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np

from icm_cli import io
from icm_cli.runner.manifest import RecordSink, RunRecord, SourceRecord, input_key
from icm_cli.runner.outcome import BatchOutcome, one_line, unexpected
from icm_cli.runner.outputs import OutputPlan
from icm_cli.runner.signals import StopFlag, stop_signals
from icm_cli.runner.user_masks import user_result
from icm_cli.sources import ListingProblem, Source

T = TypeVar("T")


@dataclass
class Work:
    """One source on its way through the runner: its pixels, or why there are none."""

    source: Source
    image: np.ndarray | None = None
    error: str | None = None
    decode_s: float = 0.0
    done: bool = False  # every output is there already
    prior: np.ndarray | None = None  # [H, W] bool prior mask (propagate --prior), when one was found
    #: [H, W] bool: the user's own mask when this source is also a reference; it is the result, unpredicted.
    given: np.ndarray | None = None
    index: int | None = None  # a --video frame's number (what the memory's slots are chosen by)


class _Abandoned(Exception):
    """A source dropped unrecorded because the batch stopped; a rerun does it."""


class _ModelStepFailed(Exception):
    """The model's part of a source failed on a finishing thread (judged as a model step)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def looks_like_mask(image: np.ndarray) -> bool:
    """``[H, W, 3]`` uint8 that is grey and two-valued: most likely a mask, not a photo.

    Two-valued allows what saving does to a mask: soft (anti-aliased) edges and JPEG noise. Almost every
    pixel (95%) must lie within a tenth of the value range of its darkest or its brightest value, which the
    mid-tones of a black-and-white photo rule out (grey copies of the 1,400 evaluation photos: at most 76%);
    a 0/1 mask (range 1) must be exactly two-valued.
    """
    if image.size == 0:
        return False
    flat = image[::4, ::4].astype(np.int16)
    spread = flat.max(axis=-1) - flat.min(axis=-1)  # 0 for grey; JPEG leaves a little colour noise
    if np.quantile(spread, 0.99) > 10:
        return False
    grey = flat.mean(axis=-1)
    lo, hi = float(grey.min()), float(grey.max())
    near = (hi - lo) / 10
    return float(np.mean((grey - lo <= near) | (hi - grey <= near))) >= 0.95


def prefetch(iterator: Iterable[T], depth: int, halt: threading.Event | None = None) -> Iterator[T]:
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


def failure_message(exc: BaseException, path, model_step: bool = False, debug: bool = False) -> str:
    """The one line a failed source gets, for any error (re-raised with ``debug``, ``icm --debug``, when
    unexpected).

    A user-file problem (:class:`io.InputError`) keeps its own message; a
    memory error says so; anything else names the file and the exception
    (``model failed: ...`` for a model step).
    """
    if isinstance(exc, (io.InputError, io.OutputError)):
        return str(exc)
    if isinstance(exc, MemoryError):
        return f"{path}: out of memory"
    if debug:
        raise exc
    if model_step:
        text = one_line(str(exc)).split(" | ")[0] or type(exc).__name__
        return f"{path}: model failed: {text}"
    return unexpected(exc, str(path))


class BatchRunner:
    """Runs sources through a model into an :class:`OutputPlan`, recording each in ``sink``.

    ``progress(n)`` is told of each finished source; ``matte(image, trimap)``
    solves alphas when the plan asks for them; ``max_pixels`` bounds decoding.
    The runner prints nothing: failures go to ``outcome.reporter``, whose
    ``debug`` re-raises unexpected errors instead of failing their source.
    """

    def __init__(self, plan: OutputPlan, sink: RecordSink, *, run_id: str | None = None,
                 progress: Callable[[int], None] = lambda n=1: None, max_pixels: int = io.DEFAULT_MAX_PIXELS,
                 matte: Callable | None = None, outcome: BatchOutcome | None = None,
                 priors: Path | None = None, user_masks=None) -> None:
        self.plan = plan
        #: A :class:`~icm_cli.runner.user_masks.UserMasks`: sources that are references take the user's mask.
        self.user_masks = user_masks
        #: ``propagate --prior DIR``: each source's prior mask is ``DIR/<name>.*`` when there is one.
        self.priors = priors
        self.sink = sink
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.progress = progress
        self.max_pixels = max_pixels
        self.matte = matte
        self.outcome = outcome or BatchOutcome()
        #: Set to stop taking new sources: by a signal, a full disk, or a closed stdout.
        self.halt = threading.Event()
        #: The first Ctrl-C / SIGTERM finishes what is predicted, records it and stops; a second stops now.
        self._signals = StopFlag(then=self._interrupted)
        self._lock = threading.Lock()
        #: Seconds spent in each stage, over all sources (benchmarks read these).
        self.seconds = {"model": 0.0, "finish": 0.0}

    # ------------------------------------------------------------ records
    def begin(self, command: list[str], settings: dict, references: list[dict[str, str]]) -> None:
        """Write the run's :class:`RunRecord` (the command, its result-changing settings, the references)."""
        from icm_cli import __version__

        self._record(RunRecord(run=self.run_id, command=list(command), cwd=os.getcwd(), version=__version__,
                               settings=settings, references=references))

    def _record(self, record: SourceRecord | RunRecord) -> None:
        try:
            self.sink.write(record)
        except BrokenPipeError:
            self._stdout_closed()
        except io.OutputError as exc:
            if not self.outcome.stopped:
                self.outcome.reporter.error(str(exc))
            self.stop(f"the manifest cannot be written ({io.fatal_write_error(exc) or 'write error'})")

    def _stdout_closed(self) -> None:
        """``--json`` output's reader went away: stop quietly; the manifest already holds the record."""
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        if hasattr(self.sink, "echo"):
            self.sink.echo = None
        self.outcome.stdout_closed = True
        self.halt.set()

    def _source_record(self, source: Source | ListingProblem, status: str, **fields) -> SourceRecord:
        stem = source.stem if isinstance(source, Source) else None
        return SourceRecord(input=input_key(str(source.path)), stem=stem, status=status, run=self.run_id, **fields)

    def skip(self, source: Source) -> None:
        """Record a source whose outputs are all there already."""
        with self._lock:
            self.outcome.skipped += 1
        given = bool(self.user_masks) and self.user_masks.reference_for(source) is not None
        self._record(self._source_record(source, "skipped",
                                         outputs={k: str(p.absolute()) for k, p in self.plan.paths(source.stem).items()},
                                         from_reference=given))
        self.progress(1)

    def fail(self, source: Source | ListingProblem, message: str) -> None:
        """Record a failure: one line on stderr, a ``failed`` record; the batch goes on."""
        message = one_line(message)
        with self._lock:
            self.outcome.fail(str(source.path), message)
        self._record(self._source_record(source, "failed", error=message))
        self.progress(1)

    def succeed(self, source: Source, written: dict[str, Path], result, timing: dict[str, float],
                from_reference: bool = False) -> None:
        with self._lock:
            self.outcome.done += 1
            if result.empty:
                self.outcome.empty += 1
        self._record(self._source_record(
            source, "done", outputs={k: str(p.absolute()) for k, p in written.items()},
            timing={k: round(v, 4) for k, v in timing.items()},
            confidence=None if result.confidence is None else round(float(result.confidence), 4),
            empty=bool(result.empty), mask_area=round(float(result.area), 6), from_reference=from_reference))
        self.progress(1)

    def accept(self, record: SourceRecord) -> None:
        """A record made elsewhere (a Ray worker): counted, printed if failed, and written here."""
        with self._lock:
            if record.status == "failed":
                self.outcome.fail(record.input, record.error or "failed")
            elif record.status == "skipped":
                self.outcome.skipped += 1
            else:
                self.outcome.done += 1
                self.outcome.empty += bool(record.empty)
        self._record(record)
        self.progress(1)

    def stop(self, reason: str) -> None:
        """Stop the batch for a reason that would fail every later source too (a full disk)."""
        if not self.outcome.stopped:
            self.outcome.stopped = reason
        self.halt.set()

    # ------------------------------------------------------------ failure policy
    def attempt(self, source: Source, step: Callable[[], T], model_step: bool = False) -> T | None:
        """Run one step for ``source``; on an error record the failure and return None.

        The one place errors of a source are judged: a user-file problem
        (:class:`io.InputError`) fails it with its own message (a full disk
        also stops the batch); anything else fails it with one line naming
        the file (``model failed: ...`` for a model step), re-raised with
        ``icm --debug``.
        """
        try:
            return step()
        except _Abandoned:
            return None
        except _ModelStepFailed as failed:
            self.fail(source, failure_message(failed.error, source.path, model_step=True, debug=self.debug))
        except Exception as exc:
            reason = io.fatal_write_error(exc)
            if reason:  # a full disk fails every later source too: stop now, a rerun finishes
                self.stop(f"cannot write to {self.plan.root} ({reason})")
            self.fail(source, failure_message(exc, source.path, model_step, debug=self.debug))
        return None

    @property
    def debug(self) -> bool:
        """``icm --debug``: an unexpected error is raised, not turned into a failed source."""
        return self.outcome.reporter.debug

    def _on_signal(self, signum, frame) -> None:
        """First Ctrl-C / SIGTERM: finish what is predicted, record it, stop. Second: stop now."""
        self._signals(signum, frame)

    def _interrupted(self, signum: int) -> None:
        self.outcome.interrupted = signum
        self.halt.set()

    def handling_signals(self):
        """Route SIGINT and SIGTERM to the runner while inside (main thread only; elsewhere a no-op)."""
        return stop_signals(self._signals)

    # ------------------------------------------------------------ one source's outputs
    def _finish(self, work: Work, coarse, model, encoded=None) -> tuple:
        """Writer thread: full-size result, rendering, atomic writes. Returns ``(result, written, finish_s,
        coarse_s)``; with ``encoded`` (the backbone's output) the coarse prediction is made here first."""
        if self.outcome.stopped:  # the disk filled up meanwhile: leave this source to the rerun
            raise _Abandoned
        coarse_s = 0.0
        if encoded is not None:
            t0 = time.perf_counter()
            try:
                coarse = model.predict_coarse([work.image], encoded=encoded, **self._priors([work]))[0]
            except Exception as exc:
                if self.debug:
                    raise
                raise _ModelStepFailed(exc) from exc
            coarse_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = model.finish(work.image, coarse)
        return result, self._write_outputs(work, result), time.perf_counter() - t0, coarse_s

    def _write_outputs(self, work: Work, result) -> dict[str, Path]:
        """Render one source's outputs and write each atomically; ``{kind: path}`` of what was written."""
        arrays = self.plan.render(work.image, result, self.matte)
        written = {}
        for kind, path in self.plan.paths(work.source.stem).items():
            try:
                io.write_image_atomic(path, arrays[kind])
            except io.OutputError as exc:
                reason = io.fatal_write_error(exc)
                if reason:  # stop at once: writes queued behind this one must not try the full disk too
                    self.stop(f"cannot write to {self.plan.root} ({reason})")
                raise
            written[kind] = path
        work.image = None  # written: let the pixels go
        return written

    def _drain(self, pending: deque, limit: int) -> None:
        """Record the oldest of ``pending`` ``(work, future, model_s)``, in order: waiting while more than
        ``limit`` are queued, then those already finished, so results show as they come."""
        while len(pending) > limit or (pending and pending[0][1].done()):
            self._settle(*pending.popleft())

    def _settle(self, work: Work, future: Future, model_s: float):
        """Wait for one source's finishing; record it done (returns the result) or failed (None)."""
        outcome = self.attempt(work.source, future.result)
        if outcome is None:
            return None
        result, written, finish_s, coarse_s = outcome
        model_s += coarse_s
        self.seconds["model"] += coarse_s
        self.seconds["finish"] += finish_s
        self.succeed(work.source, written, result,
                     {"decode_s": work.decode_s, "model_s": model_s, "finish_s": finish_s},
                     from_reference=work.given is not None)
        return result

    def _take_user_mask(self, work: Work) -> Work:
        """A decoded source that is also a reference gets the user's mask as its result (``work.given``);
        a mask that no longer fits the image fails the source with a line saying so."""
        if self.user_masks and work.error is None and work.image is not None:
            try:
                work.given = self.user_masks.mask_for(work.source, work.image)
            except io.InputError as exc:
                work.error, work.image = str(exc), None
        return work

    # ------------------------------------------------------------ decoding
    def decode(self, source: Source) -> Work:
        t0 = time.perf_counter()
        try:
            image = io.read_image(source.path, max_pixels=self.max_pixels)
        except io.InputError as exc:
            return Work(source, error=str(exc))
        except MemoryError:
            return Work(source, error=f"{source.path}: not enough memory to decode it")
        except Exception as exc:  # a decoder bug must not end the batch
            return Work(source, error=unexpected(exc, str(source.path)))
        if looks_like_mask(image):
            with self._lock:
                self.outcome.mask_like.append(str(source.path))
        prior = None
        if self.priors is not None:
            from icm_cli.sources import find_named

            path = find_named(self.priors, source.name)
            if path is not None:  # no file of that name: this source is predicted without a prior
                try:
                    prior = io.read_mask(path, max_pixels=self.max_pixels) >= 0.5
                except io.InputError as exc:
                    return Work(source, error=f"{source.path}: prior {exc}")
                if prior.shape != image.shape[:2]:
                    return Work(source, error=f"{source.path}: prior {path} is {prior.shape[1]}x{prior.shape[0]} "
                                              f"but the image is {image.shape[1]}x{image.shape[0]}")
        return Work(source, image=image, decode_s=time.perf_counter() - t0, prior=prior)

    def _prepared(self, entries: Iterable[Source | ListingProblem | Work]) -> Iterator[Work | ListingProblem]:
        for entry in entries:
            if isinstance(entry, Source):
                yield Work(entry, done=True) if self.plan.done(entry.stem) else self._take_user_mask(self.decode(entry))
            elif isinstance(entry, Work):
                yield self._take_user_mask(entry)
            else:
                yield entry

    # ------------------------------------------------------------ images
    def _predict(self, batch: list[Work], model) -> list:
        """Coarse predictions of same-size sources, None for a source the model failed on.

        A batch that fails is retried one source at a time, so only the
        source that broke the model is failed.
        """
        t0 = time.perf_counter()
        try:
            if len(batch) > 1:
                try:
                    return model.predict_coarse([w.image for w in batch], **self._priors(batch))
                except Exception:
                    if self.debug:
                        raise
            return [(self.attempt(w.source, lambda: model.predict_coarse([w.image], **self._priors([w])),
                                  model_step=True) or [None])[0] for w in batch]
        finally:
            self.seconds["model"] += time.perf_counter() - t0

    def _priors(self, batch: list[Work]) -> dict:
        """``predict_coarse``'s prior keyword for a batch (nothing without ``--prior``, so models without
        priors keep working)."""
        return {"priors": [w.prior for w in batch]} if self.priors is not None else {}

    def _encode(self, work: Work, model):
        """The backbone's part of one source (split streams), or None when the model failed on it."""
        t0 = time.perf_counter()
        try:
            return self.attempt(work.source, lambda: model.encode_batch([work.image]), model_step=True)
        finally:
            self.seconds["model"] += time.perf_counter() - t0

    def run_images(self, entries: Iterable[Source | ListingProblem | Work], model, batch_size: int = 1,
                   prefetch_depth: int = 4, workers: int = 1) -> BatchOutcome:
        """Sources in any order, batched by size; decoding ahead, finishing behind the model.

        ``workers`` finishing threads. With more than one, single sources
        and a model that can split its step (``encode_batch``, then
        ``predict_coarse(images, encoded=...)``), this thread runs only the
        backbone and the finishing threads the rest of the model's step:
        on a small CPU the backbone is then no longer the one thread
        everything waits for, and the cores share the work evenly. Results
        are still recorded in source order.
        """
        batch_size = max(1, batch_size)
        workers = max(1, workers)
        split = workers > 1 and batch_size == 1 and hasattr(model, "encode_batch")
        pending: deque[tuple[Work, Future, float]] = deque()
        max_pending = 2 * batch_size + 2 * workers
        batch: list[Work] = []

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="icm-write") as writer:
            def drain(limit: int) -> None:
                self._drain(pending, limit)

            def flush() -> None:
                if not batch:
                    return
                t0 = time.perf_counter()
                if split:
                    encoded = [self._encode(work, model) for work in batch]
                    model_s = (time.perf_counter() - t0) / len(batch)
                    for work, enc in zip(batch, encoded):
                        if enc is not None:
                            pending.append((work, writer.submit(self._finish, work, None, model, enc), model_s))
                else:
                    preds = self._predict(batch, model)
                    model_s = (time.perf_counter() - t0) / len(batch)
                    for work, pred in zip(batch, preds):
                        if pred is not None:
                            pending.append((work, writer.submit(self._finish, work, pred, model), model_s))
                batch.clear()
                drain(max_pending)

            items = prefetch(self._prepared(entries), prefetch_depth, halt=self.halt)
            try:
                with self.handling_signals():
                    for work in items:
                        if self.halt.is_set():
                            break
                        if isinstance(work, ListingProblem):
                            self.fail(work, work.message)
                        elif work.done:
                            self.skip(work.source)
                        elif work.error is not None:
                            self.fail(work.source, work.error)
                        elif work.given is not None:  # the user's mask is the result: no model, in order
                            flush()
                            result = user_result(work.given)
                            pending.append((work, writer.submit(self._write, work, result, 0.0), 0.0))
                            drain(max_pending)
                        else:
                            if batch and (work.image.shape != batch[0].image.shape or len(batch) >= batch_size):
                                flush()
                            batch.append(work)
                            if len(batch) >= batch_size:
                                flush()
                    if not self.halt.is_set():
                        flush()
                    drain(0)  # what is predicted is written and recorded, even when stopping
            except BaseException:  # a second Ctrl-C: drop queued writes, let the running one finish
                for _, fut, _ in pending:
                    fut.cancel()
                raise
            finally:
                items.close()
        return self.outcome

    # ------------------------------------------------------------ sequences
    def _write(self, work: Work, result, finish_s: float) -> tuple:
        """Writer thread: render and write a finished frame. Returns what :meth:`_settle` expects."""
        if self.outcome.stopped:  # the disk filled up meanwhile: leave this frame to the rerun
            raise _Abandoned
        t0 = time.perf_counter()
        written = self._write_outputs(work, result)
        return result, written, finish_s + time.perf_counter() - t0, 0.0

    def _matte_ahead(self, work: Work, result) -> None:
        """Frames in order: a matte that can start solving before the writer reaches the frame is told its
        trimap's maker now (:class:`~icm_cli.alpha_temporal.SequenceMatte`), so solves overlap the model."""
        ahead = getattr(self.matte, "ahead", None)
        if ahead is not None and self.plan.config.needs_matte:
            ahead(work.image, lambda: self.plan.matte_trimap(result))

    def run_sequence(self, frames: Iterable[Work], model) -> BatchOutcome:
        """Frames in order; each is predicted with what the masks of the earlier ones say.

        Only the chain that must be serial stays on this thread: a frame's
        prediction waits for the previous frame's mask, and its full-size
        mask is passed on (``observe_encoded``) as soon as it is decided.
        ``model.encode`` (the backbone, and without a memory the frame's
        search too: neither needs an earlier mask) runs up to two frames
        ahead on its own thread, and rendering and writing run behind on the
        writer thread; records still follow frame order.
        """
        pending: deque[tuple[Work, Future, float]] = deque()
        queued: deque[tuple[Work, Future | None]] = deque()

        def drain(limit: int) -> None:
            self._drain(pending, limit)

        def attempt(work: Work, step: Callable[[], T], model_step: bool = False) -> T | None:
            """:meth:`attempt`, with the earlier frames still being written recorded first."""
            try:
                return step()
            except Exception as exc:
                caught = exc
            drain(0)

            def again():
                raise caught
            return self.attempt(work.source, again, model_step=model_step)

        def step(work: Work, encoding: Future | None) -> None:
            if work.error is not None:
                drain(0)
                self.fail(work.source, work.error)
                return
            t0 = time.perf_counter()
            encoded = attempt(work, encoding.result, model_step=True)
            if work.given is not None:  # a reference frame: the user's mask is its result and the next one's start
                if encoded is not None:
                    model.observe_encoded(encoded, work.given, index=work.index, given=True)
                    given = user_result(work.given)
                    self._matte_ahead(work, given)
                    pending.append((work, writer.submit(self._write, work, given, 0.0),
                                    time.perf_counter() - t0))
                    drain(2)
                return
            coarse = None if encoded is None else \
                attempt(work, lambda: model.predict_encoded(encoded), model_step=True)
            model_s = time.perf_counter() - t0
            self.seconds["model"] += model_s
            if coarse is None:
                return
            t1 = time.perf_counter()
            result = attempt(work, lambda: model.finish(work.image, coarse))
            if result is None:
                return
            model.observe_encoded(encoded, result.mask, index=work.index)  # the next frame's window, prior, memory
            self._matte_ahead(work, result)
            pending.append((work, writer.submit(self._write, work, result, time.perf_counter() - t1), model_s))
            drain(2)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="icm-write") as writer, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="icm-encode") as encoder:
            items = prefetch(frames, 3, halt=self.halt)
            try:
                with self.handling_signals():
                    for work in items:
                        if self.halt.is_set():
                            break
                        work = self._take_user_mask(work)
                        queued.append((work, None if work.error is not None
                                       else encoder.submit(model.encode, work.image)))
                        if len(queued) > 2:  # the backbone and the search stay up to two frames ahead
                            step(*queued.popleft())
                    while queued and not self.halt.is_set():
                        step(*queued.popleft())
                    drain(0)  # what is predicted is written and recorded, even when stopping
            except BaseException:
                for _, fut, _ in pending:
                    fut.cancel()
                raise
            finally:
                for _, fut in queued:
                    if fut is not None:
                        fut.cancel()
                items.close()
                close = getattr(self.matte, "close", None)
                if close is not None:
                    close()
        return self.outcome
