"""Foreground-versus-background nearest-neighbour contrast.

Each source position is scored by how much more it resembles its nearest
object tokens than its nearest background tokens. Background contrast is what
makes this work: a similarity to the object alone has no scale that separates
object from clutter.
"""

from __future__ import annotations

import torch


def topk_mean_similarity(queries: torch.Tensor, tokens: torch.Tensor, k: int,
                         chunk: int = 8192) -> torch.Tensor:
    """Mean of the ``k`` largest cosine similarities of each query to ``tokens``.

    queries: ``[B, Q, C]`` and tokens ``[N, C]``, both L2-normalised;
    returns ``[B, Q]``. With no tokens the similarity is -1 (the least
    possible), so an empty background never wins. Tokens are processed in
    chunks and the running top-k kept, so memory is ``O(Q * (k + chunk))``.
    """
    b, q, _ = queries.shape
    if tokens.shape[0] == 0:
        return queries.new_full((b, q), -1.0)
    k = min(k, tokens.shape[0])
    best = None
    for start in range(0, tokens.shape[0], chunk):
        sims = queries @ tokens[start:start + chunk].T.to(queries.dtype)  # [B, Q, n]
        if best is not None:
            sims = torch.cat([best, sims], dim=-1)
        best = sims.topk(min(k, sims.shape[-1]), dim=-1).values
    return best.float().mean(dim=-1)


def contrast_probability(ft: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor, k: int = 5,
                         temperature: float = 0.05) -> torch.Tensor:
    """Object probability of every source cell.

    ft: ``[B, C, h, w]`` L2-normalised source features; fg ``[Nf, C]``, bg
    ``[Nb, C]`` reference tokens; returns ``[B, 1, h, w]`` =
    ``sigmoid((topk_fg - topk_bg) / temperature)``.
    """
    b, c, h, w = ft.shape
    queries = ft.flatten(2).transpose(1, 2)  # [B, hw, C]
    diff = topk_mean_similarity(queries, fg, k) - topk_mean_similarity(queries, bg, k)
    return torch.sigmoid(diff / temperature).reshape(b, 1, h, w)
