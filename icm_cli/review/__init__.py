"""`icm review`: a contact sheet of a propagate run, least confident results first.

:func:`build_review` reads OUT's manifests (:func:`icm_cli.runner.manifest.read_manifests`),
makes or reuses thumbnails under ``OUT/.review/thumbs`` (:mod:`.thumbs`) and
writes one static HTML page (:mod:`.page`). No files outside OUT and the
page are written; nothing is fetched from a network when the page opens.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from icm_cli.config import OUTPUT_KINDS
from icm_cli.errors import IcmError
from icm_cli.runner.manifest import ManifestState, SourceRecord, read_manifests

__all__ = ["ReviewError", "ReviewReport", "build_review", "review_order", "name_order", "THUMB_DIR"]

#: Where the thumbnails go, relative to OUT.
THUMB_DIR = Path(".review") / "thumbs"
SORTS = ("confidence", "name")


class ReviewError(IcmError):
    """OUT or the page cannot be used; the message is one line naming the file."""


@dataclass
class ReviewReport:
    page: Path
    total: int
    shown: int
    counts: dict[str, int]
    below: int
    unknown: int
    made: int
    reused: int
    seconds: float
    problems: list[str] = field(default_factory=list)


def _name_key(record: SourceRecord) -> tuple:
    """Natural order of a result's name: ``frame2`` before ``frame10``."""
    name = str(record.stem or record.input or "")
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.casefold())
                 for part in re.split(r"(\d+)", name) if part)


def review_order(record: SourceRecord) -> tuple:
    """Sort key, least trustworthy first: failed results, then by confidence (lowest
    first), then results without a confidence (older runs), each group by name."""
    if record.status == "failed":
        return (0, 0.0, _name_key(record))
    if record.confidence is None:
        return (2, 0.0, _name_key(record))
    return (1, record.confidence, _name_key(record))


def name_order(record: SourceRecord) -> tuple:
    return _name_key(record)


def _resolve(path: str | None, cwd: str | None) -> str | None:
    if not path:
        return None
    if os.path.isabs(path):
        return path
    return os.path.join(cwd, path) if cwd else os.path.abspath(path)


def _outputs(record: SourceRecord, out: Path, cwd: str | None) -> dict[str, str]:
    """Each output kind of a result -> the file as it is now: ``OUT/<kind>/<stem>.png`` when it
    exists there (OUT may have moved since the run), else the recorded path if that exists."""
    found = {}
    stem = record.stem
    recorded = record.outputs
    for kind in OUTPUT_KINDS:
        candidates = []
        if isinstance(stem, str) and stem:
            candidates.append(str(out / kind / f"{stem}.png"))
        if isinstance(recorded.get(kind), str):
            candidates.append(_resolve(recorded[kind], cwd))
        for c in candidates:
            if c and os.path.isfile(c):
                found[kind] = c
                break
    return found


def _source_file(path: str | None, stem) -> str | None:
    """The image file a record's input names; for a frame folder (what a resumed ``--video`` run records
    for the frames it skipped) the frame of that stem in it; None when there is no such file."""
    from icm_cli.io import IMAGE_SUFFIXES

    if not path:
        return None
    if os.path.isfile(path):
        return path
    if os.path.isdir(path) and isinstance(stem, str) and stem and "/" not in stem:
        for suffix in sorted(IMAGE_SUFFIXES):
            for candidate in (f"{stem}{suffix}", f"{stem}{suffix.upper()}"):
                if os.path.isfile(os.path.join(path, candidate)):
                    return os.path.join(path, candidate)
    return None


def _utc(text: str | None) -> str:
    if not text:
        return ""
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError):
        return str(text)


