"""Scoring predicted masks or alpha mattes against ground truth, paired by name: `icm eval` as a library.

    from icm_cli import evaluate
    scores = evaluate("out/masks", "truth/")           # masks: J (IoU) and boundary F
    print(scores.mean["J"], [(s.name, s.scores["J"]) for s in scores.images])

A prediction is paired with the ground truth of the same name (any image
suffix; sub-folders too with ``recursive``). A pair that cannot be scored
(no ground truth, unreadable, another size) is listed in ``unscored`` and
the rest are scored; ground truth nobody predicted is listed in
``unpredicted``. Arguments that cannot be used at all raise an
:class:`~icm_cli.errors.IcmError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from icm_cli import io
from icm_cli.config import DEFAULT_MAX_PIXELS
from icm_cli.errors import EvalArgumentsError, SettingError  # noqa: F401 (EvalArgumentsError re-exported)
from icm_cli.kinds import parse_eval_kind
from icm_cli.sources import natural_key

KINDS = ("mask", "alpha")
MASK_KEYS = ("J", "F")
ALPHA_KEYS = ("SAD", "MSE", "Grad", "Conn")
STABILITY_KEYS = ("T_pred", "T_gt")


@dataclass(frozen=True)
class ImageScore:
    """One scored prediction: ``scores`` maps each metric key (``J``, ``F`` or ``SAD``...) to its value."""

    name: str        # relative path without suffix, e.g. "blackswan/00001"
    sequence: str    # its sub-folder (sequence), "." for the top folder
    pred: str
    gt: str
    scores: dict[str, float]

    def as_dict(self) -> dict:
        return {"name": self.name, "sequence": self.sequence, "pred": self.pred, "gt": self.gt, **self.scores}


@dataclass(frozen=True)
class SequenceScore:
    """The mean of one sequence's images (and its temporal stability ``T_pred``/``T_gt`` when asked)."""

    sequence: str
    frames: int
    scores: dict[str, Optional[float]]

    def as_dict(self) -> dict:
        return {"sequence": self.sequence, "frames": self.frames, **self.scores}


