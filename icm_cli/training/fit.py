"""Fitting the decoder on cached episodes: balanced sampling, priors, resume, validation.

Each step draws ``batch`` random crops (offsets on the stride-8 grid,
flipped half the time): a pool by its weight, a group of that pool
uniformly, an episode of that group uniformly. A sample is shown

- as if the object head were off (``no_head_share``), so ``--head-steps 0``
  is served too (:func:`~icm_cli.predict.decoder.maps_without_head`);
- with a prior mask (``prior_share`` of the samples that have no prior of
  their own; ``refine`` episodes always have theirs): the true mask of an
  earlier frame (sequences), the current decoder's own prediction of an
  earlier frame (chained episodes: it learns to recover from its drift),
  or a random corruption of the target's truth;
- with one group of its in-context maps replaced by what a weaker propagator
  would give (``channel_dropout``), so it does not lean on one signal.

Loss: BCE + soft IoU against the mask area-averaged onto the stride-4
grid, over the image (not the canvas padding). AdamW with warm-up and
cosine decay. A checkpoint (weights, optimiser, step, random state) is
written every ``checkpoint_every`` steps; resuming from it gives the same
weights as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from icm_cli.errors import SettingError
from icm_cli.metrics import iou
from icm_cli.predict.decoder import MAP_CHANNELS, MaskDecoder, maps_without_head
from icm_cli.training.corrupt import random_corruption
from icm_cli.training.episodes import EpisodePlan

_CH = {n: k for k, n in enumerate(MAP_CHANNELS)}


#: How often each kind of episode is drawn from a group that has it (see :mod:`.episodes`).
KIND_WEIGHTS = {"pair": 0.6, "pasted": 0.2, "augmented": 0.1, "refine": 0.1}


@dataclass
class FitSettings:
    steps: int = 6000
    batch: int = 8
    crop: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    iou_weight: float = 1.0
    no_head_share: float = 0.2
    prior_share: float = 0.3
    channel_dropout: float = 0.0
    val_every: int = 500
    checkpoint_every: int = 100
    seed: int = 0
    threads: int = 1
    pool_weights: dict[str, float] = field(default_factory=dict)
    kind_weights: dict[str, float] = field(default_factory=lambda: dict(KIND_WEIGHTS))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


class EpisodeSet:
    """The cached episodes of one split, read from disk when drawn, grouped for balanced sampling:
    a pool by its weight, a group of the pool uniformly, a kind by :data:`KIND_WEIGHTS`, an episode."""

    def __init__(self, cache: Path, plans: list[EpisodePlan], split: str) -> None:
        self.folder = cache / "episodes"
        self.by_index = {p.index: p for p in plans}
        self.plans = [p for p in plans if p.split == split]
        self.pools: dict[str, dict[str, dict[str, list[EpisodePlan]]]] = {}
        for p in self.plans:
            self.pools.setdefault(p.pool, {}).setdefault(p.group, {}).setdefault(p.kind, []).append(p)

    def __len__(self) -> int:
        return len(self.plans)

    def load(self, plan: EpisodePlan) -> dict[str, np.ndarray]:
        with np.load(self.folder / f"{plan.index:05d}.npz") as z:
            return {k: z[k] for k in z.files}

    def draw(self, rng: np.random.Generator, weights: dict[str, float],
             kind_weights: dict[str, float] | None = None) -> EpisodePlan:
        pools = sorted(self.pools)
        w = np.array([weights.get(p, 1.0) for p in pools], dtype=np.float64)
        pool = self.pools[pools[rng.choice(len(pools), p=w / w.sum())]]
        groups = sorted(pool)
        kinds = pool[groups[rng.integers(len(groups))]]
        names = sorted(kinds)
        kind_weights = KIND_WEIGHTS if kind_weights is None else kind_weights
        kw = np.array([kind_weights.get(k, 0.1) for k in names]) + 1e-9
        episodes = kinds[names[rng.choice(len(names), p=kw / kw.sum())]]
        return episodes[rng.integers(len(episodes))]


# ------------------------------------------------------------------ inputs

def item_tensors(item: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A whole cached episode as the decoder's batch-of-one inputs."""
    return {"maps": torch.from_numpy(item["maps"].astype(np.float32))[None],
            "canvas": torch.from_numpy(item["canvas"]).float()[None] / 255,
            "levels": {4: torch.from_numpy(item["level4"]).float()[None]},
            "protos": {2: torch.from_numpy(item["proto2"])[None], 4: torch.from_numpy(item["proto4"])[None]}}


