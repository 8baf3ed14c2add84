"""Finding the sources of a run and naming their outputs.

SOURCES arguments (files, folders, ``-`` for paths on stdin) become
:class:`Source` entries: the path as the user gave it, a partition key for
``--shard`` and the output name. Names keep the source's own file name
(``cup (1).jpg`` -> ``cup (1).png``) and replace only what is unsafe;
with ``--recursive`` they mirror the sub-folders (``a/frame.jpg`` ->
``a/frame``). Every name is unique in the run by construction.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from icm_cli.errors import SourceError  # noqa: F401 (re-exported)
from icm_cli.io import IMAGE_SUFFIXES

#: Longest output name in bytes: a file system takes 255, and ``.png`` follows it.
MAX_NAME_BYTES = 240

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class Source:
    """One source image of a run.

    path: as given or as found under a given folder (relative stays
    relative, so messages name files as the user did); key: the path
    relative to the SOURCES folder it was found in, POSIX style (the
    ``--shard`` partition key); name: the natural output name (relative
    folders and the file's stem, made safe), used to pair files across
    folders; stem: the output name actually used, ``name`` or
    ``name~2``... when another source took it first.
    """

    path: Path
    key: str
    name: str
    stem: str


@dataclass(frozen=True)
class ListingProblem:
    """A folder found while walking SOURCES that could not be read: one failure of the run."""

    path: Path
    message: str


class SourceList:
    """The sources of one run, in order: listed in advance, or streamed as the run reads them.

    A folder's images and paths named on the command line are *listed*: the
    run knows how many there are and which are done before it starts. Paths
    read from stdin are *streamed*: each is known only when read (and read
    once). Entries are :class:`Source` or, for a folder that could not be
    read, :class:`ListingProblem`.
    """

    def __init__(self, entries: Iterable["Source | ListingProblem"], *, listed: bool) -> None:
        self._entries = list(entries) if listed else entries
        self.listed = listed

    @classmethod
    def of(cls, finder: "SourceFinder") -> "SourceList":
        """A finder's entries: streamed when it reads stdin, otherwise listed now."""
        return cls(finder, listed=not finder.streams_stdin)

    def __iter__(self) -> Iterator["Source | ListingProblem"]:
        return iter(self._entries)

    @property
    def total(self) -> int | None:
        """How many entries, when listed; None for a stream."""
        return len(self._entries) if self.listed else None

    def all_done(self, done: Callable[[str], bool]) -> bool:
        """A listed run whose every entry is a source with ``done(stem)``; False for a stream."""
        return self.listed and all(isinstance(e, Source) and done(e.stem) for e in self._entries)

    def any_done(self, done: Callable[[str], bool]) -> bool:
        """A listed run with at least one source with ``done(stem)``; False for a stream."""
        return self.listed and any(isinstance(e, Source) and done(e.stem) for e in self._entries)

    def where(self, keep: Callable[["Source | ListingProblem"], bool], *, lazy: bool = False) -> "SourceList":
        """The entries ``keep`` accepts, in order. A stream stays a stream when ``lazy``, else it is read now."""
        kept = (e for e in self._entries if keep(e))
        return SourceList(kept, listed=self.listed or not lazy)


# ------------------------------------------------------------------ names

def safe_component(text: str) -> str:
    """One path component made safe to join to a folder, otherwise unchanged.

    Separators and control characters become ``_``, bytes that are not
    UTF-8 (``\\udcXX`` escapes) become ``_``, leading dots are dropped (no
    hidden outputs, no ``..``), and a name too long for a file system is cut
    and given a short hash of the whole name, so it stays unique.
    """
    text = _UNSAFE.sub("_", _SURROGATE.sub("_", text)).lstrip(".")
    if not text.strip():
        return "_"
    raw = text.encode("utf-8")
    if len(raw) > MAX_NAME_BYTES:
        digest = hashlib.blake2b(raw, digest_size=4).hexdigest()
        text = raw[: MAX_NAME_BYTES - 9].decode("utf-8", "ignore") + "~" + digest
    return text


def output_name(path: str | os.PathLike, folders: Sequence[str] = ()) -> str:
    """The natural output name of ``path``: safe ``folders`` + its safe stem, joined by ``/``."""
    return "/".join([*(safe_component(f) for f in folders), safe_component(Path(path).stem)])


class NameAllocator:
    """Gives every source a unique output name within one run.

    The first source with a name keeps it; a later one gets ``<name>~2``,
    ``<name>~3``... skipping every name already given (a real ``a~2.png``
    included), so no two sources share an output, also on file systems
    that ignore case. Same sources in the same order give the same names.
    """

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def __call__(self, name: str) -> str:
        candidate, n = name, 1
        while candidate.casefold() in self._taken:
            n += 1
            candidate = f"{name}~{n}"
        self._taken.add(candidate.casefold())
        return candidate


def find_named(folder: Path, name: str) -> Path | None:
    """The image ``folder/<name>.<suffix>`` (``.png`` preferred), or None; ``name`` may hold sub-folders."""
    preferred = folder / f"{name}.png"
    if preferred.is_file():
        return preferred
    for suffix in sorted(IMAGE_SUFFIXES):
        for candidate in (folder / f"{name}{suffix}", folder / f"{name}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def natural_key(name: str) -> tuple:
    """Sort key for names as people count: ``5_1`` < ``5_2`` < ``5_10``, ``frame2`` < ``frame10``.

    Runs of digits compare as numbers, the rest without case; the name
    itself breaks ties, so the order is total and the same on every machine.
    """
    parts = tuple((0, int(part), "") if part.isdigit() else (1, 0, part.casefold())
                  for part in re.split(r"(\d+)", name) if part)
    return parts, name


# ------------------------------------------------------------------ finding

def _matches(patterns: Sequence[str], key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def _resolved(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


def _inside(path: Path | None, folders: Sequence[Path]) -> Path | None:
    if path is None:
        return None
    for folder in folders:
        if path == folder or folder in path.parents:
            return folder
    return None


class SourceFinder:
    """Expands SOURCES arguments into :class:`Source` entries (and folder problems), lazily.

    A folder yields its images in natural name order (``5_2`` before
    ``5_10``, :func:`natural_key`; ``recursive`` descends; hidden entries
    and symlink loops are skipped; ``avoid`` folders, the run's outputs,
    are never entered); ``-`` yields one path per line of
    ``stdin``; a file is yielded as given, so a broken one is reported
    when read. ``include``/``exclude`` are shell patterns matched against
    the path relative to its SOURCES folder and against the file name.

    Raises :class:`SourceError` at construction for an argument that cannot
    be used at all: a missing path, an unreadable folder, a folder inside
    the outputs.
    """

    def __init__(self, items: Iterable[str | os.PathLike], *, recursive: bool = False,
                 include: Sequence[str] = (), exclude: Sequence[str] = (),
                 avoid: Sequence[str | os.PathLike] = (), stdin=None, mirror: bool | None = None) -> None:
        self.items = [str(i) for i in items]
        self.recursive = recursive
        self.include, self.exclude = tuple(include), tuple(exclude)
        self.avoid = [r for r in (_resolved(Path(a)) for a in avoid) if r is not None]
        self.stdin = stdin
        self.mirror = recursive if mirror is None else mirror
        self.sub_folders_skipped = 0  # folders passed over without --recursive (for the "no sources" hint)
        self.skipped_folders: list[Path] = []  # ... and which ones
        for item in self.items:
            if item == "-":
                continue
            path = Path(item)
            if not path.exists():
                what = "broken symbolic link" if path.is_symlink() else "not found"
                raise SourceError(f"{item}: {what}")
            if path.is_dir():
                inside = _inside(_resolved(path), self.avoid)
                if inside is not None:
                    raise SourceError(f"{item}: is where this run writes its outputs ({inside}); "
                                      "give sources outside the output folder, or another -o")
                try:
                    os.scandir(path).close()
                except OSError as exc:
                    raise SourceError(f"{item}: cannot read the folder ({exc.strerror or exc})") from None

    @property
    def streams_stdin(self) -> bool:
        return "-" in self.items

    def __iter__(self) -> Iterator[Source | ListingProblem]:
        names = NameAllocator()
        for item in self.items:
            if item == "-":
                stream = self.stdin if self.stdin is not None else sys.stdin
                for line in stream:
                    line = line.strip()
                    if line:
                        yield from self._file(Path(line), line, (), names)
                continue
            path = Path(item)
            if path.is_dir():
                yield from self._walk(path, (), names, set())
            else:
                yield from self._file(path, path.as_posix(), (), names)

    def _file(self, path: Path, key: str, folders: tuple[str, ...], names: NameAllocator
              ) -> Iterator[Source | ListingProblem]:
        if self.include and not _matches(self.include, key):
            return
        if self.exclude and _matches(self.exclude, key):
            return
        inside = _inside(_resolved(path.parent), self.avoid)
        if inside is not None:
            yield ListingProblem(path, f"{path}: is inside the output folder {inside}; not read as a source")
            return
        name = output_name(path, folders if self.mirror else ())
        yield Source(path, key, name, names(name))

    def _walk(self, folder: Path, folders: tuple[str, ...], names: NameAllocator, seen: set
              ) -> Iterator[Source | ListingProblem]:
        real = _resolved(folder)
        if real is None or real in seen:  # a symlink loop: visited once
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: natural_key(e.name))
        except OSError as exc:
            yield ListingProblem(folder, f"{folder}: cannot read the folder ({exc.strerror or exc})")
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = folder / entry.name
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if _inside(_resolved(path), self.avoid) is not None:
                    continue  # the run's own outputs are never sources
                if not self.recursive:
                    self.sub_folders_skipped += 1
                    self.skipped_folders.append(path)
                    continue
                yield from self._walk(path, folders + (entry.name,), names, seen)
            elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                key = "/".join(folders + (entry.name,))
                yield from self._file(path, key, folders, names)


def find_sources(items: Iterable[str | os.PathLike], **options) -> tuple[list[Source], list[ListingProblem]]:
    """Every source (and folder problem) of ``items`` as lists; see :class:`SourceFinder`."""
    sources, problems = [], []
    for entry in SourceFinder(items, **options):
        (sources if isinstance(entry, Source) else problems).append(entry)
    return sources, problems


def skipped_folders_note(finder: SourceFinder) -> str | None:
    """A note naming the sub-folders a run without ``--recursive`` did not search, or None."""
    skipped = finder.skipped_folders
    if not skipped or finder.recursive:
        return None
    shown = ", ".join(p.name for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
    parents = sorted({str(p.parent) for p in skipped})
    where = parents[0] if len(parents) == 1 else "the SOURCES folders"
    n = len(skipped)
    return (f"{where} has {n} sub-folder{'s' if n != 1 else ''} ({shown}) that {'were' if n != 1 else 'was'} not "
            "searched; --recursive descends into them")


def no_sources_hint(finder: SourceFinder) -> str:
    """Why a run found nothing, and what to try."""
    given = ", ".join(finder.items) or "(nothing)"
    if finder.sub_folders_skipped and not finder.recursive:
        n = finder.sub_folders_skipped
        return f"no images in {given}: it has {n} sub-folder{'s' if n != 1 else ''}; --recursive?"
    if finder.include or finder.exclude:
        return f"no images in {given} match --include/--exclude"
    return (f"no images in {given} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}; "
            "hidden files and folders are skipped)")
