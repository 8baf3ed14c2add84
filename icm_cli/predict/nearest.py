"""Foreground-versus-background nearest-neighbour contrast.

Each source position is scored by how much more it resembles its nearest
object tokens than its nearest background tokens. Background contrast is what
makes this work: a similarity to the object alone has no scale that separates
object from clutter.

The reference shows only its own background. In a source with a background
never seen (an astronaut behind a cup that was photographed on a table) the
new clutter resembles neither side, and a pure contrast calls it object.
``source_background_floor`` lets each source lend its own background: cells
that resemble the object less than typical reference background does become
extra background tokens for that source.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from icm_cli.config import CONTRAST_TEMPERATURE


def _cpu_has_bfloat16_matrix_units() -> bool:
    """True where the CPU has AMX tiles for bfloat16 (``amx_bf16``)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = fh.read()
    except OSError:
        return False
    return " amx_bf16" in flags


def similarity_dtype(device: torch.device) -> torch.dtype:
    """The dtype of similarity products on ``device``.

    CUDA: float16. CPUs with AMX: bfloat16, several times faster than float32
    there. Elsewhere float32: with AVX512-BF16 alone, torch's bfloat16 products
    of these shapes ran at half float32's speed (2-core Xeon, 4224 x 512 x 344:
    19.6 ms against 10.1). Cosine similarities in [-1, 1] lose about 0.2% to
    bfloat16, well under what moves a contrast at temperature 0.05. Decided
    by the hardware alone, never by timing, so a machine always computes the
    same masks.
    """
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and _cpu_has_bfloat16_matrix_units():
        return torch.bfloat16
    return torch.float32


def topk_mean_similarity(queries: torch.Tensor, tokens: torch.Tensor, k: int,
                         chunk: int = 8192, dtype: torch.dtype | None = None) -> torch.Tensor:
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
    dtype = dtype or queries.dtype
    queries = queries.to(dtype)
    best = None
    for start in range(0, tokens.shape[0], chunk):
        sims = queries @ tokens[start:start + chunk].T.to(dtype)  # [B, Q, n]
        if best is not None:
            sims = torch.cat([best, sims], dim=-1)
        best = sims.topk(min(k, sims.shape[-1]), dim=-1).values
    return best.float().mean(dim=-1)


def weighted_topk_mean(queries: torch.Tensor, prototypes: torch.Tensor, counts: torch.Tensor, k: int,
                       dtype: torch.dtype | None = None) -> torch.Tensor:
    """:func:`topk_mean_similarity` over a compact token set: the mean of the ``k`` largest similarities
    when each prototype stands for ``counts`` tokens.

    queries ``[B, Q, C]``, prototypes ``[P, C]`` (L2-normalised), counts ``[P]`` (>= 1 each); returns
    ``[B, Q]``. The nearest prototypes are taken in order, each as often as its count, until ``k``
    tokens are averaged (fewer when all prototypes together stand for fewer). With every count 1 this
    is :func:`topk_mean_similarity`; with no prototype the similarity is -1.
    """
    b, q, _ = queries.shape
    if prototypes.shape[0] == 0:
        return queries.new_full((b, q), -1.0)
    dtype = dtype or queries.dtype
    sims = queries.to(dtype) @ prototypes.T.to(dtype)  # [B, Q, P]
    values, index = sims.topk(min(k, prototypes.shape[0]), dim=-1)
    c = counts.to(torch.float32)[index]
    taken = (k - (c.cumsum(-1) - c)).clamp(min=0).minimum(c)  # how many of its tokens each prototype gives
    return (taken * values.float()).sum(-1) / taken.sum(-1)


def compact_tokens(tokens: torch.Tensor, budget: int, hardness: torch.Tensor | None = None, exact_share: float = 0.5,
                   iterations: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor] | None:
    """At most ``budget`` tokens and prototypes of ``tokens`` ``[N, C]`` (L2-normalised) and how many
    tokens each stands for, ``([P, C], [P])``; None when there are no more tokens than ``budget``.

    ``hardness`` ``[N]`` (the token's similarity to the other side): the ``exact_share`` of the budget
    goes to the hardest tokens, kept as they are (count 1): they are the nearest neighbours of the
    cells where object and background are close, where the contrast decides. The rest are summarised
    by spherical k-means (cosine assignment, normalised means, ``iterations`` rounds from tokens drawn
    with ``seed``); prototypes no token chose are dropped. Far from the decision a cell's nearest
    tokens are summarised ones, and a summary's similarity is a little under its members' best (the
    top tokens lean towards the cell), which moves such a cell's already clear contrast a little.
    """
    n = tokens.shape[0]
    if budget <= 0 or n <= budget:
        return None
    x = tokens.float()
    exact = min(int(budget * exact_share), budget - 1) if hardness is not None else 0
    kept = x[:0]
    if exact > 0:
        order = torch.argsort(hardness.float(), descending=True, stable=True)
        kept, x = x[order[:exact]], x[order[exact:]]
    clusters = budget - exact
    generator = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(x.shape[0], generator=generator)[:clusters]].clone()
    for _ in range(iterations + 1):
        assigned = (x @ centres.T).argmax(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assigned, x)
        counts = torch.bincount(assigned, minlength=clusters)
        moved = F.normalize(sums, dim=1)
        centres = torch.where(counts[:, None] > 0, moved, centres)
    used = counts > 0
    prototypes = torch.cat([kept, centres[used]]).contiguous()
    return prototypes, torch.cat([torch.ones(kept.shape[0]), counts[used].to(torch.float32)])


