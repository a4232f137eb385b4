"""What an idle WebSocket connection costs in server memory: zbifrost against the Autobahn echo.

    python bench/idle_memory.py [--connections 10000] [--tree PATH ...]

For each server in turn (bench/echo_server.py, then zbifrost under twistd from this source
tree with every default but `max_connections` above N and a `ping_interval` longer than the
run, so the keepalive timer exists but no ping traffic moves memory; then any `--tree`), it
starts the server as a subprocess on a free loopback port, warms it up with a few connections
that it closes again, reads the server's VmRSS from /proc/PID/status, opens N WebSocket
connections from a separate client process (this script with `--client`), waits until every
one has completed its upgrade and received the server's first frame, lets the server settle,
reads VmRSS again, and prints (after - before) / N in KiB. Then the client closes everything
and the server is stopped. RLIMIT_NOFILE is raised to its hard limit on both sides.

The client is a minimal asyncio Protocol: the HTTP/1.1 upgrade (101 checked), then it stays
idle, answering pings. Every wait is bounded (--timeout), and the servers are stopped on
exit, on error and on Ctrl-C or SIGTERM.
"""

import argparse
import asyncio
import base64
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

from run import BENCH, REPO, TWISTD, free_port, stop_process, stopped_at_exit

WARMUP_CONNECTIONS = 50
SETTLE_SECONDS = 2.0
OPEN_CONCURRENCY = 200  # upgrades in progress at once, well under the servers' listen backlog


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


# -- the client process ------------------------------------------------------------------------

class IdleClient(asyncio.Protocol):
    """One WebSocket client that upgrades, waits for the server's first frame, then idles."""

    def __init__(self, host_port, ready):
        self.host_port = host_port
        self.ready = ready  # a Future: None once open, else the reason it failed
        self.buffer = b""
        self.upgraded = False
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET / HTTP/1.1\r\nHost: {self.host_port}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                         f"Sec-WebSocket-Version: 13\r\n\r\n").encode())

    def data_received(self, data):
        self.buffer += data
        if not self.upgraded:
            head, found, rest = self.buffer.partition(b"\r\n\r\n")
            if not found:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self._fail(head.split(b"\r\n", 1)[0].decode("ascii", "replace"))
                return
            self.upgraded, self.buffer = True, rest
        self._read_frames()

    def _read_frames(self):
        while len(self.buffer) >= 2:
            opcode, length, at = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if length == 126:
                length, at = int.from_bytes(self.buffer[2:4], "big"), 4
            elif length == 127:
                length, at = int.from_bytes(self.buffer[2:10], "big"), 10
            if len(self.buffer) < at + length:
                return
            payload, self.buffer = self.buffer[at:at + length], self.buffer[at + length:]
            if opcode == 0x9:  # ping -> masked pong with the same payload
                mask = os.urandom(4)
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + mask
                                     + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            elif opcode == 0x8:
                self._fail("closed by the server")
            elif not self.ready.done():
                self.ready.set_result(None)  # the server's first frame: this connection is open

    def _fail(self, reason):
        if not self.ready.done():
            self.ready.set_result(reason)
        self.transport.close()

    def connection_lost(self, exc):
        if not self.ready.done():
            self.ready.set_result("connection lost")


async def open_all(port, count, timeout):
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    clients, failures = [], {}

    async def open_one():
        async with gate:
            ready = loop.create_future()
            try:
                _, client = await asyncio.wait_for(
                    loop.create_connection(lambda: IdleClient(f"127.0.0.1:{port}", ready), "127.0.0.1", port),
                    timeout)
                reason = await asyncio.wait_for(ready, timeout)
            except (OSError, asyncio.TimeoutError) as err:
                reason = type(err).__name__
            if reason is None:
                clients.append(client)
            else:
                failures[reason] = failures.get(reason, 0) + 1

    await asyncio.gather(*(open_one() for _ in range(count)))
    return clients, failures


async def client_main(port, count, timeout):
    """Open `count` connections, report on stdout, stay idle until stdin closes (or timeout)."""
    clients, failures = await open_all(port, count, timeout)
    print(json.dumps({"open": len(clients), "failures": failures}), flush=True)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), timeout)
    except asyncio.TimeoutError:
        pass
    for client in clients:
        client.transport.close()


