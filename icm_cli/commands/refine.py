"""`icm refine`: rough masks made better, by the learned decoder or by ICM's attention vote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List

import typer

from icm_cli import options as opts
from icm_cli.config import DEFAULT_MAX_PIXELS, REFINE_METHODS
from icm_cli.errors import command_line_text

D = opts.MODEL_DEFAULTS
METHODS = REFINE_METHODS


def refine(
    ctx: typer.Context,
    masks: Annotated[List[str], typer.Argument(
        metavar="MASKS", show_default=False,
        help="Coarse masks (files or folders), paired with the images by name.")],
    images: Annotated[Path, typer.Option(
        "--images", metavar="DIR", rich_help_panel=opts.INPUTS, show_default=False,
        help="Folder of the images the masks belong to (<name>.* , sub-folders with -r).")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="OUT", rich_help_panel=opts.OUTPUTS, show_default=False,
        help="Output folder; writes OUT/<name>.png (0/255).")],
    method: Annotated[str, typer.Option(
        "--method", metavar="NAME", rich_help_panel=opts.QUALITY,
        help="decoder: the learned decoder reads the coarse mask as its prior and the image's own "
             "features under it as the reference; attention: ICM's training-free attention vote; auto: "
             "decoder when --decoder reads priors (the built-in one does), else attention.")] = "auto",
    ref: Annotated[List[str], typer.Option(
        "--ref", metavar="IMAGE", rich_help_panel=opts.INPUTS, show_default=False,
        help="Optional reference image of the object (decoder method); repeat for several.")] = [],
    mask: Annotated[List[str], typer.Option(
        "--mask", metavar="MASK", rich_help_panel=opts.INPUTS, show_default=False,
        help="Mask of the object in the matching --ref.")] = [],
    iterations: Annotated[int, typer.Option(
        "--iterations", metavar="N", rich_help_panel=opts.QUALITY, callback=opts.at_least(1, "--iterations"),
        help="attention: refinement iterations (stops early once stable).")] = 3,
    score: Annotated[str, typer.Option(
        "--score", metavar="RULE", rich_help_panel=opts.QUALITY,
        help="attention: classification, softmax or ratio.")] = "classification",
    backbone: opts.Backbone = D.backbone,
    weights: opts.Weights = None,
    device: opts.Device = D.device,
    decoder: opts.Decoder = D.decoder,
    size: opts.Size = D.size,
    head_steps: opts.HeadSteps = D.head_steps,
    recursive: opts.RecursiveFiles = False,
    include: opts.Include = [],
    exclude: opts.Exclude = [],
    overwrite: opts.Overwrite = False,
    max_pixels: opts.MaxPixels = DEFAULT_MAX_PIXELS,
    quiet: opts.Quiet = False,
) -> None:
    """Refine coarse masks (a brush mask, a filled box, another tool's output).

    decoder (default): each image's own features under its coarse mask are the in-context reference and the
    mask is the decoder's prior, so it can outvote what the mask wrongly includes or misses; GrabCut then
    sets the edges at full size, as in propagate. attention: a cell is object when it attends more to the
    object than to the background; only cells whose label changes are rewritten.
    Example: [bold]icm refine coarse/ --images frames/ -o refined/[/]
    """
    from icm_cli import io
    from icm_cli.commands.common import check_output_name, output_folder_or_exit, record_run_or_exit, sources_or_exit
    from icm_cli.console import ConsoleReporter, error_line
    from icm_cli.runner.files import process_files
    from icm_cli.runner.run_check import input_folders
    from icm_cli.sources import find_named

    from icm_cli.core import SCORE_TYPES

    if method not in METHODS:
        error_line(f"--method {method}: choose one of {', '.join(METHODS)}")
        raise typer.Exit(2)
    if score not in SCORE_TYPES:
        error_line(f"--score {score}: choose one of {', '.join(SCORE_TYPES)}")
        raise typer.Exit(2)
    if (ref or mask) and method == "attention":
        error_line("--ref/--mask add references to the decoder method only")
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

    from icm_cli.errors import IcmError
    from icm_cli.references import load_references

    def targets(source) -> list[Path]:
        return [output / f"{source.stem}.png"]

    try:  # the references are read before the model loads: a bad one, or other settings in OUT, cost nothing
        references = load_references(ref, mask, max_pixels) if (ref or mask) else []
    except (IcmError, ValueError) as exc:
        error_line(command_line_text(exc))
        raise typer.Exit(2)
    reads_priors = _decoder_reads_priors(decoder, backbone) if method != "attention" else None
    if reads_priors is False and (method == "decoder" or ref or mask):  # refused before OUT records a run
        error_line(f"--decoder {decoder}: this decoder does not read prior masks; use --decoder auto "
                   "(efficientnet-lite0) or --method attention")
        raise typer.Exit(2)
    resolved = _resolved_method(method, reads_priors)
    settings = {"command": "refine", "masks": input_folders(masks), "images": input_folders([images]),
                "method": resolved, "backbone": backbone, "weights": weights, "size": size}
    if resolved == "attention":
        settings.update(iterations=iterations, score=score)
    else:
        settings.update(decoder=decoder, head_steps=head_steps,
                        references=[r.describe()["digest"] for r in references])
    record_run_or_exit(ctx, output, settings, entries, targets, overwrite=overwrite,
                       references=[r.describe() for r in references])

    def read_pair(source):
        image_path = find_named(images, source.name)
        if image_path is None:
            raise io.InputError(f"{source.path}: no image named {source.name}.* in {images}")
        image = io.read_image(image_path, max_pixels=max_pixels)
        coarse = io.read_mask(source.path, max_pixels=max_pixels)
        if coarse.shape != image.shape[:2]:
            raise io.InputError(f"{source.path}: mask is {coarse.shape[1]}x{coarse.shape[0]} but "
                                f"{image_path} is {image.shape[1]}x{image.shape[0]}")
        if not (coarse >= 0.5).any():  # every method: an empty result would pass for a refined mask
            raise io.InputError(f"{source.path}: the coarse mask is empty: nothing to refine")
        return image, coarse

    from icm_cli.config import ModelConfig
    from icm_cli.predictor import Predictor

    def attention_predictor() -> Predictor:
        # The attention vote reads no decoder, and runs on torch as it always has (the ONNX trunk would
        # move its masks by float rounding).
        return Predictor(ModelConfig(backbone=backbone, weights=weights, device=device, size=size,
                                     head_steps=head_steps, decoder="none", runtime="torch"))

    try:
        if resolved == "attention":
            predictor, use = attention_predictor(), "attention"
        else:
            predictor, use = Predictor(ModelConfig(backbone=backbone, weights=weights, device=device, size=size,
                                                   head_steps=head_steps, decoder=decoder)), "decoder"
            if not predictor.propagator.reads_priors:
                if method == "decoder" or ref or mask:
                    error_line(f"--decoder {decoder}: this decoder does not read prior masks; use --decoder auto "
                               "(efficientnet-lite0) or --method attention")
                    raise typer.Exit(2)
                predictor, use = attention_predictor(), "attention"  # auto: the attention vote
        if references:
            predictor.set_references(references)

        def work(source) -> None:
            image, coarse = read_pair(source)
            result = predictor.refine(image, coarse, method=use, iterations=iterations, score=score)
            io.write_image_atomic(output / f"{source.stem}.png", result.mask.astype(np.uint8) * 255)
    except IcmError as exc:
        error_line(command_line_text(exc))
        raise typer.Exit(2)

    with torch.no_grad():
        reporter = ConsoleReporter(quiet=quiet)
        outcome = process_files(entries, targets, work, output=output,
                                overwrite=overwrite, reporter=reporter, description="refine", total=len(entries))
    reporter.summary(outcome, "masks")
    raise typer.Exit(outcome.exit_code)


def _decoder_reads_priors(decoder: str, backbone: str) -> bool | None:
    """Whether ``--decoder`` resolves to weights that read prior masks, known before the model loads
    (from the file's header); None when the weights cannot be read (loading them says why)."""
    import json

    from icm_cli.predict.decoder import read_metadata, resolve_prior_decoder
    from icm_cli.errors import IcmError

    try:
        path = resolve_prior_decoder(decoder, backbone)
        if path is None:
            return False
        config = json.loads(read_metadata(path).get("config") or "{}")
    except (IcmError, ValueError, OSError):
        return None
    return bool(isinstance(config, dict) and config.get("prior"))


def _resolved_method(method: str, reads_priors: bool | None) -> str:
    """The method a run takes, known before the model loads (for the run record): ``auto`` is the
    decoder when ``--decoder`` resolves to weights that read priors, else attention."""
    if method != "auto":
        return method
    return "attention" if reads_priors is False else "decoder"
