"""Frames zbifrost writes itself, and the batches channel deliveries wait in until they are sent.

Server frames are unmasked and unfragmented (RFC 6455 5.2); `TurnBatches` sends each
connection's deliveries of a reactor turn in one send.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from .protocol import WireProtocol


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame (RFC 6455 5.2) carrying `payload`."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


# Batches sent per reactor turn (see bench/ results for the figures): between two such turns the
# reactor reads again, so that a publication made meanwhile joins the batches not yet sent
# instead of waiting for all of them, and requests are not held up by a large fan-out.
BATCHES_PER_TURN = 50


class TurnBatches:
    """The connections holding channel deliveries, in the order they got their first one.

    A connection's deliveries wait in its batch, and each batch goes out as one send, from the
    end of the turn on, BATCHES_PER_TURN batches a turn. Deliveries made before a batch is sent
    join it: when publications come faster than the fan-out goes, a subscriber gets several in
    one send instead of one send each. The per-send cost (mostly the kernel's TCP path) is what
    limits fan-out, so a server behind catches up instead of falling further behind.
    """

    def __init__(self, reactor: IReactorTime) -> None:
        self.reactor = reactor
        self._waiting: list[WireProtocol] = []
        self._call: IDelayedCall | None = None  # the reactor call that sends the next batches
        self._payload: bytes | None = None  # the last payload encoded alone, and its frame
        self._frame = b""

    def encoded(self, payload: bytes) -> bytes:
        """The frame of `payload`, encoded once for every subscriber that gets it alone."""
        if payload is not self._payload:
            self._payload, self._frame = payload, text_frame(payload)
        return self._frame

    def add(self, conn: WireProtocol) -> None:
        self._waiting.append(conn)
        if self._call is None:
            self._call = self.reactor.callLater(0, self._send)

    def _send(self) -> None:
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
