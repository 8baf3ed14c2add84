"""`icm propagate`: one labelled reference -> masks, trimaps and heat maps for many images."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from icm_cli import io
from icm_cli.commands._shared import build_propagator, load_references
from icm_cli.console import error_line, progress_bar
from icm_cli.predict import DEFAULT_DECODER


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
    kernel: int = typer.Option(20, "--kernel", "-k", min=1, help="Trimap erosion/dilation kernel in pixels (20 gave the best alphas end to end on ~800 px images)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", min=0.0, max=1.0,
                                              help="Fixed threshold on the object probability instead of the automatic (GrabCut) decision."),
    edges: bool = typer.Option(True, "--edges/--no-edges", help="Refine edges with the image's colours (GrabCut)."),
    fine_edges: bool = typer.Option(False, "--fine-edges", help="Run the edge refinement at full instead of half resolution: finer masks (DAVIS dev J +0.01), about 4x its time."),
    head_steps: int = typer.Option(100, "--head-steps", min=0, help="Training steps of the per-run object head (0 = nearest neighbours only)."),
    decoder: str = typer.Option(DEFAULT_DECODER, "--decoder", help="Learned mask decoder: auto (the built-in weights for efficientnet-lite0, see `icm backbones`), builtin, none (training-free), or a .safetensors file."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders of SOURCES."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute sources whose outputs exist (default: skip them)."),
    resize_masks: bool = typer.Option(False, "--resize-masks", help="Stretch a reference mask of another size to its image."),
    max_pixels: int = typer.Option(io.DEFAULT_MAX_PIXELS, "--max-pixels", help="Refuse images with more pixels than this (checked before decoding)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary unless something failed."),
    json_lines: bool = typer.Option(False, "--json", help="Print each manifest line to stdout as it is written."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: only shard I of N (1-based); N runs given the same SOURCES cover each once. Manifest: OUT/manifest.I-of-N.jsonl."),
    engine: str = typer.Option("local", "--engine", help='local (this process) or ray (a Ray cluster; pip install "icm-cli\\[ray]").'),
    address: Optional[str] = typer.Option(None, "--address", help="--engine ray: cluster to join (auto, ray://host:10001); default: start a local one."),
    workers: int = typer.Option(0, "--workers", min=0, help="--engine ray: prediction workers (0 = one per --gpus-per-worker share, else CPUs - 1)."),
    video: Optional[Path] = typer.Option(None, "--video", help="A sequence instead of SOURCES: a folder of frames (name order), a .txt list of frames, or a video file (pip install \"icm-cli\\[video]\"). Each frame also uses what the last ones found."),
    memory: int = typer.Option(0, "--memory", min=0, help="--video: earlier predicted frames that lend tokens to the context (0 measured best: memory drifts)."),
    radius: int = typer.Option(6, "--radius", min=0, help="--video: search window, in feature cells (8 px at --size scale), around the previous mask; 0 = whole frame."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, help="--engine ray: GPUs per worker (a fraction shares one)."),
) -> None:
    """Find the object of the reference mask in every source; write masks, trimaps and heat maps.

    Example: [bold]icm propagate --ref ref.png --mask ref_mask.png frames/ -o out/[/]
    """
    from icm_cli.backbones import WeightsError
    from icm_cli.device import DeviceError
    from icm_cli.pipeline import Manifest, OutputPlan, PropagateRun, parse_kinds
    from icm_cli.shard import named_sources, parse_shard

    try:
        kinds = parse_kinds(save)
    except ValueError as exc:
        error_line(str(exc))
        raise typer.Exit(2)
    if video is not None and sources:
        error_line("give either SOURCES or --video SEQUENCE, not both")
        raise typer.Exit(2)
    if video is not None and engine != "local":
        error_line("--video runs frame after frame on the local engine; --engine ray takes SOURCES")
        raise typer.Exit(2)
    if video is None and not sources:
        error_line("no SOURCES given: name images, folders, or - to read paths from stdin (or --video SEQUENCE)")
        raise typer.Exit(2)
    if video is not None and "masks" not in kinds:
        kinds = ("masks",) + kinds  # a video run resumes from its written masks
    if engine == "ray":  # imported only when chosen: the local path never loads Ray
        from icm_cli.engines import ray_engine
        try:
            ray_engine.require_ray()
        except ray_engine.RayEngineError as exc:
            error_line(str(exc))
            raise typer.Exit(2)
    try:
        shard_spec = parse_shard(shard) if shard is not None else None
        if engine not in ("local", "ray"):
            raise ValueError(f"--engine takes local or ray (got {engine!r})")
        if engine == "local" and (address or workers or gpus_per_worker):
            raise ValueError("--address, --workers and --gpus-per-worker need --engine ray")
        io.ensure_output_folder(output)  # before the model loads: fail in a second, not a minute
        references = load_references(ref, mask, max_pixels, resize_masks)
        if engine == "local":
            propagator = build_propagator(backbone, weights, device, size, head_steps, edges, threshold, fine_edges,
                                          decoder)
            propagator.set_references(references)
        else:  # the workers build the model; a bad --backbone/--weights is reported here, once
            from icm_cli.backbones import create_backbone
            create_backbone(backbone, weights)
            from icm_cli.predict.decoder import load_decoder, resolve_decoder
            decoder_path = resolve_decoder(decoder, backbone)
            if decoder_path is not None:
                load_decoder(decoder_path)
    except (io.InputError, WeightsError, DeviceError, ValueError) as exc:
        error_line(str(exc))
        raise typer.Exit(2)

    matte = None
    if "alpha" in kinds or "cutout" in kinds:
        from icm_cli.matting import solve_alpha
        matte = solve_alpha
    if batch_size == 0 and engine == "local":
        batch_size = 1 if propagator.device.type == "cpu" else 8
    plan = OutputPlan(output, kinds, kernel, overwrite)
    plan.remove_stale_temp_files()
    manifest_name = shard_spec.manifest_name if shard_spec else "manifest.jsonl"
    try:
        manifest = Manifest(output / manifest_name, echo=(lambda line: print(line, flush=True)) if json_lines else None)
    except OSError as exc:
        error_line(f"{output}: cannot write the output folder ({exc.strerror or exc})")
        raise typer.Exit(2)
    show = not quiet and sys.stdout.isatty()
    if video is not None:
        outcome = _run_video(video, propagator, plan, manifest, shard_spec, memory, radius, max_pixels, quiet,
                             matte, show)
        outcome.summary("frames", quiet=quiet or json_lines)
        raise typer.Exit(outcome.exit_code)
    named = named_sources(sources, recursive=recursive, shard=shard_spec)  # stems over the full list
    with progress_bar(None, "propagate", enabled=show) as advance:
        try:
            if engine == "ray":
                model = dict(backbone=backbone, weights=weights, device=device, size=size, head_steps=head_steps,
                             edges=edges, threshold=threshold, fine_edges=fine_edges, decoder=decoder)
                try:
                    outcome = ray_engine.run_ray(
                        named, dict(refs=ref, masks=mask, max_pixels=max_pixels, resize_masks=resize_masks), model,
                        plan, manifest, batch_size=batch_size, max_pixels=max_pixels, matte=matte is not None,
                        advance=advance, options=ray_engine.RayOptions(address, workers, gpus_per_worker))
                except ray_engine.RayEngineError as exc:
                    error_line(str(exc))
                    raise typer.Exit(2)
            else:
                run = PropagateRun(propagator, plan, manifest, batch_size=batch_size, max_pixels=max_pixels,
                                   advance=advance, quiet=quiet, matte=matte)
                outcome = run.run(named)
        finally:
            manifest.close()
    outcome.summary("images", quiet=quiet or json_lines)
    raise typer.Exit(outcome.exit_code)


def _run_video(sequence: Path, propagator, plan, manifest, shard_spec, memory: int, radius: int,
               max_pixels: int, quiet: bool, matte, show: bool):
    """One sequence, frame after frame; a shard that does not own it does nothing."""
    from icm_cli.console import BatchOutcome
    from icm_cli.predict.temporal import TemporalContext
    from icm_cli.shard import select_groups
    from icm_cli.video_run import VideoRun

    if not list(select_groups([sequence], shard_spec, group=lambda p: p.name)):
        manifest.close()
        return BatchOutcome()
    with progress_bar(None, "propagate --video", enabled=show) as advance:
        run = VideoRun(propagator, plan, manifest, TemporalContext(radius=radius, memory=memory),
                       max_pixels=max_pixels, advance=advance, quiet=quiet, matte=matte)
        try:
            return run.run(sequence)
        except io.InputError as exc:
            error_line(str(exc))
            raise typer.Exit(2)
        finally:
            manifest.close()
