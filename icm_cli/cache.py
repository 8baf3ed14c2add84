"""The user's cache folder: what icm computes once and reuses across runs.

Two things live here, each under its own sub-folder and each keyed by
everything that shapes it (so a changed input is a new entry, never a stale
hit), checked when read (a corrupt entry is rebuilt, never trusted), written
atomically (a temporary name, then a rename) and built by one process at a
time (an advisory lock; the others wait and then read what it wrote):

- ``onnx/``: the backbone and the learned decoders exported to ONNX (:mod:`icm_cli.backbones.onnx_trunk`,
  :mod:`icm_cli.predict.decoder_onnx`);
- ``contexts/``: reference contexts (:mod:`icm_cli.predict.context_store`).

Where: ``$ICM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/icm``, else
``~/.cache/icm``. Deleting the folder is always safe. Nothing here imports
torch.

``contexts/`` is kept under a size cap (:func:`cache_limit`: 1 GiB unless
``$ICM_CACHE_MAX`` says otherwise): an entry's modification time is its
last use (touched when read), and after a new entry is written the least
recently used others are deleted until the folder fits (:func:`evict`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from icm_cli import atomic
from icm_cli.errors import SettingError

try:  # POSIX advisory locks; elsewhere writers rely on the atomic rename alone
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def cache_root() -> Path:
    """The cache folder (not created here)."""
    explicit = os.environ.get("ICM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "icm"


def cache_folder(kind: str) -> Path | None:
    """``cache_root() / kind``, created; None when it cannot be created or written (a read-only home)."""
    folder = cache_root() / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK | os.X_OK):
        return None
    atomic.remove_stale_temp_files(folder)  # what a killed writer left
    return folder


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an advisory lock on ``lock_path`` while inside: one builder at a time, the others wait.

    Where locks are unsupported (or the lock file cannot be made) this
    degrades to no lock: entries are still published atomically and
    checked when read, so a race costs a duplicate build, never a bad file.
    """
    handle = None
    try:
        handle = open(lock_path, "a+b")
    except OSError:
        handle = None
    try:
        if handle is not None and fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            except OSError:
                pass
        yield
    finally:
        if handle is not None:
            handle.close()  # closing releases the lock


def temp_sibling(final: Path, suffix: str = "") -> Path:
    """A unique temporary name beside ``final`` (same folder, so a rename is atomic), in
    :mod:`icm_cli.atomic`'s scheme (``.icm-<host>-<pid>-<random>.tmp``, then ``suffix``)."""
    return final.with_name(f".{atomic.temp_tag()}-{uuid.uuid4().hex[:8]}.tmp{suffix}")


def write_atomic(final: Path, data: bytes) -> None:
    """Write ``data`` to ``final`` through a temporary file, flushed to the disk, and one rename
    (readers never see half a file): :func:`icm_cli.atomic.atomic_write`."""
    atomic.atomic_write(final, data, fsync=True)


def discard(path: Path) -> None:
    """Remove a file or folder that failed its check (moved aside first, so a reader never sees it half-gone)."""
    if not path.exists() and not path.is_symlink():
        return
    aside = temp_sibling(path, ".discard")
    try:
        os.replace(path, aside)
    except OSError:
        aside = path
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            aside.unlink()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scratch_folder(parent: Path, name: str) -> Path:
    """A fresh private folder in ``parent``, to fill and then rename to ``name`` (:func:`icm_cli.atomic.temp_folder`)."""
    return atomic.temp_folder(parent)


# ------------------------------------------------------------------ size cap

#: The cap of ``contexts/`` when ``$ICM_CACHE_MAX`` is not set: 1 GiB (a context is ~1-10 MB).
DEFAULT_CACHE_MAX = 1 << 30

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``"500M"`` -> 524288000: a byte count, with an optional suffix K, M, G or T (powers of 1024, as
    ``du -h`` prints them; ``MB``, ``MiB`` and lower case mean the same) and a fraction allowed
    (``1.5G``); ``B`` alone is bytes. ValueError for anything else, negative sizes included."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(i?b)?|(b))?\s*", str(text), re.IGNORECASE)
    if not match:
        raise SettingError(f"{text!r} is not a size (bytes, or a number with K, M, G or T: 500M, 2G)")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])


def cache_limit() -> int | None:
    """The size cap of ``contexts/`` in bytes: ``$ICM_CACHE_MAX`` (``0`` = no cap, returned as None),
    else :data:`DEFAULT_CACHE_MAX`. A value that is not a size is named on stderr once and the default
    applies (a cache setting never stops a run)."""
    global _warned
    raw = os.environ.get("ICM_CACHE_MAX", "").strip()
    if not raw:
        return DEFAULT_CACHE_MAX
    try:
        limit = parse_size(raw)
    except ValueError as exc:
        if not _warned:
            _warned = True
            import sys

            print(f"warning: ICM_CACHE_MAX={raw}: {exc}; the cache is capped at 1G", file=sys.stderr)
        return DEFAULT_CACHE_MAX
    return limit or None


_warned = False


def touch(path: Path) -> None:
    """Mark an entry as just used (its modification time is its last use); gone or read-only: no matter."""
    with contextlib.suppress(OSError):
        os.utime(path)


def evict(folder: Path, limit: int | None, keep: Path | None = None, pattern: str = "*.safetensors") -> list[Path]:
    """Delete the least recently used entries (``pattern``, by modification time) of ``folder`` until the
    rest fits in ``limit`` bytes; never ``keep`` (the entry just written, even when it alone is over the
    cap). Returns what was deleted. Other processes may read, write or delete entries at the same time:
    an entry that vanished is skipped, and a reader holding one open still reads it (POSIX)."""
    if not limit or limit <= 0:
        return []
    entries = []
    for path in Path(folder).glob(pattern):
        if path.name.startswith("."):  # a temporary being written or discarded
            continue
        try:
            info = path.stat()
        except OSError:  # deleted meanwhile
            continue
        entries.append((info.st_mtime_ns, path.name, path, info.st_size))
    total = sum(size for *_, size in entries)
    removed = []
    for _, _, path, size in sorted(entries):
        if total <= limit:
            break
        if keep is not None and path == keep:
            continue
        try:
            path.unlink()
        except FileNotFoundError:  # another process evicted it first: it is gone all the same
            pass
        except OSError:
            continue
        total -= size
        removed.append(path)
    return removed


__all__ = ["DEFAULT_CACHE_MAX", "cache_folder", "cache_limit", "cache_root", "discard", "evict", "exclusive",
           "file_sha256", "parse_size", "scratch_folder", "temp_sibling", "touch", "write_atomic"]
