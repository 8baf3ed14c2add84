"""`icm matte`: images + trimaps -> alpha mattes (and RGBA cut-outs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List

import typer

from icm_cli import options as opts
from icm_cli.config import DEFAULT_MATTE_METHOD as DEFAULT_METHOD
from icm_cli.config import DEFAULT_MAX_PIXELS, DEFAULT_SOLVE_PIXELS
from icm_cli.config import MATTE_METHODS as METHODS


def _matte_one(path: Path, trimap_path: Path, method: str, solve_pixels: int, max_pixels: int,
               cutout: bool) -> dict:
    """Read one pair and return the uint8 outputs; raises InputError for the user's files."""
    from icm_cli import io
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
    ctx: typer.Context,
    images: Annotated[List[str], typer.Argument(metavar="IMAGES", show_default=False,
                                                help="Images or folders of images.")],
    trimaps: Annotated[Path, typer.Option(
        "--trimaps", "-t", metavar="DIR", rich_help_panel=opts.INPUTS, show_default=False,
        help="Folder of trimaps named like the images (any image suffix; sub-folders with -r): "
             "black = background, white = object, between = unknown.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="OUT", rich_help_panel=opts.OUTPUTS, show_default=False,
        help="Output folder; writes OUT/<name>.png (alpha, 0-255).")],
    method: Annotated[str, typer.Option(
        "--method", "-m", metavar="NAME", rich_help_panel=opts.QUALITY,
        help=f"{', '.join(METHODS)}: {DEFAULT_METHOD} = shared-matting prior smoothed by the closed-form "
             "Laplacian; cf = closed-form; the rest are pymatting's.")] = DEFAULT_METHOD,
    cutout: Annotated[bool, typer.Option(
        "--cutout", rich_help_panel=opts.OUTPUTS,
        help="Also write OUT/cutout/<name>.png: RGBA with edge colours re-estimated.")] = False,
    solve_pixels: Annotated[int, typer.Option(
        "--solve-pixels", metavar="N", rich_help_panel=opts.QUALITY, callback=opts.at_least(1024, "--solve-pixels"),
        help="Above this many pixels around the unknown band, solve downscaled and upsample edge-aware.")
    ] = DEFAULT_SOLVE_PIXELS,
    recursive: opts.RecursiveFiles = False,
    include: opts.Include = [],
    exclude: opts.Exclude = [],
    overwrite: opts.Overwrite = False,
    max_pixels: opts.MaxPixels = DEFAULT_MAX_PIXELS,
    quiet: opts.Quiet = False,
) -> None:
    """Solve an alpha matte for each image from its trimap.

    Example: [bold]icm matte photos/ --trimaps trimaps/ -o alpha/ --cutout[/]
    """
    from icm_cli import io
    from icm_cli.commands.common import check_output_name, output_folder_or_exit, record_run_or_exit, sources_or_exit
    from icm_cli.console import ConsoleReporter, error_line
    from icm_cli.runner.files import process_files
    from icm_cli.runner.run_check import input_folders
    from icm_cli.sources import find_named

    if method not in METHODS:
        error_line(f"--method {method!r} is not known; choose one of {', '.join(METHODS)}")
        raise typer.Exit(2)
    if not trimaps.is_dir():
        error_line(f"{trimaps}: --trimaps must be a folder of trimaps named like the images")
        raise typer.Exit(2)
    check_output_name(output)
    entries = sources_or_exit(images, recursive=recursive, include=include, exclude=exclude,
                              avoid=[output, output / "cutout"], quiet=quiet)
    output_folder_or_exit(output)

    def targets(source) -> list[Path]:
        return [output / f"{source.stem}.png"] + ([output / "cutout" / f"{source.stem}.png"] if cutout else [])

    # What shapes an alpha (--cutout only adds a file made from it, so it is not one of them).
    settings = {"command": "matte", "images": input_folders(images), "trimaps": input_folders([trimaps]),
                "method": method, "solve_pixels": solve_pixels}
    record_run_or_exit(ctx, output, settings, entries, targets, overwrite=overwrite)

    def work(source) -> None:
        trimap_path = find_named(trimaps, source.name)
        if trimap_path is None:
            raise io.InputError(f"{source.path}: no trimap named {source.name}.png (or another image suffix) "
                                f"in {trimaps}")
        # A cut-out already there is remade with its alpha (--overwrite), never left from the old one.
        with_cutout = cutout or (output / "cutout" / f"{source.stem}.png").exists()
        result = _matte_one(source.path, trimap_path, method, solve_pixels, max_pixels, with_cutout)
        io.write_image_atomic(output / f"{source.stem}.png", result["alpha"])
        if with_cutout:
            io.write_image_atomic(output / "cutout" / f"{source.stem}.png", result["cutout"])

    reporter = ConsoleReporter(quiet=quiet)
    outcome = process_files(entries, targets, work, output=output, overwrite=overwrite, reporter=reporter,
                            description="matte", total=len(entries))
    reporter.summary(outcome, "mattes")
    raise typer.Exit(outcome.exit_code)
