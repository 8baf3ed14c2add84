"""Deterministic partition of the sources for ``--shard I/N``: no coordination needed.

N independent processes (a SLURM array, N machines, N terminals) given the
same SOURCES each take ``--shard I/N``; together they cover every source
exactly once, and a rerun of shard I takes the same sources again.

How a source is assigned
    Each source has a *key*: its path relative to the SOURCES folder it was
    found in (``shoot1/0001.jpg`` under ``frames/``), or the path as given
    for a file named on the command line or on stdin. Shard ``I`` owns the
    keys whose 64-bit BLAKE2b digest is ``I - 1`` modulo ``N``.

Why a hash of the key, not the index in the sorted list
    - The decision for a source depends on that source alone: a file that
      appears or disappears while the array starts (frames still being
      copied, a node with a stale listing) moves nothing else, whereas
      ``index % N`` or contiguous slices shift every later file to another
      shard, so one node skips files another already took or both take them.
    - Mount points do not matter: ``/mnt/a/frames`` and ``/data/frames`` on
      two nodes give the same keys.
    - ``hashlib`` is used, never ``hash()``: Python salts ``hash(str)`` per
      process (PYTHONHASHSEED), so it would differ on every node.
    - The price: shards are balanced only on average (for 64 sources in 2
      shards, 32 +/- 4), and two sources with the same relative path under
      two SOURCES folders always share a shard.

Output names are unchanged by sharding: :class:`~icm_cli.sources.SourceFinder`
names every source over the *full* list (``x``, then ``x~2`` for a second
``x.png`` from another folder) before a shard keeps its own share, so
shards write exactly the files a single run would, into one output tree.
The key is :attr:`~icm_cli.sources.Source.key`.

Sequences (``--video``) must stay whole: :func:`select_groups` decides by a
group key (the sequence), so every frame of a sequence lands in one shard.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

from icm_cli.errors import SettingError

T = TypeVar("T")

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``, 1-based like ``--shard 1/4`` ... ``--shard 4/4``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise SettingError(f"shard takes I/N with 1 <= I <= N (got {self.index}/{self.count})", option="--shard")

    @property
    def manifest_name(self) -> str:
        """Each shard appends to its own manifest: ``manifest.I-of-N.jsonl``."""
        return f"manifest.{self.index}-of-{self.count}.jsonl"

    def owns(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"2/4"`` -> ``Shard(2, 4)``; anything else raises ValueError with a sentence."""
    match = _SHARD.match(text or "")
    if not match:
        raise SettingError(f"shard takes I/N, e.g. 1/4 (got {text!r})", option="--shard")
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_of(key: str, count: int) -> int:
    """The 1-based shard in ``1..count`` that owns ``key``; the same in every process and on every machine."""
    if count < 1:
        raise SettingError(f"shard count must be at least 1 (got {count})")
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count + 1


def select(items: Iterable[T], shard: Shard | None, key: Callable[[T], str] = str) -> Iterator[T]:
    """Per-item partition: the items whose ``key(item)`` this shard owns (all of them when ``shard`` is None)."""
    for item in items:
        if shard is None or shard.owns(key(item)):
            yield item


def select_groups(items: Iterable[T], shard: Shard | None, group: Callable[[T], str]) -> Iterator[T]:
    """Per-group partition: an item goes where its group's key goes, so a group is never split.

    For ``--video``: ``group`` returns the sequence key (the video's relative
    path, or the frame folder's), and a shard takes whole sequences.
    """
    return select(items, shard, key=group)
