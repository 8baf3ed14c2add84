"""One help style and one error style for every command.

Help pages: a usage line with plain names (``MASKS...``, ``[SOURCES]...``),
the command's text, then its options in panels by what they decide; each
option as ``-o, --output OUT`` (no type names such as ``<bool>`` or
``<path>``: a flag shows no value, an option its value's name), its help,
``Required.`` first where it must be given and ``[default: ...]`` last.
It fits 80 columns (wider terminals get up to 100).

Usage errors (a bad value, an unknown option, a missing one) are one
``error:`` line like every other error, exit code 2; the ones about how the
command was typed add the usage line. Only documented click/Typer
attributes are read (``Parameter.opts``, ``.help``, ``.required``, ...), so
this works with Typer releases that bundle their own click.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil

import typer
from typer.core import TyperCommand

MAX_WIDTH = 100
DEFAULT_PANEL = "Options"
REQUIRED = "Required."

def _plain(text: str) -> str:
    """Help text without rich markup (``[bold]...[/]``); escaped brackets (``\\[``) kept as text."""
    text = text.replace("\\[", "\x00")
    text = re.sub(r"\[(/?)(bold|red|dim|italic|cyan|green|yellow|magenta|blue|white)?( [a-z]+)*\]", "", text)
    text = text.replace("[/]", "")
    return text.replace("\x00", "[")


def is_argument(param) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


def value_name(param) -> str:
    """The name of an option's value or an argument (``OUT``, ``SOURCES``); "" for a flag."""
    if is_argument(param):
        name = param.metavar or (param.name or "").upper()
        return f"{name}..." if param.nargs != 1 else name
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    return param.metavar or (param.name or "value").upper()


def usage_pieces(command, ctx) -> list[str]:
    """``[OPTIONS]`` then each argument: ``NAME`` when required, ``[NAME]`` when not (``...`` when repeated)."""
    pieces = ["[OPTIONS]"]
    for param in command.get_params(ctx):
        if not is_argument(param) or getattr(param, "hidden", False):
            continue
        name = param.metavar or (param.name or "").upper()
        name = name if param.required else f"[{name}]"
        pieces.append(f"{name}..." if param.nargs != 1 else name)
    if getattr(command, "commands", None):  # a group: icm COMMAND [ARGS]...
        pieces.append("COMMAND [ARGS]...")
    return pieces


def _names(param) -> str:
    if is_argument(param):
        return value_name(param)
    shorts = [o for o in param.opts if not o.startswith("--")]
    longs = [o for o in param.opts if o.startswith("--")]
    names = ", ".join(shorts + longs)
    if getattr(param, "secondary_opts", None):
        names += " / " + ", ".join(param.secondary_opts)
    value = value_name(param)
    return f"{names} {value}" if value else names


def _default(param, ctx) -> str | None:
    if is_argument(param):
        return None
    if getattr(param, "is_flag", False):
        # An on/off pair (--motion/--no-motion) says which one holds when neither is given; a lone flag is off.
        secondary = getattr(param, "secondary_opts", None)
        if not secondary or getattr(param, "show_default", None) is False:
            return None
        return (param.opts if param.default else secondary)[0]
    show = getattr(param, "show_default", None)
    if isinstance(show, str):
        return show
    if show is False or (show is None and not ctx.show_default):
        return None
    value = param.default
    if callable(value) or value is None or value == [] or value == () or value is False:
        return None
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def is_required(param) -> bool:
    return bool(param.required) or _plain(getattr(param, "help", None) or "").startswith(REQUIRED)


def _help_text(param, ctx):
    from rich.markup import escape
    from rich.text import Text

    raw = inspect.cleandoc(getattr(param, "help", None) or "")
    raw = " ".join(raw.split())
    plain = _plain(raw)
    required = is_required(param)
    if plain.startswith(REQUIRED):
        raw = raw[raw.index(REQUIRED) + len(REQUIRED):].lstrip()
        raw = re.sub(r"^\[/[a-z ]*\]\s*", "", raw)  # the closing tag of a styled "Required."
    text = Text()
    if required:
        text.append(REQUIRED + " ", style="bold red")
    try:
        text.append_text(Text.from_markup(raw))
    except Exception:  # help that is not valid markup: shown as written
        text.append(escape(raw))
    default = _default(param, ctx)
    envvar = getattr(param, "envvar", None)
    if default is not None:
        text.append(f" [default: {default}]", style="dim")
    if envvar:
        text.append(f" [env: {envvar if isinstance(envvar, str) else ', '.join(envvar)}]", style="dim")
    return text


def width() -> int:
    """The terminal's width (``COLUMNS`` when set), at most :data:`MAX_WIDTH`."""
    try:
        columns = int(os.environ.get("COLUMNS", "") or 0)
    except ValueError:
        columns = 0
    return min(columns or shutil.get_terminal_size((80, 24)).columns, MAX_WIDTH)


def _console():
    from rich.console import Console

    return Console(width=width(), highlight=False, soft_wrap=False)


def _description(help_text: str | None):
    from rich.text import Text

    paragraphs = [" ".join(p.split()) for p in inspect.cleandoc(help_text or "").split("\n\n") if p.strip()]
    out = Text()
    for i, para in enumerate(paragraphs):
        if i:
            out.append("\n\n")
        try:
            out.append_text(Text.from_markup(para))
        except Exception:
            out.append(para)
    return out


def _panel(title: str, rows: list):
    from rich.panel import Panel
    from rich.table import Table

    table = Table.grid(padding=(0, 2), expand=True)
    left = min(max(len(r[0]) for r in rows), 26)
    table.add_column(style="bold cyan", no_wrap=False, width=left)
    table.add_column(ratio=1)
    for names, help_text in rows:
        table.add_row(names, help_text)
    return Panel(table, title=title, title_align="left", border_style="dim")


def render_help(command, ctx) -> None:
    """Print ``command``'s help page in the one style (see the module's text)."""
    from rich.padding import Padding

    console = _console()
    console.print(Padding(f"[bold]Usage:[/] {_escape(ctx.command_path)} {' '.join(usage_pieces(command, ctx))}",
                          (1, 1, 1, 1)))
    if command.help:
        console.print(Padding(_description(command.help), (0, 1, 1, 1)))
    panels: dict[str, list] = {}
    arguments = [p for p in command.get_params(ctx) if is_argument(p) and not getattr(p, "hidden", False)]
    if arguments:
        panels["Arguments"] = [(_names(p), _help_text(p, ctx)) for p in arguments]
    for param in command.get_params(ctx):
        if is_argument(param) or getattr(param, "hidden", False):
            continue
        title = getattr(param, "rich_help_panel", None) or DEFAULT_PANEL
        panels.setdefault(title, []).append((_names(param), _help_text(param, ctx)))
    # the panel of -h/--help and other ungrouped options goes last, unless it is the only one
    order = [t for t in panels if t != DEFAULT_PANEL] + ([DEFAULT_PANEL] if DEFAULT_PANEL in panels else [])
    for title in order:
        console.print(_panel(title, panels[title]))
    commands = getattr(command, "commands", None)
    if commands:
        rows = []
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            first = _plain(inspect.cleandoc(sub.help or "").split("\n\n")[0])
            rows.append((name, " ".join(first.split())))
        console.print(_panel("Commands", rows))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class IcmCommand(TyperCommand):
    """A Typer command with icm's help page and usage line."""

    def format_help(self, ctx, formatter) -> None:
        render_help(self, ctx)

    def collect_usage_pieces(self, ctx) -> list[str]:
        return usage_pieces(self, ctx)


# ------------------------------------------------------------------ usage errors

def is_usage_error(exc: BaseException) -> bool:
    """A click/Typer usage error (bad value, unknown or missing option, unknown command)."""
    return (isinstance(getattr(exc, "exit_code", None), int) and callable(getattr(exc, "format_message", None))
            and not isinstance(exc, (typer.Exit, typer.Abort)))


def _option_name(param, every: bool = False) -> str:
    """``--size`` (or ``-o/--output`` with ``every``); an argument's name (``MASKS``)."""
    if param is None:
        return ""
    if is_argument(param):
        return param.metavar or (param.name or "").upper()
    shorts = [o for o in param.opts if not o.startswith("--")]
    longs = [o for o in param.opts if o.startswith("--")]
    if every:
        return "/".join(shorts + longs)
    return (longs or list(param.opts) or [param.name or ""])[0]


def usage_error_text(exc) -> tuple[str, bool]:
    """One line for a click/Typer usage error, and whether the usage line should follow it."""
    kind = type(exc).__name__
    param = getattr(exc, "param", None)
    if kind == "MissingParameter":
        name = _option_name(param, every=True) or str(getattr(exc, "param_hint", "") or "").strip("'")
        return f"missing {name}" if name else _tidy(exc.format_message()), True
    if isinstance(exc, typer.BadParameter):
        message = _tidy(getattr(exc, "message", "") or exc.format_message())
        name = _option_name(param)
        if name and name not in message:
            message = f"{name}: {message}"
        return message, False
    return _tidy(exc.format_message()), True


def _tidy(message: str) -> str:
    message = " ".join(str(message).split()).rstrip(".")
    message = re.sub(r"'(-[-\w]+)'( / '(-[-\w]+)')?", lambda m: m.group(1), message)
    return message[:1].lower() + message[1:] if message[:1].isupper() and not message[1:2].isupper() else message


def usage_line(ctx) -> str:
    """``usage: icm propagate [OPTIONS] [SOURCES]...  (icm propagate -h for help)``."""
    usage = ctx.get_usage().strip()
    usage = re.sub(r"^Usage:\s*", "", usage)
    return f"usage: {usage}   ({ctx.command_path} -h for help)"


def report_usage_error(exc) -> int:
    """Print a usage error in icm's style; returns its exit code (2)."""
    from rich.markup import escape

    from icm_cli.console import error_line, stderr

    message, with_usage = usage_error_text(exc)
    error_line(message)
    ctx = getattr(exc, "ctx", None)
    if with_usage and ctx is not None:
        stderr.print(escape(usage_line(ctx)), style="dim")
    return exc.exit_code


def usage_problem(ctx, message: str) -> typer.Exit:
    """A usage problem a command found itself: the error line, the usage line, exit 2 (raise the result)."""
    from rich.markup import escape

    from icm_cli.console import error_line, stderr

    error_line(message)
    stderr.print(escape(usage_line(ctx)), style="dim")
    return typer.Exit(2)
