"""The fence: the one module that reads other libraries' undocumented internals.

zbifrost's receive fast path and direct send read the internals of Autobahn (its frame parser's
state, `_dataReceived`, `_fail_connection`, `_cancelAutoPingTimeoutCall`, `message_data`,
`CONFIG_ATTRS`, `_wskey`), of Twisted's TCP transport (`_tempDataLen`, `dataBuffer`, `offset`,
`_writeDisconnected`, `_aborting`, `socket`), of txaio (`txaio.tx._no_op`, its disabled log
level), of twistd (`UnixAppLogger._getLogObserver`, the log observer it builds without
`--logger`) and of Twisted's HTTP client pool (`HTTPConnectionPool._factory`, to quieten it).
They are used only on the releases they were tested with (`TESTED`); on any other release, or
with ZBIFROST_INTERNALS=off in the environment, `INTERNALS` is False, `report` logs one line at
start, and zbifrost works through the libraries' public API only: every frame takes Autobahn's
own path, replies go out through `sendData`, nothing is trimmed from a connection's memory,
twistd's log observer is built from its options with twisted.logger's pieces, and the HTTP
client logs a line as each connection to the application starts and stops.
tests/test_fence.py checks, on the installed releases, that each internal read here exists and
behaves as assumed.

The Twisted client (zbifrost.client.twisted) reads one more undocumented thing, on any release:
the HTTP status of a refused upgrade, in the text of Autobahn's close reason (`refused_status`).

`FastPath` is mixed into the wire protocol (zbifrost.wire.protocol) only when INTERNALS is on.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import autobahn
import txaio
from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet import tcp
from twisted.internet.interfaces import IReactorFromThreads, ITransport
from twisted.internet.protocol import Factory
from twisted.logger import ILogObserver, LegacyLogObserverWrapper, Logger, textFileLogObserver
from twisted.python.logfile import LogFile
from twisted.web.client import HTTPConnectionPool

import twisted

if TYPE_CHECKING:
    from autobahn.websocket.protocol import WebSocketProtocol, WebSocketServerFactory, WebSocketServerProtocol

    from .wire.protocol import WireProtocol

    _FastPathBase = WireProtocol  # FastPath is only ever mixed into it
else:
    _FastPathBase = object

# (library, its version, the release prefix it was tested with); txredisapi is used through
# its public API only (zbifrost.channels.redis)
TESTED = (("Twisted", twisted.__version__, "26.10."), ("autobahn", autobahn.__version__, "26.11."),
          ("txaio", txaio.__version__, "26.6."))

SWITCH = "ZBIFROST_INTERNALS"  # "off": public API only, whatever the releases


def untested_releases(tested: tuple[tuple[str, str, str], ...] = TESTED) -> list[str]:
    """The installed releases zbifrost was not tested with, as "name version" strings."""
    return [f"{name} {version}" for name, version, prefix in tested if not f"{version}.".startswith(prefix)]


def _internals_allowed() -> bool:
    if os.environ.get(SWITCH, "").lower() in ("off", "0", "no", "false"):
        return False
    if untested_releases():
        return False
    try:
        from txaio.tx import _no_op  # noqa: F401  (the one name of txaio read here)
    except ImportError:
        return False
    return True


INTERNALS = _internals_allowed()

if INTERNALS:
    from txaio.tx import _no_op as _txaio_disabled_level


def report(log: Logger) -> None:
    """At start: one line when zbifrost runs on public API only."""
    if INTERNALS:
        return
    if os.environ.get(SWITCH, "").lower() in ("off", "0", "no", "false"):
        why = f"{SWITCH} is off"
    else:
        why = f"untested releases: {', '.join(untested_releases()) or 'txaio without tx._no_op'}"
    log.warn("Receive fast path and direct send are off ({why}): zbifrost uses the public API of "
             "Twisted and Autobahn only", why=why)


# Autobahn's client reports an upgrade refused with an HTTP status only in the text of its close reason:
# connection was closed uncleanly ("WebSocket connection upgrade failed [403]: Origin not allowed")
_UPGRADE_FAILED = re.compile(r"upgrade failed \[(\d{3})\]")


def refused_status(reason: str) -> int | None:
    """The HTTP status of a refused upgrade, read from the reason of Autobahn's 1006 close, or None.
    Not gated by INTERNALS: if a release words it otherwise, nothing matches and a refused upgrade
    looks like any lost connection (retried, 403 included)."""
    refused = _UPGRADE_FAILED.search(reason)
    return int(refused.group(1)) if refused else None


def writes_at_once(transport: ITransport) -> bool:
    """Whether replies may be sent straight to this transport's socket (`FastPath._write_now`):
    a plain TCP connection, not TLS nor a test's transport."""
    return INTERNALS and isinstance(transport, tcp.Connection)


def class_options(factory: WebSocketServerFactory, protocol_class: type[WebSocketServerProtocol]) -> dict[str, Any]:
    """The protocol options of `factory`, to be class attributes of a per-factory subclass:
    Autobahn copies into each connection's __dict__ only the options its class lacks (their
    size: README, "Memory per idle connection"). Empty on public API only: every connection
    gets its copy."""
    if not INTERNALS:
        return {}
    return {name: getattr(factory, name) for name in protocol_class.CONFIG_ATTRS}


# What Autobahn keeps of the opening handshake (for its test suite): nothing reads it once the
# connection is open (its size: README, "Memory per idle connection").
HANDSHAKE_LEFTOVERS = ("http_request_data", "http_response_data", "http_status_line", "http_headers",
                       "http_request_uri", "http_request_path", "http_request_params", "http_request_host",
                       "websocket_origin", "websocket_protocols", "websocket_extensions", "_wskey")


