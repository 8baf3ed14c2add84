"""Result records returned by the core's modules.

They are dataclasses (attribute access, typed fields) that can also be read
like the dicts the seed returned (``result["mask"]``, ``dict(result)``), so
code written against either style works.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields

import torch


class _ReadableAsMapping:
    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@dataclass(eq=False)
class CorrespondenceResult(_ReadableAsMapping):
    """What :class:`~icm_cli.core.InContextCorrespondence` finds.

    mask:          ``[B, 1, h, w]`` 0/1: the pooled reference mask at each
                   source position's best-matching reference position.
    trimap:        ``[B, 1, H', W']`` 0/0.5/1 trimap of ``mask`` (``(h, w)``
                   unless an ``output_size`` was asked for).
    similarity:    ``[B, 1, h, w]`` cosine similarity of that best match.
    matched_index: ``[B, h*w]`` int64 flat index into the reference grid.
    """

    mask: torch.Tensor
    trimap: torch.Tensor
    similarity: torch.Tensor
    matched_index: torch.Tensor


@dataclass(eq=False)
class AttentionResult(_ReadableAsMapping):
    """What the training-free attention modules produce.

    inter:     ``[B, 1, h, w]`` in [0, 1]: where the reference tokens land in
               the source (cross-attention heat, peak 1 per image).
    intra:     ``[B, 1, h, w]`` in [0, 1]: ``inter`` spread by the source's
               self-attention, rescaled to peak 1 per image.
    mask:      ``[B, 1, h, w]`` 0/1: ``intra > threshold`` refined by
               :func:`~icm_cli.core.refine_mask_by_attention`.
    converged: ``[B]`` bool: whether that refinement reached a fixed point.
    levels:    only from the multi-level blocks: ``{(h_l, w_l): AttentionResult}``
               per attention grid, before fusion; empty otherwise.
    """

    inter: torch.Tensor
    intra: torch.Tensor
    mask: torch.Tensor
    converged: torch.Tensor
    levels: dict = field(default_factory=dict)


@dataclass(eq=False)
class SemiTrainingResult(_ReadableAsMapping):
    """What :class:`~icm_cli.core.SemiTrainingAttentionBlocks` produces.

    logits:        ``[B, 1, h, w]`` trainable foreground logits, averaged
                   over the attention levels.
    probability:   ``[B, 1, h, w]`` ``sigmoid(logits)``.
    training_free: the :class:`AttentionResult` its conv blocks read.
    """

    logits: torch.Tensor
    probability: torch.Tensor
    training_free: AttentionResult
