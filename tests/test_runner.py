"""The batch runner with a fake predictor: each failure behaviour, for images and sequences alike."""

from __future__ import annotations

import errno
import json
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icm_cli import io
from icm_cli.config import OutputConfig
from icm_cli.predictor import Result
from icm_cli.runner.batch import BatchRunner, Work
from icm_cli.runner.manifest import ManifestWriter, RecordList, read_manifests
from icm_cli.runner.outputs import OutputPlan
from icm_cli.sources import ListingProblem, Source


class FakeModel:
    """Predicts "bright pixels are object"; fails on request, for images and for sequences."""

    def __init__(self, fail_on=(), message="boom") -> None:
        self.fail_on, self.message = set(fail_on), message
        self.calls: list[int] = []
        self.observed: list[bool] = []
        self.frames: list[tuple] = []  # (frame number, given) of each observed mask: what the memory keys slots by

    def predict_coarse(self, images):
        self.calls.append(len(images))
        for im in images:
            if int(im[0, 0, 0]) in self.fail_on:
                raise RuntimeError(self.message)
        return [im.mean(axis=2) / 255.0 for im in images]

    def finish(self, image, coarse):
        return Result(probability=coarse.astype(np.float32), mask=coarse > 0.5, confidence=float(coarse.mean()))

    # the sequence twin
    def encode(self, image):
        return image

    def predict_encoded(self, encoded):
        return self.predict_coarse([encoded])[0]

    def observe_encoded(self, encoded, mask, index=None, given=False):
        self.observed.append(bool(mask.any()))
        self.frames.append((index, given))

    memory_frames = 1


def _work(i: int, value: int | None = None, shape=(8, 10)) -> Work:
    img = np.zeros((*shape, 3), np.uint8)
    img[:, : shape[1] // 2] = 200
    img[0, 0] = value if value is not None else i
    return Work(Source(Path(f"/in/s{i}.png"), f"s{i}.png", f"s{i}", f"s{i}"), image=img, index=i)


def _runner(tmp_path, sink=None, kinds=("masks",)):
    plan = OutputPlan(tmp_path / "out", OutputConfig(kinds))
    return BatchRunner(plan, sink if sink is not None else RecordList())


def test_every_source_is_written_and_recorded_with_its_result(tmp_path):
    runner = _runner(tmp_path, kinds=("masks", "trimaps", "heatmaps"))
    outcome = runner.run_images([_work(i) for i in range(4)], FakeModel(), batch_size=2)
    assert (outcome.done, outcome.skipped, outcome.failed, outcome.exit_code) == (4, 0, [], 0)
    records = runner.sink.records
    assert [r.stem for r in records] == ["s0", "s1", "s2", "s3"] and {r.status for r in records} == {"done"}
    assert records[0].mask_area == pytest.approx(0.5, abs=0.02) and records[0].empty is False
    assert records[0].confidence == pytest.approx(0.4, abs=0.02)
    assert Path(records[0].outputs["trimaps"]) == tmp_path / "out" / "trimaps" / "s0.png"
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "s2.png"))
    assert mask[1:, :5].min() == 255 and mask[:, 5:].max() == 0  # (0, 0) holds the marker value


def test_a_model_error_fails_only_its_source_with_a_nonempty_line(tmp_path):
    runner = _runner(tmp_path)
    model = FakeModel(fail_on={2}, message="")  # an exception whose message is empty
    outcome = runner.run_images([_work(i) for i in range(4)], model, batch_size=4)
    assert outcome.done == 3 and outcome.exit_code == 1
    (path, message), = outcome.failed
    assert path == "/in/s2.png" and message == "/in/s2.png: model failed: RuntimeError"
    assert model.calls == [4, 1, 1, 1, 1]  # the failed batch was retried one source at a time


def test_decode_errors_listing_problems_and_done_sources(tmp_path):
    runner = _runner(tmp_path)
    io.write_image_atomic(tmp_path / "out" / "masks" / "old.png", np.zeros((2, 2), np.uint8))
    entries = [Source(Path("old.jpg"), "old.jpg", "old", "old"), ListingProblem(Path("sub"), "sub: cannot read"),
               Work(Source(Path("bad.png"), "bad.png", "bad", "bad"), error="bad.png: truncated"), _work(1)]
    outcome = runner.run_images(entries, FakeModel())
    assert (outcome.done, outcome.skipped) == (1, 1)
    assert [m for _, m in outcome.failed] == ["sub: cannot read", "bad.png: truncated"]
    assert [(r.stem, r.status) for r in runner.sink.records] == \
        [("old", "skipped"), (None, "failed"), ("bad", "failed"), ("s1", "done")]


def test_a_full_disk_stops_the_batch_after_one_failure(tmp_path, monkeypatch):
    real = io.write_image_atomic
    writes = {"n": 0}

    def write(path, array):
        writes["n"] += 1
        if writes["n"] > 1:
            raise io.OutputError(f"{path}: cannot write (No space left on device)", errno.ENOSPC)
        real(path, array)

    monkeypatch.setattr(io, "write_image_atomic", write)
    runner = _runner(tmp_path)
    outcome = runner.run_images([_work(i) for i in range(8)], FakeModel())
    assert outcome.done == 1 and len(outcome.failed) == 1 and "No space left" in outcome.stopped
    assert outcome.exit_code == 1 and len(runner.sink.records) == 2


