"""Opening and closing connections: origin, auth, limits, HTTP endpoints, graceful shutdown."""

import gc
import json
import weakref

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.task import deferLater
from websockets.exceptions import ConnectionClosed as WsClosed
from websockets.exceptions import InvalidStatus

from tests.helpers import http_get, in_thread, refused_status, websockets_exchange, write_tokens
from zbifrost import web
from zbifrost.testing import ConnectionClosed, connect

# -- origin ------------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_same_origin_and_originless_clients_are_accepted_by_default(server):
    _info, replies = yield in_thread(websockets_exchange, server.url, [{"zKey": "^Ping", "_requestId": 1}],
                               origin=f"http://127.0.0.1:{server.port}")
    assert replies == [{"result": {"message": "Pong!"}, "_requestId": 1}]
    _info, replies = yield in_thread(websockets_exchange, server.url, [{"zKey": "^Ping", "_requestId": 2}])
    assert replies[0]["result"] == {"message": "Pong!"}


@pytest_twisted.inlineCallbacks
def test_a_foreign_origin_is_refused_with_403(server):
    assert (yield in_thread(refused_status, server.url, origin="http://evil.example")) == 403
    assert (yield in_thread(refused_status, server.url, origin=f"http://127.0.0.1:{server.port + 1}")) == 403
    assert (yield in_thread(refused_status, server.url, origin="null")) == 403


@pytest_twisted.inlineCallbacks
def test_allowed_origins_match_exactly_with_default_ports(make_server):
    server = yield make_server(allowed_origins=["https://app.example.com", "http://localhost:8080"])
    for origin in ("https://app.example.com", "https://app.example.com:443", "http://localhost:8080"):
        info, _ = yield in_thread(websockets_exchange, server.url, [], origin=origin)
        assert info["event"] == "connection_info"
    for origin in ("https://app.example.com.evil.net", "http://app.example.com", "https://evil-app.example.com",
                   "http://localhost:8081", f"http://127.0.0.1:{server.port + 1}"):
        assert (yield in_thread(refused_status, server.url, origin=origin)) == 403, origin


@pytest_twisted.inlineCallbacks
def test_the_servers_own_origin_is_accepted_whatever_the_list_holds(make_server):
    server = yield make_server(allowed_origins=["https://app.example.com"])
    info, _ = yield in_thread(websockets_exchange, server.url, [], origin=f"http://127.0.0.1:{server.port}")
    assert info["event"] == "connection_info"
    rebound = f"evil.example:{server.port}"  # the DNS-rebinding guard holds with a list too
    assert "403" in (yield in_thread(raw_upgrade_status, server.port, rebound, f"http://{rebound}"))


@pytest_twisted.inlineCallbacks
def test_a_star_allows_every_origin(make_server):
    server = yield make_server(allowed_origins=["*"])
    info, _ = yield in_thread(websockets_exchange, server.url, [], origin="http://anything.example")
    assert info["event"] == "connection_info"


@pytest.mark.parametrize("path, headers, expected", [
    ("/ws", {}, (426, "Upgrade Required: this path speaks WebSocket")),
    ("/ws?origin=http%3A%2F%2Fevil.example", {}, (403, "Origin not allowed")),
    ("/ws?origin=http%3A%2F%2Fevil.example", {"Origin": "OWN"}, (426, None)),  # the header wins
    ("/ws", {"Origin": "http://evil.example"}, (403, "Origin not allowed")),
])
@pytest_twisted.inlineCallbacks
def test_a_plain_get_of_the_upgrade_path_says_why_an_upgrade_would_be_refused(server, path, headers, expected):
    headers = {name: value.replace("OWN", f"http://127.0.0.1:{server.port}") for name, value in headers.items()}
    status, response_headers, body = yield in_thread(http_get, server.port, path, headers)
    assert (status, response_headers["access-control-allow-origin"]) == (expected[0], "*")
    assert json.loads(body)["status"] == expected[0]
    if expected[1] is not None:
        assert json.loads(body)["reason"] == expected[1]


