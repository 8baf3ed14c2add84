"""Reference contexts kept between runs: a rerun, a shard or a second folder starts predicting at once.

Building a :class:`~icm_cli.predict.context.ReferenceContext` costs backbone
passes over each reference and its augmented copies and the object head's
training (seconds on a small CPU). The context is a handful of arrays, so it
is stored in the cache folder (:mod:`icm_cli.cache`, ``contexts/``) as one
safetensors file (plain arrays and strings: nothing is ever unpickled) named
by a digest of everything that shapes it:

- the references' pixels and masks (as the propagator sees them: mask >= 0.5),
  with their sizes, in order;
- every propagator setting except those that act only on sources
  (:data:`SOURCE_ONLY_SETTINGS`), and whether decoder prototypes are kept;
- the backbone's name and a digest of its weights, the runtime that ran it
  and its version, the device type and dtype, torch's and icm's versions.

A file is used only when its recorded key equals the expected one and its
arrays match their recorded SHA-256; anything else (a torn or tampered file,
another format) is rebuilt. One process builds a missing context while the
others wait for it (a lock per key), so shards started together train one
head between them.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from icm_cli import cache

FORMAT = "icm-context-1"

#: Engine settings that act only on sources (the fused probability, GrabCut, cleaning), never on the context:
#: changing them reuses a stored context. Every other field, including ones added later, is part of the key.
SOURCE_ONLY_SETTINGS = frozenset({"temperature", "head_weight", "grabcut", "grabcut_scale", "clean", "threshold",
                                  "intra_gate", "source_background", "gate_probe_scale", "grabcut_margin"})


def reference_digest(image: np.ndarray, mask: np.ndarray) -> str:
    """SHA-256 of one reference as the propagator reads it: size, pixels and the mask thresholded at 0.5."""
    image = np.ascontiguousarray(image)
    digest = hashlib.sha256(f"{image.shape}|{image.dtype}|".encode())
    digest.update(image.tobytes())
    digest.update(np.ascontiguousarray(np.asarray(mask) >= 0.5).tobytes())
    return digest.hexdigest()


def context_key(propagator, references: list[tuple[np.ndarray, np.ndarray]], runtime: str) -> str:
    """The digest naming the context of ``references`` on ``propagator`` (a Propagator) run by ``runtime``."""
    import dataclasses

    from icm_cli import __version__
    from icm_cli.backbones.onnx_trunk import runtime_label, weights_digest

    settings = {k: v for k, v in dataclasses.asdict(propagator.settings).items() if k not in SOURCE_ONLY_SETTINGS}
    backbone = propagator.backbone
    payload = {
        "format": FORMAT, "icm": __version__, "torch": torch.__version__, "runtime": runtime_label(runtime),
        "device": propagator.device.type, "dtype": str(propagator.dtype), "backbone": getattr(backbone, "name", ""),
        "weights": weights_digest(backbone), "settings": settings,
        "decoder_inputs": bool(propagator.collect_decoder_inputs),
        "references": [reference_digest(img, msk) for img, msk in references],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------ the file

def _payload_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def context_arrays(context) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A ReferenceContext as named CPU tensors and string metadata (the safetensors layout)."""
    tokens = context.tokens
    tensors = {f"tokens.{k}": getattr(tokens, k).detach().cpu().contiguous()
               for k in ("fg", "bg", "cells", "cell_targets")}
    meta = {"format": FORMAT, "feature_dim": str(int(context.feature_dim)),
            "background_floor": repr(float(context.background_floor))}
    if context.head is not None:
        first = context.head.net[0]
        meta["head_in"] = str(first.in_features)
        meta["head_hidden"] = str(first.out_features if len(context.head.net) > 1 else 0)
        tensors.update({f"head.{k}": v.detach().cpu().contiguous() for k, v in context.head.state_dict().items()})
    if context.roi_tokens is not None:
        tensors["roi.tokens"] = context.roi_tokens.detach().cpu().contiguous()
        tensors["roi.valid"] = context.roi_valid.detach().cpu().contiguous()
    for stride, proto in (context.prototypes or {}).items():
        tensors[f"prototype.{int(stride)}"] = proto.detach().cpu().contiguous()
    for side, (prototypes, counts) in context.compact.items():
        tensors[f"compact.{side}"] = prototypes.detach().cpu().contiguous()
        tensors[f"compact.{side}.counts"] = counts.detach().cpu().contiguous()
    return tensors, meta


