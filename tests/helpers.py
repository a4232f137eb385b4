"""Small helpers for tests: the engine workspace, blocking clients run in a thread, raw HTTP,
token files, a raw-socket WebSocket client for misbehaving on purpose, and a TCP relay that cuts
connections as a lost network does."""

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

from twisted.internet import threads
from twisted.protocols import portforward
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from zbifrost.auth import hash_token

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"  # Debian's package (.ci/run installs it)
REDIS_SENTINEL = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"  # Debian's redis-sentinel
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"  # Debian's redis-tools, with redis-server
ENGINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workspaces", "engine")

# bad channel names (docs/protocol.md section 7a): a name is matched in full, so a trailing newline
# (which a `re.match` with `$` lets through) or a 129th character is refused like any other
FORGED_CHANNELS = ["chat\n", "chat\r", "chat\0", "chat\n\n", "\nchat", "a" * 128 + "\n", "a" * 129]


def start_engine(make_server, **settings):
    """A server for the zUI engine's test workspace (tests/workspaces/engine, @.zUI.main)."""
    return make_server(workspace=ENGINE, zvafile="@.zUI.main", **settings)


def in_thread(function, *args, **kwargs):
    """Run a blocking call (an independent `websockets` client, raw HTTP) off the reactor
    thread, so the server keeps running meanwhile; returns a Deferred to yield on."""
    return threads.deferToThread(function, *args, **kwargs)


def http_get(port, path, headers=None):
    """(status, headers, body) of a plain HTTP GET on loopback."""
    return http_request(port, "GET", path, headers=headers)


def http_request(port, method, path, body=None, headers=None):
    """(status, headers, body) of a plain HTTP request on loopback."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def websockets_exchange(url, messages, **options):
    """Open a `websockets` connection, read connection_info, send each message (dict, str or
    bytes) and read one reply per message; returns (connection_info, replies)."""
    with ws_connect(url, open_timeout=10, **options) as ws:
        info = json.loads(ws.recv(timeout=10))
        replies = []
        for message in messages:
            ws.send(json.dumps(message) if isinstance(message, dict) else message)
            replies.append(json.loads(ws.recv(timeout=10)))
        return info, replies


def refused_status(url, **options):
    """The HTTP status with which a `websockets` upgrade to `url` is refused (blocking)."""
    try:
        websockets_exchange(url, [], **options)
    except InvalidStatus as refusal:
        return refusal.response.status_code
    raise AssertionError(f"the upgrade to {url} was accepted")


def write_tokens(path, *entries):
    """Write a tokens file; each entry is (token, user, role[, extra fields dict])."""
    lines = ["tokens:"]
    for token, user, role, *extra in entries:
        lines.append(f"  - user: {user}\n    role: {role}\n    sha256: \"{hash_token(token)}\"")
        for key, value in (extra[0] if extra else {}).items():
            lines.append(f"    {key}: {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


class RawWebSocket:
    """A WebSocket client over a plain blocking socket, for what real clients never do: trickle,
    fragment without end, stop reading. Frames are sent masked, as RFC 6455 requires of clients."""

    def __init__(self, port, path="/ws", rcvbuf=None, timeout=10):
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                          f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _fill(self, size=65536):
        data = self.sock.recv(size)
        if not data:
            raise ConnectionError("closed by the server")
        self.buffer += data

    def send_frame(self, payload, opcode=0x1, fin=True):
        mask = os.urandom(4)
        size = len(payload)
        header = bytes([(0x80 if fin else 0) | opcode])
        if size < 126:
            header += bytes([0x80 | size])
        elif size < 65536:
            header += bytes([0x80 | 126]) + size.to_bytes(2, "big")
        else:
            header += bytes([0x80 | 127]) + size.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_json(self, message):
        self.send_frame(json.dumps(message).encode())

    def read_frame(self, chunk=65536):
        """(opcode, payload) of the next server frame, reading at most `chunk` bytes a time."""
        while len(self.buffer) < 2:
            self._fill(chunk)
        size, offset = self.buffer[1] & 0x7F, 2
        if size == 126:
            size, offset = None, 4
        elif size == 127:
            size, offset = None, 10
        while len(self.buffer) < offset:
            self._fill(chunk)
        if size is None:
            size = int.from_bytes(self.buffer[2:offset], "big")
        while len(self.buffer) < offset + size:
            self._fill(chunk)
        opcode, payload = self.buffer[0] & 0x0F, self.buffer[offset:offset + size]
        self.buffer = self.buffer[offset + size:]
        return opcode, payload

    def read_json(self):
        opcode, payload = self.read_frame()
        assert opcode == 0x1, (opcode, payload[:100])
        return json.loads(payload)

    def close(self):
        self.sock.close()


def fragmented_ping(port, fragments):
    """Send `^Ping` as a text message of `fragments` frames (all but the last empty) over a
    RawWebSocket; returns the next frame: (opcode, payload)."""
    client = RawWebSocket(port)
    try:
        client.read_json()  # connection_info
        message = json.dumps({"zKey": "^Ping", "_requestId": 1}).encode()
        client.send_frame(b"", opcode=0x1, fin=False)
        for _ in range(fragments - 2):
            client.send_frame(b"", opcode=0x0, fin=False)
        client.send_frame(message, opcode=0x0, fin=True)
        return client.read_frame()
    finally:
        client.close()


def close_code(payload):
    """(code, reason) of a close frame's payload."""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode()


