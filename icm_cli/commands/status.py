"""`icm status OUT [SOURCES...]`: what a (possibly sharded) propagate run has done, failed or left.

Reads every manifest in OUT (``manifest.jsonl`` and the shards'
``manifest.I-of-N.jsonl``); for each input the latest record wins (by its
``time``, then by file age and line order for records written before
records carried one). Exit code: 0 when nothing failed or is pending, 1
otherwise, 2 when OUT holds no manifest to read.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from icm_cli.console import error_line, stdout

_SHARD_MANIFEST = re.compile(r"^manifest\.\d+-of-\d+\.jsonl$")
_SHOW = 20  # failures / pending inputs listed in the text report before "... and N more"


def manifest_files(folder: Path) -> list[Path]:
    """``manifest.jsonl`` and ``manifest.I-of-N.jsonl`` in ``folder``, oldest first."""
    try:
        found = [p for p in folder.iterdir()
                 if p.is_file() and (p.name == "manifest.jsonl" or _SHARD_MANIFEST.match(p.name))]
    except OSError:
        return []
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def _when(record: dict) -> float:
    try:
        return datetime.fromisoformat(str(record["time"])).timestamp()
    except (KeyError, TypeError, ValueError):
        return float("-inf")  # records without a time are older than any with one


def _key(path: str) -> str:
    return os.path.normpath(path)


@dataclass
class RunStatus:
    """The merged state of OUT's manifests (restricted to SOURCES when they were given)."""

    manifests: list[str] = field(default_factory=list)
    latest: dict[str, dict] = field(default_factory=dict)   # input -> latest record
    pending: list[str] = field(default_factory=list)        # SOURCES with no record
    unreadable_lines: int = 0

    def with_status(self, status: str) -> list[dict]:
        return [r for r in self.latest.values() if r.get("status") == status]

    @property
    def counts(self) -> dict[str, int]:
        return {"done": len(self.with_status("done")), "skipped": len(self.with_status("skipped")),
                "failed": len(self.with_status("failed")), "pending": len(self.pending)}

    @property
    def complete(self) -> bool:
        counts = self.counts
        return counts["failed"] == 0 and counts["pending"] == 0


def read_status(folder: Path, sources: Optional[list[Path]] = None) -> RunStatus:
    """Merge the manifests of ``folder``; with ``sources``, judge exactly those inputs."""
    state = RunStatus()
    ordered = []
    for rank, path in enumerate(manifest_files(folder)):
        state.manifests.append(path.name)
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line_no, line in enumerate(fh):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    key = _key(str(record["input"]))
                except (ValueError, KeyError, TypeError):  # a line cut short by a kill
                    state.unreadable_lines += 1
                    continue
                ordered.append(((_when(record), rank, line_no), key, record))
    ordered.sort(key=lambda entry: entry[0])
    latest = {key: record for _, key, record in ordered}
    if sources is None:
        state.latest = latest
        return state
    by_abspath = {os.path.abspath(k): k for k in latest}
    for path in sources:
        key = _key(str(path))
        found = key if key in latest else by_abspath.get(os.path.abspath(key))
        if found is None:
            state.pending.append(str(path))
        else:
            state.latest[found] = latest[found]
    return state


def status(
    output: Path = typer.Argument(..., help="The -o folder of `icm propagate` (one run or all its shards)."),
    sources: List[str] = typer.Argument(None, help="The run's SOURCES, to count what is still pending (- reads paths from stdin)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders of SOURCES, as the run did."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of the report."),
    worst: int = typer.Option(0, "--worst", min=0, help="Also list the N least confident results (lowest first), to check or rerun them."),
) -> None:
    """Count done, failed, skipped and pending sources of a run from its manifests.

    Exit code 0 when nothing failed or is pending, 1 otherwise, 2 when OUT has no manifest.

    Example: [bold]icm status out/ frames/[/]
    """
    from icm_cli import io

    listed = list(io.iter_sources(sources, recursive=recursive)) if sources else None
    state = read_status(output, listed)
    if not state.manifests and listed is None:
        error_line(f"{output}: no manifest.jsonl or manifest.I-of-N.jsonl here "
                   "(give the -o folder of icm propagate)")
        raise typer.Exit(2)
    counts = state.counts
    failures = [{"input": r.get("input"), "stem": r.get("stem"), "error": r.get("error")}
                for r in state.with_status("failed")]
    worst_rows = None
    if worst:
        from icm_cli.review.manifest import worst_results
        worst_rows = worst_results(output, worst, list(state.latest) if listed is not None else None)
    if json_out:
        print(json.dumps({"output": str(output), "manifests": state.manifests, **counts,
                          "complete": state.complete, "failures": failures, "pending_inputs": state.pending,
                          "unreadable_lines": state.unreadable_lines,
                          **({"worst": worst_rows} if worst_rows is not None else {})}, ensure_ascii=False))
    else:
        total = sum(counts.values())
        of = f" of {total} sources" if listed is not None else ""
        stdout.print(escape(f"{output}: {counts['done']} done, {counts['skipped']} skipped (already there), "
                            f"{counts['failed']} failed, {counts['pending']} pending{of} "
                            f"({len(state.manifests)} manifest{'s' if len(state.manifests) != 1 else ''})"))
        if failures:
            stdout.print("[bold red]failed:[/]")
            for f in failures[:_SHOW]:
                reason = str(f["error"] or "no reason recorded")
                line = reason if reason.startswith(str(f["input"])) else f"{f['input']}: {reason}"
                stdout.print(f"  {escape(line)}")
            if len(failures) > _SHOW:
                stdout.print(f"  ... and {len(failures) - _SHOW} more (--json lists all)")
        if state.pending:
            stdout.print("[bold]pending:[/]")
            for p in state.pending[:_SHOW]:
                stdout.print(f"  {escape(p)}")
            if len(state.pending) > _SHOW:
                stdout.print(f"  ... and {len(state.pending) - _SHOW} more (--json lists all)")
        if state.unreadable_lines:
            stdout.print(escape(f"{state.unreadable_lines} manifest line(s) could not be read (cut short?) and were ignored"))
        if worst_rows is not None:
            from icm_cli.review.manifest import worst_lines
            stdout.print(f"[bold]least confident {len(worst_rows)}:[/]" if worst_rows else
                         "least confident: no result has a confidence yet")
            for line in worst_lines(worst_rows):
                stdout.print(f"  {escape(line)}")
    raise typer.Exit(0 if state.complete else 1)