@pytest_twisted.inlineCallbacks
def test_a_plain_get_of_the_upgrade_path_says_503_when_the_server_is_full(make_server):
    server = yield make_server(max_connections=1)
    client = yield connect(server.url)
    status, _, body = yield in_thread(http_get, server.port, "/ws")
    assert (status, json.loads(body)["reason"]) == (503, "Too many connections")
    yield client.close()


# -- authentication ----------------------------------------------------------------------------

@pytest.fixture
def auth_server(make_server, tmp_path):
    tokens = write_tokens(tmp_path / "tokens.yaml",
                          ("alice-token", "alice", "admin"),
                          ("bob-token", "bob", "user"),
                          ("old-token", "olga", "user", {"expires": "2001-01-01T00:00:00"}),
                          ("gone-token", "gus", "user", {"revoked": True}))
    return pytest_twisted.blockon(make_server(require_auth=True, tokens_file=tokens))


@pytest_twisted.inlineCallbacks
def test_auth_without_a_token_closes_1008_authentication_required(auth_server):
    with pytest.raises(ConnectionClosed) as caught:
        yield connect(auth_server.url)
    assert (caught.value.code, caught.value.reason) == (1008, "Authentication required")


@pytest_twisted.inlineCallbacks
def test_auth_with_an_unknown_expired_or_revoked_token_closes_1008_invalid_token(auth_server):
    for token in ("wrong", "old-token", "gone-token"):
        with pytest.raises(ConnectionClosed) as caught:
            yield connect(auth_server.url, token=token)
        assert (caught.value.code, caught.value.reason) == (1008, "Invalid token"), token


@pytest_twisted.inlineCallbacks
def test_a_refused_connection_gets_no_frames_and_nothing_it_sends_is_processed(auth_server):
    def exchange(token):
        from websockets.sync.client import connect as ws_connect
        with ws_connect(auth_server.url + "?token=" + token, open_timeout=10) as ws:
            try:
                ws.send(json.dumps({"zKey": "^Ping", "_requestId": 1}))
            except WsClosed:
                pass  # the close may already have arrived
            try:
                return ws.recv(timeout=10)
            except WsClosed as closed:
                return closed.rcvd.code, closed.rcvd.reason

    assert (yield in_thread(exchange, "wrong")) == (1008, "Invalid token")
    assert auth_server.hub.metrics.messages_in == 0
    # control: the same exchange with a good token gets a frame, and its message is counted
    # (the client's close follows the message, and the server handles frames in order)
    assert json.loads((yield in_thread(exchange, "alice-token")))["event"] == "connection_info"
    assert auth_server.hub.metrics.messages_in == 1


@pytest_twisted.inlineCallbacks
def test_a_good_token_gives_user_and_role_from_the_tokens_file(auth_server):
    client = yield connect(auth_server.url, token="alice-token")
    assert client.info["auth"] == {"authenticated": True, "user": "alice", "role": "admin", "expires": None}
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_bearer_header_and_the_api_key_parameter_also_carry_tokens(auth_server):
    info, _ = yield in_thread(websockets_exchange, auth_server.url, [],
                        additional_headers={"Authorization": "Bearer bob-token"})
    assert info["data"]["auth"] == {"authenticated": True, "user": "bob", "role": "user", "expires": None}
    info, _ = yield in_thread(websockets_exchange, auth_server.url + "?api_key=alice-token", [])
    assert info["data"]["auth"]["user"] == "alice"


@pytest_twisted.inlineCallbacks
def test_clear_cache_needs_admin_when_auth_is_on(auth_server):
    bob = yield connect(auth_server.url, token="bob-token")
    assert (yield bob.request_frame("clear_cache"))["code"] == "forbidden"
    alice = yield connect(auth_server.url, token="alice-token")
    assert (yield alice.request("clear_cache")) == {"cleared": 0}
    yield bob.close()
    yield alice.close()


# -- limits ------------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_a_message_over_max_message_size_closes_1009(make_server):
    server = yield make_server(max_message_size=1024)
    client = yield connect(server.url)
    assert client.info["limits"]["max_message_size"] == 1024
    client.send({"event": "publish", "channel": "x", "data": "a" * 2000})
    code, _ = yield client.closed
    assert code == 1009


