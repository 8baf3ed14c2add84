"""A small per-run object classifier trained on the reference (test-time training).

Nearest neighbours compare a source cell with single reference cells; a head
trained on every reference cell (and on augmented copies of the reference)
learns which feature directions separate this object from this background,
which carries over to new poses and to other instances of the same kind.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


class ObjectHead(nn.Module):
    """``[..., C]`` features -> ``[...]`` object logits (MLP C -> hidden -> hidden -> 1,
    or a linear classifier when ``hidden`` is 0)."""

    def __init__(self, in_dim: int, hidden: int = 128) -> None:
        super().__init__()
        if hidden > 0:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                     nn.ReLU(), nn.Linear(hidden, 1))
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def probability_map(self, ft: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` features -> ``[B, 1, h, w]`` object probability."""
        logits = self(ft.permute(0, 2, 3, 1).to(self.net[0].weight.dtype))
        return torch.sigmoid(logits.float()).unsqueeze(1)


def train_object_head(cells: torch.Tensor, targets: torch.Tensor, steps: int = 300,
                      batch: int = 4096, lr: float = 1e-2, seed: int = 0, hidden: int = 128) -> ObjectHead:
    """Fit an :class:`ObjectHead` to soft per-cell targets.

    cells: ``[N, C]`` features; targets: ``[N]`` object area fraction of each
    cell in [0, 1]. Class-balanced binary cross-entropy (the object is often
    a few percent of the cells), Adam, ``steps`` minibatches of ``batch``
    cells sampled with a fixed seed so runs repeat exactly.
    """
    if cells.shape[0] == 0:
        raise ValueError("no reference cells to train the object head on")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)
    cells = cells.detach().float()
    targets = targets.detach().float().clamp(0, 1)
    head = ObjectHead(cells.shape[1], hidden).to(cells.device)
    fg_share = targets.mean().clamp(1e-3, 1 - 1e-3)
    # Weights that make object and background count alike in the loss.
    pos_weight, neg_weight = 0.5 / fg_share, 0.5 / (1 - fg_share)
    params = list(head.parameters())
    # Adam written out (Kingma & Ba 2015, default betas): torch.optim's first
    # step imports torch._dynamo, which costs seconds per run on small CPUs.
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    first = [torch.zeros_like(p) for p in params]
    second = [torch.zeros_like(p) for p in params]
    n = cells.shape[0]
    with _one_thread(), torch.enable_grad():
        for step in range(1, steps + 1):
            idx = torch.randint(0, n, (min(batch, n),), generator=generator).to(cells.device)
            x, y = cells[idx], targets[idx]
            weight = y * pos_weight + (1 - y) * neg_weight
            loss = F.binary_cross_entropy_with_logits(head(x), y, weight=weight)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g, m, v in zip(params, grads, first, second):
                    m.mul_(beta1).add_(g, alpha=1 - beta1)
                    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    p.sub_(lr * (m / (1 - beta1 ** step)) / ((v / (1 - beta2 ** step)).sqrt() + eps))
    head.eval()
    for p in head.parameters():
        p.requires_grad_(False)
    return head


@contextmanager
def _one_thread():
    """Run torch on one thread: reductions then add up in one fixed order, so
    the head (and every mask) is the same on a laptop, a 64-core node or a
    Ray worker. The head is small; one thread costs little."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def augment_reference(image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
                      min_mask_share: float = 0.005) -> tuple[torch.Tensor, torch.Tensor]:
    """One random photometric + geometric variant of a reference.

    image: ``[3, H, W]`` in [0, 1]; mask: ``[1, H, W]`` in [0, 1]. Horizontal
    flip, scale 0.7-1.3, a random crop (at least half of each side) that keeps
    at least ``min_mask_share`` of its area on the object when possible, and
    brightness / contrast / saturation jitter of up to 30%.
    """
    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand((), generator=generator).item()

    if torch.rand((), generator=generator).item() < 0.5:
        image, mask = image.flip(-1), mask.flip(-1)
    _, h, w = image.shape
    for _ in range(10):
        ch, cw = max(8, int(h * uniform(0.5, 1.0))), max(8, int(w * uniform(0.5, 1.0)))
        top = int(uniform(0, h - ch + 1e-6))
        left = int(uniform(0, w - cw + 1e-6))
        crop_mask = mask[:, top:top + ch, left:left + cw]
        if crop_mask.mean().item() >= min_mask_share:
            image = image[:, top:top + ch, left:left + cw]
            mask = crop_mask
            break
    scale = uniform(0.7, 1.3)
    _, h, w = image.shape
    size = (max(8, round(h * scale)), max(8, round(w * scale)))
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    mask = F.interpolate(mask[None], size=size, mode="bilinear", align_corners=False)[0]
    brightness, contrast, saturation = uniform(0.7, 1.3), uniform(0.7, 1.3), uniform(0.7, 1.3)
    image = image * brightness
    image = (image - image.mean()) * contrast + image.mean()
    grey = image.mean(dim=0, keepdim=True)
    image = (image - grey) * saturation + grey
    return image.clamp(0, 1), mask.clamp(0, 1)
