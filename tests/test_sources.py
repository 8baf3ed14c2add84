"""Finding sources and naming outputs: names kept, unique by construction, outputs never ingested."""

from __future__ import annotations

import io as pyio
import os

import pytest

from icm_cli.sources import (MAX_NAME_BYTES, ListingProblem, NameAllocator, SourceError, SourceFinder,
                             find_named, find_sources, output_name, safe_component)


def _touch(root, *names):
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_folders_are_sorted_filtered_by_suffix_and_stdin_is_read(tmp_path):
    _touch(tmp_path, "b.png", "a.jpg", "c.txt", "sub/d.png", ".hidden.png", ".thumbs/e.png")
    assert [s.path.name for s in find_sources([tmp_path])[0]] == ["a.jpg", "b.png"]
    assert [s.path.name for s in find_sources([tmp_path], recursive=True)[0]] == ["a.jpg", "b.png", "d.png"]
    stdin = pyio.StringIO("x/one.png\n\n  y/two.jpg \n")
    found = list(SourceFinder(["-"], stdin=stdin))
    assert [str(s.path) for s in found] == ["x/one.png", "y/two.jpg"] and [s.stem for s in found] == ["one", "two"]


def test_output_names_keep_the_file_name_and_replace_only_what_is_unsafe():
    assert output_name("shop/cup (1).jpg") == "cup (1)"
    assert output_name("Café's cup.jpg") == "Café's cup"
    url = "photo-1523275335684-37898b6baf30%3Fixlib=rb-4.0.3&ixid=M3w.jpg"
    assert output_name(url) == url[:-4]
    assert output_name("/x/../evil/..name.png") == "name"
    assert output_name("a\\b.png") == "a_b"
    assert output_name("tab\there.png") == "tab_here"
    assert output_name(os.fsdecode(b"bad\xff.png")) == "bad_"
    assert output_name("...png") == "_"


def test_a_name_too_long_for_the_file_system_is_cut_and_stays_unique():
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    short_a, short_b = safe_component(a), safe_component(b)
    assert len(short_a.encode()) <= MAX_NAME_BYTES and len((short_a + ".png").encode()) <= 255
    assert short_a != short_b
    multibyte = safe_component("é" * 200)
    assert len(multibyte.encode()) <= MAX_NAME_BYTES and multibyte.startswith("é")


def test_names_are_unique_by_construction_even_beside_a_real_tilde_name(tmp_path):
    names = NameAllocator()
    assert [names(n) for n in ["a", "a", "a~2", "A", "other"]] == ["a", "a~2", "a~2~2", "A~3", "other"]
    _touch(tmp_path, "a.jpg", "a.png", "a~2.png")
    stems = [s.stem for s in find_sources([tmp_path])[0]]
    assert stems == ["a", "a~2", "a~2~2"] and len(set(stems)) == 3


def test_recursive_runs_mirror_sub_folders_in_the_names(tmp_path):
    _touch(tmp_path, "top.jpg", "rec/a/frame.jpg", "rec/b/frame.jpg")
    found = find_sources([tmp_path], recursive=True)[0]
    assert [(s.name, s.key) for s in found] == [("rec/a/frame", "rec/a/frame.jpg"),
                                                ("rec/b/frame", "rec/b/frame.jpg"), ("top", "top.jpg")]
    flat = find_sources([tmp_path / "rec" / "a", tmp_path / "rec" / "b"])[0]
    assert [s.stem for s in flat] == ["frame", "frame~2"]


def test_include_and_exclude_match_names_and_relative_paths(tmp_path):
    _touch(tmp_path, "cat_00.jpg", "cat_00.png", "cat_01.jpg", "cat_01.png", "sub/dog.jpg")
    only_jpg = find_sources([tmp_path], include=["*.jpg"], recursive=True)[0]
    assert [s.key for s in only_jpg] == ["cat_00.jpg", "cat_01.jpg", "sub/dog.jpg"]
    no_png = find_sources([tmp_path], exclude=["*.png", "sub/*"], recursive=True)[0]
    assert [s.key for s in no_png] == ["cat_00.jpg", "cat_01.jpg"]


