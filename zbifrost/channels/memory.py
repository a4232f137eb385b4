"""The embedded broker and presence manager: channels, epochs, offsets, history and members in
this one process (`IBroker`, `IPresence`; no lifecycle: always up).

Each channel gets a random epoch when it is first seen; offsets count its publishes from 1.
History keeps each channel's last publications (with their encoded frames, sent again as they
are on recovery), within the channel's `History` and within one cap on the bytes of all
history (`history_max_bytes`): past it, the oldest messages of the channel published to
least recently go first. A channel with neither subscribers nor history keeps only its epoch
and offset, for the last MAX_IDLE_CHANNELS such channels. The answers of publishes with an
`idempotency_key` are kept IDEMPOTENCY_WINDOW seconds on the reactor's clock. Every method answers at once (with
an already-fired Deferred) and touches no timer; expiry is checked when history is read and,
for the least recently published channels, on each publish. A publish, a join and a leave are
handed to the event handler before the method returns, and so is a control message to this
process's listener, the only one there is. Presence is exact and local.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from . import IDEMPOTENCY_WINDOW, History, Publication, Stream, message_frame, presence_entry
from .interfaces import IBroker, IBrokerEventHandler, IPresence

MAX_IDLE_CHANNELS = 100_000
_EXPIRY_CHECKS_PER_PUBLISH = 2


class _Channel:
    __slots__ = ("epoch", "offset", "subscribed", "history", "history_bytes", "expires")

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(8)
        self.offset = 0
        self.subscribed = False  # this process has subscribers of it
        self.history: deque[Publication] = deque()  # oldest first
        self.history_bytes = 0
        self.expires: float | None = None  # when the history is dropped: last publish + ttl


@implementer(IBroker)
class MemoryBroker:
    features = ()

    def __init__(self, clock: IReactorTime, history_max_bytes: int) -> None:
        self.clock = clock
        self.history_max_bytes = history_max_bytes
        self.history_bytes = 0
        self._handler: IBrokerEventHandler | None = None
        self._channels: dict[str, _Channel] = {}
        self._by_last_publish: OrderedDict[str, _Channel] = OrderedDict()  # the ones holding history
        self._idle: OrderedDict[str, None] = OrderedDict()  # names of channels with neither subscribers nor history
        # (channel, idempotency_key) -> (when it expires, what the publish answered), oldest first
        self._answered: OrderedDict[tuple[str, str], tuple[float, dict[str, Any]]] = OrderedDict()
        self._node: str | None = None
        self._control: Callable[[bytes], None] | None = None

    def attach(self, handler: IBrokerEventHandler) -> None:
        self._handler = handler

    def _channel(self, name: str) -> _Channel:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel()
        return channel

    def _settle(self, name: str, channel: _Channel) -> None:
        """Track whether a channel is idle, forgetting the oldest idle channels past the cap."""
        if channel.subscribed or channel.history:
            self._idle.pop(name, None)
            return
        self._idle[name] = None
        self._idle.move_to_end(name)
        while len(self._idle) > MAX_IDLE_CHANNELS:
            forgotten, _ = self._idle.popitem(last=False)
            del self._channels[forgotten]

    def _drop_history(self, name: str, channel: _Channel) -> None:
        self.history_bytes -= channel.history_bytes
        channel.history.clear()
        channel.history_bytes = 0
        channel.expires = None
        self._by_last_publish.pop(name, None)

    def _expire(self, name: str, channel: _Channel) -> None:
        if channel.expires is not None and self.clock.seconds() >= channel.expires:
            self._drop_history(name, channel)
            self._settle(name, channel)

    def subscribe(self, name: str) -> None:
        channel = self._channel(name)
        channel.subscribed = True
        self._settle(name, channel)

    def unsubscribe(self, name: str) -> None:
        channel = self._channels.get(name)
        if channel is not None:
            channel.subscribed = False
            self._settle(name, channel)

    def history(self, name: str, since: int | None, epoch: str | None) -> defer.Deferred[Stream]:
        channel = self._channel(name)
        self._settle(name, channel)
        if since is None or since >= channel.offset or (epoch is not None and epoch != channel.epoch):
            return defer.succeed(Stream(channel.epoch, channel.offset))
        self._expire(name, channel)
        publications = tuple(publication for publication in channel.history if publication.offset > since)
        return defer.succeed(Stream(channel.epoch, channel.offset, publications))

    def publish(self, name: str, data: Any, sender_id: str, history: History,
                idempotency_key: str | None = None) -> defer.Deferred[dict[str, Any]]:
        now = self.clock.seconds()
        while self._answered and next(iter(self._answered.values()))[0] <= now:
            self._answered.popitem(last=False)
        if idempotency_key is not None and (name, idempotency_key) in self._answered:
            return defer.succeed(dict(self._answered[name, idempotency_key][1]))
        channel = self._channel(name)
        channel.offset += 1
        frame = message_frame(name, data, sender_id, channel.offset)
        publication = Publication(channel.offset, sender_id, frame, channel.epoch)
        if history.size:
            self._keep(name, channel, publication, history)
        delivered = self._handler.handle_publication(name, publication) if self._handler is not None else 0
        self._settle(name, channel)
        published = {"epoch": channel.epoch, "offset": channel.offset, "delivered": delivered}
        if idempotency_key is not None:
            self._answered[name, idempotency_key] = (now + IDEMPOTENCY_WINDOW, dict(published))
        return defer.succeed(published)

    def publish_join_leave(self, name: str, client_id: str, frame: bytes) -> defer.Deferred[None]:
        if self._handler is not None:
            self._handler.handle_join_leave(name, client_id, frame)
        return defer.succeed(None)

    def listen_control(self, node: str, listener: Callable[[bytes], None]) -> None:
        self._node, self._control = node, listener

    def publish_control(self, message: bytes, node: str | None) -> defer.Deferred[int]:
        if self._control is None or node not in (None, self._node):
            return defer.succeed(0)
        self._control(message)
        return defer.succeed(1)

    def _keep(self, name: str, channel: _Channel, publication: Publication, history: History) -> None:
        now = self.clock.seconds()
        if channel.expires is not None and now >= channel.expires:
            self._drop_history(name, channel)
        size = len(publication.frame)
        channel.history.append(publication)
        channel.history_bytes += size
        self.history_bytes += size
        while len(channel.history) > history.size:
            self._forget_oldest(channel)
        channel.expires = now + history.ttl
        self._by_last_publish[name] = channel
        self._by_last_publish.move_to_end(name)
        for _ in range(_EXPIRY_CHECKS_PER_PUBLISH):
            oldest_name, oldest = next(iter(self._by_last_publish.items()))
            if oldest is channel or oldest.expires is None or now < oldest.expires:
                break
            self._drop_history(oldest_name, oldest)
            self._settle(oldest_name, oldest)
        while self.history_bytes > self.history_max_bytes:
            oldest_name, oldest = next(iter(self._by_last_publish.items()))
            self._forget_oldest(oldest)
            if not oldest.history:
                self._drop_history(oldest_name, oldest)
                self._settle(oldest_name, oldest)

    def _forget_oldest(self, channel: _Channel) -> None:
        size = len(channel.history.popleft().frame)
        channel.history_bytes -= size
        self.history_bytes -= size


@implementer(IPresence)
class MemoryPresence:
    def __init__(self) -> None:
        self._members: dict[str, dict[str, dict[str, str]]] = {}  # channel -> client_id -> info

    def add_presence(self, name: str, client_id: str, info: dict[str, str]) -> defer.Deferred[None]:
        self._members.setdefault(name, {})[client_id] = info
        return defer.succeed(None)

    def remove_presence(self, name: str, client_id: str) -> defer.Deferred[None]:
        members = self._members.get(name)
        if members is not None:
            members.pop(client_id, None)
            if not members:
                del self._members[name]
        return defer.succeed(None)

    def presence(self, name: str) -> defer.Deferred[dict[str, dict[str, str]]]:
        return defer.succeed(dict(presence_entry(info) for info in self._members.get(name, {}).values()))
