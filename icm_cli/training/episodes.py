"""Training episodes: what the decoder reads at run time, made by icm's own propagator.

An episode is a reference (an image and its mask) and a target (an image
and its true mask). The propagator builds the reference context exactly as
``icm propagate`` does (object head included) and records the target's
evidence as the decoder reads it (:func:`~icm_cli.predict.decoder.decoder_maps`,
the stride-4 level, the reference prototypes). Kinds:

- ``pair``: the target is another image of the reference's group (another
  photo of the category, or a frame of the same sequence at least
  ``min_gap`` frames away). Sequence targets also keep the true masks of
  the five frames before them (``prev``), and half of them are chained to
  an episode of an earlier frame with the same reference (``chain``),
  whose prediction serves as "icm's own previous mask" in training.
- ``pasted``: as ``pair``, with the target's object pasted onto an image
  of another group (new backgrounds).
- ``augmented``: the reference's own image, cropped, scaled, flipped,
  re-coloured and half the time pasted onto another group's image: how
  evidence becomes a mask whatever the object is.
- ``refine``: the reference is an image with a corrupted mask
  (:func:`~icm_cli.training.corrupt.random_corruption`) and the target is
  the same image; the corrupted mask is also the target's prior
  (``icm refine``).

Episodes are planned with a fixed seed and cached one file each
(``CACHE/episodes/NNNNN.npz``, written atomically), so building resumes
where it stopped and a second training run reuses them.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from icm_cli.atomic import atomic_file, atomic_write, remove_stale_temp_files
from icm_cli.training.layout import MIN_REFERENCE_SHARE, Group

KINDS = ("pair", "pasted", "augmented", "refine")
PREV_FRAMES = 5  # earlier frames whose true masks a sequence episode keeps


@dataclass(frozen=True)
class Recipe:
    """How many episodes of each kind a group gives (see the module docstring)."""

    sequence_refs: int = 6        # reference frames per sequence, evenly spaced
    photo_refs: int = 48          # at most this many reference photos per group of photos
    targets: int = 5              # targets per reference (4 for photos)
    pasted: int = 2               # pasted targets per reference
    chain_share: float = 0.5      # sequence pairs that get an episode of an earlier frame (own-prediction priors)
    min_gap: int = 3              # frames between a sequence's reference and target
    augmented: int = 8            # same-image episodes per group (of its reference images)
    refine: int = 8               # corrupted-mask episodes per group (each its own reference context)
    val_refs: int = 2             # references per held-out group
    val_targets: int = 4


@dataclass(frozen=True)
class EpisodePlan:
    index: int
    kind: str
    group: str
    pool: str
    split: str                    # train | val
    ref: str                      # paths relative to DATA
    ref_mask: str
    target: str
    target_mask: str
    paste_on: str = ""            # an image of another group (pasted, augmented)
    prev: tuple[str, ...] = ()    # true masks of the frames before the target, nearest first
    chain: int = -1               # an episode of an earlier frame with the same reference
    seed: int = 0                 # for the episode's own random choices (augmentation, corruption)

    @staticmethod
    def from_json(raw: dict) -> "EpisodePlan":
        return EpisodePlan(**{**raw, "prev": tuple(raw.get("prev", ()))})


# ------------------------------------------------------------------ planning

def mask_shares(data: Path, groups: list[Group]) -> dict[str, float]:
    """Each mask's object share (which masks may serve as references)."""
    from icm_cli import io

    shares = {}
    for g in groups:
        for item in g.items:
            shares[item.mask] = float((io.read_mask(data / item.mask) >= 0.5).mean())
    return shares


