"""Channels within one process: delivery to other subscribers only, unsubscribe, names."""

import pytest_twisted

from zbifrost.testing import connect


@pytest_twisted.inlineCallbacks
def test_publish_reaches_other_subscribers_but_not_the_publisher(server):
    alice = yield connect(server.url)
    bob = yield connect(server.url)
    carol = yield connect(server.url)
    outsider = yield connect(server.url)
    for client in (alice, bob, carol):
        assert (yield client.request("subscribe", channel="chat")) == {"channel": "chat", "subscribed": True}
    result = yield alice.request("publish", channel="chat", data={"text": "hi", "n": [1, 2]})
    assert result == {"channel": "chat", "delivered": 2}
    for client in (bob, carol):
        message = yield client.next_event("message")
        assert message == {"event": "message", "channel": "chat", "data": {"text": "hi", "n": [1, 2]},
                           "from": alice.info["client_id"]}
    # the publisher and the non-subscriber got nothing but their own replies
    yield alice.request("ping")
    yield outsider.request("ping")
    assert [f for f in alice.frames if f.get("event") == "message"] == []
    assert [f for f in outsider.frames if f.get("event") == "message"] == []
    for client in (alice, bob, carol, outsider):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_unsubscribed_and_disconnected_clients_stop_receiving(server):
    alice = yield connect(server.url)
    bob = yield connect(server.url)
    carol = yield connect(server.url)
    for client in (bob, carol):
        yield client.request("subscribe", channel="news")
    assert (yield bob.request("unsubscribe", channel="news")) == {"channel": "news", "subscribed": False}
    yield carol.close()
    assert (yield alice.request("publish", channel="news", data="x")) == {"channel": "news", "delivered": 0}
    yield bob.request("ping")
    assert [f for f in bob.frames if f.get("event") == "message"] == []
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_bad_channel_names_and_missing_data_are_refused(server):
    client = yield connect(server.url)
    for channel in ["", "a" * 129, "has space", "semi;colon", 5, None, "ünicode"]:
        reply = yield client.request_frame("subscribe", channel=channel)
        assert reply["code"] == "missing_field", channel
    assert (yield client.request("subscribe", channel="ok_name-1.2:x/y"))["subscribed"] is True
    assert (yield client.request_frame("publish", channel="ok_name-1.2:x/y"))["code"] == "missing_field"
    yield client.close()
