"""`--workers N`: N worker processes serving one port (docs/protocol.md section 11).

The parent (`WorkersParent`) binds the listening socket itself and starts N `twistd -n zbifrost`
children with the same arguments; each adopts that socket as descriptor 3 (as under systemd
socket activation) and the kernel spreads the connections over them. The parent restarts a
worker that dies, with a backoff that grows while workers keep dying young, except one that
exits with CONFIG_REFUSED (its configuration can never serve: restarting it would only repeat
the refusal), after which the parent stops every worker and exits with that status too; it
passes SIGHUP on
(a reload in every worker) and, when it stops (SIGTERM), stops every worker gracefully and waits
for them.

Each worker (`WorkerBoard`) writes its state and metrics to a JSON file in a folder the parent
owns, twice a second, so that `/healthz` and `/metrics` of any worker answer for the whole
server (the other workers as of their last write; every metric sample gets a `worker` label).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from twisted.application import service
from twisted.internet import defer, protocol, task
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from .interfaces import IReactor
from .systemd import Notifier

if TYPE_CHECKING:
    from twisted.internet.error import ProcessDone, ProcessTerminated
    from twisted.internet.interfaces import IDelayedCall, IProcessTransport
    from twisted.python.failure import Failure

    from .config import Config
    from .hub import Hub

# A worker's state file, as JSON: {"worker", "pid", "clients", "authenticated_clients", "stopping", "metrics"}
Snapshot = dict[str, Any]

WORKER_ENV = "ZBIFROST_WORKER"  # the worker's index, in a child of the parent
BOARD_ENV = "ZBIFROST_WORKERS_DIR"  # the folder of the workers' state files
NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")  # systemd's, for the parent only
SHARED_DESCRIPTOR = 3  # where a worker finds the shared listening socket
FIRST_RESTART_DELAY = 0.5  # seconds; doubled for each worker that dies young, up to MAX_RESTART_DELAY
MAX_RESTART_DELAY = 30.0
YOUNG = 10.0  # a worker that dies within this many seconds of its start makes the next restart wait longer
STOP_MARGIN = 10.0  # seconds past the shutdown grace before a worker that has not stopped is killed
# The exit status of a process refused, once started, for its configuration (a list of broker
# shards other than the one recorded): EX_CONFIG of sysexits.h. The parent does not restart a
# worker that exits with it, and exits with it itself; systemd units: RestartPreventExitStatus=78.
CONFIG_REFUSED = 78

log = Logger()


def state_file(folder: str, index: int) -> str:
    """Where worker `index` writes its snapshot."""
    return os.path.join(folder, f"worker-{index}.json")


def worker_index(environ: Mapping[str, str] | None = None) -> int | None:
    """This process's worker index when the parent of `--workers` started it, else None."""
    value = (os.environ if environ is None else environ).get(WORKER_ENV, "")
    return int(value) if value.isdigit() else None


class WorkerBoard:
    """The workers' shared folder, seen from one worker: `publish` writes this worker's state
    and metrics; `whole_server` (for /healthz) and `registry` (for /metrics) read every worker's."""

    def __init__(self, folder: str, index: int, hub: Hub) -> None:
        self.folder = folder
        self.index = index
        self.hub = hub
        self.path = state_file(folder, index)
        self.own_metrics = hub.metrics.registry(hub)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_WholeServerMetrics(self))

    def snapshot(self) -> Snapshot:
        """This worker's live state and metric families, as JSON."""
        hub = self.hub
        return {"worker": self.index, "pid": os.getpid(), "clients": len(hub.clients),
                "authenticated_clients": hub.authenticated_clients, "stopping": bool(hub.stopping),
                "metrics": [[family.name, family.documentation, family.type,
                             [[sample.name, sample.labels, sample.value] for sample in family.samples]]
                            for family in self.own_metrics.collect()]}

    def publish(self) -> None:
        """Write this worker's snapshot (atomically: readers never see half a file)."""
        partial = f"{self.path}.{os.getpid()}.tmp"
        with open(partial, "wb") as handle:
            handle.write(orjson.dumps(self.snapshot()))
        os.replace(partial, self.path)

    def snapshots(self) -> list[Snapshot]:
        """Every worker's last snapshot, this one's live, ordered by worker index."""
        snapshots = {self.index: self.snapshot()}
        for name in os.listdir(self.folder):
            if name.startswith("worker-") and name.endswith(".json"):
                try:
                    with open(os.path.join(self.folder, name), "rb") as handle:
                        snapshot = orjson.loads(handle.read())
                except (OSError, ValueError):  # removed or replaced meanwhile
                    continue
                snapshots.setdefault(snapshot["worker"], snapshot)
        return [snapshots[index] for index in sorted(snapshots)]

    def whole_server(self, health: dict[str, Any]) -> dict[str, Any]:
        """`health` (this worker's /healthz) with the clients of all workers and a list of them."""
        workers = self.snapshots()
        health["clients"] = sum(worker["clients"] for worker in workers)
        health["authenticated_clients"] = sum(worker["authenticated_clients"] for worker in workers)
        health["worker"] = self.index  # the one that answers
        health["workers"] = [{key: worker[key] for key in ("worker", "pid", "clients", "stopping")}
                             for worker in workers]
        return health