@dataclass(frozen=True)
class Unscored:
    """A prediction (or a folder) that could not be scored, and why, in one line naming the file."""

    name: Optional[str]
    pred: str
    error: str

    def as_dict(self) -> dict:
        return {"name": self.name, "pred": self.pred, "error": self.error}


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` found.

    ``mean`` holds each key of ``keys`` (and of ``stability_keys``): over
    sequences of per-sequence means when ``by_sequence`` (DAVIS), else over
    images; None when nothing was scored.
    """

    kind: str                            # mask or alpha
    keys: tuple[str, ...]                # the metrics of each image
    stability_keys: tuple[str, ...]      # per-sequence figures (mask --stability), else ()
    by_sequence: bool
    images: list[ImageScore]
    sequences: list[SequenceScore]
    mean: dict[str, Optional[float]]
    unscored: list[Unscored]
    unpredicted: list[str]               # names of ground truth without a prediction
    output_folders: int = 0              # propagate output folders in PRED whose masks/ (alpha/) were scored
    #: Names of predictions left out because their manifest says they are the user's own masks (a reference
    #: among the sources): scoring them would score the reference against itself.
    references_left_out: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Something was scored and nothing failed."""
        return bool(self.images) and not self.unscored

    def as_dict(self) -> dict:
        """The JSON report of ``icm eval --json``."""
        report = {"kind": self.kind, "scored": len(self.images), "mean": self.mean,
                  "images": [s.as_dict() for s in self.images], "missing": [u.as_dict() for u in self.unscored],
                  "unpredicted": self.unpredicted, "references_left_out": list(self.references_left_out)}
        if self.by_sequence:
            report["sequences"] = [s.as_dict() for s in self.sequences]
        return report


def evaluate(pred: str | Path, gt: str | Path, *, kind: str = "mask", trimaps: str | Path | None = None,
             stability: bool = False, recursive: bool = False, tolerance: Optional[float] = None,
             max_pixels: int = DEFAULT_MAX_PIXELS, include: Sequence[str] = (),
             exclude: Sequence[str] = (), include_references: bool = False) -> Evaluation:
    """Score the predictions ``pred`` (a folder or one file) against the ground truth ``gt``.

    kind: ``mask`` (or ``masks``; J = IoU, F = boundary F measure, ``tolerance`` its match
    distance: pixels if >= 1, else a share of the diagonal) or ``alpha``
    (or ``alphas``, ``matte``, ``mattes``: the names ``--save`` and ``--save-video`` take; SAD, MSE, Grad, Conn; over the unknown band of the same-named
    ``trimaps`` when given). stability (masks): each sequence's temporal
    stability, the mean IoU of consecutive masks in name order, for the
    prediction and the ground truth. recursive: folders of sequence
    sub-folders, scored per sequence then averaged over sequences.
    include/exclude: shell patterns on the file name (or its path below PRED
    or GT) picking the files of either side, as in ``icm propagate``.
    Predictions that a propagate manifest records as the user's own mask
    (``from_reference``: a reference among the sources) are left out and
    named in ``references_left_out``, unless ``include_references``.
    Raises :class:`~icm_cli.io.InputError` for a missing path,
    :class:`~icm_cli.errors.SettingError` for an unknown kind, and
    :class:`EvalArgumentsError` when PRED and GT look swapped or a folder of
    sequences is given without ``recursive``: one line with the way out.
    """
    pred, gt = Path(pred), Path(gt)
    trimaps = Path(trimaps) if trimaps is not None else None
    kind = parse_eval_kind(kind)  # masks, matte, mattes ... as --save and --save-video take them
    _check_arguments(pred, gt, kind, trimaps)
    keys = MASK_KEYS if kind == "mask" else ALPHA_KEYS
    picks = {"include": tuple(include), "exclude": tuple(exclude)}
    _check_not_swapped(pred, gt, recursive)
    pairs, unpredicted, unreadable, output_folders = _collect(pred, gt, recursive, kind, **picks)
    if not pairs and not recursive:
        _check_not_nested(pred)
    if pairs and not any(p.gt for p in pairs) and pred.is_dir() and gt.is_dir():
        # Nothing pairs this way round: if it does the other way, the arguments were swapped.
        swapped = _collect(gt, pred, recursive, kind, **picks)[0]
        if any(p.gt for p in swapped):
            raise EvalArgumentsError(f"no file of PRED ({pred}) has a ground truth of its name in GT ({gt}), but "
                                     f"the other way round they pair: did you swap PRED and GT? "
                                     f"(icm eval PRED GT: icm eval {gt} {pred})")
    left_out: tuple[str, ...] = ()
    if not include_references:
        given = _user_mask_predictions([p.pred for p in pairs], pred, kind)
        left_out = tuple(p.name for p in pairs if p.pred in given)
        pairs = [p for p in pairs if p.pred not in given]
    images, unscored = [], [Unscored(None, str(p.path), p.message) for p in unreadable]
    for pair in pairs:
        try:
            images.append(_score(pair, gt, trimaps, kind, max_pixels, tolerance))
        except io.InputError as exc:
            unscored.append(Unscored(pair.name, str(pair.pred), str(exc)))

    groups: dict[str, list[ImageScore]] = {}
    for image in images:
        groups.setdefault(image.sequence, []).append(image)
    stability_keys = STABILITY_KEYS if stability and kind == "mask" else ()
    sequences = []
    for name, members in groups.items():
        scores = _mean([m.scores for m in members], keys)
        if stability_keys:
            members = sorted(members, key=lambda m: natural_key(m.name))
            scores["T_pred"] = _stability([m.pred for m in members], max_pixels)
            scores["T_gt"] = _stability([m.gt for m in members], max_pixels)
        sequences.append(SequenceScore(name, len(members), scores))
    # DAVIS: mean over sequences of per-sequence means; flat folders: mean over images.
    mean = _mean([s.scores for s in sequences] if recursive else [i.scores for i in images], keys)
    mean.update(_mean([s.scores for s in sequences], stability_keys))  # stability is a per-sequence figure
    return Evaluation(kind=kind, keys=keys, stability_keys=stability_keys, by_sequence=recursive, images=images,
                      sequences=sequences, mean=mean, unscored=unscored, unpredicted=unpredicted,
                      output_folders=output_folders, references_left_out=left_out)


@dataclass
class _Pair:
    name: str
    group: str
    pred: Path
    gt: Optional[Path]


def _user_mask_predictions(paths: list[Path], pred: Path, kind: str) -> set[Path]:
    """Those of ``paths`` (predictions found in ``pred``) that a propagate run wrote as the user's own mask.

    A prediction ``F/masks/<stem>.png`` (``--kind alpha``: ``F/alpha/``) is
    one when a manifest in ``F`` (a propagate output folder: ``pred``, the
    folder above ``pred``, or one inside it) records ``<stem>`` with
    ``from_reference``; read by stem, so an OUT that was moved still counts.
    """
    from icm_cli.runner.manifest import manifest_files, read_manifests
    from icm_cli.runner.outputs import scored_folder_name

    folder_kind = scored_folder_name(kind)
    stems: dict[Path, set[str]] = {}

    def given_in(folder: Path) -> set[str]:
        if folder not in stems:
            stems[folder] = set()
            if manifest_files(folder):
                stems[folder] = {r.stem for r in read_manifests(folder).records()
                                 if r.from_reference and r.status in ("done", "skipped") and r.stem}
        return stems[folder]

    pred_abs = Path(os.path.abspath(pred))
    top = pred_abs.parent if pred.is_dir() else pred_abs.parent.parent
    found = set()
    for path in paths:
        absolute = Path(os.path.abspath(path))
        for folder in absolute.parents:
            rel = absolute.relative_to(folder)
            if rel.parts[0] == folder_kind and len(rel.parts) > 1 and \
                    Path(*rel.parts[1:]).with_suffix("").as_posix() in given_in(folder):
                found.add(path)
                break
            if folder == top:
                break
    return found


def _check_arguments(pred: Path, gt: Path, kind: str, trimaps: Optional[Path]) -> None:
    if kind not in KINDS:
        raise SettingError(f"kind {kind!r} is not known; choose mask or alpha", option="--kind")
    if trimaps is not None and kind != "alpha":
        raise SettingError("trimaps apply to kind alpha only", option="--trimaps", setting="trimaps")
    for label, path in (("PRED", pred), ("GT", gt)):
        if not path.exists():
            raise io.InputError(f"{path}: {label} not found")
    if pred.is_dir() and gt.is_file():
        raise io.InputError(f"{gt}: GT must be a folder when PRED is a folder")
    if trimaps is not None and not trimaps.is_dir():
        raise io.InputError(f"{trimaps}: --trimaps must be a folder")


def _holds_outputs(folder: Path) -> bool:
    """``folder`` is a propagate output, or holds one a level down (``runs/<seq>/``)."""
    if _is_propagate_output(folder):
        return True
    return folder.is_dir() and any(_is_propagate_output(sub) for sub in _sub_folders(folder))


def _sub_folders(folder: Path) -> list[Path]:
    try:
        return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: natural_key(p.name))
    except OSError:
        return []


def _check_not_swapped(pred: Path, gt: Path, recursive: bool) -> None:
    """GT that is a propagate output folder (or a folder of them) while PRED is not: the arguments are swapped."""
    if not gt.is_dir() or not pred.is_dir() or _holds_outputs(pred):
        return
    if _is_propagate_output(gt):
        flag = "-r " if recursive else ""
    elif _holds_outputs(gt):  # a folder of outputs per sequence: scored with -r
        flag = "-r "
    else:
        return
    raise EvalArgumentsError(f"GT ({gt}) is icm propagate's output and PRED ({pred}) is not: did you swap "
                             f"PRED and GT? (icm eval PRED GT: icm eval {flag}{gt} {pred})")


def _check_not_nested(pred: Path) -> None:
    """PRED without images of its own but with sub-folders: sequences, scored with ``--recursive``."""
    if not pred.is_dir():
        return
    subs = _sub_folders(pred)
    if not subs:
        return
    outputs = [p for p in subs if _is_propagate_output(p)]
    shown = ", ".join(p.name for p in (outputs or subs)[:3]) + (", ..." if len(outputs or subs) > 3 else "")
    n = len(outputs or subs)
    what = "propagate output folder" if outputs else "sub-folder"
    raise EvalArgumentsError(f"{pred}: no images to score, it holds {n} {what}{'s' if n != 1 else ''} ({shown}); "
                             f"use -r/--recursive to score them per sequence")


def _is_propagate_output(folder: Path) -> bool:
    """An ``icm propagate -o`` folder: a manifest, or masks/ beside trimaps/ or heatmaps/."""
    from icm_cli.runner.manifest import manifest_files
    from icm_cli.runner.outputs import output_folder

    if not output_folder(folder, "masks").is_dir():
        return False
    return (bool(manifest_files(folder)) or output_folder(folder, "trimaps").is_dir()
            or output_folder(folder, "heatmaps").is_dir())


def _in_outputs(found: list, pred: Path, kind: str) -> tuple[list, int]:
    """Predictions inside propagate outputs (``OUT/<seq>/masks/x.png``) named as their sequence's (``<seq>/x``):
    only the ``masks/`` (``--kind alpha``: ``alpha/``) of such a folder is scored, never its heat maps or
    trimaps. Returns the sources kept (renamed) and how many output folders were read this way."""
    import dataclasses

    from icm_cli.runner.outputs import scored_folder_name

    folder_kind = scored_folder_name(kind)
    outputs: dict[Path, bool] = {}
    kept, used = [], set()
    for source in found:
        parts = Path(source.name).parts
        owner = None
        for depth in range(len(parts) - 1, -1, -1):
            folder = pred.joinpath(*parts[:depth])
            if folder not in outputs:
                outputs[folder] = _is_propagate_output(folder)
            if outputs[folder]:
                owner = depth
                break
        if owner is None:
            kept.append(source)
        elif len(parts) > owner + 1 and parts[owner] == folder_kind:
            used.add(parts[:owner])
            name = "/".join(parts[:owner] + parts[owner + 1:])
            kept.append(dataclasses.replace(source, name=name, stem=name))
    return kept, len(used)


def _collect(pred: Path, gt: Path, recursive: bool, kind: str = "mask", include: Sequence[str] = (),
             exclude: Sequence[str] = ()) -> tuple[list[_Pair], list[str], list, int]:
    """Pair every prediction with its ground truth (by name, sub-folders included); also list
    ground truths nobody predicted, folders that could not be read, and how many propagate
    output folders PRED held (PRED may be one, or with ``recursive`` a folder of them: only
    their ``masks/`` are scored)."""
    from icm_cli.sources import find_named, find_sources, output_name

    if pred.is_file():
        target = gt if gt.is_file() else find_named(gt, output_name(pred))
        return [_Pair(output_name(pred), ".", pred, target)], [], [], 0
    found, problems = find_sources([pred], recursive=recursive or _is_propagate_output(pred), mirror=True,
                                   include=include, exclude=exclude)
    found, output_folders = _in_outputs(found, pred, kind)
    pairs = []
    for source in found:
        group = source.name.rsplit("/", 1)[0] if "/" in source.name else "."
        pairs.append(_Pair(source.name, group, source.path, find_named(gt, source.name)))
    seen = {p.name for p in pairs}
    truths, gt_problems = find_sources([gt], recursive=recursive, mirror=True, include=include, exclude=exclude)
    unpredicted = [t.name for t in truths if t.name not in seen]
    return pairs, unpredicted, problems + gt_problems, output_folders


def _score(pair: _Pair, gt: Path, trimaps: Optional[Path], kind: str, max_pixels: int,
           tolerance: Optional[float]) -> ImageScore:
    """One pair's scores; raises :class:`io.InputError` naming the file that stops it."""
    from icm_cli import metrics
    from icm_cli.sources import find_named

    if pair.gt is None:
        raise io.InputError(f"{pair.pred}: no ground truth named {pair.name}.* in {gt}")
    trimap = None
    if trimaps is not None:
        trimap = find_named(trimaps, pair.name)
        if trimap is None:
            raise io.InputError(f"{pair.pred}: no trimap named {pair.name}.* in {trimaps}")
    if kind == "mask":
        p = io.binary_mask(io.read_mask(pair.pred, max_pixels=max_pixels))
        g = io.binary_mask(io.read_mask(pair.gt, max_pixels=max_pixels))
        _check_size(pair, p.shape, g.shape)
        scores = {"J": metrics.iou(p, g), "F": metrics.boundary_f(p, g, tolerance).f}
    else:
        p = io.read_trimap(pair.pred, max_pixels)
        g = io.read_trimap(pair.gt, max_pixels)
        _check_size(pair, p.shape, g.shape)
        region = None
        if trimap is not None:
            from icm_cli.matting import split_trimap

            t = io.read_trimap(trimap, max_pixels)
            if t.shape != g.shape:
                raise io.InputError(f"{trimap}: trimap is {t.shape[1]}x{t.shape[0]} but {pair.gt} is "
                                    f"{g.shape[1]}x{g.shape[0]}")
            region = split_trimap(t)[2]
        scores = {"SAD": metrics.sad(p, g, region), "MSE": metrics.mse(p, g, region),
                  "Grad": metrics.gradient_error(p, g, region), "Conn": metrics.connectivity_error(p, g, region)}
    return ImageScore(pair.name, pair.group, str(pair.pred), str(pair.gt), scores)


def _check_size(pair: _Pair, p_shape, g_shape) -> None:
    if p_shape != g_shape:
        raise io.InputError(f"{pair.pred}: prediction is {p_shape[1]}x{p_shape[0]} but {pair.gt} is "
                            f"{g_shape[1]}x{g_shape[0]}")


def _stability(paths: list[str], max_pixels: int) -> float:
    from icm_cli import metrics

    return metrics.temporal_stability(io.binary_mask(io.read_mask(p, max_pixels=max_pixels)) for p in paths)


def _mean(rows: list[dict], keys) -> dict:
    import numpy as np

    return {k: (float(np.mean([r[k] for r in rows])) if rows else None) for k in keys}
