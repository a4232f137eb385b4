"""BifrostServerProtocol: one client connection, from frames in to frames out.

It owns the per-connection state (identity, session, subscriptions, rate limiter, commands in
flight, outbound backlog), the opening-handshake checks of PROTOCOL.md section 2, and the
conversion of failures into error replies (`_error_for`, the one place that does it). The
hot path is `dataReceived`'s fast path for whole unfragmented frames (anything else takes
Autobahn's general path), then `onMessage`: parse, look up the handler, reply; a result that
is not a Deferred is answered at once, with no timers, logging or thread hops. Channel
fan-out (`deliver`) is batched per connection from the end of the reactor turn on
(`TurnBatches`), so that a server behind on its fan-out writes several frames a send.

Autobahn's own logger is `self.log`, so ours is `_log`. Autobahn swallows exceptions raised
in `onConnect`/`onOpen`, so both guard themselves.
"""

import time
import uuid

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet import defer, tcp
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from txaio.tx import _no_op as _txaio_disabled_level

from . import messages
from .auth import InvalidToken, bearer_token
from .context import Session
from .events import HANDLERS
from .events.session import connection_info
from .messages import COMMAND_FAILED, RATE_LIMITED, TIMEOUT, UNKNOWN_EVENT, RequestError
from .ratelimit import ABUSIVE, LIMITED, RateLimiter

SUBPROTOCOL = "zbifrost.v1"

CLOSE_SHUTDOWN = (1001, "Server shutdown")
CLOSE_AUTH_REQUIRED = (1008, "Authentication required")
CLOSE_INVALID_TOKEN = (1008, "Invalid token")
CLOSE_TOKEN_EXPIRED = (1008, "Token expired")
CLOSE_RATE = (1008, "Rate limit exceeded")
CLOSE_INTERNAL = (1011, "Internal error")
CLOSE_SLOW = (1013, "Slow consumer")
CLOSE_TOO_MANY_FRAGMENTS = (1009, "Too many fragments")

# Seconds a client has to answer a close frame it must see before its TCP connection is
# dropped (other closes wait the factory's 1 s): a slow consumer reads through its queued data
# to the 1013 (PROTOCOL.md section 7), and a refused client answers the 1008. A browser answers
# only once the page has handled the close, and a page is often busy right after opening a
# socket; if the connection ends first, Chromium reports 1006 without our code and reason, and
# bifrost.js retries a refused token instead of rejecting with 1008.
CLOSE_ANSWER_TIMEOUT = 10

_Deferred = defer.Deferred

# What Autobahn keeps of the opening handshake (for its test suite): nothing reads it once the
# connection is open, and it is about 1.3 KiB of an idle connection.
_HANDSHAKE_LEFTOVERS = ("http_request_data", "http_response_data", "http_status_line", "http_headers",
                        "http_request_uri", "http_request_path", "http_request_params", "http_request_host",
                        "websocket_origin", "websocket_protocols", "websocket_extensions", "_wskey")


# Up to this many payload bytes, unmasking with Python's big integers is faster than Autobahn's
# NVX masker, whose setup through cffi alone is about 3 us (0.4 us against 3 us for 50 bytes).
_SMALL_PAYLOAD = 1024


def _unmask(mask, masked, length):
    """A client frame's payload (RFC 6455 5.3)."""
    if length > _SMALL_PAYLOAD:
        return create_xor_masker(mask, length).process(masked)
    key = (mask * ((length >> 2) + 1))[:length]
    return (int.from_bytes(masked, "little") ^ int.from_bytes(key, "little")).to_bytes(length, "little")


