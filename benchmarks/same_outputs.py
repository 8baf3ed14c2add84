"""Do two versions of icm write the same pixels? A check for refactors that must not change results.

    git worktree add /tmp/icm-old <commit>
    python benchmarks/same_outputs.py /tmp/icm-old [--ray]

Runs `icm propagate` of this checkout and of the other tree (each as
``python -m icm_cli`` with that tree first on PYTHONPATH) on the same
inputs, at default settings: the demo images, a few DAVIS frames of two
sizes (when ../shared/data is present), ``--video`` on 12 frames, the
images as two ``--shard`` runs, and with ``--ray`` the Ray engine. Prints,
per mode, how many PNG files were compared and how many differ. Files are
compared decoded (mode, size and pixels), not byte for byte: the PNG
encoder's settings change the bytes of a file, never what it shows.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def icm(tree: Path, args: list[str]) -> int:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-m", "icm_cli", *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE).returncode


def decoded(path: Path) -> tuple:
    with Image.open(path) as img:
        return img.mode, img.size, img.tobytes()


def pngs(folder: Path) -> dict[str, tuple]:
    return {p.relative_to(folder).as_posix(): decoded(p) for p in sorted(folder.rglob("*.png"))
            if not p.name.startswith(".")}


def compare(label: str, a: Path, b: Path) -> bool:
    left, right = pngs(a), pngs(b)
    differ = [k for k in left if left.get(k) != right.get(k)]
    only = sorted(set(left) ^ set(right))
    print(f"{label:28s} {len(left):4d} files, {len(differ)} differ, {len(only)} only on one side"
          + (f" (e.g. {(differ + only)[0]})" if differ or only else ""))
    return not differ and not only


def inputs(tmp: Path) -> tuple[Path, Path, Path, Path]:
    src = tmp / "src"
    src.mkdir()
    demo = ROOT / "samples" / "demo"
    for p in sorted((demo / "sources").glob("*.jpg")):
        os.symlink(p, src / p.name)
    ref, mask = demo / "reference.jpg", demo / "reference_mask.png"
    frames = tmp / "frames"
    frames.mkdir()
    davis = DATA / "davis2016-dev"
    if davis.is_dir():
        seq = sorted((davis / "JPEGImages" / "blackswan").glob("*.jpg"))
        for p in seq[1:5]:
            os.symlink(p, src / f"blackswan_{p.name}")
        for p in sorted((davis / "JPEGImages" / "cows").glob("*.jpg"))[1:3]:  # another scene, same size
            Image.open(p).resize((427, 240)).save(src / f"cows_small_{p.stem}.png")  # and another size
        for p in seq[:12]:
            os.symlink(p, frames / p.name)
        vref, vmask = seq[0], davis / "Annotations" / "blackswan" / "00000.png"
    else:
        for i, p in enumerate(sorted((demo / "sources").glob("*.jpg"))):
            Image.open(p).save(frames / f"{i:05d}.png")
        vref, vmask = ref, mask
    return src, (ref, mask), frames, (vref, vmask)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("other", type=Path, help="the other icm tree (a git worktree of another commit)")
    ap.add_argument("--ray", action="store_true", help="also compare the Ray engine (slow: ~1 min a run)")
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src, (ref, mask), frames, (vref, vmask) = inputs(tmp)
        base = ["propagate", "--ref", str(ref), "--mask", str(mask), str(src), "--quiet"]
        for name, tree in (("new", ROOT), ("old", args.other)):
            icm(tree, [*base, "-o", str(tmp / f"{name}_images")])
            for i in (1, 2):
                icm(tree, [*base, "-o", str(tmp / f"{name}_shards"), "--shard", f"{i}/2"])
            icm(tree, ["propagate", "--video", str(frames), "--ref", str(vref), "--mask", str(vmask), "--quiet",
                       "-o", str(tmp / f"{name}_video")])
            if args.ray:
                icm(tree, [*base, "-o", str(tmp / f"{name}_ray"), "--engine", "ray"])
        ok &= compare("images", tmp / "new_images", tmp / "old_images")
        ok &= compare("--shard 1/2 + 2/2", tmp / "new_shards", tmp / "old_shards")
        ok &= compare("--shard vs one run (new)", tmp / "new_shards", tmp / "new_images")
        ok &= compare("--video", tmp / "new_video", tmp / "old_video")
        if args.ray:
            ok &= compare("--engine ray", tmp / "new_ray", tmp / "old_ray")
            ok &= compare("--engine ray vs local (new)", tmp / "new_ray", tmp / "new_images")
    print("same pixels" if ok else "DIFFERENT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
