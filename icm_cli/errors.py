"""The one exception family of icm: catch :class:`IcmError` to catch every error icm raises on purpose.

Each error's message is one line for people, naming the file or option at
fault. The kinds (each also importable from where it is raised):

- :class:`icm_cli.io.InputError`: a file that cannot be used (missing,
  corrupt, a mask of another size, an empty mask); its subclasses
  :class:`icm_cli.sources.SourceError` (a SOURCES argument) and
  :class:`icm_cli.io.OutputError` (an output that cannot be written).
- :class:`icm_cli.backbones.WeightsError`: backbone weights missing or unreadable.
- :class:`icm_cli.device.DeviceError`: a device that is not there.
- :class:`icm_cli.matting.MattingError` (also a ``RuntimeError``): every matte solver failed.
- :class:`icm_cli.review.ReviewError`: a review page that cannot be made.
- :class:`icm_cli.engines.ray_engine.RayEngineError`: a Ray run that could not start or broke down.
- :class:`icm_cli.jobs.UsageProblem`: a propagate run that cannot start as asked.
- :class:`SettingError` (also a ``ValueError``): a setting out of its range.
- :class:`ArrayError` (also a ``ValueError``): an image or mask array the Python API cannot use
  (wrong shape, float pixels).
- :class:`NotReadyError` (also a ``RuntimeError``): a call that needs a reference before one was set.
- :class:`icm_cli.video_out.VideoOutputError`: a video that could not be written.
- :class:`icm_cli.backbones.onnx_trunk.RuntimeUnavailable` (also a ``ValueError``): ONNX Runtime
  cannot run this backbone here.

Nothing here imports anything, so every module can derive from it.
"""

from __future__ import annotations


class IcmError(Exception):
    """Base of every error icm raises on purpose; the message is one line for people."""


class SettingError(IcmError, ValueError):
    """A setting out of its range (``ModelConfig(size=10)``); still a ``ValueError`` for older callers."""


class ArrayError(IcmError, ValueError):
    """An image or mask given as an array that icm cannot use (shape, dtype); still a ``ValueError``."""


class NotReadyError(IcmError, RuntimeError):
    """A prediction asked for before any reference was set; still a ``RuntimeError`` for older callers."""
