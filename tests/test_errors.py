"""The error contract: ``except IcmError`` catches every error icm raises on purpose.

These tests read the package's source: every exception class is defined in
``icm_cli/errors.py``, and outside ``icm_cli/core`` (pure tensor code whose
shape checks are programming errors) no plain ``ValueError``, ``RuntimeError``
or ``TypeError`` is raised unless it is listed below with the reason it stays.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import icm_cli
from icm_cli import errors

PACKAGE = Path(icm_cli.__file__).parent
PLAIN = {"ValueError", "RuntimeError", "TypeError"}

#: Plain raises that stay, keyed by a piece of the ``raise`` statement's source (so the entry follows the
#: code when it moves between modules), each with the reason it is no deliberate error for a caller.
ALLOWED = {
    "input sides must be multiples of": "backbone forward on a size the geometry never makes: a programming error",
    "raise ValueError(method)": "matting: a method name already checked by solve_alpha; unreachable",
    "expected uint8 pixels": "write_image_atomic called by icm's own code with a non-uint8 array: a programming error",
    "status must be one of": "a manifest SourceRecord built by icm with an unknown status: a programming error",
    "not a source record": "manifest parsing: caught by the reader, which counts the line as unreadable",
    "malformed source record": "manifest parsing: caught by the reader, which counts the line as unreadable",
    "malformed run record": "manifest parsing: caught by the reader, which counts the line as unreadable",
    "tokens.{name} is": "a stored reference context that does not fit: caught by the loader, which rebuilds it",
    "cell targets do not match the cells": "a stored reference context that does not fit: caught; rebuilt",
    "ROI tokens do not match the features": "a stored reference context that does not fit: caught; rebuilt",
    "tokens do not match the features": "a stored context's compact token sets that do not fit: caught; rebuilt",
    "overlay takes an 8-bit RGB image": "render.overlay called by icm's own code with a non-uint8 image: a programming error",
    "no reference cells to train the object head on": "the engine always passes the reference's cells: a programming error",
    "the reference mask is empty": "Propagator internals: Predictor refuses an empty mask first with an InputError",
    "set_references() must come first": "Propagator internals: Predictor raises NotReadyError before it gets here",
    "                raise ValueError\n": "train --pool-weight parsing: caught on the next line, never leaves the command",
}


def _plain_raises() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("core/"):
            continue
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines(keepends=True)
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name) and target.id in PLAIN:
                text = ast.get_source_segment(source, node) or ""
                found.append((rel, node.lineno, text if isinstance(node.exc, ast.Call) else lines[node.lineno - 1]))
    return found


def test_no_plain_value_runtime_or_type_error_is_raised_outside_core():
    found = _plain_raises()
    assert found, "the walk found no raise at all: it does not read the package"
    unexplained = [f"{rel}:{line}: {text.strip()}" for rel, line, text in found
                   if not any(key in text for key in ALLOWED)]
    assert not unexplained, ("raise an IcmError subclass (icm_cli/errors.py) instead, or list it in ALLOWED "
                             "with the reason:\n" + "\n".join(unexplained))


def test_every_allowed_plain_raise_is_still_there():
    """An entry whose raise is gone would let a new one through unnoticed: the list stays exact."""
    texts = [text for _, _, text in _plain_raises()]
    stale = [key for key in ALLOWED if not any(key in text for text in texts)]
    assert not stale, stale


def test_every_exception_class_is_defined_in_errors_py():
    family = {name for name, obj in vars(errors).items() if isinstance(obj, type) and issubclass(obj, Exception)}
    bases_refused = family | {"Exception", *PLAIN}
    outside = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "errors.py" or rel.startswith("core/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                names = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if names & bases_refused and not node.name.startswith("_"):  # private signals never leave a module
                    outside.append(f"{rel}: class {node.name}")
    assert not outside, outside
    assert {"InputError", "OutputError", "SettingError", "UsageProblem", "VideoOutputError", "RuntimeUnavailable",
            "WeightsError", "DeviceError", "MattingError", "ReviewError", "RayEngineError", "SourceError",
            "LayoutError", "ArrayError", "NotReadyError"} <= family


@pytest.mark.parametrize("module, name", [
    ("icm_cli.io", "InputError"), ("icm_cli.io", "OutputError"), ("icm_cli.sources", "SourceError"),
    ("icm_cli.video", "TruncatedClip"), ("icm_cli.video_out", "VideoOutputError"),
    ("icm_cli.backbones", "WeightsError"), ("icm_cli.backbones.onnx_trunk", "RuntimeUnavailable"),
    ("icm_cli.device", "DeviceError"), ("icm_cli.matting", "MattingError"), ("icm_cli.review", "ReviewError"),
    ("icm_cli.jobs", "UsageProblem"), ("icm_cli.runner.run_check", "OtherSettings"),
    ("icm_cli.training.layout", "LayoutError"), ("icm_cli.training.run", "WeightsNotWritten"),
    ("icm_cli.evaluation", "EvalArgumentsError"), ("icm_cli.engines.ray_engine", "RayEngineError"),
])
def test_each_error_is_still_importable_from_where_it_was(module, name):
    import importlib

    assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_library_messages_name_settings_and_the_command_line_names_options():
    from icm_cli.config import ModelConfig
    from icm_cli.shard import parse_shard

    with pytest.raises(errors.SettingError) as err:
        ModelConfig(size=10)
    assert str(err.value) == "size must be at least 64 pixels (got 10)"
    assert errors.command_line_text(err.value) == "--size must be at least 64 pixels (got 10)"
    with pytest.raises(errors.SettingError) as err:
        parse_shard("3/2")
    assert str(err.value).startswith("shard takes I/N") and "--" not in str(err.value)
    assert errors.command_line_text(err.value).startswith("--shard takes I/N")
    assert errors.command_line_text(errors.InputError("a.png: file not found")) == "a.png: file not found"


def test_library_errors_keep_their_old_bases_for_older_callers():
    from icm_cli import metrics
    from icm_cli.video_out import parse_fps

    with pytest.raises(ValueError):  # still a ValueError ...
        parse_fps("fast")
    with pytest.raises(errors.IcmError, match="fps takes frames per second"):  # ... and an IcmError
        parse_fps("fast")
    import numpy as np
    with pytest.raises(errors.ArrayError, match="differ in size"):
        metrics.iou(np.zeros((2, 2), bool), np.zeros((3, 3), bool))
