"""Channel semantics on each backend (`channel_server`: the embedded one and a Redis broker):
delivery to other subscribers only, unsubscribe, names, epochs and offsets, history and recovery
with `since`."""

import pytest_twisted

from zbifrost.channels import SERVER_SENDER, History
from zbifrost.testing import connect
from zbifrost.wire.frames import BATCHES_PER_TURN, TurnBatches

from .helpers import FORGED_CHANNELS


def _messages(client):
    return [f for f in client.frames if f.get("event") == "message"]


@pytest_twisted.inlineCallbacks
def test_publish_reaches_other_subscribers_but_not_the_publisher(channel_server, backend_settings):
    server = channel_server
    alice = yield connect(server.url)
    bob = yield connect(server.url)
    carol = yield connect(server.url)
    outsider = yield connect(server.url)
    for client in (alice, bob, carol):
        reply = yield client.request("subscribe", channel="chat")
        assert reply["subscribed"] is True and reply["offset"] == 0
    result = yield alice.request("publish", channel="chat", data={"text": "hi", "n": [1, 2]})
    delivered = {} if backend_settings else {"delivered": 2}  # delivered: only without a broker
    assert result == {"channel": "chat", "epoch": reply["epoch"], "offset": 1, **delivered}
    for client in (bob, carol):
        message = yield client.next_event("message")
        assert message == {"event": "message", "channel": "chat", "data": {"text": "hi", "n": [1, 2]},
                           "from": alice.info["client_id"], "offset": 1}
    # the publisher and the non-subscriber got nothing but their own replies
    yield alice.request("ping")
    yield outsider.request("ping")
    assert _messages(alice) == []
    assert _messages(outsider) == []
    # control: the same two clients do get a message once it is theirs to get
    yield outsider.request("subscribe", channel="chat")
    yield bob.request("publish", channel="chat", data="back")
    for client in (alice, outsider):
        yield client.next_event("message")
        assert [message["data"] for message in _messages(client)] == ["back"]
    for client in (alice, bob, carol, outsider):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_unsubscribed_and_disconnected_clients_stop_receiving(channel_server):
    server = channel_server
    alice = yield connect(server.url)
    bob = yield connect(server.url)
    carol = yield connect(server.url)
    witness = yield connect(server.url)
    for client in (bob, carol, witness):
        yield client.request("subscribe", channel="news")
    assert (yield bob.request("unsubscribe", channel="news")) == {"channel": "news", "subscribed": False}
    yield carol.close()
    yield alice.request("publish", channel="news", data="x")
    yield witness.next_event("message")  # the publish was delivered to this process's subscribers
    assert _messages(bob) == []
    # control: subscribed again, bob gets the next publish
    yield bob.request("subscribe", channel="news")
    yield alice.request("publish", channel="news", data="y")
    yield bob.next_event("message")
    assert [message["data"] for message in _messages(bob)] == ["y"]
    for client in (alice, bob, witness):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_bad_channel_names_and_missing_data_are_refused(channel_server):
    server = channel_server
    client = yield connect(server.url)
    for channel in ["", "a" * 129, "has space", "semi;colon", 5, None, "ünicode"]:
        reply = yield client.request_frame("subscribe", channel=channel)
        assert reply["code"] == "missing_field", channel
    assert (yield client.request("subscribe", channel="ok_name-1.2:x/y"))["subscribed"] is True
    assert (yield client.request_frame("publish", channel="ok_name-1.2:x/y"))["code"] == "missing_field"
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_channel_names_are_matched_in_full_and_128_characters_are_the_most(channel_server):
    client = yield connect(channel_server.url)
    for channel in FORGED_CHANNELS:
        for event, fields in (("subscribe", {}), ("unsubscribe", {}), ("publish", {"data": 1}), ("presence", {})):
            reply = yield client.request_frame(event, channel=channel, **fields)
            assert reply.get("code") == "missing_field", (event, channel)
    longest = "a" * 128
    assert (yield client.request("subscribe", channel=longest))["subscribed"] is True
    assert (yield client.request("publish", channel=longest, data=1))["offset"] == 1
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_offsets_grow_by_one_per_publish_within_one_epoch_and_are_reported_on_subscribe(channel_server):
    server = channel_server
    alice = yield connect(server.url)
    first = yield alice.request("subscribe", channel="counts")
    assert type(first["epoch"]) is str and first["offset"] == 0 and "recovered" not in first
    offsets = []
    for n in range(3):
        offsets.append((yield alice.request("publish", channel="counts", data=n))["offset"])
    assert offsets == [1, 2, 3]
    bob = yield connect(server.url)
    later = yield bob.request("subscribe", channel="counts")
    assert (later["epoch"], later["offset"]) == (first["epoch"], 3)
    other = yield bob.request("subscribe", channel="other")
    assert other["offset"] == 0
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_a_resubscribe_with_since_gets_the_missed_messages_in_order_after_its_reply(channel_server):
    server = channel_server
    alice = yield connect(server.url)
    bob = yield connect(server.url)
    seen = yield bob.request("subscribe", channel="room")
    yield alice.request("publish", channel="room", data="before")
    yield bob.next_event("message")
    yield bob.close()
    for n in range(3):
        yield alice.request("publish", channel="room", data=f"missed {n}")
    bob = yield connect(server.url)
    reply = yield bob.request_frame("subscribe", channel="room", since={"epoch": seen["epoch"], "offset": 1})
    assert reply["result"] == {"channel": "room", "subscribed": True, "epoch": seen["epoch"], "offset": 4,
                               "recovered": True}
    for _ in range(3):
        yield bob.next_event("message")
    after_reply = bob.frames[bob.frames.index(reply) + 1:]
    assert [(f["data"], f["offset"], f["from"]) for f in after_reply] == [
        (f"missed {n}", n + 2, alice.info["client_id"]) for n in range(3)]
    yield alice.request("publish", channel="room", data="live")
    assert (yield bob.next_event("message"))["offset"] == 5
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_a_client_that_missed_nothing_is_recovered_with_no_messages(channel_server):
    server = channel_server
    client = yield connect(server.url)
    seen = yield client.request("subscribe", channel="quiet")
    yield client.request("publish", channel="quiet", data=1)
    reply = yield client.request("subscribe", channel="quiet", since={"epoch": seen["epoch"], "offset": 1})
    assert reply["recovered"] is True
    yield client.request("ping")
    assert _messages(client) == []
    # control: from one offset earlier, the same exchange recovers the one publication
    yield client.request("subscribe", channel="quiet", since={"epoch": seen["epoch"], "offset": 0})
    yield client.request("ping")
    assert [message["data"] for message in _messages(client)] == [1]
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_another_epoch_or_history_that_no_longer_reaches_back_is_not_recovered(make_server, backend_settings):
    server = yield make_server(rate=0, **backend_settings)
    alice = yield connect(server.url)
    bob = yield connect(server.url)
    seen = yield bob.request("subscribe", channel="busy")
    for n in range(101):  # one more than the default history of 100 messages
        yield alice.request("publish", channel="busy", data=n)
    for _ in range(101):
        yield bob.next_event("message")  # the live ones
    for since in ({"epoch": seen["epoch"], "offset": 0}, {"epoch": "another", "offset": 101},
                  {"epoch": seen["epoch"], "offset": 102}):
        reply = yield bob.request("subscribe", channel="busy", since=since)
        assert (reply["recovered"], reply["offset"]) == (False, 101), since
    almost = yield bob.request("subscribe", channel="busy", since={"epoch": seen["epoch"], "offset": 1})
    assert almost["recovered"] is True
    yield bob.request("ping")
    assert len(_messages(bob)) == 101 + 100  # the live ones, then the last 100 again
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_history_with_a_gap_is_not_recovered_across_the_gap(channel_server):
    """Publications kept, then one not (its channel's rule reloaded with `size: 0`): a client
    from before the gap is not recovered, rather than recovered without the message of the gap."""
    channels = channel_server.hub.channels
    kept, not_kept = History(size=10, ttl=300), History(size=0, ttl=300)
    for n, history in enumerate((kept, kept, not_kept, kept)):
        published = yield channels.publish("gap", n, SERVER_SENDER, history)
    client = yield connect(channel_server.url)
    across = yield client.request("subscribe", channel="gap", since={"epoch": published["epoch"], "offset": 0})
    assert (across["recovered"], across["offset"]) == (False, 4)
    # control: from past the gap, the one message after it is recovered
    after = yield client.request("subscribe", channel="gap", since={"epoch": published["epoch"], "offset": 3})
    assert after["recovered"] is True
    yield client.request("ping")
    assert [message["data"] for message in _messages(client)] == [3]
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_malformed_since_is_refused(server):
    client = yield connect(server.url)
    for since in ["x", {"epoch": 1, "offset": 0}, {"epoch": "e"}, {"epoch": "e", "offset": -1},
                  {"epoch": "e", "offset": 1.5}, {"epoch": "e", "offset": True}]:
        reply = yield client.request_frame("subscribe", channel="c", since=since)
        assert reply["code"] == "missing_field", since
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_channel_history_is_listed_in_features(server):
    client = yield connect(server.url)
    assert "channel_history" in client.info["features"]
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_deliveries_of_one_reactor_turn_go_out_in_one_write_in_order_and_before_a_close(server):
    """TurnBatches: what a subscriber is sent in one turn is one write, publications in their
    order, and a close made in the same turn comes after them."""
    bob = yield connect(server.url)
    yield bob.request("subscribe", channel="burst")
    conn = server.hub.clients[bob.info["client_id"]].connection
    writes = []
    write = conn._write
    conn._write = lambda data: writes.append(data) or write(data)
    for n in range(5):
        server.hub.publish_from_backend("burst", n)
    assert writes == []  # not yet: at the end of this turn
    conn.close(1001, "Server shutdown")
    assert (yield bob.closed) == (1001, "Server shutdown")
    assert [m["data"] for m in _messages(bob)] == [0, 1, 2, 3, 4]
    assert len(writes) == 1 and writes[0].count(b'"event":"message"') == 5


