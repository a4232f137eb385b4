"""The contracts between the channel parts (the split Centrifuge makes between its Node, Broker
and PresenceManager): `IBroker` carries publications between processes and keeps epochs,
offsets and history; `IPresence` keeps who is subscribed where; `IBrokerEventHandler` is what a
broker hands its publications and joins/leaves to (`node.Channels`, the one local fan-out);
`ILifecycle`, optional, is a part with connections of its own to start, stop and watch.
A broker also carries the server API's control messages between processes (`publish_control`,
`listen_control`: zbifrost.control), opaque bytes to it.

Every method returning a Deferred may fail with RequestError(broker_unavailable) when a
part cannot reach its store. Nothing here is implemented: see `memory`, `redis` and `node`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from . import History, Publication, Stream


class IBrokerEventHandler(Interface):
    """Who a broker delivers to: this process's subscribers (`node.Channels`)."""

    def handle_publication(channel: str, publication: Publication) -> int:
        """Send a publication to the channel's subscribers in this process but its sender;
        returns how many were reached. Called in publish order per channel."""

    def handle_join_leave(channel: str, client_id: str, frame: bytes) -> None:
        """Send a `join` or `leave` event of member `client_id` to the channel's other
        subscribers in this process that have their subscribe reply."""

    def handle_reconnected(concerned: Callable[[str], bool] | None = None) -> None:
        """The broker was unreachable and is back: publications may have been lost meanwhile, in
        every channel or (a shard of several) in those for which `concerned(name)` is true."""


class IBroker(Interface):
    """Publications between processes, with each channel's epoch, offsets and history."""

    features = Attribute("names added to connection_info's `features` (e.g. `broker`)")

    def attach(handler: IBrokerEventHandler) -> None:
        """Hand every publication and join/leave to `handler` from now on."""

    def subscribe(channel: str) -> None:
        """This process has subscribers of `channel` from now on (it keeps the channel's epoch)."""

    def unsubscribe(channel: str) -> None:
        """This process has no subscriber of `channel` any more."""

    def publish(channel: str, data: Any, sender_id: str, history: History,
                idempotency_key: str | None) -> Deferred[dict[str, Any]]:
        """Give `data` the channel's next offset, keep it per `history` and hand it to the
        handler of every process; fires with `{"epoch", "offset"}`, plus `"delivered"` (the
        subscribers reached) from a broker that delivers before it answers. With an
        `idempotency_key` already used on the channel within IDEMPOTENCY_WINDOW seconds (by
        any process), publishes nothing and fires with what that publish fired with."""

    def history(channel: str, since: int | None, epoch: str | None) -> Deferred[Stream]:
        """The channel's epoch and latest offset, with the kept publications after offset
        `since` (none when `since` is None, or when `epoch` is given and is not the channel's)."""

    def publish_join_leave(channel: str, client_id: str, frame: bytes) -> Deferred[None]:
        """Hand a `join` or `leave` event of member `client_id` to the handler of every process."""

    def listen_control(node: str, listener: Callable[[bytes], None]) -> None:
        """Hand `listener` every control message sent to all processes or to `node` (this
        process's id) from now on. Called once, before the broker starts."""

    def publish_control(message: bytes, node: str | None) -> Deferred[int]:
        """Hand `message` to the control listener of every process (`node` None) or of the
        process listening as `node`, this one included; fires with how many it reached."""


class IPresence(Interface):
    """Who is subscribed to a channel, across every process sharing the presence store."""

    def add_presence(channel: str, client_id: str, info: dict[str, str]) -> Deferred[None]:
        """List `info` ({"client_id", "user", "role"}) as a member of the channel."""

    def remove_presence(channel: str, client_id: str) -> Deferred[None]:
        """List the member no more."""

    def presence(channel: str) -> Deferred[dict[str, dict[str, str]]]:
        """Fires with {client_id: {"user", "role"}} of the channel's members."""


class ILifecycle(Interface):
    """A part with connections of its own: started and stopped with the server, and up or not."""

    up = Attribute("True while the part can serve (its connections are usable)")

    def start() -> None:
        """Begin connecting (and whatever runs while the server does)."""

    def stop() -> Deferred[None]:
        """Stop, closing connections; fires once done."""

    def when_up() -> Deferred[None]:
        """Fires once the part is up (at once when it is)."""
