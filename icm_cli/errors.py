"""The one exception family of icm: catch :class:`IcmError` to catch every error icm raises on purpose.

Each error's message is one line for people, naming the file or setting at
fault. Every kind is defined here (so one module holds the whole family) and
is also importable from the module that raises it, as before
(``from icm_cli.io import InputError`` still works):

- :class:`InputError`: a file that cannot be used (missing, corrupt, a mask of
  another size, an empty mask); its subclasses :class:`SourceError` (a SOURCES
  argument), :class:`LayoutError` (a training DATA folder),
  :class:`TruncatedClip` (a clip cut short) and :class:`EvalArgumentsError`
  (PRED and GT swapped).
- :class:`OutputError`: an output that cannot be written (a full disk, a
  read-only folder); not an :class:`InputError`, since the input is fine.
  :class:`WeightsNotWritten`: trained weights that could not be saved.
- :class:`VideoOutputError`: a video that could not be written.
- :class:`SettingError` (also a ``ValueError``): a setting out of its range or
  a combination that cannot run.
- :class:`UsageProblem`: a propagate run that cannot start as asked.
- :class:`OtherSettings`: OUT holds results made with other settings.
- :class:`ArrayError` (also a ``ValueError``): an image or mask array the Python
  API cannot use (wrong shape, float pixels).
- :class:`NotReadyError` (also a ``RuntimeError``): a call that needs a reference
  before one was set.
- :class:`WeightsError`: backbone or decoder weights missing or unreadable.
- :class:`RuntimeUnavailable` (also a ``ValueError``): ONNX Runtime cannot run
  this backbone here.
- :class:`DeviceError`: a device that is not there.
- :class:`MattingError` (also a ``RuntimeError``): every matte solver failed.
- :class:`ReviewError`: a review page that cannot be made.
- :class:`RayEngineError`: a Ray run that could not start or broke down.
- :class:`IcmRuntimeError` (also a ``RuntimeError``): any other deliberate
  failure at run time (a transformers DINOv2 whose layout icm cannot read).

:func:`command_line_text` is the one line as the ``icm`` command shows it: a
library message names the setting (``size must be ...``), the command line the
option (``--size must be ...``).

Nothing here imports anything of icm, so every module can derive from it.
"""

from __future__ import annotations

from pathlib import Path


class IcmError(Exception):
    """Base of every error icm raises on purpose; the message is one line for people."""


# ------------------------------------------------------------------ files in, files out

class InputError(IcmError):
    """A problem with one user file; the message is one line for people."""


class SourceError(InputError):
    """A SOURCES argument that cannot be used at all (the run does not start: exit 2)."""


class LayoutError(InputError):
    """DATA does not hold the layout described in :mod:`icm_cli.training.layout`."""


class EvalArgumentsError(InputError):
    """PRED and GT that cannot be what was meant (swapped, or sequences without ``--recursive``)."""


class TruncatedClip(InputError):
    """A clip that holds fewer frames than its container promises (a copy cut short)."""

    def __init__(self, path: Path, readable: int, promised: int) -> None:
        self.path, self.readable, self.promised = Path(path), readable, promised
        super().__init__(f"{path}: {self.detail}")

    @property
    def detail(self) -> str:
        return (f"truncated: holds only {self.readable} readable frame{'s' if self.readable != 1 else ''} "
                f"of {self.promised} promised")


class OutputError(IcmError):
    """An output could not be written; ``errno`` says why (``ENOSPC``: the disk is full)."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


class WeightsNotWritten(OutputError):
    """Training finished but FILE could not be written (a full disk, say); the checkpoint keeps the weights."""


class VideoOutputError(IcmError):
    """A video could not be written; the message is one line naming the file."""


# ------------------------------------------------------------------ settings and calls

class SettingError(IcmError, ValueError):
    """A setting out of its range (``ModelConfig(size=10)``); still a ``ValueError`` for older callers.

    The message names the setting as the Python API does (``size must be ...``).
    ``option`` is the command-line option that sets it (``--size``): the ``icm``
    command shows :meth:`for_command_line`, where the option takes the
    setting's place at the start of the message.
    """

    def __init__(self, message: str, option: str | None = None, setting: str | None = None) -> None:
        super().__init__(message)
        self.option = option
        self.setting = setting if setting is not None else message.split(" ", 1)[0]

    def for_command_line(self) -> str:
        text = str(self)
        if self.option and self.setting and text.startswith(self.setting):
            return self.option + text[len(self.setting):]
        return text


def command_line_text(exc: BaseException) -> str:
    """An error's one line as the ``icm`` command shows it: a :class:`SettingError` names the option."""
    return exc.for_command_line() if isinstance(exc, SettingError) else str(exc)


class IcmRuntimeError(IcmError, RuntimeError):
    """A deliberate failure at run time outside the kinds above; still a ``RuntimeError`` for older callers."""


class UsageProblem(IcmError):
    """The run cannot start as asked; the message is one line for people (exit 2)."""


class OtherSettings(IcmError):
    """OUT holds results made with other settings and the run would keep them; the message says what changed."""


class ArrayError(IcmError, ValueError):
    """An image or mask given as an array that icm cannot use (shape, dtype); still a ``ValueError``."""


class NotReadyError(IcmError, RuntimeError):
    """A prediction asked for before any reference was set; still a ``RuntimeError`` for older callers."""


# ------------------------------------------------------------------ machinery

class WeightsError(IcmError):
    """A weights file or folder that cannot be used; one line for people."""


class RuntimeUnavailable(IcmError, ValueError):
    """ONNX Runtime cannot run this backbone here; the message says why, in one line (a usage problem)."""


class DeviceError(IcmError):
    """A ``--device`` value that cannot be used here; one line for people."""


class MattingError(IcmError, RuntimeError):
    """Every solver tried for an image failed; the message says which and why."""


class ReviewError(IcmError):
    """OUT or the page cannot be used; the message is one line naming the file."""


class RayEngineError(IcmError):
    """The Ray run could not start or broke down as a whole; the message is one line for people."""
