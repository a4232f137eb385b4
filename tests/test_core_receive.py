"""The receive fast path (compat.FastPath.dataReceived): the common frame skips
Autobahn's general frame parser, and everything else gets exactly the outcome it gets there."""

import json
from types import SimpleNamespace

import autobahn.twisted.websocket as autobahn_twisted
import autobahn.websocket.protocol as autobahn_protocol
import pytest
import pytest_twisted
import txaio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from tests.conftest import DEMO_WORKSPACE
from tests.helpers import fragmented_ping, in_thread
from zbifrost import compat
from zbifrost.config import load_config
from zbifrost.service import BifrostService
from zbifrost.testing import connect
from zbifrost.wire.protocol import WireProtocol


@pytest.mark.fence_open
@pytest_twisted.inlineCallbacks
def test_whole_masked_text_and_binary_messages_skip_autobahns_frame_parser(make_server, monkeypatch):
    server = yield make_server(rate=0)
    client = yield connect(server.url)
    parsed = []
    protocol_class = server.factory.protocol
    general_path = protocol_class.processData
    monkeypatch.setattr(protocol_class, "processData", lambda self: parsed.append(1) or general_path(self))
    for _ in range(20):
        assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    client.send_raw(b'{"event": "dispatch", "zKey": "^Ping", "_requestId": 99}', binary=True)
    assert (yield client.next_frame(lambda frame: frame.get("_requestId") == 99))["result"] == {"message": "Pong!"}
    client.send_raw(b"not json")
    assert (yield client.next_frame(lambda frame: "code" in frame))["code"] == "bad_json"
    assert parsed == []
    # control: a message in two fragments is not whole, and does take Autobahn's parser
    _opcode, payload = yield in_thread(fragmented_ping, server.port, 2)
    assert json.loads(payload)["result"] == {"message": "Pong!"} and parsed
    yield client.close()


@pytest.mark.fence_open
@pytest_twisted.inlineCallbacks
def test_a_reply_leaves_in_the_reactor_turn_that_read_its_request(server, monkeypatch):
    client = yield connect(server.url)
    left_queued = []
    protocol_class = server.factory.protocol
    receive = protocol_class.dataReceived

    def receive_then_look_at_the_queue(self, data):
        receive(self, data)
        left_queued.append(self.transport._tempDataLen + len(self.transport.dataBuffer) - self.transport.offset)

    monkeypatch.setattr(protocol_class, "dataReceived", receive_then_look_at_the_queue)
    for _ in range(5):
        assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    assert left_queued == [0] * 5
    yield client.close()


@pytest.mark.fence_open
@pytest_twisted.inlineCallbacks
def test_with_debug_logging_off_no_read_builds_autobahns_debug_log_arguments(server, monkeypatch):
    client = yield connect(server.url)
    built = []  # the server's: the Autobahn client in this process builds its own
    monkeypatch.setattr(autobahn_twisted, "hltype", lambda method: built.append(method.__self__) or "")
    for _ in range(5):
        assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    assert not [protocol for protocol in built if isinstance(protocol, WireProtocol)]
    # control: Autobahn's connectionMade builds them regardless, and the record sees it
    other = yield connect(server.url)
    assert [protocol for protocol in built if isinstance(protocol, WireProtocol)] == [
        server.hub.clients[other.info["client_id"]].connection]
    yield client.close()
    yield other.close()


@pytest_twisted.inlineCallbacks
def test_with_debug_logging_on_autobahn_logs_every_read(server, log_events):
    level = txaio.get_global_log_level()
    txaio.set_global_log_level("debug")
    try:
        client = yield connect(server.url)
        del log_events[:]
        assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    finally:
        txaio.set_global_log_level(level)
    reads = [event for event in log_events if event.get("log_format", "").startswith("{func} received {data_len}")
             and event.get("log_namespace", "").endswith("WebSocketServerProtocol")]
    assert len(reads) == 1
    yield client.close()


# -- the differential fuzz test: the same bytes to a connection with and without the fast path --

MAX_MESSAGE_SIZE = compat.SMALL_PAYLOAD + 200  # both ways of unmasking are met

PAYLOADS = [
    b'{"event": "dispatch", "zKey": "^Ping", "_requestId": 7}',
    b'{"event": "dispatch", "zKey": "^Ping", "_requestId": 8}',
    b'{"event": "no_such_event"}',
    b"not json",
    b"[1, 2]",
    b"",
    "{\"event\": \"dispatch\", \"zKey\": \"\u00e9\"}".encode(),
    b'{"event": "dispatch", "zKey": "\xff"}',  # invalid UTF-8
    b'{"event": "dispatch", "zKey": "\xc3',  # ends inside a code point
    b"x" * (MAX_MESSAGE_SIZE + 1),
    b"y" * 130,  # a 16-bit length
    b'{"event": "%s"}' % (b"z" * compat.SMALL_PAYLOAD),  # unmasked by Autobahn's NVX masker
]


def client_frame(fin, rsv, opcode, masked, mask, payload, length_encoding):
    """One client frame as a misbehaving client may write it."""
    size = len(payload)
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    mask_bit = 0x80 if masked else 0
    if length_encoding == 0 and size < 126:
        header = bytes((first, mask_bit | size))
    elif length_encoding < 2 and size < 65536:
        header = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")
    if not masked:
        return header + payload
    return header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


def mostly(usual, *unusual, weight=8):
    """`usual` most of the time, one of `unusual` now and then: most frames of a stream are
    good, so that the bad ones are met in every state."""
    return st.sampled_from([usual] * weight + list(unusual))