@pytest_twisted.inlineCallbacks
def test_over_the_rate_a_client_gets_rate_limited_and_past_four_times_it_is_closed(make_server):
    server = yield make_server(rate=1, burst=5)
    client = yield connect(server.url)
    for number in range(30):
        client.send({"event": "ping", "_requestId": number})
    replies = []
    for _ in range(5 + 15):
        replies.append((yield client.next_frame()))
    assert all("result" in reply for reply in replies[:5])
    assert all(reply["code"] == "rate_limited" for reply in replies[5:])
    assert [reply["_requestId"] for reply in replies] == list(range(20))
    code, reason = yield client.closed
    assert (code, reason) == (1008, "Rate limit exceeded")


@pytest_twisted.inlineCallbacks
def test_past_max_connections_the_upgrade_is_refused_with_503(make_server):
    server = yield make_server(max_connections=1)
    from websockets.sync.client import connect as ws_connect

    def hold_one_and_try_another():
        with ws_connect(server.url, open_timeout=10) as first:
            first.recv(timeout=10)
            with pytest.raises(InvalidStatus) as caught:
                ws_connect(server.url, open_timeout=10)
            return caught.value.response.status_code

    assert (yield in_thread(hold_one_and_try_another)) == 503


@pytest_twisted.inlineCallbacks
def test_an_upgrade_on_another_path_is_a_404(server):
    for path in ("/other", "/healthz", "/ws/x", "/bifrost.js"):
        assert (yield in_thread(refused_status, f"ws://127.0.0.1:{server.port}{path}")) == 404, path


@pytest_twisted.inlineCallbacks
def test_both_upgrade_paths_work(server):
    for path in ("/", "/ws"):
        _, replies = yield in_thread(websockets_exchange, f"ws://127.0.0.1:{server.port}{path}",
                               [{"zKey": "^Ping", "_requestId": 1}])
        assert replies[0]["result"] == {"message": "Pong!"}


# -- HTTP endpoints ----------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_healthz_reports_status_version_and_clients(server):
    client = yield connect(server.url)
    status, headers, body = yield in_thread(http_get, server.port, "/healthz")
    health = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert health["status"] == "ok" and health["version"] == "0.1.0"
    assert health["clients"] == 1 and health["authenticated_clients"] == 0 and health["require_auth"] is False
    assert health["uptime_s"] >= 0
    yield client.close()


def scrape(port):
    """/metrics parsed by prometheus_client's own parser: {family name: family}; a family name
    seen twice fails the test."""
    status, headers, body = http_get(port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(body.decode()))
    names = [family.name for family in families]
    assert len(names) == len(set(names)), names
    return {family.name: family for family in families}


def sample(families, name, **labels):
    family = families[name.removesuffix("_total")]
    return next(s.value for s in family.samples if s.name == name and s.labels == labels)


@pytest_twisted.inlineCallbacks
def test_metrics_parse_with_prometheus_client_with_unique_names_and_process_metrics(server):
    yield in_thread(websockets_exchange, server.url, [{"zKey": "^Ping"}, {"zKey": "^Nope"}])
    families = yield in_thread(scrape, server.port)
    assert sample(families, "zbifrost_messages_in_total") == 2
    assert sample(families, "zbifrost_errors_total", code="unknown_command") == 1
    assert sample(families, "zbifrost_connections_accepted_total") == 1
    assert families["zbifrost_connections"].type == "gauge"
    assert sample(families, "process_resident_memory_bytes") > 0 and "process_open_fds" in families


@pytest_twisted.inlineCallbacks
def test_metrics_listen_serves_metrics_and_healthz_apart_from_the_websocket_port(make_server):
    server = yield make_server(metrics_listen=["tcp:0:interface=127.0.0.1"])
    metrics_port = server.service.metrics_listeners[0].port.getHost().port
    families = yield in_thread(scrape, metrics_port)
    assert "zbifrost_connections" in families
    assert (yield in_thread(http_get, metrics_port, "/healthz"))[0] == 200
    assert (yield in_thread(http_get, metrics_port, "/bifrost.js"))[0] == 404
    assert (yield in_thread(http_get, server.port, "/metrics"))[0] == 404