class _WholeServerMetrics:
    """Every worker's metric families in one, each sample labelled with its `worker`."""

    def __init__(self, board: WorkerBoard) -> None:
        self.board = board

    def collect(self) -> list[Metric]:
        families: dict[str, Metric] = {}
        for snapshot in self.board.snapshots():
            worker = str(snapshot["worker"])
            for name, documentation, kind, samples in snapshot["metrics"]:
                family = families.get(name) or families.setdefault(name, Metric(name, documentation, kind))
                for sample_name, labels, value in samples:
                    family.add_sample(sample_name, dict(labels, worker=worker), value)
        return list(families.values())


class OrphanWatch:
    """Stops a worker gracefully once its parent is gone (killed with SIGKILL, say), instead of
    serving on unsupervised; `check` runs on a timer."""

    def __init__(self, reactor: IReactor) -> None:
        self.reactor = reactor
        self.parent = os.getppid()
        self.stopping = False

    def check(self) -> None:
        if os.getppid() != self.parent and not self.stopping:
            self.stopping = True
            log.warn("zbifrost worker: the parent (pid {pid}) is gone; stopping", pid=self.parent)
            self.reactor.stop()


def ignore_sigterm_once_stopping(reactor: IReactor) -> None:
    """Let a worker take a second SIGTERM quietly (twistd's handler raises ReactorNotRunning):
    under systemd both the parent and the service manager (KillMode=control-group) send one."""
    reactor.addSystemEventTrigger("before", "shutdown", signal.signal, signal.SIGTERM, signal.SIG_IGN)


class _WorkerProcess(protocol.ProcessProtocol):
    transport: IProcessTransport

    def __init__(self, parent: WorkersParent, index: int) -> None:
        self.parent = parent
        self.index = index
        self.pid: int | None = None
        self.ended: defer.Deferred[None] = defer.Deferred()

    def processEnded(self, reason: Failure) -> None:
        ended = cast("ProcessDone | ProcessTerminated", reason.value)
        self.parent.worker_ended(self, ended.exitCode, ended.signal)
        self.ended.callback(None)


