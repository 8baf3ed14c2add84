"""Terminal output: one-line errors, progress bars, batch outcome.

Everything the commands print goes through here, so `--quiet`, `--json` and
non-terminal stdout behave the same in every command.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.markup import escape

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)


#: Set by ``icm --debug``: unexpected exceptions show their traceback instead of one line.
DEBUG = False

#: Exit code of a command stopped by an exception nobody expected (a bug); 0, 1, 2 and 130 mean what the README says.
EXIT_UNEXPECTED = 3


def one_line(message: str) -> str:
    """``message`` with its line breaks folded, so an error is always exactly one line."""
    return re.sub(r"\s*[\r\n]+\s*", " | ", str(message).strip())


def error_line(message: str) -> None:
    """Print one error line to stderr (never a traceback)."""
    stderr.print(f"[bold red]error:[/] {escape(one_line(message))}")


def unexpected(exc: BaseException, where: str = "") -> str:
    """One line for an exception that is not the user's fault, with the way to learn more."""
    text = " ".join(str(exc).split())
    prefix = f"{where}: " if where else ""
    detail = f": {text}" if text else ""
    return f"{prefix}unexpected {type(exc).__name__}{detail} (run with icm --debug for the traceback)"


def count(n: int, plural: str) -> str:
    """``count(1, "images")`` -> ``"1 image"``, ``count(2, "images")`` -> ``"2 images"``."""
    if n == 1 and plural.endswith("s"):
        return f"1 {plural[:-1]}"
    return f"{n} {plural}"


def info_line(message: str, quiet: bool = False) -> None:
    if not quiet:
        stderr.print(escape(message))


class _Rate(TextColumn):
    """Items per second since the task started."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # noqa: D401 - rich API
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return f"{rate:5.2f} img/s"


@contextmanager
def progress_bar(total: int | None, description: str, enabled: bool):
    """Yield ``advance(n=1)``; draws a rich bar only when enabled and stderr is a terminal."""
    if not enabled or not stderr.is_terminal:
        yield lambda n=1: None
        return
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
               MofNCompleteColumn(), _Rate(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=stderr, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


@dataclass
class BatchOutcome:
    """Counts of a batch run; decides the exit code and prints the summary.

    ``started`` is taken when the command starts, so the reported time
    includes loading the model and building the reference context.
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
    #: Print each failure as it happens (off on Ray workers: the driver prints them, once).
    report: bool = True

    def fail(self, item: str, message: str) -> None:
        self.failed.append((item, one_line(message)))
        if self.report:
            error_line(message)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 128 + self.interrupted  # 130 for Ctrl-C, 143 for SIGTERM, as shells report them
        if self.stdout_closed:
            return 141  # as a shell reports a writer whose reader closed the pipe
        return 1 if self.failed or self.stopped else 0

    def summary(self, what: str = "images", quiet: bool = False) -> None:
        if self.stdout_closed:
            return
        if self.mask_like and not quiet:
            stderr.print(escape(mask_like_warning(self.mask_like)), style="yellow")
        secs = time.perf_counter() - self.started
        empty = f" ({self.empty} empty: object not found)" if self.empty else ""
        line = (f"{count(self.done, what)} written{empty}, {self.skipped} skipped (already there), "
                f"{len(self.failed)} failed in {secs:.1f}s")
        if self.interrupted or self.stopped:
            # Always shown, even with --quiet: the run did not cover every source.
            why = "interrupted" if self.interrupted else f"stopped: {self.stopped}"
            stderr.print(f"[bold red]{escape(one_line(why + ': ' + line))}; rerun the same command to finish the rest "
                         f"(finished outputs are skipped)[/]")
            return
        if self.failed:
            stderr.print(f"[bold red]{escape(line)}[/]")
        elif not quiet:
            stderr.print(escape(line))


def mask_like_warning(paths: list[str]) -> str:
    """The warning about sources that look like masks: their names, and an ``--exclude`` that leaves out
    just them (a pattern from what their names share, like ``'*_mask.png'``; never ``'*.png'``, which would
    leave out PNG photos too)."""
    import os

    names = sorted({os.path.basename(p) for p in paths})
    n = len(paths)
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    looks = "sources look like masks" if n != 1 else "source looks like a mask"
    them = "them" if n != 1 else "it"
    return (f"warning: {n} {looks}, not a photo (grey, two values): {shown}; {exclude_for(names)} leaves "
            f"{them} out")


def exclude_for(names: list[str]) -> str:
    """``--exclude`` options matching ``names`` (file names) and, as far as names tell, nothing else."""
    import os

    if len(names) == 1:
        return f"--exclude '{names[0]}'"
    stems, suffixes = zip(*(os.path.splitext(n) for n in names))
    suffix = suffixes[0] if len(set(s.lower() for s in suffixes)) == 1 else ".*"
    tail = os.path.commonprefix([s[::-1] for s in stems])[::-1]
    head = os.path.commonprefix(list(stems))
    # A shared part that is only digits or punctuation ('0', '_') would match photos as well.
    if len(tail) >= 2 and any(c.isalpha() for c in tail):
        return f"--exclude '*{tail}{suffix}'"
    if len(head) >= 2 and any(c.isalpha() for c in head):
        return f"--exclude '{head}*{suffix}'"
    if len(names) <= 3:
        return " ".join(f"--exclude '{n}'" for n in names)
    return "--exclude with a pattern of their names"


@contextmanager
def status_spinner(message: str, enabled: bool):
    """A spinner with ``message`` on stderr while a slow set-up step runs (terminals only)."""
    if not enabled or not stderr.is_terminal:
        yield
        return
    with stderr.status(escape(message), spinner="dots"):
        yield


def warning_line(message: str) -> None:
    """One warning line on stderr."""
    stderr.print(f"[bold yellow]warning:[/] {escape(one_line(message))}")


def invocation(ctx) -> list[str]:
    """The command line as typed (``icm propagate ...``), kept by the CLI in the context's meta."""
    return ["icm", *ctx.meta.get("icm.argv", [ctx.info_name or ""])]

