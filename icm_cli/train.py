"""Train the learned mask decoder (predict/decoder.py) on episodes of real data.

    python -m icm_cli.train all --data /work/trainingdata --cache /work/decoder_cache \\
        --out icm_cli/weights/decoder-lite0.safetensors

``episodes`` builds and caches the training episodes, ``fit`` trains on the
cache, ``all`` does both. Everything is seeded: the same data and seed give
the same episodes, the same sampling order and the same weights (up to the
floating-point order of the machine's BLAS).

**Episodes** are exactly what the decoder sees at run time. The reference is
one photo or frame with its mask; icm's own training-free engine (default
settings, object head included) builds the reference context and produces the
in-context maps of a target: another frame of the same DAVIS sequence, another
photo of the same set (CCP people, Weizmann horses: category-level, like
MSRC cows), or a DAVIS target whose object is cut out and pasted onto a frame
of a sequence of the other kind (person <-> animal/vehicle/object) for unseen
backgrounds. Per episode the cache keeps the target canvas (uint8), its mask
on the canvas, the stride-8 maps, the reference prototypes and the stride-4
level of the uint8 canvas (about 2 MB; the stride-2 level, only needed by a
stride-2 decoder, is computed when training loads the cache).

**Balance by object**: the data is ~63% people. Training samples half
animals/vehicles/objects (DAVIS non-person sequences 35%, horses 15%), a
quarter DAVIS people and a quarter CCP.

**Validation**: 4 DAVIS train sequences (2 people, 2 not), every 10th CCP
photo and every 8th horse are held out of training; their episodes are
scored (IoU at the canvas size, threshold 0.5) for the decoder and for the
training-free probability it starts from.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import multiprocessing as mp
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DAVIS_PERSON = {
    "bmx-bumps", "breakdance-flare", "dance-jump", "hike", "hockey", "horsejump-low", "kite-walk", "lucia",
    "motocross-bumps", "motorbike", "paragliding", "rollerblade", "scooter-gray", "stroller", "surf", "swing",
    "tennis",
}
DAVIS_VAL = {"car-turn", "mallard-fly", "tennis", "rollerblade"}
GROUP_WEIGHTS = {"davis_object": 0.35, "horse": 0.15, "davis_person": 0.25, "ccp": 0.25}


@dataclasses.dataclass(frozen=True)
class EpisodePlan:
    index: int
    group: str          # davis_object | davis_person | ccp | horse
    split: str          # train | val
    ref: str            # image path relative to the data root
    ref_mask: str
    target: str
    target_mask: str
    paste_on: str = ""  # background image (relative path): the target's object is pasted onto it


# ------------------------------------------------------------------ planning

def _read_manifest(data: Path) -> dict[str, list[tuple[str, str, float]]]:
    sets: dict[str, list[tuple[str, str, float]]] = {}
    with open(data / "manifest.tsv", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            rel = lambda p: os.path.relpath(p, data) if os.path.isabs(p) else p  # noqa: E731
            sets.setdefault(row["set"], []).append((rel(row["image"]), rel(row["mask"]), float(row["fg_fraction"])))
    for rows in sets.values():
        rows.sort()
    return sets


def plan_episodes(data: Path, seed: int = 0, davis_refs: int = 6, davis_targets: int = 5, davis_pasted: int = 2,
                  photo_refs: int = 96, photo_targets: int = 5, val_refs: int = 16) -> list[EpisodePlan]:
    """The list of episodes (deterministic for ``seed``): see the module docstring."""
    rng = random.Random(seed)
    sets = _read_manifest(data)
    plans: list[EpisodePlan] = []

    def add(**kw):
        plans.append(EpisodePlan(index=len(plans), **kw))

    seqs: dict[str, list[tuple[str, str, float]]] = {}
    for img, msk, frac in sets.get("davis16_train", []):
        seqs.setdefault(Path(img).stem.rsplit("_", 1)[0], []).append((img, msk, frac))
    backgrounds = {kind: [f for s, fr in sorted(seqs.items()) if (s in DAVIS_PERSON) == kind and s not in DAVIS_VAL
                          for f in fr[::5]] for kind in (True, False)}
    for seq, frames in sorted(seqs.items()):
        person = seq in DAVIS_PERSON
        group = "davis_person" if person else "davis_object"
        val = seq in DAVIS_VAL
        usable = [i for i, f in enumerate(frames) if f[2] >= 0.005]
        n_refs = 2 if val else davis_refs
        refs = [usable[round(j * (len(usable) - 1) / max(1, n_refs - 1))] for j in range(n_refs)]
        for r in refs:
            others = [i for i in range(len(frames)) if abs(i - r) >= 3]
            picks = rng.sample(others, min(len(others), 4 if val else davis_targets))
            for t in picks:
                add(group=group, split="val" if val else "train", ref=frames[r][0], ref_mask=frames[r][1],
                    target=frames[t][0], target_mask=frames[t][1])
            if not val:
                for _ in range(davis_pasted):
                    t = rng.choice([i for i in others if frames[i][2] >= 0.005])
                    bg = rng.choice(backgrounds[not person])
                    add(group=group, split="train", ref=frames[r][0], ref_mask=frames[r][1],
                        target=frames[t][0], target_mask=frames[t][1], paste_on=bg[0])
    for set_name, group, every in (("ccp_person", "ccp", 10), ("weizmann_horse", "horse", 8)):
        rows = [r for r in sets.get(set_name, []) if r[2] >= 0.005]
        split_rows = {"val": rows[::every], "train": [r for i, r in enumerate(rows) if i % every]}
        for split, pool in split_rows.items():
            n = val_refs if split == "val" else photo_refs
            for r in rng.sample(range(len(pool)), min(n, len(pool))):
                others = [i for i in range(len(pool)) if i != r]
                for t in rng.sample(others, min(len(others), 3 if split == "val" else photo_targets)):
                    add(group=group, split=split, ref=pool[r][0], ref_mask=pool[r][1],
                        target=pool[t][0], target_mask=pool[t][1])
    return plans


# ------------------------------------------------------------------ episodes

def _paste(target: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The target's object (``mask`` [H, W] in [0, 1]) composited onto ``background`` resized to its size."""
    import cv2
    h, w = mask.shape
    bg = cv2.resize(background, (w, h), interpolation=cv2.INTER_AREA)
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0)[..., None]
    return np.clip(target * alpha + bg * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)


