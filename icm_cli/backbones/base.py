"""The backbone contract: ``[B, 3, H, W]`` RGB in [0, 1] -> :class:`Features`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class Features:
    """Dense features and self-attention maps of a batch of images.

    ft:   ``[B, C, h, w]`` correspondence features, L2-normalised along C.
    attn: ``{(h_g, w_g): [B, h_g, w_g, h_g * w_g]}`` row-stochastic
          self-attention maps (each position's attention over all positions
          of the same image sums to 1).
    stride: input pixels per cell of ``ft``.
    levels: ``{s: [B, C_s, H/s, W/s]}`` raw (not normalised) activations of
          finer layers the backbone computes anyway, keyed by stride (the
          EfficientNets give 2 and 4; empty where a backbone has none). The
          learned decoder reads them for edges.
    canvas: ``[B, 3, H, W]`` the images in [0, 1] the features were computed
          from, on the CPU, where the caller keeps them (the propagator does,
          for the decoder), else None.
    """

    ft: torch.Tensor
    attn: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    stride: int = 8
    levels: dict[int, torch.Tensor] = field(default_factory=dict)
    canvas: torch.Tensor | None = None

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.ft.shape[-2:])


def affinity_attention(ft: torch.Tensor, temperature: float) -> torch.Tensor:
    """Self-attention of a CNN: softmax over feature affinities.

    ft: ``[B, C, h, w]`` (L2-normalised); returns ``[B, h, w, h*w]`` whose
    last axis sums to 1: ``softmax_j(<f_i, f_j> / temperature)``.
    """
    b, c, h, w = ft.shape
    flat = ft.flatten(2)  # [B, C, hw]
    logits = torch.einsum("bci,bcj->bij", flat, flat) / temperature
    return logits.softmax(dim=-1).reshape(b, h, w, h * w)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] -> ImageNet-normalised, same shape."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def l2_normalise(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    return F.normalize(x, dim=dim, eps=1e-6)


class Backbone(torch.nn.Module):
    """Base class of every backbone.

    Subclasses set ``name``, ``stride`` (pixels per ``ft`` cell),
    ``multiple`` (input sides must be a multiple of this),
    ``feature_dim`` and ``default_size`` (short side of the working size),
    and implement :meth:`forward`.
    """

    name: str = "backbone"
    stride: int = 8
    multiple: int = 32
    feature_dim: int = 0
    default_size: int = 384

    def forward(self, images: torch.Tensor, with_attention: bool = True) -> Features:  # pragma: no cover
        raise NotImplementedError