def test_turn_batches_send_a_bounded_number_per_turn_and_the_rest_in_the_next_turns():
    """A large fan-out is sent over several reactor turns, BATCHES_PER_TURN at a time, so that
    the reactor reads in between; a connection added meanwhile goes after those waiting."""

    class Turns:  # a reactor whose turns the test runs one by one (task.Clock runs them all)
        def __init__(self):
            self.next = []

        def callLater(self, delay, function):
            assert delay == 0
            self.next.append(function)
            return function  # stands for the IDelayedCall

        def turn(self):
            due, self.next = self.next, []
            for function in due:
                function()

    class Conn:
        def __init__(self, n):
            self.n = n

        def send_batch(self):
            sent.append(self.n)

    reactor, sent = Turns(), []
    batches = TurnBatches(reactor)
    total = 2 * BATCHES_PER_TURN + 1
    for n in range(total):
        batches.add(Conn(n))
    assert sent == [] and len(reactor.next) == 1  # nothing within the turn; one call for all
    reactor.turn()
    assert sent == list(range(BATCHES_PER_TURN))
    batches.add(Conn("late"))
    reactor.turn()
    assert sent == list(range(2 * BATCHES_PER_TURN))
    reactor.turn()
    assert sent == [*range(total), "late"] and reactor.next == []
