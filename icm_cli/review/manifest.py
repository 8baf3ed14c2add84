"""Reading what a propagate run left in OUT: run records, the latest record per result, selections by confidence.

Read-only and forgiving: every manifest in OUT (``manifest.jsonl`` and the
shards' ``manifest.I-of-N.jsonl``) is merged; a line that is not a JSON
object (cut short by a kill) is counted and skipped; lines from before run
records and confidences existed (no ``"record"``, no ``"confidence"``) are
source records with an unknown confidence.

A result is identified by its output ``stem`` (the name of its files under
OUT; the ``input`` where a record has no stem): for each one the latest
record wins, by ``time``, then by manifest age and line order for records
written without a time. A ``skipped`` record (a rerun found the outputs
there) that carries no confidence inherits the confidence, ``empty`` and
``mask_area`` of the latest earlier ``done`` record of the same result, which
made those outputs.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable

_SHARD_MANIFEST = re.compile(r"^manifest\.\d+-of-\d+\.jsonl$")
_INHERITED = ("confidence", "empty", "mask_area")
STATUSES = ("done", "skipped", "failed")


def manifest_paths(folder: Path) -> list[Path]:
    """``manifest.jsonl`` and ``manifest.I-of-N.jsonl`` in ``folder``, oldest first; [] if there are none."""
    try:
        found = [p for p in Path(folder).iterdir()
                 if (p.name == "manifest.jsonl" or _SHARD_MANIFEST.match(p.name)) and p.is_file()]
    except OSError:
        return []
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def _when(record: dict) -> float:
    try:
        return datetime.fromisoformat(str(record["time"])).timestamp()
    except (KeyError, TypeError, ValueError, OverflowError):
        return float("-inf")  # no time: older than any record with one


def confidence_of(record: dict) -> float | None:
    """A record's confidence as a float in [0, 1], or None when it has none (or a value that is not one)."""
    value = record.get("confidence")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    if math.isnan(value):
        return None
    return min(max(value, 0.0), 1.0)


def result_key(record: dict) -> str:
    """What identifies a result across runs: its output stem, else its normalised input path."""
    stem = record.get("stem")
    if isinstance(stem, str) and stem:
        return "stem:" + stem
    return "input:" + os.path.normpath(str(record.get("input", "")))


@dataclass
class Results:
    """The merged manifests of one OUT folder."""

    folder: Path
    manifests: list[str] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)        # run records, oldest first
    sources: dict[str, dict] = field(default_factory=dict)  # result key -> latest source record
    unreadable_lines: int = 0

    @property
    def records(self) -> list[dict]:
        return list(self.sources.values())

    @property
    def counts(self) -> dict[str, int]:
        counts = {s: 0 for s in STATUSES}
        for r in self.sources.values():
            status = r.get("status")
            if status in counts:
                counts[status] += 1
        return counts

    def run(self, run_id) -> dict | None:
        """The run record with this id, or None."""
        for r in self.runs:
            if r.get("run") == run_id:
                return r
        return None


def read_results(folder: str | os.PathLike) -> Results:
    """Merge the manifests of ``folder`` (see the module docstring). No manifest: an empty :class:`Results`."""
    folder = Path(folder)
    res = Results(folder)
    ordered = []
    for rank, path in enumerate(manifest_paths(folder)):
        res.manifests.append(path.name)
        try:
            fh = open(path, encoding="utf-8", errors="replace")
        except OSError:
            continue
        with fh:
            for line_no, line in enumerate(fh):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if not isinstance(record, dict):
                    res.unreadable_lines += 1
                    continue
                kind = record.get("record", "source")
                if kind == "run":
                    ordered.append(((_when(record), rank, line_no), None, record))
                elif kind == "source" and "input" in record:
                    ordered.append(((_when(record), rank, line_no), result_key(record), record))
                elif kind not in ("run", "source"):
                    continue  # a record kind this version does not know: not an error
                else:
                    res.unreadable_lines += 1
    ordered.sort(key=lambda entry: entry[0])
    made_by: dict[str, dict] = {}  # key -> latest done record
    for _, key, record in ordered:
        if key is None:
            res.runs.append(record)
            continue
        status = record.get("status")
        if status == "done":
            made_by[key] = record
        elif status == "skipped" and key in made_by:
            inherited = {k: made_by[key].get(k) for k in _INHERITED if k in made_by[key]}
            if confidence_of(record) is not None:
                inherited = {}
            record = {**record, **inherited, "made_by": made_by[key].get("run")}
        res.sources[key] = record
    return res


