"""`icm train-keys`: fit the video memory's key projection on labelled clips (STCN-style).

The keys (:class:`~icm_cli.predict.memory.KeyProjection`: a 1x1 convolution of
the backbone's stride-8 features, unit length, and the readout's temperature)
are trained so that the readout itself is right: a target frame's cells read
their labels from two memory frames of the same clip (one up to ``max_gap``
frames earlier, one older), through a softmax over key affinities, and the
read-out object share is scored against the target's true share (class-balanced
binary cross-entropy). So cells of the same object part match across frames
and other cells do not. Only groups marked ``"sequence": true`` serve; groups
with ``"split": "val"`` are never trained on and give the validation figure:
the mean grid IoU of the readout from frame 0 alone and from a memory of
frame 0 and every ``memory_every``-th earlier frame (with the readout's own
results fed back, as in a run).

Everything is seeded and runs on one thread, so the same data, seed and
versions give the same weights.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from icm_cli.config import CONTRAST_TEMPERATURE
from icm_cli.predict.memory import FrameMemory, KeyProjection, readout
from icm_cli.training.layout import Group


@dataclass
class ClipFeatures:
    """One clip's frames on its feature grid: ``ft`` ``[T, C, h, w]`` (float16), ``share`` ``[T, h, w]``
    object share per cell (float16), ``valid`` ``[h, w]`` cells that hold image content."""

    name: str
    ft: torch.Tensor
    share: torch.Tensor
    valid: torch.Tensor


@dataclass(frozen=True)
class KeyRecipe:
    """How the keys are trained (every field goes into the weights file's metadata)."""

    dim: int = 64             # key channels
    steps: int = 1500         # optimiser steps, one target frame each
    lr: float = 1e-3          # Adam
    max_gap: int = 12         # the recent memory frame is 1..max_gap stored frames before the target
    queries: int = 768        # target cells scored per step (sampled; the memory keeps all its cells)
    frame_step: int = 2       # every frame_step-th frame of a clip is stored
    temperature: float = 0.05  # the readout temperature's starting value (it is learned)
    seed: int = 0


def clip_features(propagator, data: Path, group: Group, frame_step: int) -> ClipFeatures | None:
    """Backbone features of every ``frame_step``-th frame of a sequence group (None when fewer than 3
    frames of one size are left)."""
    from icm_cli import io
    from icm_cli.predict.context import to_tensor

    items = group.items[::frame_step]
    fts, shares, geo0 = [], [], None
    for item in items:
        image = io.read_image(data / item.image)
        mask = io.read_mask(data / item.mask) >= 0.5
        geo = propagator.geometry_for(*image.shape[:2])
        if geo0 is not None and geo != geo0:
            continue  # a frame of another size: the clip's grid is its first frame's
        geo0 = geo
        with torch.no_grad():
            ft = propagator.features(geo.to_canvas(to_tensor(image))).ft
        shares.append(geo.mask_share(mask, tuple(ft.shape[-2:]))[0, 0].half())
        fts.append(ft[0].cpu().half())
    if len(fts) < 3:
        return None
    return ClipFeatures(group.name, torch.stack(fts), torch.stack(shares), geo0.valid_mask(*fts[0].shape[-2:]))


def balanced_bce(read: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of a read-out share against the true share, object and background cells
    weighed equally whatever the object's size."""
    read = read.clamp(1e-4, 1 - 1e-4)
    pos = (target > 0.5).float().mean().clamp(0.02, 0.98)
    weight = torch.where(target > 0.5, 0.5 / pos, 0.5 / (1 - pos))
    return (F.binary_cross_entropy(read, target, reduction="none") * weight).mean()


def _soft_readout(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, temperature: torch.Tensor
                  ) -> torch.Tensor:
    """The readout with a softmax over every memory cell (differentiable in the temperature too)."""
    return ((query.T @ keys) / temperature).softmax(1) @ values


def fit_keys(clips: list[ClipFeatures], recipe: KeyRecipe, progress: Callable[[int, float], None] | None = None
             ) -> KeyProjection:
    """Train a :class:`KeyProjection` on ``clips`` (see the module docstring)."""
    if not clips:
        from icm_cli.errors import LayoutError

        raise LayoutError("no training clips: train-keys needs sequence groups")
    with torch.random.fork_rng(devices=[]), torch.enable_grad():  # the host's RNG and grad mode stay as they were
        torch.manual_seed(recipe.seed)
        model = KeyProjection(clips[0].ft.shape[1], recipe.dim, recipe.temperature)
        _fit(model, clips, recipe, progress)
    return model.requires_grad_(False).eval()


def _fit(model: KeyProjection, clips: list[ClipFeatures], recipe: KeyRecipe,
         progress: Callable[[int, float], None] | None) -> None:
    rng = random.Random(recipe.seed)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    for step in range(recipe.steps):
        clip = clips[rng.randrange(len(clips))]
        count = clip.ft.shape[0]
        target = rng.randrange(1, count)
        recent = rng.randrange(max(0, target - recipe.max_gap), target)
        older = rng.randrange(0, max(1, recent))
        frames = [older, recent, target]
        ft, share, valid = clip.ft[frames].float(), clip.share[frames].float(), clip.valid
        if rng.random() < 0.5:  # mirrored clips: the keys must not learn where in the frame a part is
            ft, share, valid = ft.flip(-1), share.flip(-1), valid.flip(-1)
        cells = valid.flatten()
        keys = model(ft).flatten(2)[:, :, cells]                 # [3, D, N]
        values = share.flatten(1)[:, cells]                      # [3, N]
        picked = torch.tensor(sorted(rng.sample(range(keys.shape[2]), min(recipe.queries, keys.shape[2]))))
        memory_keys = torch.cat([keys[0], keys[1]], 1)
        memory_values = torch.cat([values[0], values[1]])
        read = _soft_readout(keys[2][:, picked], memory_keys, memory_values, model.log_temperature.exp())
        loss = balanced_bce(read, values[2][picked])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, float(loss.detach()))


def _iou(read: torch.Tensor, truth: torch.Tensor) -> float:
    """:func:`icm_cli.metrics.iou` of two ``[N]`` object shares over the same cells (each read at 0.5)."""
    from icm_cli.metrics import iou

    return iou(read.numpy()[None] >= 0.5, truth.numpy()[None] >= 0.5)


def validate_keys(model: KeyProjection | None, clips: list[ClipFeatures], memory_every: int = 5, slots: int = 4,
                  topk: int = 20) -> dict[str, tuple[float, float]]:
    """Per clip ``(frame-0 readout IoU, memory readout IoU)`` on the feature grid, the memory holding
    frame 0's true mask and the readout's own later results (as a run keeps them); ``model`` None: the
    features themselves as keys."""
    results = {}
    temperature = model.temperature if model is not None else CONTRAST_TEMPERATURE
    for clip in clips:
        cells = clip.valid.flatten()
        with torch.no_grad():
            ft = clip.ft.float()
            keys = (model(ft) if model is not None else F.normalize(ft, dim=1)).flatten(2)[:, :, cells]
        values = clip.share.float().flatten(1)[:, cells]
        memory = FrameMemory(slots, memory_every, topk, temperature)
        memory.add_reference(keys[0], values[0])
        first, remembered = [], []
        for i in range(1, keys.shape[0]):
            first.append(_iou(readout(keys[i], keys[0], values[0], temperature, topk), values[i]))
            read = memory.read(keys[i])
            remembered.append(_iou(read, values[i]))
            memory.remember(keys[i], read, i)
        results[clip.name] = (float(np.mean(first)), float(np.mean(remembered)))
    return results


def train_keys(data: Path, output: Path, recipe: KeyRecipe, log: Callable[[str], None] = print) -> dict:
    """`icm train-keys`: features of the sequence groups under ``data``, the fit, validation and the
    weights file with its recipe, data and versions in the metadata. Returns the validation figures.
    Raises :class:`~icm_cli.errors.LayoutError` without two training clips."""
    import json
    import platform

    import icm_cli
    from icm_cli.atomic import atomic_write
    from icm_cli.backbones import create_backbone
    from icm_cli.config import PropagateSettings
    from icm_cli.errors import LayoutError
    from icm_cli.predict.memory import keys_bytes
    from icm_cli.predict.propagator import Propagator
    from icm_cli.training.layout import read_layout

    groups = [g for g in read_layout(data, val_share=0) if g.sequence and g.split != "skip"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same weights on every machine of the same versions
    try:
        propagator = Propagator(create_backbone("efficientnet-lite0"), settings=PropagateSettings(decoder="none"))
        clips: dict[str, list[ClipFeatures]] = {"train": [], "val": []}
        for group in groups:
            clip = clip_features(propagator, data, group, recipe.frame_step)
            if clip is not None:
                clips["val" if group.split == "val" else "train"].append(clip)
                log(f"features: {group.name} ({clip.ft.shape[0]} frames, {group.split})")
        if len(clips["train"]) < 2:
            raise LayoutError(f"{data}: train-keys needs at least two sequence groups (group.json "
                              '{"sequence": true}) that are not held out; found ' f"{len(clips['train'])}")
        every = max(1, recipe.steps // 10)

        def progress(step: int, loss: float) -> None:
            if step % every == 0 or step == recipe.steps:
                log(f"step {step}/{recipe.steps}: loss {loss:.4f}")

        model = fit_keys(clips["train"], recipe, progress)
        figures = {"learned": validate_keys(model, clips["val"]), "features": validate_keys(None, clips["val"])}
    finally:
        torch.set_num_threads(threads)
    means = {name: [float(np.mean([v[i] for v in per.values()])) if per else float("nan") for i in (0, 1)]
             for name, per in figures.items()}
    metadata = {
        "what": "icm video memory key projection (icm_cli.predict.memory.KeyProjection)",
        "backbone": "efficientnet-lite0",
        "recipe": json.dumps(recipe.__dict__),
        "train_clips": ",".join(c.name for c in clips["train"]),
        "val_clips": ",".join(c.name for c in clips["val"]),
        "validation": json.dumps({"per_clip": figures, "mean": means}),
        "versions": json.dumps({"icm": icm_cli.__version__, "torch": torch.__version__,
                                "python": platform.python_version()}),
        "command": f"icm train-keys DATA -o {output.name} --steps {recipe.steps} --seed {recipe.seed}",
    }
    atomic_write(output, keys_bytes(model, metadata))
    return {"per_clip": figures, "mean": means}
