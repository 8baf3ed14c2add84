"""The manifest: one JSON line per source, written as each finishes, read by `icm status` and `icm review`.

Two kinds of line, each a typed record here:

- a :class:`RunRecord` first in every run: the command, the settings that
  change results, the references;
- a :class:`SourceRecord` per source: input, output name, status, outputs,
  error, timing and what the result says about itself (confidence, empty).

The writer appends and flushes each line (a run killed mid-write leaves at
most one torn last line, cut off by the next run) and never follows a
planted symbolic link. The reader merges ``manifest.jsonl`` and the shards'
``manifest.I-of-N.jsonl``; for each input the latest record wins.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from icm_cli import io

STATUSES = ("done", "skipped", "failed")
MANIFEST_NAME = "manifest.jsonl"
_SHARD_MANIFEST = re.compile(r"^manifest\.\d+-of-\d+\.jsonl$")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _unit_or_none(value) -> float | None:
    """A number in [0, 1] (clamped), or None for anything that is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return min(max(float(value), 0.0), 1.0)


@dataclass
class SourceRecord:
    """What happened to one source.

    input: the source's absolute path (``\\udcXX`` escapes for bytes that are
    not UTF-8: ``os.fsencode(input)`` gives the original name back); stem:
    its output name under each kind folder, without ``.png`` (None for a
    folder that could not be read); outputs: kind -> absolute path written
    (or found, when skipped); confidence: how far the result can be trusted,
    0..1 (None when not computed); empty: the mask has no object pixel;
    mask_area: the object's share of the image; from_reference: the result
    is the user's own mask, not a prediction (the source is also a
    reference; written only when true).
    """

    input: str
    stem: str | None
    status: str
    outputs: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    timing: dict[str, float] = field(default_factory=dict)
    confidence: float | None = None
    empty: bool | None = None
    mask_area: float | None = None
    from_reference: bool = False
    run: str | None = None
    time: str = ""
    record: str = "source"
    #: Set by the reader: the run whose ``done`` record made the outputs (a skip inherits its
    #: confidence, empty and mask_area from it). Never written by a run.
    made_by: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")
        self.confidence = _unit_or_none(self.confidence)
        if not isinstance(self.empty, bool):
            self.empty = None
        self.mask_area = _unit_or_none(self.mask_area)
        self.from_reference = self.from_reference is True

    @classmethod
    def from_dict(cls, data: dict) -> "SourceRecord":
        """A record from a manifest line (older lines lack the newer fields); ValueError if it is none."""
        if not isinstance(data, dict) or not isinstance(data.get("input"), str):
            raise ValueError("not a source record")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("stem", None)
        values.setdefault("status", "failed")
        if not isinstance(values.get("outputs", {}), dict) or not isinstance(values.get("timing", {}), dict):
            raise ValueError("malformed source record")
        values["record"] = "source"
        return cls(**values)


@dataclass
class RunRecord:
    """One run: the command as typed, where, the result-changing settings and the references."""

    run: str
    command: list[str]
    cwd: str
    version: str
    settings: dict
    references: list[dict[str, str]] = field(default_factory=list)
    time: str = ""
    record: str = "run"

    @classmethod
    def from_dict(cls, data: dict) -> "RunRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if not isinstance(values.get("run"), str) or not isinstance(values.get("settings"), dict):
            raise ValueError("malformed run record")
        values.setdefault("command", [])
        values.setdefault("cwd", "")
        values.setdefault("version", "")
        return cls(**values)


