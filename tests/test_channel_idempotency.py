"""Idempotent publish (docs/protocol.md section 6a): a second publish with the same
`idempotency_key` on the same channel within 300 s publishes nothing and answers the first one's
{channel, epoch, offset}: from a client, `POST /api/publish` and `ctx.publish`, on each channel
backend, across two servers on one Redis; a bad key is `missing_field` (400 from the API)."""

import json

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from zbifrost.channels import DEFAULT_HISTORY, INVALID_IDEMPOTENCY_KEY
from zbifrost.channels.memory import MemoryBroker
from zbifrost.testing import connect

from .helpers import ENGINE, in_thread
from .test_channel_publishing import _post, _tokens

BAD_KEYS = ["", "k" * 65, "with space", "new\n", 7]


@defer.inlineCallbacks
def _messages(client, count):
    """The data of the client's next `count` message events."""
    data = []
    for _ in range(count):
        data.append((yield client.next_event("message"))["data"])
    return data


@pytest_twisted.inlineCallbacks
def test_a_repeated_key_publishes_once_and_answers_the_first_publish(channel_server):
    alice = yield connect(channel_server.url)
    bob = yield connect(channel_server.url)
    yield alice.request("subscribe", channel="orders")
    first = yield bob.request("publish", channel="orders", data="once", idempotency_key="order-7")
    again = yield bob.request("publish", channel="orders", data="twice", idempotency_key="order-7")
    assert again == first
    elsewhere = yield bob.request("publish", channel="other", data="x", idempotency_key="order-7")
    assert elsewhere["offset"] == 1  # a key is per channel
    later = yield bob.request("publish", channel="orders", data="next")
    assert later["offset"] == first["offset"] + 1
    assert (yield _messages(alice, 2)) == ["once", "next"]
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_a_bad_key_is_missing_field_from_a_client_and_400_from_the_api(make_server, tmp_path):
    server = yield make_server(tokens_file=_tokens(tmp_path))
    alice = yield connect(server.url)
    for key in BAD_KEYS:
        reply = yield alice.request_frame("publish", channel="orders", data=1, idempotency_key=key)
        assert (reply["code"], reply["error"]) == ("missing_field", INVALID_IDEMPOTENCY_KEY), key
        status, _, body = yield _post(server, {"channel": "orders", "data": 1, "idempotency_key": key}, token="t-root")
        assert (status, json.loads(body)) == (400, {"error": INVALID_IDEMPOTENCY_KEY, "code": "missing_field"}), key
    assert (yield alice.request("publish", channel="orders", data=1, idempotency_key="a" * 64))["offset"] == 1
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_the_api_answers_a_repeated_key_with_the_first_publish(make_server, tmp_path, backend_settings):
    server = yield make_server(tokens_file=_tokens(tmp_path), **backend_settings)
    body = {"channel": "orders", "data": 1, "idempotency_key": "job:42"}
    answers = []
    for _ in range(2):
        status, _, reply = yield _post(server, body, token="t-root")
        answers.append((status, json.loads(reply)))
    assert answers[0] == answers[1]
    assert answers[0][1]["offset"] == 1


@pytest_twisted.inlineCallbacks
def test_a_key_used_on_one_server_is_answered_by_another_on_the_same_redis(make_server, redis_server):
    one = yield make_server(broker=redis_server.url)
    two = yield make_server(broker=redis_server.url)
    alice = yield connect(one.url)
    bob = yield connect(two.url)
    first = yield alice.request("publish", channel="orders", data=1, idempotency_key="k1")
    assert (yield bob.request("publish", channel="orders", data=2, idempotency_key="k1")) == first
    ttl = yield in_thread(redis_server.command, "TTL", "zbifrost:idem:orders:k1")
    assert 0 < int(ttl.lstrip(":")) <= 300
    # one Redis key for both (zbifrost:idem:a:b:c), yet two channels: each publishes
    assert (yield alice.request("publish", channel="a:b", data=1, idempotency_key="c"))["offset"] == 1
    assert (yield alice.request("publish", channel="a", data=1, idempotency_key="b:c"))["offset"] == 1
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_ctx_publish_with_a_key_publishes_once(make_server):
    server = yield make_server(workspace=ENGINE, zvafile="@.zUI.main")
    alice = yield connect(server.url)
    yield alice.request("subscribe", channel="news")
    for _ in range(2):
        yield alice.dispatch("Announce Once")
    yield alice.dispatch("Announce On Reactor")
    assert (yield _messages(alice, 2)) == ["once", "from the reactor"]
    failed = yield alice.request_frame("dispatch", zKey="Announce With A Bad Key")
    assert failed["code"] == "command_failed"
    yield alice.close()


@pytest.mark.parametrize("elapsed, offset", [(299, 1), (300, 2)])
def test_the_memory_broker_keeps_a_key_for_300_seconds_on_the_reactor_clock(elapsed, offset):
    clock = Clock()
    broker = MemoryBroker(clock, 1 << 20)
    broker.publish("orders", 1, "server", DEFAULT_HISTORY, "k")
    clock.advance(elapsed)
    answered = []
    broker.publish("orders", 2, "server", DEFAULT_HISTORY, "k").addCallback(answered.append)
    assert answered[0]["offset"] == offset
