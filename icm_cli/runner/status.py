"""What a (possibly sharded) propagate run has done, failed or left: OUT's manifests merged.

:func:`read_status` reads every manifest in OUT (``manifest.jsonl`` and the
shards' ``manifest.I-of-N.jsonl``) with
:func:`icm_cli.runner.manifest.read_manifests`; for each input the latest
record wins. ``icm status`` prints it; library callers read it here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


@dataclass
class RunStatus:
    """OUT's merged manifests, restricted to SOURCES when they were given."""

    state: object                                           # ManifestState
    latest: dict = field(default_factory=dict)               # input key -> SourceRecord
    pending: list[str] = field(default_factory=list)         # SOURCES with no record

    def with_status(self, status: str) -> list:
        return [r for r in self.latest.values() if r.status == status]

    @property
    def counts(self) -> dict[str, int]:
        """done: results icm computed, in the latest run or (``done_earlier`` of them) in an earlier one whose
        outputs a later run kept; skipped: outputs that were there with no recorded run making them."""
        from icm_cli.runner.manifest import result_counts

        return {**result_counts(self.latest.values()), "pending": len(self.pending)}

    @property
    def totals(self) -> dict[str, int]:
        """:attr:`counts` without the breakdown: every input once."""
        return {k: v for k, v in self.counts.items() if k != "done_earlier"}

    @property
    def complete(self) -> bool:
        counts = self.counts
        return counts["failed"] == 0 and counts["pending"] == 0

    def least_confident(self, n: int) -> list:
        """The ``n`` results with the lowest confidence (those without one are not ranked)."""
        from icm_cli.runner.manifest import least_confident

        return least_confident(self.latest.values(), n)


def read_status(folder: Path, sources: Optional[list] = None) -> RunStatus:
    """Merge the manifests of ``folder``; with ``sources`` (paths), judge exactly those inputs.

    A video file among ``sources`` stands for its frames, as ``propagate --video`` records them
    (``clip.mp4#0``, ``clip.mp4#1``, ...; :func:`clip_frames`).
    """
    from icm_cli.runner.manifest import input_key, read_manifests

    state = read_manifests(folder)
    if sources is None:
        return RunStatus(state, dict(state.latest))
    status = RunStatus(state)
    for path in (frame for source in sources for frame in clip_frames(Path(source), state)):
        key = input_key(str(path))
        if key in state.latest:
            status.latest[key] = state.latest[key]
        else:
            status.pending.append(str(path))
    return status


def clip_frames(path: Path, state) -> list[Path]:
    """The inputs a ``--video`` run of ``path`` records: ``path#0`` ... for a video file (as many as its
    container counts; without PyAV, as many as the manifest records), ``[path]`` for anything else."""
    from icm_cli.io import InputError
    from icm_cli.runner.manifest import input_key
    from icm_cli.video import is_video_file, probe_frame_count

    if not is_video_file(path):
        return [path]
    try:
        count = probe_frame_count(path)
    except InputError:  # PyAV missing or the file unreadable now: the frames the run recorded
        prefix = input_key(str(path)) + "#"
        indices = [key[len(prefix):] for key in state.latest if key.startswith(prefix)]
        count = 1 + max((int(i) for i in indices if i.isdigit()), default=-1)
    return [Path(f"{path}#{index}") for index in range(count)] or [path]
