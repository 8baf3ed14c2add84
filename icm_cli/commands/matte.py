"""`icm matte`: images + trimaps -> alpha mattes (and RGBA cut-outs)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from icm_cli import io
from icm_cli.commands._shared import find_by_stem, process_files
from icm_cli.console import error_line
from icm_cli.matting import DEFAULT_METHOD, DEFAULT_SOLVE_PIXELS, METHODS


def _matte_one(path: Path, trimap_path: Path, method: str, solve_pixels: int, max_pixels: int,
               cutout: bool) -> dict:
    """Read one pair and return the uint8 outputs; raises InputError for the user's files."""
    from icm_cli.matting import MattingError, alpha_to_u8, cutout_rgba, solve_alpha

    image = io.read_image(path, max_pixels=max_pixels)
    trimap = io.read_trimap(trimap_path, max_pixels)
    if trimap.shape != image.shape[:2]:
        raise io.InputError(
            f"{trimap_path}: trimap is {trimap.shape[1]}x{trimap.shape[0]} but {path} is "
            f"{image.shape[1]}x{image.shape[0]}")
    try:
        alpha = solve_alpha(image, trimap, method=method, max_pixels=solve_pixels)
    except ValueError as exc:  # e.g. a trimap without any known pixel
        raise io.InputError(f"{trimap_path}: {exc}") from None
    except MattingError as exc:
        raise io.InputError(f"{path}: {exc}") from None
    out = {"alpha": alpha_to_u8(alpha)}
    if cutout:
        out["cutout"] = cutout_rgba(image, alpha)
    return out


def matte(
    images: List[str] = typer.Argument(..., help="Images or folders of images."),
    trimaps: Path = typer.Option(..., "--trimaps", "-t",
                                 help="Folder of trimaps named like the images (<stem>.png or any image suffix); "
                                      "0/128/255 or 0..1: black = background, white = object, between = unknown."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder; writes OUT/<stem>.png (alpha, 0-255)."),
    method: str = typer.Option(DEFAULT_METHOD, "--method", "-m",
                               help=f"Matting method: {', '.join(METHODS)} ({DEFAULT_METHOD} = shared-matting "
                                    "prior smoothed by the closed-form Laplacian; cf = closed-form)."),
    cutout: bool = typer.Option(False, "--cutout", help="Also write OUT/cutout/<stem>.png: RGBA with the background removed from edge colours."),
    solve_pixels: int = typer.Option(DEFAULT_SOLVE_PIXELS, "--solve-pixels", min=1024,
                                     help="Above this many pixels around the unknown band, solve downscaled and upsample edge-aware."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders of IMAGES."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip them)."),
    max_pixels: int = typer.Option(io.DEFAULT_MAX_PIXELS, "--max-pixels", help="Refuse images with more pixels than this (checked before decoding)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary unless something failed."),
) -> None:
    """Solve an alpha matte for each image from its trimap.

    Example: [bold]icm matte photos/ --trimaps trimaps/ -o alpha/ --cutout[/]
    """
    if method not in METHODS:
        error_line(f"--method {method!r} is not known; choose one of {', '.join(METHODS)}")
        raise typer.Exit(2)
    if not trimaps.is_dir():
        error_line(f"{trimaps}: --trimaps must be a folder of trimaps named like the images")
        raise typer.Exit(2)
    sources = list(io.iter_sources(images, recursive=recursive))
    def targets(stem: str) -> list[Path]:
        return [output / f"{stem}.png"] + ([output / "cutout" / f"{stem}.png"] if cutout else [])

    def work(path: Path, stem: str) -> None:
        trimap_path = find_by_stem(trimaps, path.stem)
        if trimap_path is None:
            raise io.InputError(f"{path}: no trimap named {path.stem}.png (or another image suffix) in {trimaps}")
        result = _matte_one(path, trimap_path, method, solve_pixels, max_pixels, cutout)
        io.write_image_atomic(output / f"{stem}.png", result["alpha"])
        if cutout:
            io.write_image_atomic(output / "cutout" / f"{stem}.png", result["cutout"])

    outcome = process_files(sources, targets, work, output=output, overwrite=overwrite, quiet=quiet,
                            description="matte", total=len(sources))
    outcome.summary("mattes", quiet=quiet)
    raise typer.Exit(outcome.exit_code)
