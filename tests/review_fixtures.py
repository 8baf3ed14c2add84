"""An OUT folder as `icm propagate` leaves it, written by the tests: sources, masks, heat maps, manifest lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

RUN = "run0001"


def iso(second: int) -> str:
    return f"2026-01-01T10:{second // 60:02d}:{second % 60:02d}.000+00:00"


def source_picture(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A coloured gradient with a bright disc (the object) and its mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([60 + 120 * xx / w, 90 + 80 * yy / h, 140 + 0 * xx], -1) + rng.normal(0, 8, (h, w, 3))
    cy, cx, r = h * (0.3 + 0.4 * rng.random()), w * (0.3 + 0.4 * rng.random()), min(h, w) * 0.25
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img[mask] = [230, 200, 40]
    return np.clip(img, 0, 255).astype(np.uint8), mask


def heat_picture(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    grey = img.mean(axis=2, keepdims=True).repeat(3, 2)
    heat = np.where(mask[..., None], [220, 40, 30], [30, 40, 160])
    return (0.5 * grey + 0.5 * heat).astype(np.uint8)


def run_record(out: Path, refs: list[tuple[Path, Path]], run: str = RUN, second: int = 0, extra=()) -> dict:
    return {"record": "run", "run": run, "time": iso(second),
            "command": ["icm", "propagate", *sum((["--ref", str(r), "--mask", str(m)] for r, m in refs), []),
                        *extra, "src/", "-o", str(out)],
            "cwd": str(out.parent), "version": "0.1.0", "settings": {"size": 384},
            "references": [{"image": str(r), "mask": str(m)} for r, m in refs]}


def write_result(out: Path, src_dir: Path, name: str, confidence, status: str = "done", second: int = 1,
                 run: str = RUN, size=(48, 64), seed: int = 0, error: str | None = None,
                 legacy: bool = False, jpeg: bool = True) -> dict:
    """Write one source (and, when done, its mask and heat map) and return its manifest record."""
    src_dir.mkdir(parents=True, exist_ok=True)
    src = src_dir / (name + (".jpg" if jpeg else ".png"))
    img, mask = source_picture(*size, seed=seed)
    if status == "failed":
        src.write_bytes(b"this is not an image")
    else:
        Image.fromarray(img).save(src)
    outputs = {}
    if status != "failed":
        for kind, array in (("masks", mask.astype(np.uint8) * 255), ("heatmaps", heat_picture(img, mask))):
            path = out / kind / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
            outputs[kind] = str(path)
    record = {"input": str(src), "stem": name, "status": status, "outputs": outputs,
              "error": error if status == "failed" else None, "timing": {}, "time": iso(second)}
    if not legacy:
        record = {"record": "source", "run": run, **record, "confidence": confidence,
                  "empty": None if status == "failed" else False,
                  "mask_area": None if status == "failed" else float(mask.mean())}
    return record


def write_manifest(path: Path, records: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")


def reference(tmp: Path) -> tuple[Path, Path]:
    img, mask = source_picture(48, 64, seed=99)
    ref, ref_mask = tmp / "ref.jpg", tmp / "ref_mask.png"
    Image.fromarray(img).save(ref)
    Image.fromarray(mask.astype(np.uint8) * 255).save(ref_mask)
    return ref, ref_mask


#: Names a page must survive: markup characters, quotes, non-ASCII, spaces.
ODD_NAMES = ['a<b>&"c\'', "ünïcødé 名前", "x & y", "<img src=x onerror=alert(1)>"]


def standard_out(tmp: Path) -> tuple[Path, dict[str, float | None]]:
    """OUT with one run: 6 done results of known confidence, one without, one failed, odd names among them."""
    out, src = tmp / "out", tmp / "src"
    ref, ref_mask = reference(tmp)
    confs = {"frame10": 0.91, "frame2": 0.35, ODD_NAMES[0]: 0.12, ODD_NAMES[1]: 0.77, ODD_NAMES[2]: 0.5,
             ODD_NAMES[3]: 0.64, "legacy": None}
    records = [run_record(out, [(ref, ref_mask)])]
    for i, (name, conf) in enumerate(confs.items()):
        records.append(write_result(out, src, name, conf, second=i + 1, seed=i))
    records.append(write_result(out, src, "broken", None, status="failed", second=30,
                                error=f"{src / 'broken.jpg'}: not an image PIL can read (unknown or corrupt format)"))
    write_manifest(out / "manifest.jsonl", records)
    return out, confs
