"""The one place that maps between an image's own size and the backbone's working grid.

Images are resized (aspect kept, never stretched or cropped) so that their
short side is the working size, then padded on the right and bottom to a
multiple of the backbone's total stride. :class:`WorkingGeometry` remembers
both steps and undoes them for maps that come back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from icm_cli.errors import ArrayError, SettingError


@dataclass(frozen=True)
class WorkingGeometry:
    """How one ``orig_h x orig_w`` image sits in the padded working canvas.

    ``resized_*`` is the image's size after resizing; ``padded_*`` the canvas
    (a multiple of ``multiple``); the image occupies the top-left corner.
    """

    orig_h: int
    orig_w: int
    resized_h: int
    resized_w: int
    padded_h: int
    padded_w: int

    @classmethod
    def fit(cls, orig_h: int, orig_w: int, short_side: int, multiple: int,
            max_upscale: float | None = None, max_long_side: int | None = None) -> "WorkingGeometry":
        """Scale so the short side is ``short_side`` (upscaling at most
        ``max_upscale`` times, and keeping the long side within
        ``max_long_side``, when given), pad to a multiple of ``multiple``."""
        if orig_h < 1 or orig_w < 1:
            raise ArrayError(f"image size must be positive, got {orig_h}x{orig_w}")
        if short_side < multiple:
            raise SettingError(f"working size {short_side} is smaller than the backbone stride {multiple}")
        scale = short_side / min(orig_h, orig_w)
        if max_upscale is not None:
            scale = min(scale, max_upscale)
        if max_long_side is not None:
            # A 3000x2 strip must not become a 480000-pixel-long canvas.
            scale = min(scale, max_long_side / max(orig_h, orig_w))
        rh = max(1, round(orig_h * scale))
        rw = max(1, round(orig_w * scale))
        ph = max(multiple, math.ceil(rh / multiple) * multiple)
        pw = max(multiple, math.ceil(rw / multiple) * multiple)
        return cls(orig_h, orig_w, rh, rw, ph, pw)

    @property
    def padded_size(self) -> tuple[int, int]:
        return (self.padded_h, self.padded_w)

    def to_canvas(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, C, orig_h, orig_w]`` float -> ``[B, C, padded_h, padded_w]``.

        Antialiased bilinear resize, then edge-replicate padding (a constant
        border would look like an object edge to the backbone).
        """
        x = image
        if (self.resized_h, self.resized_w) != (self.orig_h, self.orig_w):
            x = F.interpolate(x, size=(self.resized_h, self.resized_w), mode="bilinear",
                              align_corners=False, antialias=True)
        pad_h, pad_w = self.padded_h - self.resized_h, self.padded_w - self.resized_w
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return x

    def mask_share(self, mask, grid: tuple[int, int]) -> torch.Tensor:
        """A full-size ``[orig_h, orig_w]`` mask (array, bool or float) -> ``[1, 1, *grid]``: its object share
        of each cell of ``grid`` laid over the canvas (0 in the padding)."""
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
        return F.adaptive_avg_pool2d(self.mask_to_canvas(m), grid)

    def mask_to_canvas(self, mask: torch.Tensor, mode: str = "area") -> torch.Tensor:
        """``[B, 1, orig_h, orig_w]`` float mask -> ``[B, 1, padded_h, padded_w]``, zero (background) in the padding.

        Unlike :meth:`to_canvas` the padding is not replicated: a mask must
        not claim object where there is no image.
        """
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        m = F.interpolate(mask, size=(self.resized_h, self.resized_w), mode=mode, **kwargs)
        return F.pad(m, (0, self.padded_w - self.resized_w, 0, self.padded_h - self.resized_h))

    def valid_cells(self, grid_h: int, grid_w: int) -> tuple[int, int]:
        """Rows/columns of a ``grid_h x grid_w`` map (over the canvas) that
        touch the image rather than the padding."""
        return (max(1, math.ceil(self.resized_h * grid_h / self.padded_h)),
                max(1, math.ceil(self.resized_w * grid_w / self.padded_w)))

    def valid_mask(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """``[grid_h, grid_w]`` bool: True on cells that hold image content."""
        vh, vw = self.valid_cells(grid_h, grid_w)
        m = torch.zeros(grid_h, grid_w, dtype=torch.bool)
        m[:vh, :vw] = True
        return m

    def to_resized(self, grid_map: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """``[B, C, gh, gw]`` over the canvas -> ``[B, C, resized_h, resized_w]``
        (padding cropped away)."""
        up = F.interpolate(grid_map, size=(self.padded_h, self.padded_w), mode=mode,
                           **({"align_corners": False} if mode in ("bilinear", "bicubic") else {}))
        return up[..., : self.resized_h, : self.resized_w]

    def to_original(self, grid_map: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """``[B, C, gh, gw]`` over the canvas -> ``[B, C, orig_h, orig_w]``.

        The map is cropped to the image part at grid resolution and resized
        straight to the original size, never materialising the canvas, so an
        8000x6000 source costs one full-size interpolation.
        """
        gh, gw = grid_map.shape[-2:]
        # Crop at grid resolution, keeping the fractional edge cell via the
        # exact sub-cell extent when resizing.
        vh, vw = self.valid_cells(gh, gw)
        crop = grid_map[..., :vh, :vw]
        # Extent of the image inside the cropped cells, in cell units.
        ext_h = self.resized_h * gh / self.padded_h
        ext_w = self.resized_w * gw / self.padded_w
        # Resize the crop so that its full extent (vh cells) maps to
        # orig * vh / ext pixels, then keep the first orig pixels.
        th = max(self.orig_h, round(self.orig_h * vh / ext_h))
        tw = max(self.orig_w, round(self.orig_w * vw / ext_w))
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        up = F.interpolate(crop, size=(th, tw), mode=mode, **kwargs)
        return up[..., : self.orig_h, : self.orig_w]
