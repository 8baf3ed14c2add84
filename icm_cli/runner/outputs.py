"""Where a source's outputs go and what they hold: ``root/<kind>/<stem>.png`` for each kind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from icm_cli import io, render
from icm_cli.config import OUTPUT_KINDS, OutputConfig


def output_folder(root: Path, kind: str) -> Path:
    """``root/<kind>``: the folder one kind of PNG output (``masks``, ``alpha``, ...) is written to.
    Every module that finds a run's outputs asks here (or :meth:`OutputPlan.paths`)."""
    return Path(root) / kind


def output_path(root: Path, kind: str, stem: str) -> Path:
    """``root/<kind>/<stem>.png``: one source's output of one kind."""
    return output_folder(root, kind) / f"{stem}.png"


#: The PNG kind ``icm eval --kind`` scores in a propagate output folder.
_SCORED_KIND = {"mask": "masks", "alpha": "alpha"}


def scored_folder_name(kind: str) -> str:
    """The name of the folder ``icm eval --kind KIND`` scores in a propagate output: ``masks`` for
    ``mask``, ``alpha`` for ``alpha``."""
    return output_folder(Path(), _SCORED_KIND[kind]).name


def matte_trimap(trimap: np.ndarray) -> np.ndarray:
    """A 0/128/255 uint8 trimap as a matte function takes it: ``[H, W]`` float32 0, ~0.5, 1."""
    return trimap.astype(np.float32) / 255.0


@dataclass(frozen=True)
class OutputPlan:
    """The output folder of a propagate run and what is written per source."""

    root: Path
    config: OutputConfig = OutputConfig()
    overwrite: bool = False

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.config.kinds

    def paths(self, stem: str) -> dict[str, Path]:
        return {kind: output_path(self.root, kind, stem) for kind in self.kinds}

    def done(self, stem: str) -> bool:
        """Every output of ``stem`` exists (and ``--overwrite`` was not given)."""
        return not self.overwrite and all(p.exists() for p in self.paths(stem).values())

    @property
    def written_folders(self) -> list[Path]:
        """Every folder this kind of run writes into: never read as sources."""
        return [output_folder(self.root, kind) for kind in OUTPUT_KINDS]

    def remove_stale_temp_files(self) -> int:
        """Delete temporary files killed runs left in the output folders (:func:`io.remove_stale_temp_files`)."""
        folders = {self.root, *(p.parent for p in self.root.glob("*/**/") if p.is_dir())}
        folders.update(output_folder(self.root, k) for k in self.kinds)
        return sum(io.remove_stale_temp_files(folder) for folder in folders)

    def matte_trimap(self, result) -> np.ndarray:
        """The trimap :meth:`render` hands the matte function for ``result`` (see :func:`matte_trimap`)."""
        return matte_trimap(result.trimap(self.config.kernel))

    def render(self, image: np.ndarray, result, matte: Callable | None = None) -> dict[str, np.ndarray]:
        """All requested outputs of one source as uint8 arrays at its own size.

        ``result`` is a :class:`~icm_cli.predictor.Result`; ``matte(image,
        trimap) -> alpha`` is needed for the ``alpha`` and ``cutout`` kinds.
        """
        kinds = self.kinds
        out: dict[str, np.ndarray] = {}
        if "masks" in kinds:
            out["masks"] = result.mask.astype(np.uint8) * 255
        trimap = None
        if any(k in kinds for k in ("trimaps", "alpha", "cutout")):
            trimap = result.trimap(self.config.kernel)
            if "trimaps" in kinds:
                out["trimaps"] = trimap
        if "heatmaps" in kinds:
            out["heatmaps"] = render.overlay(image, result.probability)
        if self.config.needs_matte:
            if matte is None:
                from icm_cli.matting import solve_alpha as matte
            alpha = matte(image, matte_trimap(trimap))
            from icm_cli.matting import alpha_to_u8, cutout_rgba
            if "alpha" in kinds:
                out["alpha"] = alpha_to_u8(alpha)
            if "cutout" in kinds:
                out["cutout"] = cutout_rgba(image, alpha)
        return out
