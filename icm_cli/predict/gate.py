"""The gate: per source, keep the training-free result when it is the more confident one.

Where a source's evidence lies outside what the decoder learned, the decoder's mask can be worse than
the training-free one; the one whose confidence is higher is kept (:func:`~icm_cli.predict.confidence.assess`,
each with its own formula). :meth:`Propagator.finish_path
<icm_cli.predict.propagator.Propagator.finish_path>` hands in the training-free result of a quarter-size
GrabCut and finishes that path at full quality only when it wins.
"""

from __future__ import annotations

import numpy as np

from icm_cli.predict.evidence import Evidence


def gated(free: tuple[np.ndarray, np.ndarray], learned: tuple[np.ndarray, np.ndarray], evidence: Evidence
          ) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(prob, mask, learned)``: the decoder's full-size ``learned`` result, or the training-free ``free``
    one when its confidence is strictly higher."""
    from icm_cli.predict.confidence import assess

    free_prob, free_mask = free
    prob, mask = learned
    if assess(free_prob, free_mask, evidence).confidence > assess(prob, mask, evidence, learned=True).confidence:
        return free_prob, free_mask, False
    return prob, mask, True