def background_floor(fg: torch.Tensor, bg: torch.Tensor, k: int, quantile: float = 0.5) -> float:
    """The object-similarity of typical reference background.

    fg ``[Nf, C]``, bg ``[Nb, C]``; returns the ``quantile`` of
    ``topk_mean_similarity(bg, fg)``: source cells below it look less like
    the object than half of the known background does. NaN when either side
    is empty (then no source cell is lent).
    """
    if fg.shape[0] == 0 or bg.shape[0] == 0:
        return float("nan")
    sims = topk_mean_similarity(bg[None], fg, k)[0]
    return float(torch.quantile(sims.float(), quantile))


def source_background_similarity(queries: torch.Tensor, sf: torch.Tensor, grid: tuple[int, int],
                                 floor: float, k: int) -> torch.Tensor:
    """Similarity of each query to its own image's clear-background cells.

    queries ``[B, Q, C]`` on a ``grid`` (h*w = Q), sf ``[B, Q]`` their object
    similarity. Candidates are 2x2-pooled cells whose object similarity is
    below ``floor``; returns ``[B, Q]`` top-k mean similarity to them (-1
    where an image has no candidate).
    """
    b, q, c = queries.shape
    h, w = grid
    fmap = queries.transpose(1, 2).reshape(b, c, h, w)
    pooled = F.normalize(F.avg_pool2d(fmap, 2, ceil_mode=True), dim=1).flatten(2).transpose(1, 2)  # [B,P,C]
    pooled_sf = F.avg_pool2d(sf.reshape(b, 1, h, w), 2, ceil_mode=True).flatten(1)  # [B, P]
    candidate = pooled_sf < floor
    kk = min(k, pooled.shape[1])
    out = []
    for i in range(b):
        # Only the candidates can be among the nearest (the rest count as -1): compare with them
        # alone, a few percent of the cells, unless there are fewer than k of them.
        chosen = candidate[i].nonzero()[:, 0]
        if chosen.numel() >= kk:
            sims = queries[i] @ pooled[i, chosen].T  # [Q, n]
        else:
            sims = queries[i] @ pooled[i].T  # [Q, P]
            sims.masked_fill_(~candidate[i][None, :], -1.0)
        out.append(sims.topk(kk, dim=-1).values.float().mean(dim=-1))
    return torch.stack(out)


def contrast_similarities(ft: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor, k: int = 5,
                          source_floor: float | None = None, fg_counts: torch.Tensor | None = None,
                          bg_counts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k mean cosine similarity of every source cell to the object and
    to the background side, each ``[B, 1, h, w]`` (arguments as
    :func:`contrast_probability`; the background side includes the source's
    own clear background when ``source_floor`` is given). ``fg_counts`` /
    ``bg_counts``: that side's tokens are prototypes (:func:`compact_tokens`)
    standing for this many tokens each (:func:`weighted_topk_mean`)."""
    b, c, h, w = ft.shape
    # Contiguous once: every product below would otherwise copy the transposed view (and, for B = 1,
    # fall back from one matrix product to a batched one over expanded tokens).
    queries = ft.flatten(2).transpose(1, 2).contiguous()  # [B, hw, C]
    dtype = similarity_dtype(ft.device)
    sf = (topk_mean_similarity(queries, fg, k, dtype=dtype) if fg_counts is None
          else weighted_topk_mean(queries, fg, fg_counts, k, dtype=dtype))
    sb = (topk_mean_similarity(queries, bg, k, dtype=dtype) if bg_counts is None
          else weighted_topk_mean(queries, bg, bg_counts, k, dtype=dtype))
    if source_floor is not None and source_floor == source_floor:  # not NaN
        sb = torch.maximum(sb, source_background_similarity(queries, sf, (h, w), source_floor, k))
    return sf.reshape(b, 1, h, w), sb.reshape(b, 1, h, w)


def contrast_probability(ft: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor, k: int = 5,
                         temperature: float = CONTRAST_TEMPERATURE, source_floor: float | None = None) -> torch.Tensor:
    """Object probability of every source cell.

    ft: ``[B, C, h, w]`` L2-normalised source features; fg ``[Nf, C]``, bg
    ``[Nb, C]`` reference tokens; returns ``[B, 1, h, w]`` =
    ``sigmoid((topk_fg - topk_bg) / temperature)``. With ``source_floor``
    (see :func:`background_floor`) the background side also includes the
    source's own clear-background cells.
    """
    sf, sb = contrast_similarities(ft, fg, bg, k, source_floor)
    return torch.sigmoid((sf - sb) / temperature)
