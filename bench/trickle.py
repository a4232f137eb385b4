"""What slowloris clients do to zbifrost: sockets that trickle a WebSocket upgrade request.

    python bench/trickle.py [--connections 10000] [--processes 1] [--duration 30] [--tree PATH]

Starts zbifrost under twistd from this source tree (or from `--tree PATH` instead) on a free
loopback port, with every default but `max_connections` above the number of sockets, so the
connection cap does not hide what the handshake deadline does. Then `--processes` client
processes (this script with `--client`) each open `--connections` sockets to it, at most
200 connects in progress at once, and every socket sends a WebSocket upgrade request one byte
every 3 s, starting at its connect (the request is about 150 bytes, so it never completes
within the run). A client is one selector loop over non-blocking sockets; it notes when the
server closes or resets each socket. After `--duration` seconds of trickling it closes all of
its sockets (with a reset, so no TIME_WAIT is left to eat the loopback's ports) and reports.

Meanwhile this process asks `GET /healthz` on a fresh connection every 0.5 s (each poll in its
own thread, so a hung poll does not delay the next; an answer slower than `--healthz-timeout`
counts as a failure) and counts the server's open file descriptors in /proc/PID/fd.

It prints: sockets opened (and connects that failed or were still pending at the end), how
many the server dropped and after how long from their connect (min/median/max), how many were
still open at the end, /healthz answers and failures with p50/max latency, the server's peak
open fds and how many connections it closed at accept for lack of descriptors (twisted's EMFILE
recovery, read from its log). RLIMIT_NOFILE is raised to its hard limit on both sides; the
server's limit is printed, since a server that runs out of descriptors is one of the outcomes
being measured. Every wait is bounded and the server and clients are stopped on exit, on error
and on Ctrl-C or SIGTERM.
"""

import argparse
import base64
import collections
import errno
import json
import os
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

from idle_memory import raise_fd_limit, start_server, wait_listening
from run import REPO, free_port, stopped_at_exit

TRICKLE_INTERVAL = 3.0  # seconds between two bytes of one socket
OPEN_CONCURRENCY = 200  # connects in progress at once, well under the server's listen backlog
HEALTHZ_INTERVAL = 0.5
FD_SAMPLE_INTERVAL = 0.25
RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


# -- the client process ------------------------------------------------------------------------

