"""A batch run's state (:class:`BatchOutcome`) and what it tells its user (:class:`Reporter`).

The runner prints nothing: it counts into the outcome and speaks through
the reporter it is given. The command line's reporter
(``icm_cli.console.ConsoleReporter``) shows it with rich; the base class
here keeps quiet (library callers, Ray workers, whose driver reports each
failure once); tests collect what they need.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator


def one_line(message: str) -> str:
    """``message`` with its line breaks folded, so an error is always exactly one line."""
    return re.sub(r"\s*[\r\n]+\s*", " | ", str(message).strip())


def unexpected(exc: BaseException, where: str = "") -> str:
    """One line for an exception that is not the user's fault, with the way to learn more."""
    text = " ".join(str(exc).split())
    prefix = f"{where}: " if where else ""
    detail = f": {text}" if text else ""
    return f"{prefix}unexpected {type(exc).__name__}{detail} (run with icm --debug for the traceback)"


class Reporter:
    """What a run tells its user. This base says nothing; the command line shows it with rich.

    ``debug``: an unexpected error is raised (with its traceback) instead of
    failing its source with one line (``icm --debug``).
    """

    debug: bool = False

    def failed(self, message: str) -> None:
        """A source failed (one line, already folded); the batch goes on."""

    def error(self, message: str) -> None:
        """A problem of the run itself, not of one source (the manifest cannot be written)."""

    def summary(self, outcome: "BatchOutcome", what: str) -> None:
        """The run is over: ``outcome``'s counts, ``what`` naming its outputs (``"images"``, ``"trimaps"``)."""

    @contextmanager
    def progress(self, total: int | None, description: str) -> Iterator[Callable[[int], None]]:
        """Yield ``advance(n=1)``, told of each finished source (``total`` when known in advance)."""
        yield lambda n=1: None


@dataclass
class BatchOutcome:
    """Counts of a batch run; decides the exit code. Failures are told to ``reporter`` as they happen.

    ``started`` is taken when the outcome is made (by a command, when it
    starts), so the reported time includes loading the model and building
    the reference context.
    """

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    #: The signal (SIGINT 2, SIGTERM 15) that stopped the run early, or 0.
    interrupted: int = 0
    #: Why the run stopped before its sources ran out (a full disk), or None.
    stopped: str | None = None
    #: Results whose mask holds no object pixel ("object not found").
    empty: int = 0
    #: Sources that look like masks (grey, two values): probably not meant as sources.
    mask_like: list[str] = field(default_factory=list)
    #: The reader of stdout (``--json | head``) went away; the run stopped quietly.
    stdout_closed: bool = False
    #: Who hears of each failure as it happens (the base :class:`Reporter` keeps quiet).
    reporter: Reporter = field(default_factory=Reporter, repr=False, compare=False)

    def fail(self, item: str, message: str) -> None:
        self.failed.append((item, one_line(message)))
        self.reporter.failed(one_line(message))

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 128 + self.interrupted  # 130 for Ctrl-C, 143 for SIGTERM, as shells report them
        if self.stdout_closed:
            return 141  # as a shell reports a writer whose reader closed the pipe
        return 1 if self.failed or self.stopped else 0

    @property
    def seconds(self) -> float:
        """Time since the outcome was made."""
        return time.perf_counter() - self.started
