"""What a video run carries from frame to frame: a search window and a memory.

Both are rebuilt from the masks already written, so a resumed run continues
exactly where an uninterrupted one would be.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from icm_cli.core import dilate
from icm_cli.geometry import WorkingGeometry
from icm_cli.predict.tokens import ReferenceTokens, pool_reference_tokens


def mask_on_grid(mask: np.ndarray, geo: WorkingGeometry, grid: tuple[int, int]) -> torch.Tensor:
    """A full-size ``[H, W]`` bool mask -> ``[1, 1, h, w]`` object share of each canvas cell."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.adaptive_avg_pool2d(geo.mask_to_canvas(m), grid)


class TemporalContext:
    """Search window from the previous mask plus a ring buffer of predicted-frame tokens.

    radius: cells the previous mask is grown by to give the window where the
    object may be now (0 = no window). memory: how many earlier predicted
    frames lend tokens (cells wholly inside / outside their masks); old
    frames fall out, so memory use is bounded whatever the length.
    """

    def __init__(self, radius: int = 3, memory: int = 0) -> None:
        self.radius = radius
        self.memory: deque[ReferenceTokens] = deque(maxlen=max(memory, 0) or None)
        self.memory_size = memory
        self.previous: torch.Tensor | None = None  # [1, 1, h, w] object share

    def prior(self, grid: tuple[int, int]) -> torch.Tensor | None:
        """``[1, 1, h, w]`` 0/1 window, or None (first frame, object gone, or no window)."""
        if self.radius <= 0 or self.previous is None or tuple(self.previous.shape[-2:]) != tuple(grid):
            return None
        present = self.previous >= 0.5
        if not present.any():
            return None  # the object left: search everywhere so it can come back
        return dilate(present.float(), 2 * self.radius + 1)

    def update(self, mask: np.ndarray, geo: WorkingGeometry, ft: torch.Tensor | None) -> None:
        """Record a finished frame: its full-size bool mask and (for memory) its ``[1, C, h, w]`` features."""
        grid = tuple(ft.shape[-2:]) if ft is not None else None
        if grid is None:
            return
        share = mask_on_grid(mask, geo, grid)
        self.previous = share
        if self.memory_size > 0:
            valid = geo.valid_mask(*grid)
            self.memory.append(pool_reference_tokens(ft[0], share[0, 0], valid))

    def memory_tokens(self) -> ReferenceTokens | None:
        if not self.memory:
            return None
        return ReferenceTokens.concat(list(self.memory))
