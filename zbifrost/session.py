"""Session: one client's state, as a plain object that the event handlers receive.

It owns the client's identity and token expiry, its rate limiter, its commands in flight, its
subscriptions and zDialog inputs, its place in the zUI (`place`), the opening-handshake checks
of docs/protocol.md section 2 (`admit`), calling the handlers (`receive`, the hot path: parse, look
up the handler, reply; a result that is not a Deferred is answered at once, with no timers,
logging or thread hops) and turning failures into error replies (`error_for`, the one place
that does it). It sends through its connection's `send_frame` and `deliver` and closes through
its `close`; it never sees Autobahn or frames beyond their encoded bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import messages
from .auth import Identity, InvalidToken, bearer_token
from .context import Place
from .events import HANDLERS
from .events.session import connection_info
from .logs import log_failure_with_id
from .messages import COMMAND_FAILED, JSON, RATE_LIMITED, TIMEOUT, UNKNOWN_EVENT, JSONValue, RequestError, RequestId
from .ratelimit import ABUSIVE, LIMITED, RateLimiter

if TYPE_CHECKING:
    from autobahn.websocket.types import ConnectionRequest
    from twisted.internet.interfaces import IAddress, IDelayedCall

    from .hub import Hub

CLOSE_SHUTDOWN = (1001, "Server shutdown")
CLOSE_AUTH_REQUIRED = (1008, "Authentication required")
CLOSE_INVALID_TOKEN = (1008, "Invalid token")
CLOSE_TOKEN_EXPIRED = (1008, "Token expired")
CLOSE_RATE = (1008, "Rate limit exceeded")
CLOSE_INTERNAL = (1011, "Internal error")

_Deferred = defer.Deferred
T = TypeVar("T")


class Connection(Protocol):
    """What a session sends through and closes: its wire protocol (zbifrost.wire.protocol)."""

    def send_frame(self, frame: bytes) -> bool: ...
    def deliver(self, frame: bytes) -> bool: ...
    def close(self, code: int, reason: str) -> None: ...
    def can_send(self) -> bool: ...
    def abort(self) -> None: ...


def _query_token(request: ConnectionRequest) -> str | None:
    for name in ("token", "api_key"):
        values = request.params.get(name)
        if values and values[0]:
            return values[0]
    return None


class Session:
    """One client, from its upgrade request to the end of its connection (`connection`, the
    wire protocol it sends through)."""

    _log = Logger()

    # `identity` is set by `admit`, `client_id` and `place` by `opened`: the handlers, the dispatcher
    # and plugins only ever see an open session, so their types are those of an open session's
    client_id: str = None  # type: ignore[assignment]  # set once open and registered in the hub
    identity: JSON = None  # type: ignore[assignment]  # authenticated, user, role, expires
    place: Place = None  # type: ignore[assignment]  # where the client is in the zUI, once open
    peer: str | None = None
    refusal: tuple[int, str] | None = None  # close code and reason for a connection whose handshake failed auth
    asking: defer.Deferred[None] | None = None  # the connect proxy's answer, which the upgrade waits for
    _wanted_id: str | None = None  # the client id the connect proxy was told, taken when the session opens
    _credential: Identity | None = None  # the Identity of the token the connection is authenticated by
    _expiry_call: IDelayedCall | None = None  # the reactor call closing the connection when that token expires
    _limiter: RateLimiter | None = None
    _shutting_down = False
    # created on first use, as most connections never subscribe or answer a zDialog
    subscriptions: set[str] | None = None  # channel names
    _subscribing: dict[str, list[Callable[[], object]]] | None = None  # channel -> what waits for its subscribe reply
    pending_inputs: dict[str, defer.Deferred[JSONValue]] | None = None  # input_request id -> its input_response

    def __init__(self, hub: Hub, connection: Connection) -> None:
        self.hub = hub
        self.connection = connection
        self.send_frame = connection.send_frame  # bound: a reply costs no call more
        self.deliver = connection.deliver
        self.close = connection.close
        self.in_flight = 0  # dispatches not yet answered

    # -- opening ---------------------------------------------------------------------------

    def admit(self, request: ConnectionRequest, transport_peer: IAddress) -> tuple[int, str] | None:
        """Check an upgrade request (docs/protocol.md section 2): (HTTP status, text) to refuse it
        now, else None. A missing or invalid token is refused after the upgrade, with a 1008
        close (`refusal`), so that a browser learns why."""
        hub = self.hub
        self.peer = hub.trusted_proxies.describe(transport_peer, request.peer, request.headers.get)
        refused = hub.refusal(request.headers.get("origin"), request.headers.get("host"))
        if refused is not None:
            reason, status, text = refused
            self._log_refusal(reason, request)
            return status, text
        # with auth off a token names nobody, so the connect proxy is asked whatever the upgrade carries
        token = None if hub.tokens is None else (
            _query_token(request) or bearer_token(request.headers.get("authorization")))
        if not token and hub.application is not None and hub.application.settings.connect is not None:
            self.asking = self._ask_application(request, transport_peer)
            return None
        if hub.tokens is None:
            self.identity = hub.anonymous
            return None
        if not token:
            self.refusal = CLOSE_AUTH_REQUIRED
            self._log_refusal("no_token", request)
            return None
        try:
            self.authenticate(hub.tokens.identify(token))
        except InvalidToken as err:
            self.refusal = CLOSE_INVALID_TOKEN
            self._log_refusal("invalid_token", request, f": {err}")
        return None

    def _ask_application(self, request: ConnectionRequest, transport_peer: IAddress) -> defer.Deferred[None]:
        """Ask the connect proxy (docs/protocol.md section 13) who this upgrade is; fires once the
        session is authenticated or has its `refusal`."""
        hub = self.hub
        assert hub.application is not None
        self._wanted_id = hub.new_client_id()
        host = getattr(transport_peer, "host", None)  # None: a Unix socket
        remote_addr = self.peer if host is None else hub.trusted_proxies.client_address(host, request.headers.get)
        facts = {"client_id": self._wanted_id, "remote_addr": remote_addr, "origin": request.headers.get("origin"),
                 "path": request.path}

        def answered(outcome: Identity | tuple[int, str]) -> None:
            if isinstance(outcome, Identity):
                self.authenticate(outcome)
                return
            self.refusal = outcome
            self._log_refusal("proxy_refused" if outcome[0] == 1008 else "proxy_unavailable", request,
                              f": {outcome[1]}")

        return hub.application.connect(facts, request.headers).addCallback(answered)

    def _log_refusal(self, reason: str, request: ConnectionRequest, detail: str = "") -> None:
        """Count and log a refused connection: the reason and the peer, never a token."""
        self.hub.metrics.refused(reason)
        self._log.warn("Refused a connection from {peer}: {reason}{detail} (origin {origin})", peer=self.peer,
                       reason=reason, detail=detail, origin=messages.quote(request.headers.get("origin", "none")))

    def opened(self) -> None:
        """The connection is open: register, watch the token's expiry, send connection_info."""
        hub = self.hub
        config = hub.config
        self.place = Place(hub.zvafile, hub.zblock)
        self._limiter = RateLimiter(config.rate, config.burst) if config.rate else None
        self._watch_expiry()
        self.client_id = hub.register(self, self._wanted_id)
        self.send_frame(messages.event_frame("connection_info", data=connection_info(self)))

    @property
    def authenticated(self) -> bool:
        """Whether a credential names this client (a token, or the connect proxy's answer), not
        the anonymous identity of auth off."""
        return self._credential is not None

    def authenticate(self, credential: Identity) -> None:
        """Act as the identity of a token (zbifrost.auth.Identity) from now on, until it expires."""
        self._credential = credential
        expires = None if credential.expires is None else int(credential.expires)
        self.identity = {"authenticated": True, "user": credential.user, "role": credential.role, "expires": expires}
        if self.client_id is not None:
            self._watch_expiry()

    def _watch_expiry(self) -> None:
        """One reactor call per connection closes it when its token expires (plus a JWT's leeway)."""
        self._stop_expiry_watch()
        credential = self._credential
        if credential is not None and credential.expires is not None:
            delay = max(0.0, credential.expires + credential.leeway - time.time())
            self._expiry_call = self.hub.reactor.callLater(delay, self._token_expired)

    def _stop_expiry_watch(self) -> None:
        if self._expiry_call is not None and self._expiry_call.active():
            self._expiry_call.cancel()
        self._expiry_call = None

    def _token_expired(self) -> None:
        self._expiry_call = None
        self._log.info("Closing the connection of {peer}: its token expired", peer=self.peer)
        self.close(*CLOSE_TOKEN_EXPIRED)

    # -- the hot path ----------------------------------------------------------------------

    def receive(self, payload: bytes, isBinary: bool) -> None:
        """One message of an open connection (the connection's `onMessage`)."""
        hub = self.hub
        hub.metrics.messages_in += 1
        verdict = self._limiter.check() if self._limiter is not None else 0
        if verdict == ABUSIVE:
            self.close(*CLOSE_RATE)
            return
        req_id = None
        try:
            message = messages.parse(payload)
            req_id = messages.request_id(message)
            messages.check_depth(message, payload)
            if verdict == LIMITED:
                raise RequestError(RATE_LIMITED, "Too many messages: slow down")
            handler = HANDLERS.get(message["event"])
            if handler is None:
                raise RequestError(UNKNOWN_EVENT, f"Unknown event: {messages.quote(message['event'])}")
            result = handler(self, message, req_id)
        except Exception as err:
            self._send_error(err, req_id)
            return
        if type(result) is _Deferred:
            self._track(result, req_id)
        elif result is not messages.NO_REPLY:
            self._send_result(result, req_id)

    def _send_result(self, result: JSONValue, req_id: RequestId) -> None:
        try:
            frame = messages.result_frame(result, req_id)
        except TypeError as err:  # a plugin returned something JSON cannot hold
            self._send_error(err, req_id)
            return
        self.send_frame(frame)

    def _send_error(self, err: BaseException | Failure, req_id: RequestId) -> None:
        error = self.error_for(err)
        self.hub.metrics.error(error.code)
        self.send_frame(messages.error_frame(error, req_id))

    def error_for(self, err: BaseException | Failure) -> RequestError:
        """The one place where a failure becomes an error reply."""
        failure = err if isinstance(err, Failure) else Failure(err)
        value = failure.value
        if isinstance(value, RequestError):
            return value
        if isinstance(value, (defer.TimeoutError, defer.CancelledError)):
            return RequestError(TIMEOUT, "The command did not finish within its timeout")
        error_id = log_failure_with_id(self._log, failure, "Command failed (error id {error_id}, client {client_id})",
                                       client_id=self.client_id)
        return RequestError(COMMAND_FAILED, f"The command failed (error id {error_id})")

    def _track(self, deferred: defer.Deferred[Any], req_id: RequestId) -> None:
        """Reply when an asynchronous result arrives, if this connection is still open."""
        self.in_flight += 1
        started = time.perf_counter()

        def done(outcome: object) -> None:
            self.in_flight -= 1
            self.hub.metrics.observe_command(time.perf_counter() - started)
            if self.connection.can_send():
                if isinstance(outcome, Failure):
                    self._send_error(outcome, req_id)
                elif outcome is not messages.NO_REPLY:  # the handler has replied itself
                    self._send_result(outcome, req_id)
                if self._shutting_down and not self.in_flight:
                    self.close(*CLOSE_SHUTDOWN)
            elif isinstance(outcome, Failure) and not outcome.check(defer.CancelledError, defer.TimeoutError):
                self.error_for(outcome)  # the asker is gone; still log the failure with an id

        deferred.addBoth(done)

    # -- channels --------------------------------------------------------------------------

    def answering_subscribe(self, channel: str, answered: defer.Deferred[T]) -> defer.Deferred[T]:
        """Note that a subscribe to `channel` is being answered until `answered` fires; what
        `after_subscribe` held back for it runs then, after the reply."""
        if answered.called:
            return answered
        if self._subscribing is None:
            self._subscribing = {}
        waiting = self._subscribing[channel] = []

        def over(result: T | Failure) -> T | Failure:
            if self._subscribing is not None and self._subscribing.get(channel) is waiting:
                del self._subscribing[channel]
            for action in waiting:
                action()
            return result

        return answered.addBoth(over)

    def after_subscribe(self, channel: str, action: Callable[[], object]) -> None:
        """Run `action` (an unsubscribe's reply or `unsubscribed` event) now, or once the
        subscribe to `channel` under way has been answered: it never overtakes that reply."""
        waiting = self._subscribing.get(channel) if self._subscribing else None
        if waiting is None:
            action()
        else:
            waiting.append(action)

    # -- closing ---------------------------------------------------------------------------

    def begin_shutdown(self, frame: bytes) -> None:
        """Tell the client the server is stopping; close 1001 once its commands have replied."""
        self.send_frame(frame)
        self._shutting_down = True
        if not self.in_flight:
            self.close(*CLOSE_SHUTDOWN)

    def closed(self) -> None:
        """The connection has ended: forget its subscriptions, queued jobs and zDialogs."""
        self._stop_expiry_watch()
        if self.client_id is None:
            return  # never opened
        hub = self.hub
        try:
            if self.subscriptions:
                hub.channels.unsubscribe_all(self, self.subscriptions)
            hub.thread_pool.drop(self)
            if self.pending_inputs:
                # a cancelled input request removes itself from pending_inputs: iterate over a copy
                for waiting in list(self.pending_inputs.values()):
                    if not waiting.called:
                        waiting.cancel()
        finally:
            hub.unregister(self)
