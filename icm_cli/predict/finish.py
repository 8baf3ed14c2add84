"""Full-size finishing: a full-size probability becomes a mask (GrabCut or a threshold, then cleaning)."""

from __future__ import annotations

import numpy as np

from icm_cli.config import PropagateSettings
from icm_cli.predict import fullres


def full_size(settings: PropagateSettings, image: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A full-size probability -> ``(prob, mask)``: GrabCut on the uncertain band (or a threshold),
    holes filled, components without a confident core dropped."""
    s = settings
    if s.grabcut:
        mask = fullres.grabcut_mask(image, prob, scale=s.grabcut_scale, margin=s.grabcut_margin)
    else:
        mask = prob >= s.threshold
    if s.clean:
        mask = fullres.keep_confident_components(fullres.fill_holes(mask), prob)
    return prob, mask
