"""The server API (docs/protocol.md section 12) over real HTTP on loopback, against a real server
with real WebSocket clients: who may call it (X-API-Key, bearer tokens), each method, batch,
and the errors with their statuses. The same methods across two processes: test_server_api_redis.py."""

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import LogLevel, formatEvent

from zbifrost.api_client import ApiClient, ApiError
from zbifrost.config import ConfigError, load_config
from zbifrost.testing import connect

from .helpers import http_request, in_thread, write_tokens

KEY = "k" * 40
TOKENS = (("t-alice", "alice", "user"), ("t-bob", "bob", "user"), ("t-root", "root", "admin"))
PRESENCE_RULES = "channels:\n  - pattern: 'room.*'\n    presence: true\n  - pattern: '*'\n"


def api(server, method, body=None, key=KEY, token=None, raw=None):
    """(status, parsed JSON answer) of POST /api/<method>."""
    headers = {}
    if key is not None:
        headers["X-API-Key"] = key
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    payload = raw if raw is not None else json.dumps({} if body is None else body).encode()

    def post():
        status, _, answer = http_request(server.port, "POST", f"/api/{method}", payload, headers)
        return status, json.loads(answer) if answer else None

    return in_thread(post)


def _soon(deferred):
    """`deferred`, failing after 10 s instead of hanging the test when what it waits for never comes."""
    return deferred.addTimeout(10, reactor)


def start(make_server, tmp_path, auth=True, **settings):
    """A server with the API key, and with auth on: alice, bob (users) and root (admin)."""
    if auth:
        settings.update(require_auth=True, tokens_file=write_tokens(tmp_path / "tokens.yaml", *TOKENS))
    return make_server(api_key=KEY, **settings)


@pytest_twisted.inlineCallbacks
def test_the_api_key_or_an_api_roles_token_opens_the_api_and_refusals_are_logged_without_them(
        make_server, tmp_path, log_events):
    server = yield start(make_server, tmp_path)
    assert (yield api(server, "info"))[0] == 200
    assert (yield api(server, "info", key=None, token="t-root"))[0] == 200
    for key, token, status, code in ((None, None, 401, "invalid_token"), ("x" * 40, None, 401, "invalid_token"),
                                     (KEY[:-1], None, 401, "invalid_token"), (None, "t-alice", 403, "forbidden")):
        answer = yield api(server, "info", key=key, token=token)
        assert (answer[0], answer[1]["code"]) == (status, code), (key, token)
    refused = [event for event in log_events if "Refused POST /api/" in (event.get("log_format") or "")]
    assert [event["log_level"] for event in refused] == [LogLevel.warn] * 4
    assert "/api/info from 127.0.0.1" in formatEvent(refused[0])
    logged = " ".join(formatEvent(event) for event in log_events)
    assert "x" * 40 not in logged and "t-alice" not in logged


@pytest_twisted.inlineCallbacks
def test_without_api_key_the_header_is_ignored(make_server, tmp_path):
    server = yield make_server(tokens_file=write_tokens(tmp_path / "tokens.yaml", *TOKENS))
    assert (yield api(server, "info"))[0] == 401
    assert (yield api(server, "info", key="", token="t-root"))[0] == 200


def test_a_short_api_key_stops_the_start_with_one_line_that_does_not_show_it():
    with pytest.raises(ConfigError) as refused:
        load_config(environ={"WEBSOCKET_API_KEY": "short-secret"})
    assert str(refused.value) == "environment WEBSOCKET_API_KEY: must be at least 32 characters, got 12"
    assert load_config(environ={"WEBSOCKET_API_KEY": KEY}).api_key == KEY


