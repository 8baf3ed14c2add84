"""Small pieces the file commands (trimap, refine, matte, eval) share: finding inputs, refusing early."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import typer

from icm_cli.console import error_line


def sources_or_exit(items: Sequence[str], *, recursive: bool = False, include: Sequence[str] = (),
                    exclude: Sequence[str] = (), avoid: Sequence[Path] = ()) -> list:
    """Every input of ``items`` (sources and unreadable-folder problems); exit 2 with a hint when there is none."""
    from icm_cli.sources import SourceError, SourceFinder, no_sources_hint

    try:
        finder = SourceFinder(items, recursive=recursive, include=include, exclude=exclude, avoid=avoid)
        entries = list(finder)
    except SourceError as exc:
        error_line(str(exc))
        raise typer.Exit(2)
    if not entries:
        error_line(no_sources_hint(finder))
        raise typer.Exit(2)
    return entries


def output_folder_or_exit(folder: Path) -> None:
    """Create ``folder`` and check it is writable (exit 2 with one line if not); old temp files are removed."""
    from icm_cli import io

    try:
        io.ensure_output_folder(folder)
    except io.InputError as exc:
        error_line(str(exc))
        raise typer.Exit(2)
    io.remove_stale_temp_files(folder)
