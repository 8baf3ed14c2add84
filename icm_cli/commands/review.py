"""`icm review OUT`: one HTML contact sheet of a propagate run, least confident results first."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from icm_cli import options as opts

_SHOW_PROBLEMS = 5


def review(
    output: Annotated[Path, typer.Argument(metavar="OUT", show_default=False,
                                           help="The -o folder of `icm propagate` (one run, its reruns and shards).")],
    page: Annotated[Optional[Path], typer.Option(
        "--output", "-o", metavar="HTML", show_default=False,
        help="The HTML file to write (default: OUT/review.html).")] = None,
    sort: Annotated[str, typer.Option(
        "--sort", metavar="KEY",
        help="confidence (failed first, then least confident; no confidence last) or name.")] = "confidence",
    limit: Annotated[Optional[int], typer.Option(
        "--limit", metavar="N", callback=opts.at_least(0, "--limit"), show_default=False,
        help="Show only the first N results in that order.")] = None,
    below: Annotated[float, typer.Option(
        "--below", metavar="C", callback=opts.in_unit_range("--below"),
        help="Confidence under which a result counts as low (colours, counts).")] = 0.5,
    old_threshold: Annotated[Optional[float], typer.Option(
        "--threshold", hidden=True, callback=opts.in_unit_range("--threshold"), show_default=False)] = None,
    workers: Annotated[int, typer.Option(
        "--workers", metavar="N", callback=opts.at_least(0, "--workers"),
        help="Threads making thumbnails (0 = one per CPU, at most 8).")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary line unless something went wrong.")] = False,
) -> None:
    """Write a static HTML page to check a run's results by eye: per source its mask over the image, the heat map, the confidence, status and errors, least confident first.

    Thumbnails go to OUT/.review/thumbs and are reused while their files are unchanged. The page needs no server and no network. Exit code 0 when every picture could be made, 1 when some files named by the manifest were missing or unreadable, 2 when OUT has no manifest or the page cannot be written.

    Example: [bold]icm review out/ && xdg-open out/review.html[/]
    """
    from rich.markup import escape

    from icm_cli.console import error_line, stderr, stdout, warning_line
    from icm_cli.review import ReviewError, build_review

    if old_threshold is not None:
        warning_line("--threshold is now --below here (--threshold is a probability in propagate); "
                     "the old name goes in the next release")
        below = old_threshold
    try:
        report = build_review(output, page, sort=sort, limit=limit, threshold=below, workers=workers)
    except ReviewError as exc:
        error_line(str(exc))
        raise typer.Exit(2)
    for problem in report.problems[:_SHOW_PROBLEMS]:
        error_line(problem)
    if len(report.problems) > _SHOW_PROBLEMS:
        stderr.print(escape(f"... and {len(report.problems) - _SHOW_PROBLEMS} more files that could not be shown"))
    if not quiet or report.problems:
        c = report.counts
        shown = f"{report.shown} of {report.total}" if report.shown < report.total else f"{report.total}"
        unknown = f", {report.unknown} without a confidence" if report.unknown else ""
        earlier = f" ({c['done_earlier']} of them in earlier runs)" if c.get("done_earlier") else ""
        stdout.print(escape(
            f"{report.page}: {shown} results ({c['done']} done{earlier}, {c['skipped']} skipped, {c['failed']} failed; "
            f"{report.below} below {below:g}{unknown}); thumbnails {report.made} made, {report.reused} reused "
            f"in {report.seconds:.1f}s"))
    raise typer.Exit(1 if report.problems else 0)
