"""What a run is asked to do, as frozen, picklable values.

Every command builds these from its options; the predictor, the batch runner
and the Ray workers take them as they are. Each knob and its default is
declared here once; the command-line options (:mod:`icm_cli.options`) read
their defaults from these classes. Nothing here imports torch, so ``icm
--help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from icm_cli.errors import SettingError

#: What --decoder and ``ModelConfig.decoder`` default to (declared here, the bottom layer, so the command
#: line can show it without importing torch; ``icm_cli.predict`` re-exports it).
DEFAULT_DECODER = "auto"

#: Images with more pixels than this are refused before they are decoded
#: (about 16k x 16k); ``--max-pixels`` changes it.
DEFAULT_MAX_PIXELS = 260_000_000

#: How ``icm refine`` / :meth:`Predictor.refine <icm_cli.predictor.Predictor.refine>` refine a coarse mask:
#: the learned decoder, ICM's training-free attention vote, or auto (the decoder when it reads priors).
REFINE_METHODS = ("auto", "decoder", "attention")

#: Methods :func:`icm_cli.matting.solve_alpha` accepts, default first.
MATTE_METHODS = ("sm-cf", "cf", "lbdm", "knn", "rw", "lkm", "sm")
DEFAULT_MATTE_METHOD = "sm-cf"

#: Working pixels (height x width of the region solved) above which a matte's
#: region is solved downscaled and the alpha upsampled with a guided filter.
#: The closed-form Laplacian costs about 400 bytes per working pixel, so
#: 1 MP keeps a solve under about 1.5 GB.
DEFAULT_SOLVE_PIXELS = 1_000_000

#: What runs the backbone (``--runtime``): ``auto`` = ONNX Runtime on the CPU when it is installed,
#: torch on CUDA and MPS (see :mod:`icm_cli.backbones.onnx_trunk`).
RUNTIMES = ("auto", "torch", "onnx")

#: What a propagate run can write per source, each into ``OUT/<kind>/``.
OUTPUT_KINDS = ("masks", "trimaps", "heatmaps", "alpha", "cutout")
DEFAULT_KINDS = ("masks", "trimaps", "heatmaps")

#: Trimap band of a propagate run: erosion/dilation in pixels (20 gave the
#: best alphas on ~800 px images).
DEFAULT_TRIMAP_KERNEL = 20

#: Sources per forward pass when ``--batch-size`` is 0: one on a CPU (a batch
#: only adds memory there), eight on a GPU.
CPU_BATCH_SIZE = 1
GPU_BATCH_SIZE = 8


def batch_size_for(requested: int, on_gpu: bool) -> int:
    """The batch size to run: ``requested`` when positive, else the device's default."""
    if requested > 0:
        return requested
    return GPU_BATCH_SIZE if on_gpu else CPU_BATCH_SIZE


#: Sharpness of icm's cosine-similarity contrasts: the fg-vs-bg nearest-neighbour probability
#: ``sigmoid((sim_fg - sim_bg) / T)``, the attention of one reference point (``inspect-attn --point``)
#: EfficientNet's self-attention over its own cells, and the ``--video`` memory's readout when the
#: features themselves are its keys (another backbone than the one its key projection fits). Not ``icm_cli.core.DEFAULT_TEMPERATURE``
#: (0.1): that one softens ICM's training-free attention vote (``icm refine --method attention``), a
#: different knob tuned on its own; both were measured on the dev data and changing either moves masks.
CONTRAST_TEMPERATURE = 0.05

#: The working short side and the object head's steps: the defaults of both settings layers.
DEFAULT_SIZE = 384
DEFAULT_HEAD_STEPS = 100


