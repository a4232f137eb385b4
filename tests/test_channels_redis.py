"""The Redis broker across processes: delivery between two servers on one Redis (in-process and
a real twistd), history surviving a zbifrost restart, a broker outage (broker_unavailable,
503 from POST /api/publish, /healthz, reconnection) and a fan-out connection lost for a moment (catching up)."""

import json
import os
import signal
import subprocess
import time

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from websockets.sync.client import connect as ws_connect

from tests.helpers import http_get, in_thread
from tests.test_channel_publishing import _post, _tokens
from tests.test_core_twistd import REPO, TWISTD, free_port, wait_until_listening
from zbifrost.testing import connect


def _health(server):
    return in_thread(http_get, server.port, "/healthz").addCallback(lambda response: json.loads(response[2]))


@defer.inlineCallbacks
def _alice_and_bob_on_two_servers(make_server, redis_server):
    """Two servers on one Redis, alice a client of the first and bob of the second."""
    one = yield make_server(broker=redis_server.url)
    two = yield make_server(broker=redis_server.url)
    alice = yield connect(one.url)
    bob = yield connect(two.url)
    return one, two, alice, bob


@pytest_twisted.inlineCallbacks
def test_a_publish_on_one_server_reaches_subscribers_of_another_on_the_same_redis(make_server, redis_server):
    _one, two, alice, bob = yield _alice_and_bob_on_two_servers(make_server, redis_server)
    assert "broker" in alice.info["features"]
    subscribed = yield alice.request("subscribe", channel="chat")
    published = yield bob.request("publish", channel="chat", data={"text": "hi"})
    assert published == {"channel": "chat", "epoch": subscribed["epoch"], "offset": 1}  # no `delivered`
    message = yield alice.next_event("message")
    assert message == {"event": "message", "channel": "chat", "data": {"text": "hi"},
                       "from": bob.info["client_id"], "offset": 1}
    assert (yield _health(two))["broker"] == "up"
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_history_survives_a_zbifrost_restart(make_server, redis_server):
    first = yield make_server(broker=redis_server.url)
    alice = yield connect(first.url)
    published = []
    for n in range(3):
        published.append((yield alice.request("publish", channel="log", data=n)))
    yield alice.close()
    yield first.stop()
    second = yield make_server(broker=redis_server.url)
    bob = yield connect(second.url)
    reply = yield bob.request("subscribe", channel="log", since={"epoch": published[0]["epoch"], "offset": 1})
    assert (reply["epoch"], reply["offset"], reply["recovered"]) == (published[0]["epoch"], 3, True)
    missed = []
    for _ in range(2):
        missed.append((yield bob.next_event("message")))
    assert [(m["data"], m["offset"]) for m in missed] == [(1, 2), (2, 3)]
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_while_redis_is_down_channels_answer_broker_unavailable_and_work_again_once_it_is_back(
        make_server, redis_server, tmp_path):
    server = yield make_server(broker=redis_server.url, tokens_file=_tokens(tmp_path))
    alice = yield connect(server.url)
    bob = yield connect(server.url)
    seen = yield alice.request("subscribe", channel="news")
    logged = []
    globalLogPublisher.addObserver(logged.append)
    yield in_thread(redis_server.stop)
    for event, fields in (("publish", {"data": 1}), ("subscribe", {})):
        reply = yield bob.request_frame(event, channel="news", **fields)
        assert reply["code"] == "broker_unavailable", reply
    health = yield _health(server)
    assert (health["status"], health["broker"]) == ("ok", "unavailable")
    status, _, body = yield _post(server, {"channel": "news", "data": 1}, token="t-root")
    assert (status, json.loads(body)) == (503, {"error": "The channel broker cannot be reached: retry later",
                                                "code": "broker_unavailable"})
    yield in_thread(redis_server.start)
    yield server.hub.channels.when_up()
    published = yield bob.request("publish", channel="news", data="back")
    assert (published["epoch"], published["offset"]) == (seen["epoch"], 1)
    assert (yield alice.next_event("message"))["data"] == "back"  # her subscription outlived the outage
    assert (yield _health(server))["broker"] == "up"
    globalLogPublisher.removeObserver(logged.append)
    broker_lines = [event["log_format"].split(":")[0] for event in logged if "broker" in event.get("log_format", "")]
    assert broker_lines == ["channel broker {address} cannot be reached", "channel broker {address} is back"]
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_subscribers_get_what_was_published_while_their_fanout_connection_was_lost(make_server, redis_server):
    one, _two, alice, bob = yield _alice_and_bob_on_two_servers(make_server, redis_server)
    yield alice.request("subscribe", channel="feed")
    fanout = one.hub.channels.broker._fanout.transport.getHost()
    killed = yield in_thread(redis_server.command, "CLIENT", "KILL", "ADDR", f"{fanout.host}:{fanout.port}")
    assert killed == ":1"  # one killed
    # server one reconnects after a backoff of about a second; bob's publish lands meanwhile
    yield bob.request("publish", channel="feed", data="while away")
    message = yield alice.next_event("message").addTimeout(10, reactor)
    assert (message["data"], message["offset"]) == ("while away", 1)
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_a_twistd_process_and_an_in_process_server_share_channels_through_redis(make_server, redis_server, tmp_path):
    port = free_port()
    process = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "zbifrost", "--port", str(port),
                                "--broker", redis_server.url], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=REPO),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield in_thread(wait_until_listening, port, process)
        server = yield make_server(broker=redis_server.url)
        alice = yield connect(server.url)
        yield alice.request("subscribe", channel="cross")

        def publish_from_twistd():
            with ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
                json.loads(ws.recv(timeout=10))
                for _ in range(50):  # its broker connection may still be on its way
                    ws.send(json.dumps({"event": "publish", "channel": "cross", "data": "from twistd"}))
                    reply = json.loads(ws.recv(timeout=10))
                    if reply.get("code") != "broker_unavailable":
                        return reply
                    time.sleep(0.1)
                return reply

        assert (yield in_thread(publish_from_twistd))["result"]["offset"] == 1
        assert (yield alice.next_event("message"))["data"] == "from twistd"
        yield alice.close()
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert "Traceback" not in output


