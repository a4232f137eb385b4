"""Proxies to the application (docs/protocol.md section 13): the `proxy:` section, the connect
proxy, `zHTTP` commands and the subscribe proxy, against a stand-in application - a twisted.web
server on a loopback port inside the test that checks every request's signature - with a real
zbifrost and real WebSocket clients."""

import hashlib
import hmac
import json
import os
import re
import shutil
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import ClientCreator, Protocol
from twisted.web import resource, server

from zbifrost.config import ConfigError, load_config
from zbifrost.service import BifrostService
from zbifrost.testing import BifrostError, ConnectionClosed, connect

from .helpers import http_get, in_thread, refused_status, write_tokens

SECRET = b"0123456789abcdef0123456789abcdef-the-proxy-secret"


class StandIn(resource.Resource):
    """The application: checks the signature of every request, records it, and answers with
    what `answer(path, body, request)` returns: (status, body bytes), or a Deferred of it."""

    isLeaf = True

    def __init__(self, answer):
        super().__init__()
        self.answer = answer
        self.requests = []  # (path, parsed body, headers as {lower-case name: value})

    def render_POST(self, request):
        body = request.content.read()
        timestamp = request.getHeader("x-zbifrost-timestamp")
        expected = "sha256=" + hmac.new(SECRET, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(request.getHeader("x-zbifrost-signature") or "", expected)
        assert abs(int(timestamp) - time.time()) < 60
        assert request.getHeader("content-type") == "application/json"
        headers = {name.decode().lower(): values[0].decode()
                   for name, values in request.requestHeaders.getAllRawHeaders()}
        self.requests.append((request.path.decode(), json.loads(body), headers))
        answered = defer.maybeDeferred(self.answer, request.path.decode(), json.loads(body), request)
        gone = []  # zbifrost stopped waiting (a timeout) and dropped the connection
        request.notifyFinish().addErrback(gone.append)

        def reply(outcome):
            if gone:
                return
            status, payload = outcome
            request.setResponseCode(status)
            request.write(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
            request.finish()

        answered.addCallback(reply)
        return server.NOT_DONE_YET


@pytest.fixture
def application():
    """Start a stand-in application: `start(answer)` returns (StandIn, base URL)."""
    ports = []

    def start(answer):
        stand_in = StandIn(answer)
        port = reactor.listenTCP(0, server.Site(stand_in), interface="127.0.0.1")
        ports.append(port)
        return stand_in, f"http://127.0.0.1:{port.getHost().port}"

    yield start
    for port in ports:
        pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def _secret_file(tmp_path, secret=SECRET):
    path = tmp_path / "proxy.secret"
    path.write_bytes(secret + b"\n")
    return path


def _config_file(tmp_path, section, extra=""):
    path = tmp_path / "zbifrost.yaml"
    path.write_text(f"proxy:\n  secret_file: {_secret_file(tmp_path)}\n" + "".join(f"  {line}\n" for line in section)
                    + extra)
    return str(path)


# -- the proxy: section -------------------------------------------------------------------------

@pytest.mark.parametrize(("section", "message"), [
    (["timeout: 0"], "proxy.timeout: expected a number of seconds greater than zero"),
    (["connect: {url: 'ftp://127.0.0.1/x'}"], "proxy.connect.url: 'ftp://127.0.0.1/x' must be an http:// or https://"),
    (["subscribe: {url: 'javascript:alert(1)'}"], "proxy.subscribe.url: 'javascript:alert(1)' must be an http://"),
    (["connect: {url: 'http://127.0.0.1/c', headers: Cookie}"], "proxy.connect.headers: expected a list"),
    (["connnect: {url: 'http://127.0.0.1/c'}"], "unknown key 'connnect' (did you mean 'connect'?)"),
])
def test_a_wrong_proxy_section_stops_the_start_with_one_line_naming_the_key(tmp_path, section, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(_config_file(tmp_path, section), environ={})


def test_a_secret_under_32_bytes_stops_the_start_and_is_never_repeated(tmp_path):
    path = tmp_path / "zbifrost.yaml"
    path.write_text(f"proxy:\n  secret_file: {_secret_file(tmp_path, b'short-secret-31-bytes-long-abcd')}\n")
    with pytest.raises(ConfigError, match="holds 31 bytes; the secret must be at least 32") as caught:
        load_config(str(path), environ={})
    assert "short-secret" not in str(caught.value) and "\n" not in str(caught.value)


def test_a_proxy_section_is_read_with_its_defaults(tmp_path):
    config = load_config(_config_file(tmp_path, ["connect: {url: 'http://127.0.0.1:8000/c', headers: [Cookie]}"]),
                         environ={})
    assert config.proxy.secret == SECRET and config.proxy.timeout == 5
    assert config.proxy.connect.headers == ("cookie",) and config.proxy.subscribe_url is None
    assert "secret" not in repr(config.proxy).replace("secret=", "")  # the secret itself is never in a repr


@pytest_twisted.inlineCallbacks
def test_features_name_proxy_only_when_the_section_is_set(make_server, tmp_path):
    plain = yield make_server()
    client = yield connect(plain.url)
    assert "proxy" not in client.info["features"]
    yield client.close()
    proxied = yield make_server(config_file=_config_file(tmp_path, ["timeout: 2"]))
    client = yield connect(proxied.url)
    assert "proxy" in client.info["features"]
    yield client.close()


# -- the connect proxy ----------------------------------------------------------------------------

def _connect_server(make_server, tmp_path, url, **settings):
    section = [f"connect: {{url: '{url}/connect', headers: [Cookie, X-Forwarded-User]}}", "timeout: 1"]
    return make_server(config_file=_config_file(tmp_path, section), **settings)


@pytest_twisted.inlineCallbacks
def test_the_connect_proxy_authenticates_with_the_listed_headers_only(make_server, tmp_path, application):
    stand_in, url = application(lambda path, body, request: (200, {"result": {"user": "alice", "role": "editor"}}))
    running = yield _connect_server(make_server, tmp_path, url, require_auth=True)
    client = yield connect(running.url, origin=f"http://127.0.0.1:{running.port}",
                           headers={"Cookie": "session=abc123", "X-Secret-Header": "not for the application"})
    assert client.info["auth"] == {"authenticated": True, "user": "alice", "role": "editor", "expires": None}
    path, body, headers = stand_in.requests[0]
    assert path == "/connect"
    assert body == {"client_id": client.info["client_id"], "remote_addr": "127.0.0.1",
                    "origin": f"http://127.0.0.1:{running.port}", "path": "/ws"}
    assert headers["cookie"] == "session=abc123"
    assert "x-secret-header" not in headers and "x-forwarded-user" not in headers
    reply = yield client.request("ping")
    assert "pong" in reply
    yield client.close()


@pytest.mark.parametrize(("status", "answer", "reason"), [
    (401, {}, "Unauthorized"),
    (403, b"not even JSON", "Unauthorized"),
    (200, {"disconnect": {"reason": "Log in first\nplease"}}, "Log in first\\x0aplease"),
    (200, {"disconnect": {"reason": "x" * 300}}, "x" * 100),
    (200, {"disconnect": {}}, "Unauthorized"),
    (200, {"result": {"user": "", "role": "user"}}, "Unauthorized"),  # the identity rules of a JWT's sub
    (200, {"result": {"user": "bob", "role": "admin role"}}, "Unauthorized"),
])
@pytest_twisted.inlineCallbacks
def test_a_connect_proxy_refusal_closes_1008_even_with_auth_off(make_server, tmp_path, application, status, answer,
                                                                 reason):
    _, url = application(lambda path, body, request: (status, answer))
    running = yield _connect_server(make_server, tmp_path, url)
    with pytest.raises(ConnectionClosed) as caught:
        yield connect(running.url)
    assert (caught.value.code, caught.value.reason) == (1008, reason)
    assert not running.hub.clients


@pytest.mark.parametrize("answer", [
    lambda path, body, request: (502, {"result": {"user": "alice"}}),
    lambda path, body, request: (200, b"<html>not JSON</html>"),
    lambda path, body, request: (200, {"neither": "result nor disconnect"}),
    lambda path, body, request: (404, {}),
    lambda path, body, request: (200, {"result": {"user": "alice", "pad": "x" * 70000}}),  # past max_message_size
    lambda path, body, request: _late((200, {"result": {"user": "alice"}}), 3),  # past the timeout (1 s)
])
@pytest_twisted.inlineCallbacks
def test_an_unavailable_connect_proxy_closes_1011_internal_error(make_server, tmp_path, application, log_events,
                                                                 answer):
    _, url = application(answer)
    running = yield _connect_server(make_server, tmp_path, url, require_auth=True)
    with pytest.raises(ConnectionClosed) as caught:
        yield connect(running.url, headers={"Cookie": "session=do-not-log-me"})
    assert (caught.value.code, caught.value.reason) == (1011, "Internal error")
    warnings = [event for event in log_events if "application at" in event.get("log_format", "")]
    assert warnings and f"{url}/connect" in str(warnings[0])
    assert not any("do-not-log-me" in str(event) or SECRET.decode() in str(event) for event in log_events)


@pytest_twisted.inlineCallbacks
def test_a_connect_proxy_that_refuses_connections_closes_1011(make_server, tmp_path):
    closed_port = reactor.listenTCP(0, server.Site(resource.Resource()), interface="127.0.0.1")
    dead = f"http://127.0.0.1:{closed_port.getHost().port}"
    yield closed_port.stopListening()
    running = yield _connect_server(make_server, tmp_path, dead)
    with pytest.raises(ConnectionClosed) as caught:
        yield connect(running.url)
    assert (caught.value.code, caught.value.reason) == (1011, "Internal error")


@pytest_twisted.inlineCallbacks
def test_a_token_still_authenticates_without_asking_the_connect_proxy(make_server, tmp_path, application):
    stand_in, url = application(lambda path, body, request: (401, {}))
    tokens = write_tokens(tmp_path / "tokens.yaml", ("secret-token", "carol", "admin"))
    running = yield _connect_server(make_server, tmp_path, url, require_auth=True, tokens_file=tokens)
    client = yield connect(running.url, token="secret-token")
    assert client.info["auth"]["user"] == "carol" and not stand_in.requests
    yield client.close()


def _late(outcome, seconds):
    return task.deferLater(reactor, seconds, lambda: outcome)


# -- zHTTP commands -------------------------------------------------------------------------------

def _zhttp_server(make_server, tmp_path, url, **settings):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "zUI.app.yaml").write_text(
        "Main:\n"
        f'  "Place Order": {{zHTTP: "{url}/orders"}}\n'
        f'  "Slow": {{zHTTP: {{url: "{url}/slow", timeout: 0.5}}}}\n'
        f'  "Admin Only": {{zHTTP: "{url}/orders", roles: [admin], description: Admins only}}\n'
        f'  "Cached": {{zHTTP: "{url}/orders", cache_ttl: 60}}\n'
        "Other:\n"
        f'  "Order": {{zDialog: {{fields: [{{name: qty, type: int}}], onSubmit: {{zHTTP: "{url}/orders"}}}}}}\n')
    return make_server(workspace=str(workspace), config_file=_config_file(tmp_path, ["timeout: 2"]), **settings)


def _orders(path, body, request):
    if path == "/slow":
        return _late((200, {"late": True}), 3)
    verdict = body["args"][0] if body["args"] else "ok"
    return {
        "ok": (200, {"order": 17, "seen": body}),
        "refuse": (403, {"error": "You may not order this", "code": "forbidden"}),
        "invalid": (422, {"error": "Check the form", "code": "invalid_input", "details": {"qty": "too many"}}),
        "odd 4xx": (400, {"error": "Bad", "code": "something_else"}),
        "boom": (500, {"error": "Traceback (most recent call last): ..."}),
        "html": (200, b"<html>oops</html>"),
    }[verdict]


@pytest_twisted.inlineCallbacks
def test_a_zhttp_command_is_answered_by_the_application(make_server, tmp_path, application):
    stand_in, url = application(_orders)
    running = yield _zhttp_server(make_server, tmp_path, url)
    client = yield connect(running.url)
    result = yield client.dispatch("^Place Order", args=["ok"], data={"note": "rush"})
    assert result["order"] == 17
    assert result["seen"] == {"zKey": "Place Order", "zBlock": "Main", "args": ["ok"], "data": {"note": "rush"},
                              "user": "anonymous", "role": "guest", "client_id": client.info["client_id"]}
    result = yield client.dispatch("Order", zBlock="Other", data={"qty": "3"})  # onSubmit gets the checked form
    assert (result["seen"]["zBlock"], result["seen"]["data"]) == ("Other", {"qty": 3})
    for _ in range(2):
        yield client.dispatch("Cached")
    assert len(stand_in.requests) == 3  # the second "Cached" came from the query cache
    with pytest.raises(BifrostError) as caught:
        yield client.dispatch("Admin Only")
    assert caught.value.code == "forbidden" and len(stand_in.requests) == 3  # the role check comes first
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_zhttp_4xx_error_passes_through_and_anything_else_is_command_failed(make_server, tmp_path, application,
                                                                               log_events):
    _, url = application(_orders)
    running = yield _zhttp_server(make_server, tmp_path, url)
    client = yield connect(running.url)
    reply = yield client.request_frame("dispatch", zKey="Place Order", args=["refuse"])
    assert (reply["error"], reply["code"]) == ("You may not order this", "forbidden")
    reply = yield client.request_frame("dispatch", zKey="Place Order", args=["invalid"])
    assert (reply["code"], reply["details"]) == ("invalid_input", {"qty": "too many"})
    for verdict, status in (("odd 4xx", "400"), ("boom", "500"), ("html", "200")):
        reply = yield client.request_frame("dispatch", zKey="Place Order", args=[verdict])
        assert reply["code"] == "command_failed" and "Traceback" not in reply["error"], verdict
        error_id = reply["error"].split("error id ")[1].rstrip(")")
        logged = [event for event in log_events if event.get("error_id") == error_id]
        assert logged and f"answered {status}" in str(logged[0]["log_failure"].value), verdict
    assert (yield client.request("ping"))  # the connection stays open
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_zhttp_command_without_an_answer_in_time_is_timeout(make_server, tmp_path, application):
    _, url = application(_orders)
    running = yield _zhttp_server(make_server, tmp_path, url)
    client = yield connect(running.url)
    with pytest.raises(BifrostError) as caught:
        yield client.dispatch("Slow")
    assert caught.value.code == "timeout"
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_zhttp_command_whose_application_is_down_is_proxy_unavailable(make_server, tmp_path):
    closed_port = reactor.listenTCP(0, server.Site(resource.Resource()), interface="127.0.0.1")
    dead = f"http://127.0.0.1:{closed_port.getHost().port}"
    yield closed_port.stopListening()
    running = yield _zhttp_server(make_server, tmp_path, dead)
    client = yield connect(running.url)
    with pytest.raises(BifrostError) as caught:
        yield client.dispatch("Place Order")
    assert caught.value.code == "proxy_unavailable"
    yield client.close()


@pytest.mark.parametrize(("action", "with_proxy", "message"), [
    ('{zHTTP: "http://127.0.0.1:8000/x"}', False, "line 3: zHTTP needs a proxy: section with a secret_file"),
    ('{zHTTP: "file:///etc/passwd"}', True, "line 3: zHTTP url: 'file:///etc/passwd' must be an http:// or https://"),
    ('{zHTTP: {url: "http://127.0.0.1/x", timeout: -1}}', True, "line 3: zHTTP timeout must be a number"),
    ('{zHTTP: {url: "http://127.0.0.1/x", method: GET}}', True, "line 3: unknown key"),
])
def test_a_zui_file_with_a_wrong_zhttp_is_refused_at_load_with_file_and_line(tmp_path, action, with_proxy, message):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "zUI.app.yaml").write_text(f"Main:\n  Ping: Pong\n  Order: {action}\n")
    config_file = _config_file(tmp_path, ["timeout: 2"]) if with_proxy else None
    config = load_config(config_file, environ={}, overrides={"workspace": str(workspace)})
    with pytest.raises(ConfigError) as caught:
        BifrostService(config, reactor=reactor)
    assert str(caught.value).startswith("zUI file zUI.app.yaml, ") and message in str(caught.value)


# -- the subscribe proxy --------------------------------------------------------------------------

def _subscribe_server(make_server, tmp_path, url):
    channels = ('channels:\n  - {pattern: "room.*", subscribe: [guest], proxy: true}\n'
                '  - {pattern: "staff.*", subscribe: [admin], proxy: true}\n  - {pattern: "*"}\n')
    section = [f"subscribe: {{url: '{url}/subscribe'}}", "timeout: 1"]
    return make_server(config_file=_config_file(tmp_path, section, extra=channels))


def _rooms(path, body, request):
    return {
        "room.open": (200, {"result": {}}),
        "room.closed": (403, {}),
        "room.error": (200, {"error": "not a member"}),
        "room.broken": (503, {}),
        "room.odd": (200, {"result": "yes"}),
        "room.slow": _late((200, {"result": {}}), 3),
    }[body["channel"]]


@pytest_twisted.inlineCallbacks
def test_the_subscribe_proxy_decides_after_the_rules_own_role_check(make_server, tmp_path, application):
    stand_in, url = application(_rooms)
    running = yield _subscribe_server(make_server, tmp_path, url)
    client = yield connect(running.url)
    reply = yield client.request("subscribe", channel="room.open")
    assert reply["subscribed"] is True
    assert stand_in.requests[0][:2] == ("/subscribe", {"channel": "room.open", "user": "anonymous", "role": "guest",
                                                       "client_id": client.info["client_id"]})
    for channel, code in (("room.closed", "forbidden"), ("room.error", "forbidden"), ("staff.1", "forbidden"),
                          ("room.broken", "proxy_unavailable"), ("room.odd", "proxy_unavailable"),
                          ("room.slow", "proxy_unavailable")):
        with pytest.raises(BifrostError) as caught:
            yield client.request("subscribe", channel=channel)
        assert caught.value.code == code, channel
    assert [body["channel"] for _, body, _ in stand_in.requests] == [
        "room.open", "room.closed", "room.error", "room.broken", "room.odd", "room.slow"]  # never staff.1
    yield client.request("subscribe", channel="lobby")  # a channel whose rule does not proxy
    running.hub.publish_from_backend("room.closed", {"from": "the backend"})  # never proxied
    assert len(stand_in.requests) == 6
    published = yield client.request("publish", channel="room.open", data=1)
    assert published["channel"] == "room.open"
    assert {entry for entry in running.hub.clients[client.info["client_id"]].subscriptions} == {"room.open", "lobby"}
    yield client.close()


def test_a_proxied_channel_rule_needs_a_subscribe_url(tmp_path):
    path = tmp_path / "zbifrost.yaml"
    path.write_text('channels:\n  - {pattern: "room.*", proxy: true}\n')
    with pytest.raises(ConfigError, match=re.escape("'room.*' has proxy: true, which needs proxy.subscribe.url")):
        load_config(str(path), environ={})


@pytest_twisted.inlineCallbacks
def test_an_upgrade_waits_for_the_connect_proxy_past_handshake_timeout(make_server, tmp_path, application):
    _, url = application(lambda path, body, request: _late((200, {"result": {"user": "al"}}), 0.6))
    running = yield _connect_server(make_server, tmp_path, url, handshake_timeout=0.3)  # proxy timeout: 1 s
    client = yield connect(running.url)
    assert client.info["auth"]["user"] == "al"
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_an_application_slower_than_its_timeout_closes_1011_even_past_handshake_timeout(
        make_server, tmp_path, application):
    _, url = application(lambda path, body, request: _late((200, {"result": {"user": "al"}}), 3))
    running = yield _connect_server(make_server, tmp_path, url, handshake_timeout=0.3)  # proxy timeout: 1 s
    with pytest.raises(ConnectionClosed) as caught:
        yield connect(running.url)
    assert (caught.value.code, caught.value.reason) == (1011, "Internal error")


@pytest_twisted.inlineCallbacks
def test_an_upgrade_gone_while_the_connect_proxy_thinks_leaves_nothing_behind(
        make_server, tmp_path, application, log_events):
    answered = defer.Deferred()

    def slow_yes(path, body, request):
        def yes():
            if not answered.called:
                answered.callback(None)
            return 200, {"result": {"user": "al"}}

        return task.deferLater(reactor, 0.6, yes)

    _, url = application(slow_yes)
    running = yield _connect_server(make_server, tmp_path, url)
    lost = defer.Deferred()
    raw = yield ClientCreator(reactor, _Watch, lost).connectTCP("127.0.0.1", running.port)
    raw.transport.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    yield task.deferLater(reactor, 0.1, lambda: None)  # the application is being asked
    raw.transport.abortConnection()
    yield lost
    yield answered
    yield task.deferLater(reactor, 0.1, lambda: None)  # the answer reaches zbifrost's upgrade
    assert not running.hub.clients and not running.hub.handshakes
    assert not [event for event in log_events if event.get("log_level") is not None
                and event["log_level"].name in ("error", "critical")]


class _Watch(Protocol):
    def __init__(self, lost):
        self.lost = lost

    def connectionLost(self, reason):
        self.lost.callback(None)


@pytest_twisted.inlineCallbacks
def test_a_user_the_connect_proxy_names_has_its_private_channel_with_auth_off(make_server, tmp_path, application):
    _, url = application(lambda path, body, request: (200, {"result": {"user": "alice"}}))
    running = yield _connect_server(make_server, tmp_path, url)
    client = yield connect(running.url)
    _, _, body = yield in_thread(http_get, running.port, "/healthz")
    assert json.loads(body)["authenticated_clients"] == 1
    reply = yield client.request("subscribe", channel="user:alice")
    assert reply["subscribed"] is True
    with pytest.raises(BifrostError) as caught:
        yield client.request("subscribe", channel="user:bob")
    assert caught.value.code == "forbidden"
    yield client.close()


def test_the_proxy_flask_examples_config_and_zui_file_load_with_its_secret_file(tmp_path):
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "proxy-flask")
    for name in ("zbifrost.yaml", "zUI.shop.yaml", "app.py", "index.html"):
        shutil.copy(os.path.join(example, name), tmp_path)
    (tmp_path / "proxy.secret").write_bytes(SECRET + b"\n")
    config = load_config(str(tmp_path / "zbifrost.yaml"), environ={})
    assert (config.require_auth, config.proxy.secret, config.proxy.connect.headers) == (True, SECRET, ("cookie",))
    assert [rule.proxy for rule in config.channels] == [True]
    command = BifrostService(config, reactor=reactor).workspace.file("@.zUI.shop").blocks["Shop"].find("Place Order")
    assert (command.action.kind, command.action.url) == ("http", "http://127.0.0.1:5000/zbifrost/orders")


@pytest_twisted.inlineCallbacks
def test_a_fault_while_asking_the_connect_proxy_is_an_http_500_and_logged(make_server, tmp_path, application,
                                                                           monkeypatch, log_events):
    from zbifrost.app_proxy import Application

    _, url = application(lambda path, body, request: (200, {"result": {"user": "al"}}))
    running = yield _connect_server(make_server, tmp_path, url)
    monkeypatch.setattr(Application, "connect", lambda self, facts, headers: defer.fail(RuntimeError("a bug")))
    status = yield in_thread(refused_status, running.url)
    assert status == 500 and not running.hub.clients
    assert any("Unexpected error while asking the connect proxy" in event.get("log_format", "")
               for event in log_events)
