"""Terminal output: one-line errors, progress bars, batch outcome.

Everything the commands print goes through here, so `--quiet`, `--json` and
non-terminal stdout behave the same in every command.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.markup import escape

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)


def error_line(message: str) -> None:
    """Print one error line to stderr (never a traceback)."""
    stderr.print(f"[bold red]error:[/] {escape(message)}")


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
    """Counts of a batch run; decides the exit code."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def fail(self, item: str, message: str, quiet: bool = False) -> None:
        self.failed.append((item, message))
        error_line(message)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self, what: str = "images", quiet: bool = False) -> None:
        secs = time.perf_counter() - self.started
        line = f"{self.done} {what} written, {self.skipped} skipped (already there), {len(self.failed)} failed in {secs:.1f}s"
        if self.failed:
            stderr.print(f"[bold red]{escape(line)}[/]")
        elif not quiet:
            stderr.print(escape(line))


def is_stdout_terminal() -> bool:
    return sys.stdout.isatty()
