"""The channel layer's shared names and shapes (docs/protocol.md section 6): channel names, a
channel's `History` setting, a `Publication` and a broker's `Stream` of them, what a subscribe
found (`Subscribed`), a subscriber's `Membership`, and the one encoding of a `message` event.

The parts: `node.Channels` (this process's subscribers, fan-out and recovery), behind it a
broker (`interfaces.IBroker`: `memory`, `redis`) and a presence manager (`interfaces.IPresence`),
and `rules` (who may do what where). A subscriber is anything with `client_id`,
`send_frame(bytes)` (now) and `deliver(bytes)` (the fan-out of a publication, a join or a
leave: goes out from the end of the reactor turn on).
Channel names are checked here, by `valid_channel` alone, wherever they come from (client
events, `ctx.publish`, `POST /api/publish`), with one error text (`INVALID_CHANNEL`); so are
the `idempotency_key`s of publishes (`idempotency_key_of`, docs/protocol.md section 6a).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeGuard

from .. import messages

CHANNEL_CHARACTERS = r"A-Za-z0-9_\-.:/@|+="  # @|+= for user:<name> (1.2)
CHANNEL_NAME = re.compile(f"[{CHANNEL_CHARACTERS}]{{1,128}}")
INVALID_CHANNEL = "Invalid field 'channel': 1-128 characters of letters, digits and _-.:/@|+="
IDEMPOTENCY_KEY = re.compile(f"[{CHANNEL_CHARACTERS}]{{1,64}}")
INVALID_IDEMPOTENCY_KEY = "Invalid field 'idempotency_key': 1-64 characters of letters, digits and _-.:/@|+="
IDEMPOTENCY_WINDOW = 300  # seconds in which a publish's idempotency_key answers again what it published
MAX_SUBSCRIPTIONS_PER_CLIENT = 1000
SERVER_SENDER = "server"  # the `from` of messages published by the backend


def valid_channel(name: object) -> TypeGuard[str]:
    """True for a channel name (docs/protocol.md sections 6 and 7a), matched in full: a trailing
    newline or a 129th character is not one (as a `re.match` with `$` would let through)."""
    return type(name) is str and CHANNEL_NAME.fullmatch(name) is not None


def channel_of(message: dict[str, Any]) -> str:
    """The `channel` of a client's event or of an API body, or RequestError(missing_field)."""
    channel = message.get("channel")
    if not valid_channel(channel):
        raise messages.RequestError(messages.MISSING_FIELD, INVALID_CHANNEL)
    return channel


def valid_idempotency_key(key: object) -> TypeGuard[str]:
    """True for an `idempotency_key` (docs/protocol.md section 6a), matched in full."""
    return type(key) is str and IDEMPOTENCY_KEY.fullmatch(key) is not None


def idempotency_key_of(message: dict[str, Any]) -> str | None:
    """The optional `idempotency_key` of a publish event or API body, or RequestError(missing_field)."""
    key = message.get("idempotency_key")
    if key is not None and not valid_idempotency_key(key):
        raise messages.RequestError(messages.MISSING_FIELD, INVALID_IDEMPOTENCY_KEY)
    return key


class Subscriber(Protocol):
    """What the channels send to: a session (zbifrost.session)."""

    client_id: str

    def send_frame(self, frame: bytes) -> bool: ...

    def deliver(self, frame: bytes) -> bool: ...


@dataclass(frozen=True)
class History:
    """How much of a channel's past is kept: the last `size` messages (0: none), dropped
    `ttl` seconds after the channel's last publish."""

    size: int = 100
    ttl: float = 300.0


DEFAULT_HISTORY = History()


class Publication(NamedTuple):
    """One publish as a broker hands it on: its offset, who sent it, its encoded `message`
    event (`message_frame`), made once per process and sent alike to every subscriber, and the
    epoch of its channel it was published in."""

    offset: int
    sender_id: str
    frame: bytes
    epoch: str


class Stream(NamedTuple):
    """A channel's position (`epoch`, latest `offset`) and the `publications` a history read
    found, oldest first."""

    epoch: str
    offset: int
    publications: tuple[Publication, ...] = ()


@dataclass
class Subscribed:
    """What a subscribe found: the channel's `epoch` and latest `offset`; with `since`, whether
    every missed publication was found (`recovered`) and their encoded frames (`missed`)."""

    epoch: str
    offset: int
    recovered: bool | None = None  # None when no `since` was given
    missed: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Membership:
    """How a subscriber shows in a channel: `info` ({"client_id", "user", "role"}, as it
    subscribed), listed by `presence` when `listed`, announced by join/leave when `announced`."""

    info: dict[str, str]
    listed: bool
    announced: bool

    def frame(self, event: str, channel: str) -> bytes:
        """The encoded `join` or `leave` event of this member."""
        return messages.event_frame(event, channel=channel, info=self.info)


def presence_entry(info: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(client_id, {"user", "role"}): a member's entry in a `presence` reply."""
    return info["client_id"], {"user": info["user"], "role": info["role"]}


def unsubscribed_frame(channel: str, reason: str) -> bytes:
    """The `unsubscribed` event (docs/protocol.md section 6a): the server ended a subscription."""
    return messages.event_frame("unsubscribed", channel=channel, reason=reason)


def message_frame(channel: str, data: Any, sender_id: str, offset: int) -> bytes:
    """The one encoded `message` event of a publication, sent alike to all its subscribers."""
    return messages.event_frame("message", channel=channel, data=data, offset=offset, **{"from": sender_id})
