"""The split stream: the backbone on the runner's thread, the rest of each source on finishing threads."""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from tests.test_runner import FakeModel, _runner, _work


class SplitModel(FakeModel):
    """A FakeModel whose step splits like the Predictor's: ``encode_batch`` here, the rest elsewhere."""

    def __init__(self, fail_on=(), fail_encoding=()) -> None:
        super().__init__(fail_on)
        self.fail_encoding = set(fail_encoding)
        self.encoded_on, self.coarse_on = set(), set()

    def encode_batch(self, images):
        self.encoded_on.add(threading.current_thread().name)
        if int(images[0][0, 0, 0]) in self.fail_encoding:
            raise RuntimeError("backbone broke")
        return ("features", images[0].shape)

    def predict_coarse(self, images, encoded=None):
        assert encoded is None or encoded == ("features", images[0].shape)
        self.coarse_on.add(threading.current_thread().name)
        return super().predict_coarse(images)


def test_split_stream_writes_every_source_in_order_and_each_failure_is_a_model_failure(tmp_path):
    model = SplitModel(fail_on={3}, fail_encoding={5})
    runner = _runner(tmp_path)
    outcome = runner.run_images([_work(i) for i in range(8)], model, workers=3)
    assert (outcome.done, len(outcome.failed)) == (6, 2)
    records = runner.sink.records
    # Results in source order, whatever thread finished first (a backbone failure is recorded at once).
    assert [r.stem for r in records if r.status == "done"] == [f"s{i}" for i in (0, 1, 2, 4, 6, 7)]
    assert sorted(r.stem for r in records) == [f"s{i}" for i in range(8)]
    failed = {r.stem: r.error for r in records if r.status == "failed"}
    assert failed == {"s3": "/in/s3.png: model failed: boom", "s5": "/in/s5.png: model failed: backbone broke"}
    assert model.encoded_on == {threading.main_thread().name}
    assert model.coarse_on and all(name.startswith("icm-write") for name in model.coarse_on)
    for i in (0, 1, 2, 4, 6, 7):
        written = np.asarray(Image.open(tmp_path / "out" / "masks" / f"s{i}.png"))
        assert written[1:, :5].all() and not written[:, 5:].any()  # pixel (0, 0) carries the index


def test_one_worker_or_batches_keep_the_whole_model_step_on_the_runners_thread(tmp_path):
    for kwargs in ({"workers": 1}, {"workers": 3, "batch_size": 2}):
        model = SplitModel()
        outcome = _runner(tmp_path / str(len(kwargs))).run_images([_work(i) for i in range(4)], model, **kwargs)
        assert outcome.done == 4 and model.encoded_on == set()
        assert model.coarse_on == {threading.main_thread().name}
