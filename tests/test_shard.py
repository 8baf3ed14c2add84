"""`--shard I/N`: a partition every node computes alike, and shards that add up to one run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.shard import Shard, parse_shard, select, select_groups, shard_of
from icm_cli.sources import find_sources
from tests.conftest import save_png, source_records, textured_scene

runner = CliRunner()
FAST = ["--head-steps", "20", "--size", "128", "--quiet"]

keys = st.lists(st.text(min_size=1, max_size=30), min_size=0, max_size=60, unique=True)


@settings(max_examples=150, deadline=None)
@given(keys=keys, count=st.integers(1, 12))
def test_shards_cover_every_source_exactly_once_and_are_stable(keys, count):
    shards = [list(select(keys, Shard(i, count))) for i in range(1, count + 1)]
    assert sorted(k for part in shards for k in part) == sorted(keys)       # union = all, no repeats
    assert sum(len(p) for p in shards) == len(set().union(*map(set, shards)))  # pairwise disjoint
    assert shards == [list(select(keys, Shard(i, count))) for i in range(1, count + 1)]  # stable
    for part in shards:  # each shard keeps the order of the full list
        assert part == [k for k in keys if k in set(part)]


@settings(max_examples=100, deadline=None)
@given(items=st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 50)), max_size=60),
       count=st.integers(1, 6))
def test_group_partition_never_splits_a_sequence(items, count):
    owner = {}
    for i in range(1, count + 1):
        for group, _ in select_groups(items, Shard(i, count), group=lambda item: item[0]):
            assert owner.setdefault(group, i) == i
    assert set(owner) == {g for g, _ in items}


def test_partition_is_the_same_in_other_processes_whatever_their_hash_seed():
    names = [f"shoot{i // 10}/frame_{i:04d}.jpg" for i in range(200)] + ["ünïcode/ß.png"]
    here = [shard_of(n, 7) for n in names]
    code = ("import json, sys; from icm_cli.shard import shard_of; "
            "print(json.dumps([shard_of(n, 7) for n in json.loads(sys.stdin.read())]))")
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps(names), capture_output=True,
                             text=True, env=env, timeout=60, check=True).stdout
        assert json.loads(out) == here
    assert len(set(here)) == 7  # 201 keys reach every one of 7 shards


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "x", "1-2", ""])
def test_bad_shard_specs_are_refused_with_a_sentence(text):
    with pytest.raises(ValueError, match="^shard takes I/N"):  # the library names no option
        parse_shard(text)
    assert parse_shard(" 2 / 3 ") == Shard(2, 3) and Shard(2, 3).manifest_name == "manifest.2-of-3.jsonl"


def test_stems_are_allocated_over_the_full_list_before_partitioning(tmp_path):
    for folder in ("a", "b", "c"):
        for name in ("x", "y", "z", "w"):
            (tmp_path / folder).mkdir(exist_ok=True)
            (tmp_path / folder / f"{name}.png").write_bytes(b"")
    roots = [str(tmp_path / f) for f in ("a", "b", "c")]
    whole = find_sources(roots)[0]
    assert [s.stem for s in whole][:5] == ["w", "x", "y", "z", "w~2"]
    for count in (2, 3, 5):
        parts = [list(select(whole, Shard(i, count), key=lambda s: s.key)) for i in range(1, count + 1)]
        assert sorted((str(p.path), p.stem) for part in parts for p in part) == \
            sorted((str(p.path), p.stem) for p in whole)
    # The key is the path relative to its SOURCES folder: where the folder is mounted does not matter.
    mounted = tmp_path / "mnt" / "elsewhere"
    shutil.copytree(tmp_path / "a", mounted)
    assert [s.key for s in find_sources([roots[0]])[0]] == [s.key for s in find_sources([str(mounted)])[0]] == \
        ["w.png", "x.png", "y.png", "z.png"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    img, mask = textured_scene(96, 128, (25, 30, 45, 55), seed=1)
    save_png(root / "ref.png", img)
    save_png(root / "ref_mask.png", mask * 255)
    for folder, offset in (("cam1", 0), ("cam2", 3)):
        for i in range(3):
            s_img, _ = textured_scene(96, 128, (15 + 5 * i, 20 + 10 * i, 45, 50), seed=20 + offset + i)
            save_png(root / folder / f"frame{i}.png", s_img)  # same stems in both folders: frame0, frame0~2
    return root


def test_two_shards_write_what_one_run_writes_and_status_says_done(scenes, tmp_path):
    root = scenes
    sources = [str(root / "cam1"), str(root / "cam2")]
    base = ["propagate", "--ref", str(root / "ref.png"), "--mask", str(root / "ref_mask.png"), *sources, *FAST]
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert runner.invoke(app, base + ["-o", str(whole)]).exit_code == 0
    for spec in ("1/2", "2/2"):
        res = runner.invoke(app, base + ["-o", str(sharded), "--shard", spec])
        assert res.exit_code == 0, res.output

    def tree(folder):
        return {p.relative_to(folder).as_posix(): p.read_bytes()
                for p in folder.rglob("*.png") if not p.name.startswith(".")}

    assert tree(sharded) == tree(whole) and len(tree(whole)) == 18  # 6 sources x 3 kinds
    assert "masks/frame0~2.png" in tree(sharded)
    assert not (sharded / "manifest.jsonl").exists()
    shard_lines = [source_records(sharded / f"manifest.{i}-of-2.jsonl") for i in (1, 2)]
    assert all(shard_lines) and sum(map(len, shard_lines)) == 6  # both shards had work; none twice

    res = runner.invoke(app, ["status", str(sharded), *sources])
    assert res.exit_code == 0, res.output
    assert "6 done" in res.stdout and "0 failed, 0 pending" in res.stdout