class CuttableProxy:
    """A TCP relay in the reactor, on a free loopback port, to a server's `port` (its WebSocket
    endpoint is `url`): `cut()` drops every relayed connection without a close frame, as a lost
    network does, and drops new ones at once until `restore()`; `stop()` (a Deferred) ends it.
    Call it in the reactor thread (from another thread: blockingCallFromThread)."""

    def __init__(self, port):
        from twisted.internet import reactor

        factory = portforward.ProxyFactory("127.0.0.1", port)
        factory.protocol = _Relay
        factory.noisy = False
        factory.proxy = self
        self.open = True
        self.relays = set()
        self.listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.url = f"ws://127.0.0.1:{self.listening.getHost().port}/ws"

    def cut(self):
        self.open = False
        for relay in list(self.relays):
            relay.transport.abortConnection()
            if relay.peer is not None:
                relay.peer.transport.abortConnection()

    def restore(self):
        self.open = True

    def stop(self):
        self.cut()
        return self.listening.stopListening()


class _Relay(portforward.ProxyServer):
    """One relayed connection of a CuttableProxy."""

    def connectionMade(self):
        proxy = self.factory.proxy
        if not proxy.open:
            self.transport.abortConnection()
            return
        proxy.relays.add(self)
        super().connectionMade()

    def connectionLost(self, reason):
        self.factory.proxy.relays.discard(self)
        super().connectionLost(reason)


