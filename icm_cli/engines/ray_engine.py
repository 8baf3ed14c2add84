"""`icm propagate --engine ray`: the same run spread over a Ray cluster with Ray Data.

Plan of one run::

    driver:  list sources and their stems (shard.named_sources), skip the done ones
             -> ray.data.from_items([{path, stem}])
    tasks:   .map(_decode_row)            read each image where it is scheduled
    actors:  .map_batches(PredictWorker)  each builds the backbone and the reference
             context once (same settings and seed as the local run), predicts,
             renders with PropagateRun and writes with io.write_image_atomic
    driver:  iter_rows() -> manifest lines, outcome counts, progress

Outputs are byte-identical to the local engine's on CPU: the workers use the
same ``PropagateRun`` render/write code, the same names and the same head
training seed. Sources and the output folder must be visible at the same
paths on every node (a shared filesystem).

Ray is an optional extra (``pip install "icm-cli[ray]"``) and is imported only here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from icm_cli import console, io
from icm_cli.console import BatchOutcome
from icm_cli.pipeline import Item, Manifest, OutputPlan, PropagateRun

# CPUs per decode task: reading is light and must never wait behind the actors. The
# actors ask for tenths of a CPU, never this: operators with equal resource requests
# are fused by Ray Data, which would move decoding into the actors, serially.
DECODE_CPUS = 0.25

INSTALL_HINT = 'the Ray engine needs Ray: pip install "icm-cli[ray]"'


class RayEngineError(Exception):
    """The Ray run could not start or broke down as a whole; the message is one line for people."""


@dataclass
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
        error = f"{row['path']}: {type(exc).__name__}: {exc}"
    return {"path": row["path"], "stem": row["stem"], "image": image, "error": error,
            "decode_s": time.perf_counter() - t0}


class _Collect:
    """Stands in for :class:`Manifest` on a worker: keeps the records for the driver."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, record: dict) -> None:
        self.records.append(record)


class _QuietOutcome(BatchOutcome):
    """Counts without printing: the driver prints each failure once, from the manifest record."""

    def fail(self, item: str, message: str, quiet: bool = False) -> None:
        self.failed.append((item, message))


class PredictWorker:
    """Ray Data actor: backbone + reference context once, then batches of decoded sources.

    ``references`` holds :func:`load_references`'s arguments (the files are
    read on the worker, as the sources are), ``model`` :func:`build_propagator`'s,
    ``plan`` the output root, kinds and kernel. Returns one JSON manifest
    record per source.
    """

    def __init__(self, references: dict, model: dict, plan: dict, batch_size: int, matte: bool,
                 threads: int, cwd: str) -> None:
        import torch

        from icm_cli.commands._shared import build_propagator, load_references

        if os.path.isdir(cwd):  # relative SOURCES, references and OUT mean what they mean on the driver
            os.chdir(cwd)
        torch.set_num_threads(max(1, threads))
        torch.set_grad_enabled(False)
        self.propagator = build_propagator(**model)
        self.propagator.set_references(load_references(**references))
        self.plan = OutputPlan(Path(plan["root"]), tuple(plan["kinds"]), plan["kernel"], overwrite=True)
        self.batch_size = batch_size if batch_size > 0 else (1 if self.propagator.device.type == "cpu" else 8)
        self.matte = None
        if matte:
            from icm_cli.matting import solve_alpha
            self.matte = solve_alpha

    def __call__(self, batch: dict) -> dict:
        collect = _Collect()
        run = PropagateRun(self.propagator, self.plan, collect, batch_size=self.batch_size, quiet=True,
                           matte=self.matte)
        run.outcome = _QuietOutcome()
        items = []
        for path, stem, image, error, decode_s in zip(batch["path"], batch["stem"], batch["image"],
                                                      batch["error"], batch["decode_s"]):
            items.append(Item(Path(str(path)), str(stem), image=None if error else np.asarray(image, np.uint8),
                              error=str(error) or None, decode_s=float(decode_s)))
        run.complete(items)
        return {"record": np.array([json.dumps(r, ensure_ascii=False) for r in collect.records], dtype=object)}


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


def run_ray(sources: Iterable[tuple[Path, str]], references: dict, model: dict, plan: OutputPlan,
            manifest: Manifest, *, options: RayOptions, batch_size: int = 0,
            max_pixels: int = io.DEFAULT_MAX_PIXELS, matte: bool = False,
            advance: Callable[[int], None] = lambda n=1: None) -> BatchOutcome:
    """Run `icm propagate` on Ray; the manifest and outcome are as the local engine's.

    ``sources`` are ``(path, stem)`` pairs (stems already allocated over the
    full list); ``references`` holds :func:`load_references`'s keyword
    arguments (``refs``, ``masks``, ``max_pixels``, ``resize_masks``; the
    driver should have loaded them once to report problems before starting),
    ``model`` :func:`build_propagator`'s.
    Raises :class:`RayEngineError` when the run as a whole fails.
    """
    require_ray()
    import ray
    import ray.data

    # Skipping is decided here, as the local engine does, so workers only see real work.
    driver = PropagateRun(None, plan, manifest, advance=advance, quiet=True)
    todo = []
    for path, stem in sources:
        if plan.done(stem):
            driver.skip(Item(path, stem))
        else:
            todo.append({"path": str(path), "stem": stem})
    outcome = driver.outcome
    if not todo:
        return outcome

    model = dict(model)
    if model.get("device", "auto") == "auto":  # workers without a GPU share must not grab one
        model["device"] = "cuda" if options.gpus_per_worker > 0 else "cpu"
    started = _connect(options.address)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.enable_auto_log_stats = False
        # Ray Data logs whole remote tracebacks; the run's failure is one line below (--debug keeps them).
        logging.getLogger("ray.data").setLevel(logging.ERROR if console.DEBUG else logging.CRITICAL)
        workers, cpus_each, threads = _pool(options)
        # Blocks of at most 64 sources, and a few per worker, so that decoding keeps up and spreads.
        blocks = min(len(todo), max(4 * workers, math.ceil(len(todo) / 64)))
        ds = ray.data.from_items(todo, override_num_blocks=blocks)
        ds = ds.map(_decode_row, fn_kwargs={"max_pixels": max_pixels, "cwd": os.getcwd()}, num_cpus=DECODE_CPUS)
        ds = ds.map_batches(
            PredictWorker,
            fn_constructor_kwargs={"references": references, "model": model,
                                   "plan": {"root": str(plan.root), "kinds": list(plan.kinds),
                                            "kernel": plan.kernel},
                                   "batch_size": batch_size, "matte": matte, "threads": threads,
                                   "cwd": os.getcwd()},
            batch_size=max(1, batch_size) if batch_size else (8 if options.gpus_per_worker > 0 else 1),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_each,
            num_gpus=options.gpus_per_worker or None,
        )
        try:
            for row in ds.iter_rows():
                record = json.loads(row["record"])
                manifest.write(record)
                if record["status"] == "failed":
                    outcome.fail(record["input"], record["error"])
                else:
                    outcome.done += 1
                advance(1)
        except Exception as exc:
            raise RayEngineError(f"the Ray run stopped: {_first_line(exc)}") from None
    finally:
        if started:
            ray.shutdown()
    return outcome