def context_from_arrays(tensors: dict[str, torch.Tensor], meta: dict[str, str]):
    """The inverse of :func:`context_arrays`; ValueError when the arrays do not make a context."""
    from icm_cli.predict.context import ReferenceContext
    from icm_cli.predict.head import ObjectHead
    from icm_cli.predict.tokens import ReferenceTokens

    dim = int(meta["feature_dim"])
    tokens = ReferenceTokens(*(tensors[f"tokens.{k}"] for k in ("fg", "bg", "cells", "cell_targets")))
    for name in ("fg", "bg", "cells"):
        t = getattr(tokens, name)
        if t.dim() != 2 or t.shape[1] != dim:
            raise ValueError(f"tokens.{name} is {tuple(t.shape)}, not [N, {dim}]")
    if tokens.cell_targets.shape != tokens.cells.shape[:1]:
        raise ValueError("cell targets do not match the cells")
    head = None
    if "head_in" in meta:
        head = ObjectHead(int(meta["head_in"]), int(meta["head_hidden"]))
        head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")}, strict=True)
        head.eval()
        for p in head.parameters():
            p.requires_grad_(False)
    roi, valid = tensors.get("roi.tokens"), tensors.get("roi.valid")
    if roi is not None and (roi.dim() != 3 or roi.shape[-1] != dim or valid is None or valid.shape != roi.shape[:2]):
        raise ValueError("ROI tokens do not match the features")
    prototypes = {int(k.split(".", 1)[1]): v for k, v in tensors.items() if k.startswith("prototype.")} or None
    compact = {}
    for side in ("fg", "bg"):
        made, counts = tensors.get(f"compact.{side}"), tensors.get(f"compact.{side}.counts")
        if made is None and counts is None:
            continue
        if made is None or counts is None or made.dim() != 2 or made.shape[1] != dim or counts.shape != made.shape[:1]:
            raise ValueError(f"the compact {side} tokens do not match the features")
        compact[side] = (made, counts)
    floor = float(meta["background_floor"])
    return ReferenceContext(tokens=tokens, head=head, feature_dim=dim,
                            background_floor=floor if not math.isnan(floor) else float("nan"),
                            roi_tokens=roi, roi_valid=valid, prototypes=prototypes, compact=compact)


def save(path: Path, key: str, context) -> None:
    """Write ``context`` under ``key`` to ``path`` atomically."""
    from safetensors.torch import save

    tensors, meta = context_arrays(context)
    meta.update(key=key, payload_sha256=_payload_digest(tensors))
    cache.write_atomic(path, save(tensors, metadata=meta))


def load(path: Path, key: str):
    """The context stored at ``path`` if it is intact and was stored under ``key``; else None."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != FORMAT or meta.get("key") != key:
                return None
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
        if meta.get("payload_sha256") != _payload_digest(tensors):
            return None
        return context_from_arrays(tensors, meta)
    except Exception:  # missing, torn, not safetensors, inconsistent arrays: rebuild
        return None


class ContextStore:
    """Contexts in ``folder`` (default: the cache folder's ``contexts/``), one file per key, kept under
    ``max_bytes`` (default :func:`icm_cli.cache.cache_limit`, ``$ICM_CACHE_MAX``; None = no cap): a
    context read is touched (its modification time is its last use), and after one is written the
    least recently used others go until the folder fits."""

    def __init__(self, folder: Path, max_bytes: int | None = -1) -> None:
        self.folder = Path(folder)
        self.max_bytes = cache.cache_limit() if max_bytes == -1 else max_bytes  # -1: as the environment says

    @classmethod
    def default(cls) -> "ContextStore | None":
        """The store in the user's cache folder; None when it cannot be written."""
        folder = cache.cache_folder("contexts")
        return cls(folder) if folder is not None else None

    def path(self, key: str) -> Path:
        return self.folder / f"{key[:32]}.safetensors"

    def get_or_build(self, key: str, build):
        """``(context, reused)``: the stored context of ``key``, or ``build()``'s, stored for next time."""
        path = self.path(key)
        found = load(path, key)
        if found is not None:
            cache.touch(path)
            return found, True
        with cache.exclusive(self.folder / f"{key[:32]}.lock"):
            found = load(path, key)  # built by another process while this one waited
            if found is not None:
                cache.touch(path)
                return found, True
            context = build()
            try:
                save(path, key, context)
            except OSError:  # a full disk: the run goes on without storing
                return context, False
        cache.evict(self.folder, self.max_bytes, keep=path)
        return context, False


def set_references(propagator, references: list[tuple[np.ndarray, np.ndarray]], runtime: str,
                   store: ContextStore | None) -> bool:
    """``propagator.set_references(references)``, or its stored result. Returns True when reused.

    A reused context leaves ``propagator.reference_features`` None (the
    references' feature maps are not stored; :meth:`Predictor.attention`
    recomputes the one it needs).
    """
    if store is None:
        propagator.set_references(references)
        return False
    key = context_key(propagator, references, runtime)
    context, reused = store.get_or_build(key, lambda: propagator.set_references(references))
    if reused:
        propagator.context = context
        propagator.reference_features = None
    return reused


__all__ = ["ContextStore", "SOURCE_ONLY_SETTINGS", "context_arrays", "context_from_arrays", "context_key", "load",
           "reference_digest", "save", "set_references"]
