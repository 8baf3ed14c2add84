"""`icm refine`: coarse masks refined with each image's own self-attention."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List

import typer

from icm_cli import options as opts
from icm_cli.config import DEFAULT_MAX_PIXELS

D = opts.MODEL_DEFAULTS


def refine(
    masks: Annotated[List[str], typer.Argument(
        metavar="MASKS", show_default=False,
        help="Coarse masks (files or folders), paired with the images by name.")],
    images: Annotated[Path, typer.Option(
        "--images", metavar="DIR", rich_help_panel=opts.INPUTS, show_default=False,
        help="Folder of the images the masks belong to (<name>.* , sub-folders with -r).")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="OUT", rich_help_panel=opts.OUTPUTS, show_default=False,
        help="Output folder; writes OUT/<name>.png (0/255).")],
    iterations: Annotated[int, typer.Option(
        "--iterations", metavar="N", rich_help_panel=opts.QUALITY, callback=opts.at_least(1, "--iterations"),
        help="Refinement iterations (stops early once stable).")] = 3,
    score: Annotated[str, typer.Option(
        "--score", metavar="RULE", rich_help_panel=opts.QUALITY, help="classification, softmax or ratio.")
    ] = "classification",
    backbone: opts.Backbone = D.backbone,
    weights: opts.Weights = None,
    device: opts.Device = D.device,
    size: opts.Size = D.size,
    recursive: opts.RecursiveFiles = False,
    include: opts.Include = [],
    exclude: opts.Exclude = [],
    overwrite: opts.Overwrite = False,
    max_pixels: opts.MaxPixels = DEFAULT_MAX_PIXELS,
    quiet: opts.Quiet = False,
) -> None:
    """Refine coarse masks with ICM's attention vote: a cell is object when it attends more to the object than to the background.

    Only cells whose label changes are rewritten; the rest of each mask keeps its own edges.
    Example: [bold]icm refine coarse/ --images frames/ -o refined/[/]
    """
    from icm_cli import io
    from icm_cli.commands.common import check_output_name, output_folder_or_exit, sources_or_exit
    from icm_cli.console import error_line
    from icm_cli.runner.files import process_files
    from icm_cli.sources import find_named

    from icm_cli.core import SCORE_TYPES

    if score not in SCORE_TYPES:
        error_line(f"--score {score}: choose one of {', '.join(SCORE_TYPES)}")
        raise typer.Exit(2)
    if not images.is_dir():
        error_line(f"{images}: --images must be a folder of images")
        raise typer.Exit(2)
    check_output_name(output)
    entries = sources_or_exit(masks, recursive=recursive, include=include, exclude=exclude, avoid=[output],
                              quiet=quiet)
    output_folder_or_exit(output)

    import numpy as np
    import torch

    from icm_cli.backbones import create_backbone
    from icm_cli.device import default_dtype, resolve_device
    from icm_cli.errors import IcmError
    from icm_cli.predict.selfattention import refine_mask_with_attention

    try:
        dev = resolve_device(device)
        dtype = default_dtype(dev)
        net = create_backbone(backbone, weights).to(dev, dtype).eval()
    except IcmError as exc:
        error_line(str(exc))
        raise typer.Exit(2)

    def work(source) -> None:
        image_path = find_named(images, source.name)
        if image_path is None:
            raise io.InputError(f"{source.path}: no image named {source.name}.* in {images}")
        image = io.read_image(image_path, max_pixels=max_pixels)
        mask = io.read_mask(source.path, max_pixels=max_pixels)
        if mask.shape != image.shape[:2]:
            raise io.InputError(f"{source.path}: mask is {mask.shape[1]}x{mask.shape[0]} but "
                                f"{image_path} is {image.shape[1]}x{image.shape[0]}")
        refined, _ = refine_mask_with_attention(net, image, mask, size, iterations, score, dev, dtype)
        io.write_image_atomic(output / f"{source.stem}.png", refined.astype(np.uint8) * 255)

    with torch.no_grad():
        outcome = process_files(entries, lambda s: [output / f"{s.stem}.png"], work, output=output,
                                overwrite=overwrite, quiet=quiet, description="refine", total=len(entries))
    outcome.summary("masks", quiet=quiet)
    raise typer.Exit(outcome.exit_code)
