"""One atomic writer, one temporary-name scheme, one cleaner (issue 27): every writer of icm goes through
:mod:`icm_cli.atomic`, leaves nothing behind, keeps its file mode, and the leftovers of every older
scheme are cleaned."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from icm_cli import atomic, cache, io
from icm_cli.cli import app

#: Today's temporary name, spelled out: hidden, who writes it, a random part, ".tmp".
TEMP_NAME = re.compile(rf"^\.icm-{atomic.HOST}-{os.getpid()}-[A-Za-z0-9_]+\.tmp$")


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).rglob(".*"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def test_the_temporary_name_known_answers(tmp_path):
    assert atomic.temp_tag(pid=123, host="abcd1234") == "icm-abcd1234-123"
    assert atomic.temp_tag() == f"icm-{atomic.HOST}-{os.getpid()}"
    assert re.fullmatch(r"[0-9a-f]{8}", atomic.HOST)  # no dot or dash: the name parses back
    fd, name = atomic.temp_file(tmp_path)
    os.close(fd)
    assert Path(name).parent == tmp_path and TEMP_NAME.match(Path(name).name), name
    folder = atomic.temp_folder(tmp_path)
    assert folder.is_dir() and TEMP_NAME.match(folder.name), folder.name
    assert cache.temp_sibling(tmp_path / "x.safetensors").name.startswith(f".{atomic.temp_tag()}-")
    # this version's name and every earlier one are recognised; the user's own files are not
    for name in (".icm-abcd1234-123-x1y2z3.tmp", ".w.png.icm-abcd1234-123.x1y2z3.tmp",
                 ".ctx.safetensors.4242-0123abcd.tmp", ".ctx.safetensors.4242-0123abcd.tmp.discard",
                 ".a.jpg.k2_3abcd.tmp", ".00007.4242.tmp.npz", ".plan.4242.json", ".checkpoint.safetensors.tmp"):
        assert atomic.is_temp_name(name), name
    for name in ("a.png", ".notes.tmp", ".hidden", "icm-abcd1234-123-x.tmp", ".plan.json", ".a.jpg.short.tmp"):
        assert not atomic.is_temp_name(name), name


def test_atomic_write_bytes_and_text_mode_and_failure(tmp_path):
    target = tmp_path / "t.bin"
    atomic.atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01" and _mode(target) == atomic.FILE_MODE
    atomic.atomic_write(target, "caf\u00e9\n", mode=0o600)
    assert target.read_bytes() == "caf\u00e9\n".encode("utf-8") and _mode(target) == 0o600
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_file(target) as fh:
            fh.write(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == "caf\u00e9\n".encode("utf-8")  # the old content stands
    atomic.atomic_write(tmp_path / "synced", b"x", fsync=True)
    assert _hidden(tmp_path) == []
    with pytest.raises(OSError):
        atomic.atomic_write(tmp_path / "missing" / "t", b"x")  # the folder is the caller's to make


def test_every_writer_leaves_no_temporary_file_and_keeps_its_mode(tmp_path):
    import torch

    from icm_cli.predict.decoder import DecoderConfig, MaskDecoder, save_decoder
    from icm_cli.review.thumbs import _save_jpeg
    from icm_cli.training.episodes import save_plan
    from icm_cli.training.fit import save_checkpoint

    io.write_image_atomic(tmp_path / "out" / "a.png", np.full((4, 5), 7, np.uint8))
    io.write_text_atomic(tmp_path / "out" / "notes.txt", "hello")
    cache.write_atomic(tmp_path / "cache.bin", b"entry")
    _save_jpeg(tmp_path / "thumb.jpg", np.zeros((8, 8, 3), np.uint8))
    model = MaskDecoder(DecoderConfig(width8=8, width4=8, width2=4))
    save_decoder(model, tmp_path / "w" / "decoder.safetensors")
    save_plan(tmp_path / "train", [], {"seed": 1})
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path / "train" / "checkpoint.safetensors", model, opt, 3, np.random.default_rng(0), {})
    io.ensure_output_folder(tmp_path / "probe")
    from icm_cli.commands.train import weights_target_problem
    assert weights_target_problem(tmp_path / "w2" / "x.safetensors", overwrite=False, resume=False) is None

    assert _hidden(tmp_path) == []
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).tolist() == [[7] * 5] * 4
    assert json.loads((tmp_path / "train" / "plan.json").read_text()) == {"meta": {"seed": 1}, "episodes": []}
    for path in ("out/a.png", "out/notes.txt", "cache.bin", "thumb.jpg", "w/decoder.safetensors", "train/plan.json"):
        assert _mode(tmp_path / path) == atomic.FILE_MODE, path  # 0644 under umask 022, as before
    assert _mode(tmp_path / "train" / "checkpoint.safetensors") == 0o600  # private, as safetensors made it


def test_an_episode_is_written_atomically(tmp_path):
    """The training episodes' writer (in a worker) through atomic_file: the .npz reads back, nothing else is left."""
    from icm_cli.atomic import atomic_file

    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.uint8)}
    with atomic_file(tmp_path / "00001.npz") as fh:
        np.savez(fh, **arrays)
    with np.load(tmp_path / "00001.npz") as back:
        assert {k: back[k].tolist() for k in back.files} == {k: v.tolist() for k, v in arrays.items()}
    assert _hidden(tmp_path) == []


