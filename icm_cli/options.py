"""Command-line options shared by several commands, each declared once.

Defaults come from :mod:`icm_cli.config`, so a knob has one default
everywhere. Numbers are checked by callbacks (finite, in range) rather than
Typer's ``min=``/``max=``, which would print ranges into the help's type
column and squeeze the descriptions on an 80-column terminal.
"""

from __future__ import annotations

import math
from typing import Annotated, List, Optional

import typer

from icm_cli.config import DEFAULT_MAX_PIXELS, ModelConfig, VideoConfig

# Help panels: options grouped by what a user is deciding.
INPUTS = "Inputs"
OUTPUTS = "Outputs"
MODEL = "Model"
QUALITY = "Quality"
VIDEO = "Video (--video)"
SCALE = "Scale-out"
DISPLAY = "Display"

MODEL_DEFAULTS = ModelConfig()
VIDEO_DEFAULTS = VideoConfig()


def at_least(low: float, name: str):
    """A callback that accepts finite numbers >= ``low`` (None passes)."""

    def check(value):
        if value is None:
            return value
        if isinstance(value, float) and not math.isfinite(value):
            raise typer.BadParameter(f"{name} must be a finite number (got {value})")
        if value < low:
            raise typer.BadParameter(f"{name} must be at least {low:g} (got {value:g})")
        return value

    return check


def in_unit_range(name: str):
    """A callback for numbers from 0 to 1 (NaN and infinities refused)."""

    def check(value):
        if value is None:
            return value
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise typer.BadParameter(f"{name} must be a number from 0 to 1 (got {value})")
        return value

    return check


# ------------------------------------------------------------------ references
Ref = Annotated[List[str], typer.Option(
    "--ref", metavar="IMAGE", rich_help_panel=INPUTS, show_default=False,
    help="[red]Required.[/] Reference image showing the object, or frame N of a video file as clip.mp4@N "
         "(from 0); repeat for several.")]
Mask = Annotated[List[str], typer.Option(
    "--mask", metavar="MASK", rich_help_panel=INPUTS, show_default=False,
    help="[red]Required.[/] Mask of the object in the matching --ref: 0/255, 0/1, palette, 16-bit or RGB.")]
ResizeMasks = Annotated[bool, typer.Option(
    "--resize-masks", rich_help_panel=INPUTS, help="Stretch a reference mask of another size to its image.")]
Recursive = Annotated[bool, typer.Option(
    "--recursive", "-r", rich_help_panel=INPUTS,
    help="Descend into sub-folders; outputs mirror them (a/x.jpg -> OUT/masks/a/x.png).")]
RecursiveFiles = Annotated[bool, typer.Option(
    "--recursive", "-r", rich_help_panel=INPUTS,
    help="Descend into sub-folders; outputs mirror them (a/x.png -> OUT/a/x.png).")]
RecursiveSources = Annotated[bool, typer.Option(
    "--recursive", "-r", rich_help_panel=INPUTS,
    help="Descend into sub-folders of SOURCES, as the run did.")]
Include = Annotated[List[str], typer.Option(
    "--include", metavar="GLOB", rich_help_panel=INPUTS, show_default=False,
    help="Only sources whose name or relative path matches, e.g. '*.jpg'; repeatable.")]
Exclude = Annotated[List[str], typer.Option(
    "--exclude", metavar="GLOB", rich_help_panel=INPUTS, show_default=False,
    help="Leave out sources that match, e.g. '*_mask.png'; repeatable.")]
MaxPixels = Annotated[int, typer.Option(
    "--max-pixels", metavar="N", rich_help_panel=INPUTS, callback=at_least(1, "--max-pixels"),
    help="Refuse images with more pixels than this (checked before decoding).")]

# ------------------------------------------------------------------ outputs
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", rich_help_panel=OUTPUTS, help="Recompute sources whose outputs exist (default: skip them; a rerun into an OUT made with "
                         "other settings is refused).")]

# ------------------------------------------------------------------ model
Backbone = Annotated[str, typer.Option(
    "--backbone", "-b", metavar="NAME", rich_help_panel=MODEL, help="Feature backbone (see `icm backbones`).")]
