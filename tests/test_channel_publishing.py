"""Backend publishing, over real sockets: `ctx.publish` from plugins (pool thread and reactor)
and `POST /api/publish` with a bearer token of a role in `api_roles` (docs/protocol.md section 6)."""

import json
import re
import tempfile

import pytest_twisted
from twisted.internet import defer
from twisted.logger import LogLevel, formatEvent

from zbifrost.channels import INVALID_CHANNEL
from zbifrost.testing import connect

from .helpers import ENGINE, FORGED_CHANNELS, http_request, in_thread, write_tokens

TOKENS = (("t-alice", "alice", "user"), ("t-root", "root", "admin"))


def _tokens(tmp_path):
    return write_tokens(tmp_path / "tokens.yaml", *TOKENS)


def _post(server, body, token=None, headers=None):
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return in_thread(http_request, server.port, "POST", "/api/publish", body, headers)


@pytest_twisted.inlineCallbacks
def test_the_api_publishes_as_the_server_to_every_subscriber(make_server, tmp_path, backend_settings):
    # auth off for WebSockets, on for the API
    server = yield make_server(tokens_file=_tokens(tmp_path), **backend_settings)
    listener = yield connect(server.url)
    subscribed = yield listener.request("subscribe", channel="orders")
    status, headers, body = yield _post(server, {"channel": "orders", "data": {"id": 7}}, token="t-root")
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body) == {"channel": "orders", "epoch": subscribed["epoch"], "offset": 1}
    message = yield listener.next_event("message")
    assert message == {"event": "message", "channel": "orders", "data": {"id": 7}, "from": "server", "offset": 1}
    yield listener.close()


@pytest_twisted.inlineCallbacks
def test_the_api_refuses_a_missing_or_unknown_token_and_roles_outside_api_roles(make_server, tmp_path):
    server = yield make_server(tokens_file=_tokens(tmp_path))
    body = {"channel": "orders", "data": 1}
    for token in (None, "t-nobody"):
        status, headers, reply = yield _post(server, body, token=token)
        assert (status, headers["www-authenticate"], "error" in json.loads(reply)) == (401, "Bearer", True)
    status, _, reply = yield _post(server, body, token="t-alice")
    assert (status, json.loads(reply)) == (403, {"error": "Role 'user' may not use the server API",
                                                 "code": "forbidden"})
    opened = yield make_server(tokens_file=_tokens(tmp_path), api_roles="user")
    assert (yield _post(opened, body, token="t-alice"))[0] == 200
    assert (yield _post(opened, body, token="t-root"))[0] == 403
    without_tokens = yield make_server()
    assert (yield _post(without_tokens, body, token="t-root"))[0] == 401


@pytest_twisted.inlineCallbacks
def test_the_api_answers_400_for_a_bad_body_or_channel(make_server, tmp_path):
    server = yield make_server(tokens_file=_tokens(tmp_path))
    too_deep = b'{"channel": "orders", "data": ' + b"[" * 70 + b"]" * 70 + b"}"
    for body in (b"not json", b"[1]", {"channel": "orders"}, {"channel": "bad name", "data": 1}, {"data": 1},
                 too_deep):
        status, _, reply = yield _post(server, body, token="t-root")
        assert status == 400 and json.loads(reply)["error"], body


@pytest_twisted.inlineCallbacks
def test_a_failed_api_publish_answers_500_with_the_error_id_logged_at_error_with_its_traceback(
        make_server, tmp_path, log_events, monkeypatch):
    server = yield make_server(tokens_file=_tokens(tmp_path))
    monkeypatch.setattr(server.hub.channels, "publish", lambda *args: defer.fail(RuntimeError("backend broke")))
    status, _, reply = yield _post(server, {"channel": "orders", "data": 1}, token="t-root")
    error_id = re.fullmatch(r"The publish failed \(error id ([0-9a-f]{12})\)", json.loads(reply)["error"]).group(1)
    assert status == 500
    (logged,) = [event for event in log_events if event.get("error_id") == error_id]
    assert logged["log_level"] == LogLevel.error and logged["log_failure"].check(RuntimeError)
    assert error_id in formatEvent(logged)


@pytest_twisted.inlineCallbacks
def test_the_api_matches_channel_names_in_full(make_server, tmp_path):
    server = yield make_server(tokens_file=_tokens(tmp_path))
    for channel in FORGED_CHANNELS:
        status, _, reply = yield _post(server, {"channel": channel, "data": 1}, token="t-root")
        assert (status, json.loads(reply)["error"]) == (400, INVALID_CHANNEL), channel
    status, _, reply = yield _post(server, {"channel": "a" * 128, "data": 1}, token="t-root")
    assert (status, json.loads(reply)["offset"]) == (200, 1)


@pytest_twisted.inlineCallbacks
def test_a_body_of_exactly_max_message_size_is_read_from_memory_and_one_byte_more_is_413(make_server, tmp_path,
                                                                                       monkeypatch):
    size = 150_000  # past the 100 kB at which twisted.web spools a body to a temporary file
    server = yield make_server(tokens_file=_tokens(tmp_path), max_message_size=size)

    def no_disk(*args, **kwargs):
        raise AssertionError("a request body was spooled to disk")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_disk)
    prefix = b'{"channel": "big", "data": "'
    body = prefix + b"x" * (size - len(prefix) - 2) + b'"}'
    assert len(body) == size
    status, _, reply = yield _post(server, body, token="t-root")
    assert (status, json.loads(reply)["offset"]) == (200, 1)
    assert (yield _post(server, body + b" ", token="t-root"))[0] == 413


@pytest_twisted.inlineCallbacks
def test_backend_publishes_pass_the_channel_rules_and_reach_private_channels(make_server, tmp_path):
    config = tmp_path / "zbifrost.yaml"
    config.write_text("channels:\n  - pattern: 'locked'\n    publish: [nobody]\n")
    server = yield make_server(config_file=str(config), require_auth=True, tokens_file=_tokens(tmp_path))
    alice = yield connect(server.url, token="t-alice")
    yield alice.request("subscribe", channel="user:alice")
    assert (yield _post(server, {"channel": "user:alice", "data": "yours"}, token="t-root"))[0] == 200
    assert (yield alice.next_event("message"))["data"] == "yours"
    assert (yield _post(server, {"channel": "locked", "data": 1}, token="t-root"))[0] == 200
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_ctx_publish_from_a_pool_thread_reaches_the_asking_client_too(make_server, tmp_path, backend_settings):
    server = yield make_server(workspace=ENGINE, zvafile="@.zUI.main", require_auth=True,
                               tokens_file=_tokens(tmp_path), **backend_settings)
    alice = yield connect(server.url, token="t-alice")
    yield alice.request("subscribe", channel="user:alice")
    assert (yield alice.dispatch("Announce")) == {"announced": "user:alice"}
    message = yield alice.next_event("message")
    assert message == {"event": "message", "channel": "user:alice", "from": "server", "offset": 1,
                       "data": {"text": "your order shipped", "by": "alice"}}
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_ctx_publish_on_the_reactor_and_a_bad_channel_name_is_the_commands_failure(make_server):
    server = yield make_server(workspace=ENGINE, zvafile="@.zUI.main")
    alice = yield connect(server.url)
    yield alice.request("subscribe", channel="news")
    yield alice.dispatch("Announce On Reactor")
    assert (yield alice.next_event("message"))["data"] == "from the reactor"
    for zkey in ("Announce Badly", "Announce On A Newline"):  # "news\n": names are matched in full
        failed = yield alice.request_frame("dispatch", zKey=zkey)
        assert failed["code"] == "command_failed", zkey
    yield alice.close()