@dataclass
class PropagateSettings:
    """Every knob of the propagation model (:class:`~icm_cli.predict.propagator.Propagator`), torch-free.

    Defaults were chosen by measurement on the dev data (see benchmarks/quality.py).
    :meth:`ModelConfig.propagate_settings` derives them from the user-facing knobs;
    ``threshold`` here is the one used where GrabCut is off, while
    ``ModelConfig.threshold`` None means "GrabCut decides"."""

    size: int = DEFAULT_SIZE   # short side of the working size, in pixels
    min_size: int = 320        # small images are upscaled to at most this short side
    k: int = 5                 # nearest neighbours averaged per side
    temperature: float = CONTRAST_TEMPERATURE  # sharpness of the fg-vs-bg contrast
    head_steps: int = DEFAULT_HEAD_STEPS  # test-time-trained object head: optimiser steps (0 = no head)
    augmentations: int = 4     # augmented copies of each reference for the head (8: same quality, 2x set-up)
    head_batch: int = 4096     # cells per optimiser step
    head_hidden: int = 0       # hidden width of the head; 0 = linear (generalised better than MLPs)
    head_weight: float = 0.5   # share of the head in the fused probability
    grabcut: bool = True       # colour-model refinement of the uncertain band
    grabcut_scale: float = 0.5
    grabcut_margin: int = 32   # GrabCut on the box around the uncertain band plus this many (scaled) pixels; 0 = all
    clean: bool = True         # fill holes, drop components without a confident core
    threshold: float = 0.5     # on the fused probability (used where GrabCut is off or fails)
    intra_gate: float = 0.1    # gate by ICM's intra heat: p *= min(1, intra / this); 0 = off
    source_background: bool = True  # lend each source its own clear background (see nearest.py)
    background_quantile: float = 0.1
    decoder: str = DEFAULT_DECODER  # learned mask decoder: none | auto | builtin | FILE.safetensors (predict/decoder.py)
    gate: bool = True          # per image, keep the training-free result when it is the more confident one
    gate_probe_scale: float = 0.25  # the gate judges the training-free path on a GrabCut at this scale
    token_budget: int = 512    # the contrast compares with at most this many tokens per side (0 = every token) ...
    token_exact_share: float = 0.5  # ... of which this share are the side's hardest tokens, kept exact
    seed: int = 0



@dataclass(frozen=True)
class ModelConfig:
    """How masks are predicted: the backbone and every choice that changes a result.

    Defaults were chosen by measurement on the dev data (README, benchmarks/quality.py).
    """

    backbone: str = "efficientnet-lite0"
    weights: str | None = None        # local weights file or folder for the backbone
    device: str = "auto"              # auto, cpu, cuda, cuda:N or mps
    size: int = DEFAULT_SIZE          # working short side in pixels
    head_steps: int = DEFAULT_HEAD_STEPS  # steps of the per-run object head; 0 = none
    edges: bool = True                # GrabCut refinement of the uncertain band
    fine_edges: bool = False          # ... at full instead of half resolution
    threshold: float | None = None    # a fixed threshold instead of GrabCut's decision
    decoder: str = DEFAULT_DECODER    # learned mask decoder: auto, builtin, none or a .safetensors file
    runtime: str = "auto"             # what runs the backbone: auto, torch or onnx (ONNX Runtime, CPU)

    def __post_init__(self) -> None:
        if self.size < 64:
            raise SettingError(f"size must be at least 64 pixels (got {self.size})", option="--size")
        if self.head_steps < 0:
            raise SettingError(f"head_steps must be 0 or more (got {self.head_steps})", option="--head-steps")
        if self.runtime not in RUNTIMES:
            raise SettingError(f"runtime takes {', '.join(RUNTIMES)} (got {self.runtime!r})", option="--runtime")
        if self.threshold is not None and not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise SettingError(f"threshold must be a number from 0 to 1 (got {self.threshold})", option="--threshold")

    def result_settings(self) -> dict:
        """The settings that change what is written (not where, or how fast): recorded in the manifest.

        Neither the device nor the runtime is one: they compute the same network and move masks only by
        float rounding (the run record keeps the runtime that ran under ``settings["runtime"]``, apart).
        """
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("device", "runtime")}

    def propagate_settings(self) -> PropagateSettings:
        """The propagator's full :class:`PropagateSettings` for this config."""
        settings = PropagateSettings(size=self.size, head_steps=self.head_steps, decoder=self.decoder)
        if self.threshold is not None:
            return dataclasses.replace(settings, grabcut=False, threshold=self.threshold)
        if not self.edges:
            return dataclasses.replace(settings, grabcut=False)
        if self.fine_edges:
            return dataclasses.replace(settings, grabcut_scale=1.0)
        return settings