def episode_arrays(prop, image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Everything the decoder needs from one target, with the propagator's context set."""
    from icm_cli.predict.engine import to_tensor

    geo, feats = prop.source_features([image], with_attention=True)
    pred = prop.predict_from_features(feats.ft, geo, feats.attn)[0]
    canvas = geo.to_canvas(to_tensor(image))
    gt = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=(geo.resized_h, geo.resized_w),
                       mode="area")
    gt = F.pad(gt, (0, geo.padded_w - geo.resized_w, 0, geo.padded_h - geo.resized_h))
    protos = prop.context.prototypes
    canvas_u8 = (canvas[0] * 255).round().clamp(0, 255).to(torch.uint8)
    return {
        "canvas": canvas_u8.numpy(),
        "level4": canvas_levels(prop.backbone, canvas_u8.numpy())[4][0].half().numpy(),
        "gt": (gt[0, 0] * 255).round().to(torch.uint8).numpy(),
        "maps": prop.decoder_maps(pred.parts)[0].numpy().astype(np.float16),
        "proto2": protos[2].numpy(), "proto4": protos[4].numpy(),
        "resized": np.array([geo.resized_h, geo.resized_w], np.int32),
    }


def canvas_levels(backbone, canvas_u8: np.ndarray) -> dict[int, torch.Tensor]:
    """The backbone's fine levels of a cached ``[3, H, W]`` uint8 canvas (what training reads)."""
    with torch.no_grad():
        return backbone.levels(torch.from_numpy(canvas_u8).float()[None] / 255)


