"""Sources whose result is the user's own mask: a reference image (or clip frame) that is also a source.

The user drew that mask on the image as it is displayed; a prediction could
only be worse, so the runner writes it as the result, thresholded as every
mask is read (0/255 pixel for pixel), with confidence 1, and records
``"from_reference": true``. In a ``--video`` run the next frame starts from
it, as from any written mask.

A reference is matched to a source by the file it names (the same file
reached by another path counts too), and ``clip.mp4@N`` (a time resolved to
its frame) to frame N of ``--video clip.mp4``. When several ``--ref`` name
the same image the last one's mask wins: a correction is given after the
mask it corrects.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from icm_cli import io
from icm_cli.references import Reference


def _file_id(path: str | os.PathLike) -> tuple[int, int] | None:
    """What makes two paths the same file (device and inode); None when it cannot be told."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


class UserMasks:
    """The references that are also sources of this run, found by source.

    ``clip``: the ``--video`` sequence when it is a video file, whose frames
    are sources named by index (``sequence.frame_source(N)``); frame
    references of another clip, or of no ``--video`` run, match nothing.
    """

    def __init__(self, references: Iterable[Reference], clip=None) -> None:
        from icm_cli.video import is_same_file, source_file

        self._files: dict[tuple[int, int], Reference] = {}
        self._frames: dict[str, Reference] = {}   # a clip frame's source path -> its reference
        for ref in references:  # in order: a later --ref of the same image replaces an earlier one
            if not ref.image_path:
                continue
            if ref.frame is not None:
                if clip is not None and is_same_file(source_file(ref.image_path), clip.path):
                    self._frames[str(clip.frame_source(ref.frame).path)] = ref
                continue
            key = _file_id(ref.image_path)
            if key is not None:
                self._files[key] = ref

    def __bool__(self) -> bool:
        return bool(self._files or self._frames)

    @property
    def frames(self) -> list[str]:
        """The source paths of the clip's frames that are references."""
        return list(self._frames)

    def reference_for(self, source) -> Reference | None:
        """The reference a :class:`~icm_cli.sources.Source` is, or None."""
        if self._frames:
            found = self._frames.get(str(source.path))
            if found is not None:
                return found
        if self._files:
            key = _file_id(source.path)
            if key is not None:
                return self._files.get(key)
        return None

    def mask_for(self, source, image: np.ndarray) -> np.ndarray | None:
        """The user's mask for ``source`` (``[H, W]`` bool, checked against its decoded ``image``), or
        None when it is no reference. Raises :class:`io.InputError` when the sizes differ (the file
        changed since the references were read: the mask no longer fits the image as displayed)."""
        ref = self.reference_for(source)
        if ref is None:
            return None
        mask = io.binary_mask(ref.mask)
        if mask.shape != image.shape[:2]:
            raise io.InputError(
                f"{source.path}: it is a reference, but its mask {ref.mask_path} is {mask.shape[1]}x{mask.shape[0]} "
                f"and the image, as displayed, is {image.shape[1]}x{image.shape[0]} (did the file change during "
                "the run?); rerun to read both again")
        return mask

    def count(self, sources: Iterable) -> int:
        """How many of ``sources`` are references."""
        from icm_cli.sources import Source

        return sum(1 for s in sources if isinstance(s, Source) and self.reference_for(s) is not None)


def user_result(mask: np.ndarray):
    """The :class:`~icm_cli.predictor.Result` of a source whose mask the user drew: that mask, its
    probability 0/1 (the heat map shows it), confidence 1."""
    from icm_cli.predictor import Result

    return Result(probability=mask.astype(np.float32), mask=mask, confidence=1.0)


__all__ = ["UserMasks", "user_result"]