@pytest_twisted.inlineCallbacks
def test_unknown_methods_bad_bodies_and_big_bodies_get_their_status_and_code(make_server, tmp_path):
    server = yield start(make_server, tmp_path, auth=False, max_message_size=1000)
    assert (yield api(server, "nope")) == (404, {"error": "Unknown API method: nope", "code": "unknown_event"})
    for raw in (b"not json", b"[1]", b"{" * 70 + b"}" * 70):
        status, answer = yield api(server, "info", raw=raw)
        assert (status, answer["code"]) == (400, "bad_message"), raw
    status, answer = yield api(server, "presence", {"channel": "bad name"})
    assert (status, answer["code"]) == (400, "missing_field")
    assert (yield api(server, "info", raw=b"{}" + b" " * 1000))[0] == 413


@pytest_twisted.inlineCallbacks
def test_broadcast_publishes_to_each_channel_in_order_as_the_server(make_server, tmp_path):
    server = yield start(make_server, tmp_path, auth=False)
    listener = yield connect(server.url)
    assert "server_api" in listener.info["features"]
    yield listener.request("subscribe", channel="b")
    status, answer = yield api(server, "broadcast", {"channels": ["a", "b", "a"], "data": {"n": 1}})
    assert status == 200
    assert [(result["channel"], result["offset"]) for result in answer["results"]] == [("a", 1), ("b", 1), ("a", 2)]
    message = yield listener.next_event("message")
    assert (message["channel"], message["data"], message["from"]) == ("b", {"n": 1}, "server")
    for body in ({"channels": [], "data": 1}, {"channels": ["a"] * 101, "data": 1},
                 {"channels": ["a", "b c"], "data": 1}, {"channels": ["a"]}):
        status, answer = yield api(server, "broadcast", body)
        assert (status, answer["code"]) == (400, "missing_field"), body
    yield listener.close()


@pytest_twisted.inlineCallbacks
def test_a_broadcast_sent_again_with_its_idempotency_key_publishes_nothing_new(make_server, tmp_path):
    server = yield start(make_server, tmp_path, auth=False)
    body = {"channels": ["a", "b"], "data": 1, "idempotency_key": "order-7"}
    first = yield api(server, "broadcast", body)
    again = yield api(server, "broadcast", body)
    epochs = [result["epoch"] for result in first[1]["results"]]
    assert first == again == (200, {"results": [{"channel": "a", "epoch": epochs[0], "offset": 1},
                                                {"channel": "b", "epoch": epochs[1], "offset": 1}]})
    other = yield api(server, "broadcast", {"channels": ["a"], "data": 1})  # positive control: no key publishes
    assert other[1]["results"][0]["offset"] == 2
    status, answer = yield api(server, "broadcast", {**body, "idempotency_key": "bad key"})
    assert (status, answer["code"]) == (400, "missing_field")


@pytest_twisted.inlineCallbacks
def test_disconnect_closes_every_connection_of_a_user_or_one_client_with_1008_and_the_reason(make_server, tmp_path):
    server = yield start(make_server, tmp_path)
    alice_tab = yield connect(server.url, token="t-alice")
    alice_phone = yield connect(server.url, token="t-alice")
    bob = yield connect(server.url, token="t-bob")
    assert (yield api(server, "disconnect", {"user": "alice"})) == (200, {})
    assert (yield _soon(alice_tab.closed)) == (1008, "Disconnected")
    assert (yield _soon(alice_phone.closed)) == (1008, "Disconnected")
    assert (yield bob.request("presence_stats", channel="x").addErrback(lambda f: f.value.code)) == "not_available"
    assert (yield api(server, "disconnect", {"client": bob.info["client_id"], "reason": "Banned"})) == (200, {})
    assert (yield _soon(bob.closed)) == (1008, "Banned")
    for body in ({}, {"user": "a", "client": "c"}, {"user": ""}, {"user": "a", "reason": "x" * 101},
                 {"user": "a", "reason": "é" * 62}, {"user": "a", "reason": "line\nbreak"}):
        status, answer = yield api(server, "disconnect", body)
        assert (status, answer["code"]) == (400, "missing_field"), body


