"""The channel layer: one interface (`IChannelBackend`), and the names and shapes every backend
shares (docs/protocol.md section 6).

A backend owns channels' subscribers, epochs, offsets and history. Its methods return Deferreds,
so that the broker-backed one (`redis`) slots in behind the same calls; the event handlers
never learn which backend runs. Nothing here knows about frames beyond the one encoded
`message` event a publish becomes, and nothing here decides permissions (see `rules`).
A subscriber is anything with `client_id`, `send_frame(bytes)` (now) and `deliver(bytes)` (the
fan-out of a publication, a join or a leave: goes out from the end of the reactor turn on).
Presence (1.2): a subscribe may carry a `Membership`, which the backend keeps until the
unsubscribe (or the connection's end) for `presence` and announces with `join` / `leave` to the
channel's other subscribers.
Channel names are checked here, by `valid_channel` alone, wherever they come from (client
events, `ctx.publish`, `POST /api/publish`), with one error text (`INVALID_CHANNEL`).
"""

import re
from dataclasses import dataclass

from zope.interface import Attribute, Interface

from .. import messages

CHANNEL_CHARACTERS = r"A-Za-z0-9_\-.:/@|+="  # @|+= for user:<name> (1.2)
CHANNEL_NAME = re.compile(f"[{CHANNEL_CHARACTERS}]{{1,128}}")
INVALID_CHANNEL = "Invalid field 'channel': 1-128 characters of letters, digits and _-.:/@|+="
MAX_SUBSCRIPTIONS_PER_CLIENT = 1000
SERVER_SENDER = "server"  # the `from` of messages published by the backend


def valid_channel(name):
    """True for a channel name (docs/protocol.md sections 6 and 7a), matched in full: a trailing
    newline or a 129th character is not one (as a `re.match` with `$` would let through)."""
    return type(name) is str and CHANNEL_NAME.fullmatch(name) is not None


def channel_of(message):
    """The `channel` of a client's event or of an API body, or RequestError(missing_field)."""
    channel = message.get("channel")
    if not valid_channel(channel):
        raise messages.RequestError(messages.MISSING_FIELD, INVALID_CHANNEL)
    return channel


@dataclass(frozen=True)
class History:
    """How much of a channel's past is kept: the last `size` messages (0: none), dropped
    `ttl` seconds after the channel's last publish."""

    size: int = 100
    ttl: float = 300.0


DEFAULT_HISTORY = History()


@dataclass
class Subscribed:
    """What a subscribe found: the channel's `epoch` and latest `offset`; with `since`, whether
    every missed publication was found (`recovered`) and their encoded frames (`missed`)."""

    epoch: str
    offset: int
    recovered: bool = None  # None when no `since` was given
    missed: tuple = ()


@dataclass(frozen=True)
class Membership:
    """How a subscriber shows in a channel: `info` ({"client_id", "user", "role"}, as it
    subscribed), listed by `presence` when `listed`, announced by join/leave when `announced`."""

    info: dict
    listed: bool
    announced: bool

    def frame(self, event, channel):
        """The encoded `join` or `leave` event of this member."""
        return messages.event_frame(event, channel=channel, info=self.info)


def presence_entry(info):
    """(client_id, {"user", "role"}): a member's entry in a `presence` reply."""
    return info["client_id"], {"user": info["user"], "role": info["role"]}


def message_frame(channel, data, sender_id, offset):
    """The one encoded `message` event of a publication, sent alike to all its subscribers."""
    return messages.event_frame("message", channel=channel, data=data, offset=offset, **{"from": sender_id})


class IChannelBackend(Interface):
    features = Attribute("names added to connection_info's `features` (e.g. `broker`)")

    def subscribe(channel, subscriber, since=None, membership=None):
        """Make `subscriber` receive the channel's publications from now on; fires with a
        `Subscribed` once the subscription is live. `since` is None or (epoch, offset).
        A `membership` is kept, and announced when new; a repeated subscribe changes nothing."""

    def unsubscribe(channel, subscriber):
        """Stop delivering the channel to `subscriber`, announcing its leave; fires with None."""

    def unsubscribe_all(subscriber, channels):
        """Forget a closed connection's subscriptions, announcing its leaves (returns nothing
        to wait for)."""

    def presence(channel):
        """Fires with {client_id: {"user", "role"}} of the channel's listed members, every
        process included."""

    def publish(channel, data, sender_id, history=DEFAULT_HISTORY):
        """Deliver `data` to every subscriber but `sender_id`, in publish order per channel,
        and keep it per `history`; fires with `{"epoch", "offset"}` (plus `"delivered"`: the
        local subscribers reached, when no broker runs)."""
