"""What the asyncio and the Twisted clients share above the core, still without I/O: the state and
`RecoveryLost` they show, a subscription's join/leave callbacks, and `ClientBase._handle`, which
routes the core's events to waiting requests, subscriptions and callbacks. Each client supplies
the event-loop parts (futures or Deferreds, timers, sending, calling callbacks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .core import (
    KEEP_AFTER_ERROR,
    BifrostError,
    ClientCore,
    Closed,
    Connected,
    InputRequested,
    Membership,
    Position,
    PositionLost,
    Publication,
    Reconnecting,
    RefreshDue,
    Replied,
    RequestEvent,
    SubscriptionEnded,
    TimerChanged,
)

__all__ = ["RecoveryLost", "State", "SubscriptionBase", "ClientBase", "END", "dispatch_fields", "Callback"]

Callback = Callable[[dict[str, Any]], Any]  # sync, or returning an awaitable (asyncio) or a Deferred (Twisted)

END = object()  # put on a subscription: it ended without an error


class RecoveryLost(Exception):
    """Raised in a subscription's loop: publications were lost (the server could not recover the
    position). Reload what the application shows from the channel; the loop goes on from `position`."""

    def __init__(self, channel: str, position: Position) -> None:
        super().__init__(f"publications of {channel!r} were lost; going on from {position}")
        self.channel = channel
        self.position = position


@dataclass(frozen=True)
class State:
    """The client's state: `connecting`, `connected`, `reconnecting` (in `delay` s) or `closed`
    (`code`, `reason`, and `status` when the upgrade was refused)."""

    name: str
    delay: float | None = None
    code: int | None = None
    reason: str | None = None
    status: int | None = None

    def __str__(self) -> str:
        if self.name == "reconnecting":
            return f"reconnecting in {self.delay:.1f} s"
        if self.name == "closed":
            why = f"HTTP {self.status}" if self.status else f"{self.code} {self.reason or ''}".rstrip()
            return f"closed ({why})"
        return self.name


def dispatch_fields(zkey: str, args: list[Any] | None, data: dict[str, Any] | None, zblock: str | None,
                    no_cache: bool | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"zKey": zkey}
    for name, value in (("args", args), ("data", data), ("zBlock", zblock), ("no_cache", no_cache)):
        if value is not None:
            fields[name] = value
    return fields


class SubscriptionBase:
    """A channel subscription: `on_join(info)` and `on_leave(info)` are called for the other clients
    that subscribe to it and leave it (a channel rule with `join_leave`); `info` is
    `{"client_id", "user", "role"}`."""

    def __init__(self, client: ClientBase, channel: str, on_join: Callback | None = None,
                 on_leave: Callback | None = None) -> None:
        self.channel = channel
        self.on_join = on_join
        self.on_leave = on_leave
        self._client = client

    @property
    def position(self) -> Position | None:
        """Where the client stands: save it to subscribe later with `since`."""
        return self._client._core.position(self.channel)

    def _put(self, item: Any) -> None:
        """A publication, a RecoveryLost, END or the BifrostError that ended it."""
        raise NotImplementedError


class ClientBase:
    """The event-loop-independent half of a client (module docstring)."""

    def __init__(self, url: str, *, token: str | None, get_token: Callable[[], Any] | None, origin: str | None,
                 on_state: Callable[[State], Any] | None, on_event: Callback | None, on_input: Callback | None,
                 reconnect: bool, timeout: float) -> None:
        self.url = url
        self.token = token
        self.get_token = get_token
        self.origin = origin
        self.on_state = on_state
        self.on_event = on_event
        self.on_input = on_input
        self.state = State("connecting")
        self._core = ClientCore(renewable=get_token is not None, reconnect=reconnect, timeout=timeout)
        self._callbacks: dict[int, tuple[Callback | None, Callback | None]] = {}  # on_event, on_input
        self._subscriptions: dict[str, SubscriptionBase] = {}

    @property
    def info(self) -> dict[str, Any] | None:
        """connection_info.data of the current connection, or None between connections."""
        return self._core.info

    # -- what each client supplies -------------------------------------------------------------

    def _settle(self, request_id: int, result: Any, error: BaseException | None) -> None:
        """Resolve the request's future or Deferred, if one waits."""
        raise NotImplementedError

    def _call(self, callback: Callback, argument: dict[str, Any]) -> None:
        """Call an application callback, waiting for what it returns in the background."""
        raise NotImplementedError

    def _answer(self, event: InputRequested, callback: Callback) -> None:
        """Send what `callback(event.frame)` returns as the input_response."""
        raise NotImplementedError

    def _connected(self) -> None:
        """A connection is usable (the first one: the client is ready)."""

    def _refresh(self) -> None:
        """Get a new token from get_token and send it (`ClientCore.refresh`)."""
        raise NotImplementedError

    def _arm(self, at: float | None) -> None:
        """Make sure the core's timer is handled by `at` (unix seconds)."""
        raise NotImplementedError

    def _refused(self, error: BifrostError) -> None:
        """The client closed for good before its first connection: `connect` fails with `error`."""

    # -- shared ---------------------------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        self.state = state
        if self.on_state is not None:
            self.on_state(state)

    def _subscribe_failed(self, channel: str, error: BifrostError) -> bool:
        """A subscribe was answered with `error`: True when it is over (refused), False when the
        subscription stays (cut short: it is sent again at the next connection)."""
        if error.code in KEEP_AFTER_ERROR:
            return False
        self._subscriptions.pop(channel, None)
        return True

    def _handle(self, events: list[Any]) -> float | None:
        """Act on the core's events; returns the delay before reconnecting, if one is due."""
        delay = None
        for event in events:
            if isinstance(event, Replied):
                self._settle(event.request_id, event.result, event.error)
            elif isinstance(event, Publication):
                subscription = self._subscriptions.get(event.channel)
                if subscription is not None:
                    subscription._put(event)
            elif isinstance(event, RequestEvent):
                callback = self._callbacks.get(event.request_id, (None, None))[0] or self.on_event
                if callback is not None:
                    self._call(callback, event.frame)
            elif isinstance(event, InputRequested):
                self._input(event)
            elif isinstance(event, Membership):
                subscription = self._subscriptions.get(event.channel)
                if subscription is not None:
                    callback = subscription.on_join if event.joined else subscription.on_leave
                    if callback is not None:
                        self._call(callback, event.info)
            elif isinstance(event, PositionLost):
                subscription = self._subscriptions.get(event.channel)
                if subscription is not None:
                    subscription._put(RecoveryLost(event.channel, event.position))
            elif isinstance(event, SubscriptionEnded):
                subscription = self._subscriptions.pop(event.channel, None)
                if subscription is not None:
                    subscription._put(event.error or END)
            elif isinstance(event, Connected):
                self._set_state(State("connected"))
                self._connected()
            elif isinstance(event, (TimerChanged, RefreshDue)):
                if isinstance(event, RefreshDue):
                    self._refresh()
                self._arm(self._core.next_timer())
            elif isinstance(event, Reconnecting):
                delay = event.delay
                self._set_state(State("reconnecting", delay=event.delay))
            elif isinstance(event, Closed):
                self._closed(event)
        return delay

    def _closed(self, event: Closed) -> None:
        self._set_state(State("closed", code=event.code, reason=event.reason, status=event.status))
        by_client = event.code == 1000 and event.reason == "Client disconnect"
        why = f"HTTP {event.status}" if event.status else f"{event.code} {event.reason}".rstrip()
        error = BifrostError("disconnected", f"Connection closed ({why})", close_code=event.code,
                             reason=event.reason, status=event.status)
        self._refused(error)
        for subscription in self._subscriptions.values():
            subscription._put(END if by_client else error)
        self._subscriptions.clear()

    def _input(self, event: InputRequested) -> None:
        callback = self._callbacks.get(event.request_id, (None, None))[1] or self.on_input
        if callback is not None:
            self._answer(event, callback)
            return
        self._core.abandon(event.request_id)
        fields = ", ".join(str(f.get("name")) for f in event.frame.get("fields") or [] if isinstance(f, dict))
        self._settle(event.request_id, None, BifrostError(
            "input_required", f"The command asks for input ({fields}) and no on_input callback was given"))

    def _input_failed(self, event: InputRequested, failure: BaseException) -> None:
        """The on_input callback raised: the dispatch fails with its exception."""
        self._core.abandon(event.request_id)
        self._settle(event.request_id, None, failure)
