"""Names of output kinds as users type them: one vocabulary for ``--save``, ``--save-video`` and ``eval --kind``.

``--save`` names PNG folders (``masks``, ``trimaps``, ``heatmaps``, ``alpha``,
``cutout``), ``--save-video`` names videos (``mask``, ``matte``, ``cutout``,
``overlay``) and ``icm eval --kind`` what is scored (``mask`` or ``alpha``).
People mix them, so each takes the singular, the plural and ``matte`` for
``alpha`` (and back); outputs, manifests, scores and help keep the canonical
names. A name that is none of them gets one line with the closest match.
"""

from __future__ import annotations

import difflib
from typing import Sequence

from icm_cli.errors import SettingError

#: Every spelling -> the PNG kind it means (``--save``).
_PNG_SPELLINGS = {
    "masks": "masks", "mask": "masks",
    "trimaps": "trimaps", "trimap": "trimaps",
    "heatmaps": "heatmaps", "heatmap": "heatmaps",
    "alpha": "alpha", "alphas": "alpha", "matte": "alpha", "mattes": "alpha",
    "cutout": "cutout", "cutouts": "cutout",
}

#: Every spelling -> the video kind it means (``--save-video``).
_VIDEO_SPELLINGS = {
    "mask": "mask", "masks": "mask",
    "matte": "matte", "mattes": "matte", "alpha": "matte", "alphas": "matte",
    "cutout": "cutout", "cutouts": "cutout",
    "overlay": "overlay", "overlays": "overlay",
}


def _parse(text: str, option: str, spellings: dict[str, str], canonical: Sequence[str],
           elsewhere: dict[str, str], other_option: str) -> tuple[str, ...]:
    names = [k.strip().lower() for k in text.split(",") if k.strip()]
    if not names:
        raise SettingError(f"{option} takes a comma-separated list of {', '.join(canonical)}; got nothing")
    kinds = []
    for name in names:
        kind = spellings.get(name)
        if kind is None:
            if name in elsewhere:  # e.g. --save overlay: a video-only kind
                hint = f"{name} is a {other_option} kind"
            else:
                close = difflib.get_close_matches(name, list(spellings), n=1, cutoff=0.6)
                hint = f"did you mean {spellings[close[0]]}?" if close else ""
            raise SettingError(f"{option} takes a comma-separated list of {', '.join(canonical)}; "
                               f"{name!r} is none of them" + (f": {hint}" if hint else ""))
        kinds.append(kind)
    return tuple(dict.fromkeys(kinds))


def parse_png_kinds(text: str, canonical: Sequence[str]) -> tuple[str, ...]:
    """``--save`` text -> canonical PNG kinds (``"mask,matte"`` -> ``("masks", "alpha")``); SettingError if unknown."""
    return _parse(text, "--save", _PNG_SPELLINGS, canonical, _VIDEO_SPELLINGS, "--save-video")


#: Every spelling -> what ``icm eval --kind`` scores.
_EVAL_SPELLINGS = {
    "mask": "mask", "masks": "mask",
    "alpha": "alpha", "alphas": "alpha", "matte": "alpha", "mattes": "alpha",
}


def parse_eval_kind(text: str) -> str:
    """``eval --kind`` / ``evaluate(kind=...)`` -> ``"mask"`` or ``"alpha"`` (``"masks"``, ``"matte"`` ... too).

    SettingError (option ``--kind``) for anything else, with the closest name."""
    name = str(text).strip().lower()
    kind = _EVAL_SPELLINGS.get(name)
    if kind is None:
        close = difflib.get_close_matches(name, list(_EVAL_SPELLINGS), n=1, cutoff=0.6)
        hint = f": did you mean {_EVAL_SPELLINGS[close[0]]}?" if close else ""
        raise SettingError(f"kind {text!r} is not known; choose mask or alpha{hint}", option="--kind")
    return kind


def parse_video_kinds(text: str, canonical: Sequence[str]) -> tuple[str, ...]:
    """``--save-video`` text -> canonical video kinds (``"masks,alpha"`` -> ``("mask", "matte")``)."""
    return _parse(text, "--save-video", _VIDEO_SPELLINGS, canonical, _PNG_SPELLINGS, "--save")
