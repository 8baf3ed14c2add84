"""`icm trimap`: masks -> trimaps (0 / 128 / 255) by erosion and dilation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from icm_cli import options as opts
from icm_cli.config import DEFAULT_MAX_PIXELS


def trimap(
    ctx: typer.Context,
    masks: Annotated[List[str], typer.Argument(
        metavar="MASKS", show_default=False,
        help="Mask files or folders of masks (0/255, 0/1, 16-bit, palette or RGB).")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="OUT", rich_help_panel=opts.OUTPUTS, show_default=False,
        help="Output folder; writes OUT/<name>.png. Must not be a folder of the masks.")],
    kernel: Annotated[int, typer.Option(
        "--kernel", "-k", metavar="PX", rich_help_panel=opts.OUTPUTS, callback=opts.at_least(1, "--kernel"),
        help="Width in pixels of the unknown band around the mask's edge (half inside, half outside). "
             "10, the ICM seed's value, suits ~500 px images; try ~2% of the short side.")] = 10,
    erode: Annotated[Optional[int], typer.Option(
        "--erode", metavar="PX", rich_help_panel=opts.OUTPUTS, callback=opts.at_least(1, "--erode"),
        show_default=False, help="Erosion (inside part) instead of --kernel.")] = None,
    dilate: Annotated[Optional[int], typer.Option(
        "--dilate", metavar="PX", rich_help_panel=opts.OUTPUTS, callback=opts.at_least(1, "--dilate"),
        show_default=False, help="Dilation (outside part) instead of --kernel.")] = None,
    recursive: opts.RecursiveFiles = False,
    include: opts.Include = [],
    exclude: opts.Exclude = [],
    overwrite: opts.Overwrite = False,
    max_pixels: opts.MaxPixels = DEFAULT_MAX_PIXELS,
    quiet: opts.Quiet = False,
) -> None:
    """Cut masks into trimaps: eroded mask = 255 (object), band up to the dilated mask = 128 (unknown), rest = 0.

    Masks are thresholded at half their range. Example: [bold]icm trimap masks/ -o trimaps/ --kernel 10[/]
    """
    from icm_cli import io
    from icm_cli.commands.common import check_output_name, output_folder_or_exit, record_run_or_exit, sources_or_exit
    from icm_cli.predict.fullres import mask_to_trimap_u8
    from icm_cli.console import ConsoleReporter
    from icm_cli.runner.files import process_files
    from icm_cli.runner.run_check import input_folders

    erode_k, dilate_k = erode or kernel, dilate or kernel
    check_output_name(output)
    entries = sources_or_exit(masks, recursive=recursive, include=include, exclude=exclude, avoid=[output],
                              quiet=quiet)
    output_folder_or_exit(output)

    def targets(source) -> list[Path]:
        return [output / f"{source.stem}.png"]

    settings = {"command": "trimap", "masks": input_folders(masks), "erode": erode_k, "dilate": dilate_k}
    record_run_or_exit(ctx, output, settings, entries, targets, overwrite=overwrite)

    def work(source) -> None:
        mask = io.read_mask(source.path, max_pixels=max_pixels)
        io.write_image_atomic(output / f"{source.stem}.png", mask_to_trimap_u8(mask, erode_k, dilate_k))

    reporter = ConsoleReporter(quiet=quiet)
    outcome = process_files(entries, targets, work, output=output,
                            overwrite=overwrite, reporter=reporter, description="trimap", total=len(entries))
    reporter.summary(outcome, "trimaps")
    raise typer.Exit(outcome.exit_code)