def text_frame(payload):
    """One unmasked, unfragmented text frame (RFC 6455 5.2) carrying `payload`."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


# Batches sent per reactor turn (about 0.5 ms of sends here; 25 and 100 measured no better in
# bench/fanout.py): between two such turns the reactor reads again, so that a publication made
# meanwhile joins the batches not yet sent instead of waiting for all of them, and requests
# are not held up by a large fan-out.
BATCHES_PER_TURN = 50


class TurnBatches:
    """The connections holding channel deliveries, in the order they got their first one.

    A connection's deliveries wait in its batch, and each batch goes out as one send, from the
    end of the turn on, BATCHES_PER_TURN batches a turn. Deliveries made before a batch is sent
    join it: when publications come faster than the fan-out goes, a subscriber gets several in
    one send instead of one send each. The per-send cost (mostly the kernel's TCP path) is what
    limits fan-out, so a server behind catches up instead of falling further behind. Unlike
    Twisted's own write, nothing waits for the next poll of the socket: the batches are sent
    directly (`_write_now`).
    """

    def __init__(self, reactor):
        self.reactor = reactor
        self._waiting = []
        self._call = None  # the reactor call that sends the next batches
        self._payload = self._frame = None  # the last payload encoded alone, and its frame

    def encoded(self, payload):
        """The frame of `payload`, encoded once for every subscriber that gets it alone."""
        if payload is not self._payload:
            self._payload, self._frame = payload, text_frame(payload)
        return self._frame

    def add(self, conn):
        self._waiting.append(conn)
        if self._call is None:
            self._call = self.reactor.callLater(0, self._send)

    def _send(self):
        """Send up to BATCHES_PER_TURN batches, and the rest in the next turns."""
        self._call = None
        waiting = self._waiting
        if len(waiting) > BATCHES_PER_TURN:
            waiting, self._waiting = waiting[:BATCHES_PER_TURN], waiting[BATCHES_PER_TURN:]
            self._call = self.reactor.callLater(0, self._send)
        else:
            self._waiting = []
        for conn in waiting:
            conn.send_batch()


def _query_token(request):
    for name in ("token", "api_key"):
        values = request.params.get(name)
        if values and values[0]:
            return values[0]
    return None


class _OutboundWatch:
    """The transport's producer: tells the protocol when its send buffer is full or drained."""

    __slots__ = ("protocol",)

    def __init__(self, protocol):
        self.protocol = protocol

    def pauseProducing(self):
        self.protocol._buffer_full()

    def resumeProducing(self):
        self.protocol._buffer_drained()

    def stopProducing(self):
        pass


class BifrostServerProtocol(WebSocketServerProtocol):
    _log = Logger()

    client_id = None
    identity = None
    session = None
    _refusal = None  # close code and reason for a connection whose handshake failed auth
    _credential = None  # the zbifrost.auth.Identity of the token the connection is authenticated by
    _expiry_call = None  # the reactor call closing the connection when that token expires
    _open = False
    _shutting_down = False
    _backlog = None  # bytes queued while the transport's buffer is full; None when it is not
    _writes_at_once = False  # a plain TCP transport: replies go out in the turn they are made
    _batch = None  # channel payloads waiting to go out in one send (TurnBatches)
    # created on first use, as most connections never subscribe or answer a zDialog
    subscriptions = None  # channel names
    pending_inputs = None  # input_request id -> Deferred of the client's input_response

    # -- opening ---------------------------------------------------------------------------

    def onConnect(self, request):
        try:
            return self._check_request(request)
        except ConnectionDeny:
            raise
        except Exception:
            self._log.failure("Unexpected error while checking a WebSocket upgrade")
            raise ConnectionDeny(ConnectionDeny.INTERNAL_SERVER_ERROR, "Internal server error") from None

    def _check_request(self, request):
        server = self.factory
        self.peer = request.peer = server.trusted_proxies.describe(self.transport.getPeer(), request.peer,
                                                                   request.headers.get)
        refusal = server.refusal(request.headers.get("origin"), request.headers.get("host"))
        if refusal is not None:
            reason, status, text = refusal
            self._log_refusal(reason, request)
            raise ConnectionDeny(status, text)
        if server.tokens is None:
            self.identity = server.anonymous
        else:
            token = _query_token(request) or bearer_token(request.headers.get("authorization"))
            if not token:
                self._refusal = CLOSE_AUTH_REQUIRED
                self._log_refusal("no_token", request)
            else:
                try:
                    self.authenticate(server.tokens.identify(token))
                except InvalidToken as err:
                    self._refusal = CLOSE_INVALID_TOKEN
                    self._log_refusal("invalid_token", request, f": {err}")
        return SUBPROTOCOL if SUBPROTOCOL in request.protocols else None

    def _log_refusal(self, reason, request, detail=""):
        """Count and log a refused connection: the reason and the peer, never a token."""
        self.factory.metrics.refused(reason)
        self._log.warn("Refused a connection from {peer}: {reason}{detail} (origin {origin})", peer=request.peer,
                       reason=reason, detail=detail, origin=messages.quote(request.headers.get("origin", "none")))

    def authenticate(self, credential):
        """Act as the identity of a token (zbifrost.auth.Identity) from now on, until it expires."""
        self._credential = credential
        expires = None if credential.expires is None else int(credential.expires)
        self.identity = {"authenticated": True, "user": credential.user, "role": credential.role, "expires": expires}
        if self._open:
            self._watch_expiry()

    def _watch_expiry(self):
        """One reactor call per connection closes it when its token expires (plus a JWT's leeway)."""
        self._stop_expiry_watch()
        credential = self._credential
        if credential is not None and credential.expires is not None:
            delay = max(0.0, credential.expires + credential.leeway - time.time())
            self._expiry_call = self.factory.reactor.callLater(delay, self._token_expired)

    def _stop_expiry_watch(self):
        if self._expiry_call is not None and self._expiry_call.active():
            self._expiry_call.cancel()
        self._expiry_call = None

    def _token_expired(self):
        self._expiry_call = None
        self._log.info("Closing the connection of {peer}: its token expired", peer=self.peer)
        self.close(*CLOSE_TOKEN_EXPIRED)

    def onOpen(self):
        self.factory.handshakes.end(self.transport)
        try:
            for name in _HANDSHAKE_LEFTOVERS:
                setattr(self, name, None)
            if self._refusal is not None:
                self.factory.refused_closing.add(self)  # it still holds a socket: max_connections counts it
                self.closeHandshakeTimeout = CLOSE_ANSWER_TIMEOUT
                self.close(*self._refusal)
                return
            server = self.factory
            self.session = Session(server.zvafile, server.zblock)
            self.in_flight = 0  # dispatches not yet answered
            self.server = server
            self._limiter = RateLimiter(server.config.rate, server.config.burst) if server.config.rate else None
            self._watch_outbound()
            self._writes_at_once = isinstance(self.transport, tcp.Connection)  # not TLS, not a test's
            self._open = True
            self._watch_expiry()
            self.client_id = server.register(self)
            self.send_frame(messages.event_frame("connection_info", data=connection_info(self)))
        except Exception:
            self._log.failure("Unexpected error while opening a connection")
            self.close(*CLOSE_INTERNAL)

    def _watch_outbound(self):
        """Become the transport's producer so that a full send buffer is reported to us.

        Under twisted.web the HTTP channel that handed us the socket is still registered as
        its producer; it is replaced here.
        """
        transport = self.transport
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.registerProducer(_OutboundWatch(self), True)

    # -- the hot path ----------------------------------------------------------------------

    receive_fast_path = True  # False: every frame takes Autobahn's general path (the tests compare both)

    def dataReceived(self, data):
        """Deliver the complete, masked, unfragmented text and binary frames at the head of the
        received bytes straight to `onMessage`; hand anything else to Autobahn with its state
        intact (control frames, fragments, incomplete frames, reserved bits, unmasked frames,
        oversized or non-minimal lengths, invalid UTF-8, and every state but open).

        Autobahn's own dataReceived builds its debug-log arguments for every read even when
        debug logging is off: it runs only when it is on (txaio then binds `log.debug` to a
        real method), and then every frame takes Autobahn's path, so its debug log is whole.
        """
        if self.log.debug is not _txaio_disabled_level:
            super().dataReceived(data)
            return
        if (self.receive_fast_path and self.state == self.STATE_OPEN and self.current_frame is None
                and not self.inside_message):
            if self.data:
                data, self.data = self.data + data, b""
            data = self._receive_whole_frames(data)
            if not data:
                return
        self._dataReceived(data)

    def _receive_whole_frames(self, data):
        """Autobahn's processData for the common frame, with the same rules (size limit,
        UTF-8 validation, auto-ping restart on traffic) and the same outcome; returns the bytes
        from the first frame it leaves to Autobahn."""
        end = len(data)
        start = 0
        while end - start >= 6 and self.state == self.STATE_OPEN and not self.failedByMe:
            opcode_byte = data[start]
            length = data[start + 1] ^ 0x80  # the mask bit must be set
            if opcode_byte not in (0x81, 0x82) or length > 127:
                break  # a fragment, control frame, reserved bit or opcode, or an unmasked frame
            header = start + 2
            if length == 126:
                length = int.from_bytes(data[header:header + 2], "big")
                header += 2
                if length < 126:
                    break  # not the minimal length encoding: Autobahn fails the connection
            elif length == 127:
                length = int.from_bytes(data[header:header + 8], "big")
                header += 8
                if length < 65536 or length >= 1 << 63:
                    break
            limit = self.maxMessagePayloadSize
            if 0 < limit < length or 0 < self.maxFramePayloadSize < length:
                break  # too big: Autobahn closes with 1009
            payload_start = header + 4
            frame_end = payload_start + length
            if frame_end > end:
                break  # incomplete
            payload = _unmask(data[header:payload_start], data[payload_start:frame_end], length)
            is_binary = opcode_byte == 0x82
            if not is_binary and self.utf8validateIncoming:
                validator = self.utf8validator
                validator.reset()
                valid, complete, _, _ = validator.validate(payload)
                if not (valid and complete):
                    break  # Autobahn closes with 1007 and says where
            start = frame_end
            if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                self._cancelAutoPingTimeoutCall()  # any traffic answers a pending ping
            self.onMessage(payload, is_binary)  # one frame: max_fragments cannot be reached
        return data[start:] if start else data

    def onMessageFrameBegin(self, length):
        """Autobahn's, with a cap on the fragments of one message (`max_fragments`): each
        completed fragment is kept in `message_data`, even an empty one."""
        if len(self.message_data) >= self.factory.config.max_fragments and not self.failedByMe:
            self._fail_connection(*CLOSE_TOO_MANY_FRAGMENTS)
        super().onMessageFrameBegin(length)

    def onMessage(self, payload, isBinary):
        if not self._open:
            return  # refused (auth) or already closing: nothing it sends is processed
        server = self.factory
        server.metrics.messages_in += 1
        verdict = self._limiter.check() if self._limiter is not None else 0
        if verdict == ABUSIVE:
            self.close(*CLOSE_RATE)
            return
        req_id = None
        try:
            message = messages.parse(payload)
            req_id = messages.request_id(message)
            messages.check_depth(message, payload)
            if verdict == LIMITED:
                raise RequestError(RATE_LIMITED, "Too many messages: slow down")
            handler = HANDLERS.get(message["event"])
            if handler is None:
                raise RequestError(UNKNOWN_EVENT, f"Unknown event: {messages.quote(message['event'])}")
            result = handler(self, message, req_id)
        except Exception as err:
            self._send_error(err, req_id)
            return
        if type(result) is _Deferred:
            self._track(result, req_id)
        elif result is not messages.NO_REPLY:
            self._send_result(result, req_id)

    def _send_result(self, result, req_id):
        try:
            frame = messages.result_frame(result, req_id)
        except TypeError as err:  # a plugin returned something JSON cannot hold
            self._send_error(err, req_id)
            return
        self.send_frame(frame)

    def _send_error(self, err, req_id):
        error = self._error_for(err)
        self.factory.metrics.error(error.code)
        self.send_frame(messages.error_frame(error, req_id))

    def _error_for(self, err):
        """The one place where a failure becomes an error reply."""
        if isinstance(err, Failure):
            failure, err = err, err.value
        else:
            failure = Failure(err)
        if isinstance(err, RequestError):
            return err
        if isinstance(err, (defer.TimeoutError, defer.CancelledError)):
            return RequestError(TIMEOUT, "The command did not finish within its timeout")
        error_id = uuid.uuid4().hex[:12]
        self._log.failure("Command failed (error id {error_id}, client {client_id})", failure,
                          level=LogLevel.error, error_id=error_id, client_id=self.client_id)
        return RequestError(COMMAND_FAILED, f"The command failed (error id {error_id})")

    def _track(self, deferred, req_id):
        """Reply when an asynchronous result arrives, if this connection is still open."""
        self.in_flight += 1
        started = time.perf_counter()

        def done(outcome):
            self.in_flight -= 1
            self.factory.metrics.observe_command(time.perf_counter() - started)
            if self._open:
                if isinstance(outcome, Failure):
                    self._send_error(outcome, req_id)
                elif outcome is not messages.NO_REPLY:  # the handler has replied itself
                    self._send_result(outcome, req_id)
                if self._shutting_down and not self.in_flight:
                    self.close(*CLOSE_SHUTDOWN)
            elif isinstance(outcome, Failure) and not outcome.check(defer.CancelledError, defer.TimeoutError):
                self._error_for(outcome)  # the asker is gone; still log the failure with an id

        deferred.addBoth(done)

    # -- sending ---------------------------------------------------------------------------

    def onMessageEnd(self):
        """Autobahn's, minus its per-message `fire("message")` event that nothing here listens
        to (2 us of every request on the benchmark)."""
        if not self.failedByMe:
            self.onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None

    def send_frame(self, frame):
        """Send one encoded frame to this client now; False when it is closed or was cut off."""
        return self._send(frame, False)

    def deliver(self, frame):
        """Send one frame of a channel fan-out (a publication, a join, a leave) from the end of
        this reactor turn on, in one send with this connection's other deliveries made until
        then (TurnBatches); False when it is closed or was cut off."""
        return self._send(frame, True)

    def _send(self, frame, batched):
        if not self._open or self.state != self.STATE_OPEN:
            return False  # no data frame may follow a close frame, whoever sent it
        if self._backlog is not None:
            self._backlog += len(frame)
            if self._backlog > self.factory.config.max_outbound_buffer:
                self._close_slow_consumer()
                return False
        if self._perMessageCompress is not None and len(frame) <= self.maxMessagePayloadSize:
            self.sendMessage(frame, False)  # Autobahn compresses it (and never batches: no _batch)
        elif self._batch is not None:
            self._batch.append(frame)  # behind the batch, in order
        elif batched:
            self._batch = [frame]
            self.factory.turn_batches.add(self)
        else:
            self._write(text_frame(frame))
        self.factory.metrics.messages_out += 1
        return True

    def send_batch(self):
        """Write the frames batched this turn (nothing once a close frame has been sent)."""
        batch, self._batch = self._batch, None
        if batch and self.state == self.STATE_OPEN:
            self._write(self.factory.turn_batches.encoded(batch[0]) if len(batch) == 1
                        else b"".join(map(text_frame, batch)))

    def _write(self, data):
        """Write encoded frames. Autobahn's sendMessage frames and writes as _send does, with
        per-call assertions, statistics and debug-log arguments (3 us a reply on the benchmark),
        and refuses replies larger than the *incoming* limit max_message_size, which is meant
        for clients' messages only."""
        if self.send_queue:  # Autobahn has frames waiting (e.g. a ping): keep the order
            self.sendData(data)
        elif self._writes_at_once:
            self._write_now(data)
        else:
            self.transport.write(data)

    def _write_now(self, frame):
        """Send what the socket takes now, as asyncio's transports do, when nothing is queued
        before it; Twisted queues the rest. Its own write always waits for the next reactor
        turn: an epoll_ctl each way and one more event per reply (4 us of 28 on the benchmark)."""
        transport = self.transport
        sent = 0
        # the conditions under which Twisted's own write would send at its next turn (an aborted
        # connection sends nothing more, though it is still `connected` until that turn)
        if (not transport._tempDataLen and len(transport.dataBuffer) == transport.offset and transport.connected
                and not transport.disconnecting and not transport._writeDisconnected and not transport._aborting):
            try:  # Twisted's writeSomeData, without its slicing and EINTR loop (Python retries EINTR)
                sent = transport.socket.send(frame)
            except OSError:
                sent = 0  # EAGAIN: Twisted sends it when it can; else the connection is lost, as Twisted finds out
        if sent < len(frame):
            transport.write(frame[sent:] if sent else frame)

    def _buffer_full(self):
        if self._backlog is None:
            self._backlog = 0
            self.transport.pauseProducing()  # read nothing more from a client that reads nothing

    def _buffer_drained(self):
        if self._backlog is not None:
            self._backlog = None
            if self._open:
                self.transport.resumeProducing()

    # -- closing ---------------------------------------------------------------------------

    def close(self, code, reason):
        """Send a close frame with any code (Autobahn's sendClose refuses 1001/1008/1011/1013)."""
        self._open = False
        if self.state == self.STATE_OPEN:
            if self._batch:
                self.send_batch()  # the close frame comes last
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8"), isReply=False)

    def _close_slow_consumer(self):
        """Queue the 1013 close frame behind the data already queued and give the client time
        to read through to it (PROTOCOL.md section 7); then Autobahn drops the TCP link."""
        self._log.warn("Closing slow consumer {client_id} ({peer})", client_id=self.client_id, peer=self.peer)
        self.closeHandshakeTimeout = CLOSE_ANSWER_TIMEOUT
        self.close(*CLOSE_SLOW)
        self.transport.resumeProducing()  # to read its close reply; nothing else it sends is processed

    def begin_shutdown(self, frame):
        """Tell the client the server is stopping; close 1001 once its commands have replied."""
        self.send_frame(frame)
        self._shutting_down = True
        if not self.in_flight:
            self.close(*CLOSE_SHUTDOWN)

    def connectionLost(self, reason=connectionDone):
        self.factory.handshakes.end(self.transport)  # a connection lost before it opened
        self.factory.refused_closing.discard(self)
        super().connectionLost(reason)
        # Autobahn resolves is_closed with the protocol itself: a reference cycle that would
        # keep a closed connection for the collector's full passes (see _WebSocketOnly.render)
        self.is_closed = None

    def onClose(self, wasClean, code, reason):
        self._open = False
        self._stop_expiry_watch()
        if self.session is None:
            return
        server = self.factory
        try:
            if self.subscriptions:
                server.channels.unsubscribe_all(self, self.subscriptions)
            server.thread_pool.drop(self)
            if self.pending_inputs:
                # a cancelled input request removes itself from pending_inputs: iterate over a copy
                for waiting in list(self.pending_inputs.values()):
                    if not waiting.called:
                        waiting.cancel()
        finally:
            server.unregister(self)
