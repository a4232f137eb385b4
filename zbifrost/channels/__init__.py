"""The channel layer: one interface (`IChannelBackend`), and the names and shapes every backend
shares (PROTOCOL.md section 6).

A backend owns channels' subscribers, epochs, offsets and history. Its methods return Deferreds,
so that the broker-backed one (`redis`) slots in behind the same calls; the event handlers
never learn which backend runs. Nothing here knows about frames beyond the one encoded
`message` event a publish becomes, and nothing here decides permissions (see `rules`).
A subscriber is anything with `client_id` and `send_frame(bytes)`.
"""

import re
from dataclasses import dataclass

from zope.interface import Attribute, Interface

from .. import messages

CHANNEL_NAME = re.compile(r"^[A-Za-z0-9_\-.:/@|+=]{1,128}$")  # @|+= for user:<name> (1.2)
MAX_SUBSCRIPTIONS_PER_CLIENT = 1000
SERVER_SENDER = "server"  # the `from` of messages published by the backend


def valid_channel(name):
    return type(name) is str and CHANNEL_NAME.match(name) is not None


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


def message_frame(channel, data, sender_id, offset):
    """The one encoded `message` event of a publication, sent alike to all its subscribers."""
    return messages.event_frame("message", channel=channel, data=data, offset=offset, **{"from": sender_id})


class IChannelBackend(Interface):
    features = Attribute("names added to connection_info's `features` (e.g. `broker`)")

    def subscribe(channel, subscriber, since=None):
        """Make `subscriber` receive the channel's publications from now on; fires with a
        `Subscribed` once the subscription is live. `since` is None or (epoch, offset)."""

    def unsubscribe(channel, subscriber):
        """Stop delivering the channel to `subscriber`; fires with None."""

    def unsubscribe_all(subscriber, channels):
        """Forget a closed connection's subscriptions (returns nothing to wait for)."""

    def publish(channel, data, sender_id, history=DEFAULT_HISTORY):
        """Deliver `data` to every subscriber but `sender_id`, in publish order per channel,
        and keep it per `history`; fires with `{"epoch", "offset"}` (plus `"delivered"`: the
        local subscribers reached, when no broker runs)."""
