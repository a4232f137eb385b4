"""twistd glue: the `zbifrost` command-line options and `makeService`.

Flags are collected here and handed to `zbifrost.config.load_config`, which owns defaults,
precedence and validation. A bad setting or a port in use ends start-up with one line on
stderr and exit status 1, instead of a traceback or a server without a listener; a port in use
also removes twistd's pidfile and, when twistd has daemonised, reaches the launching command
through twistd's status pipe, so that it exits at once.

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
import sys

import twisted
from twisted.internet.error import CannotListenError
from twisted.python import usage

from . import __version__
from .config import ConfigError, load_config
from .logs import escape_twistd_default
from .reload import reload_config
from .service import BifrostService
from .systemd import inherited_sockets
from .workers import BOARD_ENV, OrphanWatch, WorkerBoard, WorkersParent, ignore_sigterm_once_stopping, worker_index

BOARD_INTERVAL = 0.5  # seconds between writes of a worker's state for the whole server's /healthz

# flag name -> Config attribute
_VALUE_FLAGS = {
    "port": "port",
    "interface": "host",
    "backlog": "backlog",
    "workspace": "workspace",
    "zvafile": "zvafile",
    "zblock": "zblock",
    "tokens": "tokens_file",
    "max-message-size": "max_message_size",
    "max-connections": "max_connections",
    "broker": "broker",
}


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Serve the commands of a zUI workspace to WebSocket clients (browsers and programs). "
                "Settings come from defaults < --config FILE < WEBSOCKET_* environment < these flags.")
    optFlags = [["require-auth", None, "Accept only clients with a valid token (see --tokens)."]]
    optParameters = [
        ["config", "c", None, "YAML config file (a websocket: section, zWorkspace, zVaFile, zBlock)."],
        ["port", "p", None, "TCP port to listen on [default: 18774]."],
        ["interface", "i", None, "Address to listen on [default: 127.0.0.1]."],
        ["backlog", None, None, "Listen backlog [default: 1024]."],
        ["workspace", "w", None, "Folder with the zUI files and plugins/ [default: the bundled demo]."],
        ["zvafile", None, None,
         "zPath of the zUI file to serve [default: the workspace's only zUI file, else @.zUI.level1]."],
        ["zblock", None, None, "Block clients start in [default: root if present, else the first]."],
        ["tokens", None, None, "YAML file of token hashes (python -m zbifrost.tokens add ...)."],
        ["max-message-size", None, None, "Largest client message in bytes [default: 65536]."],
        ["max-connections", None, None, "Most simultaneous clients [default: 10000]."],
        ["broker", None, None, "Keep channels in Redis, shared by every zbifrost using it: redis://host:port/db "
                               "[default: in this process]."],
        ["workers", None, None, "Run this many worker processes on one port (needs --broker) "
                                "[default: none, this process serves]."],
    ]

    def parseOptions(self, options=None):
        # kept as given: the workers of --workers are started with the same arguments
        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def postOptions(self):
        if self["workers"] is not None:
            if not self["workers"].isdigit() or int(self["workers"]) < 1:
                _fail(f"--workers: expected a number of processes (1 or more), got {self['workers']!r}")
            self["workers"] = int(self["workers"])

    def __init__(self):
        super().__init__()
        self["listen"] = []
        self["allowed-origin"] = []
        self["metrics-listen"] = []
        self["trusted-proxy"] = []

    def opt_version(self):
        """Print zbifrost's version and Twisted's, then exit."""
        print(f"zbifrost {__version__} (Twisted {twisted.__version__})")
        raise SystemExit(0)

    def opt_listen(self, description):
        """A strports endpoint to listen on, e.g. tcp:18774:interface=0.0.0.0 (repeatable;
        replaces --port and --interface)."""
        self["listen"].append(description)

    def opt_metrics_listen(self, description):
        """A strports endpoint serving only /metrics and /healthz, e.g. tcp:9101:interface=127.0.0.1
        (repeatable; /metrics then leaves the WebSocket port)."""
        self["metrics-listen"].append(description)

    def opt_trusted_proxy(self, network):
        """An address or network (10.0.0.0/8) of a reverse proxy whose X-Forwarded-For /
        X-Real-IP names the client (repeatable); from other peers those headers are ignored."""
        self["trusted-proxy"].append(network)

    def opt_allowed_origin(self, origin):
        """An Origin allowed to connect, as scheme://host[:port], or * (repeatable)."""
        self["allowed-origin"].append(origin)

    def overrides(self):
        """The Config attributes these flags set (only the ones given)."""
        values = {attr: self[flag] for flag, attr in _VALUE_FLAGS.items() if self[flag] is not None}
        if self["require-auth"]:
            values["require_auth"] = True
        if self["listen"]:
            values["listen"] = self["listen"]
        if self["metrics-listen"]:
            values["metrics_listen"] = self["metrics-listen"]
        if self["trusted-proxy"]:
            values["trusted_proxies"] = self["trusted-proxy"]
        if self["allowed-origin"]:
            values["allowed_origins"] = self["allowed-origin"]
        return values


