"""Ctrl-C and SIGTERM during icm's loops: the one place they are caught.

The batch runner, the per-file loop and the video writer all stop the same
way: the first signal is noted (:attr:`StopFlag.signum`, exit 128 + it: 130
for Ctrl-C, 143 for SIGTERM) and the loop winds down; a second one raises
``KeyboardInterrupt`` to stop at once. Handlers are installed on the main
thread only (elsewhere Python refuses them) and the previous ones are put back.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A stop signal arrived in a loop that leaves at once (a BaseException: no ``except Exception`` eats it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopFlag:
    """What the first stop signal did, and what a later one does.

    The first sets :attr:`signum` and calls ``then(signum)``; with
    ``at_once`` it then raises :class:`Interrupted` where the main thread
    is, so the loop leaves now (and a second signal is ignored: it must not
    break the summary being printed). Without ``at_once`` the loop checks
    :attr:`signum` itself, and a second signal raises ``KeyboardInterrupt``.
    """

    def __init__(self, *, at_once: bool = False, then: Callable[[int], None] | None = None) -> None:
        self.at_once = at_once
        self.then = then
        self.signum = 0

    def __call__(self, signum: int, frame=None) -> None:
        if self.signum:
            if self.at_once:
                return
            raise KeyboardInterrupt
        self.signum = signum
        if self.then is not None:
            self.then(signum)
        if self.at_once:
            raise Interrupted(signum)


@contextmanager
def stop_signals(flag: StopFlag | None = None, **kwargs) -> Iterator[StopFlag]:
    """SIGINT and SIGTERM go to ``flag`` (a new :class:`StopFlag` of ``kwargs`` when None) while inside."""
    flag = flag if flag is not None else StopFlag(**kwargs)
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {}
    for sig in STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, flag)
        except (ValueError, OSError):
            pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
