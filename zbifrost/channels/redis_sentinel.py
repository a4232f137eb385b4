"""Redis Sentinel for the Redis broker (`redis+sentinel://...`): the client endpoint that connects
to the master the sentinels name, and the watch that follows a failover at once.

Each connection attempt asks the sentinels, in the URL's order, `SENTINEL get-master-addr-by-name`
(the first that names the master wins) and connects there; the broker's handshake then checks
with ROLE that this Redis is a master still (`redis_connect`). One pub/sub connection to a
sentinel (the first that answers) listens for `+switch-master`: when it names another master,
the connections to the old one are closed, so that they reconnect to the new one (channels answer
broker_unavailable in between). The broker's connections retry at least every `FOLLOW_DELAY`
seconds, so that a failover is followed within about a second of the sentinels naming the new master.

Sentinels that require a password (`requirepass` in their config) get `AUTH` with the one in
ZBIFROST_SENTINEL_PASSWORD (the URL's password is the master's: the two often differ) first, on
every connection; a sentinel that refuses (a wrong or missing password) is logged once, never
with the password, until one accepts.

txredisapi's own `Sentinel` is not used: its discovery waits out a 10 s timeout whenever every
sentinel still sees the old master down, and it does not listen for `+switch-master`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import txredisapi
from twisted.internet import defer, endpoints, error
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from ..broker_url import BrokerURL

ASK_TIMEOUT = 2  # seconds for a sentinel to connect and answer
FOLLOW_DELAY = 1  # seconds: the longest wait between two connection attempts to the master
SWITCH_MASTER = "+switch-master"
PASSWORD_VARIABLE = "ZBIFROST_SENTINEL_PASSWORD"

log = Logger()


@implementer(IStreamClientEndpoint)
class _FirstOf:
    """Connects to the first of `choices` (endpoints) that accepts."""

    def __init__(self, choices: Sequence[IStreamClientEndpoint]) -> None:
        self.choices = choices

    @defer.inlineCallbacks
    def connect(self, factory: IProtocolFactory) -> Any:
        for choice in self.choices:
            try:
                return (yield choice.connect(factory))
            except Exception:
                continue
        raise error.ConnectError("no sentinel could be reached")


@implementer(IStreamClientEndpoint)
class SentinelEndpoint:
    """Connections to the master that `target`'s sentinels name; `start` and `stop` the watch."""

    def __init__(self, reactor: Any, target: BrokerURL, connect_timeout: float,
                 environ: Mapping[str, str] = os.environ) -> None:
        self.reactor = reactor
        self.target = target
        self.connect_timeout = connect_timeout
        self._password = environ.get(PASSWORD_VARIABLE) or None
        self._refusal_logged = False
        self.master: tuple[str, int] | None = None  # where the latest connection went
        self._sentinels = [endpoints.HostnameEndpoint(reactor, host, port, timeout=ASK_TIMEOUT)
                           for host, port in target.hosts]
        self._connections: set[Any] = set()  # protocols connected to self.master, while open
        self._watch = txredisapi.SubscriberFactory(isLazy=True)
        self._watch.maxDelay = FOLLOW_DELAY
        self._watch.protocol = type("_SwitchWatch", (txredisapi.SubscriberProtocol,), {
            "connectionMade": lambda protocol: self._watch_connection_made(protocol),
            "messageReceived": lambda protocol, pattern, channel, message: self.switched(message)})

    def start(self) -> None:
        self._watch.startConnecting(_FirstOf(self._sentinels))

    def stop(self) -> defer.Deferred[None]:
        return self._watch.disconnect().addCallback(lambda _: None)

    @defer.inlineCallbacks
    def connect(self, factory: IProtocolFactory) -> Any:
        master = yield self._ask()
        if master != self.master:
            log.info("channel broker {address}: the sentinels name {host}:{port} as master {name}",
                     address=self.target.address, host=master[0], port=master[1], name=self.target.master)
            self._close_all()
            self.master = master
        endpoint = endpoints.HostnameEndpoint(self.reactor, master[0], master[1], timeout=self.connect_timeout)
        protocol = yield endpoint.connect(factory)
        self._connections.add(protocol)
        protocol.whenDisconnected().addCallback(self._connections.discard)
        return protocol

    @defer.inlineCallbacks
    def _ask(self) -> Any:
        """(host, port) of the master, from the first sentinel that names it."""
        for sentinel in self._sentinels:
            try:
                asking = yield endpoints.connectProtocol(sentinel, txredisapi.RedisProtocol(replyTimeout=ASK_TIMEOUT))
            except Exception:
                continue
            try:
                yield self._log_in(asking)
                found = yield asking.execute_command("SENTINEL", "get-master-addr-by-name", self.target.master)
            except txredisapi.ResponseError as refused:  # NOAUTH: it wants a password
                self._refused(asking, refused)
                continue
            except Exception:
                continue
            finally:
                asking.transport.loseConnection()
            if isinstance(found, list) and len(found) == 2:
                return str(found[0]), int(found[1])
        raise error.ConnectError(f"no sentinel names a master {self.target.master}")

    def switched(self, message: str) -> None:
        """A `+switch-master` event: `<name> <old host> <old port> <new host> <new port>`."""
        name, *_old, host, port = message.split(" ")
        if name == self.target.master and (host, int(port)) != self.master:
            log.info("channel broker {address}: the sentinels switched master {name} to {host}:{port}",
                     address=self.target.address, name=name, host=host, port=port)
            self._close_all()

    def _close_all(self) -> None:
        for protocol in list(self._connections):
            protocol.transport.loseConnection()
        self._connections.clear()


    @defer.inlineCallbacks
    def _log_in(self, protocol: Any) -> Any:
        """AUTH on a sentinel connection, when there is a sentinel password: raises
        txredisapi.ResponseError when refused."""
        if self._password is None:
            return
        reply = yield protocol.execute_command("AUTH", self._password)
        if isinstance(reply, Exception):  # txredisapi hands some error replies back as values
            raise reply
        self._refusal_logged = False

    def _refused(self, protocol: Any, refusal: Exception) -> None:
        if not self._refusal_logged:
            self._refusal_logged = True
            peer = protocol.transport.getPeer()
            log.error("channel broker {address}: sentinel {host}:{port} refused: {why} "
                      "(check ZBIFROST_SENTINEL_PASSWORD)", address=self.target.address, host=peer.host,
                      port=peer.port, why=str(refusal))

    def _watch_connection_made(self, protocol: Any) -> Any:
        """A sentinel's pub/sub connection, once ready (and logged in), listens for +switch-master."""

        def refused(failure: Any) -> None:
            if failure.check(txredisapi.ResponseError):
                self._refused(protocol, failure.value)
                protocol.transport.loseConnection()  # the factory tries again

        listening = protocol.whenConnected().addCallback(self._log_in).addCallback(
            lambda _: protocol.subscribe(SWITCH_MASTER))
        listening.addErrback(refused).addErrback(lambda _: None)  # lost meanwhile: it reconnects
        return txredisapi.SubscriberProtocol.connectionMade(protocol)
