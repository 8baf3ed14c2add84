"""The user's cache folder: what icm computes once and reuses across runs.

Two things live here, each under its own sub-folder and each keyed by
everything that shapes it (so a changed input is a new entry, never a stale
hit), checked when read (a corrupt entry is rebuilt, never trusted), written
atomically (a temporary name, then a rename) and built by one process at a
time (an advisory lock; the others wait and then read what it wrote):

- ``onnx/``: the backbone exported to ONNX (:mod:`icm_cli.backbones.onnx_trunk`);
- ``contexts/``: reference contexts (:mod:`icm_cli.predict.context_store`).

Where: ``$ICM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/icm``, else
``~/.cache/icm``. Deleting the folder is always safe. Nothing here imports
torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

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
    return folder if os.access(folder, os.W_OK | os.X_OK) else None


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
    """A unique temporary name beside ``final`` (same folder, so the rename is atomic)."""
    return final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{suffix}")


def write_atomic(final: Path, data: bytes) -> None:
    """Write ``data`` to ``final`` through a temporary file and one rename (readers never see half a file)."""
    tmp = temp_sibling(final)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


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
    """A fresh private folder beside where ``name`` will be published."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))


__all__ = ["cache_folder", "cache_root", "discard", "exclusive", "file_sha256", "scratch_folder", "temp_sibling",
           "write_atomic"]
