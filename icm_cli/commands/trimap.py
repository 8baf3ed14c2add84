"""`icm trimap`: masks -> trimaps (0 / 128 / 255) by erosion and dilation."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from icm_cli import io
from icm_cli.commands._shared import process_files
from icm_cli.console import error_line


def mask_to_trimap_u8(mask, erode_kernel: int, dilate_kernel: int):
    """:func:`icm_cli.predict.fullres.mask_to_trimap_u8`, imported on first use: it brings torch,
    which every other command (status, review, --help) then starts without."""
    from icm_cli.predict.fullres import mask_to_trimap_u8 as cut

    return cut(mask, erode_kernel, dilate_kernel)


def trimap(
    masks: List[str] = typer.Argument(..., help="Mask files or folders of masks (0/255, 0/1, 16-bit, palette or RGB)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder; writes OUT/<stem>.png."),
    kernel: int = typer.Option(10, "--kernel", "-k", min=1, help="Erosion and dilation kernel size in pixels (the ICM seed's default)."),
    erode: Optional[int] = typer.Option(None, "--erode", min=1, help="Erosion kernel (overrides --kernel)."),
    dilate: Optional[int] = typer.Option(None, "--dilate", min=1, help="Dilation kernel (overrides --kernel)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip them)."),
    max_pixels: int = typer.Option(io.DEFAULT_MAX_PIXELS, "--max-pixels", help="Refuse masks with more pixels than this."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary unless something failed."),
) -> None:
    """Cut masks into trimaps: eroded mask = 255 (object), band up to the dilated mask = 128 (unknown), rest = 0.

    Masks are thresholded at half their range. Example: [bold]icm trimap masks/ -o trimaps/ --kernel 10[/]
    """
    erode_k = erode or kernel
    dilate_k = dilate or kernel
    try:
        io.ensure_output_folder(output)
    except io.InputError as exc:
        error_line(str(exc))
        raise typer.Exit(2)
    io.remove_stale_temp_files(output)

    def work(path: Path, stem: str) -> None:
        mask = io.read_mask(path, max_pixels=max_pixels)
        io.write_image_atomic(output / f"{stem}.png", mask_to_trimap_u8(mask, erode_k, dilate_k))

    outcome = process_files(io.iter_sources(masks, recursive=recursive), lambda stem: [output / f"{stem}.png"],
                            work, output=output, overwrite=overwrite, quiet=quiet, description="trimap")
    outcome.summary("trimaps", quiet=quiet)
    raise typer.Exit(outcome.exit_code)
