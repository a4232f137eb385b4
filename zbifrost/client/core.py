"""The client's protocol state, without I/O and without a clock of its own (sans-IO).

`ClientCore` owns what a zbifrost client must remember between frames (docs/protocol.md): request
ids and the requests waiting for their reply, the channels subscribed with their last
`{epoch, offset}`, publications delivered once and in offset order, what to send again after a
reconnection (subscribe with `since`), the reconnection schedule and when not to reconnect, and
when to renew an expiring token (`refresh`). It follows bifrost.js's schedule and rules.

An event loop drives it: it feeds frames in (`receive`), tells it of connections opened and lost,
calls `handle_timer` at `next_timer()`, sends what `data_to_send()` returns, and acts on the
events each call returns. Every time is unix seconds, passed in by the caller.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "BifrostError", "ClientCore", "Connected", "Replied", "RequestEvent", "InputRequested", "Publication",
    "PositionLost", "SubscriptionEnded", "Membership", "ServerEvent", "RefreshDue", "TimerChanged", "Disconnected",
    "Reconnecting", "Closed", "Position", "retry_delay", "RETRY_FIRST", "RETRY_MAX", "REFRESH_BEFORE",
]

RETRY_FIRST = 0.5  # seconds before the first reconnection attempt, doubled at each one
RETRY_MAX = 30.0
REFRESH_BEFORE = 10.0  # refresh this long before the token expires, or at 2/3 of a shorter life
CLOSE_POLICY = 1008  # authentication refused, rate-limit abuse, disconnected by the server: never retried
HOPELESS_STATUS = 403  # an origin refused at the upgrade: retrying cannot help (503 can)
TOKEN_EXPIRED = "Token expired"  # the one 1008 that a new token from get_token cures
MAX_HELD = 1000  # publications held past a gap in offsets before the gap is declared lost
KEEP_AFTER_ERROR = ("disconnected", "timeout")  # a subscribe cut short by these is sent again later


class BifrostError(Exception):
    """An error reply (`code` of docs/protocol.md section 3, `details` when given), or one of the
    client's own: `disconnected` (the connection closed first: `close_code`, `reason`, and the HTTP
    `status` of a refused upgrade), `timeout` (no frame for the request in time) and
    `input_required` (the command asked for input and nothing answers it)."""

    def __init__(self, code: str, message: str, *, details: Any = None, close_code: int | None = None,
                 reason: str | None = None, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details
        self.close_code = close_code
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Position:
    """Where a client stands in a channel: its epoch and the offset of the last publication."""

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"


# -- events returned by the core's methods --------------------------------------------------------


@dataclass(frozen=True)
class Connected:
    """connection_info arrived: the connection is usable; `info` is its `data`."""

    info: dict[str, Any]


@dataclass(frozen=True)
class Replied:
    """The final reply to a request: `result`, or `error` (also for requests failed by the client)."""

    request_id: int
    result: Any = None
    error: BifrostError | None = None


@dataclass(frozen=True)
class RequestEvent:
    """A `progress` or `display` frame of a running request."""

    request_id: int
    frame: dict[str, Any]


@dataclass(frozen=True)
class InputRequested:
    """A running dispatch asks for values; answer with `ClientCore.answer_input`."""

    request_id: int
    frame: dict[str, Any]


@dataclass(frozen=True)
class Publication:
    """One publication of a subscribed channel, delivered once and in offset order."""

    channel: str
    data: Any
    offset: int
    epoch: str
    sender: str | None


@dataclass(frozen=True)
class PositionLost:
    """Publications were lost (`recovered: false`, `unsubscribed` with `insufficient_state`, or a gap
    that history did not fill): the application reloads what it shows; delivery goes on from `position`."""

    channel: str
    position: Position


@dataclass(frozen=True)
class SubscriptionEnded:
    """The subscription is over: the server unsubscribed the client (`reason`), or refused to
    subscribe it again after a reconnection (`error`)."""

    channel: str
    reason: str | None = None
    error: BifrostError | None = None


@dataclass(frozen=True)
class Membership:
    """Another client subscribed to a channel (`joined`) or left it (a `join` or `leave` event of a
    channel with `join_leave`); `info` is `{"client_id", "user", "role"}`."""

    channel: str
    joined: bool
    info: dict[str, Any]


@dataclass(frozen=True)
class ServerEvent:
    """Any other server event (server_shutdown, ...)."""

    frame: dict[str, Any]


@dataclass(frozen=True)
class RefreshDue:
    """Time to get a new token and pass it to `ClientCore.refresh`."""


@dataclass(frozen=True)
class TimerChanged:
    """`next_timer()` may be earlier than before."""


@dataclass(frozen=True)
class Disconnected:
    """The connection was lost (`code` 1006 when there was no close frame; `status` of a refused upgrade)."""

    code: int
    reason: str
    status: int | None


@dataclass(frozen=True)
class Reconnecting:
    """A new connection will be opened in `delay` seconds (attempt number `attempt`)."""

    attempt: int
    delay: float


@dataclass(frozen=True)
class Closed:
    """No more connections: closed by the client, or refused by the server in a way a retry cannot cure."""

    code: int
    reason: str
    status: int | None


Event = Any  # one of the dataclasses above


def retry_delay(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """bifrost.js's schedule: 0.5 s doubled per attempt up to 30 s, with +-20% jitter, at most 30 s."""
    base = min(RETRY_MAX, RETRY_FIRST * 2 ** (attempt - 1))
    return min(RETRY_MAX, base * (0.8 + rng() * 0.4))


