"""`icm inspect-attn`: pictures of why a mask came out as it did."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from icm_cli import io, render
from icm_cli.commands._shared import build_propagator, load_references
from icm_cli.console import BatchOutcome, error_line, progress_bar
from icm_cli.predict import DEFAULT_DECODER


def parse_point(text: str) -> tuple[int, int]:
    try:
        x, y = (int(round(float(v))) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--point {text!r}: expected X,Y in reference pixels, e.g. --point 120,80") from None
    return x, y


def point_attention(propagator, point: tuple[int, int], source_ft, temperature: float = 0.05):
    """Softmax attention of one reference location over the source grid.

    source_ft ``[1, C, h, w]``; returns ``[1, 1, h, w]`` scaled to peak 1.
    """
    import torch

    ref_ft, geo = propagator.reference_features[0]
    x, y = point
    if not (0 <= x < geo.orig_w and 0 <= y < geo.orig_h):
        raise ValueError(f"--point {x},{y} lies outside the first reference ({geo.orig_w}x{geo.orig_h})")
    gh, gw = ref_ft.shape[-2:]
    row = min(gh - 1, int(y * geo.resized_h / geo.orig_h * gh / geo.padded_h))
    col = min(gw - 1, int(x * geo.resized_w / geo.orig_w * gw / geo.padded_w))
    token = ref_ft[:, row, col]  # [C]
    logits = torch.einsum("c,bchw->bhw", token, source_ft) / temperature
    att = logits.flatten(1).softmax(-1).reshape(logits.shape)[:, None]
    return att / att.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)


def inspect_attn(
    sources: List[str] = typer.Argument(..., help="Images or folders of images to inspect."),
    ref: List[str] = typer.Option([], "--ref", help="Reference image (repeat for several)."),
    mask: List[str] = typer.Option([], "--mask", help="Mask of the object in the matching --ref."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder for the pictures."),
    point: Optional[str] = typer.Option(None, "--point", help="X,Y in the first reference: also show where that location attends."),
    backbone: str = typer.Option("efficientnet-lite0", "--backbone", "-b", help="Feature backbone."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Local weights file or folder for the backbone."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    size: int = typer.Option(384, "--size", min=64, help="Working short side in pixels."),
    head_steps: int = typer.Option(100, "--head-steps", min=0, help="Training steps of the object head (as in propagate)."),
    decoder: str = typer.Option(DEFAULT_DECODER, "--decoder", help="Learned mask decoder: auto (the built-in weights for efficientnet-lite0, see `icm backbones`), builtin, none (training-free), or a .safetensors file."),
    height: int = typer.Option(320, "--height", min=64, help="Height of each panel in the montage."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders."),
    resize_masks: bool = typer.Option(False, "--resize-masks", help="Stretch a reference mask of another size to its image."),
    max_pixels: int = typer.Option(io.DEFAULT_MAX_PIXELS, "--max-pixels", help="Refuse images with more pixels than this."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary unless something failed."),
) -> None:
    """Show the attention behind each mask: reference | source | inter (cross-attention) | intra (after self-attention) | result.

    Writes OUT/<stem>.png (the montage) and OUT/<stem>_inter.png, OUT/<stem>_intra.png
    (colour heat maps at the source's size); with --point also OUT/<stem>_point.png.
    """
    from icm_cli.backbones import WeightsError
    from icm_cli.device import DeviceError

    try:
        pt = parse_point(point) if point else None
        references = load_references(ref, mask, max_pixels, resize_masks)
        propagator = build_propagator(backbone, weights, device, size, head_steps, decoder=decoder)
        propagator.set_references(references)
    except (io.InputError, WeightsError, DeviceError, ValueError) as exc:
        error_line(str(exc))
        raise typer.Exit(2)
    ref_image, ref_mask = references[0]
    ref_panel = render.mask_outline(ref_image, ref_mask >= 0.5, colour=(64, 255, 64), width=3)
    if pt:
        import cv2
        cv2.drawMarker(ref_panel, pt, (255, 0, 255), cv2.MARKER_CROSS, max(12, ref_image.shape[0] // 20), 3)
    ref_panel = render.label(render.fit_height(ref_panel, height), "reference + mask")
    outcome = BatchOutcome()
    stems = io.StemAllocator()
    with progress_bar(None, "inspect-attn", enabled=not quiet) as advance:
        for path in io.iter_sources(sources, recursive=recursive):
            stem = stems(path)
            try:
                image = io.read_image(path, max_pixels=max_pixels)
                maps = propagator.attention_maps([image])[0]
                geo = maps["geometry"]
                inter = geo.to_original(maps["inter"])[0, 0].numpy()
                intra = geo.to_original(maps["intra"])[0, 0].numpy()
                prob, final = propagator.finish(image, maps["prediction"])
                panels = [ref_panel,
                          render.label(render.fit_height(image, height), "source"),
                          render.label(render.fit_height(render.overlay(image, inter), height), "inter: cross-attention"),
                          render.label(render.fit_height(render.overlay(image, intra), height), "intra: after self-attention"),
                          render.label(render.fit_height(render.mask_outline(render.overlay(image, prob), final), height),
                                       "object probability + mask")]
                io.write_image_atomic(output / f"{stem}_inter.png", render.colorize(inter))
                io.write_image_atomic(output / f"{stem}_intra.png", render.colorize(intra))
                if pt:
                    att = geo.to_original(point_attention(propagator, pt, maps["ft"]))[0, 0].numpy()
                    io.write_image_atomic(output / f"{stem}_point.png", render.overlay(image, att))
                    panels.append(render.label(render.fit_height(render.overlay(image, att), height),
                                               f"where ({pt[0]},{pt[1]}) attends"))
                io.write_image_atomic(output / f"{stem}.png", render.montage(panels, height))
                outcome.done += 1
            except (io.InputError, ValueError) as exc:
                outcome.fail(str(path), str(exc))
            advance()
    outcome.summary("montages", quiet=quiet)
    raise typer.Exit(outcome.exit_code)