Weights = Annotated[Optional[str], typer.Option(
    "--weights", metavar="PATH", rich_help_panel=MODEL, show_default=False,
    help="Local weights file or folder for the backbone.")]
Device = Annotated[str, typer.Option(
    "--device", metavar="DEV", rich_help_panel=MODEL, help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")]
Decoder = Annotated[str, typer.Option(
    "--decoder", metavar="NAME", rich_help_panel=MODEL,
    help="Learned mask decoder: auto (the built-in weights for efficientnet-lite0), builtin, none "
         "(training-free), or a .safetensors file (see `icm backbones`).")]
Runtime = Annotated[str, typer.Option(
    "--runtime", metavar="NAME", rich_help_panel=MODEL,
    help="What runs the backbone and the learned decoder: auto (ONNX Runtime on the CPU, about 3x faster; "
         "torch on GPUs), torch or onnx. Exported once into the cache folder (README: Speed and caches).")]
Size = Annotated[int, typer.Option(
    "--size", metavar="PX", rich_help_panel=QUALITY, callback=at_least(64, "--size"),
    help="Working short side in pixels: larger is finer and slower.")]
HeadSteps = Annotated[int, typer.Option(
    "--head-steps", metavar="N", rich_help_panel=QUALITY, callback=at_least(0, "--head-steps"),
    help="Training steps of the per-run object head; 0 = nearest neighbours only.")]

# ------------------------------------------------------------------ display
Quiet = Annotated[bool, typer.Option(
    "--quiet", "-q", rich_help_panel=DISPLAY, help="No progress bar or summary unless something failed.")]

# ------------------------------------------------------------------ video
Radius = Annotated[int, typer.Option(
    "--radius", metavar="CELLS", rich_help_panel=VIDEO, callback=at_least(0, "--radius"),
    help="Search window around the previous mask, in feature cells (8 px at --size scale); 0 = whole frame.")]
Motion = Annotated[bool, typer.Option(
    "--motion/--no-motion", rich_help_panel=VIDEO,
    help="Carry the previous mask along the optical flow before the decoder reads it as the prior.")]
Memory = Annotated[int, typer.Option(
    "--memory", metavar="N", rich_help_panel=VIDEO, callback=at_least(0, "--memory"),
    help="Segmented frames the memory keeps besides the references and the previous frame "
         "(every --memory-every-th frame that holds the object; the oldest leaves first).")]
MemoryEvery = Annotated[int, typer.Option(
    "--memory-every", metavar="N", rich_help_panel=VIDEO, callback=at_least(1, "--memory-every"),
    help="Which frames may take a memory slot: those whose number is a multiple of N.")]
ReadoutPrior = Annotated[float, typer.Option(
    "--readout-prior", metavar="S", rich_help_panel=VIDEO, callback=in_unit_range("--readout-prior"),
    help="Share of the decoder's prior read from the memory of earlier frames (the rest: the previous mask); "
         "the decoder weighs it against the frame's own evidence.")]
ReadoutWeight = Annotated[float, typer.Option(
    "--readout-weight", metavar="W", rich_help_panel=VIDEO, callback=in_unit_range("--readout-weight"),
    help="Share of each frame's probability read from the memory directly, outvoting the frame's own evidence "
         "(for objects that change their look; 0.5 kept one that frame 0 alone lost, but cost DAVIS dev 0.003). "
         "With --readout-prior 0 too, no memory is read.")]


def model_config(backbone: str, weights: Optional[str], device: str, size: int, head_steps: int,
                 decoder: str = MODEL_DEFAULTS.decoder, runtime: str = MODEL_DEFAULTS.runtime, **more) -> ModelConfig:
    """The :class:`ModelConfig` of a command's model options (ValueError with a sentence if they clash)."""
    return ModelConfig(backbone=backbone, weights=weights, device=device, size=size, head_steps=head_steps,
                       decoder=decoder, runtime=runtime, **more)


__all__ = ["DEFAULT_MAX_PIXELS", "MODEL_DEFAULTS", "VIDEO_DEFAULTS"]
