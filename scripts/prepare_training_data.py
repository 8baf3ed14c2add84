"""Lay the shipped decoder's training data out as `icm train` reads it (DATA/<group>/images, masks).

    ../shared/training/get_training_data.sh /work/trainingdata davis=GITDIR horses=GITDIR ccp=GITDIR
    python scripts/prepare_training_data.py /work/trainingdata --coco COCO_GITDIR -o /work/icm-train
    icm train /work/icm-train -o icm_cli/weights/decoder-lite0.safetensors

Groups: one per DAVIS-2016 *train* sequence (frames in order, ``"sequence": true``), Clothing
Co-Parsing (one group of people photos), Weizmann horses (one group), and one per COCO category
of lizhogn/tiny_coco_dataset (fetched with the search tool's fetch; its mask is the union of the
category's non-crowd polygons in each image). Pools and their sampling weights go to
DATA/train.json. Four DAVIS train sequences are held out for validation, as before. Images are
hard-linked where the file system allows (copied otherwise). Needs numpy, pillow, opencv.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# DAVIS-2016 train sequences whose object is a person (the rest: animals, vehicles, objects).
DAVIS_PERSON = {
    "bmx-bumps", "breakdance-flare", "dance-jump", "hike", "hockey", "horsejump-low", "kite-walk", "lucia",
    "motocross-bumps", "motorbike", "paragliding", "rollerblade", "scooter-gray", "stroller", "surf", "swing",
    "tennis",
}
# DAVIS-2016 *train* sequences kept for validation (never trained on); the dev set's sequences are elsewhere.
DAVIS_TRAIN_VALIDATION = {"car-turn", "mallard-fly", "tennis", "rollerblade"}
POOL_WEIGHTS = {"video-objects": 0.25, "video-people": 0.15, "photos-people": 0.15, "photos-horses": 0.1,
                "coco": 0.2}
DESCRIPTION = ("DAVIS-2016 train (CC BY-NC 4.0), Clothing Co-Parsing, Weizmann horses, "
               "tiny COCO (annotations CC BY 4.0, images under their Flickr licences)")


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_group(out: Path, name: str, meta: dict) -> Path:
    folder = out / name
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    (folder / "group.json").write_text(json.dumps(meta) + "\n")
    return folder


def flat_sets(src: Path, out: Path) -> None:
    rows = list(csv.DictReader(open(src / "manifest.tsv"), delimiter="\t"))
    by_set = defaultdict(list)
    for r in rows:
        by_set[r["set"]].append(r)
    for r in by_set.get("davis16_train", []):
        stem = Path(r["image"]).stem
        seq, frame = stem.rsplit("_", 1)
        meta = {"sequence": True, "pool": "video-people" if seq in DAVIS_PERSON else "video-objects"}
        if seq in DAVIS_TRAIN_VALIDATION:
            meta["split"] = "val"
        folder = write_group(out, f"davis-{seq}", meta)
        link(Path(r["image"]), folder / "images" / f"{frame}.jpg")
        link(Path(r["mask"]), folder / "masks" / f"{frame}.png")
    for set_name, group, pool in (("ccp_person", "ccp-person", "photos-people"),
                                  ("weizmann_horse", "weizmann-horse", "photos-horses")):
        folder = write_group(out, group, {"pool": pool})
        for r in by_set.get(set_name, []):
            stem = Path(r["image"]).stem
            link(Path(r["image"]), folder / "images" / f"{stem}.jpg")
            link(Path(r["mask"]), folder / "masks" / f"{stem}.png")


def git_show(gitdir: str, path: str) -> bytes:
    return subprocess.run(["git", "--git-dir", gitdir, "show", f"HEAD:{path}"], check=True,
                          stdout=subprocess.PIPE).stdout


def coco(gitdir: str, out: Path) -> None:
    for split in ("train2017", "val2017"):
        ann = json.loads(git_show(gitdir, f"tiny_coco/annotations/instances_{split}.json"))
        cats = {c["id"]: c["name"] for c in ann["categories"]}
        images = {im["id"]: im for im in ann["images"]}
        masks: dict[tuple[int, int], np.ndarray] = {}
        for a in ann["annotations"]:
            if a.get("iscrowd") or not isinstance(a.get("segmentation"), list):
                continue
            im = images[a["image_id"]]
            key = (a["image_id"], a["category_id"])
            m = masks.setdefault(key, np.zeros((im["height"], im["width"]), np.uint8))
            for poly in a["segmentation"]:
                pts = np.asarray(poly, np.float64).reshape(-1, 2)
                if len(pts) >= 3:
                    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
        for (image_id, cat_id), m in sorted(masks.items()):
            im = images[image_id]
            name = cats[cat_id].replace(" ", "-")
            folder = write_group(out, f"coco-{name}", {"pool": "coco"})
            stem = Path(im["file_name"]).stem
            target = folder / "images" / im["file_name"]
            if not target.exists():
                Image.open(io.BytesIO(git_show(gitdir, f"tiny_coco/{split}/{im['file_name']}"))).convert("RGB") \
                    .save(target, quality=95)
            Image.fromarray(m * 255).save(folder / "masks" / f"{stem}.png")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("flat", type=Path, help="OUT of ../shared/training/get_training_data.sh")
    ap.add_argument("--coco", metavar="GITDIR", help="git directory of lizhogn/tiny_coco_dataset (fetch)")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    flat_sets(args.flat, args.output)
    if args.coco:
        coco(args.coco, args.output)
    (args.output / "train.json").write_text(json.dumps({"description": DESCRIPTION, "pool_weights": POOL_WEIGHTS},
                                                       indent=1) + "\n")
    groups = sorted(p.name for p in args.output.iterdir() if p.is_dir())
    print(f"{args.output}: {len(groups)} groups, "
          f"{sum(len(list((args.output / g / 'images').iterdir())) for g in groups)} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
