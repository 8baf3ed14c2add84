"""The `icm` command line: parse options, call the library, print. No tensor maths here."""

from __future__ import annotations

import typer

from icm_cli import __version__

app = typer.Typer(
    name="icm",
    help="In-context segmentation and matting: label one reference image, propagate its mask to folders of images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"icm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """In-context segmentation and matting."""


def _register() -> None:
    # Each command lives in its own module under icm_cli/commands.
    from icm_cli.commands import backbones as backbones_cmd
    from icm_cli.commands import inspect_attn, propagate, refine, trimap

    app.command("propagate")(propagate.propagate)
    app.command("trimap")(trimap.trimap)
    app.command("refine")(refine.refine)
    app.command("inspect-attn")(inspect_attn.inspect_attn)
    app.command("backbones")(backbones_cmd.backbones)


_register()


def main() -> None:
    app()
