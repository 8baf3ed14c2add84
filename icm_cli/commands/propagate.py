"""`icm propagate`: one labelled reference -> masks, trimaps and heat maps for many images."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from icm_cli import options as opts
from icm_cli.config import (CPU_BATCH_SIZE, DEFAULT_MAX_PIXELS, DEFAULT_TRIMAP_KERNEL, GPU_BATCH_SIZE, OutputConfig,
                            VideoConfig)
from icm_cli.console import (BatchOutcome, ConsoleReporter, error_line, invocation, progress_bar, status_spinner,
                             warning_line)
from icm_cli.errors import SettingError, command_line_text

D = opts.MODEL_DEFAULTS


def propagate(
    ctx: typer.Context,
    sources: Annotated[Optional[List[str]], typer.Argument(
        metavar="SOURCES", show_default=False,
        help="Images, folders of images, or - to read paths from stdin.")] = None,
    ref: opts.Ref = [],
    mask: opts.Mask = [],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="OUT", rich_help_panel=opts.OUTPUTS, show_default=False,
        help="[red]Required.[/] Output folder: OUT/masks, OUT/trimaps, OUT/heatmaps, OUT/manifest.jsonl.")] = None,
    video: Annotated[Optional[Path], typer.Option(
        "--video", metavar="SEQ", rich_help_panel=opts.INPUTS, show_default=False,
        help="A sequence instead of SOURCES: a folder of frames (name order), a .txt list of frames or a "
             'video file (needs the video extra: pip install -c constraints.txt ".\\[video]"; in a checkout with '
             'the editable install, -e ".\\[dev,video]").')] = None,
    recursive: opts.Recursive = False,
    include: opts.Include = [],
    exclude: opts.Exclude = [],
    resize_masks: opts.ResizeMasks = False,
    max_pixels: opts.MaxPixels = DEFAULT_MAX_PIXELS,
    save: Annotated[str, typer.Option(
        "--save", metavar="KINDS", rich_help_panel=opts.OUTPUTS,
        help="Comma-separated outputs: masks, trimaps, heatmaps, alpha (matte), cutout (RGBA); singular or "
             "plural, and --save-video's names (mask, matte), are accepted too. alpha and cutout solve a matte "
             "per source: about the CPU time of the mask again (854x480: ~0.6 s).")] = "masks,trimaps,heatmaps",
    kernel: Annotated[int, typer.Option(
        "--kernel", "-k", metavar="PX", rich_help_panel=opts.OUTPUTS, callback=opts.at_least(1, "--kernel"),
        help=f"Trimap band: erosion/dilation in pixels ({DEFAULT_TRIMAP_KERNEL} gave the best alphas on ~800 px "
             "images).")] = DEFAULT_TRIMAP_KERNEL,
    save_video: Annotated[Optional[str], typer.Option(
        "--save-video", metavar="KINDS", rich_help_panel=opts.OUTPUTS, show_default=False,
        help="With --video: also write OUT/<kind>.mov for each of mask, matte, cutout (with alpha), overlay "
             "(the source with the mask tinted), made from the PNGs once every frame is done; --save's names "
             "(masks, alpha) and plurals are accepted too. matte and cutout add alpha / cutout to --save: "
             "about 1.8x the time of masks only.")] = None,
    video_format: Annotated[str, typer.Option(
        "--video-format", metavar="EXT", rich_help_panel=opts.OUTPUTS,
        help="Container of --save-video: mov (ProRes; the cutout ProRes 4444) or webm (VP9).")] = "mov",
    overwrite: opts.Overwrite = False,
    only_below: Annotated[Optional[float], typer.Option(
        "--only-below", metavar="C", rich_help_panel=opts.OUTPUTS, callback=opts.in_unit_range("--only-below"),
        show_default=False,
        help="Redo only the results in OUT whose confidence is under C (see icm review); implies --overwrite "
             "for them.")] = None,
    backbone: opts.Backbone = D.backbone,
    weights: opts.Weights = None,
    device: opts.Device = D.device,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", metavar="N", rich_help_panel=opts.MODEL, callback=opts.at_least(0, "--batch-size"),
        help=f"Sources per forward pass; 0 = {CPU_BATCH_SIZE} on CPU, {GPU_BATCH_SIZE} on GPU.")] = 0,
    decoder: opts.Decoder = D.decoder,
    runtime: opts.Runtime = D.runtime,
    size: opts.Size = D.size,
    head_steps: opts.HeadSteps = D.head_steps,
    no_edges: Annotated[bool, typer.Option(
        "--no-edges", rich_help_panel=opts.QUALITY,
        help="Skip the colour-based edge refinement (GrabCut): faster, blockier masks.")] = False,
    fine_edges: Annotated[bool, typer.Option(
        "--fine-edges", rich_help_panel=opts.QUALITY,
        help="Edge refinement at full instead of half resolution: finer masks, about 4x its time.")] = False,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", metavar="T", rich_help_panel=opts.QUALITY, callback=opts.in_unit_range("--threshold"),
        show_default=False,
        help="A fixed threshold on the object probability instead of the automatic decision.")] = None,
    radius: opts.Radius = opts.VIDEO_DEFAULTS.radius,
    memory: opts.Memory = opts.VIDEO_DEFAULTS.memory,
    memory_every: opts.MemoryEvery = opts.VIDEO_DEFAULTS.memory_every,
    readout_prior: opts.ReadoutPrior = opts.VIDEO_DEFAULTS.readout_prior,
    readout_weight: opts.ReadoutWeight = opts.VIDEO_DEFAULTS.readout_weight,
    motion: opts.Motion = opts.VIDEO_DEFAULTS.motion,
    prior: Annotated[Optional[Path], typer.Option(
        "--prior", metavar="DIR", rich_help_panel=opts.INPUTS, show_default=False,
        help="Rough masks of the object per source (last week's, another tool's), paired by name "
             "(DIR/<name>.*); the decoder weighs them against the evidence. Sources without one are "
             "predicted as usual.")] = None,
    fps: Annotated[Optional[str], typer.Option(
        "--fps", metavar="RATE", rich_help_panel=opts.VIDEO, show_default="none",
        help="Frame rate of a folder or list of frames, for --save-video (needed there): 25, 29.97, 30000/1001. "
             "A video file keeps its own.")] = None,
    shard: Annotated[Optional[str], typer.Option(
        "--shard", metavar="I/N", rich_help_panel=opts.SCALE, show_default=False,
        help="Only shard I of N (1-based): N runs over the same SOURCES cover each once. "
             "Manifest: OUT/manifest.I-of-N.jsonl.")] = None,
    engine: Annotated[str, typer.Option(
        "--engine", metavar="NAME", rich_help_panel=opts.SCALE,
        help='local (this process) or ray (a Ray cluster; the ray extra: pip install -c constraints.txt '
             '".\\[ray]").')] = "local",
    address: Annotated[Optional[str], typer.Option(
        "--address", metavar="ADDR", rich_help_panel=opts.SCALE, show_default=False,
        help="--engine ray: the cluster to join (auto, ray://host:10001); default: a local one.")] = None,
    workers: Annotated[int, typer.Option(
        "--workers", metavar="N", rich_help_panel=opts.SCALE, callback=opts.at_least(0, "--workers"),
        help="--engine ray: prediction workers; 0 = one per GPU share, else CPUs - 1.")] = 0,
    gpus_per_worker: Annotated[float, typer.Option(
        "--gpus-per-worker", metavar="G", rich_help_panel=opts.SCALE, callback=opts.at_least(0, "--gpus-per-worker"),
        help="--engine ray: GPUs per worker (a fraction shares one).")] = 0.0,
    quiet: opts.Quiet = False,
    json_lines: Annotated[bool, typer.Option(
        "--json", rich_help_panel=opts.DISPLAY, help="Print each source's manifest record to stdout as a JSON line, as it is written.")] = False,
) -> None:
    """Find the object of the reference mask in every source; write masks, trimaps and heat maps.

    Example: [bold]icm propagate --ref ref.png --mask ref_mask.png photos/ -o out/[/]
    """
    from icm_cli.jobs import PropagateJob, RunInputs, RunOptions, UsageProblem

    from icm_cli.commands.common import check_output_name
    from icm_cli.helpstyle import usage_problem

    reporter = ConsoleReporter(quiet=quiet or json_lines)  # failures as they happen, the summary at the end
    outcome = BatchOutcome(reporter=reporter)  # the clock starts now: loading the model counts in the reported time
    missing = [name for name, given in (("--ref", ref), ("--mask", mask), ("SOURCES (or --video)", sources or video),
                                        ("-o/--output", output is not None)) if not given]
    if missing and (output is None or not ref):
        raise usage_problem(ctx, "missing " + ", ".join(missing[:-1]) + (" and " if len(missing) > 1 else "")
                            + missing[-1])
    check_output_name(output)
    try:
        outputs = OutputConfig.parse(save, kernel)
        videos = _video_outputs(save_video, video_format, fps, video)
        for kind in videos.png_kinds if videos else ():
            outputs = outputs.with_kind(kind)
        job = PropagateJob.check(
            RunInputs(sources=sources or [], video=video, refs=ref, masks=mask, recursive=recursive,
                      include=include, exclude=exclude, resize_masks=resize_masks, max_pixels=max_pixels,
                      prior=prior),
            RunOptions(output=output, overwrite=overwrite, only_below=only_below, shard=shard, engine=engine,
                       address=address, workers=workers, gpus_per_worker=gpus_per_worker, batch_size=batch_size,
                       command=invocation(ctx)),
            outputs=outputs,
            model=opts.model_config(backbone, weights, device, size, head_steps, decoder, runtime, edges=not no_edges,
                                    fine_edges=fine_edges, threshold=threshold),
            video_config=VideoConfig(radius=radius, memory=memory, memory_every=memory_every,
                                     readout_prior=readout_prior, readout_weight=readout_weight, motion=motion))
    except (UsageProblem, ValueError) as exc:
        error_line(command_line_text(exc))
        raise typer.Exit(2)
    from icm_cli.commands.common import note_line

    for note in job.notes if not quiet else ():
        note_line(note)
    show = not quiet and sys.stdout.isatty()
    echo = (lambda line: print(line, flush=True)) if json_lines else None
    if job.nothing_to_do:
        job.record_all_skipped(outcome, echo)
        reporter.summary(outcome, "frames" if video else "images")
        raise typer.Exit(_write_videos(videos, job, outcome, overwrite, quiet, show))
    try:
        with status_spinner("loading the model and building the reference context", enabled=show):
            job.prepare()
    except UsageProblem as exc:
        error_line(command_line_text(exc))
        raise typer.Exit(2)
    for note in job.reference_notes():
        warning_line(note)
    user_mask_note = job.user_mask_note()
    if user_mask_note and not quiet:
        note_line(user_mask_note)
    if job.runtime_note:
        warning_line(job.runtime_note)
    with progress_bar(job.total, "propagate --video" if video else "propagate", enabled=show) as advance:
        try:
            job.run(outcome, advance, echo)
        except UsageProblem as exc:
            error_line(command_line_text(exc))
            raise typer.Exit(2)
    reporter.summary(outcome, "frames" if video else "images")
    raise typer.Exit(_write_videos(videos, job, outcome, overwrite, quiet, show))


def _video_outputs(save_video: Optional[str], video_format: str, fps: Optional[str], video: Optional[Path]):
    """The checked ``--save-video`` request, or None; ValueError with the reason."""
    from icm_cli.video import is_video_file

    if save_video is None:
        if fps is not None or video_format != "mov":
            raise SettingError("--fps and --video-format go with --save-video")
        return None
    from icm_cli.video_out import VideoOutputConfig

    config = VideoOutputConfig.parse(save_video, video_format, fps)
    if video is None:
        raise SettingError("--save-video writes videos of a --video SEQUENCE; give --video")
    clip = is_video_file(Path(video))
    if clip and fps is not None:
        raise SettingError(f"--fps is for a folder or list of frames; {video} keeps its own timing")
    if not clip and fps is None and Path(video).exists():
        raise SettingError(f"--save-video needs --fps for {video}, a folder or list of frames (e.g. --fps 25)")
    config.check_encoders()
    return config


def _write_videos(config, job, outcome: BatchOutcome, overwrite: bool, quiet: bool, show: bool) -> int:
    """Assemble the ``--save-video`` files once every frame is there; the command's exit code."""
    code = outcome.exit_code
    sequence = job.sequence
    if config is None or outcome.interrupted or outcome.stopped or outcome.stdout_closed:
        return code
    if sequence is None or (sequence.counted and not len(sequence)):
        return code  # another shard owns this sequence
    from icm_cli.console import info_line
    from icm_cli.video_out import write_videos

    if outcome.failed:  # an older PNG of a failed frame may still be there: a video would mix two runs
        n = len(outcome.failed)
        names = ", ".join(str(p) for p in config.paths(job.output).values())
        error_line(f"{names}: not written: {n} frame{'s' if n != 1 else ''} failed; fix "
                   f"{'them' if n != 1 else 'it'} and rerun the same command")
        return max(code, 1)
    with status_spinner("writing the videos", enabled=show):
        report = write_videos(config, job.output, sequence, rebuild=overwrite or outcome.done > 0,
                              max_pixels=job.inputs.max_pixels)
    for problem in report.problems:
        error_line(problem)
    for path, what in report.written:
        info_line(f"{path}: {what}", quiet=quiet)
    if report.stopped:  # always shown (--quiet too), as the batch shows a full disk
        from rich.markup import escape

        from icm_cli.console import stderr

        line = (f"stopped: {report.stopped}; the PNGs are kept: free space and rerun the same command to write "
                "the videos (every frame is done and is skipped)")
        stderr.print(f"[bold red]{escape(line)}[/]")
        return max(code, 1)
    if report.interrupted:
        error_line("interrupted while writing the videos; rerun the same command to write them "
                   "(every frame is done and is skipped)")
        return 128 + report.interrupted
    return max(code, 1) if report.problems else code
