"""twistd glue: the `zbifrost` command-line options and `makeService`.

Flags are collected here and handed to `zbifrost.config.load_config`, which owns defaults,
precedence and validation. A bad setting or a port in use ends start-up with one line on
stderr and exit status 1, instead of a traceback or a server without a listener; a port in use
also removes twistd's pidfile and, when twistd has daemonised, reaches the launching command
through twistd's status pipe, so that it exits at once. A list of broker shards other than the
one recorded in the shards, found once connected, stops the process with one line and exit
status CONFIG_REFUSED (78, zbifrost.workers): the parent of `--workers` does not restart a
worker that exits so, and stops with that status itself.

Started by systemd socket activation (LISTEN_FDS for this process) without `--port` or
`--listen` (on the command line or in `listen:` of the config file), it serves on the inherited
sockets instead of the configured port. SIGHUP re-reads the config file (zbifrost.reload).
`--workers N` makes this process the parent of N workers on one port (zbifrost.workers); a
worker it starts adopts the parent's socket the same way.
"""

import contextlib
import gc
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NoReturn

from twisted.application import service
from twisted.internet.error import CannotListenError
from twisted.python import usage

import twisted

from . import __version__
from .config import SETTINGS, Config, ConfigError, load_config
from .logs import escape_twistd_default
from .reload import reload_config
from .service import BifrostService
from .systemd import inherited_sockets
from .workers import (
    BOARD_ENV,
    CONFIG_REFUSED,
    OrphanWatch,
    WorkerBoard,
    WorkersParent,
    ignore_sigterm_once_stopping,
    worker_index,
)

BOARD_INTERVAL = 0.5  # seconds between writes of a worker's state for the whole server's /healthz

# (flag, setting) of the settings given on the command line, each declared once in zbifrost.config
_FLAGS = [(setting.flag, setting) for setting in SETTINGS.values() if setting.flag is not None]


class Options(usage.Options):
    """twistd's `zbifrost` options: --config and --workers, and a flag for each setting that has one."""

    synopsis = "[options]"
    longdesc = ("Serve the commands of a zUI workspace to WebSocket clients (browsers and programs). "
                "Settings come from defaults < --config FILE < WEBSOCKET_* environment < these flags.")
    optFlags: ClassVar[list[list[str | None]]] = [
        [flag, setting.short, setting.help] for flag, setting in _FLAGS if setting.switch]
    optParameters: ClassVar[list[list[Any]]] = [
        ["config", "c", None, "YAML config file (a websocket: section, zWorkspace, zVaFile, zBlock)."],
        *([flag, setting.short, None, setting.help] for flag, setting in _FLAGS
          if not setting.switch and not setting.repeatable),
        ["workers", None, None, "Run this many worker processes on one port (needs --broker) "
                                "[default: none, this process serves]."],
    ]

    def __init__(self) -> None:
        super().__init__()
        for flag, setting in _FLAGS:
            if setting.repeatable:
                self[flag] = []

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        # kept as given: the workers of --workers are started with the same arguments
        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def postOptions(self) -> None:
        if self["workers"] is not None:
            if not self["workers"].isdigit() or int(self["workers"]) < 1:
                _fail(f"--workers: expected a number of processes (1 or more), got {self['workers']!r}")
            self["workers"] = int(self["workers"])

    def opt_version(self) -> None:
        """Print zbifrost's version and Twisted's, then exit."""
        print(f"zbifrost {__version__} (Twisted {twisted.__version__})")
        raise SystemExit(0)

    def overrides(self) -> dict[str, Any]:
        """The Config attributes these flags set (only the ones given)."""
        values: dict[str, Any] = {}
        for flag, setting in _FLAGS:
            value = self[flag]
            if setting.switch or setting.repeatable:
                if value:
                    values[setting.name] = True if setting.switch else value
            elif value is not None:
                values[setting.name] = value
        return values


def _collector(flag: str, help: str) -> Callable[[Options, str], None]:
    """The opt_ method of a repeatable flag: each use adds its value to the flag's list."""

    def collect(options: Options, value: str) -> None:
        options[flag].append(value)

    collect.__doc__ = help
    return collect


for _flag, _setting in _FLAGS:  # twistd finds an option's handler as a method of the class
    if _setting.repeatable:
        setattr(Options, "opt_" + _flag.replace("-", "_"), _collector(_flag, _setting.help))


def _fail(message: str, twistd_options: Mapping[str, Any] | None = None) -> NoReturn:
    """Write `zbifrost: message` to stderr and exit with status 1; `twistd_options` (twistd's
    own options, once it has written its pidfile and maybe daemonised) is wound up first."""
    line = f"zbifrost: {message}"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    if twistd_options is not None:
        _wind_up_twistd_start(twistd_options, line)
    raise SystemExit(1)