def _check_writable(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReviewError(f"{folder}: cannot create the {what} folder ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK):
        raise ReviewError(f"{folder}: cannot write the {what} here (permission denied)")


def build_review(out: str | os.PathLike, page: str | os.PathLike | None = None, sort: str = "confidence",
                 limit: int | None = None, threshold: float = 0.5, workers: int = 0) -> ReviewReport:
    """Write the review page of the run in ``out``; returns what was done.

    page: the HTML file (default ``OUT/review.html``); sort: ``confidence``
    (failed first, then least confident, results without a confidence last)
    or ``name``; limit: show only the first N in that order; threshold: the
    confidence under which a result counts as low (colours, counts).
    Raises :class:`ReviewError` when OUT holds no manifest or a file cannot
    be written; problems with single files end up in ``problems``.
    """
    from icm_cli import __version__, io
    from icm_cli.review import page as pagemod
    from icm_cli.review.thumbs import Job, ThumbnailCache

    t0 = time.perf_counter()
    out = Path(out)
    if sort not in SORTS:
        raise ReviewError(f"--sort takes {' or '.join(SORTS)} (got {sort!r})")
    if not out.exists():
        raise ReviewError(f"{out}: no such folder (give the -o folder of icm propagate)")
    if not out.is_dir():
        raise ReviewError(f"{out}: not a folder (give the -o folder of icm propagate)")
    results: ManifestState = read_manifests(out)
    if not results.manifests:
        raise ReviewError(f"{out}: no manifest.jsonl or manifest.I-of-N.jsonl here (give the -o folder of icm propagate)")
    page_path = Path(page) if page is not None else out / "review.html"
    if page_path.is_dir():
        raise ReviewError(f"{page_path}: is a folder; give the HTML file to write (e.g. {page_path / 'review.html'})")
    _check_writable(page_path.parent if str(page_path.parent) else Path("."), "review page")
    thumb_dir = out / THUMB_DIR
    _check_writable(thumb_dir, "thumbnail")

    records = sorted(results.records(), key=review_order if sort == "confidence" else name_order)
    total = len(records)
    if limit is not None and limit >= 0:
        records = records[:limit]
    run_index = {r.run: i for i, r in enumerate(results.runs)}
    cwd_of = {r.run: r.cwd for r in results.runs}

    jobs, cards = [], []
    for rec in records:
        cwd = cwd_of.get(rec.run)
        source = _resolve(rec.input, cwd)
        outputs = _outputs(rec, out, cwd)
        key = "result:" + str(rec.stem or rec.input)
        job = Job(key, source=_source_file(source, rec.stem), mask=outputs.get("masks"),
                  heat=outputs.get("heatmaps"))
        jobs.append((job, rec.status != "failed"))
        label = None
        maker = rec.made_by or rec.run
        if len(results.runs) > 1 and maker in run_index:
            label = pagemod.run_label(run_index[maker])
        cards.append(pagemod.Card(
            ident=job.ident, name=str(rec.stem or Path(rec.input).name), status=rec.status,
            confidence=rec.confidence if rec.status != "failed" else None, input=rec.input,
            source_path=job.source, outputs=outputs, error=rec.error or None, empty=rec.empty,
            mask_area=rec.mask_area, run_label=label))
    ref_jobs = []
    for r in results.runs:
        for ref in r.references:
            if isinstance(ref, dict) and ref.get("image") and ref.get("mask"):
                image, mask = _resolve(str(ref["image"]), r.cwd), _resolve(str(ref["mask"]), r.cwd)
                ref_jobs.append((Job(f"reference:{image}|{mask}", source=image, mask=mask), True))

    cache = ThumbnailCache(thumb_dir)
    try:
        thumbs = cache.get_all(jobs + ref_jobs, workers=workers)
    except OSError as exc:
        raise ReviewError(f"{thumb_dir}: cannot write thumbnails ({exc.strerror or exc})") from None
    problems = []
    for card, th in zip(cards, thumbs):
        card.overlay = str(thumb_dir / th.overlay) if th.overlay else None
        card.heat = str(thumb_dir / th.heat) if th.heat else None
        card.size = th.size
        card.problems = th.problems
        problems += th.problems
    ref_thumbs = iter(thumbs[len(jobs):])
    runs = []
    for i, r in enumerate(results.runs):
        refs = []
        for ref in r.references:
            if isinstance(ref, dict) and ref.get("image") and ref.get("mask"):
                th = next(ref_thumbs)
                refs.append((_resolve(str(ref["image"]), r.cwd), _resolve(str(ref["mask"]), r.cwd),
                             str(thumb_dir / th.overlay) if th.overlay else None, th.size))
                problems += th.problems
        runs.append(pagemod.RunView(label=pagemod.run_label(i), time=_utc(r.time),
                                    command=pagemod.command_line(r), cwd=str(r.cwd or ""),
                                    version=str(r.version or ""), references=refs))

    data = pagemod.PageData(out=out.resolve(), cards=cards, total=total, counts=results.counts, runs=runs, sort=sort,
                            threshold=threshold, unreadable_lines=results.unreadable_lines,
                            manifests=results.manifests,
                            generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                            version=__version__)
    try:
        io.write_text_atomic(page_path, pagemod.render(data, page_path))
        cache.save()
    except OSError as exc:
        raise ReviewError(f"{page_path}: cannot write ({exc.strerror or exc})") from None
    confs = [r.confidence for r in results.records() if r.status in ("done", "skipped")]
    return ReviewReport(page=page_path, total=total, shown=len(cards), counts=results.counts,
                        below=sum(1 for c in confs if c is not None and c < threshold),
                        unknown=sum(1 for c in confs if c is None), made=cache.made, reused=cache.reused,
                        seconds=time.perf_counter() - t0, problems=problems)
