"""Closed-loop WebSocket load generator for zbifrost and the echo baseline.

N clients (default 50) each open a WebSocket to 127.0.0.1, read the server's first frame
(zbifrost's `connection_info`; the echo baseline sends an equivalent one), then send
`{"event":"dispatch","zKey":"^Ping","_requestId":<n>}` and wait for the reply carrying that
`_requestId` before sending the next. After a warm-up, requests completing within the
measured window are counted and timed. Every reply is checked to be exactly
`{"result":{"message":"Pong!"},"_requestId":<n>}`; anything else, a closed connection or a
reply slower than --timeout is an error. The run stops by itself after warm-up + duration
(or earlier, at --max-requests) and prints one JSON object on stdout.

For speed the client is hand-written on asyncio Protocols (no tasks or futures per request)
with the smallest RFC 6455 client side: HTTP/1.1 upgrade with the Sec-WebSocket-Accept
check, masked text frames, unmasked server frames of any length, continuation frames,
ping -> pong, close. Each outgoing frame gets its own 4-byte mask, taken once from a pool
of os.urandom bytes (RFC 6455 section 5.3: unpredictable, never reused).
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import resource
import sys
import time

import orjson

PONG = {"message": "Pong!"}
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MASK_POOL_BYTES = 4 * 65536


class _Masks:
    """Fresh random masking keys, 4 bytes each, drawn from a refilled os.urandom pool."""

    def __init__(self):
        self._pool, self._at = os.urandom(_MASK_POOL_BYTES), 0

    def take(self):
        if self._at == _MASK_POOL_BYTES:
            self._pool, self._at = os.urandom(_MASK_POOL_BYTES), 0
        key = self._pool[self._at:self._at + 4]
        self._at += 4
        return key


def text_frame(payload, key):
    """A masked, final text frame carrying `payload` (client -> server)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, 0x80 | n))
    elif n < 65536:
        header = bytes((0x81, 0xFE)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0xFF)) + n.to_bytes(8, "big")
    keystream = int.from_bytes((key * (n // 4 + 1))[:n], "little")
    masked = (int.from_bytes(payload, "little") ^ keystream).to_bytes(n, "little")
    return header + key + masked


def control_frame(opcode, payload, key):
    return bytes((0x80 | opcode, 0x80 | len(payload))) + key + bytes(
        b ^ key[i % 4] for i, b in enumerate(payload))


class Run:
    """Shared state of one run: the phases, the counters and the recorded latencies."""

    def __init__(self, args):
        self.args = args
        self.masks = _Masks()
        self.measuring = False  # replies are counted only while True
        self.stopping = False  # no new requests once True
        self.window_start = self.window_end = None
        self.latencies = []  # seconds, requests sent and answered inside the window
        self.completed = 0  # all verified replies, warm-up included
        self.errors = {}  # kind -> count
        self.connected = 0
        self.open_clients = set()
        self.all_closed = None  # a Future, set when the last client is gone

    def error(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def closed(self, client):
        self.open_clients.discard(client)
        if not self.open_clients and self.all_closed is not None and not self.all_closed.done():
            self.all_closed.set_result(None)


class Client(asyncio.Protocol):
    def __init__(self, run, host, port):
        self.run = run
        self.host_header = f"{host}:{port}".encode()
        self.buffer = b""
        self.upgraded = False
        self.greeted = False
        self.fragments = None  # payload pieces of a message in progress
        self.request_id = 0
        self.sent_at = None  # perf_counter of the request in flight, None when idle
        self.failed = False
        self.transport = None

    # -- opening -----------------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.run.open_clients.add(self)
        key = base64.b64encode(os.urandom(16))
        self.accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        transport.write(b"GET / HTTP/1.1\r\nHost: " + self.host_header + b"\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
                        b"Sec-WebSocket-Version: 13\r\n\r\n")

    def _handshake(self):
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
        lines = head.split(b"\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        if not lines[0].startswith(b"HTTP/1.1 101") or headers.get(b"sec-websocket-accept") != self.accept:
            self.fail("handshake")
            return False
        self.upgraded = True
        self.run.connected += 1
        return True

    # -- receiving ---------------------------------------------------------------------------

    def data_received(self, data):
        self.buffer += data
        if not self.upgraded and not self._handshake():
            return
        buf = self.buffer
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            if b1 & 0x80:
                self.fail("masked_server_frame")
                return
            n, at = b1 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, at = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, at = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < at + n:
                break
            payload, buf = buf[at:at + n], buf[at + n:]
            if not self._frame(b0 & 0x80, b0 & 0x0F, payload):
                return
        self.buffer = buf

    def _frame(self, fin, opcode, payload):
        """Handle one frame; False when the connection is finished."""
        if opcode == 0x9:  # ping
            self.transport.write(control_frame(0xA, payload, self.run.masks.take()))
            return True
        if opcode == 0xA:  # unsolicited pong
            return True
        if opcode == 0x8:
            self.fail("server_closed")
            return False
        if opcode == 0x0:
            if self.fragments is None:
                self.fail("protocol")
                return False
            self.fragments.append(payload)
        elif self.fragments is not None:
            self.fail("protocol")
            return False
        elif not fin:
            self.fragments = [payload]
        if not fin:
            return True
        if self.fragments is not None:
            payload, self.fragments = b"".join(self.fragments), None
        return self._message(payload)

    def _message(self, payload):
        run = self.run
        if not self.greeted:
            try:
                first = orjson.loads(payload)
            except orjson.JSONDecodeError:
                first = None
            if type(first) is not dict or first.get("event") != "connection_info":
                self.fail("bad_first_frame")
                return False
            self.greeted = True
            self._send()
            return True
        now = time.perf_counter()
        try:
            reply = orjson.loads(payload)
        except orjson.JSONDecodeError:
            reply = None
        if (type(reply) is not dict or len(reply) != 2 or reply.get("result") != PONG
                or type(reply.get("_requestId")) is not int or reply["_requestId"] != self.request_id):
            self.fail("bad_reply")
            return False
        run.completed += 1
        if run.measuring and self.sent_at >= run.window_start:
            run.latencies.append(now - self.sent_at)
        self.sent_at = None
        if run.stopping or run.completed >= run.args.max_requests:
            self.close()
            return False
        self._send()
        return True

    # -- sending and closing -----------------------------------------------------------------

    def _send(self):
        self.request_id += 1
        payload = b'{"event":"dispatch","zKey":"^Ping","_requestId":%d}' % self.request_id
        self.sent_at = time.perf_counter()
        self.transport.write(text_frame(payload, self.run.masks.take()))

    def close(self):
        """A normal close: close frame (1000), then the TCP connection."""
        if not self.transport.is_closing():
            self.transport.write(control_frame(0x8, (1000).to_bytes(2, "big"), self.run.masks.take()))
            self.transport.close()

    def fail(self, kind):
        self.failed = True
        self.run.error(kind)
        self.transport.abort()

    def connection_lost(self, exc):
        if not self.failed and self.sent_at is not None:
            self.run.error("connection_lost")
        self.run.closed(self)

    def overdue(self, now, timeout):
        return self.sent_at is not None and now - self.sent_at > timeout


def percentile(sorted_values, fraction):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def main(args):
    loop = asyncio.get_running_loop()
    run = Run(args)
    run.all_closed = loop.create_future()
    clients = []
    connects = [loop.create_connection(lambda: Client(run, args.host, args.port), args.host, args.port)
                for _ in range(args.clients)]
    for result in await asyncio.gather(*connects, return_exceptions=True):
        if isinstance(result, BaseException):
            run.error("connect")
        else:
            clients.append(result[1])

    async def watchdog():  # replies slower than --timeout are errors; their connection is dropped
        while True:
            await asyncio.sleep(0.25)
            now = time.perf_counter()
            for client in clients:
                if client.overdue(now, args.timeout):
                    client.fail("timeout")

    watching = loop.create_task(watchdog())
    await asyncio.sleep(args.warmup)
    completed_before, cpu_before = run.completed, time.process_time()
    run.window_start, run.measuring = time.perf_counter(), True
    await asyncio.sleep(args.duration)
    run.measuring, run.stopping = False, True
    run.window_end = time.perf_counter()
    cpu = time.process_time() - cpu_before
    completed = run.completed - completed_before
    for client in clients:
        if not client.greeted and not client.failed:
            run.error("no_first_frame")
        if client.sent_at is None:
            client.close()
    if run.open_clients:
        try:
            await asyncio.wait_for(asyncio.shield(run.all_closed), args.timeout)
        except TimeoutError:
            for client in list(run.open_clients):
                client.transport.abort()
    watching.cancel()

    window = run.window_end - run.window_start
    latencies = sorted(run.latencies)

    def ms(seconds):
        return None if seconds is None else round(seconds * 1000, 3)

    return {
        "clients": args.clients,
        "connected": run.connected,
        "duration_s": round(window, 3),
        "requests": completed,
        "all_replies": run.completed,  # warm-up and wind-down included
        "rps": round(completed / window, 1),
        "p50_ms": ms(percentile(latencies, 0.50)),
        "p90_ms": ms(percentile(latencies, 0.90)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "max_ms": ms(latencies[-1] if latencies else None),
        "errors": sum(run.errors.values()),
        "error_kinds": run.errors,
        "loadgen_cpu": round(cpu / window, 3),  # fraction of one core used by this process
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1"], help="loopback only")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds a reply may take")
    parser.add_argument("--max-requests", type=int, default=10_000_000, help="stop after this many replies")
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 10000 and 0 <= args.warmup <= 600 and 0 < args.duration <= 600):
        parser.error("--clients 1..10000, --warmup 0..600, --duration 0..600")
    return args


if __name__ == "__main__":
    result = asyncio.run(main(parse_args()))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    sys.exit(1 if result["errors"] or result["connected"] == 0 else 0)