def _name_key(record: dict) -> tuple:
    """Natural order of a result's name: ``frame2`` before ``frame10``."""
    name = str(record.get("stem") or record.get("input") or "")
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.casefold())
                 for part in re.split(r"(\d+)", name) if part)


def review_order(record: dict) -> tuple:
    """Sort key, least trustworthy first: failed results, then by confidence (lowest
    first), then results without a confidence (older runs), each group by name."""
    conf = confidence_of(record)
    if record.get("status") == "failed":
        return (0, 0.0, _name_key(record))
    if conf is None:
        return (2, 0.0, _name_key(record))
    return (1, conf, _name_key(record))


def name_order(record: dict) -> tuple:
    return _name_key(record)


def inputs_below(records: Iterable[dict], threshold: float, include_unknown: bool = False) -> list[str]:
    """Inputs of the results whose confidence is below ``threshold`` (for ``propagate --only-below``).

    ``records``: source records (e.g. ``read_results(OUT).records``, the
    latest per result). Only results whose outputs exist (``done`` or
    ``skipped``) are chosen; failed ones are rerun anyway because their
    outputs are missing. ``include_unknown`` also chooses results without a
    confidence (written before confidences existed). Inputs are returned
    once each, least confident first, as recorded.
    """
    chosen = []
    for r in records:
        if r.get("status") not in ("done", "skipped"):
            continue
        conf = confidence_of(r)
        if (conf is None and include_unknown) or (conf is not None and conf < threshold):
            chosen.append(r)
    chosen.sort(key=review_order)
    return list(dict.fromkeys(str(r.get("input")) for r in chosen))


def least_confident(records: Iterable[dict], n: int) -> list[dict]:
    """The ``n`` results with the lowest confidence (``status --worst N``), lowest first.

    Only results with outputs and a confidence count; ties go by name.
    """
    scored = [r for r in records if r.get("status") in ("done", "skipped") and confidence_of(r) is not None]
    scored.sort(key=review_order)
    return scored[:max(n, 0)]


def worst_results(folder: str | os.PathLike, n: int, inputs: Iterable[str] | None = None) -> list[dict]:
    """``status --worst N``: the N least confident results of OUT as ``{input, stem, status, confidence}``.

    ``inputs``: only results of these inputs (the run's SOURCES), compared as normalised paths.
    """
    records = read_results(folder).records
    if inputs is not None:
        wanted = {os.path.normpath(str(p)) for p in inputs}
        wanted |= {os.path.abspath(p) for p in wanted}
        records = [r for r in records if os.path.normpath(str(r.get("input"))) in wanted
                   or os.path.abspath(str(r.get("input"))) in wanted]
    return [{"input": r.get("input"), "stem": r.get("stem"), "status": r.get("status"),
             "confidence": confidence_of(r)} for r in least_confident(records, n)]


def worst_lines(rows: list[dict]) -> list[str]:
    """``status --worst`` as text: one line per result, ``confidence  stem  input``."""
    width = max((len(str(r["stem"])) for r in rows), default=0)
    return [f"{r['confidence']:.2f}  {str(r['stem']):{width}s}  {r['input']}" for r in rows]


def absolute_input(record: dict, runs: Iterable[dict] = ()) -> str:
    """A record's input as an absolute, normalised path: relative inputs (older records) are taken
    against their run's ``cwd`` when the run record says it, else against the current directory."""
    path = str(record.get("input", ""))
    if not os.path.isabs(path):
        cwd = next((r.get("cwd") for r in runs if r.get("run") == record.get("run") and r.get("cwd")), None)
        path = os.path.join(cwd, path) if cwd else os.path.abspath(path)
    return os.path.normpath(path)


def rerun_below(folder: str | os.PathLike, threshold: float, include_unknown: bool = False) -> set[str]:
    """For ``propagate --overwrite --only-below T``: the absolute inputs of OUT's results below ``threshold``.

    A source given to the rerun is recomputed when ``os.path.normpath(os.path.abspath(source))``
    is in this set (or when its outputs do not exist yet); the others are left as they are.
    """
    res = read_results(folder)
    chosen = set(inputs_below(res.records, threshold, include_unknown))
    return {absolute_input(r, res.runs) for r in res.records if str(r.get("input")) in chosen}