frames = st.builds(
    client_frame,
    fin=mostly(True, False, weight=3),
    rsv=mostly(0, 1, 2, 4, weight=20),
    opcode=mostly(1, 1, 1, 2, 2, 0, 9, 9, 10, 8, 3, 11, weight=12),
    masked=mostly(True, False, weight=20),
    mask=st.binary(min_size=4, max_size=4),
    payload=st.one_of(st.sampled_from(PAYLOADS), st.sampled_from(PAYLOADS), st.binary(max_size=140)),
    length_encoding=mostly(0, 1, 2, weight=10),
)
# where a read ends: not after this frame (None), right after it (READ_ENDS), or that many
# bytes into it
READ_ENDS = -1
read_ends = st.one_of(st.just(None), st.just(READ_ENDS), st.integers(0, 300))
# what happens between two reads: nothing, or the clock moves on (auto-pings, their timeouts,
# the close handshake's timeout)
pauses = st.sampled_from([0, 0, 0.5, 1.0, 1.0, 3.0])


def reads_of(stream):
    """The bytes of each read, for a stream of (frame, where the read ends) pairs."""
    reads, current = [], b""
    for frame, read_end in stream:
        if read_end is None:
            current += frame
        elif read_end == READ_ENDS:
            reads.append(current + frame)
            current = b""
        else:
            split = read_end % (len(frame) + 1)
            reads.append(current + frame[:split])
            current = frame[split:]
    return [*reads, current]


class _ClockTimer:
    """Autobahn's batched timer (`factory._batched_timer`) on a task.Clock."""

    def __init__(self, clock):
        self.clock = clock

    def call_later(self, delay, function, *args, **kwargs):
        return self.clock.callLater(delay, function, *args, **kwargs)


class _Transport(StringTransport):
    """A StringTransport that, like Twisted's TCP transports, lets a producer be unregistered twice."""

    def unregisterProducer(self):
        self.producer = None


class _Connection:
    """One server protocol over a StringTransport, opened with a real upgrade request; it
    records every message it hands to onMessage."""

    def __init__(self, factory, fast_path):
        self.delivered = []
        delivered = self.delivered

        class Recording(factory.protocol):
            receive_fast_path = fast_path

            def onOpen(self):
                super().onOpen()
                receive = self.onMessage  # the session's, while the connection is open

                def recording(payload, isBinary):
                    delivered.append((payload, isBinary))
                    receive(payload, isBinary)

                self.onMessage = recording

            def onMessage(self, payload, isBinary):  # once closed
                delivered.append((payload, isBinary))

        self.protocol = Recording()
        self.protocol.factory = factory
        self.transport = _Transport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(UPGRADE)
        assert self.protocol.state == self.protocol.STATE_OPEN
        self.transport.clear()  # the 101 and connection_info (its client id is random)

    def receive(self, data):
        """The bytes of one read; then, if the protocol ended the connection, its end (the
        reactor calls connectionLost once the transport has let go)."""
        if not self.transport.disconnecting:
            self.protocol.dataReceived(data)
        self.lose_if_dropped()

    def lose_if_dropped(self):
        if self.transport.disconnecting:
            self.lose()

    def outcome(self):
        protocol = self.protocol
        return {"delivered": self.delivered, "written": self.transport.value(), "state": protocol.state,
                "close": (protocol.localCloseCode, protocol.localCloseReason),
                "dropped": self.transport.disconnecting}

    def lose(self):
        if self.protocol.state != self.protocol.STATE_CLOSED:
            self.protocol.connectionLost(Failure(ConnectionDone()))


UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.fixture(scope="module")
def clocked_factory():
    """A zbifrost factory on a task.Clock: auto-pings every second, 1 s to answer, no rate limit."""
    clock = MemoryReactorClock()
    config = load_config(environ={}, overrides={"workspace": DEMO_WORKSPACE, "rate": 0, "ping_interval": 1.0,
                                                "ping_timeout": 1.0, "max_message_size": MAX_MESSAGE_SIZE,
                                                "max_fragments": 3})
    factory = BifrostService(config, reactor=clock).factory
    factory._batched_timer = _ClockTimer(clock)
    return factory, clock


@pytest.mark.slow  # 600 examples, about 3 s
@settings(max_examples=600, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=st.lists(st.tuples(frames, read_ends), max_size=12),
       waits=st.lists(pauses, min_size=13, max_size=13))
# rarely met at random: a whole frame in the read after a fragment, and a message in the
# second that the server waits for the answer to its auto-ping
@example(stream=[(client_frame(False, 0, 1, True, b"mask", b"{", 0), READ_ENDS),
                 (client_frame(True, 0, 1, True, b"mask", PAYLOADS[0], 0), None)], waits=[0] * 13)
@example(stream=[(client_frame(True, 0, 1, True, b"mask", PAYLOADS[0], 0), READ_ENDS)] * 2,
         waits=[1.0, 1.0] + [0] * 11)
def test_any_byte_stream_has_the_same_outcome_with_and_without_the_fast_path(clocked_factory, monkeypatch,
                                                                            stream, waits):
    factory, clock = clocked_factory
    # auto-ping payloads hold the time of sending: make it the clock's
    monkeypatch.setattr(autobahn_protocol, "time", SimpleNamespace(time_ns=lambda: int(clock.seconds() * 1e9)))
    fast, general = _Connection(factory, True), _Connection(factory, False)
    try:
        for data, wait in zip(reads_of(stream), waits, strict=False):
            for connection in (fast, general):
                connection.receive(data)
            clock.advance(wait)
            for connection in (fast, general):
                connection.lose_if_dropped()
            assert fast.outcome() == general.outcome()
    finally:
        fast.lose()
        general.lose()
