"""One `icm propagate` run, from checked options to a finished batch.

Everything that can refuse a run is checked before the model loads (a
usage problem is one line and exit 2 in a second, not a minute): the
output folder, the sources, the references, the settings of results
already in OUT. Then the engine (:mod:`icm_cli.engines`: local or Ray) is
prepared, and run with the one :class:`~icm_cli.runner.batch.BatchRunner`.
This module only checks and dispatches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from icm_cli import io
from icm_cli.config import ModelConfig, OutputConfig, VideoConfig
from icm_cli.errors import IcmError, SettingError, UsageProblem, command_line_text  # noqa: F401 (UsageProblem re-exported)
from icm_cli.references import Reference
from icm_cli.runner.outcome import BatchOutcome
from icm_cli.runner.manifest import (MANIFEST_NAME, ManifestState, ManifestWriter, below_confidence, input_key,
                                     read_manifests, settings_changes)
from icm_cli.runner.outputs import OutputPlan
from icm_cli.runner.run_check import refusal
from icm_cli.runner.user_masks import UserMasks
from icm_cli.shard import Shard
from icm_cli.sources import Source, SourceError, SourceFinder, SourceList, no_sources_hint, skipped_folders_note

if TYPE_CHECKING:
    from icm_cli.predictor import Predictor
    from icm_cli.video import FrameSequence


@dataclass(frozen=True)
class RunInputs:
    """What a run reads: SOURCES (or one ``--video`` sequence) and the reference pairs."""

    sources: tuple[str, ...] = ()        # images, folders, or "-" for paths on stdin
    video: Path | None = None            # a sequence instead of SOURCES
    refs: tuple[str, ...] = ()
    masks: tuple[str, ...] = ()          # one per ref
    recursive: bool = False
    include: tuple[str, ...] = ()        # shell patterns on the path under its SOURCES folder, or the name
    exclude: tuple[str, ...] = ()
    resize_masks: bool = False           # a reference mask of another size is resized instead of refused
    max_pixels: int = io.DEFAULT_MAX_PIXELS
    prior: Path | None = None            # a folder of prior masks, paired with the sources by name

    def __post_init__(self) -> None:  # lists given by a command or a caller become tuples: the value stays frozen
        for name in ("sources", "refs", "masks", "include", "exclude"):
            object.__setattr__(self, name, tuple(str(x) for x in getattr(self, name)))

    def check(self) -> None:
        if self.video is not None and self.sources:
            raise SettingError("give either SOURCES or --video SEQUENCE, not both")
        if self.video is None and not self.sources:
            raise SettingError("no SOURCES given: name images, folders, or - to read paths from stdin (or --video SEQUENCE)")
        self._check_clips()
        if self.prior is not None:
            if self.video is not None:
                raise SettingError("--prior pairs masks with SOURCES by name; a --video run takes each frame's "
                                 "prior from the frame before")
            if not Path(self.prior).is_dir():
                raise SettingError(f"{self.prior}: --prior must be a folder of masks named like the sources")

    def _check_clips(self) -> None:
        """A video file given whole where its frames are meant (a SOURCE, a ``--ref`` without ``@N``):
        refused with the way to say it, before OUT is created."""
        from icm_cli.video import whole_clip_hint

        for text, role in [*((s, "source") for s in self.sources), *((r, "ref") for r in self.refs)]:
            hint = whole_clip_hint(text, role)
            if hint is not None:
                raise SettingError(hint)


@dataclass(frozen=True)
class RunOptions:
    """Where a run writes, what it redoes, and how it is spread."""

    output: Path
    overwrite: bool = False
    only_below: float | None = None      # redo only results under this confidence (and missing ones)
    shard: str | None = None             # "I/N"
    engine: str = "local"                # local or ray
    address: str | None = None           # --engine ray: the cluster
    workers: int = 0                     # --engine ray: prediction actors; 0 = automatic
    gpus_per_worker: float = 0.0         # --engine ray
    batch_size: int = 0                  # 0 = the device's default
    command: tuple[str, ...] = ("icm", "propagate")  # as recorded in the manifest

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "command", tuple(self.command))

    def check(self, inputs: RunInputs) -> None:
        if self.engine not in ("local", "ray"):
            raise SettingError(f"--engine takes local or ray (got {self.engine!r})")
        if self.engine == "local" and (self.address or self.workers or self.gpus_per_worker):
            raise SettingError("--address, --workers and --gpus-per-worker need --engine ray")
        inputs.check()
        if inputs.prior is not None and self.engine != "local":
            raise SettingError("--prior runs on the local engine (or --shard); --engine ray takes no priors")
        if inputs.video is not None and self.engine != "local":
            raise SettingError("--video runs frame after frame on the local engine; --engine ray takes SOURCES")
        if inputs.video is not None and self.only_below is not None:
            raise SettingError("--only-below reruns single images; a --video sequence is redone whole with --overwrite")
        if self.engine == "ray":
            from icm_cli.engines import ray_engine
            try:
                ray_engine.require_ray()
            except ray_engine.RayEngineError as exc:
                raise SettingError(str(exc)) from None


@dataclass
class PropagateJob:
    """One checked run: its inputs and options, the configs, and what was found before any model loads.

    ``sources`` are the images of a SOURCES run, or the frames of a
    ``--video`` sequence (a video file's as its container counts them, so
    a rerun knows which are done, and the progress bar its total, before
    anything is decoded).
    """

    inputs: RunInputs
    options: RunOptions
    model: ModelConfig
    video_config: VideoConfig | None     # set for a --video run
    plan: OutputPlan
    references: list[Reference]
    sources: SourceList
    sequence: FrameSequence | None = None
    shard: Shard | None = None
    settings: dict = field(default_factory=dict)
    user_masks: UserMasks | None = None  # sources that are references: their result is the user's mask
    predictor: Predictor | None = None  # the local engine's, once prepared
    engine: object | None = None         # the prepared engine (LocalEngine or RayEngine)
    runtime_note: str | None = None      # why --runtime auto fell back to torch (said once)
    notes: list[str] = field(default_factory=list)   # things to mention before the run (skipped sub-folders)

    # ------------------------------------------------------------ checks (no model yet)
    @classmethod
    def check(cls, inputs: RunInputs, options: RunOptions, *, model: ModelConfig, outputs: OutputConfig,
              video_config: VideoConfig) -> "PropagateJob":
        """Check everything that needs no model; raises :class:`UsageProblem` with the reason."""
        try:
            return cls._checked(inputs, options, model, outputs, video_config)
        except UsageProblem:
            raise
        except (ValueError, IcmError) as exc:
            raise UsageProblem(command_line_text(exc)) from None

    @classmethod
    def _checked(cls, inputs: RunInputs, options: RunOptions, model: ModelConfig, outputs: OutputConfig,
                 video_config: VideoConfig) -> "PropagateJob":
        from icm_cli.references import load_references
        from icm_cli.shard import parse_shard

        options.check(inputs)
        shard = parse_shard(options.shard) if options.shard is not None else None
        if inputs.video is not None:
            outputs = outputs.with_kind("masks")  # a video run resumes from its written masks
        plan = OutputPlan(options.output, outputs, overwrite=options.overwrite or options.only_below is not None)
        io.ensure_output_folder(options.output)

        sequence, skipped_note = None, None
        if inputs.video is not None:
            sequence = _sequence(inputs, shard)
            sources = SourceList(sequence.listed_frames(), listed=True)  # a clip's as its container counts them
        else:
            sources, skipped_note = _find_sources(inputs, plan, shard)

        references = load_references(list(inputs.refs), list(inputs.masks), inputs.max_pixels, inputs.resize_masks)
        settings = {"model": model.result_settings(), "outputs": outputs.result_settings(),
                    "references": [r.describe()["digest"] for r in references]}
        if inputs.video is not None:
            settings["video"] = dataclasses.asdict(video_config)
        if inputs.prior is not None:
            settings["prior"] = str(Path(inputs.prior).resolve())
        state = read_manifests(options.output)
        user_masks = UserMasks(references, clip=sequence if sequence is not None and sequence.is_clip else None)
        if options.only_below is not None:
            sources = _below(sources, state, options.only_below, OutputPlan(options.output, outputs), user_masks)
        job = cls(inputs=inputs, options=options, model=model,
                  video_config=video_config if inputs.video is not None else None, plan=plan,
                  references=references, sources=sources, sequence=sequence, shard=shard, settings=settings,
                  user_masks=user_masks)
        job._check_settings(state)
        job.notes = [skipped_note] if skipped_note else []
        return job

    # ------------------------------------------------------------ state
    @property
    def output(self) -> Path:
        return self.options.output

    @property
    def manifest_name(self) -> str:
        return self.shard.manifest_name if self.shard is not None else MANIFEST_NAME

    @property
    def total(self) -> int | None:
        """Sources in the run when known in advance (not for stdin)."""
        return self.sources.total

    @property
    def nothing_to_do(self) -> bool:
        """Every source's outputs are there already: no model needs loading."""
        return self.sources.all_done(self.plan.done)

    def _runner(self, outcome: BatchOutcome, advance: Callable[[int], None], echo, matte=None):
        from icm_cli.runner.batch import BatchRunner

        try:
            writer = ManifestWriter(self.output / self.manifest_name, echo=echo)
        except io.OutputError as exc:
            raise UsageProblem(str(exc)) from None
        runner = BatchRunner(self.plan, writer, progress=advance, max_pixels=self.inputs.max_pixels, matte=matte,
                             priors=Path(self.inputs.prior) if self.inputs.prior is not None else None,
                             outcome=outcome, user_masks=self.user_masks)
        runner.begin(list(self.options.command), self.settings, [r.describe() for r in self.references])
        return runner, writer

    def record_all_skipped(self, outcome: BatchOutcome, echo=None) -> None:
        """A rerun with every output present: record the skips, load nothing."""
        runner, writer = self._runner(outcome, lambda n=1: None, echo)
        try:
            for source in self.sources:
                if runner.halt.is_set():
                    break
                runner.skip(source)
        finally:
            writer.close()

    # ------------------------------------------------------------ the model
    def prepare(self) -> None:
        """Prepare the engine: the local one builds the model and the reference context; Ray's checks the
        model once and settles its runtime (its workers build their own)."""
        from icm_cli.backbones.onnx_trunk import runtime_label

        try:
            self.engine = self._engine()
            prepared = self.engine.prepare(self.references)
        except (ValueError, IcmError) as exc:
            raise UsageProblem(command_line_text(exc)) from None
        self.model, self.predictor = self.engine.model, self.engine.predictor
        self.runtime_note = prepared.runtime_note
        self.settings["runtime"] = runtime_label(prepared.runtime)

    def _engine(self):
        opts = self.options
        if opts.engine == "ray":
            from icm_cli.engines.ray_engine import RayEngine, RayOptions

            return RayEngine(self.model, (list(self.inputs.refs), list(self.inputs.masks)),
                             options=RayOptions(opts.address, opts.workers, opts.gpus_per_worker),
                             resize_masks=self.inputs.resize_masks, batch_size=opts.batch_size)
        from icm_cli.engines.local import LocalEngine

        return LocalEngine(self.model, batch_size=opts.batch_size, video=self.video_config)

    def reference_notes(self) -> list[str]:
        """Doubts about the references (a tiny or inverted mask), once the model's grid is known."""
        from icm_cli.references import reference_warnings

        if self.predictor is None:
            return []
        notes = []
        for ref in self.references:
            notes += reference_warnings(ref, self.predictor.pipeline.cell_pixels(ref))
        return notes

    def user_mask_note(self) -> str | None:
        """One line when sources are also references: their result is the mask the user gave, not a
        prediction (None when there are none, or when the sources stream from stdin: never read twice)."""
        if not self.user_masks:
            return None
        if self.sequence is not None:
            n = len(self.user_masks.frames) if self.sequence.is_clip else self.user_masks.count(self.sequence.sources)
            what = "frame"
        elif self.sources.total is not None:
            n, what = self.user_masks.count(self.sources), "source"
        else:
            return None
        if not n:
            return None
        one = n == 1
        return (f"{n} {what}{'' if one else 's'} {'is' if one else 'are'} also "
                f"{'a reference' if one else 'references'}: {'its' if one else 'their'} result is the mask you "
                f"gave (confidence 1), and icm eval leaves {'it' if one else 'them'} out")

    def run(self, outcome: BatchOutcome, advance: Callable[[int], None], echo=None) -> BatchOutcome:
        """Every source through the batch runner; the manifest is closed whatever happens."""
        matte = None
        if self.plan.config.needs_matte:
            from icm_cli.matting import solve_alpha as matte
            if self.sequence is not None:  # frames in order: alphas steadied by the previous frame's
                from icm_cli.alpha_temporal import SequenceMatte
                matte = SequenceMatte(matte)
        self.plan.remove_stale_temp_files()
        runner, writer = self._runner(outcome, advance, echo, matte)
        try:
            if self.options.engine != "ray":
                return self.engine.run(runner, self.sources, self.sequence)
            from icm_cli.engines.ray_engine import RayEngineError

            try:
                return self.engine.run(runner, self.sources)
            except RayEngineError as exc:
                raise UsageProblem(str(exc)) from None
        finally:
            writer.close()

    def _check_settings(self, state: ManifestState) -> None:
        """Refuse to keep results of other settings silently: say what changed and how to proceed."""
        previous = state.last_run
        if previous is None or self.plan.overwrite:
            return
        changes = settings_changes(previous.settings, self.settings)
        if not changes:
            return
        if not self.sources.any_done(self.plan.done):
            return
        raise UsageProblem(refusal(self.output, changes))


