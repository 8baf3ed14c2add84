"""Binary-mask morphology: dilate, erode, trimaps, min-pooling and grid resizing.

All functions take ``[B, 1, H, W]`` masks (any float dtype, or bool/integer
which is worked on as float32), never write into their input, and keep the
device and floating dtype they are given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import binarize, float_dtype, require_4d, require_mask, require_positive_int, require_size


def window_padding(kernel_size: int) -> tuple[int, int]:
    """Padding ``(before, after)`` that keeps a map's size under a ``kernel_size`` window.

    Output position ``i`` sees input positions ``i - before .. i + after``.
    Odd kernels are centred (``before == after == (k - 1) // 2``, the seed's
    padding). Even kernels put the extra pixel after: the seed padded
    ``(k - 1) // 2`` on both sides and so returned a map one pixel smaller;
    padding one more at the end keeps every position the seed did compute
    unchanged and adds the missing last row and column.
    """
    kernel_size = require_positive_int(kernel_size, "kernel_size")
    return (kernel_size - 1) // 2, kernel_size // 2


def cap_kernel(kernel_size: int, size: tuple[int, int]) -> int:
    """A window of ``2 * max(H, W) + 1`` already reaches the whole map from every pixel, so any
    larger kernel gives the same result: capping it keeps ``--kernel 100000`` from allocating
    gigabytes of padding (the band is simply the whole image)."""
    return min(kernel_size, 2 * max(int(size[0]), int(size[1])) + 1)


def dilate(mask: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Grey-scale dilation: a ``kernel_size`` x ``kernel_size`` max filter.

    mask: ``[B, C, H, W]`` (usually ``[B, 1, H, W]``), float or bool/integer.
    Returns ``[B, C, H, W]`` (same size for every kernel, even ones too) in
    the mask's floating dtype (float32 for bool/integer input).
    ``kernel_size == 1`` is the identity (a copy).

    Padding: the seed pads with ``reflect``. For a *max* filter with a
    centred (odd) window the reflected pixels always lie inside the window
    already, so reflect padding gives exactly the same result as ignoring
    everything outside the map, which is what ``replicate`` padding does
    (the replicated edge pixel is also inside the window). This function
    therefore pads with ``replicate``: identical to the seed for odd kernels,
    and unlike ``reflect`` it works on maps no larger than the padding
    (``reflect`` needs ``pad < size``) and does not let an asymmetric (even)
    window see one pixel beyond its far edge.
    """
    require_4d(mask, "mask")
    window_padding(kernel_size)  # validates it
    kernel_size = cap_kernel(kernel_size, mask.shape[-2:])
    before, after = window_padding(kernel_size)
    values = mask.to(float_dtype(mask))
    if kernel_size == 1:
        return values.clone() if values is mask else values
    padded = F.pad(values, (before, after, before, after), mode="replicate")
    # A square max filter is a row max filter followed by a column one: the
    # same values for 2k instead of k*k comparisons per pixel (kernel 20 on
    # an 854x480 mask: ~10x faster).
    rows = F.max_pool2d(padded, kernel_size=(1, kernel_size), stride=1)
    return F.max_pool2d(rows, kernel_size=(kernel_size, 1), stride=1)


def erode(mask: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Grey-scale erosion, the dual of :func:`dilate`: ``1 - dilate(1 - mask)``.

    mask: ``[B, C, H, W]`` with values in [0, 1]. Returns ``[B, C, H, W]``:
    a pixel stays 1 only if its whole window (the part inside the map) is 1,
    so a mask touching the border is not eaten from the border.
    """
    require_4d(mask, "mask")
    values = mask.to(float_dtype(mask))
    return 1 - dilate(1 - values, kernel_size)


def generate_trimap(mask: torch.Tensor, erode_kernel_size: int = 10, dilate_kernel_size: int = 10) -> torch.Tensor:
    """Trimap of a binary mask: sure foreground 1, unknown band 0.5, background 0.

    mask: ``[B, 1, H, W]``, binary or soft (foreground where > 0.5).
    Returns ``[B, 1, H, W]`` with values exactly 0, 0.5 and 1, in the mask's
    floating dtype (float32 for bool/integer input): the mask eroded by
    ``erode_kernel_size`` is 1, the mask dilated by ``dilate_kernel_size``
    minus that is 0.5, the rest is 0. The regions nest for every kernel
    size: eroded ⊆ mask ⊆ dilated.
    """
    require_mask(mask, "mask")
    require_positive_int(erode_kernel_size, "erode_kernel_size")
    require_positive_int(dilate_kernel_size, "dilate_kernel_size")
    foreground = binarize(mask).to(float_dtype(mask))
    sure_foreground = erode(foreground, erode_kernel_size)
    possible_foreground = dilate(foreground, dilate_kernel_size)
    # sure ⊆ possible, so the sum is 2 (sure), 1 (band) or 0 (background).
    return 0.5 * (sure_foreground + possible_foreground)


def maskpooling(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Min-pool a binary mask onto a coarser ``size`` grid.

    mask: ``[B, 1, H, W]``, binary or soft (foreground where > 0.5).
    size: ``(h, w)``, any aspect ratio; H, W need not be multiples of h, w
    (cells follow ``adaptive_max_pool2d``'s bins, which overlap by up to one
    pixel when the sizes do not divide).
    Returns ``[B, 1, h, w]``, 1 where the mask covers the *whole* cell and 0
    elsewhere, in the mask's floating dtype (float32 for bool/integer).
    """
    require_mask(mask, "mask")
    size = require_size(size, "size")
    foreground = binarize(mask).to(float_dtype(mask))
    # min over a cell == 1 - max of the complement over it.
    return 1 - F.adaptive_max_pool2d(1 - foreground, size)


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bring a binary mask onto another grid: the share of each cell covered, > 0.5.

    mask: ``[B, 1, H, W]``, binary or soft (foreground where > 0.5).
    size: ``(h, w)``. Returns ``[B, 1, h, w]`` with values 0/1 in the mask's
    floating dtype (float32 for bool/integer).

    Shrinking in both directions averages each cell (``area``: the cell is
    foreground if more than half of it is); otherwise bilinear interpolation
    (``align_corners=False``) is thresholded at 0.5, which on an enlarged
    binary mask is nearest-neighbour with ties decided by the neighbours.
    """
    require_mask(mask, "mask")
    height, width = require_size(size, "size")
    foreground = binarize(mask).to(float_dtype(mask))
    if foreground.shape[-2:] == (height, width):
        return foreground
    if height <= foreground.shape[-2] and width <= foreground.shape[-1]:
        share = F.interpolate(foreground, size=(height, width), mode="area")
    else:
        share = F.interpolate(foreground, size=(height, width), mode="bilinear", align_corners=False)
    return binarize(share).to(foreground.dtype)