class RedisServer:
    """A real `redis-server` on a free loopback port, its files in `folder`, without systemd:
    `start()` and `stop()` (blocking; it may start again, same port and data), `url` for --broker,
    `command(...)` to talk to it directly. With `password`, it requires that password
    (`requirepass`); with `tls` (key and certificate files), it speaks TLS only, that certificate
    being its own CA (`url` is then `rediss://...?ca=`); `args` are more redis-server options."""

    def __init__(self, folder, password=None, tls=None, args=()):
        self.folder = str(folder)
        os.makedirs(self.folder, exist_ok=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.password = password
        self.args = [*args, *(["--requirepass", password] if password else [])]
        self.tls = None
        if tls is not None:
            key, certificate = map(str, tls)
            self.url = f"rediss://127.0.0.1:{self.port}/0?ca={certificate}"
            self.args += ["--port", "0", "--tls-port", str(self.port), "--tls-key-file", key, "--tls-cert-file",
                          certificate, "--tls-ca-cert-file", certificate, "--tls-auth-clients", "no"]
            self.tls = ssl.create_default_context(cafile=certificate)
        self.process = None

    def _connect(self, timeout):
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return connection if self.tls is None else self.tls.wrap_socket(connection, server_hostname="127.0.0.1")

    def start(self):
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.folder,
             "--save", "", "--appendonly", "yes", "--daemonize", "no", *self.args],  # its data survives a restart
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with self._connect(1) as ready:
                    ready.sendall(b"PING\r\n")
                    if ready.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def command(self, *args):
        """Send one command (blocking), after AUTH when it has a password; returns the first line
        of Redis's reply."""
        commands = [("AUTH", self.password), args] if self.password else [args]
        request = b"".join(b"*%d\r\n" % len(command) + b"".join(
            b"$%d\r\n%s\r\n" % (len(str(arg).encode()), str(arg).encode()) for arg in command)
            for command in commands)
        with self._connect(10) as connection:
            connection.sendall(request)
            replies = connection.makefile("rb")
            if self.password:
                replies.readline()  # +OK
            return replies.readline().decode().rstrip()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def redis_cli(port, *args, password=None):
    """One command through redis-cli to 127.0.0.1:port (blocking, after AUTH `password` when
    given); its output, one item a line."""
    login = ["--no-auth-warning", "-a", password] if password else []
    done = subprocess.run([REDIS_CLI, "-p", str(port), *login, *map(str, args)], capture_output=True, text=True,
                          timeout=10)
    return done.stdout.splitlines()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisSentinels:
    """A real Redis master, its replica and three `redis-sentinel` processes watching them as
    `mymaster`, on free loopback ports, files in `folder`: `start()` (blocking, until the sentinels
    know the replica and each other), `stop()`, `url` for --broker, `masters()` (what each sentinel
    names as master), `fail_over(fault)`, and `cut_off_replica()` (so that a failover surely loses
    the master's newest writes). With `sentinel_password`, the sentinels require it (`requirepass`);
    `ask(port, ...)` asks a sentinel with it."""

    NAME = "mymaster"

    def __init__(self, folder, sentinel_password=None):
        self.folder = folder
        self.sentinel_password = sentinel_password
        for name in ("master", "replica", "sentinels"):
            (folder / name).mkdir()
        self.master = RedisServer(folder / "master")
        self.replica = RedisServer(folder / "replica", args=["--replicaof", "127.0.0.1", str(self.master.port)])
        self.ports = [_free_port() for _ in range(3)]
        self.url = "redis+sentinel://" + ",".join(f"127.0.0.1:{port}" for port in self.ports) + f"/{self.NAME}/0"
        self.processes = []

    def start(self):
        self.master.start()
        self.replica.start()
        for port in self.ports:
            config = self.folder / "sentinels" / f"{port}.conf"
            config.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.folder / 'sentinels'}\n"
                              f"sentinel monitor {self.NAME} 127.0.0.1 {self.master.port} 2\n"
                              f"sentinel down-after-milliseconds {self.NAME} 1000\n"
                              f"sentinel failover-timeout {self.NAME} 10000\n"
                              + (f"requirepass {self.sentinel_password}\n" if self.sentinel_password else ""))
            self.processes.append(subprocess.Popen([REDIS_SENTINEL, str(config)], stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL))
        self._wait(self._ready, "the sentinels did not see the replica and each other")

    def _ready(self):
        if "master_link_status:up" not in redis_cli(self.replica.port, "INFO", "replication"):
            return False
        for port in self.ports:
            lines = self.ask(port, "SENTINEL", "master", self.NAME)
            state = dict(zip(lines[::2], lines[1::2], strict=False))  # an error reply: one line
            if state.get("num-slaves") != "1" or state.get("num-other-sentinels") != "2":
                return False
        return True

    def ask(self, port, *args):
        """One command to the sentinel on `port`, logged in when the sentinels need it."""
        return redis_cli(port, *args, password=self.sentinel_password)

    def fail_over(self, fault):
        """`SENTINEL FAILOVER` (fault "SENTINEL FAILOVER") or a SIGKILL of the master (any other),
        then wait until every sentinel names the replica."""
        if fault == "SENTINEL FAILOVER":
            assert self.ask(self.ports[0], "SENTINEL", "FAILOVER", self.NAME) == ["OK"]
        else:
            os.kill(self.master.process.pid, signal.SIGKILL)
        self.wait_for_master(self.replica.port)

    def cut_off_replica(self):
        """The master's writes stop reaching the replica, which stays promotable: its link is cut
        and it cannot log in to the master again (a password that master does not have)."""
        assert redis_cli(self.replica.port, "CONFIG", "SET", "masterauth", "not-the-password") == ["OK"]
        redis_cli(self.master.port, "CLIENT", "KILL", "TYPE", "replica")
        self._wait(lambda: "master_link_status:down" in redis_cli(self.replica.port, "INFO", "replication"),
                   "the replica stayed linked to the master")

    def masters(self):
        """The port each sentinel names as the master (None where it does not answer)."""
        return [int(found[1]) if len(found) == 2 else None
                for found in (self.ask(port, "SENTINEL", "get-master-addr-by-name", self.NAME) for port in self.ports)]

    def wait_for_master(self, port):
        """Until every sentinel names 127.0.0.1:port as the master."""
        self._wait(lambda: self.masters() == [port] * 3, f"the sentinels did not all switch to {port}")

    @staticmethod
    def _wait(condition, failure):
        deadline = time.monotonic() + 60
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(failure)
            time.sleep(0.1)

    def stop(self):
        for process in self.processes:
            process.terminate()
            process.wait(10)
        self.replica.stop()
        self.master.stop()
