"""`icm train`: fit the learned mask decoder on your own labelled images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from icm_cli import options as opts
from icm_cli.errors import command_line_text

TRAINING = "Training"


def train(
    data: Annotated[Path, typer.Argument(
        metavar="DATA", show_default=False,
        help="Folder of groups: DATA/<group>/images/*, DATA/<group>/masks/* (same names), optional "
             "DATA/<group>/group.json {\"sequence\": true, \"pool\": NAME, \"split\": \"val\"}.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", metavar="FILE", rich_help_panel=opts.OUTPUTS, show_default=False,
        help="[red]Required.[/] Weights file to write (.safetensors); use it with --decoder FILE. An existing "
             "one is refused unless --overwrite or --resume.")],
    init: Annotated[str, typer.Option(
        "--init", metavar="WEIGHTS", rich_help_panel=TRAINING,
        help="Start from these weights: none (from scratch), builtin (fine-tune the shipped decoder) "
             "or a .safetensors file.")] = "none",
    steps: Annotated[int, typer.Option(
        "--steps", metavar="N", rich_help_panel=TRAINING, callback=opts.at_least(1, "--steps"),
        help="Optimiser steps (8 crops each).")] = 6000,
    lr: Annotated[float, typer.Option(
        "--lr", metavar="RATE", rich_help_panel=TRAINING, callback=opts.at_least(0, "--lr"),
        help="Peak learning rate (lower it when fine-tuning, e.g. 1e-3).")] = 3e-3,
    seed: Annotated[int, typer.Option(
        "--seed", metavar="N", rich_help_panel=TRAINING, help="Seed of the episode plan and of training.")] = 0,
    pool_weight: Annotated[List[str], typer.Option(
        "--pool-weight", metavar="POOL=W", rich_help_panel=TRAINING, show_default=False,
        help="Sampling weight of a pool of groups; repeatable (default: DATA/train.json, else equal).")] = [],
    val_share: Annotated[float, typer.Option(
        "--val-share", metavar="SHARE", rich_help_panel=TRAINING, callback=opts.in_unit_range("--val-share"),
        help="Share of each pool held out for validation when no group.json says split=val.")] = 0.1,
    cache: Annotated[Optional[Path], typer.Option(
        "--cache", metavar="DIR", rich_help_panel=TRAINING, show_default=False,
        help="Where episodes and the checkpoint are kept (default: the user cache, ~/.cache/icm/train).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", rich_help_panel=TRAINING,
        help="Continue an interrupted run from its checkpoint (and write FILE even if it exists).")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", rich_help_panel=opts.OUTPUTS,
        help="Replace FILE if it exists (default: refuse before training).")] = False,
    workers: Annotated[int, typer.Option(
        "--workers", metavar="N", rich_help_panel=TRAINING, callback=opts.at_least(1, "--workers"),
        help="Processes building episodes.")] = 2,
    quiet: opts.Quiet = False,
) -> None:
    """Train the learned mask decoder on groups of images with masks (a group: one object or category).

    Episodes (a reference and a target of one group, made by icm's own engine) are cached, so a
    second run starts training at once. Prints validation IoU per pool at the end.
    Example: [bold]icm train my_products/ -o products.safetensors --init builtin --steps 500 --lr 1e-3[/]
    """
    from icm_cli.backbones.weights import WeightsError
    from icm_cli.console import error_line
    from icm_cli.training.layout import LayoutError

    if output.suffix != ".safetensors":
        error_line(f"{output}: the weights file must end in .safetensors")
        raise typer.Exit(2)
    problem = weights_target_problem(output, overwrite=overwrite, resume=resume)
    if problem:
        error_line(problem)
        raise typer.Exit(2)
    weights = {}
    for spec in pool_weight:
        name, sep, value = spec.partition("=")
        try:
            weights[name.strip()] = float(value)
            if not sep or not name.strip() or weights[name.strip()] < 0:
                raise ValueError
        except ValueError:
            error_line(f"--pool-weight {spec}: expected POOL=WEIGHT with a weight of 0 or more")
            raise typer.Exit(2)
    from icm_cli.training.fit import FitSettings
    from icm_cli.training.run import TrainOptions, WeightsNotWritten, train as run_training

    options = TrainOptions(fit=FitSettings(steps=steps, lr=lr, seed=seed, pool_weights=weights),
                           init=init, workers=workers, val_share=val_share, resume=resume)
    reporter = _RichReporter(quiet)
    try:
        with reporter:
            figures = run_training(data, output, cache, options, reporter)
    except (LayoutError, WeightsError, ValueError) as exc:
        error_line(command_line_text(exc))
        raise typer.Exit(2)
    except KeyboardInterrupt:
        error_line(interrupted_line(reporter.last_step, steps, options.fit.checkpoint_every))
        raise typer.Exit(130)
    except WeightsNotWritten as exc:
        error_line(str(exc))
        raise typer.Exit(1)

    reporter.table(figures)
    if not quiet:
        from icm_cli.console import stderr

        stderr.print(f"wrote {output}: use it with [bold]--decoder {output}[/]")


def weights_target_problem(output: Path, *, overwrite: bool, resume: bool) -> str | None:
    """Why FILE cannot be written, found before any training (None when it can): a folder there, a
    file where a folder must be, a folder that cannot be written (or its missing folders made), or
    weights already there (without ``--overwrite`` or ``--resume``). Creates nothing."""
    import os

    from icm_cli.atomic import temp_file

    if output.is_dir():
        return f"{output}: is a folder; give a file name ending in .safetensors"
    base = None
    for folder in output.absolute().parents:  # `-o notes.txt/w.safetensors`: a file stands where a folder must be
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                return f"{folder}: is a file, not a folder, so {output} cannot be written there"
            base = folder
            break
    if output.exists() and not (overwrite or resume):
        return (f"{output}: exists; pass --overwrite to replace it, --resume to continue the run that "
                "writes it, or give another -o")
    try:  # the nearest existing folder must take a new file (or the folders save_decoder makes under it)
        fd, probe = temp_file(base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"{base}: cannot write the weights file there ({exc.strerror or exc})"
    return None


def interrupted_line(last_step: int, steps: int, checkpoint_every: int) -> str:
    """The Ctrl-C line: where training stopped and that ``--resume`` continues it (the same command
    without it starts over)."""
    saved = (last_step // checkpoint_every) * checkpoint_every if last_step < steps else steps
    where = (f"stopped at step {last_step} of {steps}; the checkpoint holds step {saved}" if saved else
             f"stopped at step {last_step} of {steps}, before the first checkpoint (every {checkpoint_every} steps)"
             if last_step else "stopped before training (the episodes made so far are cached)")
    return (f"interrupted: {where}; rerun the same command with --resume to continue "
            "(without --resume training starts over)")


class _RichReporter:
    """Training progress on stderr: stage lines, an episode bar, a step bar with the loss."""

    def __init__(self, quiet: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from icm_cli.console import stderr

        self.quiet = quiet
        self.console = stderr
        self.progress = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[note]}"), TimeRemainingColumn(), console=stderr,
                                 disable=quiet, transient=False)
        self.tasks: dict[str, int] = {}
        self.last_step = 0   # the last step reported (for the Ctrl-C line)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def _task(self, name: str, total: int):
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total, note="")
        return self.tasks[name]

    def stage(self, text: str) -> None:
        if not self.quiet:
            self.progress.console.print(text)

    def warning(self, text: str) -> None:
        from rich.markup import escape

        self.progress.console.print(f"[yellow]warning:[/] {escape(text)}")

    def episodes(self, done: int, total: int) -> None:
        self.progress.update(self._task("episodes", total), completed=done)

    def step(self, step: int, total: int, loss: float) -> None:
        self.last_step = step
        task = self._task("training", total)
        note = self.progress.tasks[task].fields.get("note", "")
        if step % 10 == 0 or step == total:
            note = f"loss {loss:.3f}"
        self.progress.update(task, completed=step, note=note)

    def validation(self, step: int, figures: dict) -> None:
        if not self.quiet:
            mean = sum(f["decoder"] for f in figures.values()) / max(1, len(figures))
            self.progress.console.print(f"  validation at step {step}: mean IoU {mean:.3f} over {len(figures)} pools")

    def table(self, figures: dict) -> None:
        if self.quiet or not figures:
            return
        from rich.table import Table

        columns = sorted({k for f in figures.values() for k in f})
        order = [c for c in ("decoder", "training_free", "with_prior", "prior_alone") if c in columns]
        table = Table(title="validation IoU (held-out episodes, threshold 0.5, no GrabCut)")
        table.add_column("pool")
        for c in order:
            table.add_column(c.replace("_", " "), justify="right")
        for pool, f in figures.items():
            table.add_row(pool, *(f"{f[c]:.3f}" if c in f else "" for c in order))
        self.console.print(table)
