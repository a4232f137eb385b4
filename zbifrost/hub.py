"""Hub: the one object that owns what all sessions share, passed explicitly to whoever needs it.

It owns the registry of open sessions (`clients`), the TCP connections still in their opening
handshake (`Handshakes`) and those refused at auth and still closing, the services every
session uses (workspace, dispatcher, query cache, channel backend and rules, token store,
origin policy, trusted proxies, metrics, pool threads, the server API's control), the current config, and the graceful
shutdown of the clients. It knows sessions, never their connections' frames; the Autobahn
factory (zbifrost.wire.factory) only builds protocols.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

from . import messages
from .auth import ANONYMOUS, Credentials, OriginPolicy
from .broker_url import parse_broker
from .cache import QueryCache
from .channels import SERVER_SENDER
from .channels.memory import MemoryBroker, MemoryPresence
from .channels.node import Channels
from .channels.redis import RedisBroker
from .channels.redis_presence import RedisPresence
from .channels.rules import ChannelRules
from .channels.sharded import ShardedBroker, ShardedPresence
from .config import Config
from .control import Control
from .dispatcher import Dispatcher
from .interfaces import IReactor
from .messages import JSON, JSONValue
from .metrics import Metrics
from .proxies import TrustedProxies
from .session import CLOSE_SHUTDOWN, Connection, Session
from .thread_pool import FairThreadPool

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, ITCPTransport

    from .app_proxy import Application
    from .workers import WorkerBoard
    from .zui.workspace import Workspace

# `realtime_sync` (zBifrost 1.5.4's name) is listed with `channels`: channels are its realtime sync.
FEATURES = ["connection_info", "dispatch", "discover", "query_cache", "schema_cache", "channels", "realtime_sync",
            "progress", "input", "channel_history", "presence", "server_api"]

log = Logger()


def _new_client_id() -> str:
    return "c-" + secrets.token_hex(8)


class Handshakes:
    """TCP connections still in their opening handshake (docs/protocol.md section 1).

    Each gets a deadline at accept: unless its WebSocket opens first, it is dropped then,
    however its bytes trickle in (twisted.web's own timeout restarts on every byte). They
    count toward `max_connections`. Keyed by transport: the HTTP channel begins the deadline
    and the WebSocket protocol that takes the same transport over ends it.
    """

    def __init__(self, reactor: IReactor, timeout: float) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self._deadlines: dict[ITCPTransport, IDelayedCall] = {}

    def __len__(self) -> int:
        return len(self._deadlines)

    def begin(self, transport: ITCPTransport) -> None:
        self._deadlines[transport] = self.reactor.callLater(self.timeout, self._expired, transport)

    def allow(self, transport: ITCPTransport, seconds: float) -> None:
        """Keep the deadline of `transport` at least `seconds` away: the server, not the client, is
        slow now (the connect proxy is being asked, and nothing more is read from the client)."""
        deadline = self._deadlines.get(transport)
        if deadline is not None and deadline.getTime() - self.reactor.seconds() < seconds:
            deadline.reset(seconds)

    def end(self, transport: ITCPTransport) -> None:
        deadline = self._deadlines.pop(transport, None)
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _expired(self, transport: ITCPTransport) -> None:
        del self._deadlines[transport]
        transport.abortConnection()


class Hub:
    def __init__(self, config: Config, workspace: Workspace, zvafile: str, zblock: str, tokens: Credentials | None,
                 reactor: IReactor, api_tokens: Credentials | None = None,
                 application: Application | None = None) -> None:
        self.config = config
        self.workspace = workspace
        self.reactor = reactor
        self.started = time.time()
        self.clients: dict[str, Session] = {}  # client_id -> Session, for open sessions
        self.handshakes = Handshakes(reactor, config.handshake_timeout)
        self.refused_closing: set[Connection] = set()  # connections refused at auth, given time to answer their close
        self.authenticated_clients = 0
        self.stopping = False
        self._all_closed: defer.Deferred[None] | None = None
        self.metrics = Metrics()
        if len(config.broker) > 1:
            shards = ShardedBroker([RedisBroker(reactor, parse_broker(url)) for url in config.broker])
            self.channels = Channels(shards, ShardedPresence(shards, config.presence_ttl))
        elif config.broker:
            broker = RedisBroker(reactor, parse_broker(config.broker[0]))
            self.channels = Channels(broker, RedisPresence(broker, config.presence_ttl))
        else:
            self.channels = Channels(MemoryBroker(reactor, config.history_max_bytes), MemoryPresence())
        self.control = Control(self, self.channels.broker)  # the server API's reach over every process
        self.channel_rules = ChannelRules(config.channels)
        self.cache = QueryCache(config.cache_size)
        self.dispatcher = Dispatcher(workspace, self.cache, reactor, config.command_timeout)
        assert config.threads_max is not None  # load_config fills it in
        self.thread_pool = FairThreadPool(reactor, config.threads, config.threads_per_client, config.threads_max)
        self.tokens = tokens  # zbifrost.auth.Credentials when require_auth is on, else None
        self.api_tokens = api_tokens  # the Credentials of POST /api/publish, whenever a tokens file or jwt is given
        self.origin_policy = OriginPolicy(config.allowed_origins)
        self.trusted_proxies = TrustedProxies(config.trusted_proxies)
        self.anonymous = dict(ANONYMOUS)
        self.application = application  # the proxies of the `proxy:` section (zbifrost.app_proxy), if any
        self.features = (list(FEATURES) + ["refresh"] + (["jwt"] if config.jwt else []) + list(self.channels.features)
                         + (["proxy"] if application is not None else []))
        self.zvafile = zvafile  # where new sessions start
        self.zblock = zblock
        self.worker_board: WorkerBoard | None = None  # a worker of --workers: its zbifrost.workers.WorkerBoard

    def publish_from_backend(self, channel: str, data: JSONValue,
                             idempotency_key: str | None = None) -> defer.Deferred[JSON]:
        """Publish as the trusted backend (plugins, POST /api/publish): past the channel rules,
        to every subscriber, `"from": "server"`. Reactor thread; fires with
        `{"channel", "epoch", "offset"}` (the first publish's, for a repeated `idempotency_key`)."""
        published = self.channels.publish(channel, data, SERVER_SENDER, self.channel_rules.history(channel),
                                          idempotency_key)
        return published.addCallback(lambda found: {"channel": channel, "epoch": found["epoch"],
                                                    "offset": found["offset"]})

    def reconfigure(self, config: Config) -> None:
        """Use `config` from now on (a SIGHUP reload): origins and limits apply to the next
        connection or message, channel rules to the next subscribe or publish; open connections
        keep their frame size and ping options (zbifrost.wire.factory), and subscriptions stay."""
        self.config = config
        self.origin_policy = OriginPolicy(config.allowed_origins)
        self.channel_rules = ChannelRules(config.channels)
        if self.application is not None:
            self.application.max_answer = config.max_message_size

    # -- the client registry ---------------------------------------------------------------

    def refusal(self, origin: str | None, host: str | None) -> tuple[str, int, str] | None:
        """Why an upgrade with this Origin and Host header would be refused now, in the order of
        docs/protocol.md section 2: (reason for the log, HTTP status, text), or None."""
        if self.stopping:
            return "stopping", 503, "Server is shutting down"
        # the connection asking is one of the handshakes still in progress
        if len(self.clients) + len(self.handshakes) + len(self.refused_closing) > self.config.max_connections:
            return "max_connections", 503, "Too many connections"
        if not self.origin_policy.allows(origin, host):
            return "origin", 403, "Origin not allowed"
        return None

    def new_client_id(self) -> str:
        """A client id no open session has now."""
        client_id = _new_client_id()
        while client_id in self.clients:  # 64 random bits: a repeat is all but impossible, never harmful
            client_id = _new_client_id()
        return client_id

    def register(self, session: Session, client_id: str | None = None) -> str:
        """Add an open session to the registry; returns its unique client id: `client_id` (the one
        the connect proxy was told) unless an open session has taken it meanwhile."""
        if client_id is None or client_id in self.clients:
            client_id = self.new_client_id()
        self.clients[client_id] = session
        self.metrics.connections_total += 1
        if session.authenticated:
            self.authenticated_clients += 1
        return client_id

    def unregister(self, session: Session) -> None:
        if self.clients.pop(session.client_id, None) is not None and session.authenticated:
            self.authenticated_clients -= 1
        if self._all_closed is not None and not self.clients:
            waiting, self._all_closed = self._all_closed, None
            waiting.callback(None)

    # -- graceful shutdown -----------------------------------------------------------------

    @defer.inlineCallbacks
    def shut_down(self, grace: float) -> Generator[defer.Deferred[Any], object, None]:
        """Refuse new work, tell every client, give commands in flight `grace` seconds to reply,
        close everyone with 1001, and fire once all connections are gone (bounded in time)."""
        self.stopping = True
        if not self.clients:
            return
        log.info("Shutting down: {count} client(s), {grace} s for commands in flight",
                 count=len(self.clients), grace=grace)
        self._all_closed = defer.Deferred()
        frame = messages.event_frame("server_shutdown", message="Server is shutting down")
        for session in list(self.clients.values()):
            session.begin_shutdown(frame)
        yield self._wait_for_clients(grace)
        for session in list(self.clients.values()):
            session.close(*CLOSE_SHUTDOWN)
        yield self._wait_for_clients(2.0)  # the close handshake, then Autobahn drops the TCP link
        for session in list(self.clients.values()):
            session.connection.abort()

    def _wait_for_clients(self, seconds: float) -> defer.Deferred[None]:
        if not self.clients or self._all_closed is None:
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred()

        def done() -> None:
            if not waiting.called:
                waiting.callback(None)

        timer = self.reactor.callLater(seconds, done)

        def closed(_: object) -> None:
            if timer.active():
                timer.cancel()
            done()

        self._all_closed.addBoth(closed)
        return waiting