# -- shutdown ----------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_graceful_shutdown_sends_server_shutdown_then_closes_1001(make_server):
    server = yield make_server()
    first = yield connect(server.url)
    second = yield connect(server.url)
    yield server.stop()
    for client in (first, second):
        shutdown = yield client.next_event("server_shutdown")
        assert shutdown == {"event": "server_shutdown", "message": "Server is shutting down"}
        assert (yield client.closed) == (1001, "Server shutdown")
    assert server.hub.clients == {}


@pytest_twisted.inlineCallbacks
def test_a_client_that_stops_reading_is_closed_1013_and_others_are_unaffected(make_server, monkeypatch):
    import socket
    import threading

    from twisted.internet import defer, reactor, task
    from websockets.sync.client import connect as ws_connect

    from zbifrost.wire import protocol
    from zbifrost.wire.protocol import CLOSE_SLOW

    # it never reads: the TCP link is dropped once its time to read through to the close frame is up
    monkeypatch.setattr(protocol, "CLOSE_ANSWER_TIMEOUT", 1)
    server = yield make_server(rate=0, max_outbound_buffer=256 * 1024)
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    subscribed, release = defer.Deferred(), threading.Event()

    def subscribe_then_stop_reading():
        with ws_connect(server.url, sock=stalled, max_queue=1, open_timeout=10) as ws:
            info = json.loads(ws.recv(timeout=10))
            ws.send(json.dumps({"event": "subscribe", "channel": "firehose", "_requestId": 1}))
            ws.recv(timeout=10)
            reactor.callFromThread(subscribed.callback, info["data"]["client_id"])
            release.wait(60)  # reads nothing more until the test is over

    finished = in_thread(subscribe_then_stop_reading)
    slow_id = yield subscribed
    slow_conn = server.hub.clients[slow_id].connection
    publisher = yield connect(server.url)
    listener = yield connect(server.url)
    yield listener.request("subscribe", channel="firehose")
    chunk = "x" * 50_000
    for _ in range(400):
        if slow_id not in server.hub.clients:
            break
        yield publisher.request("publish", channel="firehose", data=chunk)
        yield listener.next_event("message")  # the reading subscriber keeps up
    for _ in range(200):  # the close handshake times out: bounded wait for the drop
        if slow_id not in server.hub.clients:
            break
        yield task.deferLater(server.hub.reactor, 0.05, lambda: None)
    assert slow_id not in server.hub.clients
    assert (slow_conn.localCloseCode, slow_conn.localCloseReason) == (CLOSE_SLOW[0], CLOSE_SLOW[1].encode())
    assert (yield publisher.dispatch("^Ping")) == {"message": "Pong!"}
    yield publisher.close()
    yield listener.close()
    release.set()
    yield finished


@pytest_twisted.inlineCallbacks
def test_a_connection_that_never_finishes_its_handshake_is_dropped(make_server):
    import socket

    server = yield make_server(handshake_timeout=0.5)

    def silent_client():
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
            try:
                return sock.recv(1024)
            except ConnectionResetError:  # the server aborts the TCP connection
                return b""

    assert (yield in_thread(silent_client)) == b""  # closed by the server, not by our timeout


@pytest_twisted.inlineCallbacks
def test_tokens_never_reach_the_log(auth_server):
    from twisted.logger import formatEvent, globalLogPublisher

    logged = []

    def observer(event):
        logged.append(formatEvent(event) + repr(event))

    globalLogPublisher.addObserver(observer)
    try:
        client = yield connect(auth_server.url, token="alice-token")
        yield client.close()
        with pytest.raises(ConnectionClosed):
            yield connect(auth_server.url, token="not-a-valid-secret")
        yield in_thread(http_get, auth_server.port, "/healthz?token=alice-token")
        yield in_thread(websockets_exchange, auth_server.url, [],
                        additional_headers={"Authorization": "Bearer bob-token"})
    finally:
        globalLogPublisher.removeObserver(observer)
    assert any("/healthz" in line for line in logged)  # the access log did record the request
    for secret in ("alice-token", "not-a-valid-secret", "bob-token"):
        assert not [line for line in logged if secret in line], secret