def record_json(record: SourceRecord | RunRecord) -> str:
    """One manifest line (without the newline); valid UTF-8 JSON whatever the file names hold."""
    data = dataclasses.asdict(record)
    data.pop("made_by", None)  # the reader's, not the run's
    if not data.get("from_reference", True):
        data.pop("from_reference")  # said only of the few results that are the user's own masks
    data["time"] = data.get("time") or utc_now()
    line = json.dumps(data, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from undecodable names: escape them
        line = json.dumps(data)
    return line


class RecordSink(Protocol):
    def write(self, record: SourceRecord | RunRecord) -> None: ...


class ManifestWriter:
    """Appends records to ``path``, one flushed line each; ``echo`` also receives each line.

    A symbolic link planted at ``path`` is replaced by a file of our own (the
    PNG outputs are treated alike). Raises :class:`io.OutputError` when a
    line cannot be written.
    """

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.echo = echo
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_symlink():
                self.path.unlink()
            _cut_torn_last_line(self.path)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as exc:
            raise io.OutputError(f"{self.path}: cannot write the manifest ({exc.strerror or exc})", exc.errno) from None
        self._fh = os.fdopen(fd, "a", encoding="utf-8")

    def write(self, record: SourceRecord | RunRecord) -> None:
        """Append one record; the echo (``--json``) sees source records, once they are in the file."""
        line = record_json(record)
        with self._lock:
            try:
                self._fh.write(line + "\n")
                self._fh.flush()
            except OSError as exc:
                raise io.OutputError(f"{self.path}: cannot append to the manifest ({exc.strerror or exc})",
                                     exc.errno) from None
        if self.echo and isinstance(record, SourceRecord):
            self.echo(line)

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:  # every record was flushed when written; nothing is lost here
            pass


class RecordList:
    """A sink that keeps records in memory (a Ray worker hands them to the driver)."""

    def __init__(self) -> None:
        self.records: list[SourceRecord | RunRecord] = []

    def write(self, record: SourceRecord | RunRecord) -> None:
        self.records.append(record)


def _cut_torn_last_line(path: Path) -> None:
    """Drop a last line without its newline (a run killed mid-write), so appended records start on their own line."""
    try:
        with open(path, "rb+") as fh:
            end = fh.seek(0, 2)
            if end == 0:
                return
            fh.seek(end - 1)
            if fh.read(1) == b"\n":
                return
            pos = end
            while pos > 0:
                start = max(0, pos - 65536)
                fh.seek(start)
                cut = fh.read(pos - start).rfind(b"\n")
                if cut >= 0:
                    fh.truncate(start + cut + 1)
                    return
                pos = start
            fh.truncate(0)
    except FileNotFoundError:
        return


# ------------------------------------------------------------------ reading

def manifest_files(folder: Path) -> list[Path]:
    """``manifest.jsonl`` and ``manifest.I-of-N.jsonl`` in ``folder``, oldest first."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        if entry.name == MANIFEST_NAME or _SHARD_MANIFEST.match(entry.name):
            try:
                if entry.is_file():
                    found.append((entry.stat().st_mtime, entry.name, Path(folder) / entry.name))
            except OSError:
                continue
    return [p for _, _, p in sorted(found)]


def _when(record: SourceRecord) -> float:
    try:
        return datetime.fromisoformat(str(record.time)).timestamp()
    except (TypeError, ValueError, OverflowError):
        return float("-inf")  # records without a time are older than any with one


def input_key(path: str) -> str:
    """How inputs are compared: absolute and normalised."""
    return os.path.normpath(os.path.abspath(path))


@dataclass
class ManifestState:
    """Everything OUT's manifests say, merged: the runs, and the latest record of each input."""

    manifests: list[str] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    latest: dict[str, SourceRecord] = field(default_factory=dict)   # input_key -> record
    unreadable_lines: int = 0
    unreadable_files: list[str] = field(default_factory=list)

    @property
    def last_run(self) -> RunRecord | None:
        return self.runs[-1] if self.runs else None

    def run(self, run_id: str | None) -> RunRecord | None:
        return next((r for r in self.runs if r.run == run_id), None)

    def records(self, status: str | None = None) -> list[SourceRecord]:
        return [r for r in self.latest.values() if status is None or r.status == status]

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for r in self.latest.values():
            counts[r.status] += 1
        return counts


def read_manifests(folder: Path) -> ManifestState:
    """Merge every manifest in ``folder``; unreadable files and lines are counted, never fatal.

    For each input the record with the latest ``time`` wins (file age, then
    line order, break ties and order records written before times existed).
    Inputs recorded relative (older versions) are taken against their run's
    folder when a run record names it. A ``skipped`` record without a
    confidence inherits ``confidence``, ``empty`` and ``mask_area`` from the
    latest earlier ``done`` record of its input, which made those outputs
    (``made_by`` names that run), and ``from_reference`` too.
    """
    state = ManifestState()
    ordered: list[tuple[tuple, SourceRecord]] = []
    runs: list[tuple[tuple, RunRecord]] = []
    for rank, path in enumerate(manifest_files(folder)):
        state.manifests.append(path.name)
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            state.unreadable_files.append(f"{path}: cannot read ({exc.strerror or exc})")
            continue
        for line_no, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                kind = data.get("record", "source") if isinstance(data, dict) else None
                if kind == "run":
                    run = RunRecord.from_dict(data)
                    runs.append(((run.time or "", rank, line_no), run))
                    continue
                if kind not in ("source", None):
                    continue  # a record kind this version does not know: not an error
                record = SourceRecord.from_dict(data)
            except (ValueError, TypeError, RecursionError):  # a torn or foreign line
                state.unreadable_lines += 1
                continue
            ordered.append(((_when(record), rank, line_no), record))
    state.runs = [run for _, run in sorted(runs, key=lambda entry: entry[0])]
    cwd_of = {r.run: r.cwd for r in state.runs if r.cwd}
    made: dict[str, SourceRecord] = {}
    for _, record in sorted(ordered, key=lambda entry: entry[0]):
        if not os.path.isabs(record.input) and record.run in cwd_of:
            record.input = os.path.join(cwd_of[record.run], record.input)
        key = input_key(record.input)
        if record.status == "done":
            record.made_by = record.run
            made[key] = record
        elif record.status == "skipped" and key in made:
            maker = made[key]
            record.made_by = maker.run
            if record.confidence is None:
                record.confidence, record.empty, record.mask_area = maker.confidence, maker.empty, maker.mask_area
            record.from_reference = record.from_reference or maker.from_reference
        state.latest[key] = record
    return state


def result_counts(records) -> dict[str, int]:
    """How ``status`` and ``review`` count the latest records: done (results icm computed, in the latest
    run or, ``done_earlier`` of them, in an earlier run whose outputs a rerun kept), skipped (outputs that
    were there with no recorded run making them), failed."""
    records = list(records)
    earlier = sum(1 for r in records if r.status == "skipped" and r.made_by)
    return {"done": sum(1 for r in records if r.status == "done") + earlier, "done_earlier": earlier,
            "skipped": sum(1 for r in records if r.status == "skipped") - earlier,
            "failed": sum(1 for r in records if r.status == "failed")}


def least_confident(records, n: int) -> list[SourceRecord]:
    """The ``n`` results (done or skipped, with a confidence) of lowest confidence, lowest first."""
    scored = [r for r in records if r.status in ("done", "skipped") and r.confidence is not None]
    return sorted(scored, key=lambda r: (r.confidence, r.stem or "", r.input))[:max(n, 0)]


#: Run settings recorded for the record but never a reason to refuse keeping earlier results: the
#: runtime that ran the backbone (torch and ONNX Runtime compute the same network; masks move by
#: float rounding only, as between a CPU and a GPU).
RECORDED_ONLY = frozenset({"runtime"})


def settings_changes(before: dict, now: dict, prefix: str = "") -> list[str]:
    """What differs between two runs' settings, as ``key: old -> new`` phrases (nested keys dotted;
    top-level :data:`RECORDED_ONLY` keys are not compared)."""
    changes = []
    for key in sorted(set(before) | set(now)):
        if not prefix and key in RECORDED_ONLY:
            continue
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += settings_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            if isinstance(old, list) or isinstance(new, list):
                changes.append(f"{prefix}{key} changed")
            else:
                changes.append(f"{prefix}{key}: {old} -> {new}")
    return changes


def below_confidence(state: ManifestState, threshold: float) -> set[str]:
    """Inputs (:func:`input_key`) whose latest result (done, or skipped and made earlier) has a
    confidence under ``threshold``: what ``propagate --only-below`` recomputes."""
    return {key for key, r in state.latest.items()
            if r.status in ("done", "skipped") and r.confidence is not None and r.confidence < threshold}
