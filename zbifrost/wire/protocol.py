"""WireProtocol: one WebSocket connection's bytes and frames, from the upgrade to the close.

It owns the Autobahn side of a connection: the upgrade (handing the checks to its session),
the receive path (Autobahn's, or zbifrost.compat's fast path when the fence allows it), the cap
on fragments, the send path (frames written directly, channel deliveries batched per reactor
turn by `TurnBatches`), the outbound backlog and its backpressure (a slow consumer is closed
with 1013), and closing with any code. It knows nothing of users: once open, every message
goes to the session (zbifrost.session), whose `receive` is installed as `onMessage` so that a
frame reaches its handler without a call in between.

Autobahn's own logger is `self.log`, so ours is `_log`. Autobahn swallows exceptions raised
in `onConnect`/`onOpen`, so both guard themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import compat
from ..interfaces import IConnectionTransport
from ..session import CLOSE_INTERNAL, Session
from .frames import text_frame

if TYPE_CHECKING:
    from autobahn.websocket.types import ConnectionRequest

SUBPROTOCOL = "zbifrost.v1"

CLOSE_SLOW = (1013, "Slow consumer")
CLOSE_TOO_MANY_FRAGMENTS = (1009, "Too many fragments")

# Seconds a client has to answer a close frame it must see before its TCP connection is
# dropped (other closes wait the factory's 1 s): a slow consumer reads through its queued data
# to the 1013 (docs/protocol.md section 7), and a refused client answers the 1008. A browser answers
# only once the page has handled the close, and a page is often busy right after opening a
# socket; if the connection ends first, Chromium reports 1006 without our code and reason, and
# bifrost.js retries a refused token instead of rejecting with 1008.
CLOSE_ANSWER_TIMEOUT = 10
# Seconds past the connect proxy's timeout that an upgrade waiting for it may take to be
# answered (the 101, or the 1011 after an unavailable application) before the handshake deadline
PROXY_ANSWER_MARGIN = 1.0


@implementer(IPushProducer)
class _OutboundWatch:
    """The transport's producer: tells the protocol when its send buffer is full or drained."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: WireProtocol) -> None:
        self.protocol = protocol

    def pauseProducing(self) -> None:
        self.protocol.buffer_full()

    def resumeProducing(self) -> None:
        self.protocol.buffer_drained()

    def stopProducing(self) -> None:
        pass