def _fail(message, twistd_options=None):
    """Write `zbifrost: message` to stderr and exit with status 1; `twistd_options` (twistd's
    own options, once it has written its pidfile and maybe daemonised) is wound up first."""
    line = f"zbifrost: {message}"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    if twistd_options is not None:
        _wind_up_twistd_start(twistd_options, line)
    raise SystemExit(1)


def _wind_up_twistd_start(twistd_options, line):
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


class _OneLineBindFailure:
    """Under twistd a port in use ends the process with one clear line (twistd binds in
    privilegedStartService, after it has written its pidfile and daemonised, before it drops
    privileges)."""

    def privilegedStartService(self):
        try:
            super().privilegedStartService()
        except CannotListenError as err:
            _fail(f"cannot listen on {err.interface or '*'}:{err.port}: {err.socketError}", self.twistd_options)


class _EscapedTwistdLog:
    """Under twistd without `--logger`, twistd's own log observer gets escaped events too
    (zbifrost.logs): twistd asks the application for one after this service has joined it."""

    def setServiceParent(self, parent):
        escape_twistd_default(parent, self.twistd_options)
        super().setServiceParent(parent)


class _TwistdWorkersParent(_EscapedTwistdLog, _OneLineBindFailure, WorkersParent):
    """A parent that gives up (a worker could not start) exits with status 1 once every worker
    has stopped, like a bad setting (twistd itself would exit 0)."""

    def __init__(self, config, count, arguments, twistd_options, reactor=None):
        super().__init__(config, count, arguments, reactor=reactor)
        self.twistd_options = twistd_options

    def give_up(self, reason):
        super().give_up(reason)
        self.reactor.addSystemEventTrigger("after", "shutdown", self._exit_failed)

    def _exit_failed(self):
        if self.twistd_options and self.twistd_options.get("pidfile"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.twistd_options["pidfile"])
        sys.stderr.write(f"zbifrost: {self.failure}\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


class _TwistdService(_EscapedTwistdLog, _OneLineBindFailure, BifrostService):
    """The server of twistd: SIGHUP reloads the config file."""

    def __init__(self, config, twistd_options, reactor=None, inherited_sockets=(), config_file=None,
                 overrides=None):
        super().__init__(config, reactor=reactor, inherited_sockets=inherited_sockets)
        self.twistd_options = twistd_options
        self.config_file = config_file
        self.overrides = overrides

    def startService(self):
        # Everything loaded so far (Twisted, Autobahn, the workspace) lives as long as the
        # process: out of the collector's sight, a full collection walks only the objects made
        # since. With 1,000 subscribers and 20 connections coming and going a second, full
        # collections paused the reactor far longer before this was done (README, "Join/leave
        # fan-out"). twistd only: a test process starts many servers.
        gc.freeze()
        super().startService()
        # the handler only schedules the reload: it runs in the reactor thread, between events
        signal.signal(signal.SIGHUP, lambda signum, frame: self.reactor.callFromThread(self.reload))

    def reload(self):
        self.notifier.notify(RELOADING=1, STATUS="reloading the config file")
        reload_config(self.hub, self.config_file, self.overrides)
        self.factory.configure(self.hub.config)  # the protocol options of the next connections
        self.notifier.notify(READY=1, STATUS=f"{len(self.hub.clients)} clients")


def makeService(options, reactor=None):
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


def _check_workers(config, count):
    """Refuse what several workers cannot do: channels without a broker, listeners but one port."""
    if count > 1 and not config.broker:
        raise ConfigError(f"--workers {count} needs --broker redis://host:port/db: "
                          "without it each worker's channels would reach only its own clients")
    if config.listen or config.metrics_listen:
        raise ConfigError("--workers shares one port: use --port and --interface, not --listen or --metrics-listen")
