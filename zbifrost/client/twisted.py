"""The Twisted client: `zbifrost.client.core`'s rules over Autobahn's WebSocket client protocol,
with the asyncio client's names, returning Deferreds.

    client = yield connect("ws://127.0.0.1:18774/ws", get_token=my_token)
    result = yield client.dispatch("^Ping")
    sub = yield client.subscribe("chat")
    while (pub := (yield sub.next())) is not None:   # once each, in offset order, across reconnections
        print(pub.offset, pub.data)                  # sub.next() fails with RecoveryLost when some were lost

This module owns the connection, the timers (`reactor.callLater`) and the callbacks; what to send
and when to reconnect is the core's. Import it by name: `zbifrost.client` does not.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer
from twisted.internet.interfaces import IConnector, IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import compat
from .base import END, Callback, ClientBase, RecoveryLost, State, SubscriptionBase, dispatch_fields
from .core import BifrostError, InputRequested, Position, Publication

__all__ = ["connect", "Client", "Subscription", "State", "RecoveryLost", "BifrostError", "Publication", "Position"]

log = Logger(namespace="zbifrost.client")


class Subscription(SubscriptionBase):
    """A channel subscription. `next()` fires with its next publication (`pub.data`, `.offset`,
    `.epoch`, `.sender`), or None once the subscription is over (unsubscribed by the server or the
    client closed); it fails with `RecoveryLost` when publications were lost (calling `next()` again
    goes on), or with BifrostError when the connection was refused for good. Cancelling it (a
    timeout) loses nothing: the publication goes to the next call. In a coroutine run by
    `Deferred.fromCoroutine`, `async for pub in sub` works too."""

    _client: Client

    def __init__(self, client: Client, channel: str, on_join: Callback | None = None,
                 on_leave: Callback | None = None) -> None:
        super().__init__(client, channel, on_join, on_leave)
        self._items: deque[Any] = deque()
        self._waiting: deque[defer.Deferred[Publication | None]] = deque()

    def next(self) -> defer.Deferred[Publication | None]:
        if not self._items:
            waiting: defer.Deferred[Publication | None] = defer.Deferred(self._waiting.remove)
            self._waiting.append(waiting)  # cancelled (a timeout), it leaves: the next one gets its publication
            return waiting
        item = self._items[0]
        if isinstance(item, (Publication, RecoveryLost)):
            self._items.popleft()  # an end stays: every later call ends the same way
        outcome: defer.Deferred[Publication | None] = defer.Deferred()
        _fire(outcome, item)
        return outcome

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Publication:
        publication = await self.next()
        if publication is None:
            raise StopAsyncIteration
        return publication

    def unsubscribe(self) -> defer.Deferred[None]:
        return self._client._unsubscribe(self)

    def _put(self, item: Any) -> None:
        if isinstance(item, (Publication, RecoveryLost)):
            if self._waiting:
                _fire(self._waiting.popleft(), item)
                return
        else:
            while self._waiting:
                _fire(self._waiting.popleft(), item)
        self._items.append(item)


def _fire(deferred: defer.Deferred[Publication | None], item: Any) -> None:
    if isinstance(item, Publication):
        deferred.callback(item)
    elif item is END:
        deferred.callback(None)
    else:
        deferred.errback(item)


class _Protocol(WebSocketClientProtocol):
    factory: _Factory

    def onOpen(self) -> None:
        self.factory.client._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        client = self.factory.client
        if client.on_frame is not None:
            client.on_frame(payload, isBinary)
        client._received(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.client._lost(self, code or 1006, reason or "")


class _Factory(WebSocketClientFactory):
    protocol = _Protocol  # type: ignore[assignment]
    client: Client

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.client._lost(None, 1006, reason.getErrorMessage())


class Client(ClientBase):
    """One client over successive connections (see `connect`).

    For a harness that looks at the wire itself (`zbifrost.testing`): `headers` (sent with the
    upgrade request, with the token's Authorization) and `protocols` (the subprotocols offered);
    `on_frame(payload, is_binary)` is called with every frame received, before the client acts on
    it; `on_close(code, reason)` with the code and reason Autobahn reports when a connection ends
    (1006 when it gives none or the connection could not be opened, "" when it gives no reason);
    `protocol` is the current connection's Autobahn protocol
    (`protocol.sendMessage(payload, isBinary=...)` sends bytes as given, outside the client's
    bookkeeping: their replies reach `on_frame` only)."""

    _subscriptions: dict[str, Subscription]  # type: ignore[assignment]

    def __init__(self, url: str, *, token: str | None = None, get_token: Callable[[], Any] | None = None,
                 origin: str | None = None, on_state: Callable[[State], Any] | None = None,
                 on_event: Callback | None = None, on_input: Callback | None = None, reconnect: bool = True,
                 timeout: float = 30.0, reactor: Any = None, headers: dict[str, str] | None = None,
                 protocols: list[str] | None = None, on_frame: Callable[[bytes, bool], Any] | None = None,
                 on_close: Callable[[int, str], Any] | None = None) -> None:
        super().__init__(url, token=token, get_token=get_token, origin=origin, on_state=on_state,
                         on_event=on_event, on_input=on_input, reconnect=reconnect, timeout=timeout)
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.headers = dict(headers or {})
        self.protocols = protocols
        self.on_frame = on_frame
        self.on_close = on_close
        self._protocol: _Protocol | None = None
        self._waiters: dict[int, defer.Deferred[Any]] = {}
        self._timer: IDelayedCall | None = None
        self._timer_at = 0.0
        self._retry: IDelayedCall | None = None
        self._connector: IConnector | None = None  # the connection attempt in flight, or open
        self._first: defer.Deferred[Client] = defer.Deferred(self._give_up)
        self._gone: defer.Deferred[None] = defer.Deferred()  # fires once the last connection is closed

    # -- requests ---------------------------------------------------------------------------

    def request(self, event: str, /, **fields: Any) -> defer.Deferred[Any]:
        """Any event of docs/protocol.md section 3; fires with the reply's `result` or fails with BifrostError."""
        return self._request(event, fields)

    def dispatch(self, zkey: str, *, args: list[Any] | None = None, data: dict[str, Any] | None = None,
                 zblock: str | None = None, no_cache: bool | None = None, timeout: float | None = None,
                 on_event: Callback | None = None, on_input: Callback | None = None) -> defer.Deferred[Any]:
        """Run a zUI command. `on_event(frame)` gets its progress and display frames; `on_input(frame)`
        returns (or fires a Deferred with) the values an `input_request` asks for (without one, the
        dispatch fails with `input_required`). Both default to the client's."""
        return self._request("dispatch", dispatch_fields(zkey, args, data, zblock, no_cache), timeout,
                             on_event, on_input)

    def publish(self, channel: str, data: Any, idempotency_key: str | None = None) -> defer.Deferred[Any]:
        """{channel, epoch, offset}; the same `idempotency_key` within 300 s publishes once."""
        try:
            request_id = self._core.publish(channel, data, time.time(), idempotency_key)
        except BifrostError:
            return defer.fail()
        return self._wait(request_id)

    def presence(self, channel: str) -> defer.Deferred[Any]:
        return self._request("presence", {"channel": channel})

    def presence_stats(self, channel: str) -> defer.Deferred[Any]:
        return self._request("presence_stats", {"channel": channel})

    def subscribe(self, channel: str, since: Position | None = None, on_join: Callback | None = None,
                  on_leave: Callback | None = None) -> defer.Deferred[Subscription]:
        """Subscribe, kept across reconnections (as the asyncio client's `subscribe`); fires with the
        Subscription, or fails with BifrostError when refused."""
        subscription = Subscription(self, channel, on_join, on_leave)
        request_id = self._core.subscribe(channel, time.time(), since)
        self._subscriptions[channel] = subscription
        if request_id is None:
            return defer.succeed(subscription)

        def refused(failure: Failure) -> Any:
            error = failure.value
            if isinstance(error, BifrostError) and not self._subscribe_failed(channel, error):
                return subscription
            return failure

        return self._wait(request_id).addCallbacks(lambda _: subscription, refused)

    @property
    def protocol(self) -> WebSocketClientProtocol | None:
        """The current connection's Autobahn protocol, or None between connections."""
        return self._protocol

    def close(self, code: int = 1000) -> defer.Deferred[None]:
        """Close for good (with close code `code`): requests waiting fail with `disconnected`,
        subscriptions end; fires once the connection is closed."""
        if not self._core.closed:
            self._handle(self._core.close())
        for call in (self._timer, self._retry):
            if call is not None and call.active():
                call.cancel()
        if self._protocol is not None:
            self._protocol.sendClose(code=code)
        elif self._connector is not None:
            self._connector.disconnect()  # an attempt in flight must not come up after the close
        else:
            return defer.succeed(None)
        return self._gone

    def _give_up(self, first: defer.Deferred[Client]) -> None:
        """The `connect` Deferred was cancelled: it fails with CancelledError, and the client closes."""
        first.errback(defer.CancelledError())
        self.close()

    def _unsubscribe(self, subscription: Subscription) -> defer.Deferred[None]:
        if self._subscriptions.get(subscription.channel) is not subscription:
            return defer.succeed(None)
        del self._subscriptions[subscription.channel]
        subscription._put(END)
        request_id = self._core.unsubscribe(subscription.channel, time.time())
        if request_id is None:
            return defer.succeed(None)
        return self._wait(request_id).addCallback(lambda _: None)

    def _request(self, event: str, fields: dict[str, Any], timeout: float | None = None,
                 on_event: Callback | None = None, on_input: Callback | None = None) -> defer.Deferred[Any]:
        try:
            request_id = self._core.request(event, fields, time.time(), timeout)
        except BifrostError:
            return defer.fail()
        if on_event is None and on_input is None:
            return self._wait(request_id)
        self._callbacks[request_id] = (on_event, on_input)

        def forget(outcome: Any) -> Any:
            self._callbacks.pop(request_id, None)
            return outcome

        return self._wait(request_id).addBoth(forget)

    def _wait(self, request_id: int) -> defer.Deferred[Any]:
        def cancel(_: defer.Deferred[Any]) -> None:
            self._waiters.pop(request_id, None)
            self._core.abandon(request_id)

        waiting: defer.Deferred[Any] = defer.Deferred(cancel)
        self._waiters[request_id] = waiting
        self._arm(self._core.deadline_of(request_id))
        self._flush()
        return waiting

    # -- the connection -------------------------------------------------------------------

    def _open(self) -> None:
        self._retry = None
        if self._core.closed:
            return
        self._set_state(State("connecting"))
        if self.get_token is None:
            self._dial(self.token)
            return

        def failed(failure: Failure) -> None:
            log.failure("zbifrost.client: get_token failed", failure)
            self._lost(None, 1006, "get_token failed")

        defer.maybeDeferred(self.get_token).addCallbacks(self._dial, failed)

    def _dial(self, token: str | None) -> None:
        if self._core.closed:
            return
        headers = {**self.headers, "Authorization": f"Bearer {token}"} if token else self.headers
        factory = _Factory(self.url, origin=self.origin, protocols=self.protocols, headers=headers,
                           reactor=self._reactor)
        factory.client = self
        factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
        self._connector = connectWS(factory, timeout=int(self._core.timeout))

    def _opened(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    def _received(self, payload: bytes) -> None:
        self._handle(self._core.receive(payload, time.time()))
        if self._core.has_data_to_send:
            self._flush()

    def _lost(self, protocol: _Protocol | None, code: int, reason: str) -> None:
        if protocol is not None and protocol is not self._protocol and self._protocol is not None:
            return  # an older connection's late news
        self._protocol = self._connector = None
        if self.on_close is not None:
            self.on_close(code, reason)
        if self._core.closed:
            if not self._gone.called:
                self._gone.callback(None)
            return
        status = compat.refused_status(reason) if code == 1006 else None
        delay = self._handle(self._core.connection_lost(code, f"HTTP {status}" if status else reason, status))
        if delay is not None:
            self._retry = self._reactor.callLater(delay, self._open)

    def _flush(self) -> None:
        protocol = self._protocol
        for frame in self._core.data_to_send():
            if protocol is None:
                return  # the connection is gone: the core fails these requests when it hears of it
            protocol.sendMessage(frame.encode())

    # -- the parts of ClientBase ---------------------------------------------------------------

    def _settle(self, request_id: int, result: Any, error: BaseException | None) -> None:
        waiting = self._waiters.pop(request_id, None)
        if waiting is not None and not waiting.called:
            if error is None:
                waiting.callback(result)
            else:
                waiting.errback(error)

    def _call(self, callback: Callback, argument: dict[str, Any]) -> None:
        defer.maybeDeferred(callback, argument).addErrback(
            lambda failure: log.failure("zbifrost.client: a callback failed", failure))

    def _connected(self) -> None:
        if not self._first.called:
            self._first.callback(self)

    def _refused(self, error: BifrostError) -> None:
        if not self._first.called:
            self._first.errback(error)

    def _answer(self, event: InputRequested, callback: Callback) -> None:
        def send(value: Any) -> None:
            self._core.answer_input(str(event.frame.get("requestId")), value)
            self._flush()

        defer.maybeDeferred(callback, event.frame).addCallbacks(
            send, lambda failure: self._input_failed(event, failure.value))

    def _refresh(self) -> None:
        assert self.get_token is not None

        def send(token: str) -> None:
            self._core.refresh(token, time.time())
            self._arm(self._core.next_timer())
            self._flush()

        defer.maybeDeferred(self.get_token).addCallbacks(send, lambda failure: log.failure(
            "zbifrost.client: get_token failed; the connection closes when the token expires", failure))

    def _arm(self, at: float | None) -> None:
        if at is None or (self._timer is not None and self._timer.active() and self._timer_at <= at):
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._reactor.callLater(max(0.0, at - time.time()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._handle(self._core.handle_timer(time.time()))
        self._arm(self._core.next_timer())


def connect(url: str, token: str | None = None, get_token: Callable[[], Any] | None = None,
            origin: str | None = None, **options: Any) -> defer.Deferred[Client]:
    """Fires with a Client once connected (with `reconnect`, the default, it keeps trying until
    then), or fails with BifrostError `disconnected` when the server refuses it for good.
    Cancelling it (`addTimeout`) gives up: the client closes.

    The same options as `zbifrost.client.connect` (`get_token` may return a Deferred), and `reactor`."""
    client = Client(url, token=token, get_token=get_token, origin=origin, **options)
    client._open()
    return client._first
