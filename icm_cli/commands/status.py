"""`icm status OUT [SOURCES...]`: what a (possibly sharded) propagate run has done, failed or left.

Reads every manifest in OUT (``manifest.jsonl`` and the shards'
``manifest.I-of-N.jsonl``) with :func:`icm_cli.runner.manifest.read_manifests`;
for each input the latest record wins. Exit code: 0 when nothing failed or
is pending, 1 otherwise, 2 when OUT holds no manifest to read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from icm_cli import options as opts

_SHOW = 20  # failures / pending inputs listed in the text report before "... and N more"


@dataclass
class RunStatus:
    """OUT's merged manifests, restricted to SOURCES when they were given."""

    state: object                                           # ManifestState
    latest: dict = field(default_factory=dict)               # input key -> SourceRecord
    pending: list[str] = field(default_factory=list)         # SOURCES with no record

    def with_status(self, status: str) -> list:
        return [r for r in self.latest.values() if r.status == status]

    @property
    def counts(self) -> dict[str, int]:
        """done: results icm computed, in the latest run or (``done_earlier`` of them) in an earlier one whose
        outputs a later run kept; skipped: outputs that were there with no recorded run making them."""
        from icm_cli.runner.manifest import result_counts

        return {**result_counts(self.latest.values()), "pending": len(self.pending)}

    @property
    def totals(self) -> dict[str, int]:
        """:attr:`counts` without the breakdown: every input once."""
        return {k: v for k, v in self.counts.items() if k != "done_earlier"}

    @property
    def complete(self) -> bool:
        counts = self.counts
        return counts["failed"] == 0 and counts["pending"] == 0

    def least_confident(self, n: int) -> list:
        """The ``n`` results with the lowest confidence (those without one are not ranked)."""
        from icm_cli.runner.manifest import least_confident

        return least_confident(self.latest.values(), n)


def read_status(folder: Path, sources: Optional[list] = None) -> RunStatus:
    """Merge the manifests of ``folder``; with ``sources`` (paths), judge exactly those inputs.

    A video file among ``sources`` stands for its frames, as ``propagate --video`` records them
    (``clip.mp4#0``, ``clip.mp4#1``, ...; :func:`clip_frames`).
    """
    from icm_cli.runner.manifest import input_key, read_manifests

    state = read_manifests(folder)
    if sources is None:
        return RunStatus(state, dict(state.latest))
    status = RunStatus(state)
    for path in (frame for source in sources for frame in clip_frames(Path(source), state)):
        key = input_key(str(path))
        if key in state.latest:
            status.latest[key] = state.latest[key]
        else:
            status.pending.append(str(path))
    return status


def clip_frames(path: Path, state) -> list[Path]:
    """The inputs a ``--video`` run of ``path`` records: ``path#0`` ... for a video file (as many as its
    container counts; without PyAV, as many as the manifest records), ``[path]`` for anything else."""
    from icm_cli.io import InputError
    from icm_cli.runner.manifest import input_key
    from icm_cli.video import is_video_file, probe_frame_count

    if not is_video_file(path):
        return [path]
    try:
        count = probe_frame_count(path)
    except InputError:  # PyAV missing or the file unreadable now: the frames the run recorded
        prefix = input_key(str(path)) + "#"
        indices = [key[len(prefix):] for key in state.latest if key.startswith(prefix)]
        count = 1 + max((int(i) for i in indices if i.isdigit()), default=-1)
    return [Path(f"{path}#{index}") for index in range(count)] or [path]


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
