"""Reference images and their masks: read, checked, and described for the manifest."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from icm_cli import io
from icm_cli.errors import ArrayError


@dataclass
class Reference:
    """One labelled example: ``image`` ``[H, W, 3]`` uint8, ``mask`` ``[H, W]`` float in [0, 1]."""

    image: np.ndarray
    mask: np.ndarray
    image_path: str | None = None
    mask_path: str | None = None
    #: For ``clip.mp4@N`` (or ``@1.5s``): the frame's index as ``--video`` numbers frames, time resolved.
    frame: int | None = None

    def describe(self) -> dict[str, str]:
        """Where it came from and what it holds, for the run record (a changed file shows as a new digest)."""
        digest = hashlib.blake2b(np.ascontiguousarray(self.image).tobytes(), digest_size=8)
        digest.update(np.ascontiguousarray(self.mask >= 0.5).tobytes())
        out = {"digest": digest.hexdigest()}
        if self.image_path:
            out["image"] = os.path.abspath(self.image_path)
        if self.mask_path:
            out["mask"] = os.path.abspath(self.mask_path)
        return out


def check_reference(image: np.ndarray, mask: np.ndarray, image_name: str = "the reference",
                    mask_name: str = "the mask") -> np.ndarray:
    """Validate one pair; returns the mask as float ``[H, W]``. Raises :class:`io.InputError` naming the file."""
    if mask.shape != image.shape[:2]:
        if mask.shape == image.shape[1::-1]:  # drawn on the pixels as stored, not as the image is shown
            raise io.InputError(f"{mask_name}: mask is {mask.shape[1]}x{mask.shape[0]} but {image_name} is "
                                f"{image.shape[1]}x{image.shape[0]} as displayed: turned, as if drawn on the "
                                "pixels before their EXIF orientation (a clip's rotation) was applied; draw it "
                                "on the image as a viewer shows it")
        raise io.InputError(f"{mask_name}: mask is {mask.shape[1]}x{mask.shape[0]} but {image_name} is "
                            f"{image.shape[1]}x{image.shape[0]} (pass --resize-masks to stretch it)")
    if _looks_like_photo(mask):
        if _is_black_and_white(image):
            raise io.InputError(f"{mask_name}: looks like a photo, not a mask, and {image_name} looks like a "
                                "mask: were --ref and --mask swapped?")
        raise io.InputError(f"{mask_name}: looks like a photo, not a mask (most pixels are mid-grey); give the "
                            "object's mask: white (or 1) on the object, black (0) elsewhere")
    binary = io.binary_mask(mask)
    if not binary.any():
        raise io.InputError(f"{mask_name}: mask is empty (no pixel at or above half range)")
    if binary.all():
        raise io.InputError(f"{mask_name}: mask covers the whole image, so there is no background to contrast")
    return mask


def reference_warnings(ref: Reference, cell_pixels: float) -> list[str]:
    """Doubts about a reference that is valid but probably not what was meant.

    ``cell_pixels``: the side of one feature cell in the reference's own pixels.
    """
    name = ref.mask_path or "the reference mask"
    binary = io.binary_mask(ref.mask)
    notes = []
    if binary.sum() < cell_pixels * cell_pixels:
        notes.append(f"{name}: the object covers {int(binary.sum())} pixels, less than one feature cell "
                     f"({cell_pixels:.0f}x{cell_pixels:.0f} px): matching will be weak (use a larger view, or --size)")
    if binary[0, :].all() and binary[-1, :].all() and binary[:, 0].all() and binary[:, -1].all():
        notes.append(f"{name}: the mask covers all four borders: is it inverted? "
                     "(white, or 1, should be the object)")
    return notes


def _looks_like_photo(mask: np.ndarray) -> bool:
    """``[H, W]`` in [0, 1] with most pixels mid-grey: a photo. Masks and even soft mattes are mostly 0 or 1."""
    mid = np.count_nonzero((mask > 0.1) & (mask < 0.9))
    return mid > 0.5 * mask.size


def _is_black_and_white(image: np.ndarray) -> bool:
    """``[H, W, 3]`` uint8 holding nothing but black and white pixels (a mask given as --ref)."""
    return bool(np.isin(image, (0, 1, 255)).all())


def load_references(refs: list[str], masks: list[str], max_pixels: int = io.DEFAULT_MAX_PIXELS,
                    resize_masks: bool = False) -> list[Reference]:
    """Read ``--ref``/``--mask`` pairs; raises :class:`io.InputError` naming the bad file."""
    from PIL import Image

    if not refs:
        raise io.InputError("--ref is required: the reference image that shows the object")
    if len(refs) != len(masks):
        raise io.InputError(f"give one --mask per --ref (got {len(refs)} --ref and {len(masks)} --mask)")
    from icm_cli.video import locate_frame, parse_frame_ref

    pairs = []
    for ref, mask_path in zip(refs, masks):
        at, frame = parse_frame_ref(ref), None  # a file, or a frame of a clip: clip.mp4@12
        if at is not None:
            frame, image = locate_frame(at, max_pixels)
        else:
            image = io.read_image(ref, max_pixels=max_pixels)
        mask = io.read_mask(mask_path, max_pixels=max_pixels)
        if mask.shape != image.shape[:2] and resize_masks:
            mask = np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).resize(
                (image.shape[1], image.shape[0]), Image.NEAREST), np.float32) / 255.0
        check_reference(image, mask, str(ref), str(mask_path))
        pairs.append(Reference(image, mask, str(ref), str(mask_path), frame))
    return pairs


def as_image(image) -> np.ndarray:
    """A path (also ``clip.mp4@12``, a frame of a clip), a PIL image or an array -> ``[H, W, 3]`` uint8 RGB
    (for the Python API)."""
    if isinstance(image, (str, os.PathLike)):
        from icm_cli.video import read_image_or_frame

        return read_image_or_frame(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.array(image.convert("RGB"), dtype=np.uint8)  # a writable copy
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ArrayError(f"expected an [H, W, 3] RGB image, got an array of shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ArrayError(f"expected uint8 pixels (0-255), got {arr.dtype}")
    return np.ascontiguousarray(arr[..., :3])


def as_mask(mask) -> np.ndarray:
    """A path, a PIL image or an array (bool, 0/1, 0/255) -> ``[H, W]`` float32 in [0, 1]."""
    if isinstance(mask, (str, os.PathLike)):
        return io.read_mask(Path(mask))
    if hasattr(mask, "convert") and hasattr(mask, "size"):
        mask = np.asarray(mask)
    arr = np.asarray(mask)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2)
    if arr.ndim != 2:
        raise ArrayError(f"expected an [H, W] mask, got an array of shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.float32)
    return io.mask_to_float(arr, "L")
