"""Small pieces the file commands (trimap, refine, matte, eval) share: finding inputs, refusing early."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import typer

from icm_cli.console import error_line


def sources_or_exit(items: Sequence[str], *, recursive: bool = False, include: Sequence[str] = (),
                    exclude: Sequence[str] = (), avoid: Sequence[Path] = (), quiet: bool = False) -> list:
    """Every input of ``items`` (sources and unreadable-folder problems); exit 2 with a hint when there is none.

    Sub-folders passed over without ``--recursive`` are named in a note (unless ``quiet``).
    """
    from icm_cli.sources import SourceError, SourceFinder, no_sources_hint, skipped_folders_note

    try:
        finder = SourceFinder(items, recursive=recursive, include=include, exclude=exclude, avoid=avoid)
        entries = list(finder)
    except SourceError as exc:
        error_line(str(exc))
        raise typer.Exit(2)
    if not entries:
        error_line(no_sources_hint(finder))
        raise typer.Exit(2)
    note = skipped_folders_note(finder)
    if note and not quiet:
        note_line(note)
    return entries


def note_line(message: str) -> None:
    """One ``note:`` line on stderr: something the user may not expect, not an error."""
    from rich.markup import escape

    from icm_cli.console import one_line, stderr

    stderr.print(f"[bold]note:[/] {escape(one_line(message))}")


#: Output names that look like a file: OUT is a folder, so ``-o cut.png`` would make a folder "cut.png".
_FILE_LIKE = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".mov", ".mp4", ".webm", ".mkv",
              ".avi", ".m4v"}


def check_output_name(output: Path | None) -> None:
    """Refuse ``-o cut.png`` / ``-o out.mov`` / ``-o existing.txt`` (exit 2, one line): OUT is a folder of outputs,
    not a file. Called before anything is created; the folders the command then creates for OUT are removed
    when it ends without writing a file in them (a refused run leaves nothing behind)."""
    if output is None:
        return
    output = Path(output)
    in_the_way = next((p for p in (output, *output.parents) if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        what = "is a file" if in_the_way == output else f"is inside {in_the_way}, which is a file"
        error_line(f"-o {output}: {what}; OUT must be a folder (name a new or existing folder, e.g. "
                   f"-o {output.with_suffix('') if in_the_way == output and output.suffix else 'out'}/)")
        raise typer.Exit(2)
    _remove_if_left_empty(output)
    suffix = output.suffix.lower()
    if suffix not in _FILE_LIKE or output.is_dir():
        return
    if suffix in {".mov", ".mp4", ".webm", ".mkv", ".avi", ".m4v"}:
        hint = (f"name a folder (-o {output.with_suffix('')}/); for videos of the results give --video and "
                "--save-video cutout,mask: they are written as OUT/cutout.mov, OUT/mask.mov")
    else:
        hint = f"name a folder (-o {output.with_suffix('')}/): each result is written inside it under its own name"
    error_line(f"-o {output}: OUT is a folder, not a file; {hint}")
    raise typer.Exit(2)


def output_folder_or_exit(folder: Path) -> None:
    """Create ``folder`` and check it is writable (exit 2 with one line if not); old temp files are removed."""
    from icm_cli import io

    try:
        io.ensure_output_folder(folder)
    except (io.InputError, io.OutputError) as exc:
        error_line(str(exc))
        raise typer.Exit(2)
    io.remove_stale_temp_files(folder)


#: Folders this command created for OUT, to remove when it ends with nothing written in them.
_CREATED_FOR_OUTPUT: list[Path] = []


def _remove_if_left_empty(output: Path) -> None:
    """Note the topmost folder of ``output`` that does not exist yet: the command creates it, and
    :func:`remove_unused_output_folders` removes it again if no file was written in it."""
    created = None
    for path in (output, *output.parents):
        if path.exists() or path.is_symlink():
            break
        created = path
    if created is not None:
        _CREATED_FOR_OUTPUT.append(created)


def remove_unused_output_folders() -> None:
    """When a command ends (the CLI's guard calls this): remove the folders it created for OUT in which
    no file was written. Only ``rmdir`` is used, which never removes a folder holding anything, so a folder
    the user had, or one another run has since written into, stays."""
    while _CREATED_FOR_OUTPUT:
        _remove_empty_tree(_CREATED_FOR_OUTPUT.pop())


def _remove_empty_tree(top: Path) -> None:
    import os

    if not top.is_dir() or top.is_symlink():
        return
    for folder, _dirs, files in os.walk(top):
        if files:
            return  # the run wrote something: keep every folder
    for folder, _dirs, _files in os.walk(top, topdown=False):
        try:
            os.rmdir(folder)
        except OSError:
            return


def record_run_or_exit(ctx, output: Path, settings: dict, entries: Sequence, targets, *, overwrite: bool,
                       references: list | None = None) -> None:
    """The settings check and run record of a file command (:mod:`icm_cli.runner.run_check`): exit 2
    with one line when OUT holds results of other settings (without ``--overwrite``) or its manifest
    cannot be written."""
    from icm_cli import io
    from icm_cli.console import invocation
    from icm_cli.runner.run_check import OtherSettings, check_and_record
    from icm_cli.sources import Source

    def any_done() -> bool:
        return any(t.exists() for e in entries if isinstance(e, Source) for t in targets(e))

    try:
        check_and_record(output, settings, command=invocation(ctx), overwrite=overwrite, any_done=any_done,
                         references=references)
    except (OtherSettings, io.OutputError) as exc:
        error_line(str(exc))
        raise typer.Exit(2)
