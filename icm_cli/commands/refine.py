"""`icm refine`: coarse masks refined with each image's own self-attention."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import typer

from icm_cli import io
from icm_cli.commands._shared import find_by_stem, process_files
from icm_cli.console import error_line


def refine(
    masks: List[str] = typer.Argument(..., help="Coarse masks (files or folders), paired to images by stem."),
    images: Path = typer.Option(..., "--images", help="Folder of the images the masks belong to."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder; writes OUT/<stem>.png (0/255)."),
    iterations: int = typer.Option(3, "--iterations", min=1, help="Refinement iterations (stops early once stable)."),
    score: str = typer.Option("classification", "--score", help="classification, softmax or ratio."),
    backbone: str = typer.Option("efficientnet-lite0", "--backbone", "-b", help="Feature backbone (see `icm backbones`)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Local weights file or folder for the backbone."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    size: int = typer.Option(384, "--size", min=64, help="Working short side in pixels."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders of MASKS."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip them)."),
    max_pixels: int = typer.Option(io.DEFAULT_MAX_PIXELS, "--max-pixels", help="Refuse images with more pixels than this."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary unless something failed."),
) -> None:
    """Refine coarse masks with ICM's attention vote: a cell is object when it attends more to the object than to the background.

    Only cells whose label changes are rewritten; the rest of each mask keeps its own edges.
    Example: [bold]icm refine coarse/ --images frames/ -o refined/[/]
    """
    import torch

    from icm_cli.backbones import WeightsError, create_backbone
    from icm_cli.core import SCORE_TYPES
    from icm_cli.device import DeviceError, default_dtype, resolve_device
    from icm_cli.predict.selfattention import refine_mask_with_attention

    if score not in SCORE_TYPES:
        error_line(f"--score {score}: choose one of {', '.join(SCORE_TYPES)}")
        raise typer.Exit(2)
    if not images.is_dir():
        error_line(f"{images}: --images must be a folder of images")
        raise typer.Exit(2)
    try:
        io.ensure_output_folder(output)
    except io.InputError as exc:
        error_line(str(exc))
        raise typer.Exit(2)
    io.remove_stale_temp_files(output)
    try:
        dev = resolve_device(device)
        dtype = default_dtype(dev)
        net = create_backbone(backbone, weights).to(dev, dtype).eval()
    except (WeightsError, DeviceError) as exc:
        error_line(str(exc))
        raise typer.Exit(2)
    def work(mask_path: Path, stem: str) -> None:
        image_path = find_by_stem(images, mask_path.stem)
        if image_path is None:
            raise io.InputError(f"{mask_path}: no image named {mask_path.stem}.* in {images}")
        image = io.read_image(image_path, max_pixels=max_pixels)
        mask = io.read_mask(mask_path, max_pixels=max_pixels)
        if mask.shape != image.shape[:2]:
            raise io.InputError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but "
                                f"{image_path} is {image.shape[1]}x{image.shape[0]}")
        refined, _ = refine_mask_with_attention(net, image, mask, size, iterations, score, dev, dtype)
        io.write_image_atomic(output / f"{stem}.png", refined.astype(np.uint8) * 255)

    with torch.no_grad():
        outcome = process_files(io.iter_sources(masks, recursive=recursive), lambda stem: [output / f"{stem}.png"],
                                work, output=output, overwrite=overwrite, quiet=quiet, description="refine")
    outcome.summary("masks", quiet=quiet)
    raise typer.Exit(outcome.exit_code)
