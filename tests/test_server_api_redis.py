"""The server API across processes (docs/protocol.md section 12): two zbifrost servers on one real
redis-server, the API called on one acting on the connections and channels of both."""

import pytest_twisted
from twisted.internet import defer

from zbifrost.testing import connect

from .helpers import in_thread, write_tokens
from .test_server_api import KEY, TOKENS, _soon, api


@defer.inlineCallbacks
def _two_servers(make_server, redis_server, tmp_path):
    tokens = write_tokens(tmp_path / "tokens.yaml", *TOKENS)
    servers = []
    for _ in range(2):
        servers.append((yield make_server(broker=redis_server.url, api_key=KEY, require_auth=True,
                                          tokens_file=tokens)))
    return servers


@pytest_twisted.inlineCallbacks
def test_disconnect_on_one_server_closes_the_users_connections_on_the_other(make_server, redis_server, tmp_path):
    one, two = yield _two_servers(make_server, redis_server, tmp_path)
    here = yield connect(one.url, token="t-alice")
    there = yield connect(two.url, token="t-alice")
    bob = yield connect(two.url, token="t-bob")
    assert (yield api(one, "disconnect", {"user": "alice", "reason": "Logged out"})) == (200, {})
    assert (yield _soon(there.closed)) == (1008, "Logged out")
    assert (yield _soon(here.closed)) == (1008, "Logged out")
    assert (yield api(one, "disconnect", {"client": bob.info["client_id"]})) == (200, {})
    assert (yield _soon(bob.closed)) == (1008, "Disconnected")


@pytest_twisted.inlineCallbacks
def test_unsubscribe_on_one_server_reaches_subscribers_on_the_other(make_server, redis_server, tmp_path):
    one, two = yield _two_servers(make_server, redis_server, tmp_path)
    alice = yield connect(two.url, token="t-alice")
    yield alice.request("subscribe", channel="news")
    assert (yield api(one, "unsubscribe", {"user": "alice", "channel": "news"})) == (200, {})
    unsubscribed = yield _soon(alice.next_event("unsubscribed"))
    assert unsubscribed == {"event": "unsubscribed", "channel": "news", "reason": "server"}
    assert two.hub.channels.subscriber_counts() == {}
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_channels_and_info_count_every_process(make_server, redis_server, tmp_path):
    one, two = yield _two_servers(make_server, redis_server, tmp_path)
    alice = yield connect(one.url, token="t-alice")
    bob = yield connect(two.url, token="t-bob")
    for client in (alice, bob):
        yield client.request("subscribe", channel="chat")
    yield bob.request("subscribe", channel="news")
    assert (yield api(two, "channels", {"pattern": "chat"})) == (
        200, {"channels": {"chat": {"subscribers": 2}}, "nodes": 2})
    status, answer = yield api(one, "info")
    assert status == 200
    assert sorted((node["node"], node["clients"], node["channels"]) for node in answer["nodes"]) == sorted(
        [(one.hub.control.node, 1, 1), (two.hub.control.node, 1, 2)])
    yield two.stop()
    status, answer = yield api(one, "info")
    assert [node["node"] for node in answer["nodes"]] == [one.hub.control.node]
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_without_the_broker_the_methods_that_cross_processes_answer_503(make_server, redis_server, tmp_path):
    one, _two = yield _two_servers(make_server, redis_server, tmp_path)
    yield in_thread(redis_server.stop)
    for method, body in (("info", {}), ("channels", {}), ("disconnect", {"user": "alice"}),
                         ("unsubscribe", {"user": "alice", "channel": "news"})):
        status, answer = yield api(one, method, body)
        assert (status, answer["code"]) == (503, "broker_unavailable"), method