@pytest_twisted.inlineCallbacks
def test_a_publish_that_redis_will_not_write_durably_is_not_acknowledged(make_server, redis_server):
    server = yield make_server(broker=redis_server.url)
    alice = yield connect(server.url)
    assert (yield in_thread(redis_server.command, "CONFIG", "SET", "min-replicas-to-write", "1")) == "+OK"
    reply = yield alice.request_frame("publish", channel="news", data=1)  # NOREPLICAS: no replica has it
    assert reply["code"] == "broker_unavailable", reply
    yield in_thread(redis_server.command, "CONFIG", "SET", "min-replicas-to-write", "0")
    published = yield alice.request("publish", channel="news", data=2)
    assert published["offset"] == 1  # the refused one took no offset
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_an_unsubscribe_never_overtakes_the_reply_of_the_subscribe_before_it(make_server, redis_server):
    server = yield make_server(broker=redis_server.url)
    alice = yield connect(server.url)
    os.kill(redis_server.process.pid, signal.SIGSTOP)  # the subscribe's history read waits
    try:
        subscribing = alice.request_frame("subscribe", channel="chat")
        unsubscribing = alice.request_frame("unsubscribe", channel="chat")
        yield deferLater(reactor, 0.3, lambda: None)  # the unsubscribe has been handled by now
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    subscribed, unsubscribed = yield defer.gatherResults([subscribing, unsubscribing])
    assert subscribed["result"]["subscribed"] is True and unsubscribed["result"]["subscribed"] is False
    assert alice.frames.index(subscribed) < alice.frames.index(unsubscribed)  # the client ends unsubscribed
    yield alice.close()
