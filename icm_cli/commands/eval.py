"""`icm eval`: score predicted masks or alpha mattes against ground truth, paired by stem."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from icm_cli import options as opts
from icm_cli.config import DEFAULT_MAX_PIXELS

KINDS = ("mask", "alpha")
MASK_KEYS = ("J", "F")
ALPHA_KEYS = ("SAD", "MSE", "Grad", "Conn")


@dataclass
class Pair:
    name: str       # relative path without suffix, e.g. "blackswan/00001"
    group: str      # sub-folder (sequence) name, "." for the top folder
    pred: Path
    gt: Optional[Path]
    trimap: Optional[Path] = None


def _is_propagate_output(folder: Path) -> bool:
    """An ``icm propagate -o`` folder: a manifest, or masks/ beside trimaps/ or heatmaps/."""
    from icm_cli.runner.manifest import manifest_files

    if not (folder / "masks").is_dir():
        return False
    return bool(manifest_files(folder)) or (folder / "trimaps").is_dir() or (folder / "heatmaps").is_dir()


def _in_outputs(found: list, pred: Path, kind: str) -> tuple[list, int]:
    """Predictions inside propagate outputs (``OUT/<seq>/masks/x.png``) named as their sequence's (``<seq>/x``):
    only the ``masks/`` (``--kind alpha``: ``alpha/``) of such a folder is scored, never its heat maps or
    trimaps. Returns the sources kept (renamed) and how many output folders were read this way."""
    import dataclasses

    folder_kind = "masks" if kind == "mask" else "alpha"
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


def _collect(pred: Path, gt: Path, recursive: bool, kind: str = "mask") -> tuple[list[Pair], list[str], list]:
    """Pair every prediction with its ground truth (by name, sub-folders included); also list
    ground truths nobody predicted, and folders that could not be read. PRED may be a propagate
    output folder, or (with ``recursive``) a folder of them: their ``masks/`` are scored."""
    from icm_cli.console import info_line
    from icm_cli.sources import find_named, find_sources, output_name

    if pred.is_file():
        target = gt if gt.is_file() else find_named(gt, output_name(pred))
        return [Pair(output_name(pred), ".", pred, target)], [], []
    found, problems = find_sources([pred], recursive=recursive or _is_propagate_output(pred), mirror=True)
    found, outputs = _in_outputs(found, pred, kind)
    if outputs:
        folder = "masks/" if kind == "mask" else "alpha/"
        info_line(f"note: scoring the {folder} of {outputs} propagate output folder{'s' if outputs != 1 else ''} "
                  f"in {pred} (heat maps and trimaps are not predictions)")
    pairs = []
    for source in found:
        group = source.name.rsplit("/", 1)[0] if "/" in source.name else "."
        pairs.append(Pair(source.name, group, source.path, find_named(gt, source.name)))
    seen = {p.name for p in pairs}
    truths, gt_problems = find_sources([gt], recursive=recursive, mirror=True)
    unpredicted = [t.name for t in truths if t.name not in seen]
    return pairs, unpredicted, problems + gt_problems


def _score(pair: Pair, kind: str, max_pixels: int, tolerance: Optional[float]) -> dict:
    from icm_cli import io, metrics

    if kind == "mask":
        p = io.binary_mask(io.read_mask(pair.pred, max_pixels=max_pixels))
        g = io.binary_mask(io.read_mask(pair.gt, max_pixels=max_pixels))
        _check_size(pair, p.shape, g.shape)
        return {"J": metrics.iou(p, g), "F": metrics.boundary_f(p, g, tolerance).f}

    p = io.read_trimap(pair.pred, max_pixels)
    g = io.read_trimap(pair.gt, max_pixels)
    _check_size(pair, p.shape, g.shape)
    region = None
    if pair.trimap is not None:
        from icm_cli.matting import split_trimap

        t = io.read_trimap(pair.trimap, max_pixels)
        if t.shape != g.shape:
            raise io.InputError(f"{pair.trimap}: trimap is {t.shape[1]}x{t.shape[0]} but {pair.gt} is "
                                f"{g.shape[1]}x{g.shape[0]}")
        region = split_trimap(t)[2]
    return {"SAD": metrics.sad(p, g, region), "MSE": metrics.mse(p, g, region),
            "Grad": metrics.gradient_error(p, g, region), "Conn": metrics.connectivity_error(p, g, region)}


def _stability(paths: list[str], max_pixels: int) -> float:
    from icm_cli import io, metrics

    return metrics.temporal_stability(io.binary_mask(io.read_mask(p, max_pixels=max_pixels)) for p in paths)


def _check_size(pair: Pair, p_shape, g_shape) -> None:
    from icm_cli import io

    if p_shape != g_shape:
        raise io.InputError(f"{pair.pred}: prediction is {p_shape[1]}x{p_shape[0]} but {pair.gt} is "
                            f"{g_shape[1]}x{g_shape[0]}")


def _mean(rows: list[dict], keys) -> dict:
    import numpy as np

    return {k: (float(np.mean([r[k] for r in rows])) if rows else None) for k in keys}


def _fmt(value: Optional[float], key: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if key in ("J", "F", "MSE") else f"{value:.3f}"


def eval_command(
    pred: Annotated[Path, typer.Argument(metavar="PRED", show_default=False,
                                         help="Predicted masks or alpha mattes: a folder or one file.")],
    gt: Annotated[Path, typer.Argument(metavar="GT", show_default=False,
                                       help="Ground truth: a folder (paired by name, any image suffix) or one file.")],
    kind: Annotated[str, typer.Option("--kind", "-k", metavar="KIND",
                                      help="mask: J (IoU) and boundary F; alpha: SAD, MSE, Grad, Conn.")] = "mask",
    trimaps: Annotated[Optional[Path], typer.Option(
        "--trimaps", "-t", metavar="DIR", show_default=False,
        help="alpha: score only the unknown band of these trimaps (folder, paired by name).")] = None,
    stability: Annotated[bool, typer.Option(
        "--stability", help="mask: also each sequence's temporal stability (mean IoU of consecutive masks in "
                            "name order), for the prediction and for the ground truth.")] = False,
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r",
        help="Folders of sequence sub-folders: per-sequence means, then the mean over sequences (DAVIS).")] = False,
    tolerance: Annotated[Optional[float], typer.Option(
        "--tolerance", metavar="D", callback=opts.at_least(0, "--tolerance"), show_default=False,
        help="mask: boundary match distance, pixels if >= 1 else share of the diagonal (default 0.008).")] = None,
    json_output: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object (per image, per sequence, mean) instead of tables.")] = False,
    max_pixels: opts.MaxPixels = DEFAULT_MAX_PIXELS,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No notes about unpredicted ground truth.")] = False,
) -> None:
    """Score predictions against ground truth; missing or unreadable pairs are reported and make the exit code 1.

    Example: [bold]icm eval out/masks/ truth/ --kind mask[/]  or
    [bold]icm eval alpha/ gt/ --kind alpha --trimaps trimaps/ --json[/]
    """
    from rich.table import Table

    from icm_cli import io
    from icm_cli.console import error_line, info_line, stdout
    from icm_cli.sources import find_named, natural_key

    if kind not in KINDS:
        error_line(f"--kind {kind!r} is not known; choose mask or alpha")
        raise typer.Exit(2)
    if trimaps is not None and kind != "alpha":
        error_line("--trimaps applies to --kind alpha only")
        raise typer.Exit(2)
    for label, path in (("PRED", pred), ("GT", gt)):
        if not path.exists():
            error_line(f"{path}: {label} not found")
            raise typer.Exit(2)
    if pred.is_dir() and gt.is_file():
        error_line(f"{gt}: GT must be a folder when PRED is a folder")
        raise typer.Exit(2)
    if trimaps is not None and not trimaps.is_dir():
        error_line(f"{trimaps}: --trimaps must be a folder")
        raise typer.Exit(2)

    from icm_cli.sources import SourceError

    keys = MASK_KEYS if kind == "mask" else ALPHA_KEYS
    try:
        pairs, unpredicted, unreadable = _collect(pred, gt, recursive, kind)
    except SourceError as exc:
        error_line(str(exc))
        raise typer.Exit(2)
    rows: list[dict] = []
    problems: list[dict] = [{"name": None, "pred": str(p.path), "error": p.message} for p in unreadable]
    for pair in pairs:
        if pair.gt is None:
            problems.append({"name": pair.name, "pred": str(pair.pred),
                             "error": f"{pair.pred}: no ground truth named {pair.name}.* in {gt}"})
            continue
        if trimaps is not None:
            pair.trimap = find_named(trimaps, pair.name)
            if pair.trimap is None:
                problems.append({"name": pair.name, "pred": str(pair.pred),
                                 "error": f"{pair.pred}: no trimap named {pair.name}.* in {trimaps}"})
                continue
        try:
            scores = _score(pair, kind, max_pixels, tolerance)
        except io.InputError as exc:
            problems.append({"name": pair.name, "pred": str(pair.pred), "error": str(exc)})
            continue
        rows.append({"name": pair.name, "sequence": pair.group, "pred": str(pair.pred), "gt": str(pair.gt), **scores})

    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["sequence"], []).append(row)
    sequences = [{"sequence": name, "frames": len(members), **_mean(members, keys)}
                 for name, members in groups.items()]
    stability_keys: tuple[str, ...] = ()
    if stability and kind == "mask":
        stability_keys = ("T_pred", "T_gt")
        for seq in sequences:
            members = sorted(groups[seq["sequence"]], key=lambda row: natural_key(row["name"]))
            seq["T_pred"] = _stability([row["pred"] for row in members], max_pixels)
            seq["T_gt"] = _stability([row["gt"] for row in members], max_pixels)
    # DAVIS: mean over sequences of per-sequence means; flat folders: mean over images.
    mean = _mean(sequences, keys) if recursive else _mean(rows, keys)
    mean.update(_mean(sequences, stability_keys))  # stability is a per-sequence figure

    for problem in problems:
        error_line(problem["error"])
    if unpredicted and not quiet:
        shown = ", ".join(unpredicted[:5]) + (" ..." if len(unpredicted) > 5 else "")
        n = len(unpredicted)
        info_line(f"note: {n} ground-truth file{'s have' if n != 1 else ' has'} no prediction and "
                  f"{'were' if n != 1 else 'was'} not scored: {shown}")
    if not rows and not problems:
        error_line(f"{pred}: no images to score")

    if json_output:
        report = {"kind": kind, "scored": len(rows), "mean": mean, "images": rows,
                  "missing": problems, "unpredicted": unpredicted}
        if recursive:
            report["sequences"] = sequences
        typer.echo(json.dumps(report, indent=2))
    else:
        table = Table(title=f"icm eval ({kind}{', unknown band only' if trimaps else ''})", title_justify="left")
        first = "sequence" if recursive else "image"
        table.add_column(first)
        if recursive:
            table.add_column("frames", justify="right")
        shown_keys = keys + (stability_keys if recursive else ())
        for k in shown_keys:
            table.add_column(k, justify="right")
        listing = sequences if recursive else rows
        for row in listing:
            cells = [row["sequence"] if recursive else row["name"]]
            if recursive:
                cells.append(str(row["frames"]))
            table.add_row(*cells, *[_fmt(row[k], k) for k in shown_keys])
        table.add_section()
        table.add_row("mean", *([str(len(rows))] if recursive else []), *[_fmt(mean[k], k) for k in shown_keys])
        stdout.print(table)
        if stability_keys and not recursive:
            stdout.print(f"temporal stability (mean IoU of consecutive masks): prediction "
                         f"{_fmt(mean['T_pred'], 'J')}, ground truth {_fmt(mean['T_gt'], 'J')}")
    raise typer.Exit(1 if problems or not rows else 0)
