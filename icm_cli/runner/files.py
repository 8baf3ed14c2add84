"""The per-file loop of `trimap`, `refine` and `matte`: one input file -> its outputs, no model stream."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from icm_cli import io
from icm_cli.console import BatchOutcome, progress_bar
from icm_cli.runner.batch import failure_message
from icm_cli.sources import ListingProblem, Source


def process_files(entries: Iterable[Source | ListingProblem], targets: Callable[[Source], list[Path]],
                  work: Callable[[Source], None], *, output: Path, overwrite: bool, quiet: bool,
                  description: str, total: int | None = None, outcome: BatchOutcome | None = None) -> BatchOutcome:
    """For each source: skipped when every path of ``targets(source)`` exists (unless
    ``overwrite``), else ``work(source)`` writes the outputs. A problem fails that file
    alone (one line), a full disk stops the run; errors are judged as the batch runner
    judges them (:func:`~icm_cli.runner.batch.failure_message`). Ctrl-C or SIGTERM stops
    at once (the file being made is dropped; what was written stays) and the outcome says
    so, with its counts (exit 130 / 143)."""
    outcome = outcome or BatchOutcome()
    with progress_bar(total, description, enabled=not quiet) as advance, _interruptible():
        try:
            for entry in entries:
                if isinstance(entry, ListingProblem):
                    outcome.fail(str(entry.path), entry.message)
                    advance()
                    continue
                if not overwrite and all(t.exists() for t in targets(entry)):
                    outcome.skipped += 1
                    advance()
                    continue
                try:
                    work(entry)
                    outcome.done += 1
                except Exception as exc:
                    outcome.fail(str(entry.path), failure_message(exc, entry.path))
                    reason = io.fatal_write_error(exc)
                    if reason:
                        outcome.stopped = f"cannot write to {output} ({reason})"
                        break
                advance()
        except _Interrupted as stop:  # the file being made is dropped (writes are atomic); a rerun makes it
            outcome.interrupted = stop.signum
    return outcome


class _Interrupted(BaseException):
    """Ctrl-C or SIGTERM during a file loop (a BaseException, so no ``except Exception`` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Stop:
    signum = 0


@contextmanager
def _interruptible() -> Iterator[_Stop]:
    """SIGINT/SIGTERM raise :class:`_Interrupted` in the loop (main thread only; elsewhere nothing changes)."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.signum:  # already stopping: a second press is not allowed to break the summary
            return
        stop.signum = signum
        raise _Interrupted(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):
            pass
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
