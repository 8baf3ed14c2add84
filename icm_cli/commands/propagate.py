"""`icm propagate`: one labelled reference -> masks, trimaps and heat maps for many images."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from icm_cli import io
from icm_cli.commands._shared import build_propagator, load_references
from icm_cli.console import error_line, progress_bar


def propagate(
    sources: List[str] = typer.Argument(None, help="Images, folders of images, or - to read paths from stdin."),
    ref: List[str] = typer.Option([], "--ref", help="Reference image showing the object (repeat for several)."),
    mask: List[str] = typer.Option([], "--mask", help="Mask of the object in the matching --ref (0/255, 0/1, palette, 16-bit, RGB)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder: OUT/masks, OUT/trimaps, OUT/heatmaps, OUT/manifest.jsonl."),
    save: str = typer.Option("masks,trimaps,heatmaps", "--save", help="What to write: any of masks,trimaps,heatmaps,alpha,cutout."),
    backbone: str = typer.Option("efficientnet-lite0", "--backbone", "-b", help="Feature backbone (see `icm backbones`)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Local weights file or folder for the backbone."),
    device: str = typer.Option("auto", "--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps."),
    batch_size: int = typer.Option(0, "--batch-size", min=0, help="Sources per forward pass; 0 = 1 on CPU, 8 on GPU."),
    size: int = typer.Option(384, "--size", min=64, help="Working short side in pixels (bigger: finer masks, slower)."),
    kernel: int = typer.Option(10, "--kernel", "-k", min=1, help="Trimap erosion/dilation kernel in pixels."),
    threshold: Optional[float] = typer.Option(None, "--threshold", min=0.0, max=1.0,
                                              help="Fixed threshold on the object probability instead of the automatic (GrabCut) decision."),
    edges: bool = typer.Option(True, "--edges/--no-edges", help="Refine edges with the image's colours (GrabCut)."),
    head_steps: int = typer.Option(300, "--head-steps", min=0, help="Training steps of the per-run object head (0 = nearest neighbours only)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders of SOURCES."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute sources whose outputs exist (default: skip them)."),
    resize_masks: bool = typer.Option(False, "--resize-masks", help="Stretch a reference mask of another size to its image."),
    max_pixels: int = typer.Option(io.DEFAULT_MAX_PIXELS, "--max-pixels", help="Refuse images with more pixels than this (checked before decoding)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary unless something failed."),
    json_lines: bool = typer.Option(False, "--json", help="Print each manifest line to stdout as it is written."),
) -> None:
    """Find the object of the reference mask in every source; write masks, trimaps and heat maps.

    Example: [bold]icm propagate --ref ref.png --mask ref_mask.png frames/ -o out/[/]
    """
    from icm_cli.backbones import WeightsError
    from icm_cli.device import DeviceError
    from icm_cli.pipeline import Manifest, OutputPlan, PropagateRun, parse_kinds

    try:
        kinds = parse_kinds(save)
    except ValueError as exc:
        error_line(str(exc))
        raise typer.Exit(2)
    if not sources:
        error_line("no SOURCES given: name images, folders, or - to read paths from stdin")
        raise typer.Exit(2)
    try:
        references = load_references(ref, mask, max_pixels, resize_masks)
        propagator = build_propagator(backbone, weights, device, size, head_steps, edges, threshold)
        propagator.set_references(references)
    except (io.InputError, WeightsError, DeviceError, ValueError) as exc:
        error_line(str(exc))
        raise typer.Exit(2)

    matte = None
    if "alpha" in kinds or "cutout" in kinds:
        from icm_cli.matting import solve_alpha
        matte = solve_alpha
    if batch_size == 0:
        batch_size = 1 if propagator.device.type == "cpu" else 8
    plan = OutputPlan(output, kinds, kernel, overwrite)
    try:
        manifest = Manifest(output / "manifest.jsonl", echo=(lambda line: print(line, flush=True)) if json_lines else None)
    except OSError as exc:
        error_line(f"{output}: cannot write the output folder ({exc.strerror or exc})")
        raise typer.Exit(2)
    show = not quiet and sys.stdout.isatty()
    with progress_bar(None, "propagate", enabled=show) as advance:
        run = PropagateRun(propagator, plan, manifest, batch_size=batch_size, max_pixels=max_pixels,
                           advance=advance, quiet=quiet, matte=matte)
        try:
            outcome = run.run(io.iter_sources(sources, recursive=recursive))
        finally:
            manifest.close()
    outcome.summary("images", quiet=quiet or json_lines)
    raise typer.Exit(outcome.exit_code)
