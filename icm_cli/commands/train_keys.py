"""`icm train-keys`: fit the video memory's key projection on labelled clips."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icm_cli import options as opts
from icm_cli.commands.train import TRAINING, weights_target_problem
from icm_cli.errors import command_line_text


def train_keys(
    data: Annotated[Path, typer.Argument(
        metavar="DATA", show_default=False,
        help="Folder of groups as `icm train` reads them; only groups whose group.json says "
             "{\"sequence\": true} serve, and those with \"split\": \"val\" are held out and scored.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="FILE", rich_help_panel=opts.OUTPUTS, show_default=False,
        help="[red]Required.[/] Key projection file to write (.safetensors). An existing one is refused "
             "unless --overwrite.")],
    steps: Annotated[int, typer.Option(
        "--steps", metavar="N", rich_help_panel=TRAINING, callback=opts.at_least(1, "--steps"),
        help="Optimiser steps (one target frame each).")] = 1500,
    seed: Annotated[int, typer.Option(
        "--seed", metavar="N", rich_help_panel=TRAINING, help="Seed of the frame draws and of the initial weights.")] = 0,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", rich_help_panel=opts.OUTPUTS,
        help="Replace FILE if it exists (default: refuse before training).")] = False,
    quiet: opts.Quiet = False,
) -> None:
    """Train the key projection that the --video memory matches frames with, on clips with masks.

    A target frame's cells read their labels from two earlier frames of the same clip through the keys;
    the keys learn to make that readout right. Prints the held-out clips' readout IoU at the end.
    Example: [bold]icm train-keys /work/icm-train -o icm_cli/weights/keys-lite0.safetensors[/]
    """
    from icm_cli.console import error_line, stderr
    from icm_cli.errors import LayoutError
    from icm_cli.training.keys import KeyRecipe, train_keys as run

    if output.suffix != ".safetensors":
        error_line(f"{output}: the key projection file must end in .safetensors")
        raise typer.Exit(2)
    problem = weights_target_problem(output, overwrite=overwrite, resume=False)
    if problem:
        error_line(problem.replace(", --resume to continue the run that writes it", ""))
        raise typer.Exit(2)
    log = (lambda line: None) if quiet else (lambda line: stderr.print(line, highlight=False))
    try:
        figures = run(data, output, KeyRecipe(steps=steps, seed=seed), log)
    except (LayoutError, ValueError) as exc:
        error_line(command_line_text(exc))
        raise typer.Exit(2)
    except KeyboardInterrupt:
        error_line("interrupted: nothing was written; rerun the same command")
        raise typer.Exit(130)
    if not quiet:
        learned, features = figures["mean"]["learned"], figures["mean"]["features"]
        stderr.print(f"held-out clips, readout IoU on the feature grid: frame 0 alone {learned[0]:.3f} "
                     f"(features as keys {features[0]:.3f}), with the memory {learned[1]:.3f} ({features[1]:.3f})",
                     highlight=False)
        stderr.print(f"wrote {output}")
