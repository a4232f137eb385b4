"""This process's side of the channels (what Centrifuge's Node and Hub do): its subscribers per
channel, the one fan-out of publications and joins/leaves to them, recovery on subscribe (the
`since` of docs/protocol.md section 6) over the broker's history, and catching up after a broker
outage. `Channels` is what the event handlers call (`session.hub.channels`); the broker
(`IBroker`) and the presence manager (`IPresence`) behind it are whichever the config names,
and it starts, stops and asks after those that have an `ILifecycle`.

A publication is encoded once, by the broker, and goes to each live subscriber through its
`deliver` (batched per reactor turn). A subscriber whose history read is under way (its
subscribe, a fill) is held: what arrives meanwhile waits for the read, then goes out after
its reply, in order, each offset once. A publication that is not the next offset of the
channel's epoch (one was lost on the way: the broker's connection dropped), or a broker that
comes back after an outage, makes the channel fill the gap from history for its subscribers
before anything later; when history cannot (it no longer reaches back, or the epoch changed),
they get `unsubscribed` with reason `insufficient_state` (docs/protocol.md section 6a) and
their subscription ends. Nothing here knows Redis, frames beyond their bytes, or who may
subscribe (`rules`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from ..messages import RequestError
from . import DEFAULT_HISTORY, History, Membership, Publication, Stream, Subscribed, Subscriber, unsubscribed_frame
from .interfaces import IBroker, IBrokerEventHandler, ILifecycle, IPresence


class _Held:
    """A subscriber outside the channel's live fan-out. While a history read for it is under way,
    `buffer` keeps the publications arriving meanwhile; once read (`buffer` None), it has every
    publication up to `floor` and waits for the live ones to reach it."""

    __slots__ = ("subscriber", "floor", "buffer")

    def __init__(self, subscriber: Subscriber, floor: int = 0) -> None:
        self.subscriber = subscriber
        self.floor = floor
        self.buffer: list[Publication] | None = []


class _Channel:
    """A channel with subscribers in this process. Each `subscribers` one (live, in subscription
    order) has every publication of `epoch` up to `offset` and gets each later one as it arrives."""

    __slots__ = ("subscribers", "held", "members", "offset", "epoch")

    def __init__(self) -> None:
        self.subscribers: dict[str, Subscriber] = {}
        self.held: dict[str, _Held] = {}
        self.members: dict[str, Membership] = {}  # of the subscribers that joined with one
        self.offset = 0
        self.epoch: str | None = None  # known once a history read answered


def _recovery(since: tuple[str, int] | None, stream: Stream) -> Subscribed:
    """What a subscribe with `since` (epoch, offset) found in the channel's `stream`: recovered
    when the epoch is the same and history holds every publication after that offset."""
    if since is None:
        return Subscribed(stream.epoch, stream.offset)
    epoch, offset = since
    recovered = (epoch == stream.epoch and offset <= stream.offset
                 and len(stream.publications) == stream.offset - offset)
    missed = tuple(publication.frame for publication in stream.publications) if recovered else ()
    return Subscribed(stream.epoch, stream.offset, recovered, missed)


def _first_failure(failure: Failure) -> Failure:
    """The failure of a gatherResults, as the step that failed raised it."""
    failure.trap(defer.FirstError)
    first: defer.FirstError = failure.value  # type: ignore[assignment]  # trapped just above
    return first.subFailure


def _unavailable(failure: Failure) -> None:
    """A leave that cannot reach the broker: its presence entry expires, its announcement is lost."""
    failure.trap(RequestError)


@implementer(IBrokerEventHandler)
class Channels(service.Service):
    """The channels of this process, over `broker` and `presence_manager`; a service that starts
    and stops their lifecycles with the server."""

    def __init__(self, broker: IBroker, presence_manager: IPresence) -> None:
        self.broker = broker
        self.presence_manager = presence_manager
        self.features: tuple[str, ...] = tuple(broker.features)
        self._channels: dict[str, _Channel] = {}
        broker.attach(self)

    # -- lifecycle -------------------------------------------------------------------------

    def _lifecycles(self) -> list[ILifecycle]:
        """The parts with a lifecycle, the broker first (each once: one object may be both)."""
        parts: list[Any] = [self.broker]
        if self.presence_manager is not self.broker:
            parts.append(self.presence_manager)
        return [part for part in parts if ILifecycle.providedBy(part)]

    def startService(self) -> None:
        super().startService()
        for part in self._lifecycles():
            part.start()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        stopped = defer.gatherResults([part.stop() for part in reversed(self._lifecycles())], consumeErrors=True)
        return stopped.addCallback(lambda _: None)

    def when_up(self) -> defer.Deferred[None]:
        """Fires once every part with a lifecycle is up (at once when none has one)."""
        return defer.gatherResults([part.when_up() for part in self._lifecycles()]).addCallback(lambda _: None)

    # -- what the event handlers call ------------------------------------------------------

    def subscribe(self, name: str, subscriber: Subscriber, since: tuple[str, int] | None = None,
                  membership: Membership | None = None) -> defer.Deferred[Subscribed]:
        """Make `subscriber` receive the channel's publications; fires with a `Subscribed` once
        the subscription is live, the publications it missed since `since` (epoch, offset)
        included. A `membership` is kept, and announced when new; a repeated subscribe
        answers again and changes nothing else."""
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel()
            self.broker.subscribe(name)
        client_id = subscriber.client_id
        previous = channel.held.get(client_id)  # a subscribe of it under way, or one waiting to go live
        held = _Held(subscriber)
        if previous is not None:
            held.floor = previous.floor
            held.buffer = previous.buffer if previous.buffer is not None else []
        subscribed_before = channel.subscribers.pop(client_id, None) is not None or previous is not None
        channel.held[client_id] = held
        result: defer.Deferred[Subscribed] = defer.Deferred()

        def current() -> bool:
            """Neither unsubscribed nor subscribed again since."""
            return channel.held.get(client_id) is held

        def joined(stream: Stream) -> Stream | defer.Deferred[Stream]:
            if membership is None or client_id in channel.members or not current():
                return stream
            return self._join(name, channel, client_id, membership).addCallback(lambda _: stream)

        def found(stream: Stream) -> None:
            if current() and stream.epoch != channel.epoch:
                if channel.epoch is not None:  # the others have an epoch that is gone
                    self._end_all(name, channel, keep=held)
                channel.epoch, channel.offset = stream.epoch, 0
            result.callback(_recovery(since, stream))  # the reply and the missed publications go out now
            if current():
                self._release(channel, held, (), stream.offset)

        def failed(failure: Failure) -> None:
            if current() and subscribed_before:  # a subscription it had stays as it was
                self._release(channel, held, (), 0)
            elif current():
                self._forget(name, client_id)
            result.errback(failure)

        epoch, after = since if since is not None else (None, None)
        self.broker.history(name, after, epoch).addCallback(joined).addCallbacks(found, failed)
        return result

    def unsubscribe(self, name: str, subscriber: Subscriber) -> defer.Deferred[None]:
        """Stop delivering the channel to `subscriber`, announcing its leave."""
        self._forget(name, subscriber.client_id)
        return defer.succeed(None)

    def unsubscribe_all(self, subscriber: Subscriber, names: set[str]) -> None:
        """Forget a closed connection's subscriptions, announcing its leaves."""
        for name in names:
            self._forget(name, subscriber.client_id)

    def publish(self, name: str, data: Any, sender_id: str, history: History = DEFAULT_HISTORY,
                idempotency_key: str | None = None) -> defer.Deferred[dict[str, Any]]:
        """Deliver `data` to every subscriber but `sender_id`, in publish order per channel, and
        keep it per `history`; fires with `{"epoch", "offset"}` (and `"delivered"`, see IBroker),
        those of the first publish with the same `idempotency_key` when there was one."""
        return self.broker.publish(name, data, sender_id, history, idempotency_key)

    def presence(self, name: str) -> defer.Deferred[dict[str, dict[str, str]]]:
        """Fires with {client_id: {"user", "role"}} of the channel's listed members."""
        return self.presence_manager.presence(name)

    def read_history(self, name: str, since: tuple[str, int] | None) -> defer.Deferred[tuple[Stream, bool | None]]:
        """The channel's position and kept publications (the server API's `history`): those after
        `since` (epoch, offset) with whether every one of them was found, as a subscribe with
        `since` would tell; without `since`, all of them and None."""
        epoch, after = since if since is not None else (None, 0)
        read = self.broker.history(name, after, epoch)
        return read.addCallback(lambda stream: (stream, None if since is None else _recovery(since, stream).recovered))

    def subscriber_counts(self) -> dict[str, int]:
        """{name: subscribers in this process} of every channel that has some."""
        return {name: len(channel.subscribers) + len(channel.held) for name, channel in self._channels.items()}

    # -- IBrokerEventHandler ---------------------------------------------------------------

    def handle_publication(self, channel: str, publication: Publication) -> int:
        subscribed = self._channels.get(channel)
        if subscribed is None:
            return 0
        offset, sender_id, frame, epoch = publication
        delivered = 0
        if subscribed.subscribers and (epoch != subscribed.epoch or offset > subscribed.offset + 1):
            self._fill(channel, subscribed)  # one or more were lost on the way: this one waits
        elif offset > subscribed.offset:  # else every live subscriber has it already
            subscribed.offset = offset
            for client_id, subscriber in list(subscribed.subscribers.items()):
                if client_id != sender_id and subscriber.deliver(frame):
                    delivered += 1
        if subscribed.held:
            self._hold(subscribed, publication)
        return delivered

    def handle_join_leave(self, channel: str, client_id: str, frame: bytes) -> None:
        subscribed = self._channels.get(channel)
        if subscribed is None:
            return
        for other, subscriber in list(subscribed.subscribers.items()):
            if other != client_id:
                subscriber.deliver(frame)
        for other, held in list(subscribed.held.items()):
            if held.buffer is None and other != client_id:  # it has its reply
                held.subscriber.deliver(frame)

    def handle_reconnected(self, concerned: Callable[[str], bool] | None = None) -> None:
        for name, channel in list(self._channels.items()):
            if concerned is None or concerned(name):
                self._fill(name, channel)

    # -- holding and releasing -------------------------------------------------------------

    def _hold(self, channel: _Channel, publication: Publication) -> None:
        """A publication for the held subscribers: kept while their read is under way, else
        sent to those it is new to; those the live publications have reached go live."""
        offset = publication.offset
        for client_id, held in list(channel.held.items()):
            if held.buffer is not None:
                held.buffer.append(publication)
            elif offset >= held.floor:
                del channel.held[client_id]
                channel.subscribers[client_id] = held.subscriber
                if offset > held.floor and client_id != publication.sender_id:
                    held.subscriber.deliver(publication.frame)

    def _release(self, channel: _Channel, held: _Held, publications: tuple[Publication, ...], floor: int) -> None:
        """The read for `held` is done and it has every publication up to `floor`: send it
        `publications` and those kept meanwhile, in order, each past its floor once (now: before
        anything delivered from here on); then it goes live, or waits for the live ones to reach it."""
        subscriber = held.subscriber
        client_id = subscriber.client_id
        floor = max(floor, held.floor)
        kept, held.buffer = held.buffer or [], None
        for publication in sorted((*publications, *kept)):
            if publication.offset > floor and publication.epoch == channel.epoch:
                floor = publication.offset
                if publication.sender_id != client_id:
                    subscriber.send_frame(publication.frame)
        held.floor = floor
        if floor <= channel.offset or not channel.subscribers:
            channel.offset = max(channel.offset, floor)
            del channel.held[client_id]
            channel.subscribers[client_id] = subscriber

    def _fill(self, name: str, channel: _Channel) -> None:
        """Send the channel's subscribers here what they missed after `channel.offset` (a gap
        in the offsets received, or a broker outage), from history, before anything later (those
        whose subscribe is still being read get it from that read); when history cannot, end
        their subscriptions with `insufficient_state`."""
        since, epoch = channel.offset, channel.epoch
        filling = [held for held in channel.held.values() if held.buffer is None]
        for held in filling:
            held.buffer = []
        for client_id, subscriber in channel.subscribers.items():
            held = channel.held[client_id] = _Held(subscriber, since)
            filling.append(held)
        channel.subscribers.clear()
        if not filling:
            return

        def found(stream: Stream) -> None:
            complete = (stream.epoch == epoch == channel.epoch and since <= stream.offset
                        and len(stream.publications) == stream.offset - since)
            if complete and stream.publications:
                channel.offset = max(channel.offset, stream.publications[-1].offset)
            for held in filling:
                if channel.held.get(held.subscriber.client_id) is not held:
                    continue  # unsubscribed or subscribed again meanwhile
                if complete:
                    self._release(channel, held, stream.publications, since)
                else:
                    self._end(name, held.subscriber)

        def lost(failure: Failure) -> Stream:
            failure.trap(RequestError)
            return Stream("", -1)  # unknown: ends them (they subscribe again with `since`)

        self.broker.history(name, since, epoch).addErrback(lost).addCallback(found)

    def _end(self, name: str, subscriber: Subscriber) -> None:
        """End a subscription that cannot be kept whole: `unsubscribed`, `insufficient_state`."""
        subscriber.deliver(unsubscribed_frame(name, "insufficient_state"))
        self._forget(name, subscriber.client_id)

    def _end_all(self, name: str, channel: _Channel, keep: _Held) -> None:
        """End the subscriptions of the channel's epoch that is gone, but `keep`'s and those whose
        subscribe is still being read (their read tells)."""
        ending = [*channel.subscribers.values(), *(held.subscriber for held in channel.held.values()
                                                   if held is not keep and held.buffer is None)]
        for subscriber in ending:
            self._end(name, subscriber)

    # -- membership ------------------------------------------------------------------------

    def _join(self, name: str, channel: _Channel, client_id: str, membership: Membership) -> defer.Deferred[None]:
        channel.members[client_id] = membership
        steps: list[defer.Deferred[None]] = []
        if membership.listed:
            steps.append(self.presence_manager.add_presence(name, client_id, membership.info))
        if membership.announced:
            steps.append(self.broker.publish_join_leave(name, client_id, membership.frame("join", name)))
        return defer.gatherResults(steps, consumeErrors=True).addCallbacks(lambda _: None, _first_failure)

    def _forget(self, name: str, client_id: str) -> None:
        channel = self._channels.get(name)
        if channel is None:
            return
        if channel.subscribers.pop(client_id, None) is None and channel.held.pop(client_id, None) is None:
            return
        membership = channel.members.pop(client_id, None)
        if membership is not None:
            if membership.listed:
                self.presence_manager.remove_presence(name, client_id).addErrback(_unavailable)
            if membership.announced:
                self.broker.publish_join_leave(name, client_id, membership.frame("leave", name)).addErrback(
                    _unavailable)
        if not channel.subscribers and not channel.held:
            del self._channels[name]
            self.broker.unsubscribe(name)
