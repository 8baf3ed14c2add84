"""The per-file loop of `trimap`, `refine` and `matte`: one input file -> its outputs, no model stream."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

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
    judges them (:func:`~icm_cli.runner.batch.failure_message`)."""
    outcome = outcome or BatchOutcome()
    with progress_bar(total, description, enabled=not quiet) as advance:
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
    return outcome
