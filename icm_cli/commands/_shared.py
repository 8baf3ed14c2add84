"""Pieces several commands share: loading references, building the engine, pairing by stem."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from icm_cli import io


def load_references(refs: list[str], masks: list[str], max_pixels: int,
                    resize_masks: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read ``--ref``/``--mask`` pairs; raises :class:`io.InputError` naming the bad file."""
    from PIL import Image

    if not refs:
        raise io.InputError("--ref is required: the reference image that shows the object")
    if len(refs) != len(masks):
        raise io.InputError(f"give one --mask per --ref (got {len(refs)} --ref and {len(masks)} --mask)")
    pairs = []
    for ref, mask_path in zip(refs, masks):
        image = io.read_image(ref, max_pixels=max_pixels)
        mask = io.read_mask(mask_path, max_pixels=max_pixels)
        if _looks_like_photo(mask):
            if _is_black_and_white(image):
                raise io.InputError(f"{mask_path}: looks like a photo, not a mask, and --ref {ref} looks like a mask: "
                                    "were --ref and --mask swapped?")
            raise io.InputError(f"{mask_path}: looks like a photo, not a mask (most pixels are mid-grey); give the "
                                "object's mask: white (or 1) on the object, black (0) elsewhere")
        if mask.shape != image.shape[:2]:
            if not resize_masks:
                raise io.InputError(
                    f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but {ref} is "
                    f"{image.shape[1]}x{image.shape[0]} (pass --resize-masks to stretch it)")
            mask = np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).resize(
                (image.shape[1], image.shape[0]), Image.NEAREST), np.float32) / 255.0
        binary = io.binary_mask(mask)
        if not binary.any():
            raise io.InputError(f"{mask_path}: mask is empty (no pixel at or above half range)")
        if binary.all():
            raise io.InputError(f"{mask_path}: mask covers the whole image, so there is no background to contrast")
        pairs.append((image, mask))
    return pairs


def _looks_like_photo(mask: np.ndarray) -> bool:
    """``[H, W]`` in [0, 1] with most pixels mid-grey: a photo. Masks and even soft mattes are mostly 0 or 1."""
    mid = np.count_nonzero((mask > 0.1) & (mask < 0.9))
    return mid > 0.5 * mask.size


def _is_black_and_white(image: np.ndarray) -> bool:
    """``[H, W, 3]`` uint8 holding nothing but black and white pixels (a mask given as --ref)."""
    return bool(np.isin(image, (0, 1, 255)).all())


def build_propagator(backbone: str, weights: Optional[str], device: str, size: int,
                     head_steps: Optional[int] = None, edges: bool = True, threshold: Optional[float] = None,
                     fine_edges: bool = False, decoder: Optional[str] = None):
    """Backbone + engine on the resolved device; raises one-line errors.
    ``decoder``: none | auto | builtin | FILE.safetensors (None: the engine's default)."""
    from icm_cli.backbones import create_backbone
    from icm_cli.device import default_dtype, resolve_device
    from icm_cli.predict.engine import PropagateSettings, Propagator

    dev = resolve_device(device)
    settings = PropagateSettings(size=size)
    if head_steps is not None:
        settings = dataclasses.replace(settings, head_steps=head_steps)
    if threshold is not None:
        settings = dataclasses.replace(settings, grabcut=False, threshold=threshold)
    elif not edges:
        settings = dataclasses.replace(settings, grabcut=False)
    if fine_edges:
        settings = dataclasses.replace(settings, grabcut_scale=1.0)
    if decoder is not None:
        settings = dataclasses.replace(settings, decoder=decoder)
    net = create_backbone(backbone, weights)
    return Propagator(net, device=dev, dtype=default_dtype(dev), settings=settings)


def find_by_stem(folder: Path, stem: str) -> Optional[Path]:
    """The image in ``folder`` whose stem is ``stem`` (PNG preferred), or None."""
    preferred = folder / f"{stem}.png"
    if preferred.is_file():
        return preferred
    for suffix in sorted(io.IMAGE_SUFFIXES):
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def process_files(paths: Iterable[Path], targets: Callable[[str], list[Path]],
                  work: Callable[[Path, str], None], *, output: Path, overwrite: bool, quiet: bool,
                  description: str, total: Optional[int] = None):
    """The per-file batch loop of `trimap`, `refine` and `matte`.

    For each path: its unique stem; skipped when every path of
    ``targets(stem)`` exists (unless ``overwrite``); else ``work(path, stem)``
    writes the outputs. A user-file problem fails that file alone (one line),
    a full disk stops the run, an unexpected error fails the file (re-raised
    with --debug). Returns the :class:`~icm_cli.console.BatchOutcome`.
    """
    from icm_cli import console
    from icm_cli.console import BatchOutcome, progress_bar

    outcome = BatchOutcome()
    stems = io.StemAllocator()
    with progress_bar(total, description, enabled=not quiet) as advance:
        for path in paths:
            stem = stems(path)
            if not overwrite and all(t.exists() for t in targets(stem)):
                outcome.skipped += 1
                advance()
                continue
            try:
                work(path, stem)
                outcome.done += 1
            except io.InputError as exc:
                outcome.fail(str(path), str(exc))
                if io.fatal_write_error(exc):
                    outcome.stopped = f"cannot write to {output} ({io.fatal_write_error(exc)})"
                    break
            except MemoryError:
                outcome.fail(str(path), f"{path}: out of memory")
            except Exception as exc:  # a bug or a library error on one file: the others go on
                if console.DEBUG:
                    raise
                outcome.fail(str(path), console.unexpected(exc, str(path)))
            advance()
    return outcome
