"""One `icm propagate` run, from checked options to a finished batch.

Everything that can refuse a run is checked before the model loads (a
usage problem is one line and exit 2 in a second, not a minute): the
output folder, the sources, the references, the settings of results
already in OUT. Then the model is built, and the sources go through the
one :class:`~icm_cli.runner.batch.BatchRunner` on the local engine or Ray.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from icm_cli import io
from icm_cli.config import ModelConfig, OutputConfig, VideoConfig
from icm_cli.console import BatchOutcome
from icm_cli.references import Reference
from icm_cli.runner.manifest import (MANIFEST_NAME, ManifestState, ManifestWriter, below_confidence, input_key,
                                     read_manifests, settings_changes)
from icm_cli.runner.outputs import OutputPlan
from icm_cli.sources import Source, SourceError, SourceFinder, no_sources_hint, skipped_folders_note


class UsageProblem(Exception):
    """The run cannot start as asked; the message is one line for people (exit 2)."""


@dataclass
class PropagateJob:
    output: Path
    plan: OutputPlan
    model: ModelConfig
    video_config: VideoConfig | None
    references: list[Reference]
    ref_files: tuple[list[str], list[str]]
    entries: object                      # list of Source / ListingProblem, or a lazy SourceFinder (stdin)
    sequence: object = None              # FrameSequence for --video
    manifest_name: str = MANIFEST_NAME
    engine: str = "local"
    ray_options: object = None
    batch_size: int = 0
    max_pixels: int = io.DEFAULT_MAX_PIXELS
    resize_masks: bool = False
    settings: dict = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    predictor: object = None
    notes: list[str] = field(default_factory=list)   # things to mention before the run (skipped sub-folders)

    # ------------------------------------------------------------ checks (no model yet)
    @classmethod
    def from_options(cls, *, sources: list[str], video: Path | None, refs: list[str], masks: list[str],
                     output: Path, outputs: OutputConfig, model: ModelConfig, video_config: VideoConfig,
                     recursive: bool = False, include=(), exclude=(), resize_masks: bool = False,
                     max_pixels: int = io.DEFAULT_MAX_PIXELS, overwrite: bool = False,
                     only_below: float | None = None, shard: str | None = None, engine: str = "local",
                     address: str | None = None, workers: int = 0, gpus_per_worker: float = 0.0,
                     batch_size: int = 0, command: list[str] | None = None) -> "PropagateJob":
        """Check everything that needs no model; raises :class:`UsageProblem` with the reason."""
        try:
            return cls._checked(sources=sources, video=video, refs=refs, masks=masks, output=output,
                                outputs=outputs, model=model, video_config=video_config, recursive=recursive,
                                include=include, exclude=exclude, resize_masks=resize_masks,
                                max_pixels=max_pixels, overwrite=overwrite, only_below=only_below, shard=shard,
                                engine=engine, address=address, workers=workers,
                                gpus_per_worker=gpus_per_worker, batch_size=batch_size, command=command)
        except (ValueError, io.InputError) as exc:
            raise UsageProblem(str(exc)) from None

    @classmethod
    def _checked(cls, *, sources, video, refs, masks, output, outputs, model, video_config, recursive, include,
                 exclude, resize_masks, max_pixels, overwrite, only_below, shard, engine, address, workers,
                 gpus_per_worker, batch_size, command) -> "PropagateJob":
        from icm_cli.references import load_references
        from icm_cli.shard import parse_shard

        if engine not in ("local", "ray"):
            raise ValueError(f"--engine takes local or ray (got {engine!r})")
        if engine == "local" and (address or workers or gpus_per_worker):
            raise ValueError("--address, --workers and --gpus-per-worker need --engine ray")
        if video is not None and sources:
            raise ValueError("give either SOURCES or --video SEQUENCE, not both")
        if video is None and not sources:
            raise ValueError("no SOURCES given: name images, folders, or - to read paths from stdin (or --video SEQUENCE)")
        if video is not None and engine != "local":
            raise ValueError("--video runs frame after frame on the local engine; --engine ray takes SOURCES")
        if video is not None and only_below is not None:
            raise ValueError("--only-below reruns single images; a --video sequence is redone whole with --overwrite")
        ray_options = None
        if engine == "ray":
            from icm_cli.engines import ray_engine
            try:
                ray_engine.require_ray()
            except ray_engine.RayEngineError as exc:
                raise ValueError(str(exc)) from None
            ray_options = ray_engine.RayOptions(address, workers, gpus_per_worker)
        shard_spec = parse_shard(shard) if shard is not None else None
        if video is not None:
            outputs = outputs.with_kind("masks")  # a video run resumes from its written masks
        plan = OutputPlan(Path(output), outputs, overwrite=overwrite or only_below is not None)
        io.ensure_output_folder(output)

        sequence, entries, skipped_note = None, None, None
        if video is not None:
            from icm_cli.shard import select_groups
            from icm_cli.video import FrameSequence

            sequence = FrameSequence(video, max_pixels)
            if shard_spec is not None and not list(select_groups([Path(video)], shard_spec, group=lambda p: p.name)):
                sequence.sources = []  # another shard owns this sequence
        else:
            finder = SourceFinder(sources, recursive=recursive, include=include, exclude=exclude,
                                  avoid=plan.written_folders)
            entries = finder if finder.streams_stdin else list(finder)
            skipped_note = skipped_folders_note(finder) if isinstance(entries, list) and entries else None
            if shard_spec is not None:
                entries = _shard_entries(entries, shard_spec)
            if isinstance(entries, list) and not entries and shard_spec is None:
                raise SourceError(no_sources_hint(finder))

        references = load_references(refs, masks, max_pixels, resize_masks)
        settings = {"model": model.result_settings(), "outputs": outputs.result_settings(),
                    "references": [r.describe()["digest"] for r in references]}
        if video is not None:
            settings["video"] = dataclasses.asdict(video_config)
        manifest_name = shard_spec.manifest_name if shard_spec else MANIFEST_NAME
        state = read_manifests(Path(output))
        if only_below is not None:
            entries = _below(entries, state, only_below, OutputPlan(Path(output), outputs))
        job = cls(output=Path(output), plan=plan, model=model, video_config=video_config if video else None,
                  references=references, ref_files=(list(refs), list(masks)), entries=entries, sequence=sequence,
                  manifest_name=manifest_name, engine=engine, ray_options=ray_options, batch_size=batch_size,
                  max_pixels=max_pixels, resize_masks=resize_masks, settings=settings,
                  command=list(command or ["icm", "propagate"]))
        job._check_settings(state)
        job.notes = [skipped_note] if skipped_note else []
        return job

    # ------------------------------------------------------------ state
    @property
    def total(self) -> int | None:
        """Sources in the run when known in advance (not for stdin or a video file)."""
        if self.sequence is not None:
            return len(self.sequence) if self.sequence.counted else None
        return len(self.entries) if isinstance(self.entries, list) else None

    @property
    def nothing_to_do(self) -> bool:
        """Every source's outputs are there already: no model needs loading."""
        if self.sequence is not None:
            return self.sequence.counted and all(self.plan.done(s.stem) for s in self.sequence.sources)
        if not isinstance(self.entries, list):
            return False
        return all(isinstance(e, Source) and self.plan.done(e.stem) for e in self.entries)

    def _runner(self, outcome: BatchOutcome, advance: Callable[[int], None], echo, matte=None):
        from icm_cli.runner.batch import BatchRunner

        try:
            writer = ManifestWriter(self.output / self.manifest_name, echo=echo)
        except io.OutputError as exc:
            raise UsageProblem(str(exc)) from None
        runner = BatchRunner(self.plan, writer, progress=advance, max_pixels=self.max_pixels, matte=matte,
                             outcome=outcome)
        runner.begin(self.command, self.settings, [r.describe() for r in self.references])
        return runner, writer

    def record_all_skipped(self, outcome: BatchOutcome, echo=None) -> None:
        """A rerun with every output present: record the skips, load nothing."""
        runner, writer = self._runner(outcome, lambda n=1: None, echo)
        try:
            sources = self.sequence.sources if self.sequence is not None else self.entries
            for source in sources:
                if runner.halt.is_set():
                    break
                runner.skip(source)
        finally:
            writer.close()

    # ------------------------------------------------------------ the model
    def prepare(self) -> None:
        """Build the model and the reference context (local engine); the Ray engine's workers do it themselves."""
        from icm_cli.backbones import WeightsError
        from icm_cli.device import DeviceError

        try:
            if self.engine == "ray":  # the workers build the model: a bad --weights/--decoder is reported here, once
                from icm_cli.backbones import create_backbone
                from icm_cli.predict.decoder import load_decoder, resolve_decoder

                create_backbone(self.model.backbone, self.model.weights)
                decoder_path = resolve_decoder(self.model.decoder, self.model.backbone)
                if decoder_path is not None:
                    load_decoder(decoder_path)
                return
            from icm_cli.predictor import Predictor

            self.predictor = Predictor(self.model)
            self.predictor.set_references(self.references)
        except (WeightsError, DeviceError, ValueError, io.InputError) as exc:
            raise UsageProblem(str(exc)) from None

    def reference_notes(self) -> list[str]:
        """Doubts about the references (a tiny or inverted mask), once the model's grid is known."""
        from icm_cli.references import reference_warnings

        notes = self._references_among_sources()
        if self.predictor is None:
            return notes
        for ref in self.references:
            notes += reference_warnings(ref, self.predictor.cell_pixels(ref))
        return notes

    def _references_among_sources(self) -> list[str]:
        """A reference image that is also a source is propagated onto itself: say so once, it flatters scores."""
        from icm_cli.video import is_same_file, parse_frame_ref

        sources = self.sequence.sources if self.sequence is not None else self.entries
        found = []
        for ref in self.references:
            path = ref.image_path or ""
            frame = parse_frame_ref(path)
            if frame is not None:
                if self.sequence is not None and self.sequence.is_clip and is_same_file(frame.path, self.sequence.path):
                    found.append(path)
            elif isinstance(sources, list) and any(isinstance(s, Source) and is_same_file(s.path, path)
                                                   for s in sources):
                found.append(path)
        if not found:
            return []
        names = ", ".join(found)
        return [f"{names}: the reference {'is' if len(found) == 1 else 'are'} also among the sources, so "
                f"{'its' if len(found) == 1 else 'their'} result is the reference mask found again; leave "
                f"{'it' if len(found) == 1 else 'them'} out when scoring (icm eval), where it flatters the mean"]

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
            if self.sequence is not None:
                from icm_cli.runner.sequence import run_video

                return run_video(runner, self.sequence, self.predictor.video(self.video_config))
            if self.engine == "ray":
                from icm_cli.engines import ray_engine

                try:
                    return ray_engine.run_ray(self.entries, runner, self.model, self.ref_files,
                                              resize_masks=self.resize_masks, options=self.ray_options,
                                              batch_size=self.batch_size)
                except ray_engine.RayEngineError as exc:
                    raise UsageProblem(str(exc)) from None
            batch = self.batch_size or (1 if self.predictor.device.type == "cpu" else 8)
            return runner.run_images(self.entries, self.predictor, batch_size=batch)
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
        sources = self.sequence.sources if self.sequence is not None else self.entries
        if not isinstance(sources, list) or not any(isinstance(s, Source) and self.plan.done(s.stem) for s in sources):
            return
        shown = "; ".join(changes[:4]) + (" ..." if len(changes) > 4 else "")
        raise UsageProblem(f"{self.output} holds results made with other settings ({shown}); they would be kept as "
                           "they are: pass --overwrite to recompute them, or write to another -o")


def _shard_entries(entries, shard_spec):
    """This shard's share; names were given over the full list, so shards write what one run would."""
    from icm_cli.shard import select

    kept = select(entries, shard_spec, key=lambda e: e.key if isinstance(e, Source) else str(e.path))
    return list(kept) if isinstance(entries, list) else kept


def _below(entries, state: ManifestState, threshold: float, plan: OutputPlan) -> list:
    """``--only-below``: the sources whose latest result is under ``threshold``, and those without outputs yet."""
    chosen = below_confidence(state, threshold)
    return [e for e in entries
            if not isinstance(e, Source) or input_key(str(e.path)) in chosen or not plan.done(e.stem)]
