"""The delivery guarantee inside one process (docs/protocol.md section 6a), `node.Channels` over
a broker whose history reads the test answers: a gap in the offsets a connected subscriber
receives is filled from history in order before anything later; when history cannot fill it
(too short, another epoch, the broker unreachable), the subscriber gets `unsubscribed` with
`insufficient_state` and nothing more of that channel."""

import json

from twisted.internet import defer
from zope.interface import implementer

from zbifrost.channels import Publication, Stream, message_frame
from zbifrost.channels.interfaces import IBroker, IPresence
from zbifrost.channels.node import Channels
from zbifrost.messages import BROKER_UNAVAILABLE, RequestError

INSUFFICIENT = {"event": "unsubscribed", "channel": "news", "reason": "insufficient_state"}


@implementer(IBroker, IPresence)
class AnsweredBroker:
    """A broker whose history reads wait for the test (`reads`: (since, epoch, Deferred))."""

    features = ()

    def __init__(self):
        self.reads = []

    def attach(self, handler):
        self.handler = handler

    def subscribe(self, name):
        pass

    def unsubscribe(self, name):
        pass

    def history(self, name, since, epoch):
        read = defer.Deferred()
        self.reads.append((since, epoch, read))
        return read


class Recorder:
    client_id = "alice"

    def __init__(self):
        self.frames = []

    def send_frame(self, frame):
        self.frames.append(json.loads(frame))
        return True

    deliver = send_frame

    def offsets(self):
        return [frame.get("offset") for frame in self.frames]


def publication(offset, epoch="e1", sender="bob"):
    return Publication(offset, sender, message_frame("news", offset, sender, offset), epoch)


def subscribed_alice(at=1):
    """Channels over an AnsweredBroker with alice subscribed to `news` at offset `at`, epoch e1."""
    broker = AnsweredBroker()
    channels = Channels(broker, broker)
    alice = Recorder()
    channels.subscribe("news", alice)
    broker.reads.pop()[2].callback(Stream("e1", at))
    return broker, channels, alice


def test_a_gap_is_filled_from_history_in_order_before_anything_later():
    broker, channels, alice = subscribed_alice()
    channels.handle_publication("news", publication(2))
    channels.handle_publication("news", publication(5))  # 3 and 4 were lost on the way
    channels.handle_publication("news", publication(6))
    assert alice.offsets() == [2]
    since, epoch, read = broker.reads.pop()
    assert (since, epoch) == (2, "e1")
    read.callback(Stream("e1", 5, (publication(3), publication(4), publication(5))))
    channels.handle_publication("news", publication(7))
    assert alice.offsets() == [2, 3, 4, 5, 6, 7]


def test_a_gap_that_history_no_longer_holds_ends_the_subscription_with_insufficient_state():
    broker, channels, alice = subscribed_alice()
    channels.handle_publication("news", publication(4))
    broker.reads.pop()[2].callback(Stream("e1", 4, (publication(3), publication(4))))  # 2 is gone
    channels.handle_publication("news", publication(5))
    assert alice.frames == [INSUFFICIENT]


def test_a_publication_of_another_epoch_ends_the_subscription_with_insufficient_state():
    broker, channels, alice = subscribed_alice(at=7)
    channels.handle_publication("news", publication(1, epoch="e2"))  # the broker lost its data
    broker.reads.pop()[2].callback(Stream("e2", 1))
    assert alice.frames == [INSUFFICIENT]


def test_a_broker_back_after_an_outage_fills_and_one_still_unreachable_ends_the_subscription():
    broker, channels, alice = subscribed_alice()
    channels.handle_reconnected()
    broker.reads.pop()[2].callback(Stream("e1", 3, (publication(2), publication(3))))
    assert alice.offsets() == [2, 3]
    channels.handle_reconnected()
    broker.reads.pop()[2].errback(RequestError(BROKER_UNAVAILABLE, "down"))
    channels.handle_publication("news", publication(4))
    assert alice.frames[2:] == [INSUFFICIENT]


def test_publications_made_while_a_subscribe_reads_history_come_once_in_order_after_the_reply():
    broker = AnsweredBroker()
    channels = Channels(broker, broker)
    alice = Recorder()
    replies = []
    channels.subscribe("news", alice, since=("e1", 1)).addCallback(replies.append)
    channels.handle_publication("news", publication(3))  # in history too: the read began after it
    channels.handle_publication("news", publication(4))  # after the read
    broker.reads.pop()[2].callback(Stream("e1", 3, (publication(2), publication(3))))
    channels.handle_publication("news", publication(4))  # late on the way: already sent
    channels.handle_publication("news", publication(5))
    [reply] = replies
    assert (reply.recovered, [json.loads(frame)["offset"] for frame in reply.missed]) == (True, [2, 3])
    assert alice.offsets() == [4, 5]


def test_a_shard_back_after_an_outage_fills_only_the_channels_that_live_in_it():
    broker = AnsweredBroker()
    channels = Channels(broker, broker)
    for name in ("a", "b"):
        channels.subscribe(name, Recorder())
        broker.reads.pop()[2].callback(Stream("e1", 1))
    channels.handle_reconnected(lambda name: name == "b")
    assert len(broker.reads) == 1  # one history read: b's
    broker.reads.pop()[2].callback(Stream("e1", 1))
    channels.handle_reconnected()
    assert len(broker.reads) == 2  # the one broker back: every channel
