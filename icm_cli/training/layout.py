"""The folder layout `icm train` reads: groups of images with masks.

::

    DATA/
      <group>/                 one object (a product, an animal, a clip's subject) or one category
        images/<name>.<ext>    its photos or frames (any image format icm reads)
        masks/<name>.<ext>     the object's mask in each, same name (0/255, 0/1, palette, 16-bit, RGB)
        group.json             optional: {"sequence": true, "pool": "animals", "split": "val"}

- ``"sequence": true``: the images are frames of one clip in (natural) name
  order. Sequences give video episodes: the mask of a frame 1-5 frames
  earlier is the prior of the next.
- ``"pool"``: groups are sampled pool by pool (equal shares unless
  ``icm train --pool-weight POOL=W``), and within a pool every group
  equally, so that one large group (a thousand photos of people) does not
  outweigh thirty small ones. Default pool: the group's own name.
- ``"split"``: ``train`` (default), ``val`` (held out and scored) or
  ``skip``. In a pool where no group says ``val``, ``icm train`` holds out
  a share (``--val-share``): whole groups, chosen by the seed, in a pool of
  three groups or more; otherwise every n-th image of its groups of photos
  (never frames of a sequence, whose neighbours would leak).

An image without a mask of the same name, or with a mask of another size,
is left out with a warning naming the files (the rest trains); a mask whose
object covers less than 0.5% of its image is never used as a reference.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from icm_cli.errors import LayoutError  # noqa: F401 (re-exported)
from icm_cli.io import IMAGE_SUFFIXES
from icm_cli.sources import natural_key  # noqa: F401  (one natural order in icm; re-exported)

#: Masks covering less of their image than this are not used as references.
MIN_REFERENCE_SHARE = 0.005
SPLITS = ("train", "val", "skip")


@dataclass(frozen=True)
class Item:
    """One image of a group and its mask, both relative to DATA."""

    image: str
    mask: str


@dataclass
class Group:
    """A group folder: ``items`` in natural name order; ``val_items``: indices of its
    items held out for validation while the group itself trains."""

    name: str
    items: list[Item]
    sequence: bool = False
    pool: str = ""
    split: str = "train"
    val_items: set[int] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)


def _image_files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def displayed_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` as icm reads the file (EXIF rotation applied), from its header alone; None
    when the header cannot be read (reading the file later says why)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated a quarter turn: sides swap
                width, height = height, width
    except Exception:  # any decoder error: the pixels are judged where they are read
        return None
    return width, height


def read_group(data: Path, folder: Path) -> Group:
    """One group folder -> :class:`Group` (items in natural name order)."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise LayoutError(f"{folder}: a group needs images/ and masks/ folders (see `icm train --help`)")
    meta = {}
    meta_path = folder / "group.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise LayoutError(f"{meta_path}: not readable JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise LayoutError(f"{meta_path}: must hold a JSON object")
    split = meta.get("split", "train")
    if split not in SPLITS:
        raise LayoutError(f"{meta_path}: split must be one of {', '.join(SPLITS)}, not {split!r}")
    images, masks = _image_files(images_dir), _image_files(masks_dir)
    group = Group(name=folder.name, items=[], sequence=bool(meta.get("sequence", False)),
                  pool=str(meta.get("pool") or folder.name), split=split)
    for stem in sorted(images, key=natural_key):
        if stem not in masks:
            group.warnings.append(f"{images[stem]}: no mask named {stem}.* in {masks_dir}; left out")
            continue
        image_size, mask_size = displayed_size(images[stem]), displayed_size(masks[stem])
        if image_size and mask_size and image_size != mask_size:
            group.warnings.append(f"{masks[stem]}: mask is {mask_size[0]}x{mask_size[1]} but {images[stem]} is "
                                  f"{image_size[0]}x{image_size[1]}; left out")
            continue
        group.items.append(Item(images[stem].relative_to(data).as_posix(), masks[stem].relative_to(data).as_posix()))
    return group


def read_layout(data: Path, val_share: float = 0.1, seed: int = 0) -> list[Group]:
    """Every group under ``data`` (natural name order), with the validation split settled.

    Raises :class:`LayoutError` when ``data`` holds no usable group."""
    data = Path(data)
    if not data.is_dir():
        raise LayoutError(f"{data}: not a folder")
    folders = sorted((p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: natural_key(p.name))
    groups = [read_group(data, f) for f in folders]
    groups = [g for g in groups if g.items]
    if not groups:
        raise LayoutError(f"{data}: no groups with images/ and masks/ found (see `icm train --help`)")
    if val_share > 0:
        hold_out(groups, val_share, seed)
    return groups


def hold_out(groups: list[Group], share: float, seed: int) -> None:
    """Mark about ``share`` of each pool that has no validation group yet (see the module docstring)."""
    rng = random.Random(seed)
    pools: dict[str, list[Group]] = {}
    has_val = {g.pool for g in groups if g.split == "val"}
    for g in groups:
        if g.split == "train" and g.pool not in has_val:
            pools.setdefault(g.pool, []).append(g)
    every = max(2, round(1 / share))
    for members in pools.values():
        if len(members) >= 3:
            for g in rng.sample(members, max(1, round(share * len(members)))):
                g.split = "val"
            continue
        for g in members:
            if not g.sequence and len(g.items) >= 2 * every:
                g.val_items = set(range(0, len(g.items), every))
