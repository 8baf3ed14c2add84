"""`icm propagate --engine ray`: the same run spread over a Ray cluster with Ray Data.

Plan of one run::

    driver:  the job's sources (names given over the full list); done ones are
             recorded skipped by the driver's BatchRunner
             -> ray.data.from_items([{path, key, name, stem}])
    tasks:   .map(_decode_row)            read each image where it is scheduled
    actors:  .map_batches(PredictWorker)  each builds a Predictor from the run's
             ModelConfig and the reference context once (same settings and seed
             as the local run) and runs its batch through a BatchRunner of its
             own, which writes the files and keeps the records
    driver:  iter_rows() -> BatchRunner.accept(record): manifest, counts, progress

Outputs are byte-identical to the local engine's on CPU: the workers run the
same predictor, renderer and writer with the same names and the same head
training seed. Sources and the output folder must be visible at the same
paths on every node (a shared filesystem).

Ray is an optional extra (``pip install "ray[data]"``, or ``".[ray]"`` in the icm checkout) and is imported
only here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from icm_cli import io
from icm_cli.config import ModelConfig, batch_size_for
from icm_cli.engines import Prepared
from icm_cli.errors import RayEngineError  # noqa: F401 (RayEngineError re-exported)
from icm_cli.runner.batch import BatchRunner, Work
from icm_cli.runner.outcome import BatchOutcome, unexpected
from icm_cli.runner.manifest import RecordList, SourceRecord, record_json
from icm_cli.runner.outputs import OutputPlan
from icm_cli.sources import ListingProblem, Source

# CPUs per decode task: reading is light and must never wait behind the actors. The
# actors ask for tenths of a CPU, never this: operators with equal resource requests
# are fused by Ray Data, which would move decoding into the actors, serially.
DECODE_CPUS = 0.25

INSTALL_HINT = 'the Ray engine needs Ray: pip install "ray[data]" (or ".[ray]" in the icm checkout)'


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None     # None: start a local Ray instance (or reuse the one this process has)
    workers: int = 0               # prediction actors; 0 = one per GPU share, else one per CPU but one
    gpus_per_worker: float = 0.0


def require_ray() -> None:
    """Raise :class:`RayEngineError` with the install command when Ray is not installed."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise RayEngineError(INSTALL_HINT) from None


# ------------------------------------------------------------------ remote side

def _decode_row(row: dict, max_pixels: int, cwd: str) -> dict:
    """Ray task: read one source. A bad file becomes an ``error`` string, never a failed task.

    Relative paths are the driver's: they are read relative to its folder ``cwd``.
    """
    t0 = time.perf_counter()
    image, error = np.zeros((0, 0, 3), np.uint8), ""
    full = os.path.join(cwd, row["path"])
    try:
        image = io.read_image(full, max_pixels=max_pixels)
    except io.InputError as exc:
        error = str(exc)
        if error.startswith(full):  # name the file as the user did, as the local engine does
            error = row["path"] + error[len(full):]
    except Exception as exc:  # a decoder bug on one file must not stop the dataset
        error = unexpected(exc, row["path"])
    return {**row, "image": image, "error": error, "decode_s": time.perf_counter() - t0}


class PredictWorker:
    """Ray Data actor: a Predictor and the reference context once, then batches of decoded sources.

    ``model`` is the run's :class:`ModelConfig` (as is), ``references`` the
    reference files (read on the worker, as the sources are), ``plan`` the
    run's :class:`OutputPlan`. Returns one JSON manifest record per source.
    """

    def __init__(self, model: ModelConfig, references: dict, plan: OutputPlan, run_id: str, batch_size: int,
                 threads: int, cwd: str) -> None:
        import torch

        from icm_cli.predictor import Predictor
        from icm_cli.references import load_references

        if os.path.isdir(cwd):  # relative SOURCES, references and OUT mean what they mean on the driver
            os.chdir(cwd)
        torch.set_num_threads(max(1, threads))
        torch.set_grad_enabled(False)
        from icm_cli.runner.user_masks import UserMasks

        self.predictor = Predictor(model)
        refs = load_references(**references)
        self.predictor.set_references(refs)
        self.user_masks = UserMasks(refs)  # a source that is also a reference takes the user's mask
        self.plan = dataclasses.replace(plan, overwrite=True)  # the driver decided what to skip
        self.run_id = run_id
        self.batch_size = batch_size_for(batch_size, on_gpu=self.predictor.device.type != "cpu")

    def __call__(self, batch: dict) -> dict:
        sink = RecordList()
        runner = BatchRunner(self.plan, sink, run_id=self.run_id, outcome=BatchOutcome(),
                             user_masks=self.user_masks)
        works = []
        for path, key, name, stem, image, error, decode_s in zip(
                batch["path"], batch["key"], batch["name"], batch["stem"], batch["image"], batch["error"],
                batch["decode_s"]):
            source = Source(Path(str(path)), str(key), str(name), str(stem))
            works.append(Work(source, image=None if error else np.asarray(image, np.uint8),
                              error=str(error) or None, decode_s=float(decode_s)))
        runner.run_images(works, self.predictor.pipeline, batch_size=self.batch_size)
        return {"record": np.array([record_json(r) for r in sink.records], dtype=object)}


# ------------------------------------------------------------------ driver side

def _first_line(exc: BaseException) -> str:
    """The most telling line of a (possibly remote, multi-line) error."""
    lines = [l.strip() for l in str(exc).strip().splitlines() if l.strip()]
    return lines[-1] if lines else type(exc).__name__


