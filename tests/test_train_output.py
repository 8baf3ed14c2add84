"""`icm train`'s weights file: refused before training when it exists (unless --overwrite or --resume) or cannot
be written, written 0644, kept whole when a run is stopped; Ctrl-C names --resume; a mask of another size than
its image is left out with a warning naming it. Tiny data (a few episodes, two steps) keeps these fast."""

from __future__ import annotations

import os
import shutil
import stat
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.training import run as train_run
from tests.conftest import save_png, textured_scene
from tests.test_training import TINY, write_layout

runner = CliRunner()


def _tiny(groups, shares, recipe, seed, real=train_run.plan_episodes):
    """Plan a handful of episodes instead of the full recipe (the command has no option for it)."""
    return real(groups, shares, TINY, seed)


def _train(data, out, cache, *extra):
    return runner.invoke(app, ["train", str(data), "-o", str(out), "--steps", "2", "--workers", "1",
                               "--cache", str(cache), "--val-share", "0", *extra])


def _one_line(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """DATA with a photo whose mask has another size, one finished tiny run (its output and cache)."""
    root = tmp_path_factory.mktemp("train")
    data = write_layout(root / "data", photos=2, frames=0)
    img, _ = textured_scene(50, 60, (10, 10, 20, 20), seed=5)
    save_png(data / "things" / "images" / "odd.png", img)
    save_png(data / "things" / "masks" / "odd.png", np.zeros((30, 40), np.uint8))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_run, "plan_episodes", _tiny)
        res = _train(data, root / "first.safetensors", root / "cache")
    assert res.exit_code == 0, res.output
    return data, root / "cache", res.output


@pytest.fixture
def cache(trained, tmp_path, monkeypatch):
    """A copy of the finished run's cache (episodes built, a finished checkpoint): each run here is ~1 s."""
    monkeypatch.setattr(train_run, "plan_episodes", _tiny)
    shutil.copytree(trained[1], tmp_path / "cache")
    return tmp_path / "cache"


def test_a_mask_of_another_size_is_left_out_with_a_warning_naming_it(trained):
    data, _, output = trained
    line = _one_line(output)
    assert f"{data / 'things' / 'masks' / 'odd.png'}: mask is 40x30 but" in line and "60x50; left out" in line
    assert "broadcast" not in line


def test_weights_are_0644_and_an_existing_file_is_refused_unless_overwrite_or_resume(trained, cache, tmp_path):
    data = trained[0]
    out = tmp_path / "w" / "mine.safetensors"
    res = _train(data, out, cache)
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()  # 0644 under the usual umask, as every output
    before = (out.stat().st_mtime_ns, out.read_bytes())

    res = _train(data, out, cache)  # the same command again: refused before any work
    assert res.exit_code == 2, res.output
    assert "exists" in res.output and "--overwrite" in res.output and "--resume" in res.output
    assert "groups" not in res.output  # refused before DATA is read
    assert (out.stat().st_mtime_ns, out.read_bytes()) == before

    res = _train(data, out, cache, "--resume")  # continues (here: from the finished checkpoint) and writes
    assert res.exit_code == 0, res.output
    res = _train(data, out, cache, "--overwrite", "--lr", "0.01")
    assert res.exit_code == 0, res.output
    assert out.read_bytes() != before[1]
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temporary left beside it


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_ctrl_c_names_resume_and_keeps_the_existing_weights(trained, cache, tmp_path, monkeypatch):
    data = trained[0]
    out = tmp_path / "mine.safetensors"
    out.write_bytes(b"earlier weights")
    from icm_cli.training import fit as fit_module

    real_fit = fit_module.fit

    def stopped_at_step_one(*args, **kwargs):
        report = kwargs["on_step"]

        def on_step(step, loss):
            report(step, loss)
            raise KeyboardInterrupt

        return real_fit(*args, **{**kwargs, "on_step": on_step})

    monkeypatch.setattr(fit_module, "fit", stopped_at_step_one)
    res = _train(data, out, cache, "--overwrite")
    assert res.exit_code == 130, res.output
    line = _one_line(res.output)
    assert "interrupted: stopped at step 1 of 2" in line and "--resume" in line, res.output
    assert "rerun the same command to finish the rest" not in line
    assert out.read_bytes() == b"earlier weights"  # never half-replaced


@pytest.mark.parametrize("where", ["a file as its folder", "an unwritable folder"])
def test_an_output_that_cannot_be_written_is_refused_before_training(tmp_path, where):
    data = write_layout(tmp_path / "data", photos=2, frames=0)
    if where == "a file as its folder":
        (tmp_path / "afile").write_text("notes")
        out = tmp_path / "afile" / "w.safetensors"
        expected = f"{tmp_path / 'afile'}: is a file, not a folder"
    else:
        if os.geteuid() == 0 or sys.platform == "win32":
            pytest.skip("root writes anywhere; permissions cannot refuse it")
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = locked / "w.safetensors"
        expected = f"{locked}: cannot write the weights file there"
    res = _train(data, out, tmp_path / "cache")
    assert res.exit_code == 2, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert expected in _one_line(res.output) and len(lines) <= 2, res.output
    assert not (tmp_path / "cache").exists()  # nothing was built: refused before the layout is read
    assert "unexpected" not in res.output.lower()


def test_an_unwritable_file_system_is_refused_before_training(tmp_path):
    """Also as root: /proc takes no new files."""
    data = write_layout(tmp_path / "data", photos=2, frames=0)
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc here")
    res = _train(data, "/proc/icm-test.safetensors", tmp_path / "cache")
    assert res.exit_code == 2, res.output
    assert "/proc: cannot write the weights file there" in _one_line(res.output)
    assert not (tmp_path / "cache").exists()


def test_weights_that_cannot_be_written_after_training_say_where_the_state_is_kept(trained, cache, tmp_path,
                                                                                  monkeypatch):
    """A disk that fills up during training: exit 1, one line naming FILE and the checkpoint, no traceback."""
    import errno

    from icm_cli.predict import decoder

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(decoder, "save_decoder", full_disk)
    out = tmp_path / "mine.safetensors"
    res = _train(trained[0], out, cache)
    assert res.exit_code == 1, res.output
    line = _one_line(res.output)
    assert f"{out}: cannot write the weights (No space left on device)" in line
    assert "checkpoint.safetensors" in line and "--resume" in line and "unexpected" not in line.lower()
    assert not out.exists()