def _add_levels(args: tuple) -> int:
    """Episodes cached without their stride-4 level get it (an older cache layout)."""
    from icm_cli.backbones import create_backbone
    paths, threads = args
    torch.set_num_threads(threads)
    backbone = None
    n = 0
    for path in paths:
        with np.load(path) as z:
            if "level4" in z.files:
                continue
            item = {k: z[k] for k in z.files}
        backbone = backbone or create_backbone("efficientnet-lite0").eval()
        item["level4"] = canvas_levels(backbone, item["canvas"])[4][0].half().numpy()
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, **item)
        os.replace(tmp, path)
        n += 1
    return n


def _episode_worker(args: tuple) -> int:
    data, cache, jobs, threads, settings = args
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    from icm_cli import io
    from icm_cli.backbones import create_backbone
    from icm_cli.predict.engine import PropagateSettings, Propagator

    settings = dataclasses.replace(settings or PropagateSettings(), decoder="none")
    prop = Propagator(create_backbone("efficientnet-lite0"), settings=settings)
    prop.collect_decoder_inputs = True
    done = 0
    for ref, ref_mask, episodes in jobs:
        todo = [e for e in episodes if not (cache / f"{e.index:05d}.npz").exists()]
        if not todo:
            continue
        prop.set_references([(io.read_image(data / ref), io.read_mask(data / ref_mask))])
        for e in todo:
            image = io.read_image(data / e.target)
            mask = io.read_mask(data / e.target_mask)
            if e.paste_on:
                image = _paste(image, mask, io.read_image(data / e.paste_on))
            arrays = episode_arrays(prop, image, mask)
            tmp = cache / f".{e.index:05d}.tmp.npz"
            np.savez(tmp, **arrays)
            os.replace(tmp, cache / f"{e.index:05d}.npz")
            done += 1
    return done


def build_episodes(data: Path, cache: Path, seed: int = 0, workers: int = 2, threads: int = 1,
                   settings=None, **plan_kwargs) -> list[EpisodePlan]:
    """Plan the episodes and cache every one not cached yet (resumable).

    settings: the engine's :class:`PropagateSettings` (default: its defaults,
    which is what the shipped weights were trained with); plan_kwargs go to
    :func:`plan_episodes`."""
    plans = plan_episodes(data, seed, **plan_kwargs)
    (cache / "episodes").mkdir(parents=True, exist_ok=True)
    with open(cache / "plan.json", "w") as fh:
        json.dump([dataclasses.asdict(p) for p in plans], fh)
    by_ref: dict[tuple[str, str], list[EpisodePlan]] = {}
    for p in plans:
        by_ref.setdefault((p.ref, p.ref_mask), []).append(p)
    jobs = [(r, m, eps) for (r, m), eps in by_ref.items()]
    todo = sum(1 for p in plans if not (cache / "episodes" / f"{p.index:05d}.npz").exists())
    print(f"episodes: {len(plans)} planned ({sum(p.split == 'val' for p in plans)} validation) from "
          f"{len(jobs)} references; {todo} to compute with {workers} worker(s)", flush=True)
    t0 = time.perf_counter()
    # Small batches of references per task, so the pool reports progress as it goes.
    tasks = [(data, cache / "episodes", jobs[i:i + 4], threads, settings) for i in range(0, len(jobs), 4)]
    done = 0
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            for n in pool.imap_unordered(_episode_worker, tasks):
                done += n
                print(f"  {done}/{todo} episodes cached ({time.perf_counter() - t0:.0f}s)", flush=True)
    else:
        for task in tasks:
            done += _episode_worker(task)
            print(f"  {done}/{todo} episodes cached ({time.perf_counter() - t0:.0f}s)", flush=True)
    paths = sorted((cache / "episodes").glob("[0-9]*.npz"))
    chunks = [(paths[i::workers], threads) for i in range(workers)]
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            added = sum(pool.map(_add_levels, chunks))
    else:
        added = _add_levels(chunks[0])
    if added:
        print(f"  stride-4 levels added to {added} episodes cached without them", flush=True)
    print(f"episodes cached in {time.perf_counter() - t0:.0f}s", flush=True)
    return plans