@pytest_twisted.inlineCallbacks
def test_with_auth_off_nobody_is_a_user_so_disconnect_by_user_closes_nobody(make_server, tmp_path):
    server = yield start(make_server, tmp_path, auth=False)
    guest = yield connect(server.url)
    assert (yield api(server, "disconnect", {"user": "anonymous"})) == (200, {})
    assert (yield guest.request("connection_info"))["client_id"] == guest.info["client_id"]
    yield guest.close()


@pytest_twisted.inlineCallbacks
def test_unsubscribe_removes_the_subscription_and_tells_the_client(make_server, tmp_path):
    server = yield start(make_server, tmp_path)
    alice = yield connect(server.url, token="t-alice")
    bob = yield connect(server.url, token="t-bob")
    for client in (alice, bob):
        yield client.request("subscribe", channel="news")
    assert (yield api(server, "unsubscribe", {"user": "alice", "channel": "news"})) == (200, {})
    unsubscribed = yield _soon(alice.next_event("unsubscribed"))
    assert unsubscribed == {"event": "unsubscribed", "channel": "news", "reason": "server"}
    yield api(server, "publish", {"channel": "news", "data": "after"})
    assert (yield bob.next_event("message"))["data"] == "after"
    assert (yield alice.request("unsubscribe", channel="news")) == {"channel": "news", "subscribed": False}
    assert not [frame for frame in alice.frames if frame.get("event") == "message"]
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_presence_and_presence_stats_answer_as_the_client_events_do(make_server, tmp_path):
    config = tmp_path / "zbifrost.yaml"
    config.write_text(PRESENCE_RULES)
    server = yield start(make_server, tmp_path, config_file=str(config))
    alice = yield connect(server.url, token="t-alice")
    yield alice.request("subscribe", channel="room.1")
    status, answer = yield api(server, "presence", {"channel": "room.1"})
    assert (status, answer) == (200, {"channel": "room.1",
                                      "clients": {alice.info["client_id"]: {"user": "alice", "role": "user"}}})
    assert (yield api(server, "presence_stats", {"channel": "room.1"})) == (
        200, {"channel": "room.1", "clients": 1, "users": 1})
    status, answer = yield api(server, "presence", {"channel": "lobby"})
    assert (status, answer["code"]) == (400, "not_available")
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_history_answers_the_latest_publications_or_those_after_since(make_server, tmp_path):
    server = yield start(make_server, tmp_path, auth=False)
    for n in range(1, 5):
        status, published = yield api(server, "publish", {"channel": "log", "data": n})
    epoch = published["epoch"]
    status, answer = yield api(server, "history", {"channel": "log", "limit": 2})
    assert (status, answer) == (200, {"channel": "log", "epoch": epoch, "offset": 4, "publications": [
        {"offset": 3, "data": 3, "from": "server"}, {"offset": 4, "data": 4, "from": "server"}]})
    status, answer = yield api(server, "history", {"channel": "log", "since": {"epoch": epoch, "offset": 1}})
    assert ([p["offset"] for p in answer["publications"]], answer["recovered"]) == ([2, 3, 4], True)
    status, answer = yield api(server, "history", {"channel": "log", "since": {"epoch": "other", "offset": 1}})
    assert (answer["publications"], answer["recovered"]) == ([], False)
    for body in ({"channel": "log", "limit": 0}, {"channel": "log", "limit": 1001}, {"channel": "log", "since": 3}):
        status, answer = yield api(server, "history", body)
        assert (status, answer["code"]) == (400, "missing_field"), body


