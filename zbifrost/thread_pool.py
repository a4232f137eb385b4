"""The thread pool of thread-run plugin functions (docs/protocol.md section 7, "threads").

`FairThreadPool` owns daemon threads of its own, never the reactor's pool: shutdown joins
that one, and a plugin stuck forever must not keep the process alive. Its queue is fair: each
client's jobs wait in a FIFO of their own, clients are served round-robin, and one client holds
at most `per_client` threads. A job cancelled while queued (its command timed out) never
starts; `drop(client)` forgets the queued jobs of a client that left. A job cancelled while
running cannot be stopped: its thread is written off (it still counts toward its client's
share until it returns or the client leaves) and a replacement starts, as long as no more than
`max_threads` threads are alive.

All bookkeeping runs on the reactor thread; pool threads only run jobs and hand each outcome
back with `reactor.callFromThread`. Nothing here knows about frames or protocols: a client is
any hashable key.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorFromThreads

log = Logger()

_RETIRE = None  # handed to an idle thread instead of a job: the thread leaves the pool


class _Client:
    """One client's jobs waiting for a thread, and the threads it holds."""

    __slots__ = ("queued", "held")

    def __init__(self) -> None:
        self.queued: deque[_Job] = deque()  # jobs waiting for a thread, oldest first
        self.held = 0  # threads running its jobs, written-off ones included


class _Job:
    __slots__ = ("key", "client", "description", "function", "args", "deferred", "running", "written_off")
    deferred: Deferred[Any]  # set by `submit`, which makes the job

    def __init__(self, key: Hashable, client: _Client, description: str, function: Callable[..., Any],
                 args: tuple[Any, ...]) -> None:
        self.key = key
        self.client = client
        self.description = description  # names the command in log lines
        self.function = function
        self.args = args
        self.running = False
        self.written_off = False


class FairThreadPool:
    """Up to `threads` working threads (started on demand), `per_client` of them per client,
    and no more than `max_threads` threads alive, written-off ones included."""

    def __init__(self, reactor: IReactorFromThreads, threads: int, per_client: int, max_threads: int) -> None:
        self.reactor = reactor
        self.threads = threads
        self.per_client = per_client
        self.max_threads = max_threads
        self.alive = 0  # threads started and not ended, written-off ones included
        self.working = 0  # alive threads that are not written off
        self.idle = 0  # working threads waiting for a job
        self._clients: dict[Hashable, _Client] = {}  # client key -> _Client, until drop(key)
        # client key -> _Client with queued jobs, in round-robin order
        self._waiting: OrderedDict[Hashable, _Client] = OrderedDict()
        self._handoff: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()  # jobs (or _RETIRE) for idle threads
        self._thread_numbers = itertools.count(1)
        self._stopped = False

    def submit(self, key: Hashable, description: str, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Run `function(*args)` in a pool thread for client `key`; a Deferred of its result,
        fired on the reactor thread. Cancelling it (a timeout) unqueues or writes off the job."""
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = _Client()
        job = _Job(key, client, description, function, args)
        job.deferred = Deferred(lambda _: self._cancel(job))
        client.queued.append(job)
        self._waiting.setdefault(key, client)
        self._schedule()
        return job.deferred

    def held_by(self, key: Hashable) -> int:
        """The threads client `key` holds: running its jobs, written off or not."""
        client = self._clients.get(key)
        return client.held if client is not None else 0

    def drop(self, key: Hashable) -> None:
        """Client `key` has left: its queued jobs never run, its threads stop counting."""
        client = self._clients.pop(key, None)
        if client is None:
            return
        self._waiting.pop(key, None)
        dropped, client.queued = client.queued, deque()
        for job in dropped:
            job.deferred.cancel()

    def stop(self) -> None:
        """Drop every queued job and let every thread end once it is idle (none is joined)."""
        self._stopped = True
        for key in list(self._clients):
            self.drop(key)
        while self.idle:
            self._retire_one()

    # -- reactor thread ----------------------------------------------------------------------

    def _schedule(self) -> None:
        """Hand queued jobs to idle threads, round-robin over clients below their share."""
        while not self._stopped:
            key = next((key for key, client in self._waiting.items() if client.held < self.per_client), None)
            if key is None:
                return
            if not self.idle:
                if self.working >= self.threads or self.alive >= self.max_threads:
                    return
                self._start_thread()
            client = self._waiting[key]
            job = client.queued.popleft()
            if client.queued:
                self._waiting.move_to_end(key)
            else:
                del self._waiting[key]
            client.held += 1
            job.running = True
            self.idle -= 1
            self._handoff.put(job)

    def _start_thread(self) -> None:
        self.alive += 1
        self.working += 1
        self.idle += 1
        threading.Thread(target=self._work, name=f"zbifrost-thread-{next(self._thread_numbers)}",
                         daemon=True).start()

    def _retire_one(self) -> None:
        self.idle -= 1
        self.working -= 1
        self.alive -= 1
        self._handoff.put(_RETIRE)

    def _cancel(self, job: _Job) -> None:
        if job.running:
            self._write_off(job)
            return
        client = job.client
        if job in client.queued:
            client.queued.remove(job)
            if not client.queued:
                self._waiting.pop(job.key, None)

    def _write_off(self, job: _Job) -> None:
        job.written_off = True
        self.working -= 1
        log.warn("Pool thread written off: {command} is still running after its command timed out",
                 command=job.description)
        if self._stopped:
            return
        if self.alive >= self.max_threads:
            log.error("No replacement for the pool thread written off by {command}: {alive} threads are "
                      "alive (threads_max), {working} of {threads} still work",
                      command=job.description, alive=self.alive, working=self.working, threads=self.threads)
            return
        self._start_thread()
        self._schedule()

    def _finished(self, job: _Job, outcome: object) -> None:
        job.client.held -= 1
        self.idle += 1  # the thread is back at the hand-off
        if job.written_off:
            self.working += 1
        if self._stopped or self.working > self.threads:
            self._retire_one()
        if not job.written_off:
            if isinstance(outcome, Failure):
                job.deferred.errback(outcome)
            else:
                job.deferred.callback(outcome)
        elif isinstance(outcome, Failure):
            log.failure("A written-off pool thread failed: {command}", outcome, LogLevel.error,
                        command=job.description)
        self._schedule()

    # -- pool threads ----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._handoff.get()
            if job is _RETIRE:
                return
            try:
                outcome = job.function(*job.args)
            except BaseException:
                outcome = Failure()
            self.reactor.callFromThread(self._finished, job, outcome)
            del job, outcome  # hold nothing while waiting for the next job
