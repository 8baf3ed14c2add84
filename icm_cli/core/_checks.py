"""Input checks shared by the core modules.

Every check raises :class:`ValueError` with a sentence a person can act on;
nothing here uses ``assert`` (asserts vanish under ``python -O`` and tell a
user nothing).
"""

from __future__ import annotations

import torch

#: Masks are binary; soft masks (probabilities, anti-aliased PNGs scaled to
#: [0, 1]) are foreground where strictly above this value. One threshold for
#: the whole core so every function agrees on what "foreground" means.
MASK_THRESHOLD = 0.5


def require_4d(tensor: torch.Tensor, name: str, layout: str = "[B, C, H, W]") -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped {layout}, got {type(tensor).__name__}.")
    if tensor.dim() != 4:
        raise ValueError(f"{name} must be shaped {layout}, got shape {tuple(tensor.shape)}.")


def require_mask(mask: torch.Tensor, name: str = "mask") -> None:
    require_4d(mask, name, "[B, 1, H, W]")
    if mask.shape[1] != 1:
        raise ValueError(f"{name} must have one channel ([B, 1, H, W]), got shape {tuple(mask.shape)}.")


def require_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def require_size(size: object, name: str = "size") -> tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"{name} must be a (height, width) pair of positive integers, got {size!r}.")
    height = require_positive_int(size[0], f"{name}[0] (height)")
    width = require_positive_int(size[1], f"{name}[1] (width)")
    return height, width


def require_attention(attn: torch.Tensor, name: str = "attn") -> tuple[int, int, int]:
    """Check ``attn`` is ``[B, h, w, h*w]``; return ``(B, h, w)``."""
    if not isinstance(attn, torch.Tensor):
        raise TypeError(
            f"{name} must be a self-attention map (torch.Tensor [B, h, w, h*w]), got {type(attn).__name__}."
        )
    if attn.dim() != 4:
        raise ValueError(f"{name} must be a self-attention map shaped [B, h, w, h*w], got {tuple(attn.shape)}.")
    batch, height, width, positions = attn.shape
    if positions != height * width:
        raise ValueError(
            f"{name} must be shaped [B, h, w, h*w]; got {tuple(attn.shape)}, whose last axis "
            f"({positions}) is not h*w = {height * width}."
        )
    return batch, height, width


def broadcast_batch(tensor: torch.Tensor, batch: int, name: str, other: str) -> torch.Tensor:
    """Expand a batch of one to ``batch`` (a cached reference serves a whole source batch)."""
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise ValueError(
        f"{name} has batch {tensor.shape[0]} but {other} has batch {batch}; "
        f"give one {name} per item or a single one for all."
    )


def float_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The working dtype for ``tensor``: its own if floating point, else float32."""
    return tensor.dtype if tensor.is_floating_point() else torch.float32


def binarize(mask: torch.Tensor) -> torch.Tensor:
    """Boolean foreground of a binary or soft mask (strictly above 0.5); never a view of it."""
    if mask.dtype == torch.bool:
        return mask.clone()
    return mask > MASK_THRESHOLD