def upgrade_request(port):
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def close_with_reset(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    except OSError:
        pass
    sock.close()


class Trickler:
    """`count` sockets to `port`, each sending `request` one byte per TRICKLE_INTERVAL, in one
    selector loop; records when the server drops each one."""

    def __init__(self, port, count, request):
        self.address = ("127.0.0.1", port)
        self.to_open = count
        self.request = request
        self.selector = selectors.DefaultSelector()
        self.connecting = {}  # socket -> when its connect() started
        self.connected = {}  # socket -> [when it connected, bytes sent]
        self.due = collections.deque()  # (when, socket), in time order: every step is TRICKLE_INTERVAL
        self.opened = 0
        self.connect_failures = collections.Counter()
        self.dropped_after = []  # seconds from connect to the server's FIN or RST
        self.bytes_received = 0

    def run(self, duration):
        start = time.monotonic()
        end = start + duration
        while (now := time.monotonic()) < end:
            self._start_connects(now)
            wait = end - now
            if self.due:
                wait = min(wait, self.due[0][0] - now)
            if self.to_open:
                wait = min(wait, 0.01)
            for key, _ in self.selector.select(max(wait, 0)):
                self._ready(key.fileobj, time.monotonic())
            self._send_due(time.monotonic())
        return self._report(time.monotonic() - start)

    def _start_connects(self, now):
        while self.to_open and len(self.connecting) < OPEN_CONCURRENCY:
            self.to_open -= 1
            sock = socket.socket()
            sock.setblocking(False)
            error = sock.connect_ex(self.address)
            if error not in (0, errno.EINPROGRESS):
                self.connect_failures[errno.errorcode.get(error, str(error))] += 1
                sock.close()
                continue
            self.connecting[sock] = now
            self.selector.register(sock, selectors.EVENT_WRITE)

    def _ready(self, sock, now):
        if sock in self.connecting:
            del self.connecting[sock]
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self.connect_failures[errno.errorcode.get(error, str(error))] += 1
                self.selector.unregister(sock)
                sock.close()
                return
            self.opened += 1
            self.connected[sock] = [now, 0]
            self.selector.modify(sock, selectors.EVENT_READ)
            self._send_byte(sock, now)
            return
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if data:
            self.bytes_received += len(data)  # not expected before the request is complete
        else:
            self._dropped(sock, now)

    def _send_due(self, now):
        while self.due and self.due[0][0] <= now:
            _, sock = self.due.popleft()
            if sock in self.connected:
                self._send_byte(sock, now)

    def _send_byte(self, sock, now):
        state = self.connected[sock]
        try:
            sock.send(self.request[state[1]:state[1] + 1])
        except BlockingIOError:
            pass  # a full send buffer: try again at the next step
        except OSError:
            self._dropped(sock, now)
            return
        else:
            state[1] += 1
        if state[1] < len(self.request):
            self.due.append((now + TRICKLE_INTERVAL, sock))

    def _dropped(self, sock, now):
        connected_at, _ = self.connected.pop(sock)
        self.dropped_after.append(round(now - connected_at, 3))
        self.selector.unregister(sock)
        sock.close()

    def _report(self, seconds):
        report = {"opened": self.opened, "connect_failures": dict(self.connect_failures),
                  "still_connecting": len(self.connecting), "not_attempted": self.to_open,
                  "dropped_after": self.dropped_after, "open_at_end": len(self.connected),
                  "bytes_received": self.bytes_received, "seconds": round(seconds, 2)}
        for sock in list(self.connecting) + list(self.connected):
            self.selector.unregister(sock)
            close_with_reset(sock)
        return report


def client_main(port, count, duration):
    print(json.dumps(Trickler(port, count, upgrade_request(port)).run(duration)), flush=True)


# -- the measuring process -----------------------------------------------------------------------

def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0  # the server is gone


def fd_limit(pid):
    with open(f"/proc/{pid}/limits") as handle:
        for line in handle:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise RuntimeError(f"no open-files limit for process {pid}")


def poll_healthz(port, timeout, results):
    """One GET /healthz on a new connection: appends (answered, latency in s or failure reason)."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(max(timeout - (time.monotonic() - start), 0.001))
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
    except OSError as error:
        results.append((False, type(error).__name__))
        return
    if response.startswith(b"HTTP/1.1 200"):
        results.append((True, time.monotonic() - start))
    else:
        results.append((False, response.split(b"\r\n", 1)[0].decode("ascii", "replace") or "empty answer"))


def start_clients(args, port):
    return [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--client", str(port),
                              "--connections", str(args.connections), "--duration", str(args.duration)],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
            for _ in range(args.processes)]


def watch(server, port, clients, args):
    """Poll /healthz and the server's fds until every client has reported (bounded)."""
    outputs = [[] for _ in clients]
    readers = [threading.Thread(target=lambda client=client, output=output: output.append(client.stdout.read()),
                                daemon=True) for client, output in zip(clients, outputs, strict=True)]
    for reader in readers:
        reader.start()
    polls, pollers, peak_fds = [], [], 0
    deadline = time.monotonic() + args.duration + args.healthz_timeout + 30
    next_poll = time.monotonic()
    while any(reader.is_alive() for reader in readers) and time.monotonic() < deadline:
        peak_fds = max(peak_fds, open_fds(server.pid))
        if time.monotonic() >= next_poll:
            next_poll += HEALTHZ_INTERVAL
            poller = threading.Thread(target=poll_healthz, args=(port, args.healthz_timeout, polls), daemon=True)
            poller.start()
            pollers.append(poller)
        time.sleep(FD_SAMPLE_INTERVAL)
    for poller in pollers:
        poller.join(args.healthz_timeout + 1)
    reports = []
    for client, output in zip(clients, outputs, strict=True):
        if not output or not output[0].strip():
            raise RuntimeError(f"a client process failed or overran (exit {client.poll()})")
        reports.append(json.loads(output[0]))
    return reports, polls, peak_fds


def summarize(reports, polls, peak_fds, limit, log_path):
    def total(key):
        return sum(report[key] for report in reports)

    failures = collections.Counter()
    for report in reports:
        failures.update(report["connect_failures"])
    dropped = sorted(t for report in reports for t in report["dropped_after"])
    print(f"  opened {total('opened')} sockets; connects failed {dict(failures) or 0}, still connecting at "
          f"the end {total('still_connecting')}, never attempted {total('not_attempted')}")
    if dropped:
        print(f"  dropped by the server: {len(dropped)}, after {dropped[0]:.2f} / {statistics.median(dropped):.2f}"
              f" / {dropped[-1]:.2f} s (min / median / max from connect)")
    else:
        print("  dropped by the server: 0")
    print(f"  still open at the end: {total('open_at_end')}" +
          (f" (the server sent {total('bytes_received')} bytes on them)" if total("bytes_received") else ""))
    latencies = sorted(1000 * latency for answered, latency in polls if answered)
    reasons = collections.Counter(reason for answered, reason in polls if not answered)
    line = f"  /healthz: {len(latencies)} answered, {sum(reasons.values())} failed"
    if reasons:
        line += f" ({', '.join(f'{n} {reason}' for reason, n in reasons.most_common())})"
    if latencies:
        line += f"; latency p50 {statistics.median(latencies):.1f} ms, max {latencies[-1]:.1f} ms"
    print(line)
    with open(log_path, errors="replace") as handle:  # twisted's tcp.Port, out of descriptors
        shed = sum("EMFILE recovery: Closed socket" in log_line for log_line in handle)
    print(f"  server open fds: peak {peak_fds} (limit {limit})"
          + (f"; it closed {shed} connections at accept for lack of descriptors" if shed else ""), flush=True)


def main():
    parser = argparse.ArgumentParser(description="slowloris sockets trickling an upgrade against zbifrost")
    parser.add_argument("--connections", type=int, default=10000, help="sockets per client process")
    parser.add_argument("--processes", type=int, default=1, help="client processes, each with --connections")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of trickling")
    parser.add_argument("--healthz-timeout", type=float, default=2.0, help="a slower /healthz answer is a failure")
    parser.add_argument("--tree", metavar="PATH", help="measure the zbifrost source tree at PATH instead of this one")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    limit = raise_fd_limit()  # the server and the clients, started from here, inherit it
    if args.client:
        client_main(args.client, args.connections, args.duration)
        return
    if args.connections + 100 > limit:
        sys.exit(f"trickle: {args.connections} sockets per client process need more file descriptors than the "
                 f"hard limit of {limit}")
    tree = os.path.abspath(args.tree) if args.tree else REPO
    sockets = args.connections * args.processes
    with stopped_at_exit() as children, tempfile.TemporaryDirectory(prefix="zbifrost-trickle-") as workdir:
        config_path = os.path.join(workdir, "trickle.yaml")
        with open(config_path, "w") as handle:
            handle.write(f"websocket:\n  max_connections: {sockets + 1000}\n")
        port = free_port()
        server = start_server("zbifrost", tree, port, workdir, config_path)
        children.append(server)
        wait_listening(server, port, os.path.join(workdir, "zbifrost.log"), 20)
        print(f"zbifrost from {tree}: {args.processes} x {args.connections} sockets trickling an upgrade "
              f"request, 1 byte / {TRICKLE_INTERVAL:g} s, for {args.duration:g} s", flush=True)
        clients = start_clients(args, port)
        children.extend(clients)
        reports, polls, peak_fds = watch(server, port, clients, args)
        if server.poll() is not None:
            print(f"  the server exited during the run (exit {server.returncode})")
        summarize(reports, polls, peak_fds, fd_limit(server.pid) if server.poll() is None else limit,
                  os.path.join(workdir, "zbifrost.log"))

if __name__ == "__main__":
    main()
