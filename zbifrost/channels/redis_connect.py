"""How the Redis broker reaches its Redis (a `broker_url.BrokerURL`): the client endpoint, and
the login each new connection makes before it is used (AUTH with the URL's user and password,
or ZBIFROST_BROKER_PASSWORD).

A refused login closes that connection (txredisapi tries again with its backoff) and is logged
once, with Redis's answer and never the password, until a login succeeds again.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..broker_url import BrokerURL

CONNECT_TIMEOUT = 5  # seconds; also when a broker not reached since start-up counts as an outage

log = Logger()


def client_endpoint(reactor: Any, target: BrokerURL) -> IStreamClientEndpoint:
    """Where `target`'s connections go."""
    return endpoints.HostnameEndpoint(reactor, target.host, target.port, timeout=CONNECT_TIMEOUT)


class Login:
    """The AUTH that each new connection to `target` sends first, when it has a password."""

    def __init__(self, target: BrokerURL) -> None:
        self.target = target
        self._refusal_logged = False

    def protocol(self, base: Any) -> Any:
        """`base` (a txredisapi protocol class) logging in before its own connectionMade (SELECT, ready)."""
        if self.target.password is None:
            return base
        login = self

        def connectionMade(protocol: Any) -> None:
            def go_on(accepted: bool) -> None:
                if accepted:
                    base.connectionMade(protocol)

            login.log_in(protocol).addCallback(go_on)

        return type(base.__name__, (base,), {"connectionMade": connectionMade})

    def log_in(self, protocol: Any) -> defer.Deferred[bool]:
        """AUTH [user] password on `protocol`: True once accepted; False once refused or lost
        (the connection is closed)."""
        user = (self.target.username,) if self.target.username else ()
        answer: defer.Deferred[Any] = protocol.execute_command("AUTH", *user, self.target.password)

        def accepted(reply: Any) -> bool:
            if isinstance(reply, Exception):  # txredisapi hands some error replies back as values
                raise reply
            self._refusal_logged = False
            return True

        def refused(failure: Failure) -> bool:
            if failure.check(txredisapi.ResponseError) and not self._refusal_logged:
                self._refusal_logged = True
                log.error("channel broker {address} refused the login (user {user}): {answer}; check the "
                          "broker URL's password or ZBIFROST_BROKER_PASSWORD", address=self.target.address,
                          user=self.target.username or "default", answer=failure.getErrorMessage())
            protocol.transport.loseConnection()
            return False

        return answer.addCallbacks(accepted, refused)
