"""Hostile clients (docs/protocol.md sections 1 and 7): trickled handshakes, request bodies, slow
readers, deep JSON, fragment floods, client-id collisions, and what the log says of them."""

import json
import selectors
import socket
import time

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.logger import LogLevel, formatEvent

from tests.helpers import (
    RawWebSocket,
    close_code,
    fragmented_ping,
    http_get,
    in_thread,
    refused_status,
    start_engine,
    websockets_exchange,
    write_tokens,
)
from zbifrost.testing import connect

UPGRADE_HEAD = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"


# -- 1. handshakes: a deadline from the TCP accept ---------------------------------------------

def trickle(port, count, gap, padding):
    """Open `count` sockets that each send an upgrade request one byte every `gap` seconds;
    the request is long enough (`padding` header bytes) to outlast the server's deadline.
    Returns (sockets cut off before their request was sent, sockets that finished sending)."""
    request = (UPGRADE_HEAD + "X-Pad: " + "p" * padding + "\r\n\r\n").encode()
    selector = selectors.DefaultSelector()
    sent = {}
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        sent[sock] = 0
    cut_off, finished = 0, 0
    while sent:
        for key, _ in selector.select(timeout=gap):
            sock = key.fileobj
            try:
                data = sock.recv(4096)
            except ConnectionError:
                data = b""
            if not data:  # dropped by the server
                cut_off += 1
                selector.unregister(sock)
                sock.close()
                del sent[sock]
        for sock in list(sent):
            try:
                sock.send(request[sent[sock]:sent[sock] + 1])
            except (BlockingIOError, ConnectionError):
                continue
            sent[sock] += 1
            if sent[sock] == len(request):
                finished += 1
                selector.unregister(sock)
                sock.close()
                del sent[sock]
    selector.close()
    return cut_off, finished