def drop_handshake_leftovers(protocol: WebSocketProtocol) -> None:
    """Free what Autobahn keeps of an open connection's handshake (kept on public API only)."""
    if INTERNALS:
        for name in HANDSHAKE_LEFTOVERS:
            setattr(protocol, name, None)


def fail_connection(protocol: WireProtocol, code: int, reason: str) -> None:
    """Fail a connection with a close frame (`failByDrop` is off), as Autobahn does for its own
    protocol errors; on public API only, our close frame, and nothing more is read."""
    if INTERNALS:
        if not protocol.failedByMe:
            protocol._fail_connection(code, reason)
    else:
        protocol.close(code, reason)
        protocol.transport.pauseProducing()


def quiet_connection_pool(pool: HTTPConnectionPool) -> None:
    """Keep Twisted's HTTP client from logging "Starting factory" and "Stopping factory" for every
    connection it opens to the application (zbifrost.app_proxy): the pool's factory class is its
    private `_factory`. On public API only those two lines stay."""
    if INTERNALS:
        noisy: type[Factory] = pool._factory

        class QuietFactory(noisy):  # type: ignore[valid-type, misc]
            noisy = False

        pool._factory = QuietFactory


def twistd_log_observer(twistd_options: Mapping[str, Any]) -> ILogObserver:
    """The observer twistd logs to when no `--logger` is given (`--syslog`, `--logfile`, or
    stdout), as a twisted.logger observer: twistd's own, or on public API only the same one
    built from its options."""
    if INTERNALS:
        from twisted.scripts._twistd_unix import UnixAppLogger

        observer = UnixAppLogger(twistd_options)._getLogObserver()
    else:
        observer = _twistd_log_observer_from_options(twistd_options)
    # syslog's is a twisted.python.log observer, which twistd would wrap too
    return observer if ILogObserver.providedBy(observer) else LegacyLogObserverWrapper(observer)


def _twistd_log_observer_from_options(options: Mapping[str, Any]) -> Callable[[dict[str, Any]], None]:
    """What twistd's UnixAppLogger builds, from public pieces: `--syslog` goes to syslog with
    `--prefix`; `--logfile=-`, or no `--logfile` with `-n`, to stdout (a daemon cannot log there);
    else to the `--logfile` (default twistd.log), rotated on SIGUSR1 unless that has a handler."""
    if options.get("syslog"):
        from twisted.python.syslog import SyslogObserver

        return SyslogObserver(options.get("prefix") or "").emit
    filename = options.get("logfile") or ""
    nodaemon = options.get("nodaemon")
    if filename == "-" and not nodaemon:
        sys.exit("Daemons cannot log to stdout, exiting!")
    if filename == "-" or (nodaemon and not filename):
        return textFileLogObserver(sys.stdout)
    log_file = LogFile.fromFullPath(filename or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):
        def rotate(signum: int, frame: object) -> None:
            from twisted.internet import reactor

            cast(IReactorFromThreads, reactor).callFromThread(log_file.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return textFileLogObserver(log_file)


# Up to this many payload bytes, unmasking with Python's big integers is faster than Autobahn's
# NVX masker, whose setup through cffi outweighs a small payload (figures: README, "Benchmark").
SMALL_PAYLOAD = 1024


def unmask(mask: bytes, masked: bytes, length: int) -> bytes:
    """A client frame's payload (RFC 6455 5.3)."""
    if length > SMALL_PAYLOAD:
        return create_xor_masker(mask, length).process(masked)
    key = (mask * ((length >> 2) + 1))[:length]
    return (int.from_bytes(masked, "little") ^ int.from_bytes(key, "little")).to_bytes(length, "little")


class FastPath(_FastPathBase):
    """The receive fast path and the direct send, over Autobahn's and Twisted's internals."""

    receive_fast_path = True  # False: every frame takes Autobahn's general path (the tests compare both)

    def dataReceived(self, data: bytes) -> None:
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

    def _receive_whole_frames(self, data: bytes) -> bytes:
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
            payload = unmask(data[header:payload_start], data[payload_start:frame_end], length)
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

    def onMessageEnd(self) -> None:
        """Autobahn's, minus its per-message `fire("message")` event that nothing here listens
        to (its cost: README, "Benchmark")."""
        if not self.failedByMe:
            self.onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None  # type: ignore[assignment]  # as Autobahn's own onMessageEnd does

    def _write(self, data: bytes) -> None:
        """Write encoded frames. Autobahn's sendMessage frames and writes as the wire's
        `_send_or_batch` does, with per-call assertions, statistics and debug-log arguments
        (their cost: README, "Benchmark"), and refuses replies larger than the *incoming* limit
        max_message_size, which is meant for clients' messages only."""
        if self.send_queue:  # Autobahn has frames waiting (e.g. a ping): keep the order
            self.sendData(data)
        elif self._writes_at_once:
            self._write_now(data)
        else:
            self.transport.write(data)

    def _write_now(self, frame: bytes) -> None:
        """Send what the socket takes now, as asyncio's transports do, when nothing is queued
        before it; Twisted queues the rest. Its own write always waits for the next reactor
        turn: an epoll_ctl each way and one more event per reply (its cost: README, "Benchmark")."""
        transport: tcp.Connection = self.transport  # type: ignore[assignment]  # `writes_at_once` made sure
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