@pytest_twisted.inlineCallbacks
def test_the_client_module_is_served_to_pages_of_any_origin_and_the_demo_page_at_root(server):
    status, headers, body = yield in_thread(http_get, server.port, "/bifrost.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert headers["access-control-allow-origin"] == "*"
    assert b"export class BifrostClient" in body
    status, headers, body = yield in_thread(http_get, server.port, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "access-control-allow-origin" not in headers
    status, _, _ = yield in_thread(http_get, server.port, "/../setup.py")
    assert status == 404


def raw_upgrade_status(port, host, origin):
    """The status line of a hand-written WebSocket upgrade with the given Host and Origin."""
    import socket

    request = (f"GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        return sock.recv(4096).split(b"\r\n", 1)[0].decode()


@pytest_twisted.inlineCallbacks
def test_same_origin_needs_an_ip_or_localhost_host_so_dns_rebinding_is_refused(server):
    port = server.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"10.1.2.3:{port}"):
        origin = f"http://{host}"
        assert "101" in (yield in_thread(raw_upgrade_status, port, host, origin)), host
    rebound = f"evil.example:{port}"
    assert "403" in (yield in_thread(raw_upgrade_status, port, rebound, f"http://{rebound}"))


@pytest_twisted.inlineCallbacks
def test_a_named_host_works_once_its_origin_is_listed(make_server):
    server = yield make_server(allowed_origins=["https://app.example.com"])
    status = yield in_thread(raw_upgrade_status, server.port, "app.example.com", "https://app.example.com")
    assert "101" in status


@pytest_twisted.inlineCallbacks
def test_head_requests_get_the_headers_without_a_body(server):
    import http.client

    def head(path):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            connection.request("HEAD", path)
            response = connection.getresponse()
            return response.status, response.getheader("content-length"), response.read()
        finally:
            connection.close()

    for path in ("/bifrost.js", "/"):
        _, _, body = yield in_thread(http_get, server.port, path)
        assert (yield in_thread(head, path)) == (200, str(len(body)), b""), path
    status, length, body = yield in_thread(head, "/healthz")  # its uptime changes: no fixed length
    assert (status, body) == (200, b"") and int(length) > 0


@pytest_twisted.inlineCallbacks
def test_a_peer_that_never_answers_pings_is_closed(make_server):
    import socket

    server = yield make_server(ping_interval=0.2, ping_timeout=0.2)

    def handshake_then_play_dead():
        request = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        received = b""
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(request)
            while True:  # read frames (connection_info, pings, the close) but never answer
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:  # dropped after the close handshake timed out
                    return received
                if not chunk:
                    return received
                received += chunk

    received = yield in_thread(handshake_then_play_dead)
    assert received.startswith(b"HTTP/1.1 101")
    assert b"\x89" in received  # the server pinged (opcode 9) before giving up


@pytest_twisted.inlineCallbacks
def test_a_closed_connection_is_freed_without_waiting_for_the_cycle_collector(server):
    """Nothing of a connection that has ended is left in reference cycles (its HTTP channel and
    request, Autobahn's is_closed): with connections coming and going, such leftovers made the
    collector's full passes frequent, each pausing the reactor for tens of ms."""

    def http_channels():
        return sum(isinstance(o, web._Channel) for o in gc.get_objects())

    gc.collect()
    gc.disable()
    try:
        channels_before = http_channels()
        client = yield connect(server.url)
        yield client.request("subscribe", channel="news")
        session = server.hub.clients[client.info["client_id"]]
        session, conn = weakref.ref(session), weakref.ref(session.connection)
        yield client.close()
        yield deferLater(reactor, 0.1, lambda: None)  # past the server's connectionLost
        assert session() is None and conn() is None
        assert http_channels() == channels_before
    finally:
        gc.enable()
