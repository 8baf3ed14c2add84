"""The runner reports through the Reporter it is given and prints nothing itself; ``--debug`` is an
option it is handed; Ctrl-C / SIGTERM go through the one ``runner.signals`` module (issue 27)."""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.config import OutputConfig
from icm_cli.runner.batch import BatchRunner
from icm_cli.runner.files import process_files
from icm_cli.runner.manifest import RecordList
from icm_cli.runner.outcome import BatchOutcome, Reporter
from icm_cli.runner.outputs import OutputPlan
from icm_cli.runner.signals import Interrupted, StopFlag, stop_signals
from icm_cli.sources import ListingProblem, Source
from tests.conftest import propagate_args, save_png
from tests.test_runner import FakeModel, _work

cli = CliRunner()


class Collecting(Reporter):
    """A reporter that keeps what it is told."""

    def __init__(self, debug: bool = False) -> None:
        self.debug = debug
        self.failures: list[str] = []
        self.errors: list[str] = []
        self.bars: list[tuple] = []
        self.advanced = 0

    def failed(self, message: str) -> None:
        self.failures.append(message)

    def error(self, message: str) -> None:
        self.errors.append(message)

    @contextmanager
    def progress(self, total, description):
        self.bars.append((total, description))

        def advance(n=1):
            self.advanced += n
        yield advance


def _source(tmp_path: Path, name: str) -> Source:
    return Source(tmp_path / name, name, name, Path(name).stem)


# ------------------------------------------------------------------ the reporter

def test_the_batch_runner_tells_its_reporter_of_a_failure_and_prints_nothing(tmp_path, capsys):
    reporter = Collecting()
    runner = BatchRunner(OutputPlan(tmp_path / "out", OutputConfig(("masks",))), RecordList(),
                         outcome=BatchOutcome(reporter=reporter))
    outcome = runner.run_images([_work(i) for i in range(4)], FakeModel(fail_on={2}, message="boom\nsecond"))
    assert (outcome.done, outcome.exit_code) == (3, 1)
    assert reporter.failures == ["/in/s2.png: model failed: boom"]  # folded to its first line, as on stderr
    assert outcome.failed == [("/in/s2.png", "/in/s2.png: model failed: boom")]
    assert capsys.readouterr() == ("", "")


def test_a_library_caller_without_a_reporter_hears_nothing(tmp_path, capsys):
    runner = BatchRunner(OutputPlan(tmp_path / "out", OutputConfig(("masks",))), RecordList())
    outcome = runner.run_images([_work(i) for i in range(3)], FakeModel(fail_on={1}))
    assert outcome.done == 2 and len(outcome.failed) == 1
    assert capsys.readouterr() == ("", "")


def test_a_debug_reporter_gets_the_unexpected_error_raised(tmp_path):
    runner = BatchRunner(OutputPlan(tmp_path / "out", OutputConfig(("masks",))), RecordList(),
                         outcome=BatchOutcome(reporter=Collecting(debug=True)))
    with pytest.raises(RuntimeError, match="boom"):
        runner.run_images([_work(i) for i in range(3)], FakeModel(fail_on={1}))


def test_the_file_loop_draws_its_progress_through_the_reporter(tmp_path, capsys):
    reporter = Collecting()
    entries = [_source(tmp_path, "a.png"), ListingProblem(tmp_path / "b.png", "b.png: unreadable"),
               _source(tmp_path, "c.png"), _source(tmp_path, "d.png")]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "d.png").write_bytes(b"there")
    made = []

    def work(source):
        if source.name == "c.png":
            raise ZeroDivisionError("a bug")
        made.append(source.name)

    outcome = process_files(entries, lambda s: [tmp_path / "out" / s.name], work, output=tmp_path / "out",
                            overwrite=False, description="trimap", total=4, reporter=reporter)
    assert reporter.bars == [(4, "trimap")] and reporter.advanced == 4
    assert (made, outcome.done, outcome.skipped) == (["a.png"], 1, 1)
    assert reporter.failures[0] == "b.png: unreadable"
    assert reporter.failures[1].startswith(f"{tmp_path / 'c.png'}: unexpected ZeroDivisionError: a bug")
    assert capsys.readouterr() == ("", "")
    with pytest.raises(ZeroDivisionError):  # the same loop with a debug reporter: the traceback is the user's
        process_files([_source(tmp_path, "c.png")], lambda s: [], work, output=tmp_path / "out", overwrite=True,
                      description="trimap", reporter=Collecting(debug=True))