class WireProtocol(WebSocketServerProtocol):
    _log = Logger()

    transport: IConnectionTransport
    # Autobahn's protocol options, from the factory
    maxMessagePayloadSize: int
    maxFramePayloadSize: int
    utf8validateIncoming: bool
    session: Session | None = None  # from the upgrade request on, until the connection is lost
    _open = False  # data frames may be sent (and, through the session, received)
    _backlog: int | None = None  # bytes queued while the transport's buffer is full; None when it is not
    _writes_at_once = False  # a plain TCP transport: replies go out in the turn they are made
    _compressed = False  # permessage-deflate was negotiated: Autobahn frames (and compresses) replies
    _batch: list[bytes] | None = None  # channel payloads waiting to go out in one send (TurnBatches)
    _fragments = 0  # fragments of the message being received

    # -- opening ---------------------------------------------------------------------------

    # Autobahn takes a Deferred too (txaio.as_future), which its stubs do not say
    def onConnect(self, request: ConnectionRequest) -> str | Deferred[str | None] | None:  # type: ignore[override]
        try:
            self.session = Session(self.factory.hub, self)
            refusal = self.session.admit(request, self.transport.getPeer())
            if refusal is not None:
                raise ConnectionDeny(*refusal)
            self.peer = request.peer = self.session.peer
            subprotocol = SUBPROTOCOL if SUBPROTOCOL in request.protocols else None
            if self.session.asking is None:
                return subprotocol
            return self._after_answer(self.session.asking, subprotocol)
        except ConnectionDeny:
            raise
        except Exception:
            self._log.failure("Unexpected error while checking a WebSocket upgrade")
            raise ConnectionDeny(ConnectionDeny.INTERNAL_SERVER_ERROR, "Internal server error") from None

    def _after_answer(self, asking: Deferred[None], subprotocol: str | None) -> Deferred[str | None]:
        """Finish the upgrade once the connect proxy has answered (Autobahn waits for a Deferred
        from onConnect); meanwhile nothing more is read from the client, and the handshake deadline
        waits for the proxy's own timeout, so that a slow application means a 1011, not a drop."""
        self.transport.pauseProducing()
        hub = self.factory.hub
        assert hub.application is not None  # only the connect proxy makes a session ask
        hub.handshakes.allow(self.transport, hub.application.settings.timeout + PROXY_ANSWER_MARGIN)

        def answered(_: None) -> str | None:
            if self.session is None:  # the connection was lost meanwhile
                raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, "Gone")
            self.transport.resumeProducing()
            return subprotocol

        def failed(failure: Failure) -> None:
            self._log.failure("Unexpected error while asking the connect proxy", failure)
            raise ConnectionDeny(ConnectionDeny.INTERNAL_SERVER_ERROR, "Internal server error")

        return asking.addCallbacks(answered, failed)

    def onOpen(self) -> None:
        hub = self.factory.hub
        hub.handshakes.end(self.transport)
        try:
            compat.drop_handshake_leftovers(self)
            session = self.session
            assert session is not None  # onConnect made it
            if session.refusal is not None:
                hub.refused_closing.add(self)  # it still holds a socket: max_connections counts it
                self.closeHandshakeTimeout = CLOSE_ANSWER_TIMEOUT
                self.close(*session.refusal)
                return
            self._watch_outbound()
            self._writes_at_once = compat.writes_at_once(self.transport)
            self._compressed = bool(self.websocket_extensions_in_use)
            self._open = True
            # the hot path: frame -> session -> handler, the instance's onMessage until the close
            self.onMessage = session.receive  # type: ignore[method-assign]
            session.opened()
        except Exception:
            self._log.failure("Unexpected error while opening a connection")
            self.close(*CLOSE_INTERNAL)

    def _watch_outbound(self) -> None:
        """Become the transport's producer so that a full send buffer is reported to us.

        Under twisted.web the HTTP channel that handed us the socket is still registered as
        its producer; it is replaced here.
        """
        transport = self.transport
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()
        transport.registerProducer(_OutboundWatch(self), True)

    # -- receiving -------------------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Not open (refused, or closing): nothing a client sends is processed."""

    def onMessageBegin(self, isBinary: bool) -> None:
        self._fragments = 0
        super().onMessageBegin(isBinary)

    def onMessageFrameBegin(self, length: int) -> None:
        """Autobahn's, with a cap on the fragments of one message (`max_fragments`)."""
        if self._fragments >= self.factory.config.max_fragments:
            compat.fail_connection(self, *CLOSE_TOO_MANY_FRAGMENTS)
        self._fragments += 1
        super().onMessageFrameBegin(length)

    # -- sending ---------------------------------------------------------------------------

    def can_send(self) -> bool:
        """Whether data frames may still be sent."""
        return self._open

    def send_frame(self, frame: bytes) -> bool:
        """Send one encoded frame to this client now; False when it is closed or was cut off."""
        return self._send_or_batch(frame, False)

    def deliver(self, frame: bytes) -> bool:
        """Send one frame of a channel fan-out (a publication, a join, a leave) from the end of
        this reactor turn on, in one send with this connection's other deliveries made until
        then (TurnBatches); False when it is closed or was cut off."""
        return self._send_or_batch(frame, True)

    def _send_or_batch(self, frame: bytes, batched: bool) -> bool:
        if not self._open or self.state != self.STATE_OPEN:
            return False  # no data frame may follow a close frame, whoever sent it
        if self._backlog is not None:
            self._backlog += len(frame)
            if self._backlog > self.factory.config.max_outbound_buffer:
                self._close_slow_consumer()
                return False
        if self._compressed and len(frame) <= self.maxMessagePayloadSize:
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

    def send_batch(self) -> None:
        """Write the frames batched this turn (nothing once a close frame has been sent)."""
        batch, self._batch = self._batch, None
        if batch and self.state == self.STATE_OPEN:
            self._write(self.factory.turn_batches.encoded(batch[0]) if len(batch) == 1
                        else b"".join(map(text_frame, batch)))

    def _write(self, data: bytes) -> None:
        """Write encoded frames through Autobahn, after anything it has queued (compat.FastPath
        replaces this with a direct write)."""
        self.sendData(data)

    def buffer_full(self) -> None:
        if self._backlog is None:
            self._backlog = 0
            self.transport.pauseProducing()  # read nothing more from a client that reads nothing

    def buffer_drained(self) -> None:
        if self._backlog is not None:
            self._backlog = None
            if self._open:
                self.transport.resumeProducing()

    # -- closing ---------------------------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """Send a close frame with any code (Autobahn's sendClose refuses 1001/1008/1011/1013)."""
        self._open = False
        vars(self).pop("onMessage", None)  # back to the class's: nothing more is processed
        if self.state == self.STATE_OPEN:
            if self._batch:
                self.send_batch()  # the close frame comes last
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8"), isReply=False)

    def _close_slow_consumer(self) -> None:
        """Queue the 1013 close frame behind the data already queued and give the client time
        to read through to it (docs/protocol.md section 7); then Autobahn drops the TCP link."""
        client_id = self.session.client_id if self.session is not None else None
        self._log.warn("Closing slow consumer {client_id} ({peer})", client_id=client_id, peer=self.peer)
        self.closeHandshakeTimeout = CLOSE_ANSWER_TIMEOUT
        self.close(*CLOSE_SLOW)
        self.transport.resumeProducing()  # to read its close reply; nothing else it sends is processed

    def abort(self) -> None:
        """Drop the TCP connection now, without a close handshake."""
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        hub = self.factory.hub
        hub.handshakes.end(self.transport)  # a connection lost before it opened
        hub.refused_closing.discard(self)
        super().connectionLost(reason)
        # Autobahn resolves is_closed with the protocol itself, and the session refers to its
        # connection: reference cycles that would keep a closed connection for the collector's
        # full passes (see _WebSocketOnly.render)
        self.is_closed = None
        self.session = None

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._open = False
        vars(self).pop("onMessage", None)
        if self.session is not None:
            self.session.closed()
