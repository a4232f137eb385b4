"""The embedded channel backend: channels, epochs, offsets and history in this one process.

Each channel gets a random epoch when it is first seen; offsets count its publishes from 1.
History keeps each channel's last publications as their encoded frames (sent again as they
are on recovery), within the channel's `History` and within one cap on the bytes of all
history (`history_max_bytes`): past it, the oldest messages of the channel published to
least recently go first. A channel with neither subscribers nor history keeps only its epoch
and offset, for the last MAX_IDLE_CHANNELS such channels. Every method answers at once (with
an already-fired Deferred) and touches no timer; expiry is checked when history is read and,
for the least recently published channels, on each publish. Presence is the channel's
subscribers' memberships, exact and local; join and leave go to the local subscribers at once.
"""

import secrets
from collections import OrderedDict, deque

from twisted.internet import defer
from zope.interface import implementer

from . import DEFAULT_HISTORY, IChannelBackend, Subscribed, message_frame, presence_entry

MAX_IDLE_CHANNELS = 100_000
_EXPIRY_CHECKS_PER_PUBLISH = 2


class _Channel:
    __slots__ = ("epoch", "offset", "subscribers", "members", "history", "history_bytes", "expires")

    def __init__(self):
        self.epoch = secrets.token_hex(8)
        self.offset = 0
        self.subscribers = {}  # client_id -> subscriber, in subscription order
        self.members = {}  # client_id -> Membership, of the subscribers that have one
        self.history = deque()  # (offset, frame), oldest first
        self.history_bytes = 0
        self.expires = None  # when the history is dropped: last publish + ttl


@implementer(IChannelBackend)
class MemoryBackend:
    features = ()

    def __init__(self, clock, history_max_bytes):
        self.clock = clock
        self.history_max_bytes = history_max_bytes
        self.history_bytes = 0
        self._channels = {}  # name -> _Channel
        self._by_last_publish = OrderedDict()  # name -> _Channel, the ones holding history
        self._idle = OrderedDict()  # names of channels with neither subscribers nor history

    def _channel(self, name):
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel()
        return channel

    def _settle(self, name, channel):
        """Track whether a channel is idle, forgetting the oldest idle channels past the cap."""
        if channel.subscribers or channel.history:
            self._idle.pop(name, None)
            return
        self._idle[name] = None
        self._idle.move_to_end(name)
        while len(self._idle) > MAX_IDLE_CHANNELS:
            forgotten, _ = self._idle.popitem(last=False)
            del self._channels[forgotten]

    def _drop_history(self, name, channel):
        self.history_bytes -= channel.history_bytes
        channel.history.clear()
        channel.history_bytes = 0
        channel.expires = None
        self._by_last_publish.pop(name, None)

    def _expire(self, name, channel):
        if channel.expires is not None and self.clock.seconds() >= channel.expires:
            self._drop_history(name, channel)
            self._settle(name, channel)

    def _announce(self, channel, membership, event, name):
        if membership is None or not membership.announced:
            return
        frame = membership.frame(event, name)
        for client_id, subscriber in list(channel.subscribers.items()):
            if client_id != membership.info["client_id"]:
                subscriber.deliver(frame)

    def subscribe(self, name, subscriber, since=None, membership=None):
        channel = self._channel(name)
        if subscriber.client_id not in channel.subscribers and membership is not None:
            channel.members[subscriber.client_id] = membership
            self._announce(channel, membership, "join", name)
        channel.subscribers[subscriber.client_id] = subscriber
        self._settle(name, channel)
        if since is None:
            return defer.succeed(Subscribed(channel.epoch, channel.offset))
        self._expire(name, channel)
        epoch, offset = since
        if epoch != channel.epoch or offset > channel.offset:
            return defer.succeed(Subscribed(channel.epoch, channel.offset, False))
        if offset == channel.offset:
            return defer.succeed(Subscribed(channel.epoch, channel.offset, True))
        if not channel.history or channel.history[0][0] > offset + 1:
            return defer.succeed(Subscribed(channel.epoch, channel.offset, False))
        missed = tuple(frame for at, frame in channel.history if at > offset)
        return defer.succeed(Subscribed(channel.epoch, channel.offset, True, missed))

    def unsubscribe(self, name, subscriber):
        channel = self._channels.get(name)
        if channel is not None and channel.subscribers.pop(subscriber.client_id, None) is not None:
            self._announce(channel, channel.members.pop(subscriber.client_id, None), "leave", name)
            self._settle(name, channel)
        return defer.succeed(None)

    def unsubscribe_all(self, subscriber, names):
        for name in names:
            self.unsubscribe(name, subscriber)

    def presence(self, name):
        channel = self._channels.get(name)
        members = channel.members.values() if channel is not None else ()
        return defer.succeed(dict(presence_entry(member.info) for member in members if member.listed))

    def publish(self, name, data, sender_id, history=DEFAULT_HISTORY):
        channel = self._channel(name)
        channel.offset += 1
        frame = message_frame(name, data, sender_id, channel.offset)
        if history.size:
            self._keep(name, channel, frame, history)
        delivered = 0
        for client_id, subscriber in list(channel.subscribers.items()):
            if client_id != sender_id and subscriber.deliver(frame):
                delivered += 1
        self._settle(name, channel)
        return defer.succeed({"epoch": channel.epoch, "offset": channel.offset, "delivered": delivered})

    def _keep(self, name, channel, frame, history):
        now = self.clock.seconds()
        if channel.expires is not None and now >= channel.expires:
            self._drop_history(name, channel)
        channel.history.append((channel.offset, frame))
        channel.history_bytes += len(frame)
        self.history_bytes += len(frame)
        while len(channel.history) > history.size:
            self._forget_oldest(channel)
        channel.expires = now + history.ttl
        self._by_last_publish[name] = channel
        self._by_last_publish.move_to_end(name)
        for _ in range(_EXPIRY_CHECKS_PER_PUBLISH):
            oldest_name, oldest = next(iter(self._by_last_publish.items()))
            if oldest is channel or now < oldest.expires:
                break
            self._drop_history(oldest_name, oldest)
            self._settle(oldest_name, oldest)
        while self.history_bytes > self.history_max_bytes:
            oldest_name, oldest = next(iter(self._by_last_publish.items()))
            self._forget_oldest(oldest)
            if not oldest.history:
                self._drop_history(oldest_name, oldest)
                self._settle(oldest_name, oldest)

    def _forget_oldest(self, channel):
        _, frame = channel.history.popleft()
        channel.history_bytes -= len(frame)
        self.history_bytes -= len(frame)
