"""The service tree: the listener(s), the zUI reloader, and the graceful stop.

Constructing a `BifrostService` loads and checks the zUI file and the tokens (a problem is a
`ConfigError`) but binds nothing; starting it
binds every listener (a port in use raises `CannotListenError` from `startService`, so
nothing runs without a listener); stopping it shuts the clients down gracefully before the
listeners close, so `/healthz` can answer 503 meanwhile. A problem only found once running (a
list of broker shards other than the one recorded) goes to `refuse`.

Under systemd it adopts the sockets of socket activation when it is given them, and tells
systemd READY=1 once it listens, a STATUS= line with the clients every STATUS_INTERVAL
seconds (with WATCHDOG=1 at half of `WatchdogSec=`, when that is set) and STOPPING=1 when it
starts to stop.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, cast

from twisted.application import internet, service
from twisted.internet import defer, endpoints
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import compat
from .app_proxy import Application
from .auth import Credentials, JwtVerifier, TokenFileError, TokenStore
from .channels.sharded import ShardedBroker
from .config import ConfigError
from .hub import Hub
from .interfaces import IReactor
from .systemd import Notifier
from .web import build_metrics_site, build_site
from .wire.factory import WireFactory
from .zui.actions import ZuiError
from .zui.workspace import Workspace
from .zui.zpath import MissingZuiFile, ZPathError, zui_files

if TYPE_CHECKING:
    from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint

    from .config import Config

RELOAD_INTERVAL = 0.5  # seconds between checks of the zUI files' modification times
STATUS_INTERVAL = 10.0  # seconds between systemd STATUS= updates (shorter when the watchdog needs it)

log = Logger()


def listen_descriptions(config: Config) -> list[str]:
    """strports descriptions: `--listen` as given, else tcp on host:port with the backlog."""
    if config.listen:
        return list(config.listen)
    interface = config.host.replace(":", "\\:")
    return [f"tcp:{config.port}:interface={interface}:backlog={config.backlog}"]


class Listener(service.Service):
    """An endpoint listening for `factory` while the service runs. As with strports.service,
    a bind that fails at once raises from (privileged)startService; `port` is the IListeningPort."""

    def __init__(self, endpoint: IStreamServerEndpoint, factory: IProtocolFactory) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.port: IListeningPort | None = None
        self._binding = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._binding = True
        failed: list[Failure] = []
        self.endpoint.listen(self.factory).addCallbacks(self._bound, failed.append)
        if failed:
            self._binding = False
            failed[0].raiseException()

    def _bound(self, port: IListeningPort) -> None:
        self.port = port

    def startService(self) -> None:
        super().startService()
        if not self._binding:
            self.privilegedStartService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port, self._binding = self.port, None, False
        return port.stopListening() if port is not None else None


def listen(description: str, factory: IProtocolFactory, reactor: IReactor) -> Listener:
    return Listener(endpoints.serverFromString(reactor, description), factory)


class BifrostService(service.MultiService):
    """`inherited_sockets` ([(descriptor, family)], from zbifrost.systemd) replace the listeners
    of `config`; `notifier` reports to systemd when the environment names its socket."""

    def __init__(self, config: Config, reactor: IReactor | None = None,
                 inherited_sockets: Sequence[tuple[int, socket.AddressFamily]] = ()) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as installed

            reactor = cast(IReactor, installed)  # it provides IReactorFromThreads too
        self.config = config
        self.reactor = reactor
        self.application = (Application(config.proxy, reactor, config.max_message_size) if config.proxy is not None
                            else None)
        self.workspace = Workspace(config.workspace, self.application)
        zblock = self._check_zui()
        tokens = None
        if config.tokens_file or config.jwt:  # for the WebSocket only with require_auth, for POST /api/publish always
            try:
                tokens = Credentials(TokenStore(config.tokens_file) if config.tokens_file else None,
                                     JwtVerifier(config.jwt) if config.jwt else None)
            except TokenFileError as err:
                raise ConfigError(str(err)) from None
        assert config.zvafile is not None  # load_config fills it in
        self.hub = Hub(config, self.workspace, config.zvafile, zblock, tokens if config.require_auth else None,
                       reactor, api_tokens=tokens, application=self.application)
        self.factory = WireFactory(self.hub)
        # an HTTP connection idle for handshake_timeout is dropped: before an upgrade that bounds
        # the opening handshake, after one Autobahn's own openHandshakeTimeout takes over
        self.site = build_site(self.hub, self.factory, config.handshake_timeout)
        self.hub.channels.setServiceParent(self)  # a broker's connections: while the server runs
        if isinstance(self.hub.channels.broker, ShardedBroker):  # its list of shards is checked once connected
            self.hub.channels.broker.refused.addCallback(self.refuse)
        self.listeners: list[Listener] = []
        if inherited_sockets:
            self.where = [f"systemd socket {descriptor}" for descriptor, _ in inherited_sockets]
            for descriptor, family in inherited_sockets:
                endpoint = AdoptedStreamServerEndpoint(reactor, descriptor, family)
                self.listeners.append(Listener(endpoint, self.site))
        else:
            self.where = listen_descriptions(config)
            self.listeners = [listen(description, self.site, reactor) for description in self.where]
        for listener in self.listeners:
            listener.setServiceParent(self)
        self.metrics_listeners: list[Listener] = []
        if config.metrics_listen:
            metrics_site = build_metrics_site(self.hub)
            self.metrics_listeners = [listen(description, metrics_site, reactor)
                                      for description in config.metrics_listen]
        for listener in self.metrics_listeners:
            listener.setServiceParent(self)
        self._every(RELOAD_INTERVAL, self.workspace.refresh)
        self.notifier = Notifier()
        if self.notifier.enabled:
            self._every(min(STATUS_INTERVAL, self.notifier.watchdog_interval or STATUS_INTERVAL), self._report_status)

    def refuse(self, reason: str) -> None:
        """A problem found once started that this process must not serve with (one line): logged;
        its channels answer broker_unavailable. Under twistd, the process exits (zbifrost.tap)."""
        log.critical("{reason}", reason=reason)

    def _every(self, seconds: float, function: Callable[[], object]) -> None:
        timer = internet.TimerService(seconds, function)
        timer.clock = self.reactor
        timer.setServiceParent(self)

    def _report_status(self) -> None:
        watchdog = {"WATCHDOG": 1} if self.notifier.watchdog_interval else {}
        self.notifier.notify(STATUS=f"{len(self.hub.clients)} clients", **watchdog)

    def _check_zui(self) -> str:
        """Load the configured zUI file now, so that a bad one stops start-up; return the block."""
        config = self.config
        assert config.zvafile is not None  # load_config fills it in
        try:
            zfile = self.workspace.file(config.zvafile)
        except MissingZuiFile as err:
            # the operator may see the server's paths (clients get `<workspace>` instead)
            found = zui_files(err.folder)
            there = (f"zUI files there: {', '.join(found)} (pick one with --zvafile or zVaFile)" if found
                     else "no zUI file there")
            raise ConfigError(f"zVaFile: {err.for_operator()}; {there}") from None
        except ZPathError as err:
            raise ConfigError(f"zVaFile: {err}") from None
        except ZuiError as err:
            raise ConfigError(str(err)) from None
        zblock = config.zblock or zfile.default_block()
        if zblock not in zfile.blocks:
            raise ConfigError(f"zBlock: {zblock!r} is not a block of {config.zvafile} "
                              f"(it has {', '.join(zfile.blocks)})")
        return zblock

    def startService(self) -> None:
        super().startService()
        compat.report(log)
        log.info("zbifrost listening on {where}, serving {zvafile} from {workspace}",
                 where=", ".join(self.where), zvafile=self.hub.zvafile, workspace=self.workspace.root)
        if self.config.metrics_listen:
            log.info("/metrics and /healthz on {metrics_where}", metrics_where=", ".join(self.config.metrics_listen))
        self.notifier.notify(READY=1, STATUS=f"listening on {', '.join(self.where)}")

    @defer.inlineCallbacks
    def stopService(self) -> Generator[Deferred[Any], object, None]:
        self.notifier.notify(STOPPING=1, STATUS=f"stopping: closing {len(self.hub.clients)} clients")
        yield self.hub.shut_down(self.config.shutdown_grace)
        self.hub.thread_pool.stop()  # its threads are daemons: a stuck one never holds up the exit
        if self.application is not None:
            yield self.application.pool.closeCachedConnections()
        yield super().stopService()

    def ports(self) -> list[IListeningPort | None]:
        """The bound ports (after start): a list of IListeningPort."""
        return [listener.port for listener in self.listeners]