# ------------------------------------------------------------------ --debug reaches the runner

def test_debug_on_the_command_line_reaches_the_per_file_loop(tmp_path, monkeypatch):
    from icm_cli.predict import fullres  # where `icm trimap` takes its trimap function from

    save_png(tmp_path / "masks" / "m.png", np.full((8, 8), 255, np.uint8))

    def boom(*args, **kwargs):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(fullres, "mask_to_trimap_u8", boom)
    plain = cli.invoke(app, ["trimap", str(tmp_path / "masks"), "-o", str(tmp_path / "out"), "--quiet"])
    assert plain.exit_code == 1 and "unexpected ZeroDivisionError: simulated bug" in plain.output
    debug = cli.invoke(app, ["--debug", "trimap", str(tmp_path / "masks"), "-o", str(tmp_path / "out2"), "--quiet"])
    assert isinstance(debug.exception, ZeroDivisionError)
    env = cli.invoke(app, ["trimap", str(tmp_path / "masks"), "-o", str(tmp_path / "out3"), "--quiet"],
                     env={"ICM_DEBUG": "1"})
    assert isinstance(env.exception, ZeroDivisionError)


def test_debug_on_the_command_line_reaches_the_batch_runner(small_scene, tmp_path, monkeypatch):
    from icm_cli.pipeline import PipelineAdapter

    def broken(self, images, **kwargs):
        raise RuntimeError("simulated model bug")

    monkeypatch.setattr(PipelineAdapter, "predict_coarse", broken)
    monkeypatch.setattr(PipelineAdapter, "stream_workers", lambda self: 1)  # one thread: predict_coarse is the model step
    src = str(small_scene / "src" / "s0.png")
    plain = cli.invoke(app, propagate_args(small_scene, src, "-o", str(tmp_path / "out")))
    assert plain.exit_code == 1 and "model failed: simulated model bug" in plain.output, plain.output
    debug = cli.invoke(app, ["--debug", *propagate_args(small_scene, src, "-o", str(tmp_path / "out2"))])
    assert isinstance(debug.exception, RuntimeError), debug.output


# ------------------------------------------------------------------ one signals module

def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # Python runs the handler between bytecodes of the main thread


def test_the_first_stop_signal_is_noted_a_second_stops_now_and_the_handlers_are_put_back():
    before = signal.getsignal(signal.SIGTERM)
    told = []
    with pytest.raises(KeyboardInterrupt):
        with stop_signals(then=told.append) as stop:
            _deliver(signal.SIGTERM)
            assert stop.signum == signal.SIGTERM and told == [signal.SIGTERM]
            _deliver(signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_loop_that_leaves_at_once_gets_interrupted_and_ignores_a_second_signal():
    with stop_signals(at_once=True) as stop:
        with pytest.raises(Interrupted) as caught:
            _deliver(signal.SIGINT)
        assert caught.value.signum == signal.SIGINT == stop.signum
        stop(signal.SIGTERM)  # the summary is being printed: a second signal must not break it
        assert stop.signum == signal.SIGINT


def test_off_the_main_thread_nothing_is_installed():
    import threading

    seen = []

    def other():
        with stop_signals() as stop:
            seen.append((isinstance(stop, StopFlag), signal.getsignal(signal.SIGINT)))

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [(True, before)]


# ------------------------------------------------------------------ the library reads a run's status

def test_a_runs_status_is_read_without_the_command(small_scene, tmp_path):
    from icm_cli.runner.status import read_status

    out = tmp_path / "out"
    res = cli.invoke(app, propagate_args(small_scene, str(small_scene / "src"), "-o", str(out)))
    assert res.exit_code == 0, res.output
    status = read_status(out, [small_scene / "src" / "s0.png", small_scene / "src" / "missing.png"])
    assert status.counts["done"] == 1 and status.pending == [str(small_scene / "src" / "missing.png")]
    assert not status.complete