def _sequence(inputs: RunInputs, shard: Shard | None) -> FrameSequence:
    """The ``--video`` sequence; with ``--shard``, a whole sequence belongs to one shard."""
    from icm_cli.shard import select_groups
    from icm_cli.video import FrameSequence

    sequence = FrameSequence(inputs.video, inputs.max_pixels)
    if shard is not None and not list(select_groups([Path(inputs.video)], shard, group=lambda p: p.name)):
        sequence.sources = []  # another shard owns this sequence
    return sequence


def _find_sources(inputs: RunInputs, plan: OutputPlan, shard: Shard | None) -> tuple[SourceList, str | None]:
    """SOURCES as this run (this shard) takes them, and a note naming sub-folders left out (no
    ``--recursive``); names are given over the full list, so shards write what one run would."""
    finder = SourceFinder(inputs.sources, recursive=inputs.recursive, include=inputs.include,
                          exclude=inputs.exclude, avoid=plan.written_folders)
    sources = SourceList.of(finder)
    note = skipped_folders_note(finder) if sources.total else None
    if shard is not None:
        return sources.where(lambda e: shard.owns(e.key if isinstance(e, Source) else str(e.path)), lazy=True), note
    if sources.total == 0:
        raise SourceError(no_sources_hint(finder))
    return sources, note


def _below(sources: SourceList, state: ManifestState, threshold: float, plan: OutputPlan,
           user_masks: UserMasks | None = None) -> SourceList:
    """``--only-below``: the sources whose latest result is under ``threshold``, those without outputs yet,
    and those that are references (the fix loop's corrected mask is written whatever the old confidence)."""
    chosen = below_confidence(state, threshold)

    def redo(e) -> bool:
        return (not isinstance(e, Source) or input_key(str(e.path)) in chosen or not plan.done(e.stem)
                or (user_masks is not None and user_masks.reference_for(e) is not None))
    return sources.where(redo)
