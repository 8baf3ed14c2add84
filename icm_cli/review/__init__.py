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
from typing import TYPE_CHECKING

from icm_cli.config import OUTPUT_KINDS
from icm_cli.errors import ReviewError  # noqa: F401 (re-exported)
from icm_cli.runner.manifest import ManifestState, SourceRecord, read_manifests, result_counts

if TYPE_CHECKING:
    from icm_cli.review.thumbs import Job
    from icm_cli.runner.outputs import OutputPlan

__all__ = ["ReviewError", "ReviewReport", "build_review", "review_order", "name_order", "THUMB_DIR"]

#: Where the thumbnails go, relative to OUT.
THUMB_DIR = Path(".review") / "thumbs"
SORTS = ("confidence", "name")


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


def _outputs(record: SourceRecord, plan: "OutputPlan", cwd: str | None) -> dict[str, str]:
    """Each output kind of a result -> the file as it is now: where ``plan`` (OUT, every kind) puts it
    when it exists there (OUT may have moved since the run), else the recorded path if that exists."""
    found = {}
    stem = record.stem
    recorded = record.outputs
    planned = plan.paths(stem) if isinstance(stem, str) and stem else {}
    for kind in OUTPUT_KINDS:
        candidates = []
        if kind in planned:
            candidates.append(str(planned[kind]))
        if isinstance(recorded.get(kind), str):
            candidates.append(_resolve(recorded[kind], cwd))
        for c in candidates:
            if c and os.path.isfile(c):
                found[kind] = c
                break
    return found


def _source_file(path: str | None, stem) -> str | None:
    """The image file a record's input names; for a frame folder (what a resumed ``--video`` run records
    for the frames it skipped) the frame of that stem in it; for a frame of a clip (``clip.mp4#12``)
    ``clip.mp4@12``; None when there is no such file."""
    from icm_cli.io import IMAGE_SUFFIXES
    from icm_cli.video import frame_of_input

    if not path:
        return None
    if os.path.isfile(path):
        return path
    frame = frame_of_input(path)  # a frame of a clip (--video clip.mp4): decoded from the clip for its thumbnail
    if frame is not None:
        return frame.text
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


@dataclass
class _ReferenceThumb:
    """One reference pair of one run, and the thumbnail job that shows it on the page."""

    run: int          # index in the manifests' runs
    image: str
    mask: str
    job: "Job"


def _reference_thumbs(runs) -> list[_ReferenceThumb]:
    """Every run's references that name an image and a mask, in run order (others cannot be shown)."""
    from icm_cli.review.thumbs import Job

    found = []
    for index, run in enumerate(runs):
        for ref in run.references:
            if isinstance(ref, dict) and ref.get("image") and ref.get("mask"):
                image, mask = _resolve(str(ref["image"]), run.cwd), _resolve(str(ref["mask"]), run.cwd)
                found.append(_ReferenceThumb(index, image, mask, Job(f"reference:{image}|{mask}", source=image,
                                                                     mask=mask)))
    return found


def _result_cards(records: list[SourceRecord], results: ManifestState, plan: "OutputPlan") -> list[tuple]:
    """``(card, thumbnail job, expect a source picture)`` for each result record, in page order."""
    from icm_cli.review import page as pagemod
    from icm_cli.review.thumbs import Job
    from icm_cli.video import source_file

    run_index = {r.run: i for i, r in enumerate(results.runs)}
    cwd_of = {r.run: r.cwd for r in results.runs}
    made = []
    for rec in records:
        cwd = cwd_of.get(rec.run)
        outputs = _outputs(rec, plan, cwd)
        job = Job("result:" + str(rec.stem or rec.input), source=_source_file(_resolve(rec.input, cwd), rec.stem),
                  mask=outputs.get("masks"), heat=outputs.get("heatmaps"))
        label = None
        maker = rec.made_by or rec.run
        if len(results.runs) > 1 and maker in run_index:
            label = pagemod.run_label(run_index[maker])
        # Outputs a rerun kept, made by a recorded earlier run, are that run's results: done, as status counts them.
        status = "done" if rec.status == "skipped" and rec.made_by else rec.status
        card = pagemod.Card(
            ident=job.ident, name=str(rec.stem or Path(rec.input).name), status=status,
            confidence=rec.confidence if rec.status != "failed" else None, input=rec.input,
            source_path=source_file(job.source) if job.source else None,  # a clip's frame links to the clip
            outputs=outputs, error=rec.error or None, empty=rec.empty,
            mask_area=rec.mask_area, run_label=label)
        made.append((card, job, rec.status != "failed"))
    return made