@dataclass(frozen=True)
class VideoConfig:
    """How a sequence carries what earlier frames found."""

    radius: int = 6   # search window around the previous mask, in feature cells; 0 = whole frame
    memory: int = 4   # memory slots for segmented frames besides the references and the previous frame
    memory_every: int = 5  # a frame whose number is a multiple of this (and that holds the object) takes a slot
    readout_prior: float = 0.5  # the memory readout's share of the decoder's prior (the rest: the previous mask)
    readout_weight: float = 0.0  # its share of the probability itself (outvotes the frame's own evidence)
    motion: bool = True  # carry the previous mask along the optical flow before the decoder reads it
    prior_weight: float = 0.5  # share of the decoder pass that reads the previous mask (the rest: one without)

    def __post_init__(self) -> None:
        if self.radius < 0 or self.memory < 0:
            raise SettingError("radius and memory must be 0 or more", option="--radius and --memory", setting="radius and memory")
        if self.memory_every < 1:
            raise SettingError(f"memory_every must be at least 1 (got {self.memory_every})", option="--memory-every",
                               setting="memory_every")
        for name in ("readout_prior", "readout_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SettingError(f"{name} is between 0 and 1 (got {value})", option="--" + name.replace("_", "-"),
                                   setting=name)

    @property
    def reads_memory(self) -> bool:
        """Whether frames read the memory of earlier frames (:mod:`icm_cli.predict.memory`)."""
        return self.readout_weight > 0 or self.readout_prior > 0

    @property
    def memory_span(self) -> int:
        """How many frames before a frame can hold its memory slots (what a resumed run reads again)."""
        return self.memory * self.memory_every + 1 if self.reads_memory else 1


@dataclass(frozen=True)
class OutputConfig:
    """What is written per source: ``root/<kind>/<stem>.png`` for each kind."""

    kinds: tuple[str, ...] = DEFAULT_KINDS
    kernel: int = DEFAULT_TRIMAP_KERNEL   # trimap erosion/dilation kernel in pixels

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in OUTPUT_KINDS]
        if unknown or not self.kinds:
            raise SettingError(f"kinds must be a list of {', '.join(OUTPUT_KINDS)}; "
                             f"got {','.join(self.kinds) or 'nothing'}", option="--save")
        if self.kernel < 1:
            raise SettingError(f"kernel must be at least 1 pixel (got {self.kernel})", option="--kernel")

    @classmethod
    def parse(cls, save: str, kernel: int = DEFAULT_TRIMAP_KERNEL) -> "OutputConfig":
        """``"masks,trimap"`` -> ``OutputConfig(("masks", "trimaps"))`` (either spelling, :mod:`icm_cli.kinds`);
        unknown names raise SettingError (a ValueError) with the closest name."""
        from icm_cli.kinds import parse_png_kinds

        return cls(parse_png_kinds(save, OUTPUT_KINDS), kernel)

    def with_kind(self, kind: str) -> "OutputConfig":
        return self if kind in self.kinds else dataclasses.replace(self, kinds=(kind,) + self.kinds)

    @property
    def needs_matte(self) -> bool:
        return "alpha" in self.kinds or "cutout" in self.kinds

    def result_settings(self) -> dict:
        return {"kernel": self.kernel}