class WorkersParent(service.Service):
    """Binds `host:port`, runs `count` workers on it with `arguments` (the zbifrost plugin's
    own command line) and keeps them running until it stops."""

    listening: socket.socket  # the shared socket, bound by privilegedStartService
    folder: str  # the workers' state files, made by startService

    def __init__(self, config: Config, count: int, arguments: Iterable[str], reactor: IReactor | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as installed

            reactor = cast(IReactor, installed)  # it provides IReactorFromThreads too
        self.config = config
        self.count = count
        self.arguments = list(arguments)
        self.reactor = reactor
        self.workers: dict[int, _WorkerProcess] = {}
        self.started_at: dict[int, float] = {}  # index -> reactor time of the last start
        self.restart_delay = FIRST_RESTART_DELAY
        self.pending_restarts: dict[int, IDelayedCall] = {}
        self.restarted: set[int] = set()  # indexes of the workers started more than once
        self.failure: str | None = None  # why the parent gave up, if it did
        self.notifier = Notifier()  # systemd's main process is the parent: it reports for all
        self.watchdog = task.LoopingCall(self.notifier.notify, WATCHDOG=1)
        self.watchdog.clock = reactor

    def give_up(self, reason: str, status: int = 1) -> None:
        """Stop the whole server: `reason` (one line) is logged and kept in `failure`; `status` is
        the exit status a subclass ends the process with (tap.py)."""
        log.error("zbifrost: {reason}", reason=reason)
        self.failure = reason
        self.reactor.stop()

    def privilegedStartService(self) -> None:
        """Bind the shared socket (a port in use raises CannotListenError, as without workers)."""
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listening.bind((self.config.host, self.config.port))
        except OSError as err:
            listening.close()
            raise CannotListenError(self.config.host, self.config.port, err) from None
        listening.listen(self.config.backlog)
        self.listening = listening
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        self.folder = tempfile.mkdtemp(prefix="zbifrost-workers-")
        for index in range(self.count):
            self.start_worker(index)
        signal.signal(signal.SIGHUP, lambda signum, frame: self.reactor.callFromThread(self.signal_all, signal.SIGHUP))
        self.notifier.notify(READY=1, STATUS=f"{self.count} workers on {self.config.host}:{self.config.port}")
        if self.notifier.watchdog_interval:
            self.watchdog.start(self.notifier.watchdog_interval)
        log.info("zbifrost parent: {count} workers on {host}:{port}", count=self.count, host=self.config.host,
                 port=self.config.port)

    def start_worker(self, index: int) -> None:
        self.pending_restarts.pop(index, None)
        environment = {name: value for name, value in os.environ.items() if name not in NOTIFY_ENV}
        environment.update({WORKER_ENV: str(index), BOARD_ENV: self.folder})
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                   "-n", "--pidfile=", "zbifrost", *self.arguments]
        worker = _WorkerProcess(self, index)
        transport = self.reactor.spawnProcess(worker, sys.executable, command, env=environment, path=os.getcwd(),
                                              childFDs={0: 0, 1: 1, 2: 2, SHARED_DESCRIPTOR: self.listening.fileno()})
        worker.pid = transport.pid
        self.workers[index] = worker
        self.started_at[index] = self.reactor.seconds()

    def worker_ended(self, worker: _WorkerProcess, exit_code: int | None, signal_number: int | None) -> None:
        index = worker.index
        if self.workers.get(index) is worker:
            del self.workers[index]
        try:
            os.remove(state_file(self.folder, index))
            got_up = True
        except FileNotFoundError:
            got_up = False
        if not self.running:
            return
        how = f"signal {signal_number}" if signal_number else f"exit status {exit_code}"
        if exit_code == CONFIG_REFUSED:  # its line above says why; every restart would say it again
            self.give_up(f"worker {index} was refused for its configuration ({how}); not restarting it, "
                         "stopping the other workers", CONFIG_REFUSED)
            return
        if not got_up and index not in self.restarted:
            # its very first start failed: a setting or file no worker can serve with (its line is above)
            self.give_up(f"worker {index} could not start ({how}); stopping the other workers")
            return
        self.restarted.add(index)
        if self.reactor.seconds() - self.started_at[index] >= YOUNG:
            self.restart_delay = FIRST_RESTART_DELAY
        delay = self.restart_delay
        self.restart_delay = min(delay * 2, MAX_RESTART_DELAY)  # for the next one, if this one dies young too
        log.warn("zbifrost worker {index} (pid {pid}) ended with {how}; restarting it in {delay} s", index=index,
                 pid=worker.pid, how=how, delay=delay)
        self.pending_restarts[index] = self.reactor.callLater(delay, self.start_worker, index)

    def signal_all(self, number: str | int) -> None:
        for worker in list(self.workers.values()):
            worker.transport.signalProcess(number)

    @defer.inlineCallbacks
    def stopService(self) -> Generator[defer.Deferred[Any], object, None]:
        yield super().stopService()
        self.notifier.notify(STOPPING=1, STATUS=f"stopping {len(self.workers)} workers")
        if self.watchdog.running:
            self.watchdog.stop()
        for call in self.pending_restarts.values():
            call.cancel()
        self.pending_restarts.clear()
        ended = [worker.ended for worker in self.workers.values()]
        self.signal_all("TERM")
        killer = self.reactor.callLater(self.config.shutdown_grace + STOP_MARGIN, self.signal_all, "KILL")
        yield defer.DeferredList(ended)
        if killer.active():
            killer.cancel()
        self.listening.close()
        shutil.rmtree(self.folder, ignore_errors=True)
