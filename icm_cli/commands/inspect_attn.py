"""`icm inspect-attn`: pictures of why a mask came out as it did."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from icm_cli import options as opts
from icm_cli.config import DEFAULT_MAX_PIXELS
from icm_cli.errors import SettingError, command_line_text

D = opts.MODEL_DEFAULTS


def parse_point(text: str) -> tuple[int, int]:
    """``"120,80"`` -> ``(120, 80)``; anything else (NaN and infinities too) raises ValueError."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise SettingError(f"--point {text!r}: expected X,Y in reference pixels, e.g. --point 120,80")
    return int(round(values[0])), int(round(values[1]))


def inspect_attn(
    sources: Annotated[List[str], typer.Argument(metavar="SOURCES", show_default=False,
                                                 help="Images or folders of images to inspect.")],
    ref: opts.Ref = [],
    mask: opts.Mask = [],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="OUT", rich_help_panel=opts.OUTPUTS, show_default=False,
        help="[red]Required.[/] Output folder for the pictures.")] = None,
    point: Annotated[Optional[str], typer.Option(
        "--point", metavar="X,Y", rich_help_panel=opts.OUTPUTS, show_default=False,
        help="A location in the first reference: also show where it attends.")] = None,
    height: Annotated[int, typer.Option(
        "--height", metavar="PX", rich_help_panel=opts.OUTPUTS, callback=opts.at_least(64, "--height"),
        help="Height of each panel in the montage.")] = 320,
    backbone: opts.Backbone = D.backbone,
    weights: opts.Weights = None,
    device: opts.Device = D.device,
    decoder: opts.Decoder = D.decoder,
    runtime: opts.Runtime = D.runtime,
    size: opts.Size = D.size,
    head_steps: opts.HeadSteps = D.head_steps,
    recursive: opts.RecursiveFiles = False,
    include: opts.Include = [],
    exclude: opts.Exclude = [],
    resize_masks: opts.ResizeMasks = False,
    max_pixels: opts.MaxPixels = DEFAULT_MAX_PIXELS,
    quiet: opts.Quiet = False,
) -> None:
    """Show the attention behind each mask: reference | source | inter (cross-attention) | intra (after self-attention) | result.

    Writes OUT/<name>.png (the montage) and OUT/<name>_inter.png, OUT/<name>_intra.png (colour heat maps at the source's size); with --point also OUT/<name>_point.png.
    """
    from icm_cli import io, render
    from icm_cli.commands.common import check_output_name, output_folder_or_exit, sources_or_exit
    from icm_cli.console import error_line
    from icm_cli.errors import IcmError
    from icm_cli.predictor import Predictor
    from icm_cli.references import load_references
    from icm_cli.console import ConsoleReporter
    from icm_cli.runner.files import process_files

    if output is None:
        error_line("missing -o/--output: the folder to write the montages into")
        raise typer.Exit(2)
    try:
        pt = parse_point(point) if point else None
        references = load_references(ref, mask, max_pixels, resize_masks)
        if pt is not None:
            h, w = references[0].mask.shape
            if not (0 <= pt[0] < w and 0 <= pt[1] < h):
                raise SettingError(f"--point {pt[0]},{pt[1]} lies outside the first reference ({w}x{h})")
    except (IcmError, ValueError) as exc:
        error_line(command_line_text(exc))
        raise typer.Exit(2)
    check_output_name(output)
    entries = sources_or_exit(sources, recursive=recursive, include=include, exclude=exclude, avoid=[output],
                              quiet=quiet)
    output_folder_or_exit(output)
    try:
        predictor = Predictor(opts.model_config(backbone, weights, device, size, head_steps, decoder, runtime))
        predictor.set_references(references)
    except (IcmError, ValueError) as exc:
        error_line(command_line_text(exc))
        raise typer.Exit(2)
    if predictor.runtime_note:
        from icm_cli.console import warning_line
        warning_line(predictor.runtime_note)
    first = references[0]
    ref_panel = render.mask_outline(first.image, first.mask >= 0.5, colour=(64, 255, 64), width=3)
    if pt:
        import cv2
        cv2.drawMarker(ref_panel, pt, (255, 0, 255), cv2.MARKER_CROSS, max(12, first.image.shape[0] // 20), 3)
    ref_panel = render.label(render.fit_height(ref_panel, height), "reference + mask")

    def panel(image, caption: str):
        return render.label(render.fit_height(image, height), caption)

    def work(source) -> None:
        image = io.read_image(source.path, max_pixels=max_pixels)
        try:
            maps = predictor.attention(image, point=pt)
        except ValueError as exc:  # --point outside the reference
            raise io.InputError(str(exc)) from None
        result = maps.result
        panels = [ref_panel, panel(image, "source"),
                  panel(render.overlay(image, maps.inter), "inter: cross-attention"),
                  panel(render.overlay(image, maps.intra), "intra: after self-attention"),
                  panel(render.mask_outline(render.overlay(image, result.probability), result.mask),
                        "object probability + mask")]
        io.write_image_atomic(output / f"{source.stem}_inter.png", render.colorize(maps.inter))
        io.write_image_atomic(output / f"{source.stem}_intra.png", render.colorize(maps.intra))
        if maps.point is not None:
            io.write_image_atomic(output / f"{source.stem}_point.png", render.overlay(image, maps.point))
            panels.append(panel(render.overlay(image, maps.point), f"where ({pt[0]},{pt[1]}) attends"))
        io.write_image_atomic(output / f"{source.stem}.png", render.montage(panels, height))

    reporter = ConsoleReporter(quiet=quiet)
    outcome = process_files(entries, lambda s: [output / f"{s.stem}.png"], work, output=output,
                            overwrite=True, reporter=reporter, description="inspect-attn", total=len(entries))
    reporter.summary(outcome, "montages")
    raise typer.Exit(outcome.exit_code)
