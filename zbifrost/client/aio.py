"""The asyncio client: `zbifrost.client.core`'s rules over the `websockets` library.

    async with connect("ws://127.0.0.1:18774/ws", get_token=my_token) as client:
        result = await client.dispatch("^Ping")
        sub = await client.subscribe("chat")
        async for pub in sub:                  # once each, in offset order, across reconnections
            print(pub.offset, pub.data)

This module owns the socket, the timers and the callbacks; what to send and when to reconnect is
the core's.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Origin

from .base import END, Callback, ClientBase, RecoveryLost, State, SubscriptionBase, dispatch_fields
from .core import BifrostError, InputRequested, Position, Publication

__all__ = ["connect", "Client", "Subscription", "State", "RecoveryLost", "BifrostError", "Publication", "Position"]

log = logging.getLogger("zbifrost.client")


class Subscription(SubscriptionBase):
    """A channel subscription: iterate it for its publications (`pub.data`, `.offset`, `.epoch`,
    `.sender`). The loop ends when the server unsubscribes the client or the client closes;
    `on_join`/`on_leave` (SubscriptionBase) hear of the other subscribers."""

    _client: Client

    def __init__(self, client: Client, channel: str, on_join: Callback | None = None,
                 on_leave: Callback | None = None) -> None:
        super().__init__(client, channel, on_join, on_leave)
        self._items: deque[Any] = deque()  # publications, RecoveryLost, then END or an error, which stays
        self._waiters: list[asyncio.Future[None]] = []  # loops waiting for an item

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Publication:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        item = self._items[0]
        if isinstance(item, Publication):
            self._items.popleft()
            return item
        if isinstance(item, RecoveryLost):
            self._items.popleft()
            raise item
        if isinstance(item, BaseException):  # every later call ends the same way
            raise item
        raise StopAsyncIteration

    async def unsubscribe(self) -> None:
        await self._client._unsubscribe(self)

    def _put(self, item: Any) -> None:
        self._items.append(item)
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():  # not cancelled
                    waiter.set_result(None)


class Client(ClientBase):
    """One client over successive connections (see `connect`)."""

    _subscriptions: dict[str, Subscription]  # type: ignore[assignment]

    def __init__(self, url: str, *, token: str | None = None,
                 get_token: Callable[[], str | Awaitable[str]] | None = None, origin: str | None = None,
                 on_state: Callable[[State], Any] | None = None, on_event: Callback | None = None,
                 on_input: Callback | None = None, reconnect: bool = True, timeout: float = 30.0) -> None:
        super().__init__(url, token=token, get_token=get_token, origin=origin, on_state=on_state,
                         on_event=on_event, on_input=on_input, reconnect=reconnect, timeout=timeout)
        self._ws: ClientConnection | None = None
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._first: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Client:
        self._first = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run())
        try:
            await self._first
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- requests ---------------------------------------------------------------------------

    async def request(self, event: str, /, **fields: Any) -> Any:
        """Any event of docs/protocol.md section 3; returns the reply's `result` or raises BifrostError."""
        return await self._request(event, fields)

    async def dispatch(self, zkey: str, *, args: list[Any] | None = None, data: dict[str, Any] | None = None,
                       zblock: str | None = None, no_cache: bool | None = None, timeout: float | None = None,
                       on_event: Callback | None = None, on_input: Callback | None = None) -> Any:
        """Run a zUI command. `on_event(frame)` gets its progress and display frames; `on_input(frame)`
        returns the values an `input_request` asks for (without one, the dispatch fails with
        `input_required`). Both default to the client's; either may be a coroutine function."""
        return await self._request("dispatch", dispatch_fields(zkey, args, data, zblock, no_cache), timeout,
                                   on_event, on_input)

    async def publish(self, channel: str, data: Any, idempotency_key: str | None = None) -> Any:
        """{channel, epoch, offset}; the same `idempotency_key` within 300 s publishes once."""
        return await self._wait(self._core.publish(channel, data, time.time(), idempotency_key))

    async def presence(self, channel: str) -> Any:
        return await self._request("presence", {"channel": channel})

    async def presence_stats(self, channel: str) -> Any:
        return await self._request("presence_stats", {"channel": channel})

    async def subscribe(self, channel: str, since: Position | None = None, on_join: Callback | None = None,
                        on_leave: Callback | None = None) -> Subscription:
        """Subscribe, kept across reconnections; `since` (a saved `sub.position`) asks for what was
        published after it; `on_join(info)`/`on_leave(info)` hear of the other subscribers (a channel
        with `join_leave`). A refused subscribe raises BifrostError; one cut short by the connection
        is sent again at the next connection."""
        subscription = Subscription(self, channel, on_join, on_leave)
        request_id = self._core.subscribe(channel, time.time(), since)
        self._subscriptions[channel] = subscription
        if request_id is not None:
            try:
                await self._wait(request_id)
            except BifrostError as error:
                if self._subscribe_failed(channel, error):
                    raise
        return subscription

    async def close(self) -> None:
        """Close for good: requests waiting fail with `disconnected`, subscriptions end."""
        if not self._core.closed:
            self._handle(self._core.close())
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None and self._runner is not asyncio.current_task():
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
        if self._timer is not None:
            self._timer.cancel()

    async def _unsubscribe(self, subscription: Subscription) -> None:
        if self._subscriptions.get(subscription.channel) is not subscription:
            return
        del self._subscriptions[subscription.channel]
        subscription._put(END)
        request_id = self._core.unsubscribe(subscription.channel, time.time())
        if request_id is not None:
            await self._wait(request_id)

    async def _request(self, event: str, fields: dict[str, Any], timeout: float | None = None,
                       on_event: Callback | None = None, on_input: Callback | None = None) -> Any:
        request_id = self._core.request(event, fields, time.time(), timeout)
        if on_event is None and on_input is None:
            return await self._wait(request_id)
        self._callbacks[request_id] = (on_event, on_input)
        try:
            return await self._wait(request_id)
        finally:
            self._callbacks.pop(request_id, None)

    async def _wait(self, request_id: int) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        self._arm(self._core.deadline_of(request_id))
        await self._flush()
        return await future

    # -- the connection -------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._core.closed:
                self._set_state(State("connecting"))
                code, reason, status = await self._connection()
                if self._core.closed:
                    return
                self._ws = None
                delay = self._handle(self._core.connection_lost(code, reason, status))
                if delay is not None:
                    await asyncio.sleep(delay)
        except Exception as failed:  # a malformed URL, or a fault of this client: it closes, never hangs
            if self._first is not None and not self._first.done():
                self._first.set_exception(failed)
            else:
                log.exception("zbifrost.client: the connection loop failed")
            self._handle(self._core.close())

    async def _connection(self) -> tuple[int, str, int | None]:
        """Open one connection and read it to its end: (close code, reason, HTTP status of a refusal)."""
        token = self.token
        if self.get_token is not None:
            try:
                token = await _maybe_await(self.get_token())
            except Exception:
                log.exception("zbifrost.client: get_token failed")
                return 1006, "get_token failed", None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            ws = await ws_connect(self.url, origin=Origin(self.origin) if self.origin else None,
                                  additional_headers=headers, max_size=None)
        except InvalidStatus as refused:
            return 1006, f"HTTP {refused.response.status_code}", refused.response.status_code
        except (OSError, TimeoutError, InvalidHandshake) as failed:
            return 1006, str(failed) or type(failed).__name__, None
        self._ws = ws
        try:
            async for text in ws:
                self._handle(self._core.receive(text, time.time()))
                if self._core.has_data_to_send:
                    await self._flush()
        except ConnectionClosed:
            pass
        closing = ws.protocol  # websockets 13.0 has close_code and close_reason there only
        return closing.close_code or 1006, closing.close_reason or "", None

    async def _flush(self) -> None:
        ws = self._ws
        for frame in self._core.data_to_send():
            if ws is None:
                return  # the connection is gone: the core fails these requests when it hears of it
            try:
                await ws.send(frame)
            except ConnectionClosed:
                return  # the reading loop sees the close and tells the core

    # -- the parts of ClientBase ---------------------------------------------------------------

    def _settle(self, request_id: int, result: Any, error: BaseException | None) -> None:
        future = self._waiters.pop(request_id, None)
        if future is not None and not future.done():
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def _call(self, callback: Callback, argument: dict[str, Any]) -> None:
        self._spawn(_maybe_await(callback(argument)))

    def _connected(self) -> None:
        if self._first is not None and not self._first.done():
            self._first.set_result(None)

    def _refused(self, error: BifrostError) -> None:
        if self._first is not None and not self._first.done():
            self._first.set_exception(error)

    def _answer(self, event: InputRequested, callback: Callback) -> None:
        async def answer() -> None:
            try:
                value = await _maybe_await(callback(event.frame))
            except Exception as failed:
                self._input_failed(event, failed)
                return
            self._core.answer_input(str(event.frame.get("requestId")), value)
            await self._flush()

        self._spawn(answer())

    def _refresh(self) -> None:
        self._spawn(self._refreshing())

    async def _refreshing(self) -> None:
        assert self.get_token is not None
        try:
            token = await _maybe_await(self.get_token())
        except Exception:
            log.exception("zbifrost.client: get_token failed; the connection closes when the token expires")
            return
        self._core.refresh(token, time.time())
        self._arm(self._core.next_timer())
        await self._flush()

    # -- timers -----------------------------------------------------------------------------

    def _arm(self, at: float | None) -> None:
        """Make sure the timer fires by `at` (unix seconds)."""
        if at is None or (self._timer is not None and self._timer_at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_later(max(0.0, at - time.time()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._handle(self._core.handle_timer(time.time()))
        self._arm(self._core.next_timer())

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def connect(url: str, token: str | None = None, get_token: Callable[[], str | Awaitable[str]] | None = None,
            origin: str | None = None, **options: Any) -> Client:
    """A client for `async with`: it enters once connected (with `reconnect`, the default, it keeps
    trying until then) and raises BifrostError `disconnected` when the server refuses it for good.

    `token` is sent at every connection; `get_token()` (sync or async) is called for every connection
    and shortly before the token expires, when its answer is sent as `refresh`. options: `on_state(state)`,
    `on_event(frame)` and `on_input(frame)` (defaults for `dispatch`), `reconnect` (default True),
    `timeout` (seconds without a frame for a request, default 30)."""
    return Client(url, token=token, get_token=get_token, origin=origin, **options)