@pytest_twisted.inlineCallbacks
def test_channels_and_info_describe_this_process(make_server, tmp_path):
    server = yield start(make_server, tmp_path)
    alice = yield connect(server.url, token="t-alice")
    bob = yield connect(server.url, token="t-bob")
    for client, channel in ((alice, "chat.1"), (bob, "chat.1"), (bob, "news")):
        yield client.request("subscribe", channel=channel)
    assert (yield api(server, "channels")) == (
        200, {"channels": {"chat.1": {"subscribers": 2}, "news": {"subscribers": 1}}, "nodes": 1})
    assert (yield api(server, "channels", {"pattern": "chat.*"}))[1]["channels"] == {"chat.1": {"subscribers": 2}}
    assert (yield api(server, "channels", {"pattern": "bad pattern"}))[0] == 400
    status, answer = yield api(server, "info")
    assert status == 200
    (node,) = answer["nodes"]
    assert node["node"] == server.hub.control.node
    assert {key: node[key] for key in ("clients", "users", "channels")} == {"clients": 2, "users": 2, "channels": 2}
    assert set(node) == {"node", "version", "uptime_s", "clients", "users", "channels"}
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_batch_runs_its_commands_in_order_and_a_failing_one_does_not_stop_the_others(make_server, tmp_path):
    server = yield start(make_server, tmp_path, auth=False)
    commands = [{"method": "publish", "params": {"channel": "c", "data": 1}},
                {"method": "nope", "params": {}},
                {"method": "publish", "params": {"channel": "bad name", "data": 2}},
                {"method": "batch", "params": {"commands": []}},
                {"method": "history", "params": {"channel": "c"}},
                "not a command"]
    status, answer = yield api(server, "batch", {"commands": commands})
    assert status == 200
    replies = answer["replies"]
    assert replies[0]["offset"] == 1
    assert [reply.get("code") for reply in replies[1:4]] == ["unknown_event", "missing_field", "bad_message"]
    assert [p["data"] for p in replies[4]["publications"]] == [1]
    assert replies[5]["code"] == "missing_field"
    for body in ({"commands": []}, {"commands": [{"method": "info"}] * 101}, {}):
        status, answer = yield api(server, "batch", body)
        assert (status, answer["code"]) == (400, "missing_field"), body


@pytest_twisted.inlineCallbacks
def test_the_python_client_calls_each_method_and_raises_api_error_with_code_and_status(make_server, tmp_path):
    server = yield start(make_server, tmp_path, max_message_size=4096)
    client = ApiClient(server.http_url, api_key=KEY)
    alice = yield connect(server.url, token="t-alice")
    yield alice.request("subscribe", channel="news")
    published = yield in_thread(client.publish, "news", {"n": 1})
    assert (published["channel"], published["offset"]) == ("news", 1)
    broadcast = yield in_thread(client.broadcast, ["news", "other"], 2)
    assert [result["offset"] for result in broadcast["results"]] == [2, 1]
    assert [p["data"] for p in (yield in_thread(client.history, "news", limit=1))["publications"]] == [2]
    assert (yield in_thread(client.channels, "n*")) == {"channels": {"news": {"subscribers": 1}}, "nodes": 1}
    assert [node["clients"] for node in (yield in_thread(client.info))["nodes"]] == [1]
    replies = yield in_thread(client.batch, [("presence", {"channel": "news"}), ("info", {})])
    assert replies[0]["code"] == "not_available" and "nodes" in replies[1]
    assert (yield in_thread(client.unsubscribe, "news", user="alice")) == {}
    assert (yield _soon(alice.next_event("unsubscribed")))["reason"] == "server"
    assert (yield in_thread(client.disconnect, user="alice", reason="Logged out")) == {}
    assert (yield _soon(alice.closed)) == (1008, "Logged out")
    for call, code, status in ((lambda: client.presence_stats("news"), "not_available", 400),
                               (lambda: client.call("nope"), "unknown_event", 404),
                               (lambda: ApiClient(server.http_url, api_key="wrong").info(), "invalid_token", 401),
                               (lambda: ApiClient(server.http_url, token="t-alice").info(), "forbidden", 403),
                               (lambda: client.publish("news", "x" * 5000), "http_413", 413)):
        failure = yield in_thread(call).addErrback(lambda failure: failure.trap(ApiError) and failure.value)
        assert (failure.code, failure.status) == (code, status)
    yield server.stop()
    unreachable = yield in_thread(client.info).addErrback(lambda failure: failure.trap(ApiError) and failure.value)
    assert (unreachable.code, unreachable.status) == ("unreachable", 0)
