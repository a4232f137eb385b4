"""The chaos suite's parts (tests/test_chaos.py): zbifrost as real twistd processes, subscribers
and publishers that run in threads and keep going through faults, and the checker of the
delivery guarantee (docs/protocol.md section 6a).

A `Subscriber` records every reply, message and `unsubscribed` event of one channel, and after
any drop (or `insufficient_state`) subscribes again with `since` (as bifrost.js does). A
`WsPublisher` and an `ApiPublisher` publish numbered data and record every acknowledgement
(epoch, offset, data id); a publish that got no acknowledgement (refused, or its connection
dropped first) is sent again with the same `idempotency_key` until it gets one, so that one
that had landed is not published twice. `check` counts per subscriber: acknowledged publications lost,
duplicates, reorderings, gaps not excused by `recovered: false`, and the `recovered: false`
replies.
"""

import contextlib
import json
import os
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from websockets.exceptions import WebSocketException
from websockets.sync.client import connect as ws_connect

from .test_core_twistd import REPO, TWISTD, free_port

CHANNEL = "chaos"
TOKEN = "chaos-admin-token"
QUIET = 0.5  # seconds without a message after the last one owed, in which a duplicate would show


class Zbifrost:
    """`twistd -n zbifrost` on a free port with `args`, its output in `folder`/twistd-<port>.log."""

    def __init__(self, folder, *args, port=None):
        self.port = port or free_port()
        self.folder = str(folder)
        with open(os.path.join(self.folder, f"twistd-{self.port}.log"), "w") as log:
            self.process = subprocess.Popen(
                [*TWISTD, "-n", "--pidfile=", "zbifrost", "--port", str(self.port), *args], cwd=self.folder,
                env=dict(os.environ, PYTHONPATH=REPO, TMPDIR=self.folder), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.wait_for(lambda health: health.get("broker", "up") == "up")

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}/ws"

    def health(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as response:
            return json.loads(response.read())

    def wait_for(self, condition, seconds=20):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"zbifrost exited: see {self.folder}"
            with contextlib.suppress(OSError, ValueError):
                if condition(self.health()):
                    return
            time.sleep(0.1)
        raise AssertionError(f"zbifrost on port {self.port} never got ready")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def write_config(folder, history_size=5000):
    """A config file: an admin token for POST /api/publish and a long history on every channel."""
    from zbifrost.auth import hash_token

    tokens = os.path.join(str(folder), "tokens.yaml")
    with open(tokens, "w") as file:
        file.write(f'tokens:\n  - user: backend\n    role: admin\n    sha256: "{hash_token(TOKEN)}"\n')
    config = os.path.join(str(folder), "zbifrost.yaml")
    with open(config, "w") as file:
        file.write(f"websocket:\n  tokens: {tokens}\n  max_message_size: 1048576\n"
                   f"channels:\n  - pattern: '*'\n    history: {{size: {history_size}, ttl: 300}}\n")
    return config


def cut(connection):
    """End a client's TCP connection at once, without a close frame (RST)."""
    with contextlib.suppress(OSError):
        connection.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.socket.shutdown(socket.SHUT_RDWR)


class _Worker(threading.Thread):
    """A thread that keeps a `websockets` connection to one of `urls` (taken in turn) until stopped."""

    def __init__(self, name, urls, rcvbuf=None):
        super().__init__(name=name, daemon=True)
        self.urls = list(urls)
        self.rcvbuf = rcvbuf
        self.stopping = threading.Event()
        self.connection = None
        self.reconnects = 0
        self.errors = []  # anything unexpected, for the failure message

    def connect(self):
        url = self.urls[self.reconnects % len(self.urls)]
        host, port = url.split("/")[2].split(":")
        sock = socket.socket()
        if self.rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.settimeout(5)
        sock.connect((host, int(port)))
        return ws_connect(url, sock=sock, open_timeout=5, max_size=None, close_timeout=1)

    def run(self):
        while not self.stopping.is_set():
            try:
                with self.connect() as connection:
                    json.loads(connection.recv(timeout=5))  # connection_info
                    self.connection = connection
                    self.session(connection)
            except (OSError, WebSocketException, TimeoutError):
                pass
            self.connection = None
            if not self.stopping.is_set():
                self.reconnects += 1
                time.sleep(0.05)

    def stop(self):
        self.stopping.set()
        self.join(15)
        assert not self.is_alive(), f"{self.name} did not stop"


class Subscriber(_Worker):
    """Records, in order: ("reply", epoch, offset, recovered), ("message", offset, data id),
    ("unsubscribed", reason); subscribes again with `since` after any drop."""

    def __init__(self, name, urls, rcvbuf=None):
        super().__init__(name, urls, rcvbuf)
        self.events = []
        self.epoch = None
        self.offset = None
        self.last_message = time.monotonic()
        self.paused = threading.Event()  # set: stop reading (a slow consumer)
        self.close_codes = []
        self._request = 0

    def subscribe(self, connection):
        self._request += 1
        message = {"event": "subscribe", "channel": CHANNEL, "_requestId": self._request}
        if self.epoch is not None:
            message["since"] = {"epoch": self.epoch, "offset": self.offset}
        connection.send(json.dumps(message))

    def session(self, connection):
        self.subscribe(connection)
        try:
            while not self.stopping.is_set():
                if self.paused.is_set():
                    time.sleep(0.05)
                    continue
                try:
                    frame = json.loads(connection.recv(timeout=0.2))
                except TimeoutError:
                    continue
                self.received(connection, frame)
        finally:
            if connection.close_code is not None:
                self.close_codes.append(connection.close_code)

    def received(self, connection, frame):
        if "_requestId" in frame:
            if "error" in frame:  # broker_unavailable: not subscribed, ask again
                time.sleep(0.2)
                self.subscribe(connection)
                return
            result = frame["result"]
            if result.get("recovered") is not True:  # else the missed messages follow, with their offsets
                self.offset = result["offset"]
            self.epoch = result["epoch"]
            self.events.append(("reply", result["epoch"], result["offset"], result.get("recovered")))
        elif frame.get("event") == "message":
            self.offset = frame["offset"]
            self.events.append(("message", frame["offset"], tuple(frame["data"]["id"])))
            self.last_message = time.monotonic()
        elif frame.get("event") == "unsubscribed":
            self.events.append(("unsubscribed", frame.get("reason")))
            if frame.get("reason") == "insufficient_state":
                self.subscribe(connection)


def _data(name, number, padding):
    return {"id": [name, number], "pad": "x" * padding}


class _Publisher(_Worker):
    """Numbers its publishes; `acks` holds (epoch, offset, id) of every acknowledged one,
    `refused` counts the broker_unavailable answers, `retries` the publishes sent again."""

    def __init__(self, name, urls, rate):
        super().__init__(name, urls)
        self.interval = 1 / rate
        self.acks = []
        self.refused = 0
        self.retries = 0
        self.number = 0
        self.pending = None  # the number sent and not acknowledged yet

    def next_publish(self):
        """(number, idempotency key) of the publish to send: the pending one again, or a new one."""
        if self.pending is None:
            self.number += 1
            self.pending = self.number
        else:
            self.retries += 1
        return self.pending, f"{self.name}-{self.pending}"

    def acknowledged(self, result):
        self.acks.append((result["epoch"], result["offset"], (self.name, self.pending)))
        self.pending = None


class WsPublisher(_Publisher):
    """Publishes {"id": [name, n]} through a WebSocket `rate` times a second."""

    def __init__(self, name, urls, rate=30, padding=0):
        super().__init__(name, urls, rate)
        self.padding = padding

    def session(self, connection):
        while not self.stopping.is_set():
            number, key = self.next_publish()
            connection.send(json.dumps({"event": "publish", "channel": CHANNEL, "_requestId": number,
                                        "idempotency_key": key, "data": _data(self.name, number, self.padding)}))
            while True:
                frame = json.loads(connection.recv(timeout=10))
                if frame.get("_requestId") == number:
                    break
            if "result" in frame:
                self.acknowledged(frame["result"])
            elif frame.get("code") == "broker_unavailable":
                self.refused += 1
            else:
                self.errors.append(frame)
            time.sleep(self.interval)


class ApiPublisher(_Publisher):
    """Publishes like WsPublisher, through `POST /api/publish` (to each of `ports` in turn)."""

    def __init__(self, name, ports, rate=30):
        super().__init__(name, [f"http://127.0.0.1:{port}/api/publish" for port in ports], rate)

    def run(self):
        sent = 0
        while not self.stopping.is_set():
            number, key = self.next_publish()
            sent += 1
            url = self.urls[sent % len(self.urls)]
            message = {"channel": CHANNEL, "idempotency_key": key, "data": _data(self.name, number, 0)}
            body = json.dumps(message).encode()
            request = urllib.request.Request(url, body, {"Authorization": f"Bearer {TOKEN}",
                                                         "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    result = json.loads(response.read())
                self.acknowledged(result)
            except urllib.error.HTTPError as refusal:
                if refusal.code == 503:
                    self.refused += 1
                else:
                    self.errors.append((refusal.code, refusal.read()))
            except OSError:  # the process is gone: not acknowledged
                self.reconnects += 1
            time.sleep(self.interval)


@dataclass
class Counts:
    """What the checker found for one subscriber."""

    lost: int = 0
    duplicates: int = 0
    reorderings: int = 0
    silent_gaps: int = 0
    not_recovered: int = 0  # `recovered: false` replies
    received: int = 0


def check(events, acks):
    """Counts of one subscriber's `events` against every publisher's `acks` (epoch, offset, id).

    A subscriber covers, in each epoch it was in, the offsets after the one its first reply there
    named, and every offset of an epoch no reply told it of (publishers start once every
    subscriber has its first reply); a `recovered: false` reply excuses the offsets from its last
    message to the reply's offset (in another epoch: the rest of the old one). Every acknowledged
    publication in a covered range must have arrived once, with its data, in offset order, and
    no data twice in one epoch (a publish sent again must not land twice)."""
    counts = Counts()
    received = {}  # epoch -> {offset: id}
    covered = {}  # epoch -> [[first, last or None], ...]
    epoch = last = None
    for event in events:
        if event[0] == "reply":
            _, reply_epoch, reply_offset, recovered = event
            if recovered is False:
                counts.not_recovered += 1
            if epoch is None or recovered is False:
                if epoch is not None:
                    covered[epoch][-1][1] = last
                covered.setdefault(reply_epoch, []).append([reply_offset + 1, None])
                epoch, last = reply_epoch, reply_offset
        elif event[0] == "message":
            _, offset, data_id = event
            counts.received += 1
            seen = received.setdefault(epoch, {})
            if offset in seen or data_id in seen.values():  # the same offset, or the same data published twice
                counts.duplicates += 1
            elif offset < last:
                counts.reorderings += 1
            elif offset > last + 1:
                counts.silent_gaps += 1
            seen.setdefault(offset, data_id)
            last = max(last, offset)
    for ack_epoch, offset, data_id in acks:
        ranges = covered.get(ack_epoch, [[0, None]])  # an epoch it was never told of: all owed
        owed = any(first <= offset and (end is None or offset <= end) for first, end in ranges)
        if owed and received.get(ack_epoch, {}).get(offset) != data_id:
            counts.lost += 1
    return counts


def wait_until_caught_up(subscribers, publishers, seconds=20):
    """Wait until every subscriber has the publishers' last acknowledged offset (of the epoch of
    their last acknowledgement) and has been quiet for QUIET seconds since, or `seconds` passed
    (the checker then counts what is missing)."""
    last_epochs = [publisher.acks[-1][0] for publisher in publishers if publisher.acks]
    epoch = max(set(last_epochs), key=last_epochs.count)
    offset = max(ack[1] for publisher in publishers for ack in publisher.acks if ack[0] == epoch)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = time.monotonic()
        if all(subscriber.epoch == epoch and subscriber.offset >= offset and now - subscriber.last_message > QUIET
               for subscriber in subscribers):
            return
        time.sleep(0.1)
