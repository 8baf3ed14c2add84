"""The `icm` command line: parse options, call the library, print. No tensor maths here.

Only Typer's public API is used (typer >= 0.26 carries its own copy of click
and no longer installs click). The command modules import nothing heavy at
the top, so ``icm --version`` and ``--help`` start in a fraction of a second.
"""

from __future__ import annotations

import signal

import typer
from typer.core import TyperGroup

from icm_cli import __version__, console
from icm_cli.helpstyle import IcmCommand, is_usage_error, render_help, report_usage_error, usage_pieces


def _is_cli_exit(exc: BaseException) -> bool:
    """Typer's own exits and its usage errors (a click ``ClickException``: bad option, missing
    parameter, unknown command), which Typer reports itself with exit code 2."""
    if isinstance(exc, (typer.Exit, typer.Abort)):
        return True
    return isinstance(getattr(exc, "exit_code", None), int) and callable(getattr(exc, "show", None))


class _GuardedGroup(TyperGroup):
    """Every command runs inside this guard: no traceback reaches a user unless they ask.

    - an exception nobody expected (a bug) becomes one error line and exit 3;
      ``icm --debug ...`` (or ``ICM_DEBUG=1``) lets it through with its traceback;
    - Ctrl-C outside a batch's own handling (while loading a model, say) is one
      line and exit 130; a batch stopped this way is resumed by rerunning it.
    Usage errors (a bad value, an unknown option) become one ``error:`` line
    like every other error (:mod:`icm_cli.helpstyle`), exit code 2;
    commands' own exits pass unchanged.
    """

    def format_help(self, ctx, formatter) -> None:
        render_help(self, ctx)

    def collect_usage_pieces(self, ctx) -> list[str]:
        return usage_pieces(self, ctx)

    def parse_args(self, ctx, args):
        ctx.meta["icm.argv"] = list(args)  # the command as typed, for the run record
        try:
            return super().parse_args(ctx, args)
        except Exception as exc:
            if is_usage_error(exc) and type(exc).__name__ != "NoArgsIsHelpError":
                raise typer.Exit(report_usage_error(exc)) from None
            raise

    def invoke(self, ctx):
        if not {"-h", "--help"} & set(ctx.meta.get("icm.argv", ())):  # a command will run, not a help page
            from icm_cli.process_settings import claim_for_command_line
            claim_for_command_line()
        try:
            return self._guarded_invoke(ctx)
        finally:
            from icm_cli.commands.common import remove_unused_output_folders

            remove_unused_output_folders()  # a refused run leaves no empty OUT behind

    def _guarded_invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if is_usage_error(exc) and type(exc).__name__ != "NoArgsIsHelpError":
                raise typer.Exit(report_usage_error(exc)) from None
            if _is_cli_exit(exc):
                raise
            if isinstance(exc, BrokenPipeError):
                # `icm ... | head` closed our stdout: the reader has what it wanted.
                import os
                import sys
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(141) from None
            if console.DEBUG:
                raise
            console.error_line(console.unexpected(exc))
            raise typer.Exit(console.EXIT_UNEXPECTED) from None
        except KeyboardInterrupt:
            # Threads still finishing a write are joined at exit; a further Ctrl-C must not
            # print "Exception ignored in atexit callback" over our one line.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if console.DEBUG:
                raise
            console.error_line("interrupted; rerun the same command to finish the rest (finished outputs are skipped)")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_GuardedGroup,
    name="icm",
    help="In-context segmentation and matting: label one reference image, propagate its mask to folders of images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
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
    # Each command lives in its own module under icm_cli/commands; they import heavy things lazily.
    from icm_cli.commands import (backbones, eval as eval_cmd, inspect_attn, matte, propagate, refine, review,
                                  status, train, train_keys, trimap)

    for name, function in (("propagate", propagate.propagate), ("trimap", trimap.trimap), ("refine", refine.refine),
                           ("matte", matte.matte), ("inspect-attn", inspect_attn.inspect_attn),
                           ("eval", eval_cmd.eval_command), ("status", status.status), ("review", review.review),
                           ("backbones", backbones.backbones), ("train", train.train),
                           ("train-keys", train_keys.train_keys)):
        app.command(name, cls=IcmCommand)(function)


_register()


def main() -> None:
    app()
