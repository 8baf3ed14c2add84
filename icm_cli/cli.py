"""The `icm` command line: parse options, call the library, print. No tensor maths here."""

from __future__ import annotations

import click
import typer
from typer.core import TyperGroup

from icm_cli import __version__, console


class _GuardedGroup(TyperGroup):
    """Every command runs inside this guard: no traceback reaches a user unless they ask.

    - an exception nobody expected (a bug) becomes one error line and exit 3;
      ``icm --debug ...`` (or ``ICM_DEBUG=1``) lets it through with its traceback;
    - Ctrl-C outside a batch's own handling (while loading a model, say) is one
      line and exit 130; a batch stopped this way is resumed by rerunning it.
    Commands' own exits (``typer.Exit``) and usage errors pass unchanged.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.ClickException,
                click.exceptions.Abort):
            raise
        except BrokenPipeError:
            # `icm ... | head` closed our stdout: the reader has what it wanted.
            import os
            import sys
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
        except KeyboardInterrupt:
            if console.DEBUG:
                raise
            console.error_line("interrupted; rerun the same command to finish the rest (finished outputs are skipped)")
            raise typer.Exit(130) from None
        except Exception as exc:
            if console.DEBUG:
                raise
            console.error_line(console.unexpected(exc))
            raise typer.Exit(console.EXIT_UNEXPECTED) from None


app = typer.Typer(
    cls=_GuardedGroup,
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
    debug: bool = typer.Option(False, "--debug", envvar="ICM_DEBUG",
                               help="Show the traceback of an unexpected error instead of one line (exit 3)."),
) -> None:
    """In-context segmentation and matting."""
    console.DEBUG = debug


def _register() -> None:
    # Each command lives in its own module under icm_cli/commands.
    from icm_cli.commands import backbones as backbones_cmd
    from icm_cli.commands import inspect_attn, propagate, refine, trimap

    app.command("propagate")(propagate.propagate)
    app.command("trimap")(trimap.trimap)
    app.command("refine")(refine.refine)
    app.command("inspect-attn")(inspect_attn.inspect_attn)
    app.command("backbones")(backbones_cmd.backbones)
    from icm_cli.commands import status as status_cmd

    app.command("status")(status_cmd.status)
    from icm_cli.commands import eval as eval_cmd
    from icm_cli.commands import matte as matte_cmd

    app.command("matte")(matte_cmd.matte)
    app.command("eval")(eval_cmd.eval_command)
    from icm_cli.commands import review as review_cmd

    app.command("review")(review_cmd.review)


_register()


def main() -> None:
    app()