# ------------------------------------------------------------------ training

@dataclasses.dataclass
class FitSettings:
    steps: int = 3000
    batch: int = 8
    crop: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    iou_weight: float = 1.0
    no_head_share: float = 0.2   # episodes shown as if the head were off (--head-steps 0)
    val_every: int = 500
    seed: int = 0
    threads: int = 1


class EpisodeSet:
    """The cached episodes in memory, grouped for balanced sampling, with the
    backbone's fine levels (``level4``, and ``level2`` when asked) of each canvas."""

    def __init__(self, cache: Path, plans: list[EpisodePlan], split: str, backbone=None,
                 strides: tuple[int, ...] = (4,)) -> None:
        self.items: list[dict[str, np.ndarray]] = []
        self.groups: dict[str, list[int]] = {}
        self.strides = strides
        for p in plans:
            if p.split != split:
                continue
            with np.load(cache / "episodes" / f"{p.index:05d}.npz") as z:
                item = {k: z[k] for k in z.files}
            missing = [s for s in strides if f"level{s}" not in item]
            if missing and backbone is not None:
                levels = canvas_levels(backbone, item["canvas"])
                for s in missing:
                    item[f"level{s}"] = levels[s][0].half().numpy()
            self.items.append(item)
            self.groups.setdefault(p.group, []).append(len(self.items) - 1)

    def __len__(self) -> int:
        return len(self.items)


def _no_head(maps: torch.Tensor, attention_prior: float = 0.1) -> torch.Tensor:
    """The maps as the engine makes them without an object head: head = nearest, prob = nearest x gate."""
    from icm_cli.predict.decoder import MAP_CHANNELS
    i = {n: k for k, n in enumerate(MAP_CHANNELS)}
    out = maps.clone()
    out[:, i["head"]] = maps[:, i["nearest"]]
    out[:, i["prob"]] = maps[:, i["nearest"]] * (maps[:, i["intra"]] / attention_prior).clamp(max=1.0)
    return out


