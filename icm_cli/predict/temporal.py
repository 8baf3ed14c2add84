"""What a video run carries from frame to frame: the previous mask, a search window and a memory.

Both are rebuilt from the masks already written, so a resumed run continues
exactly where an uninterrupted one would be.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from icm_cli.config import VideoConfig
from icm_cli.core import dilate
from icm_cli.geometry import WorkingGeometry
from icm_cli.predict.motion import half_to_prior, mask_half, warp_back
from icm_cli.predict.tokens import ReferenceTokens, pool_reference_tokens


class TemporalContext:
    """What a sequence carries from frame to frame: the previous mask (the decoder's prior), a search
    window around it, and a ring buffer of predicted-frame tokens.

    ``config`` (:class:`~icm_cli.config.VideoConfig`, where each default is declared) says how:
    radius: cells the previous mask is grown by to give the window where the
    object may be now (0 = no window). memory: how many earlier predicted
    frames lend tokens (cells wholly inside / outside their masks); old
    frames fall out, so memory use is bounded whatever the length. motion:
    carry the previous mask along the optical flow to the current frame
    (:mod:`icm_cli.predict.motion`) before it becomes the prior.
    """

    def __init__(self, config: VideoConfig | None = None) -> None:
        config = config or VideoConfig()
        self.config = config
        self.radius = config.radius
        self.motion = config.motion
        memory = config.memory
        self.previous_half: np.ndarray | None = None   # [h2, w2] mask at half the working size (motion)
        self.previous_grey: np.ndarray | None = None   # [h2, w2] uint8 grey frame (motion)
        self.memory: deque[ReferenceTokens] = deque(maxlen=max(memory, 0) or None)
        self.memory_size = memory
        self.previous: torch.Tensor | None = None      # [1, 1, h, w] object share on the feature grid
        self.previous_fine: torch.Tensor | None = None  # [1, 1, Hc/4, Wc/4] object share at stride 4

    def window(self, grid: tuple[int, int]) -> torch.Tensor | None:
        """``[1, 1, h, w]`` 0/1 window, or None (first frame, object gone, or no window)."""
        if self.radius <= 0 or self.previous is None or tuple(self.previous.shape[-2:]) != tuple(grid):
            return None
        present = self.previous >= 0.5
        if not present.any():
            return None  # the object left: search everywhere so it can come back
        return dilate(present.float(), 2 * self.radius + 1)

    def prior(self, geo: WorkingGeometry, grey: np.ndarray | None = None) -> torch.Tensor | None:
        """The previous frame's mask as the decoder's prior, ``[1, 1, Hc/4, Wc/4]``, carried along the
        flow to this frame when ``motion`` is on and this frame's half-size ``grey`` is given; None on
        the first frame, after a frame of another size, and while the object is gone (an empty prior
        would vote against finding it when it comes back)."""
        p = self.previous_fine
        if p is None or tuple(p.shape[-2:]) != (geo.padded_h // 4, geo.padded_w // 4) or not (p >= 0.5).any():
            return None
        if self.motion and grey is not None and self.previous_grey is not None \
                and self.previous_grey.shape == grey.shape:
            return half_to_prior(warp_back(self.previous_half, self.previous_grey, grey), geo)
        return p

    def update(self, mask: np.ndarray, geo: WorkingGeometry, ft: torch.Tensor | None,
               grey: np.ndarray | None = None) -> None:
        """Record a finished frame: its full-size bool mask, (for memory) its ``[1, C, h, w]`` features
        and (for motion) its half-size grey image."""
        grid = tuple(ft.shape[-2:]) if ft is not None else None
        if grid is None:
            return
        if self.motion and grey is not None:
            self.previous_half, self.previous_grey = mask_half(mask, geo), grey
        m = torch.from_numpy(mask.astype(np.float32))[None, None]
        canvas = geo.mask_to_canvas(m)
        self.previous = F.adaptive_avg_pool2d(canvas, grid)
        self.previous_fine = F.adaptive_avg_pool2d(canvas, (geo.padded_h // 4, geo.padded_w // 4))
        if self.memory_size > 0:
            valid = geo.valid_mask(*grid)
            self.memory.append(pool_reference_tokens(ft[0], self.previous[0, 0], valid))

    def memory_tokens(self) -> ReferenceTokens | None:
        if not self.memory:
            return None
        return ReferenceTokens.concat(list(self.memory))
