"""systemd with real processes: sd_notify datagrams (READY=1, STATUS=, WATCHDOG=1, STOPPING=1)
and socket activation through `systemd-socket-activate`, with and without descriptor names."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest

from tests.test_core_twistd import (
    REPO,
    TWISTD,
    free_port,
    ping_over_websocket,
    serve_and_ping,
    stop_process,
    wait_until_listening,
)

pytestmark = pytest.mark.slow  # twistd runs as a subprocess


def twistd_environment(**extra):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("WEBSOCKET_", "LISTEN_", "NOTIFY_"))}
    return dict(environment, PYTHONPATH=REPO, **extra)


def receive_until(receiver, key):
    """The notifications (datagrams, split into KEY=value lines) up to the first carrying `key`."""
    lines = []
    while not any(line.startswith(f"{key}=") for line in lines):
        lines.extend(receiver.recv(4096).decode().splitlines())
    return lines


@contextlib.contextmanager
def notify_socket():
    """A folder and a datagram socket bound in it to receive sd_notify: (folder, address, receiver)."""
    with tempfile.TemporaryDirectory() as folder, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        address = os.path.join(folder, "notify")
        receiver.bind(address)
        receiver.settimeout(20)
        yield folder, address, receiver


def test_systemd_is_told_ready_status_watchdog_and_stopping_over_notify_socket():
    with notify_socket() as (folder, address, receiver):
        port = free_port()
        process = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "zbifrost", "--port", str(port)], cwd=folder,
            env=twistd_environment(NOTIFY_SOCKET=address, WATCHDOG_USEC="200000"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        signalled = False
        try:
            ready = receive_until(receiver, "READY")
            assert "READY=1" in ready and any(line.startswith("STATUS=listening on tcp:") for line in ready)
            wait_until_listening(port, process)
            assert ping_over_websocket(port) == {"message": "Pong!"}
            pings = receive_until(receiver, "WATCHDOG")
            assert "WATCHDOG=1" in pings and any(line.startswith("STATUS=") and line.endswith(" clients")
                                                 for line in pings)
            process.send_signal(signal.SIGTERM)
            signalled = True
            assert "STOPPING=1" in receive_until(receiver, "STOPPING")
        finally:
            stop_process(process, signalled)


def test_with_workers_the_parent_tells_systemd_ready_watchdog_and_stopping(redis_server):
    with notify_socket() as (folder, address, receiver):
        port = free_port()
        process = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "zbifrost", "--port", str(port), "--workers", "2",
             "--broker", redis_server.url], cwd=folder,
            env=twistd_environment(NOTIFY_SOCKET=address, WATCHDOG_USEC="200000"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        signalled = False
        try:
            lines = receive_until(receiver, "READY")
            assert f"STATUS=2 workers on 127.0.0.1:{port}" in lines
            wait_until_listening(port, process)
            assert ping_over_websocket(port) == {"message": "Pong!"}
            lines += receive_until(receiver, "WATCHDOG")
            process.send_signal(signal.SIGTERM)
            signalled = True
            lines += receive_until(receiver, "STOPPING")
            assert "WATCHDOG=1" in lines and lines[-2:] == ["STOPPING=1", "STATUS=stopping 2 workers"]
            # only the parent speaks to systemd: no worker's "listening on" or "clients" status
            assert [line for line in lines if line.startswith("STATUS=")] == \
                [f"STATUS=2 workers on 127.0.0.1:{port}", "STATUS=stopping 2 workers"]
        finally:
            stop_process(process, signalled)


needs_socket_activate = pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                                           reason="systemd-socket-activate is not installed (Debian's systemd)")


@needs_socket_activate
@pytest.mark.parametrize("names", [[], ["--fdname=zbifrost"]], ids=["without-fd-names", "with-fd-names"])
def test_systemd_socket_activate_hands_its_socket_over_and_zbifrost_serves_ping_on_it(tmp_path, names):
    port = free_port()
    # systemd-socket-activate passes on only the environment it is told to, and starts twistd
    # at the first connection (which waits in the backlog meanwhile)
    output = serve_and_ping(["systemd-socket-activate", "--listen", f"127.0.0.1:{port}", "--setenv=PYTHONPATH",
                             *names, *TWISTD, "-n", "--pidfile=", "zbifrost"], tmp_path, twistd_environment(),
                            port=port)
    assert "zbifrost listening on systemd socket 3" in output


def test_a_passed_descriptor_that_is_no_socket_stops_start_up_with_one_line(tmp_path):
    script = 'export LISTEN_PID=$$ LISTEN_FDS=1; exec "$@" 3</dev/null'
    result = subprocess.run(["sh", "-c", script, "sh", *TWISTD, "-n", "--pidfile=", "zbifrost"], cwd=tmp_path,
                            env=twistd_environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "zbifrost: LISTEN_FDS: descriptor 3 is not a socket" in result.stderr