def test_output_folders_are_never_sources(tmp_path):
    _touch(tmp_path, "photo.jpg", "out/masks/photo.png", "out/masks/deep/x.png")
    found, problems = find_sources([tmp_path], recursive=True, avoid=[tmp_path / "out" / "masks"])
    assert [s.key for s in found] == ["photo.jpg"] and not problems
    with pytest.raises(SourceError, match="outputs"):
        SourceFinder([tmp_path / "out" / "masks"], avoid=[tmp_path / "out" / "masks"])
    found, problems = find_sources([tmp_path / "out" / "masks" / "photo.png"], avoid=[tmp_path / "out" / "masks"])
    assert not found and "inside the output folder" in problems[0].message


def _unreadable(monkeypatch, folder):
    """Make ``folder`` unlistable, as chmod 000 does for anyone but root (tests often run as root)."""
    real = os.scandir

    def scandir(path="."):
        if os.path.realpath(path) == os.path.realpath(folder):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr("icm_cli.sources.os.scandir", scandir)


def test_missing_and_unreadable_sources_are_reported_not_swallowed(tmp_path, monkeypatch):
    with pytest.raises(SourceError, match="not found"):
        SourceFinder([tmp_path / "nope"])
    _touch(tmp_path, "ok/a.png", "ok/locked/b.png")
    _unreadable(monkeypatch, tmp_path / "ok" / "locked")
    with pytest.raises(SourceError, match="cannot read the folder .Permission denied"):
        SourceFinder([tmp_path / "ok" / "locked"])
    found, problems = find_sources([tmp_path / "ok"], recursive=True)
    assert [s.key for s in found] == ["a.png"]
    assert isinstance(problems[0], ListingProblem) and "cannot read the folder" in problems[0].message


def test_recursive_walk_survives_symlink_loops(tmp_path):
    _touch(tmp_path, "a/x.png")
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    assert [s.path.name for s in find_sources([tmp_path], recursive=True)[0]] == ["x.png"]


def test_find_named_pairs_by_name_with_any_suffix_png_first(tmp_path):
    _touch(tmp_path, "cup (1).jpg", "cup (1).png", "seq/f.JPG")
    assert find_named(tmp_path, "cup (1)").name == "cup (1).png"
    assert find_named(tmp_path, "seq/f") == tmp_path / "seq" / "f.JPG"
    assert find_named(tmp_path, "missing") is None


def test_a_source_list_is_listed_or_streamed_behind_one_iteration_api(tmp_path):
    from icm_cli.sources import Source, SourceList

    _touch(tmp_path, "a.png", "b.png")
    listed = SourceList.of(SourceFinder([tmp_path]))
    assert listed.listed and listed.total == 2
    assert [s.stem for s in listed] == [s.stem for s in listed] == ["a", "b"]  # a listed run reads twice
    assert listed.any_done(lambda stem: stem == "a") and not listed.all_done(lambda stem: stem == "a")
    assert listed.all_done(lambda stem: True)
    assert listed.where(lambda s: s.stem == "b").total == 1

    stream = SourceList.of(SourceFinder(["-"], stdin=pyio.StringIO("x/one.png\ny/two.png\n")))
    assert not stream.listed and stream.total is None
    assert not stream.all_done(lambda stem: True) and not stream.any_done(lambda stem: True)  # unknown yet
    kept = stream.where(lambda s: s.stem == "two", lazy=True)
    assert kept.total is None and [s.stem for s in kept] == ["two"]
    read_now = SourceList.of(SourceFinder(["-"], stdin=pyio.StringIO("x/one.png\ny/two.png\n"))).where(
        lambda s: isinstance(s, Source))
    assert read_now.listed and read_now.total == 2