# -- the measuring process -----------------------------------------------------------------------

class Client:
    """The client process holding `count` idle connections to `port` until close()."""

    def __init__(self, port, count, timeout):
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--client", str(port), "--connections", str(count),
             "--timeout", str(timeout)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True)
        self.timeout = timeout

    def wait_open(self):
        line = self.process.stdout.readline()  # the client's own --timeout bounds this
        if not line:
            raise RuntimeError(f"the client process failed (exit {self.process.wait(self.timeout)})")
        return json.loads(line)

    def close(self):
        try:
            self.process.stdin.close()
            self.process.wait(self.timeout)
        except (OSError, subprocess.TimeoutExpired):
            stop_process(self.process)


def start_server(name, tree, port, workdir, config_path):
    log = open(os.path.join(workdir, name + ".log"), "wb")  # noqa: SIM115 - the server's, for its lifetime
    if tree is None:
        command, env = [sys.executable, os.path.join(BENCH, "echo_server.py"), "--port", str(port)], None
    else:
        command = [TWISTD, "-n", "--pidfile=", "zbifrost", "--port", str(port), "--config", config_path]
        env = dict(os.environ, PYTHONPATH=tree + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with log:
        return subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_listening(process, port, log_path, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    with open(log_path, errors="replace") as handle:
        raise RuntimeError("the server did not start; its log:\n" + "".join(handle.readlines()[-20:]))


def measure(name, tree, args, workdir, config_path, children):
    port = free_port()
    server = start_server(name, tree, port, workdir, config_path)
    children.append(server)
    try:
        wait_listening(server, port, os.path.join(workdir, name + ".log"), 20)
        warmup = Client(port, WARMUP_CONNECTIONS, args.timeout)
        warmup.wait_open()
        warmup.close()
        time.sleep(SETTLE_SECONDS)
        before = rss_kib(server.pid)
        client = Client(port, args.connections, args.timeout)
        children.append(client.process)
        opened = client.wait_open()
        time.sleep(SETTLE_SECONDS)
        after = rss_kib(server.pid)
        client.close()
        children.remove(client.process)
    finally:
        stop_process(server)
        children.remove(server)
    if opened["open"] != args.connections:
        raise RuntimeError(f"{name}: only {opened['open']} of {args.connections} connections opened: "
                           f"{opened['failures']}")
    return before, after


def main():
    parser = argparse.ArgumentParser(description="server memory per idle WebSocket connection")
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--timeout", type=float, default=120.0, help="bound on each wait, seconds")
    parser.add_argument("--tree", action="append", default=[], metavar="PATH",
                        help="also measure the zbifrost source tree at PATH (e.g. a copy before a change)")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    limit = raise_fd_limit()  # the servers, started from here, inherit it
    if args.client:
        asyncio.run(client_main(args.client, args.connections, args.timeout))
        return
    if args.connections + 100 > limit:
        sys.exit(f"idle_memory: {args.connections} connections need more file descriptors than the hard "
                 f"limit of {limit}")
    servers = [("echo", None), ("zbifrost", REPO)]
    servers += [("zb@" + os.path.basename(os.path.normpath(tree)), os.path.abspath(tree)) for tree in args.tree]
    with stopped_at_exit() as children, tempfile.TemporaryDirectory(prefix="zbifrost-idle-") as workdir:
        config_path = os.path.join(workdir, "idle.yaml")
        with open(config_path, "w") as handle:
            handle.write(f"websocket:\n  max_connections: {args.connections + 1000}\n"
                         f"  ping_interval: {int(args.timeout * 10)}\n")
        print(f"{args.connections} idle connections per server, RSS from /proc/PID/status")
        width = max(len(name) for name, _ in servers)
        for name, tree in servers:
            before, after = measure(name, tree, args, workdir, config_path, children)
            print(f"{name:{width}s}  RSS {before / 1024:6.1f} MiB -> {after / 1024:6.1f} MiB  "
                  f"{(after - before) / args.connections:5.2f} KiB per connection", flush=True)

if __name__ == "__main__":
    main()
