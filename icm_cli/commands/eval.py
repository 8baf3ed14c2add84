"""`icm eval`: score predicted masks or alpha mattes against ground truth, paired by stem.

The scoring is :func:`icm_cli.evaluation.evaluate`; this module reads the options and prints the result.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from icm_cli import options as opts
from icm_cli.config import DEFAULT_MAX_PIXELS
from icm_cli.errors import command_line_text


def _fmt(value: Optional[float], key: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if key in ("J", "F", "MSE") else f"{value:.3f}"


def eval_command(
    pred: Annotated[Path, typer.Argument(metavar="PRED", show_default=False,
                                         help="Predicted masks or alpha mattes: a folder or one file.")],
    gt: Annotated[Path, typer.Argument(metavar="GT", show_default=False,
                                       help="Ground truth: a folder (paired by name, any image suffix) or one file.")],
    kind: Annotated[str, typer.Option("--kind", metavar="KIND",
                                      help="mask: J (IoU) and boundary F; alpha: SAD, MSE, Grad, Conn. The names --save and "
                                           "--save-video take work too (masks, matte, mattes).")] = "mask",
    kind_short: Annotated[Optional[str], typer.Option("-k", hidden=True, show_default=False)] = None,
    trimaps: Annotated[Optional[Path], typer.Option(
        "--trimaps", "-t", metavar="DIR", show_default=False,
        help="alpha: score only the unknown band of these trimaps (folder, paired by name).")] = None,
    stability: Annotated[bool, typer.Option(
        "--stability", help="mask: also each sequence's temporal stability (mean IoU of consecutive masks in "
                            "name order), for the prediction and for the ground truth.")] = False,
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r",
        help="Folders of sequence sub-folders: per-sequence means, then the mean over sequences (DAVIS).")] = False,
    tolerance: Annotated[Optional[float], typer.Option(
        "--tolerance", metavar="D", callback=opts.at_least(0, "--tolerance"), show_default=False,
        help="mask: boundary match distance, pixels if >= 1 else share of the diagonal (default 0.008).")] = None,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object (per image, per sequence, mean) instead of tables.")] = False,
    include: Annotated[List[str], typer.Option(
        "--include", metavar="GLOB", rich_help_panel=opts.INPUTS, show_default=False,
        help="Only files whose name (or path below PRED/GT) matches, e.g. '0000*'; repeatable.")] = [],
    exclude: Annotated[List[str], typer.Option(
        "--exclude", metavar="GLOB", rich_help_panel=opts.INPUTS, show_default=False,
        help="Leave out files that match, e.g. 'ref*'; repeatable. Applies to PRED and GT alike.")] = [],
    include_references: Annotated[bool, typer.Option(
        "--include-references",
        help="Also score results that are the user's own mask (a reference among a propagate run's sources, "
             "recorded in its manifest); left out by default.")] = False,
    max_pixels: opts.MaxPixels = DEFAULT_MAX_PIXELS,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No notes about unpredicted ground truth.")] = False,
) -> None:
    """Score predictions against ground truth; missing or unreadable pairs are reported and make the exit code 1.

    Example: [bold]icm eval out/masks/ truth/ --kind mask[/]  or
    [bold]icm eval alpha/ gt/ --kind alpha --trimaps trimaps/ --json[/]
    """
    from icm_cli.console import error_line, info_line, warning_line
    from icm_cli.errors import IcmError
    from icm_cli.evaluation import evaluate

    if kind_short is not None:
        warning_line("-k for --kind is deprecated and goes in the next release (-k is --kernel elsewhere); "
                     "write --kind")
        kind = kind_short
    try:
        result = evaluate(pred, gt, kind=kind, trimaps=trimaps, stability=stability, recursive=recursive,
                          tolerance=tolerance, max_pixels=max_pixels, include=include, exclude=exclude,
                          include_references=include_references)
    except IcmError as exc:
        error_line(command_line_text(exc))
        raise typer.Exit(2)
    for problem in result.unscored:
        error_line(problem.error)
    if result.output_folders:
        folder = "masks/" if result.kind == "mask" else "alpha/"
        n = result.output_folders
        info_line(f"note: scoring the {folder} of {n} propagate output folder{'s' if n != 1 else ''} "
                  f"in {pred} (heat maps and trimaps are not predictions)")
    if result.references_left_out:
        n = len(result.references_left_out)
        info_line(f"note: left out {n} result{'s' if n != 1 else ''} that {'are' if n != 1 else 'is'} the user's "
                  f"own mask (a reference among the sources): {', '.join(result.references_left_out[:5])}"
                  f"{' ...' if n > 5 else ''}; --include-references scores {'them' if n != 1 else 'it'}")
    if result.unpredicted and not quiet:
        shown = ", ".join(result.unpredicted[:5]) + (" ..." if len(result.unpredicted) > 5 else "")
        n = len(result.unpredicted)
        info_line(f"note: {n} ground-truth file{'s have' if n != 1 else ' has'} no prediction and "
                  f"{'were' if n != 1 else 'was'} not scored: {shown}")
    if not result.images and not result.unscored:
        error_line(f"{pred}: no images to score")
    if json_output:
        typer.echo(json.dumps(result.as_dict(), indent=2))
    else:
        _print_table(result, unknown_band_only=trimaps is not None)
    raise typer.Exit(0 if result.complete else 1)


def _print_table(result, unknown_band_only: bool) -> None:
    from rich.table import Table

    from icm_cli.console import stdout

    recursive = result.by_sequence
    table = Table(title=f"icm eval ({result.kind}{', unknown band only' if unknown_band_only else ''})",
                  title_justify="left")
    table.add_column("sequence" if recursive else "image")
    if recursive:
        table.add_column("frames", justify="right")
    shown_keys = result.keys + (result.stability_keys if recursive else ())
    for k in shown_keys:
        table.add_column(k, justify="right")
    if recursive:
        for seq in result.sequences:
            table.add_row(seq.sequence, str(seq.frames), *[_fmt(seq.scores[k], k) for k in shown_keys])
    else:
        for image in result.images:
            table.add_row(image.name, *[_fmt(image.scores[k], k) for k in shown_keys])
    table.add_section()
    table.add_row("mean", *([str(len(result.images))] if recursive else []),
                  *[_fmt(result.mean[k], k) for k in shown_keys])
    stdout.print(table)
    if result.stability_keys and not recursive:
        stdout.print(f"temporal stability (mean IoU of consecutive masks): prediction "
                     f"{_fmt(result.mean['T_pred'], 'J')}, ground truth {_fmt(result.mean['T_gt'], 'J')}")