def _wind_up_twistd_start(twistd_options: Mapping[str, Any], line: str) -> None:
    """Do what twistd does for an exception at start-up (UnixApplicationRunner.postApplication),
    which SystemExit skips: answer the launcher waiting on the status pipe (without it, the
    launcher of a daemon waits forever) and remove the pidfile."""
    # the pidfile goes first: the launcher exits as soon as it reads the status
    if twistd_options.get("pidfile"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(twistd_options["pidfile"])
    status_pipe = twistd_options.get("statusPipe")
    if status_pipe is not None:
        # "1 <reason>": the launcher reads 100 bytes and prints them as the error
        os.write(status_pipe, b"1 " + line.encode("ascii", "backslashreplace")[:98])
        os.close(status_pipe)


class _OneLineBindFailure(service.Service):
    """Under twistd a port in use ends the process with one clear line (twistd binds in
    privilegedStartService, after it has written its pidfile and daemonised, before it drops
    privileges)."""

    twistd_options: Mapping[str, Any] | None

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as err:
            _fail(f"cannot listen on {err.interface or '*'}:{err.port}: {err.socketError}", self.twistd_options)


class _EscapedTwistdLog(service.Service):
    """Under twistd without `--logger`, twistd's own log observer gets escaped events too
    (zbifrost.logs): twistd asks the application for one after this service has joined it."""

    twistd_options: Mapping[str, Any] | None

    def setServiceParent(self, parent: service.IServiceCollection) -> None:
        escape_twistd_default(parent, self.twistd_options)
        super().setServiceParent(parent)


class _TwistdWorkersParent(_EscapedTwistdLog, _OneLineBindFailure, WorkersParent):
    """A parent that gives up (a worker could not start, or was refused for its configuration)
    exits with status 1 (or CONFIG_REFUSED) once every worker has stopped, like a bad setting
    (twistd itself would exit 0)."""

    def __init__(self, config: Config, count: int, arguments: Sequence[str],
                 twistd_options: Mapping[str, Any] | None, reactor: Any = None) -> None:
        super().__init__(config, count, arguments, reactor=reactor)
        self.twistd_options = twistd_options

    def give_up(self, reason: str, status: int = 1) -> None:
        super().give_up(reason, status)
        self.reactor.addSystemEventTrigger("after", "shutdown", _exit_failed, reason, self.twistd_options, status)


def _exit_failed(reason: str, twistd_options: Mapping[str, Any] | None, status: int = 1) -> None:
    """Once the reactor has stopped: end the process with `zbifrost: reason` and exit `status`
    (twistd itself would exit 0), its pidfile removed."""
    if twistd_options and twistd_options.get("pidfile"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(twistd_options["pidfile"])
    sys.stderr.write(f"zbifrost: {reason}\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class _TwistdService(_EscapedTwistdLog, _OneLineBindFailure, BifrostService):
    """The server of twistd: SIGHUP reloads the config file."""

    def __init__(self, config: Config, twistd_options: Mapping[str, Any] | None, reactor: Any = None,
                 inherited_sockets: Sequence[tuple[int, socket.AddressFamily]] = (), config_file: str | None = None,
                 overrides: Mapping[str, Any] | None = None) -> None:
        super().__init__(config, reactor=reactor, inherited_sockets=inherited_sockets)
        self.twistd_options = twistd_options
        self.config_file = config_file
        self.overrides = overrides

    def startService(self) -> None:
        # Everything loaded so far (Twisted, Autobahn, the workspace) lives as long as the
        # process: out of the collector's sight, a full collection walks only the objects made
        # since. With 1,000 subscribers and 20 connections coming and going a second, full
        # collections paused the reactor far longer before this was done (README, "Join/leave
        # fan-out"). twistd only: a test process starts many servers.
        gc.freeze()
        super().startService()
        # the handler only schedules the reload: it runs in the reactor thread, between events
        signal.signal(signal.SIGHUP, lambda signum, frame: self.reactor.callFromThread(self.reload))

    def refuse(self, reason: str) -> None:
        super().refuse(reason)
        self.reactor.addSystemEventTrigger("after", "shutdown", _exit_failed, reason, self.twistd_options,
                                           CONFIG_REFUSED)
        self.reactor.stop()

    def reload(self) -> None:
        self.notifier.notify(RELOADING=1, STATUS="reloading the config file")
        reload_config(self.hub, self.config_file, self.overrides)
        self.factory.configure(self.hub.config)  # the protocol options of the next connections
        self.notifier.notify(READY=1, STATUS=f"{len(self.hub.clients)} clients")


def makeService(options: Options, reactor: Any = None) -> service.Service:
    try:
        config = load_config(options["config"], overrides=options.overrides())
        # options.parent: twistd's own options (pidfile, status pipe) when run as `twistd zbifrost`
        twistd_options = getattr(options, "parent", None)
        index = worker_index()
        if options["workers"] is not None and index is None:
            _check_workers(config, options["workers"])
            return _TwistdWorkersParent(config, options["workers"], options.arguments, twistd_options,
                                        reactor=reactor)
        if index is not None:  # a worker: the parent's socket, described as systemd would
            activated = inherited_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"})
        else:
            activated = [] if options["port"] or config.listen else inherited_sockets()
        server = _TwistdService(config, twistd_options, reactor=reactor, inherited_sockets=activated,
                                config_file=options["config"], overrides=options.overrides())
        if index is not None:
            server.hub.worker_board = WorkerBoard(os.environ[BOARD_ENV], index, server.hub)
            server._every(BOARD_INTERVAL, server.hub.worker_board.publish)
            server._every(BOARD_INTERVAL, OrphanWatch(server.reactor).check)
            ignore_sigterm_once_stopping(server.reactor)
        return server
    except ConfigError as err:
        _fail(str(err))


def _check_workers(config: Config, count: int) -> None:
    """Refuse what several workers cannot do: channels without a broker, listeners but one port."""
    if count > 1 and not config.broker:
        raise ConfigError(f"--workers {count} needs --broker redis://host:port/db: "
                          "without it each worker's channels would reach only its own clients")
    if config.listen or config.metrics_listen:
        raise ConfigError("--workers shares one port: use --port and --interface, not --listen or --metrics-listen")
