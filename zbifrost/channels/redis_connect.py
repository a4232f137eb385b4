"""How the Redis broker reaches its Redis (a `broker_url.BrokerURL`): `Connector` holds the
client endpoint (TCP; TLS checked against the system's CAs or the URL's `ca` file; or the master
that Sentinel names, `redis_sentinel`) and prepares the broker's txredisapi factories: each new
connection first logs in (AUTH with the URL's user and password, or ZBIFROST_BROKER_PASSWORD) and,
with Sentinel, checks with ROLE that it reached a master.

A refused login or a failed TLS handshake closes that connection (txredisapi tries again with its
backoff) and is logged once, with the reason and never the password, until a connection succeeds.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..broker_url import SENTINEL, BrokerURL
from .redis_sentinel import FOLLOW_DELAY, SentinelEndpoint

CONNECT_TIMEOUT = 5  # seconds; also when a broker not reached since start-up counts as an outage
_PEM_END = b"-----END CERTIFICATE-----"

log = Logger()


class Connector:
    """The endpoint of `target` and the handshake of its connections; `start` and `stop` with the broker."""

    def __init__(self, reactor: Any, target: BrokerURL) -> None:
        self.endpoint = client_endpoint(reactor, target)
        self.handshake = Handshake(target)

    def prepare(self, factory: Any) -> None:
        """Make `factory` (a txredisapi RedisFactory) connect through the handshake; with
        Sentinel, retry often enough to follow a failover."""
        factory.protocol = self.handshake.protocol(factory.protocol)
        if isinstance(self.endpoint, SentinelEndpoint):
            factory.maxDelay = FOLLOW_DELAY

    def start(self) -> None:
        if isinstance(self.endpoint, SentinelEndpoint):
            self.endpoint.start()

    def stop(self) -> defer.Deferred[None]:
        return self.endpoint.stop() if isinstance(self.endpoint, SentinelEndpoint) else defer.succeed(None)


def client_endpoint(reactor: Any, target: BrokerURL) -> IStreamClientEndpoint:
    """Where `target`'s connections go; with TLS, its certificate must name `target.host`."""
    if target.scheme == SENTINEL:
        return SentinelEndpoint(reactor, target, CONNECT_TIMEOUT)
    endpoint = endpoints.HostnameEndpoint(reactor, target.host, target.port, timeout=CONNECT_TIMEOUT)
    if not target.tls:
        return endpoint
    from twisted.internet import ssl  # needs pyOpenSSL (zbifrost[tls]), which broker_url checks for rediss://

    trust = None  # the system's CAs
    if target.ca is not None:
        with open(target.ca, "rb") as pem:
            blocks = pem.read().split(_PEM_END)[:-1]
        trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(block + _PEM_END) for block in blocks])
    return endpoints.wrapClientTLS(ssl.optionsForClientTLS(target.host, trust), endpoint)


class Handshake:
    """What each new connection to `target` does before it is used, and the log line when that fails."""

    def __init__(self, target: BrokerURL) -> None:
        self.target = target
        self._failure_logged = False

    def protocol(self, base: Any) -> Any:
        """`base` (a txredisapi protocol class) logging in (and with Sentinel checking ROLE)
        before its own connectionMade (SELECT, ready), and reporting a failed TLS handshake."""
        if self.target.password is None and not self.target.tls and self.target.master is None:
            return base
        handshake = self

        def connectionMade(protocol: Any) -> None:
            def go_on(accepted: bool) -> None:
                if accepted:
                    base.connectionMade(protocol)

            protocol.whenConnected().addCallback(handshake.succeeded)
            handshake.log_in(protocol).addCallback(handshake.check_role, protocol).addCallback(go_on)

        def connectionLost(protocol: Any, reason: Failure) -> None:
            if handshake.target.tls:
                from OpenSSL import SSL
                from service_identity import VerificationError

                if reason.check(SSL.Error, VerificationError):
                    handshake.failed("its TLS handshake failed", reason.getErrorMessage())
            base.connectionLost(protocol, reason)

        return type(base.__name__, (base,), {"connectionMade": connectionMade, "connectionLost": connectionLost})

    def succeeded(self, protocol: Any) -> None:
        self._failure_logged = False

    def failed(self, what: str, why: str) -> None:
        if not self._failure_logged:
            self._failure_logged = True
            log.error("channel broker {address}: {what}: {why}", address=self.target.address, what=what, why=why)

    def log_in(self, protocol: Any) -> defer.Deferred[bool]:
        """AUTH [user] password on `protocol` (when there is a password): True once accepted;
        False once refused or lost (the connection is closed)."""
        if self.target.password is None:
            return defer.succeed(True)
        user = (self.target.username,) if self.target.username else ()
        answer: defer.Deferred[Any] = protocol.execute_command("AUTH", *user, self.target.password)

        def accepted(reply: Any) -> bool:
            if isinstance(reply, Exception):  # txredisapi hands some error replies back as values
                raise reply
            return True

        def refused(failure: Failure) -> bool:
            if failure.check(txredisapi.ResponseError):
                self.failed(f"it refused the login (user {self.target.username or 'default'})",
                            f"{failure.getErrorMessage()} "
                            "(check the broker URL's password or ZBIFROST_BROKER_PASSWORD)")
            protocol.transport.loseConnection()
            return False

        return answer.addCallbacks(accepted, refused)

    def check_role(self, logged_in: bool, protocol: Any) -> defer.Deferred[bool]:
        """With Sentinel, after the login: True when `protocol` reached a master, else False
        (the connection is closed: a demoted master the sentinels have not yet replaced)."""
        if not logged_in or self.target.master is None:
            return defer.succeed(logged_in)

        def is_master(role: Any) -> bool:
            if isinstance(role, list) and role and role[0] == "master":
                return True
            protocol.transport.loseConnection()
            return False

        return protocol.execute_command("ROLE").addCallbacks(is_master, lambda _: is_master(None))
