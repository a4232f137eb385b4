"""Thread-run plugin functions for the thread-pool tests: they hold threads until the test
releases them, and record which jobs ran and how many of a client's ran at once."""

import threading
import time

RELEASE = threading.Event()  # tests set it (through the loaded module) to let `hang` return
RAN = []  # (client_id, function) of every job that started, in order
PEAK = {}  # client_id -> most of its jobs running at once
_running = {}
_lock = threading.Lock()


def _started(ctx, name):
    with _lock:
        RAN.append((ctx.client_id, name))
        _running[ctx.client_id] = _running.get(ctx.client_id, 0) + 1
        PEAK[ctx.client_id] = max(PEAK.get(ctx.client_id, 0), _running[ctx.client_id])


def _ended(ctx):
    with _lock:
        _running[ctx.client_id] -= 1


def quick(ctx):
    _started(ctx, "quick")
    _ended(ctx)
    return "quick"


def record(ctx):
    _started(ctx, "record")
    _ended(ctx)
    return "recorded"


def hang(ctx):
    _started(ctx, "hang")
    try:
        if not RELEASE.wait(timeout=60):
            raise RuntimeError("the test never released the hanging jobs")
    finally:
        _ended(ctx)
    return "released"


def stuck():
    while True:  # a plugin stuck in a C call for good
        time.sleep(3600)