def plan_episodes(groups: list[Group], shares: dict[str, float], recipe: Recipe = Recipe(),
                  seed: int = 0) -> list[EpisodePlan]:
    """Every episode of the groups, deterministic for ``seed``."""
    rng = random.Random(seed)
    plans: list[EpisodePlan] = []
    usable = [g for g in groups if g.split in ("train", "val")]
    images_of = {g.name: [it.image for it in g.items] for g in usable}

    def add(**kw) -> int:
        plans.append(EpisodePlan(index=len(plans), seed=rng.randrange(2 ** 31), **kw))
        return len(plans) - 1

    def background(group: Group) -> str:
        others = [n for n in images_of if n != group.name] or [group.name]
        return rng.choice(images_of[rng.choice(others)])

    for g in usable:
        for split in ("train", "val"):
            if split == "train" and g.split == "val":
                continue
            if g.split == "val" or split == "val":
                idx = sorted(g.val_items) if g.split == "train" else list(range(len(g.items)))
            else:
                idx = [i for i in range(len(g.items)) if i not in g.val_items]
            val = split == "val"
            refs_ok = [i for i in idx if shares[g.items[i].mask] >= MIN_REFERENCE_SHARE]
            if not refs_ok or (val and len(idx) < 2):
                continue
            base = dict(group=g.name, pool=g.pool, split=split)
            n_refs = recipe.val_refs if val else (recipe.sequence_refs if g.sequence else recipe.photo_refs)
            if g.sequence:
                refs = sorted({refs_ok[round(j * (len(refs_ok) - 1) / max(1, n_refs - 1))] for j in range(n_refs)})
            else:
                refs = sorted(rng.sample(refs_ok, min(n_refs, len(refs_ok))))
            for r in refs:
                ref = g.items[r]
                others = [i for i in idx if (abs(i - r) >= recipe.min_gap if g.sequence else i != r)]
                if not others:
                    continue
                n_targets = recipe.val_targets if val else (recipe.targets if g.sequence else recipe.targets - 1)
                for t in rng.sample(others, min(len(others), n_targets)):
                    target = g.items[t]
                    prev = tuple(g.items[t - k].mask for k in range(1, PREV_FRAMES + 1) if t - k >= 0) \
                        if g.sequence else ()
                    chain = -1
                    ks = [k for k in range(1, min(PREV_FRAMES, t) + 1) if t - k != r]
                    if g.sequence and not val and ks and rng.random() < recipe.chain_share:
                        k = rng.choice(ks)
                        earlier = g.items[t - k]
                        chain = add(kind="pair", ref=ref.image, ref_mask=ref.mask, target=earlier.image,
                                    target_mask=earlier.mask,
                                    prev=tuple(g.items[t - k - j].mask for j in range(1, PREV_FRAMES + 1)
                                               if t - k - j >= 0), **base)
                    add(kind="pair", ref=ref.image, ref_mask=ref.mask, target=target.image,
                        target_mask=target.mask, prev=prev, chain=chain, **base)
                if not val:
                    for _ in range(recipe.pasted):
                        t = rng.choice(others)
                        if shares[g.items[t].mask] < MIN_REFERENCE_SHARE:
                            continue
                        add(kind="pasted", ref=ref.image, ref_mask=ref.mask, target=g.items[t].image,
                            target_mask=g.items[t].mask, paste_on=background(g), **base)
            if val:
                continue
            for kind, count, pool in (("augmented", recipe.augmented, refs), ("refine", recipe.refine, refs_ok)):
                for i in rng.sample(pool, min(count, len(pool))):
                    item = g.items[i]
                    add(kind=kind, ref=item.image, ref_mask=item.mask, target=item.image, target_mask=item.mask,
                        paste_on=background(g) if kind == "augmented" else "", **base)
    return plans


# ------------------------------------------------------------------ making targets

