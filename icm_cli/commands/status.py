"""`icm status OUT [SOURCES...]`: what a (possibly sharded) propagate run has done, failed or left.

Reads every manifest in OUT (``manifest.jsonl`` and the shards'
``manifest.I-of-N.jsonl``) with :func:`icm_cli.runner.status.read_status`,
where library callers find it too; this command only prints. Exit code: 0
when nothing failed or is pending, 1 otherwise, 2 when OUT holds no manifest
to read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from icm_cli import options as opts
from icm_cli.runner.status import RunStatus, clip_frames, read_status  # noqa: F401 - kept importable from here

_SHOW = 20  # failures / pending inputs listed in the text report before "... and N more"


def status(
    output: Annotated[Path, typer.Argument(metavar="OUT", show_default=False,
                                           help="The -o folder of `icm propagate` (one run or all its shards).")],
    sources: Annotated[Optional[List[str]], typer.Argument(
        metavar="SOURCES", show_default=False,
        help="The run's SOURCES, to count what is still pending (- reads paths from stdin); a video file "
             "counts its frames.")] = None,
    recursive: opts.RecursiveSources = False,
    include: opts.Include = [],
    exclude: opts.Exclude = [],
    worst: Annotated[int, typer.Option(
        "--worst", metavar="N", callback=opts.at_least(0, "--worst"),
        help="Also list the N least confident results (the ones to check first).")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the report.")] = False,
) -> None:
    """Count done, failed, skipped and pending sources of a run from its manifests.

    Exit code 0 when nothing failed or is pending, 1 otherwise, 2 when OUT has no manifest.

    Example: [bold]icm status out/ frames/ --worst 10[/]
    """
    from rich.markup import escape

    from icm_cli.console import error_line, stdout
    from icm_cli.runner.outputs import OutputPlan
    from icm_cli.sources import Source, SourceError, SourceFinder

    listed = None
    if sources:
        try:
            finder = SourceFinder(sources, recursive=recursive, include=include, exclude=exclude,
                                  avoid=OutputPlan(output).written_folders)
            listed = [e.path for e in finder if isinstance(e, Source)]
        except SourceError as exc:
            error_line(str(exc))
            raise typer.Exit(2)
    result = read_status(output, listed)
    state = result.state
    for problem in state.unreadable_files:
        error_line(problem)
    if not state.manifests and listed is None:
        error_line(f"{output}: no manifest.jsonl or manifest.I-of-N.jsonl here (give the -o folder of icm propagate)")
        raise typer.Exit(2)
    from icm_cli.runner.run_check import file_command_only, not_a_propagate_folder
    if file_command_only(state):
        error_line(not_a_propagate_folder(output, file_command_only(state)))
        raise typer.Exit(2)
    counts = result.counts
    failures = [{"input": r.input, "stem": r.stem, "error": r.error} for r in result.with_status("failed")]
    worst_records = result.least_confident(worst) if worst else []
    empty = sum(1 for r in result.latest.values() if r.empty and (r.status == "done" or r.made_by))
    if json_out:
        print(json.dumps({"output": str(output), "manifests": state.manifests, **counts, "empty": empty,
                          "complete": result.complete and not state.unreadable_files, "failures": failures,
                          "pending_inputs": result.pending, "unreadable_lines": state.unreadable_lines,
                          "unreadable_manifests": state.unreadable_files,
                          "worst": [{"input": r.input, "stem": r.stem, "status": r.status,
                                     "confidence": r.confidence} for r in worst_records]}, ensure_ascii=False))
    else:
        total = sum(result.totals.values())
        of = f" of {total} sources" if listed is not None else ""
        n = len(state.manifests)
        details = []
        if counts["done_earlier"]:
            k = counts["done_earlier"]
            details.append(f"{k} of them in {'an earlier run' if k == 1 else 'earlier runs'}")
        if empty:
            details.append(f"{empty} empty: object not found")
        detail = f" ({'; '.join(details)})" if details else ""
        stdout.print(escape(f"{output}: {counts['done']} done{detail}, {counts['skipped']} skipped (already "
                            f"there), {counts['failed']} failed, {counts['pending']} pending{of} "
                            f"({n} manifest{'s' if n != 1 else ''})"))
        _listing(stdout, "failed", [failure_line(f["input"], f["error"]) for f in failures], escape,
                 style="bold red")
        _listing(stdout, "pending", result.pending, escape)
        if worst:
            width = max((len(str(r.stem)) for r in worst_records), default=0)
            _listing(stdout, f"least confident ({len(worst_records)} of {worst} asked)",
                     [f"{r.confidence:.2f}  {str(r.stem):{width}s}  {r.input}" for r in worst_records], escape,
                     limit=worst)
        if state.unreadable_lines:
            stdout.print(escape(f"{state.unreadable_lines} manifest line(s) could not be read (cut short?) "
                                "and were ignored"))
    raise typer.Exit(0 if result.complete and not state.unreadable_files else 1)


def failure_line(source: str, error: str | None) -> str:
    """``<source>: <reason>``, the source named once: an error that starts with the path as the run
    was given it (``data/broken/x.png: empty file``) has that path replaced by the absolute one."""
    import os

    error = str(error or "no reason recorded")
    head, sep, reason = error.partition(": ")
    if sep and head:
        given = os.path.normpath(head)
        if os.path.normpath(source) == given or os.path.normpath(source).endswith(os.sep + given.lstrip(os.sep)):
            return f"{source}: {reason}"
    return f"{source}: {error}"


def _listing(console, title: str, lines: list[str], escape, style: str = "bold", limit: int = _SHOW) -> None:
    if not lines:
        return
    console.print(f"[{style}]{escape(title)}:[/]")
    for line in lines[:limit]:
        console.print(f"  {escape(line)}")
    if len(lines) > limit:
        console.print(f"  ... and {len(lines) - limit} more (--json lists all)")