@dataclass
class _Request:
    event: str
    timeout: float
    deadline: float
    channel: str | None = None  # subscribe and publish: the channel


@dataclass
class _Subscription:
    channel: str
    epoch: str | None  # None until a subscribe reply (or `since`) says where the channel stands
    offset: int  # of the last publication delivered or skipped (its Position, kept unwrapped for speed)
    request_id: int | None = None  # the subscribe in flight
    held: dict[int, dict[str, Any]] = field(default_factory=dict)  # offset -> message frame, not yet in order
    own: set[int] = field(default_factory=set)  # offsets this client published (the server does not echo them)

    @property
    def position(self) -> Position | None:
        return None if self.epoch is None else Position(self.epoch, self.offset)

    def move_to(self, position: Position) -> None:
        self.epoch, self.offset = position.epoch, position.offset


def _publication(channel: str, epoch: str, offset: int, frame: dict[str, Any]) -> Publication:
    return Publication(channel, frame.get("data"), offset, epoch, frame.get("from"))


class ClientCore:
    """The protocol state of one client over its successive connections (module docstring)."""

    def __init__(self, *, renewable: bool = False, reconnect: bool = True, timeout: float = 30.0,
                 rng: Callable[[], float] = random.random) -> None:
        self.renewable = renewable  # get_token is available: a 1008 "Token expired" is retried
        self.reconnect = reconnect
        self.timeout = timeout
        self.rng = rng
        self.info: dict[str, Any] | None = None  # connection_info.data of the current connection
        self.closed = False
        self.attempt = 0  # reconnection attempts since the last successful connection
        self.refresh_at: float | None = None
        self._next_id = 1
        self._pending: dict[int, _Request] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._outbox: list[str] = []
        self._refresh_id: int | None = None
        self._expires: float | None = None

    # -- what the event loop asks ---------------------------------------------------------

    def data_to_send(self) -> list[str]:
        """The frames to send now, in order (text)."""
        frames, self._outbox = self._outbox, []
        return frames

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._outbox)

    def next_timer(self) -> float | None:
        """The earliest time at which `handle_timer` has something to do, or None."""
        times = [request.deadline for request in self._pending.values()]
        if self.refresh_at is not None:
            times.append(self.refresh_at)
        return min(times) if times else None

    def deadline_of(self, request_id: int) -> float | None:
        """When a waiting request times out unless a frame for it arrives first."""
        request = self._pending.get(request_id)
        return request.deadline if request else None

    def position(self, channel: str) -> Position | None:
        subscription = self._subscriptions.get(channel)
        return subscription.position if subscription else None

    # -- requests ---------------------------------------------------------------------------

    def request(self, event: str, fields: dict[str, Any], now: float, timeout: float | None = None) -> int:
        """Queue a request; returns its `_requestId`. Its reply comes back as `Replied`."""
        if self.info is None:
            raise BifrostError("disconnected", "Not connected")
        request_id = self._next_id
        self._next_id += 1
        timeout = self.timeout if timeout is None else timeout
        self._pending[request_id] = _Request(event, timeout, now + timeout, fields.get("channel"))
        self._outbox.append(orjson.dumps({**fields, "event": event, "_requestId": request_id}).decode())
        return request_id

    def abandon(self, request_id: int) -> None:
        """Forget a request: its reply, if one comes, is ignored."""
        self._pending.pop(request_id, None)

    def answer_input(self, input_request_id: str, value: Any) -> None:
        """Send the values asked for by an `input_request` (its `requestId`)."""
        if self.info is not None:
            self._outbox.append(orjson.dumps({"event": "input_response", "requestId": input_request_id,
                                              "value": value}).decode())

    def subscribe(self, channel: str, now: float, since: Position | None = None) -> int | None:
        """Subscribe (kept across reconnections); returns the request id, or None when not connected
        (the subscribe is then sent at the next connection)."""
        if channel in self._subscriptions:
            raise ValueError(f"already subscribed to {channel!r}")
        subscription = _Subscription(channel, None, 0)
        if since is not None:
            subscription.move_to(since)
        self._subscriptions[channel] = subscription
        return self._send_subscribe(subscription, now) if self.info is not None else None

    def unsubscribe(self, channel: str, now: float) -> int | None:
        """Leave a channel; returns the request id, or None when nothing needs saying."""
        if self._subscriptions.pop(channel, None) is None or self.info is None:
            return None
        return self.request("unsubscribe", {"channel": channel}, now)

    def publish(self, channel: str, data: Any, now: float, idempotency_key: str | None = None,
                timeout: float | None = None) -> int:
        fields: dict[str, Any] = {"channel": channel, "data": data}
        if idempotency_key is not None:
            fields["idempotency_key"] = idempotency_key
        return self.request("publish", fields, now, timeout)

    def refresh(self, token: str, now: float) -> None:
        """Send a new token (after `RefreshDue`)."""
        if self.info is not None:
            self._refresh_id = self.request("refresh", {"token": token}, now)

    def close(self) -> list[Event]:
        """The client closes for good; the caller then closes the socket."""
        self.closed = True
        return self._lost(1000, "Client disconnect", None)

    # -- the connection -------------------------------------------------------------------

    def connection_lost(self, code: int, reason: str, status: int | None = None) -> list[Event]:
        """The socket closed (1006 without a close frame), or the upgrade failed (`status`). The
        events end with `Reconnecting` (open a new connection after its delay) or `Closed`."""
        return self._lost(code, reason, status)

    def handle_timer(self, now: float) -> list[Event]:
        """Fail the requests with no frame for their timeout; say when to refresh the token."""
        events: list[Event] = []
        for request_id, request in list(self._pending.items()):
            if request.deadline <= now:
                del self._pending[request_id]
                events.append(Replied(request_id, error=BifrostError(
                    "timeout", f"No reply within {request.timeout:g} s")))
                events.extend(self._after_error(request_id, request, "timeout"))
        if self.refresh_at is not None and self.refresh_at <= now:
            self.refresh_at = None
            events.append(RefreshDue())
        return events

    def receive(self, text: str | bytes, now: float) -> list[Event]:
        """One frame from the server (one that is not a JSON object is ignored)."""
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(frame, dict):
            return []
        event = frame.get("event")
        if event is None:
            return self._reply(frame, now)
        if event == "message":
            return self._message(frame)
        if event in ("progress", "display", "input_request"):
            request_id = frame.get("_forRequestId")
            request = self._pending.get(request_id) if isinstance(request_id, int) else None
            if request is None:
                return []
            request.deadline = now + request.timeout  # any frame of the request keeps it alive
            assert isinstance(request_id, int)
            if event == "input_request":
                return [InputRequested(request_id, frame)]
            return [RequestEvent(request_id, frame)]
        if event == "connection_info":
            return self._connected(frame.get("data") or {}, now)
        if event == "unsubscribed":
            return self._unsubscribed(frame, now)
        if event == "join" or event == "leave":
            info = frame.get("info")
            return [Membership(str(frame.get("channel")), event == "join", info if isinstance(info, dict) else {})]
        return [ServerEvent(frame)]

    # -- inside -----------------------------------------------------------------------------

    def _connected(self, info: dict[str, Any], now: float) -> list[Event]:
        self.info = info
        self.attempt = 0
        events: list[Event] = [Connected(info)]
        for subscription in self._subscriptions.values():
            subscription.request_id = None
            self._send_subscribe(subscription, now)
        auth = info.get("auth")
        self._expires = auth.get("expires") if isinstance(auth, dict) else None
        events.extend(self._schedule_refresh(now))
        return events

    def _schedule_refresh(self, now: float) -> list[Event]:
        if not self.renewable or self._expires is None:
            self.refresh_at = None
            return []
        left = self._expires - now
        self.refresh_at = now + max(0.0, left - min(REFRESH_BEFORE, left / 3))
        return [TimerChanged()]

    def _send_subscribe(self, subscription: _Subscription, now: float) -> int:
        fields: dict[str, Any] = {"channel": subscription.channel}
        if subscription.epoch is not None:
            fields["since"] = {"epoch": subscription.epoch, "offset": subscription.offset}
        subscription.request_id = self.request("subscribe", fields, now)
        return subscription.request_id

    def _reply(self, frame: dict[str, Any], now: float) -> list[Event]:
        request_id = frame.get("_requestId")
        request = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if request is None:
            return []
        assert isinstance(request_id, int)
        if "error" in frame:
            error = BifrostError(str(frame.get("code")), str(frame["error"]), details=frame.get("details"))
            return [Replied(request_id, error=error), *self._after_error(request_id, request, error.code, error)]
        result = frame.get("result")
        events: list[Event] = [Replied(request_id, result)]
        if request.event == "subscribe" and isinstance(result, dict):
            events.extend(self._subscribed(request_id, request, result))
        elif request.event == "publish" and isinstance(result, dict):
            events.extend(self._published(request, result))
        elif request_id == self._refresh_id and isinstance(result, dict):
            self._refresh_id = None
            self._expires = result.get("expires")
            events.extend(self._schedule_refresh(now))
        return events

    def _after_error(self, request_id: int, request: _Request, code: str,
                     error: BifrostError | None = None) -> list[Event]:
        """A subscribe the server refused is forgotten (not sent again at every reconnection); one
        cut short by the connection or a timeout is sent again at the next connection."""
        subscription = self._subscriptions.get(request.channel or "") if request.event == "subscribe" else None
        if subscription is None or subscription.request_id != request_id:
            return []
        subscription.request_id = None
        if code in KEEP_AFTER_ERROR:
            return []
        del self._subscriptions[subscription.channel]
        return [SubscriptionEnded(subscription.channel, error=error)]

    def _subscribed(self, request_id: int, request: _Request, result: dict[str, Any]) -> list[Event]:
        subscription = self._subscriptions.get(request.channel or "")
        if subscription is None or subscription.request_id != request_id:
            return []  # unsubscribed meanwhile, or an older subscribe
        subscription.request_id = None
        latest = Position(str(result.get("epoch")), int(result.get("offset") or 0))
        events: list[Event] = []
        if subscription.epoch is None:
            subscription.move_to(latest)
        elif result.get("recovered") is False or subscription.epoch != latest.epoch:
            subscription.move_to(latest)
            subscription.held.clear()
            subscription.own.clear()
            events.append(PositionLost(subscription.channel, latest))
        return events + self._drain(subscription)

    def _published(self, request: _Request, result: dict[str, Any]) -> list[Event]:
        """The server sends no `message` back to its publisher: its own offsets are skipped in order."""
        subscription = self._subscriptions.get(request.channel or "")
        if subscription is None or subscription.epoch is None or subscription.epoch != result.get("epoch"):
            return []
        offset = result.get("offset")
        if isinstance(offset, int) and offset > subscription.offset:
            subscription.own.add(offset)
        return self._drain(subscription)

    def _message(self, frame: dict[str, Any]) -> list[Event]:
        subscription = self._subscriptions.get(frame.get("channel"))  # type: ignore[arg-type]
        offset = frame.get("offset")
        if subscription is None or not isinstance(offset, int):
            return []
        if subscription.epoch is not None:
            if offset <= subscription.offset:
                return []  # a duplicate
            if (offset == subscription.offset + 1 and subscription.request_id is None and not subscription.held
                    and not subscription.own):
                subscription.offset = offset  # the usual case: the next one, and nothing waits
                return [_publication(subscription.channel, subscription.epoch, offset, frame)]
        subscription.held[offset] = frame
        if subscription.request_id is not None:
            return []  # ordered once the subscribe reply says where the channel stands
        return self._drain(subscription)

    def _drain(self, subscription: _Subscription) -> list[Event]:
        """Deliver the held publications that follow the position, in offset order."""
        epoch = subscription.epoch
        if epoch is None or subscription.request_id is not None:
            return []
        events: list[Event] = []
        held, own = subscription.held, subscription.own
        offset = subscription.offset
        while True:
            for stale in [o for o in held if o <= offset]:
                del held[stale]
            own.difference_update([o for o in own if o <= offset])
            if offset + 1 in own:
                offset += 1
            elif offset + 1 in held:
                offset += 1
                events.append(_publication(subscription.channel, epoch, offset, held.pop(offset)))
            elif len(held) > MAX_HELD:
                offset = min(held) - 1  # a gap that nothing fills: say so, then go on after it
                events.append(PositionLost(subscription.channel, Position(epoch, offset)))
            else:
                break
        subscription.offset = offset
        return events

    def _unsubscribed(self, frame: dict[str, Any], now: float) -> list[Event]:
        channel = frame.get("channel")
        subscription = self._subscriptions.get(channel)  # type: ignore[arg-type]
        if subscription is None:
            return []
        if frame.get("reason") == "insufficient_state":
            self._send_subscribe(subscription, now)  # its reply says `recovered: false`, with the new position
            return []
        del self._subscriptions[subscription.channel]
        return [SubscriptionEnded(subscription.channel, reason=frame.get("reason") or "server")]

    def _lost(self, code: int, reason: str, status: int | None) -> list[Event]:
        self.info = None
        self._outbox.clear()  # frames of the lost connection: their requests fail below
        self.refresh_at = None
        self._refresh_id = None
        events: list[Event] = []
        for request_id, request in list(self._pending.items()):
            del self._pending[request_id]
            events.append(Replied(request_id, error=BifrostError(
                "disconnected", "The connection closed before the reply arrived",
                close_code=code, reason=reason, status=status)))
            events.extend(self._after_error(request_id, request, "disconnected"))
        events.append(Disconnected(code, reason, status))
        renewable = self.renewable and reason == TOKEN_EXPIRED
        hopeless = (code == CLOSE_POLICY and not renewable) or status == HOPELESS_STATUS
        if self.closed or hopeless or not self.reconnect:
            self.closed = True
            events.append(Closed(code, reason, status))
            return events
        self.attempt += 1
        events.append(Reconnecting(self.attempt, retry_delay(self.attempt, self.rng)))
        return events
