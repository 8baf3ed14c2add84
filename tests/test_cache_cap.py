"""The context cache's size cap: ICM_CACHE_MAX parsed with known answers, least recently used entries evicted
after a new one is written (never that one), entries touched when used, concurrent deletion survived."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from icm_cli import cache
from icm_cli.cli import app
from icm_cli.predict.context_store import ContextStore

MiB = 1 << 20


@pytest.mark.parametrize("text,size", [
    ("0", 0), ("1024", 1024), ("7B", 7), ("10k", 10240), ("500M", 500 * MiB), ("500MB", 500 * MiB),
    ("500MiB", 500 * MiB), ("2G", 2 << 30), ("1.5g", 3 << 29), (" 2 G ", 2 << 30), (".5K", 512), ("1T", 1 << 40),
])
def test_sizes_parse_to_known_byte_counts(text, size):
    assert cache.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "abc", "1X", "1.2.3", "5iB", "G", "1 GG"])
def test_what_is_not_a_size_is_refused(text):
    with pytest.raises(ValueError):
        cache.parse_size(text)


def test_the_limit_comes_from_the_environment(monkeypatch, capsys):
    monkeypatch.delenv("ICM_CACHE_MAX", raising=False)
    assert cache.cache_limit() == cache.DEFAULT_CACHE_MAX == 1 << 30
    monkeypatch.setenv("ICM_CACHE_MAX", "300M")
    assert cache.cache_limit() == 300 * MiB
    monkeypatch.setenv("ICM_CACHE_MAX", "0")
    assert cache.cache_limit() is None                      # 0: no cap
    monkeypatch.setattr(cache, "_warned", False)
    monkeypatch.setenv("ICM_CACHE_MAX", "lots")
    assert cache.cache_limit() == cache.DEFAULT_CACHE_MAX   # a bad value never stops a run ...
    assert cache.cache_limit() == cache.DEFAULT_CACHE_MAX
    err = capsys.readouterr().err
    assert err.count("ICM_CACHE_MAX=lots") == 1             # ... and is named once


def _entry(folder, name, size, age_s):
    """A fake cached context of ``size`` bytes last used ``age_s`` seconds ago."""
    path = folder / f"{name:0>32}.safetensors"
    path.write_bytes(b"x" * size)
    when = 1_700_000_000 - age_s
    os.utime(path, (when, when))
    return path


def test_least_recently_used_entries_go_first_until_the_rest_fits(tmp_path):
    old, mid, new = (_entry(tmp_path, n, 400, age) for n, age in (("a", 300), ("b", 200), ("c", 100)))
    lock = tmp_path / f"{'a':0>32}.lock"
    lock.write_bytes(b"")
    temp = tmp_path / ".in-progress.tmp"
    temp.write_bytes(b"y" * 5000)
    just_written = _entry(tmp_path, "d", 400, 0)
    removed = cache.evict(tmp_path, 900, keep=just_written)  # 1600 bytes of entries, 900 allowed
    assert removed == [old, mid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([new.name, just_written.name, lock.name, temp.name])
    assert cache.evict(tmp_path, None) == [] and cache.evict(tmp_path, 0) == []   # no cap: nothing goes


def test_the_entry_just_written_stays_even_alone_over_the_cap(tmp_path):
    other = _entry(tmp_path, "a", 10, 50)
    big = _entry(tmp_path, "b", 5000, 100)  # older by its time stamp, but it is the one just written
    assert cache.evict(tmp_path, 1000, keep=big) == [other]
    assert big.exists()


def test_an_entry_deleted_by_another_process_meanwhile_is_no_error(tmp_path, monkeypatch):
    a, b = _entry(tmp_path, "a", 600, 300), _entry(tmp_path, "b", 600, 200)
    keep = _entry(tmp_path, "c", 600, 0)
    real_unlink = type(a).unlink

    def raced(self, *args, **kwargs):
        if self == a:  # another process deletes it between our listing and our delete
            real_unlink(self)
        real_unlink(self, *args, **kwargs)  # so this one raises FileNotFoundError for a

    monkeypatch.setattr(type(a), "unlink", raced)
    assert cache.evict(tmp_path, 700, keep=keep) == [a, b]  # gone all the same; the next one goes too
    assert [p.name for p in tmp_path.iterdir()] == [keep.name]


def test_a_used_entry_is_touched_so_it_is_evicted_last(tmp_path):
    store = ContextStore(tmp_path, max_bytes=None)
    path = _entry(tmp_path, "a", 10, 1000)
    before = path.stat().st_mtime
    cache.touch(path)
    assert path.stat().st_mtime > before
    cache.touch(tmp_path / "gone.safetensors")  # a vanished entry: nothing to touch, no error
    assert store.max_bytes is None


def test_a_propagate_run_evicts_old_contexts_beyond_icm_cache_max(small_scene, tmp_path, monkeypatch):
    """Through the CLI: old (fake) contexts go once a new one is written; the new one stays though it alone
    is over the cap; a rerun that reuses it touches it."""
    root = tmp_path / "cache"
    contexts = root / "contexts"
    contexts.mkdir(parents=True)
    stale = [_entry(contexts, f"{i}", 4000, 1000 + i) for i in range(3)]
    monkeypatch.setenv("ICM_CACHE_DIR", str(root))
    monkeypatch.setenv("ICM_CACHE_MAX", "10K")
    args = ["propagate", "--ref", str(small_scene / "ref.png"), "--mask", str(small_scene / "ref_mask.png"),
            str(small_scene / "src"), "-o", str(tmp_path / "o"), "--quiet", "--no-edges", "--head-steps", "5",
            "--size", "96"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    left = list(contexts.glob("*.safetensors"))
    assert len(left) == 1 and left[0] not in stale and left[0].stat().st_size > 10 << 10
    used = left[0].stat().st_mtime_ns
    os.utime(left[0], (1_600_000_000, 1_600_000_000))
    res = CliRunner().invoke(app, args + ["--overwrite"])
    assert res.exit_code == 0, res.output
    assert left[0].stat().st_mtime_ns >= used  # reused, and marked as used