def _connect(address: str | None) -> bool:
    """Join ``address`` (or start a local instance); True if this call started the connection."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                 configure_logging=True)
    except Exception as exc:  # ConnectionError, a bad address, a version mismatch...
        where = address or "a local instance"
        raise RayEngineError(f"cannot start Ray on {where}: {_first_line(exc)}") from None
    return True


def _pool(options: RayOptions) -> tuple[int, float, int]:
    """(actors, CPUs each, torch threads each) for the cluster Ray sees.

    Actors never take every CPU: at least one stays for the decode tasks
    (a pool holding all CPUs starves the read and hangs), hence the
    fractional request on small machines. Each actor runs torch on one
    thread: on CPUs, more workers scale better than more threads per worker.
    """
    import ray

    resources = ray.cluster_resources()
    cpus = float(resources.get("CPU", 1.0))
    gpus = float(resources.get("GPU", 0.0))
    workers = options.workers
    if workers <= 0:
        if options.gpus_per_worker > 0:
            workers = max(1, int(gpus // options.gpus_per_worker))
        else:
            workers = max(1, int(cpus) - 1)
    spare = max(cpus - 1.0, 0.1)
    cpus_each = max(0.1, math.floor(min(1.0, spare / workers) * 10 + 1e-9) / 10)  # tenths (see DECODE_CPUS)
    return workers, cpus_each, 1


class RayEngine:
    """``prepare`` checks the model once and settles its runtime for the workers; ``run`` spreads the
    sources over the cluster (:func:`run_ray`). ``reference_files``: the ``--ref`` and ``--mask`` paths,
    read by each worker as the sources are."""

    predictor = None  # the workers build theirs

    def __init__(self, model: ModelConfig, reference_files: tuple[list[str], list[str]], *, options: RayOptions,
                 resize_masks: bool = False, batch_size: int = 0) -> None:
        self.model = model
        self.reference_files = reference_files
        self.options = options
        self.resize_masks = resize_masks
        self.batch_size = batch_size

    def prepare(self, references=None) -> Prepared:
        """A bad ``--weights``/``--decoder`` is reported here, once; every worker runs the runtime decided
        (and exported into the cache) here. ``references`` are read by the workers, not here."""
        from icm_cli.predictor import prepare_workers

        worker_device = "cuda" if self.options.gpus_per_worker > 0 else "cpu"
        self.model, note = prepare_workers(self.model, worker_device)
        return Prepared(self.model.runtime, note)

    def run(self, runner: BatchRunner, sources, sequence=None) -> BatchOutcome:
        return run_ray(sources, runner, self.model, self.reference_files, options=self.options,
                       resize_masks=self.resize_masks, batch_size=self.batch_size)


def run_ray(entries: Iterable[Source | ListingProblem], runner: BatchRunner, model: ModelConfig,
            reference_files: tuple[list[str], list[str]], *, options: RayOptions, resize_masks: bool = False,
            batch_size: int = 0) -> BatchOutcome:
    """Run `icm propagate` on Ray; ``runner`` (the driver's) writes the manifest and counts.

    ``entries`` are the job's sources with their names; ``reference_files``
    the ``--ref`` and ``--mask`` paths. Raises :class:`RayEngineError` when
    the run as a whole fails.
    """
    require_ray()
    import json

    import ray
    import ray.data

    # Skipping is decided here, as the local engine does, so workers only see real work.
    todo = []
    for entry in entries:
        if isinstance(entry, ListingProblem):
            runner.fail(entry, entry.message)
        elif runner.plan.done(entry.stem):
            runner.skip(entry)
        else:
            todo.append({"path": str(entry.path), "key": entry.key, "name": entry.name, "stem": entry.stem})
    if not todo:
        return runner.outcome

    if model.device == "auto":  # workers without a GPU share must not grab one
        model = dataclasses.replace(model, device="cuda" if options.gpus_per_worker > 0 else "cpu")
    refs, masks = reference_files
    references = {"refs": refs, "masks": masks, "max_pixels": runner.max_pixels, "resize_masks": resize_masks}
    started = _connect(options.address)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.enable_auto_log_stats = False
        # Ray Data logs whole remote tracebacks; the run's failure is one line below (--debug keeps them).
        logging.getLogger("ray.data").setLevel(logging.ERROR if runner.debug else logging.CRITICAL)
        workers, cpus_each, threads = _pool(options)
        # Blocks of at most 64 sources, and a few per worker, so that decoding keeps up and spreads.
        blocks = min(len(todo), max(4 * workers, math.ceil(len(todo) / 64)))
        ds = ray.data.from_items(todo, override_num_blocks=blocks)
        ds = ds.map(_decode_row, fn_kwargs={"max_pixels": runner.max_pixels, "cwd": os.getcwd()},
                    num_cpus=DECODE_CPUS)
        ds = ds.map_batches(
            PredictWorker,
            fn_constructor_kwargs={"model": model, "references": references, "plan": runner.plan,
                                   "run_id": runner.run_id, "batch_size": batch_size, "threads": threads,
                                   "cwd": os.getcwd()},
            batch_size=batch_size_for(batch_size, on_gpu=options.gpus_per_worker > 0),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_each,
            num_gpus=options.gpus_per_worker or None,
        )
        try:
            for row in ds.iter_rows():
                runner.accept(SourceRecord.from_dict(json.loads(row["record"])))
                if runner.halt.is_set():
                    break
        except Exception as exc:
            raise RayEngineError(f"the Ray run stopped: {_first_line(exc)}") from None
    finally:
        if started:
            ray.shutdown()
    return runner.outcome
