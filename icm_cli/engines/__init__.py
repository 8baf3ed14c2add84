"""Where `icm propagate` runs its sources (``--engine``): each engine is prepared, then run.

- :mod:`icm_cli.engines.local`: this process, the local streaming pipeline (images or one ``--video``);
- :mod:`icm_cli.engines.ray_engine`: a Ray cluster, workers with a predictor and a runner each.

Both have the same two steps: ``prepare(references)`` builds or checks the
model before any source is read (a bad ``--weights`` is one line, once) and
says which runtime runs the backbone (:class:`Prepared`); ``run(runner,
sources, sequence)`` takes the sources through the given
:class:`~icm_cli.runner.batch.BatchRunner`. Each engine is imported only
when chosen, so the local path pays nothing for Ray.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prepared:
    """What preparing an engine decided: the backbone's runtime, and why ``auto`` fell back to torch."""

    runtime: str
    runtime_note: str | None = None