@torch.no_grad()
def predict_item(model: MaskDecoder, item: dict[str, np.ndarray], prior: np.ndarray | None = None) -> np.ndarray:
    """The decoder's probability of a whole cached episode, ``[Hc, Wc]`` at the canvas size."""
    t = item_tensors(item)
    prior_t = None
    if prior is not None:
        prior_t = F.avg_pool2d(torch.from_numpy(prior).float()[None, None] / 255, 4)
    logits = model(t["maps"], t["canvas"], t["levels"], t["protos"], prior=prior_t)
    return F.interpolate(torch.sigmoid(logits), size=item["canvas"].shape[-2:], mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def choose_prior(plan: EpisodePlan, item: dict[str, np.ndarray], rng: np.random.Generator, fs: FitSettings,
                 own: Callable[[EpisodePlan], np.ndarray] | None) -> np.ndarray | None:
    """The ``[Hc, Wc]`` uint8 prior of one training sample, or None (see the module docstring)."""
    if "prior" in item:
        return item["prior"]
    if rng.random() >= fs.prior_share:
        return None
    options = ["corrupt"]
    if "prev" in item and len(item["prev"]):
        options += ["prev", "prev"]
    if plan.chain >= 0 and own is not None:
        options += ["own", "own"]
    pick = options[rng.integers(len(options))]
    if pick == "prev":
        prev = item["prev"][rng.integers(len(item["prev"]))]
        if rng.random() < 0.5:
            return prev
        return random_corruption(prev >= 128, rng).astype(np.uint8) * 255
    if pick == "own":
        return own(plan)
    return random_corruption(item["gt"] >= 128, rng).astype(np.uint8) * 255


def drop_channels(maps: torch.Tensor, rng: np.random.Generator, share: float) -> torch.Tensor:
    """``[M, h, w]`` maps with, for ``share`` of the samples, one kind of evidence replaced by what an
    propagator without it makes: the head by the nearest-neighbour map (and vice versa), ICM's heat by 1,
    the similarities by their mean."""
    if share <= 0 or rng.random() >= share:
        return maps
    out = maps.clone()
    pick = rng.integers(4)
    if pick == 0:
        out[_CH["head"]] = maps[_CH["nearest"]]
    elif pick == 1:
        out[_CH["nearest"]] = maps[_CH["head"]]
    elif pick == 2:
        out[_CH["inter"]] = 1.0
        out[_CH["intra"]] = 1.0
    else:
        out[_CH["sim_fg"]] = maps[_CH["sim_fg"]].mean()
        out[_CH["sim_bg"]] = maps[_CH["sim_bg"]].mean()
    return out


def sample_batch(data: EpisodeSet, rng: np.random.Generator, fs: FitSettings, intra_gate: float,
                 own: Callable[[EpisodePlan], np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    """A balanced batch of random crops with their priors (see the module docstring)."""
    keys = ("canvas", "gt", "maps", "valid", "proto2", "proto4", "level4", "prior", "prior_given")
    out: dict[str, list] = {k: [] for k in keys}
    for _ in range(fs.batch):
        plan = data.draw(rng, fs.pool_weights, fs.kind_weights)
        item = data.load(plan)
        prior = choose_prior(plan, item, rng, fs, own)
        _, hc, wc = item["canvas"].shape
        rh, rw = (int(v) for v in item["resized"])
        ch, cw = min(fs.crop, hc), min(fs.crop, wc)
        top = 8 * int(rng.integers(0, max(0, min(hc - ch, rh - ch)) // 8 + 1))
        left = 8 * int(rng.integers(0, max(0, min(wc - cw, rw - cw)) // 8 + 1))
        valid = np.zeros((hc, wc), np.float32)
        valid[:rh, :rw] = 1
        rows, cols = slice(top, top + ch), slice(left, left + cw)
        arrays = {
            "canvas": item["canvas"][:, rows, cols].astype(np.float32) / 255,
            "gt": item["gt"][rows, cols].astype(np.float32) / 255,
            "maps": item["maps"][:, top // 8:(top + ch) // 8, left // 8:(left + cw) // 8].astype(np.float32),
            "valid": valid[rows, cols],
            "level4": item["level4"][:, top // 4:(top + ch) // 4, left // 4:(left + cw) // 4].astype(np.float32),
            "prior": (np.zeros((ch, cw), np.float32) if prior is None
                      else prior[rows, cols].astype(np.float32) / 255),
        }
        if rng.random() < 0.5:
            arrays = {k: v[..., ::-1] for k, v in arrays.items()}
        for k, v in arrays.items():
            out[k].append(torch.from_numpy(np.ascontiguousarray(v)))
        out["maps"][-1] = drop_channels(out["maps"][-1], rng, fs.channel_dropout)
        out["proto2"].append(torch.from_numpy(item["proto2"]))
        out["proto4"].append(torch.from_numpy(item["proto4"]))
        out["prior_given"].append(torch.tensor(float(prior is not None)))
    batch = {k: torch.stack(v) for k, v in out.items()}
    batch["prior"] = F.avg_pool2d(batch["prior"][:, None], 4)
    if fs.no_head_share > 0:
        pick = torch.from_numpy(rng.random(fs.batch) < fs.no_head_share)
        if pick.any():
            batch["maps"][pick] = maps_without_head(batch["maps"][pick], intra_gate)
    return batch


def decoder_loss(logits: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, iou_weight: float) -> torch.Tensor:
    """BCE + soft IoU against the mask area-averaged onto the output grid, over the image (not the padding).

    logits ``[B, 1, h, w]``; gt, valid ``[B, H, W]`` at the canvas size."""
    s = gt.shape[-1] // logits.shape[-1]
    target = F.avg_pool2d(gt[:, None], s)
    v = (F.avg_pool2d(valid[:, None], s) > 0.5).float()
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * v).sum() / v.sum().clamp_min(1)
    p = torch.sigmoid(logits) * v
    inter = (p * target).flatten(1).sum(1)
    union = (p + target * v - p * target).flatten(1).sum(1)
    soft_iou = 1 - (inter + 1) / (union + 1)
    return bce + iou_weight * soft_iou.mean()


# ------------------------------------------------------------------ validation

@torch.no_grad()
def validate(model: MaskDecoder, data: EpisodeSet, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per pool, mean IoU at the canvas size (threshold 0.5) of: the decoder without a prior,
    the training-free probability it starts from, and (a decoder that reads priors) the decoder
    given a prior (the previous frame's truth for sequences, else a fixed corruption of the
    truth) beside that prior alone."""
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    scores: dict[str, dict[str, list[float]]] = {}
    for plan in data.plans:
        item = data.load(plan)
        rh, rw = (int(v) for v in item["resized"])
        gt = item["gt"][:rh, :rw] >= 128
        base = F.interpolate(torch.from_numpy(item["maps"][:1].astype(np.float32))[None],
                             size=item["canvas"].shape[-2:], mode="bilinear", align_corners=False)[0, 0].numpy()
        row = {"decoder": iou(predict_item(model, item)[:rh, :rw] >= 0.5, gt),
               "training_free": iou(base[:rh, :rw] >= 0.5, gt)}
        if model.config.prior:
            prior = item["prev"][0] if "prev" in item and len(item["prev"]) else \
                random_corruption(item["gt"] >= 128, rng).astype(np.uint8) * 255
            row["with_prior"] = iou(predict_item(model, item, prior)[:rh, :rw] >= 0.5, gt)
            row["prior_alone"] = iou(prior[:rh, :rw] >= 128, gt)
        for k, v in row.items():
            scores.setdefault(plan.pool, {}).setdefault(k, []).append(v)
    model.train(was_training)
    return {pool: {k: float(np.mean(v)) for k, v in s.items()} for pool, s in sorted(scores.items())}


# ------------------------------------------------------------------ checkpoints

def save_checkpoint(path: Path, model: MaskDecoder, opt: torch.optim.Optimizer, step: int,
                    rng: np.random.Generator, meta: dict[str, str]) -> None:
    """Weights, optimiser state, step and random state: safetensors, written atomically."""
    from safetensors.torch import save

    from icm_cli.atomic import atomic_write

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    state = opt.state_dict()
    for pid, st in state["state"].items():
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous()
    meta = {**meta, "step": str(step), "rng": json.dumps(rng.bit_generator.state),
            "param_groups": json.dumps(state["param_groups"])}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, save(tensors, metadata=meta), mode=0o600)  # private, as safetensors' save_file made it


def load_checkpoint(path: Path, model: MaskDecoder, opt: torch.optim.Optimizer,
                    rng: np.random.Generator) -> tuple[int, dict[str, str]]:
    """Restore what :func:`save_checkpoint` wrote into ``model``, ``opt`` and ``rng``; returns (step, metadata)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {"state": {}, "param_groups": json.loads(meta["param_groups"])}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state["state"].setdefault(int(pid), {})[name] = v
    opt.load_state_dict(state)
    rng.bit_generator.state = json.loads(meta["rng"])
    return int(meta["step"]), meta


# ------------------------------------------------------------------ the loop

def lr_factor(step: int, steps: int, warmup: int = 100) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def fit(cache: Path, plans: list[EpisodePlan], model: MaskDecoder, fs: FitSettings, intra_gate: float,
        checkpoint: Path | None = None, resume: bool = False,
        on_step: Callable[[int, float], None] | None = None,
        on_validate: Callable[[int, dict], None] | None = None) -> dict:
    """Train ``model`` in place for ``fs.steps`` steps; returns the last validation figures.

    ``checkpoint``: where to keep the resumable state (``resume`` continues from it when it
    exists). ``on_step(step, loss)`` and ``on_validate(step, figures)`` report progress."""
    threads = torch.get_num_threads()
    torch.set_num_threads(fs.threads)
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            return _fit(cache, plans, model, fs, intra_gate, checkpoint, resume, on_step, on_validate)
    finally:
        torch.set_num_threads(threads)


def _fit(cache, plans, model, fs, intra_gate, checkpoint, resume, on_step, on_validate) -> dict:
    torch.manual_seed(fs.seed)
    rng = np.random.default_rng(fs.seed)
    train, val = EpisodeSet(cache, plans, "train"), EpisodeSet(cache, plans, "val")
    if not len(train):
        raise SettingError("no training episodes")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=fs.lr, weight_decay=fs.weight_decay)
    start = 0
    meta = {"fit": fs.to_json(), "config": model.config.to_json()}
    if resume and checkpoint is not None and checkpoint.exists():
        start, saved = load_checkpoint(checkpoint, model, opt, rng)
        if saved.get("fit") != meta["fit"] or saved.get("config") != meta["config"]:
            raise SettingError(f"{checkpoint}: made with other settings; train without resuming to start over")

    def own(plan: EpisodePlan) -> np.ndarray:
        """The current decoder's thresholded prediction of the chained earlier frame."""
        earlier = train.load(train.by_index[plan.chain])
        was = model.training
        model.eval()
        prob = predict_item(model, earlier)
        model.train(was)
        return (prob >= 0.5).astype(np.uint8) * 255

    figures: dict = {}
    for step in range(start + 1, fs.steps + 1):
        for group in opt.param_groups:
            group["lr"] = fs.lr * lr_factor(step - 1, fs.steps)
        batch = sample_batch(train, rng, fs, intra_gate, own if model.config.prior else None)
        logits = model(batch["maps"], batch["canvas"], {4: batch["level4"]},
                       {2: batch["proto2"], 4: batch["proto4"]}, prior=batch["prior"],
                       prior_given=batch["prior_given"])
        loss = decoder_loss(logits, batch["gt"], batch["valid"], fs.iou_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if checkpoint is not None and (step % fs.checkpoint_every == 0 or step == fs.steps):
            save_checkpoint(checkpoint, model, opt, step, rng, meta)
        if on_step:
            on_step(step, float(loss.item()))
        if len(val) and fs.val_every > 0 and (step % fs.val_every == 0 or step == fs.steps):
            figures = validate(model, val, fs.seed)
            if on_validate:
                on_validate(step, figures)
    model.eval()
    return figures