def test_leftovers_of_every_scheme_are_cleaned(tmp_path):
    dead = _dead_pid()
    old_schemes = [".ctx.safetensors.4242-0123abcd.tmp", ".ctx.safetensors.4242-0123abcd.tmp.discard",
                   ".a.jpg.k2_3abcd.tmp", ".decoder.safetensors.zq_9x8y7.tmp", ".00007.4242.tmp.npz",
                   ".plan.4242.json", ".checkpoint.safetensors.tmp", ".w.png.icm-abcd1234-4242.x1y2z3.tmp"]
    for name in old_schemes:
        (tmp_path / name).write_bytes(b"partial")
        os.utime(tmp_path / name, (0, 0))  # untouched for decades
    fresh_old = tmp_path / ".a.jpg.k2_3abcd.tmp.copy"  # not a temp name at all
    fresh_old.write_bytes(b"mine")
    recent_old = tmp_path / ".plan.5151.json"  # an older version may be writing it now: kept until stale
    recent_old.write_bytes(b"{")
    dead_now = tmp_path / f".{atomic.temp_tag(dead)}-abc.tmp"  # this scheme, its writer gone: removed at once
    live_now = tmp_path / f".{atomic.temp_tag()}-abd.tmp"
    for p in (dead_now, live_now):
        p.write_bytes(b"partial")
    os.mkdir(tmp_path / ".icm-abcd1234-1-dir.tmp")  # folders are not touched
    os.utime(tmp_path / ".icm-abcd1234-1-dir.tmp", (0, 0))
    assert io.remove_stale_temp_files(tmp_path) == len(old_schemes) + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [fresh_old.name, recent_old.name, live_now.name, ".icm-abcd1234-1-dir.tmp"])


def test_a_rerun_of_a_command_cleans_an_older_versions_leftover(tmp_path):
    """Through the CLI: `icm trimap` into a folder an older version's killed run left a temp file in."""
    masks = tmp_path / "masks"
    masks.mkdir()
    m = np.zeros((20, 24), np.uint8)
    m[5:15, 6:18] = 255
    Image.fromarray(m).save(masks / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    leftover = out / ".a.png.q1w2e3r4.tmp"  # the mkstemp name earlier versions gave thumbnails and weights
    leftover.write_bytes(b"partial")
    os.utime(leftover, (0, 0))
    res = CliRunner().invoke(app, ["trimap", str(masks), "-o", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert not leftover.exists() and (out / "a.png").is_file()
    assert _hidden(out) == []


def test_the_cache_root_is_one_function_and_expands_home(tmp_path, monkeypatch):
    from icm_cli.training.episodes import Recipe
    from icm_cli.training.run import default_cache

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ICM_CACHE_DIR", "~/icm-cache")
    assert cache.cache_root() == tmp_path / "home" / "icm-cache"
    data = tmp_path / "data"
    data.mkdir()
    trained = default_cache(data, 0, Recipe())
    assert trained.parent == tmp_path / "home" / "icm-cache" / "train"  # not a literal "~" folder
    monkeypatch.delenv("ICM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "~/xdg")
    assert default_cache(data, 0, Recipe()).parent == tmp_path / "home" / "xdg" / "icm" / "train"


def test_the_atomic_writer_is_a_bottom_layer():
    """atomic.py imports nothing of icm (and no numpy or torch): every layer may write through it."""
    import ast

    tree = ast.parse(Path(atomic.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not [m for m in imported if m.split(".")[0] in ("icm_cli", "numpy", "torch", "PIL", "cv2")], imported
