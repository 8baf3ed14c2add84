"""Writing files atomically: one temporary-name scheme, one writer, one cleaner.

Every file icm writes (outputs, videos, thumbnails, cache entries, decoder
weights, training episodes) is written whole to a hidden temporary file in
the target's own folder and then renamed over the target, so a reader or a
rerun never finds half a file under the final name. The temporary file is
called ``.icm-<host>-<pid>-<random>.tmp``, whatever the target is called:

- in the target's folder, so the rename is atomic (one file system);
- hidden, so it is never read as a source or an output;
- not named after the target, so a long output name never makes it too long;
- ``<host>`` (a short hash of the host name) and ``<pid>`` say who writes it,
  so :func:`remove_stale_temp_files` can tell a file a killed run left from
  one a live run (another ``--shard``, another machine on a shared folder) is
  still writing.

Files get the mode a plain ``open(path, "w")`` would give (0644 under the
usual umask 022), not ``mkstemp``'s 0600. Nothing here imports numpy or torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Iterator

#: A temporary file untouched for this long belongs to no running write.
STALE_TEMP_AGE_S = 3600.0

#: Who writes: a short hash of the host name (no dots or dashes, so the name parses back).
HOST = hashlib.blake2b(socket.gethostname().encode("utf-8", "replace"), digest_size=4).hexdigest()

#: Today's name, ``.icm-<host>-<pid>-<random>.tmp``, and icm's older one that put the output's name
#: first, ``.<name>.icm-<host>-<pid>.<random>.tmp``: both say who wrote them. (The cache moves a bad
#: entry aside to ``<temporary name>.discard`` before deleting it.)
_OWNED = re.compile(r"^\.(?:.+\.)?icm-([A-Za-z0-9]*)-(\d+)[.-][A-Za-z0-9_]+\.tmp(?:\.discard)?$")

#: Names earlier versions gave their temporary files elsewhere, which say no host: judged by age only,
#: so an upgrade cleans what they left.
_OLD_SCHEMES = (
    re.compile(r"^\..+\.\d+-[0-9a-f]{8}\.tmp(?:\.discard)?$"),  # cache entries: .<name>.<pid>-<hex8>.tmp
    re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$"),                # thumbnails, decoder weights: .<name>.<mkstemp>.tmp
    re.compile(r"^\.\d+\.\d+\.tmp\.npz$"),                      # training episodes: .<index>.<pid>.tmp.npz
    re.compile(r"^\.plan\.\d+\.json$"),                         # the training episodes' plan: .plan.<pid>.json
    re.compile(r"^\..+\.safetensors\.tmp$"),                    # training checkpoints: .<name>.safetensors.tmp
)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: done once, at import
    os.umask(mask)
    return mask


#: The mode a plain ``open(path, "w")`` would give (0644 under the usual umask 022).
FILE_MODE = 0o666 & ~_umask()


def output_file_mode() -> int:
    """The mode icm gives every file it writes (what a plain ``open(path, "w")`` gives: 0644 under umask 022)."""
    return FILE_MODE


def temp_tag(pid: int | None = None, host: str | None = None) -> str:
    """The ``icm-<host>-<pid>`` part of a temporary file's name: who is writing it."""
    return f"icm-{HOST if host is None else host}-{os.getpid() if pid is None else pid}"


def temp_file(folder: str | os.PathLike) -> tuple[int, str]:
    """A new, empty temporary file in ``folder``: ``(open descriptor, path)``, mode 0600 until chmod-ed."""
    return tempfile.mkstemp(prefix=f".{temp_tag()}-", suffix=".tmp", dir=folder)


def temp_folder(folder: str | os.PathLike) -> Path:
    """A new, private temporary folder in ``folder`` (named like a temporary file), to fill and rename."""
    return Path(tempfile.mkdtemp(prefix=f".{temp_tag()}-", suffix=".tmp", dir=folder))


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file's name of this version or an earlier one."""
    return bool(_OWNED.match(name)) or any(p.match(name) for p in _OLD_SCHEMES)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: int | None = None, fsync: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content to; renamed over ``path`` when the block ends.

    The folder must exist. ``mode``: the file's mode (default :data:`FILE_MODE`); ``fsync``: flush
    to the disk before the rename (for entries other processes trust once published). An exception
    in the block (an interrupt included) removes the temporary file and leaves ``path`` as it was;
    OSErrors pass through for the caller to word.
    """
    path = Path(path)
    fd, tmp = temp_file(path.parent)
    try:
        os.fchmod(fd, FILE_MODE if mode is None else mode)
        with os.fdopen(fd, "wb") as fh:
            fd = None
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write(path: str | os.PathLike, data: bytes | str, mode: int | None = None, fsync: bool = False) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) through :func:`atomic_file`."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_file(path, mode=mode, fsync=fsync) as fh:
        fh.write(data)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def remove_stale_temp_files(folder: str | os.PathLike) -> int:
    """Delete temporary files that killed runs left in ``folder``; return how many.

    A kill -9 or a power cut can leave a temporary file behind; it is never
    read as an output or a source (hidden files are skipped). One named by
    this version (or icm's older output name) is removed when the process
    named in it no longer runs on this machine, or when it is older than
    :data:`STALE_TEMP_AGE_S` (a file of another machine writing to a shared
    folder is only judged by age), so parallel runs (``--shard``) never lose a
    file they are still writing. The names earlier versions used elsewhere
    say no host, and are removed by age only.
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        owned = _OWNED.match(entry.name)
        if not (owned or any(p.match(entry.name) for p in _OLD_SCHEMES)):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_AGE_S
            dead = owned is not None and owned.group(1) == HOST and not _pid_running(int(owned.group(2)))
            if old or dead:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


__all__ = ["FILE_MODE", "HOST", "STALE_TEMP_AGE_S", "atomic_file", "atomic_write", "is_temp_name",
           "output_file_mode", "remove_stale_temp_files", "temp_file", "temp_folder", "temp_tag"]
