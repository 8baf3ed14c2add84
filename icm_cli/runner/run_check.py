"""The settings check of the file commands (`trimap`, `refine`, `matte`), with propagate's manifest.

`icm propagate` records each run's result-changing settings in OUT's
manifest and refuses a rerun that would keep results made with other ones
(:meth:`icm_cli.jobs.PropagateJob._check_settings`). The file commands keep
the same promise with the same pieces: before any work, OUT's manifests are
read (:func:`~icm_cli.runner.manifest.read_manifests`), the last run's
settings are compared with this run's
(:func:`~icm_cli.runner.manifest.settings_changes`), and when they differ
while some output is already there the run is refused with the difference
(exit 2), unless ``--overwrite`` recomputes everything. A run that goes
ahead appends its :class:`~icm_cli.runner.manifest.RunRecord` to
``OUT/manifest.jsonl`` (no per-file records: OUT stays a plain folder of
PNGs, and `icm status`/`icm review` remain propagate's).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterable, Sequence

from icm_cli.errors import OtherSettings  # noqa: F401 (re-exported)
from icm_cli.runner.manifest import MANIFEST_NAME, ManifestWriter, RunRecord, read_manifests, settings_changes


def refusal(output: Path, changes: list[str]) -> str:
    """The one line that refuses a run over results of other settings (as propagate words it)."""
    shown = "; ".join(changes[:4]) + (" ..." if len(changes) > 4 else "")
    return (f"{output} holds results made with other settings ({shown}); they would be kept as they are: "
            "pass --overwrite to recompute them, or write to another -o")


def input_folders(items: Iterable[str | Path]) -> str:
    """Where the inputs come from, as recorded: each argument's folder (a file's own folder), absolute,
    sorted, joined by ``, ``. So ``rough/a.png`` and ``rough/`` are the same inputs, ``rough_dil15/``
    other ones."""
    folders = set()
    for item in items:
        if str(item) == "-":  # paths read from stdin
            folders.add("-")
            continue
        path = Path(item)
        folder = path if path.is_dir() else path.parent
        folders.add(os.path.normpath(os.path.abspath(folder)))
    return ", ".join(sorted(folders))


def check_and_record(output: Path, settings: dict, *, command: Sequence[str], overwrite: bool,
                     any_done: Callable[[], bool], references: list[dict] | None = None) -> str:
    """Refuse (:class:`OtherSettings`) or record this run; returns its run id.

    Refused when OUT's last run had other settings and ``any_done()`` (an
    output of this run is already there) — unless ``overwrite``. Otherwise
    the run record is appended to ``OUT/manifest.jsonl``; raises
    :class:`icm_cli.io.OutputError` when it cannot be written.
    """
    from icm_cli import __version__

    previous = read_manifests(output).last_run
    if previous is not None and not overwrite:
        changes = settings_changes(previous.settings, settings)
        if changes and any_done():
            raise OtherSettings(refusal(output, changes))
    run_id = uuid.uuid4().hex[:12]
    writer = ManifestWriter(Path(output) / MANIFEST_NAME)
    try:
        writer.write(RunRecord(run=run_id, command=list(command), cwd=os.getcwd(), version=__version__,
                               settings=settings, references=list(references or [])))
    finally:
        writer.close()
    return run_id


#: The commands whose OUT holds a run record but no per-file records.
FILE_COMMANDS = ("trimap", "refine", "matte")


def file_command_only(state) -> str | None:
    """The file command (``trimap``, ``refine``, ``matte``) that made OUT when its manifests hold only such
    runs and no source record (`icm status` and `icm review` then have nothing to show); else None."""
    if state.latest or not state.runs:
        return None
    commands = {r.settings.get("command") for r in state.runs}
    if not commands <= set(FILE_COMMANDS):
        return None
    return state.runs[-1].settings.get("command")


def not_a_propagate_folder(output, command: str) -> str:
    """The line `icm status`/`icm review` give for the OUT of a file command."""
    return (f"{output}: made by icm {command}, which records its settings but not each file; give the -o folder "
            "of icm propagate")


__all__ = ["FILE_COMMANDS", "OtherSettings", "check_and_record", "file_command_only", "input_folders",
           "not_a_propagate_folder", "refusal"]
