"""A fixed point in a run for tests that act on a running job (requeue, preemption) without racing it."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ssl_bench.errors import UserError

log = logging.getLogger(__name__)


PAUSE_ENV = "SSL_BENCH_PAUSE_AT_STEP"


def pause_point() -> tuple[int, Path] | None:
    """``SSL_BENCH_PAUSE_AT_STEP=N:PATH``: after step N (and its checkpoint) the run waits until PATH
    exists. A fixed point for tests that act on a running job (requeue, preemption) without racing it."""
    value = os.environ.get(PAUSE_ENV)
    if not value:
        return None
    step, sep, path = value.partition(":")
    if not (sep and step.isdigit() and path):
        raise UserError(f"{PAUSE_ENV}={value!r} is not STEP:PATH (e.g. 4:/tmp/release)")
    return int(step), Path(path)


def wait_at(pause: tuple[int, Path] | None, step: int) -> None:
    """Wait at the pause point until its file exists; a SIGTERM meanwhile (a requeue or scancel: submitit
    ignores SIGTERM) ends the process at once with 143, so a paused job never outlives its allocation."""
    if pause is None or step != pause[0]:
        return
    import signal
    import threading

    log.warning("paused after step %d until %s exists (%s)", step, pause[1], PAUSE_ENV)
    stop = threading.Event()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if main_thread else None
    try:
        while not pause[1].exists() and not stop.is_set():
            time.sleep(0.1)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if stop.is_set():
        log.warning("terminated while paused after step %d", step)
        raise SystemExit(143)
