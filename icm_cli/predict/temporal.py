"""What a video run carries from frame to frame: the previous mask, a search window and a memory.

All three are rebuilt from the masks already written, so a resumed run continues
exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from icm_cli.config import CONTRAST_TEMPERATURE, VideoConfig
from icm_cli.core import dilate
from icm_cli.geometry import WorkingGeometry
from icm_cli.predict.memory import FrameMemory, KeyProjection
from icm_cli.predict.motion import half_to_prior, mask_half, warp_back


class TemporalContext:
    """What a sequence carries from frame to frame: the previous mask (the decoder's prior), a search
    window around it, and the memory of segmented frames that each frame reads
    (:class:`~icm_cli.predict.memory.FrameMemory`).

    ``config`` (:class:`~icm_cli.config.VideoConfig`, where each default is declared) says how:
    radius: cells the previous mask is grown by to give the window where the
    object may be now (0 = no window). memory, memory_every, readout_prior,
    readout_weight: the memory's slots, which frames take one, and the readout's
    share of the decoder's prior and of the probability. motion: carry the previous mask along the optical flow to the
    current frame (:mod:`icm_cli.predict.motion`) before it becomes the prior.
    ``keys``: the key projection of the memory (None: the features themselves, unit length).
    """

    def __init__(self, config: VideoConfig | None = None, keys: KeyProjection | None = None) -> None:
        config = config or VideoConfig()
        self.config = config
        self.radius = config.radius
        self.motion = config.motion
        self.keys = keys
        self.previous_half: np.ndarray | None = None   # [h2, w2] mask at half the working size (motion)
        self.previous_grey: np.ndarray | None = None   # [h2, w2] uint8 grey frame (motion)
        self.memory = FrameMemory(config.memory, config.memory_every,
                                  temperature=keys.temperature if keys is not None else CONTRAST_TEMPERATURE)
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

    # ------------------------------------------------------------ memory
    def frame_keys(self, ft: torch.Tensor) -> torch.Tensor:
        """``[1, C, h, w]`` features -> ``[D, h, w]`` unit-length keys (no backbone pass: the frame's own features)."""
        if self.keys is None:
            return F.normalize(ft[0].float(), dim=0)
        return self.keys(ft.float())[0]

    def add_reference(self, keys: torch.Tensor, mask: np.ndarray, geo: WorkingGeometry) -> None:
        """A reference (``[D, h, w]`` keys, its full-size mask): a permanent memory slot."""
        share = geo.mask_share(mask, tuple(keys.shape[-2:]))[0, 0]
        held = memory_cells(share, geo.valid_mask(*keys.shape[-2:]))
        self.memory.add_reference(keys[:, held], share[held])

    def readout(self, keys: torch.Tensor, geo: WorkingGeometry, window: torch.Tensor | None = None
                ) -> torch.Tensor | None:
        """The memory's object probability ``[1, 1, h, w]`` for a frame's ``[D, h, w]`` keys (0 off the
        image and outside ``window`` ``[1, 1, h, w]``, where the probability is cut anyway), or None
        without a readout or before anything is held."""
        if not self.config.reads_memory:
            return None
        asked = geo.valid_mask(*keys.shape[-2:])
        if window is not None:
            asked = asked & (window[0, 0] > 0)
        read = self.memory.read(keys[:, asked])
        if read is None:
            return None
        out = torch.zeros(keys.shape[-2:], dtype=read.dtype)
        out[asked] = read
        return out[None, None]

    def update(self, mask: np.ndarray, geo: WorkingGeometry, ft: torch.Tensor | None,
               grey: np.ndarray | None = None, keys: torch.Tensor | None = None,
               index: int | None = None, given: bool = False) -> None:
        """Record a finished frame: its full-size bool mask, its ``[1, C, h, w]`` features (for the
        grid), (for motion) its half-size grey image and (for the memory) its ``[D, h, w]`` keys, its
        frame number and whether the mask is the user's (a reference among the sources)."""
        grid = tuple(ft.shape[-2:]) if ft is not None else None
        if grid is None:
            return
        if self.motion and grey is not None:
            self.previous_half, self.previous_grey = mask_half(mask, geo), grey
        canvas = geo.mask_to_canvas(torch.from_numpy(mask.astype(np.float32))[None, None])
        self.previous = F.adaptive_avg_pool2d(canvas, grid)
        self.previous_fine = F.adaptive_avg_pool2d(canvas, (geo.padded_h // 4, geo.padded_w // 4))
        if keys is not None and self.config.reads_memory:
            share = self.previous[0, 0]
            held = memory_cells(share, geo.valid_mask(*grid))
            self.memory.remember(keys[:, held], share[held], index, given=given)


def memory_cells(share: torch.Tensor, valid: torch.Tensor, margin: int = 2, stride: int = 2) -> torch.Tensor:
    """``[h, w]`` bool: the cells of a frame that a memory slot keeps. Every cell of the object and
    ``margin`` cells around it (where labels are decided), and of the rest of the frame one cell in
    ``stride`` x ``stride`` (the background only has to be found, not outlined): about a third of the
    cells for a mid-sized object, so each frame's readout costs a third."""
    near = dilate((share > 0.01).float()[None, None], 2 * margin + 1)[0, 0] > 0
    lattice = torch.zeros_like(valid)
    lattice[::stride, ::stride] = True
    return valid & (near | lattice)