def sample_batch(data: EpisodeSet, rng: np.random.Generator, fs: FitSettings) -> dict[str, torch.Tensor]:
    """A balanced batch of random crops (offsets on the stride-8 grid), flipped at random."""
    groups = [g for g in GROUP_WEIGHTS if g in data.groups]
    weights = np.array([GROUP_WEIGHTS[g] for g in groups])
    weights = weights / weights.sum()
    level_keys = [f"level{s}" for s in data.strides]
    out = {k: [] for k in ("canvas", "gt", "maps", "valid", "proto2", "proto4", *level_keys)}
    for _ in range(fs.batch):
        g = groups[rng.choice(len(groups), p=weights)]
        item = data.items[data.groups[g][rng.integers(len(data.groups[g]))]]
        _, hc, wc = item["canvas"].shape
        rh, rw = (int(v) for v in item["resized"])
        ch, cw = min(fs.crop, hc), min(fs.crop, wc)
        top = 8 * rng.integers(0, max(0, min(hc - ch, rh - ch)) // 8 + 1)
        left = 8 * rng.integers(0, max(0, min(wc - cw, rw - cw)) // 8 + 1)
        valid = np.zeros((hc, wc), np.float32)
        valid[:rh, :rw] = 1
        sl = (slice(top, top + ch), slice(left, left + cw))
        canvas = item["canvas"][:, sl[0], sl[1]].astype(np.float32) / 255
        gt = item["gt"][sl].astype(np.float32) / 255
        maps = item["maps"][:, top // 8:(top + ch) // 8, left // 8:(left + cw) // 8].astype(np.float32)
        valid = valid[sl]
        levels = {k: item[k][:, top // s:(top + ch) // s, left // s:(left + cw) // s].astype(np.float32)
                  for k, s in zip(level_keys, data.strides)}
        if rng.random() < 0.5:
            canvas, gt, maps, valid = canvas[..., ::-1], gt[..., ::-1], maps[..., ::-1], valid[..., ::-1]
            levels = {k: v[..., ::-1] for k, v in levels.items()}
        for k, v in (("canvas", canvas), ("gt", gt), ("maps", maps), ("valid", valid),
                     ("proto2", item["proto2"]), ("proto4", item["proto4"]), *levels.items()):
            out[k].append(torch.from_numpy(np.ascontiguousarray(v)))
    batch = {k: torch.stack(v) for k, v in out.items()}
    if fs.no_head_share > 0:
        pick = torch.from_numpy(rng.random(fs.batch) < fs.no_head_share)
        if pick.any():
            batch["maps"][pick] = _no_head(batch["maps"][pick])
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


@torch.no_grad()
def evaluate(model, data: EpisodeSet, groups_of: list[str]) -> dict[str, tuple[float, float]]:
    """Per group: (decoder IoU, training-free IoU) at the canvas size, threshold 0.5, mean over episodes."""
    model.eval()
    scores: dict[str, list[tuple[float, float]]] = {}
    for item, group in zip(data.items, groups_of):
        canvas = torch.from_numpy(item["canvas"]).float()[None] / 255
        maps = torch.from_numpy(item["maps"].astype(np.float32))[None]
        protos = {2: torch.from_numpy(item["proto2"])[None], 4: torch.from_numpy(item["proto4"])[None]}
        levels = {s: torch.from_numpy(item[f"level{s}"]).float()[None] for s in data.strides}
        logits = model(maps, canvas, levels, protos)
        size = canvas.shape[-2:]
        rh, rw = (int(v) for v in item["resized"])
        pred = F.interpolate(torch.sigmoid(logits), size=size, mode="bilinear", align_corners=False)[0, 0]
        base = F.interpolate(maps[:, :1], size=size, mode="bilinear", align_corners=False)[0, 0]
        gt = torch.from_numpy(item["gt"]).float()[:rh, :rw] >= 128
        row = []
        for m in (pred, base):
            m = m[:rh, :rw] >= 0.5
            union = (m | gt).sum().item()
            row.append(1.0 if union == 0 else (m & gt).sum().item() / union)
        scores.setdefault(group, []).append(tuple(row))
    model.train()
    return {g: (float(np.mean([r[0] for r in v])), float(np.mean([r[1] for r in v]))) for g, v in scores.items()}


def _print_val(step: int, res: dict[str, tuple[float, float]]) -> float:
    mean_dec = float(np.mean([v[0] for v in res.values()]))
    mean_base = float(np.mean([v[1] for v in res.values()]))
    detail = "  ".join(f"{g} {v[0]:.3f}/{v[1]:.3f}" for g, v in sorted(res.items()))
    print(f"  val @ {step}: decoder/training-free IoU, mean over groups {mean_dec:.3f}/{mean_base:.3f}  ({detail})",
          flush=True)
    return mean_dec


def fit(cache: Path, out: Path, fs: FitSettings, config=None, metadata: dict | None = None):
    """Train the decoder on the cached episodes; writes ``out`` (safetensors) and returns
    ``(model, last validation figures)``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(fs.threads)
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            return _fit(cache, out, fs, config, metadata)
    finally:
        torch.set_num_threads(threads)


def _fit(cache: Path, out: Path, fs: FitSettings, config, metadata: dict | None):
    from icm_cli.backbones import create_backbone
    from icm_cli.predict.decoder import DecoderConfig, MaskDecoder, save_decoder

    torch.manual_seed(fs.seed)
    rng = np.random.default_rng(fs.seed)
    plans = [EpisodePlan(**p) for p in json.loads((cache / "plan.json").read_text())]
    t0 = time.perf_counter()
    config = config or DecoderConfig()
    backbone = create_backbone("efficientnet-lite0").eval()
    train = EpisodeSet(cache, plans, "train", backbone, config.strides)
    val = EpisodeSet(cache, plans, "val", backbone, config.strides)
    del backbone
    val_groups = [p.group for p in plans if p.split == "val"]
    print(f"fit: {len(train)} training episodes ({', '.join(f'{g} {len(v)}' for g, v in sorted(train.groups.items()))}), "
          f"{len(val)} validation; loaded in {time.perf_counter() - t0:.0f}s", flush=True)
    model = MaskDecoder(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=fs.lr, weight_decay=fs.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(step, fs.steps) / fs.steps)))
    result = {}
    if val and fs.val_every > 0:
        _print_val(0, evaluate(model, val, val_groups))
    t0 = time.perf_counter()
    running = 0.0
    for step in range(1, fs.steps + 1):
        batch = sample_batch(train, rng, fs)
        levels = {s: batch[f"level{s}"] for s in config.strides}
        protos = {2: batch["proto2"], 4: batch["proto4"]}
        logits = model(batch["maps"], batch["canvas"], levels, protos)
        loss = decoder_loss(logits, batch["gt"], batch["valid"], fs.iou_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % 50 == 0 or step == fs.steps:
            secs = time.perf_counter() - t0
            print(f"  step {step}/{fs.steps}  loss {running:.4f}  lr {sched.get_last_lr()[0]:.2e}  "
                  f"{secs:.0f}s ({secs / step:.2f}s/step)", flush=True)
        if val and fs.val_every > 0 and (step % fs.val_every == 0 or step == fs.steps):
            res = evaluate(model, val, val_groups)
            result = {"step": step, "val": res, "val_mean": _print_val(step, res)}
    model.eval()
    meta = {"trained_on": "DAVIS-2016 train (CC BY-NC 4.0), Clothing Co-Parsing, Weizmann horses",
            "backbone": "efficientnet-lite0", "fit": json.dumps(dataclasses.asdict(fs)),
            "val": json.dumps(result.get("val", {})), **(metadata or {})}
    save_decoder(model, out, meta)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) after {time.perf_counter() - t0:.0f}s of training",
          flush=True)
    return model, result


# ------------------------------------------------------------------ command line

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m icm_cli.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=("episodes", "fit", "all"))
    ap.add_argument("--data", type=Path, default=Path("/work/trainingdata"),
                    help="training data root (OUT of shared/training/get_training_data.sh)")
    ap.add_argument("--cache", type=Path, default=Path("/work/decoder_cache"), help="episode cache (outside the repo)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "weights" / "decoder-lite0.safetensors")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="processes building episodes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (1 is fastest on a busy 2-core box)")
    ap.add_argument("--steps", type=int, default=FitSettings.steps)
    ap.add_argument("--batch", type=int, default=FitSettings.batch)
    ap.add_argument("--crop", type=int, default=FitSettings.crop)
    ap.add_argument("--lr", type=float, default=FitSettings.lr)
    ap.add_argument("--width2", type=int, default=0, help="add a stride-2 stage of this width (0 = output at stride 4)")
    args = ap.parse_args(argv)
    from icm_cli.predict.decoder import DecoderConfig
    t0 = time.perf_counter()
    if args.stage in ("episodes", "all"):
        build_episodes(args.data, args.cache, args.seed, args.workers, args.threads)
    if args.stage in ("fit", "all"):
        fs = FitSettings(steps=args.steps, batch=args.batch, crop=args.crop, lr=args.lr, seed=args.seed,
                         threads=args.threads)
        fit(args.cache, args.out, fs, DecoderConfig(width2=args.width2))
    print(f"total {time.perf_counter() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
