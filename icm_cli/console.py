"""Terminal output: one-line errors, progress bars, the batch summary (:class:`ConsoleReporter`).

Everything the commands print goes through here, so `--quiet`, `--json` and
non-terminal stdout behave the same in every command.
"""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.markup import escape

# The run's state and the reporter interface live with the runner, which prints nothing; one_line and
# unexpected word its failures (kept importable from here, where the commands look for them).
from icm_cli.runner.outcome import BatchOutcome, Reporter, one_line, unexpected  # noqa: F401

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)


#: Set by ``icm --debug``: unexpected exceptions show their traceback instead of one line.
DEBUG = False

#: Exit code of a command stopped by an exception nobody expected (a bug); 0, 1, 2 and 130 mean what the README says.
EXIT_UNEXPECTED = 3


def error_line(message: str) -> None:
    """Print one error line to stderr (never a traceback)."""
    stderr.print(f"[bold red]error:[/] {escape(one_line(message))}")


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


class ConsoleReporter(Reporter):
    """The command line's :class:`~icm_cli.runner.outcome.Reporter`: failures as ``error:`` lines, the
    summary, a progress bar on a terminal. ``quiet`` leaves out what is not a problem; ``debug`` is
    ``icm --debug`` (an unexpected error shows its traceback)."""

    def __init__(self, quiet: bool = False, debug: bool | None = None) -> None:
        self.quiet = quiet
        self.debug = DEBUG if debug is None else debug

    def failed(self, message: str) -> None:
        error_line(message)

    def error(self, message: str) -> None:
        error_line(message)

    def progress(self, total: int | None, description: str):
        return progress_bar(total, description, enabled=not self.quiet)

    def summary(self, outcome: BatchOutcome, what: str = "images") -> None:
        if outcome.stdout_closed:
            return
        quiet = self.quiet
        if outcome.mask_like and not quiet:
            stderr.print(escape(mask_like_warning(outcome.mask_like)), style="yellow")
        secs = outcome.seconds
        empty = f" ({outcome.empty} empty: object not found)" if outcome.empty else ""
        line = (f"{count(outcome.done, what)} written{empty}, {outcome.skipped} skipped (already there), "
                f"{len(outcome.failed)} failed in {secs:.1f}s")
        if outcome.interrupted or outcome.stopped:
            # Always shown, even with --quiet: the run did not cover every source.
            why = "interrupted" if outcome.interrupted else f"stopped: {outcome.stopped}"
            stderr.print(f"[bold red]{escape(one_line(why + ': ' + line))}; rerun the same command to finish the rest "
                         f"(finished outputs are skipped)[/]")
            return
        if outcome.failed:
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

