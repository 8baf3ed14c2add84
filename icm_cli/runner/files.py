"""The per-file loop of `trimap`, `refine` and `matte`: one input file -> its outputs, no model stream."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from icm_cli import io
from icm_cli.runner.batch import failure_message
from icm_cli.runner.outcome import BatchOutcome, Reporter
from icm_cli.runner.signals import Interrupted, stop_signals
from icm_cli.sources import ListingProblem, Source


def process_files(entries: Iterable[Source | ListingProblem], targets: Callable[[Source], list[Path]],
                  work: Callable[[Source], None], *, output: Path, overwrite: bool, description: str,
                  total: int | None = None, outcome: BatchOutcome | None = None,
                  reporter: Reporter | None = None) -> BatchOutcome:
    """For each source: skipped when every path of ``targets(source)`` exists (unless
    ``overwrite``), else ``work(source)`` writes the outputs. A problem fails that file
    alone (one line), a full disk stops the run; errors are judged as the batch runner
    judges them (:func:`~icm_cli.runner.batch.failure_message`). Ctrl-C or SIGTERM stops
    at once (the file being made is dropped; what was written stays) and the outcome says
    so, with its counts (exit 130 / 143).

    ``reporter`` (else ``outcome``'s) hears of each failure and draws the progress
    (``description``, ``total``); this loop prints nothing itself."""
    if outcome is None:
        outcome = BatchOutcome(reporter=reporter) if reporter is not None else BatchOutcome()
    elif reporter is not None:
        outcome.reporter = reporter
    reporter = outcome.reporter
    with reporter.progress(total, description) as advance, stop_signals(at_once=True):
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
                    outcome.fail(str(entry.path), failure_message(exc, entry.path, debug=reporter.debug))
                    reason = io.fatal_write_error(exc)
                    if reason:
                        outcome.stopped = f"cannot write to {output} ({reason})"
                        break
                advance()
        except Interrupted as stop:  # the file being made is dropped (writes are atomic); a rerun makes it
            outcome.interrupted = stop.signum
    return outcome