def test_a_sequence_feeds_each_mask_back_and_stops_on_a_full_disk_too(tmp_path, monkeypatch):
    runner = _runner(tmp_path)
    model = FakeModel(fail_on={3}, message="")
    outcome = runner.run_sequence([_work(i) for i in range(5)], model)
    assert outcome.done == 4 and [m for _, m in outcome.failed] == ["/in/s3.png: model failed: RuntimeError"]
    assert model.observed == [True] * 4  # every written frame told the model its mask, in order
    assert model.frames == [(0, False), (1, False), (2, False), (4, False)]  # with its frame number

    monkeypatch.setattr(io, "write_image_atomic",
                        lambda path, array: (_ for _ in ()).throw(io.OutputError("disk full", errno.ENOSPC)))
    runner = _runner(tmp_path / "second")
    outcome = runner.run_sequence([_work(i) for i in range(6)], FakeModel())
    assert outcome.stopped and outcome.done == 0 and len(outcome.failed) == 1


class _Given:
    """A UserMasks stand-in: source ``s1`` is a reference whose mask is the left column only."""

    def __init__(self, shape=(8, 10)) -> None:
        self.mask = np.zeros(shape, bool)
        self.mask[:, 0] = True

    def __bool__(self) -> bool:
        return True

    def reference_for(self, source):
        return source.stem == "s1" or None

    def mask_for(self, source, image):
        return self.mask if source.stem == "s1" else None


def test_a_reference_frame_is_not_predicted_and_the_next_frame_starts_from_its_mask(tmp_path):
    class Recording(FakeModel):
        def observe_encoded(self, encoded, mask, index=None, given=False):
            self.observed.append(np.asarray(mask).copy())
            self.frames.append((index, given))

    given = _Given()
    runner = BatchRunner(OutputPlan(tmp_path / "out", OutputConfig(("masks",))), RecordList(), user_masks=given)
    model = Recording()
    outcome = runner.run_sequence([_work(i) for i in range(3)], model)
    assert outcome.done == 3 and model.calls == [1, 1]  # frames 0 and 2 predicted, frame 1 not
    assert np.array_equal(model.observed[1], given.mask)  # frame 2's prior and window: the user's mask
    assert model.frames == [(0, False), (1, True), (2, False)]  # the memory is told frame 1's mask is the user's
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "masks" / "s1.png")), given.mask * np.uint8(255))
    records = {r.stem: r for r in runner.sink.records}
    assert records["s1"].from_reference and records["s1"].confidence == 1.0
    assert not records["s0"].from_reference and not records["s2"].from_reference
    # the same for images: not batched with the others, recorded in source order
    runner = BatchRunner(OutputPlan(tmp_path / "img", OutputConfig(("masks",))), RecordList(), user_masks=given)
    model = FakeModel()
    runner.run_images([_work(i) for i in range(4)], model, batch_size=4)
    assert [r.stem for r in runner.sink.records] == ["s0", "s1", "s2", "s3"] and sum(model.calls) == 3
    assert [r.from_reference for r in runner.sink.records] == [False, True, False, False]


def test_a_signal_stops_taking_sources_and_records_what_was_predicted(tmp_path):
    runner = _runner(tmp_path)

    class Interrupted(FakeModel):
        def predict_coarse(self, images):
            if len(self.calls) == 2:
                runner._on_signal(signal.SIGTERM, None)  # SIGTERM arrives while the third source is predicted
            return super().predict_coarse(images)

    outcome = runner.run_images([_work(i) for i in range(10)], Interrupted())
    assert outcome.interrupted == signal.SIGTERM and outcome.exit_code == 143
    assert outcome.done == 3 and not outcome.failed  # what was predicted is written; nothing new started
    assert all(r.status == "done" for r in runner.sink.records)
    with pytest.raises(KeyboardInterrupt):  # a second signal: stop now
        runner._on_signal(signal.SIGINT, None)


def test_a_closed_stdout_stops_quietly_and_the_manifest_stays_true(tmp_path):
    def closed(line):
        raise BrokenPipeError(32, "Broken pipe")

    writer = ManifestWriter(tmp_path / "out" / "manifest.jsonl", echo=closed)
    runner = _runner(tmp_path, sink=writer)
    runner._stdout_closed = lambda: (setattr(runner.outcome, "stdout_closed", True), runner.halt.set())
    outcome = runner.run_images([_work(i) for i in range(6)], FakeModel())
    writer.close()
    assert outcome.stdout_closed and outcome.exit_code == 141 and not outcome.failed
    state = read_manifests(tmp_path / "out")
    assert state.records("done") and not state.records("failed")
    for record in state.records("done"):  # every record's outputs exist
        assert all(Path(p).exists() for p in record.outputs.values())


def test_manifest_lines_are_typed_records_and_old_lines_still_read(tmp_path):
    out = tmp_path / "out"
    runner = _runner(tmp_path, sink=ManifestWriter(out / "manifest.jsonl"))
    runner.begin(["icm", "propagate", "x"], {"model": {"size": 384}}, [{"digest": "ab"}])
    runner.run_images([_work(0)], FakeModel())
    runner.sink.close()
    with open(out / "manifest.jsonl", "a") as fh:
        fh.write(json.dumps({"input": "legacy.png", "stem": "legacy", "status": "failed", "error": "x"}) + "\n")
        fh.write("[" * 100_000 + "\n")  # a line nested too deep for the JSON parser
        fh.write('{"input": "torn.png", "sta\n')
    state = read_manifests(out)
    assert state.last_run.command == ["icm", "propagate", "x"] and state.last_run.settings["model"]["size"] == 384
    assert sorted(r.stem for r in state.records()) == ["legacy", "s0"]
    assert state.unreadable_lines == 2


def test_a_manifest_link_planted_in_out_is_replaced_not_followed(tmp_path):
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").symlink_to(outside)
    writer = ManifestWriter(out / "manifest.jsonl")
    _runner(tmp_path, sink=writer).run_images([_work(0)], FakeModel())
    writer.close()
    assert outside.read_text() == "keep me\n"
    assert not (out / "manifest.jsonl").is_symlink() and "s0" in (out / "manifest.jsonl").read_text()