def _checked_paths(out: Path, page: str | os.PathLike | None, sort: str) -> tuple[ManifestState, Path]:
    """OUT's manifests and the page to write; raises :class:`ReviewError` when either cannot be used."""
    if sort not in SORTS:
        raise ReviewError(f"--sort takes {' or '.join(SORTS)} (got {sort!r})")
    if not out.exists():
        raise ReviewError(f"{out}: no such folder (give the -o folder of icm propagate)")
    if not out.is_dir():
        raise ReviewError(f"{out}: not a folder (give the -o folder of icm propagate)")
    results: ManifestState = read_manifests(out)
    if not results.manifests:
        raise ReviewError(f"{out}: no manifest.jsonl or manifest.I-of-N.jsonl here (give the -o folder of icm propagate)")
    from icm_cli.runner.run_check import file_command_only, not_a_propagate_folder
    if file_command_only(results):
        raise ReviewError(not_a_propagate_folder(out, file_command_only(results)))
    page_path = Path(page) if page is not None else out / "review.html"
    if page_path.is_dir():
        raise ReviewError(f"{page_path}: is a folder; give the HTML file to write (e.g. {page_path / 'review.html'})")
    _check_writable(page_path.parent if str(page_path.parent) else Path("."), "review page")
    _check_writable(out / THUMB_DIR, "thumbnail")
    return results, page_path


def build_review(out: str | os.PathLike, page: str | os.PathLike | None = None, sort: str = "confidence",
                 limit: int | None = None, threshold: float = 0.5, workers: int = 0) -> ReviewReport:
    """Write the review page of the run in ``out``; returns what was done.

    page: the HTML file (default ``OUT/review.html``); sort: ``confidence``
    (failed first, then least confident, results without a confidence last)
    or ``name``; limit: show only the first N in that order; threshold: the
    confidence under which a result counts as low (colours, counts; ``icm
    review --below``). Raises :class:`ReviewError` when OUT holds no
    manifest or a file cannot be written; problems with single files end up
    in ``problems``.
    """
    from icm_cli import __version__, io
    from icm_cli.config import OutputConfig
    from icm_cli.review import page as pagemod
    from icm_cli.review.thumbs import ThumbnailCache
    from icm_cli.runner.outputs import OutputPlan

    t0 = time.perf_counter()
    out = Path(out)
    results, page_path = _checked_paths(out, page, sort)
    thumb_dir = out / THUMB_DIR
    records = sorted(results.records(), key=review_order if sort == "confidence" else name_order)
    total = len(records)
    if limit is not None and limit >= 0:
        records = records[:limit]
    shown = _result_cards(records, results, OutputPlan(out, OutputConfig(OUTPUT_KINDS)))
    references = _reference_thumbs(results.runs)

    cache = ThumbnailCache(thumb_dir)
    try:
        thumbs = cache.get_all([(job, expect) for _, job, expect in shown] + [(r.job, True) for r in references],
                               workers=workers)
    except OSError as exc:
        raise ReviewError(f"{thumb_dir}: cannot write thumbnails ({exc.strerror or exc})") from None
    problems = []
    cards = [card for card, _, _ in shown]
    for card, th in zip(cards, thumbs[:len(shown)]):
        card.overlay = str(thumb_dir / th.overlay) if th.overlay else None
        card.heat = str(thumb_dir / th.heat) if th.heat else None
        card.size = th.size
        card.problems = th.problems
        problems += th.problems
    run_references: list[list] = [[] for _ in results.runs]
    for ref, th in zip(references, thumbs[len(shown):]):  # the jobs above, in the same order
        run_references[ref.run].append((ref.image, ref.mask, str(thumb_dir / th.overlay) if th.overlay else None,
                                        th.size))
        problems += th.problems
    runs = [pagemod.RunView(label=pagemod.run_label(i), time=_utc(r.time), command=pagemod.command_line(r),
                            cwd=str(r.cwd or ""), version=str(r.version or ""), references=run_references[i])
            for i, r in enumerate(results.runs)]

    counts = result_counts(results.records())  # kept results of earlier runs count as done, as in icm status
    data = pagemod.PageData(out=out.resolve(), cards=cards, total=total, counts=counts, runs=runs, sort=sort,
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
    return ReviewReport(page=page_path, total=total, shown=len(cards), counts=counts,
                        below=sum(1 for c in confs if c is not None and c < threshold),
                        unknown=sum(1 for c in confs if c is None), made=cache.made, reused=cache.reused,
                        seconds=time.perf_counter() - t0, problems=problems)