def paste(target: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The target's object (``mask`` [H, W] in [0, 1]) composited onto ``background`` resized to its size."""
    import cv2

    h, w = mask.shape
    bg = cv2.resize(background, (w, h), interpolation=cv2.INTER_AREA)
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0)[..., None]
    return np.clip(target * alpha + bg * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
            background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A strongly changed copy of ``image`` [H, W, 3] uint8 and its ``mask`` [H, W] bool: a crop
    keeping most of the object, scale 0.6-1.4, horizontal flip, brightness/contrast/saturation
    and hue shifts, and (with a background) the object pasted onto it half the time."""
    import cv2

    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    for _ in range(10):
        ch, cw = int(h * rng.uniform(0.55, 1.0)), int(w * rng.uniform(0.55, 1.0))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        kept = ((ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)).mean() if len(ys) else 0
        if kept >= 0.7:
            break
    else:
        top, left, ch, cw = 0, 0, h, w
    image, mask = image[top:top + ch, left:left + cw], mask[top:top + ch, left:left + cw]
    scale = rng.uniform(0.6, 1.4)
    size = (max(32, round(cw * scale)), max(32, round(ch * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if background is not None and rng.random() < 0.5:
        image = paste(np.ascontiguousarray(image), mask.astype(np.float32), background)
    hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-12, 12)) % 180
    hsv[..., 1] *= rng.uniform(0.6, 1.4)
    image = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    mean = image.mean()
    image = (image - mean) * rng.uniform(0.7, 1.3) + mean * rng.uniform(0.7, 1.3)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), np.ascontiguousarray(mask)


def reference_of(plan: EpisodePlan, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The reference mask an episode uses: the true one, or for ``refine`` its corruption."""
    if plan.kind != "refine":
        return mask
    from icm_cli.training.corrupt import random_corruption

    return random_corruption(mask >= 0.5, np.random.default_rng(plan.seed)).astype(np.float32)


def on_canvas(geo, mask: np.ndarray) -> np.ndarray:
    """A full-size ``[H, W]`` mask -> ``[Hc, Wc]`` uint8 object share on the working canvas (padding 0)."""
    import torch
    import torch.nn.functional as F

    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    m = F.interpolate(m, size=(geo.resized_h, geo.resized_w), mode="area")
    m = F.pad(m, (0, geo.padded_w - geo.resized_w, 0, geo.padded_h - geo.resized_h))
    return (m[0, 0] * 255).round().to(torch.uint8).numpy()


def target_arrays(prop, image: np.ndarray, mask: np.ndarray) -> tuple[dict[str, np.ndarray], object]:
    """Everything the decoder reads of one target, with ``prop``'s reference context set,
    and the target's working geometry."""
    import torch

    from icm_cli.predict.decoder import decoder_maps
    from icm_cli.predict.context import to_tensor

    geo, feats = prop.source_features([image], with_attention=True)
    evidence = prop.evidence(feats, geo)[0]
    canvas = geo.to_canvas(to_tensor(image))
    canvas_u8 = (canvas[0] * 255).round().clamp(0, 255).to(torch.uint8)
    protos = prop.context.prototypes
    return {
        "canvas": canvas_u8.numpy(),
        "level4": canvas_levels(prop.backbone, canvas_u8.numpy())[4][0].half().numpy(),
        "gt": on_canvas(geo, mask),
        "maps": decoder_maps(evidence)[0].numpy().astype(np.float16),
        "proto2": protos[2].numpy(), "proto4": protos[4].numpy(),
        "resized": np.array([geo.resized_h, geo.resized_w], np.int32),
    }, geo


def canvas_levels(backbone, canvas_u8: np.ndarray) -> dict:
    """The backbone's fine levels of a cached ``[3, H, W]`` uint8 canvas (exactly what training reads)."""
    import torch

    with torch.no_grad():
        return backbone.levels(torch.from_numpy(canvas_u8).float()[None] / 255)


def make_episode(prop, data: Path, plan: EpisodePlan, read_image: Callable, read_mask: Callable
                 ) -> dict[str, np.ndarray]:
    """One planned episode's arrays; ``prop`` holds the reference context of ``plan``'s reference."""
    image = read_image(data / plan.target)
    mask = read_mask(data / plan.target_mask) >= 0.5
    rng = np.random.default_rng(plan.seed)
    if plan.kind == "pasted":
        image = paste(image, mask.astype(np.float32), read_image(data / plan.paste_on))
    elif plan.kind == "augmented":
        image, mask = augment(image, mask, rng, read_image(data / plan.paste_on))
    arrays, geo = target_arrays(prop, image, mask)
    if plan.kind == "refine":
        arrays["prior"] = on_canvas(geo, reference_of(plan, image, mask))
    if plan.prev:
        prev = [read_mask(data / p) >= 0.5 for p in plan.prev]
        arrays["prev"] = np.stack([on_canvas(geo, p) if p.shape == mask.shape else np.zeros_like(arrays["gt"])
                                   for p in prev])
    return arrays


# ------------------------------------------------------------------ building

def _worker(args: tuple) -> int:
    data, folder, jobs, threads, settings = args
    import torch

    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    from icm_cli import io
    from icm_cli.backbones import create_backbone
    from icm_cli.predict.propagator import Propagator

    prop = Propagator(create_backbone("efficientnet-lite0"), settings=settings, collect_decoder_inputs=True)
    done = 0
    for plans in jobs:
        todo = [p for p in plans if not (folder / f"{p.index:05d}.npz").exists()]
        if not todo:
            continue
        first = todo[0]
        image = io.read_image(data / first.ref)
        mask = io.read_mask(data / first.ref_mask)
        prop.set_references([(image, reference_of(first, image, mask))])
        for plan in todo:
            arrays = make_episode(prop, data, plan, io.read_image, io.read_mask)
            with atomic_file(folder / f"{plan.index:05d}.npz") as fh:
                np.savez(fh, **arrays)
            done += 1
    return done


def episode_settings():
    """The propagator settings episodes are made with: ``icm propagate``'s defaults, training-free maps."""
    from icm_cli.config import PropagateSettings

    return dataclasses.replace(PropagateSettings(), decoder="none")


def build_episodes(data: Path, cache: Path, plans: list[EpisodePlan], workers: int = 2, threads: int = 1,
                   progress: Callable[[int, int], None] | None = None) -> int:
    """Cache every planned episode not cached yet; returns how many were computed.

    Episodes sharing a reference context are computed together; ``progress(done, total)``
    is called as batches finish."""
    folder = cache / "episodes"
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(folder)  # what a killed run left
    by_ref: dict[tuple, list[EpisodePlan]] = {}
    for p in plans:
        key = (p.ref, p.ref_mask, p.seed if p.kind == "refine" else 0)
        by_ref.setdefault(key, []).append(p)
    jobs = [eps for eps in by_ref.values() if any(not (folder / f"{p.index:05d}.npz").exists() for p in eps)]
    total = sum(1 for eps in jobs for p in eps if not (folder / f"{p.index:05d}.npz").exists())
    if not total:
        return 0
    settings = episode_settings()
    tasks = [(data, folder, jobs[i:i + 4], threads, settings) for i in range(0, len(jobs), 4)]
    done = 0
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            for n in pool.imap_unordered(_worker, tasks):
                done += n
                if progress:
                    progress(done, total)
    else:
        for task in tasks:
            done += _worker(task)
            if progress:
                progress(done, total)
    return done


def save_plan(cache: Path, plans: list[EpisodePlan], meta: dict) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write(cache / "plan.json", json.dumps({"meta": meta, "episodes": [dataclasses.asdict(p) for p in plans]}))


def load_plan(cache: Path) -> tuple[list[EpisodePlan], dict]:
    raw = json.loads((cache / "plan.json").read_text())
    return [EpisodePlan.from_json(p) for p in raw["episodes"]], raw.get("meta", {})