@pytest.mark.slow  # about 4 s
@pytest_twisted.inlineCallbacks
def test_a_trickled_handshake_is_dropped_at_its_deadline_from_accept_and_healthz_still_answers(make_server):
    server = yield make_server(handshake_timeout=1)
    trickling = in_thread(trickle, server.port, count=200, gap=0.1, padding=60)  # ~13 s of bytes each
    # meanwhile the HTTP endpoints answer
    status, _, body = yield in_thread(http_get, server.port, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    cut_off, finished = yield trickling
    assert (cut_off, finished) == (200, 0)
    assert len(server.hub.handshakes) == 0


@pytest_twisted.inlineCallbacks
def test_connections_in_their_handshake_count_toward_max_connections(make_server):
    server = yield make_server(max_connections=2, handshake_timeout=30)
    pending = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(UPGRADE_HEAD.encode())  # and not the rest, yet
        pending.append(sock)
    try:
        assert (yield in_thread(refused_status, server.url)) == 503
        status, _, _ = yield in_thread(http_get, server.port, "/healthz")  # plain HTTP is not refused
        assert status == 200
    finally:
        for sock in pending:
            sock.close()
    for _ in range(100):  # bounded wait for the server to notice the closes
        if not len(server.hub.handshakes):
            break
        yield task.deferLater(reactor, 0.05, lambda: None)
    info, _ = yield in_thread(websockets_exchange, server.url, [])
    assert info["event"] == "connection_info"


@pytest_twisted.inlineCallbacks
def test_refused_connections_waiting_for_their_close_answer_count_toward_max_connections(make_server, tmp_path):
    """A refused token gets 101 then a 1008 close, and up to 10 s to answer it; a client that never
    answers must not hold sockets beyond max_connections that way."""
    tokens = write_tokens(tmp_path / "tokens.yaml", ("good-token", "alice", "user"))
    server = yield make_server(max_connections=2, require_auth=True, tokens_file=tokens)
    silent = []
    for _ in range(2):
        ws = yield in_thread(RawWebSocket, server.port, "/ws?token=wrong")
        silent.append(ws)
    try:
        assert (yield in_thread(refused_status, server.url + "?token=good-token")) == 503
    finally:
        for ws in silent:
            ws.sock.close()
    for _ in range(100):  # bounded wait for the server to notice the closes
        if not server.hub.refused_closing:
            break
        yield task.deferLater(reactor, 0.05, lambda: None)
    info, _ = yield in_thread(websockets_exchange, server.url + "?token=good-token", [])
    assert info["event"] == "connection_info" and info["data"]["auth"]["user"] == "alice"


# -- 4. HTTP request bodies --------------------------------------------------------------------

def send_head_and_read(port, head, body=b""):
    """Send a request head (and a little of its body), then read the whole response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        response = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            response += data
        return response


@pytest.mark.parametrize("head", [
    "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
    "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n",
    "POST /api/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    "PUT /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
])
@pytest_twisted.inlineCallbacks
def test_a_request_body_is_refused_with_413_before_it_is_read(server, head):
    # the server answers although almost none of the announced body was sent: it read none of it
    response = yield in_thread(send_head_and_read, server.port, head, b"0123")
    assert response.startswith(b"HTTP/1.1 413 "), response[:200]
    status, _, _ = yield in_thread(http_get, server.port, "/healthz")
    assert status == 200


# -- 5. slow consumers -------------------------------------------------------------------------

def subscribe_then_read_slowly(port, subscribed, go_on, pace):
    """Subscribe, stop reading until told, then read `pace` bytes every 50 ms until the close
    frame; returns (close code and reason, bytes of messages read before it)."""
    client = RawWebSocket(port, rcvbuf=4096)
    client.read_json()  # connection_info
    client.send_json({"event": "subscribe", "channel": "firehose", "_requestId": 1})
    assert "result" in client.read_json()
    subscribed()
    go_on.wait(60)
    received = 0
    try:
        while True:
            opcode, payload = client.read_frame(chunk=pace)
            if opcode == 0x8:
                return close_code(payload), received
            received += len(payload)
            time.sleep(0.05)
    finally:
        client.close()


@pytest.mark.slow  # about 3 s
@pytest_twisted.inlineCallbacks
def test_a_slow_reader_sees_the_1013_close_frame_after_its_queued_data_not_a_reset(make_server):
    import threading

    from twisted.internet import defer

    server = yield make_server(rate=0, max_outbound_buffer=256 * 1024)
    subscribed, go_on = defer.Deferred(), threading.Event()
    reading = in_thread(subscribe_then_read_slowly, server.port,
                        lambda: reactor.callFromThread(subscribed.callback, None), go_on, 32 * 1024)
    yield subscribed
    (slow,) = [session.connection for session in server.hub.clients.values()]
    publisher = yield connect(server.url)
    chunk = "x" * 50_000
    for _ in range(400):
        yield publisher.request("publish", channel="firehose", data=chunk)
        if slow.localCloseCode is not None:
            break
    assert slow.localCloseCode == 1013
    go_on.set()
    (code, reason), received = yield reading
    assert (code, reason) == (1013, "Slow consumer")
    assert received > 256 * 1024  # it read through everything queued before the close frame
    yield publisher.close()


# -- 6. deep JSON ------------------------------------------------------------------------------

def nested(depth):
    value = "bottom"
    for _ in range(depth):
        value = [value]
    return value


@pytest_twisted.inlineCallbacks
def test_messages_nesting_past_64_levels_get_bad_message_and_log_no_traceback(make_server, log_events):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    listener = yield connect(server.url)
    yield listener.request("subscribe", channel="deep")
    # the message itself is level 1 and `data`'s outer array level 2: 63 arrays make 64 levels
    yield client.request("publish", channel="deep", data=nested(63))
    assert (yield listener.next_event("message"))["data"] == nested(63)
    for depth in (64, 300, 900, 5000):  # orjson itself stops at 1024 levels
        client.send_raw(b'{"event": "publish", "channel": "deep", "_requestId": %d, "data": %s"x"%s}'
                        % (depth, b"[" * depth, b"]" * depth))
        frame = yield client.next_frame()
        assert frame["code"] == "bad_message", depth
        if depth < 1024:  # the message was parsed: its error carries the _requestId
            assert frame["_requestId"] == depth
    client.send_raw(b'{"zKey": "^Ping", "_requestId": 1, "args": %s1%s}' % (b"[" * 200, b"]" * 200))
    assert (yield client.next_frame())["code"] == "bad_message"
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    assert not [e for e in log_events if e.get("log_level") in (LogLevel.error, LogLevel.critical)]
    # control: a failing command is logged at error, and the same capture holds it
    assert (yield client.request_frame("dispatch", zKey="^Boom"))["code"] == "command_failed"
    assert [e for e in log_events if e.get("log_level") == LogLevel.error]
    yield client.close()
    yield listener.close()


# -- 7. client ids -----------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_client_ids_carry_64_random_bits_and_never_repeat(server, monkeypatch):
    from zbifrost import hub

    first = yield connect(server.url)
    assert len(first.info["client_id"]) == len("c-") + 16
    repeats = iter(["00000000feedbeef", "00000000feedbeef", "00000000feedbeef", "0000000012345678"])
    monkeypatch.setattr(hub.secrets, "token_hex", lambda size: next(repeats))
    second = yield connect(server.url)
    third = yield connect(server.url)
    assert (second.info["client_id"], third.info["client_id"]) == ("c-00000000feedbeef", "c-0000000012345678")
    for client in (first, second, third):
        yield client.close()


# -- 8. fragments ------------------------------------------------------------------------------

# The frame over the cap is the client's last write: the server stops reading once it has sent
# its close frame and drops the link a second later, so any write after that could meet a reset
# (ECONNRESET) on a busy machine instead of the close frame.
@pytest.mark.parametrize("settings, cap", [({"max_fragments": 100}, 100), ({}, 4096)],
                         ids=["max_fragments=100", "default-4096"])
@pytest_twisted.inlineCallbacks
def test_a_message_of_more_than_max_fragments_frames_is_closed_1009(make_server, settings, cap):
    server = yield make_server(**settings)
    opcode, payload = yield in_thread(fragmented_ping, server.port, cap)
    assert (opcode, json.loads(payload)) == (0x1, {"result": {"message": "Pong!"}, "_requestId": 1})
    opcode, payload = yield in_thread(fragmented_ping, server.port, cap + 1)
    assert (opcode, close_code(payload)) == (0x8, (1009, "Too many fragments"))


# -- 9. what the log says of refusals ----------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_refused_connections_are_logged_at_warning_with_reason_and_peer(make_server, log_events):
    server = yield make_server(max_connections=1)
    assert (yield in_thread(refused_status, server.url, origin="http://evil.example")) == 403
    warnings = [formatEvent(e) for e in log_events if e.get("log_level") == LogLevel.warn]
    assert any("Refused a connection from tcp4:127.0.0.1:" in line and "origin" in line for line in warnings), warnings


@pytest_twisted.inlineCallbacks
def test_a_timeout_is_logged_at_warning_and_a_plugin_failure_at_error_not_critical(make_server, log_events):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    assert (yield client.request_frame("dispatch", zKey="^Never"))["code"] == "timeout"
    assert (yield client.request_frame("dispatch", zKey="^Boom"))["code"] == "command_failed"
    by_level = {}
    for event in log_events:
        if event.get("log_namespace", "").startswith("zbifrost"):
            by_level.setdefault(event["log_level"], []).append(formatEvent(event))
    assert any("'Never' timed out after 0.2 s" in line for line in by_level.get(LogLevel.warn, [])), by_level
    assert any("Command failed (error id" in line for line in by_level.get(LogLevel.error, [])), by_level
    assert LogLevel.critical not in by_level, by_level[LogLevel.critical]
    yield client.close()
