"""SIGHUP on a real `twistd -n zbifrost`: the config file's origins, limits and channel rules are applied, one
line says what changed, a broken config keeps the old one, and the process never exits."""

import json
import os
import queue
import signal
import subprocess
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.helpers import http_request
from tests.test_core_twistd import REPO, TWISTD, free_port, wait_until_listening

pytestmark = pytest.mark.slow  # twistd runs as a subprocess


class Output:
    """The lines a process prints, read in a thread so that a test can wait for one."""

    def __init__(self, process):
        self.lines = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in process.stdout], daemon=True).start()

    def wait_for(self, text, seconds=20):
        deadline = time.monotonic() + seconds
        while True:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert "Traceback" not in line
            if text in line:
                return line


def opens_from(port, origin):
    """True when a WebSocket from `origin` is accepted (then closed again)."""
    try:
        with ws_connect(f"ws://127.0.0.1:{port}/ws", origin=origin, open_timeout=10) as ws:
            ws.recv(timeout=10)
            return True
    except InvalidStatus:
        return False


def close_code_after_sending(port, origin, size):
    with ws_connect(f"ws://127.0.0.1:{port}/ws", origin=origin, open_timeout=10, max_size=None) as ws:
        ws.recv(timeout=10)
        ws.send('{"zKey": "^Ping", "pad": "' + "x" * size + '"}')
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
        return closed.value.rcvd.code if closed.value.rcvd else None


def start_twistd(config, tmp_path):
    """`twistd -n zbifrost --config CONFIG` on a free port: (process, port, Output)."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WEBSOCKET_")}
    process = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "zbifrost", "--config", str(config), "--port", str(port)],
                               cwd=tmp_path, env=dict(environment, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    return process, port, Output(process)


def stop(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sighup_applies_the_config_files_new_origins_and_limits_and_keeps_the_pid(tmp_path):
    config = tmp_path / "zbifrost.yaml"
    config.write_text("websocket:\n  allowed_origins: ['http://old.example']\n  max_message_size: 65536\n")
    process, port, output = start_twistd(config, tmp_path)
    try:
        wait_until_listening(port, process)
        assert opens_from(port, "http://old.example") and not opens_from(port, "http://new.example")

        config.write_text("websocket:\n  allowed_origins: ['http://new.example']\n  max_message_size: 1000\n"
                          "  backlog: 64\n")
        process.send_signal(signal.SIGHUP)
        line = output.wait_for("SIGHUP: reloaded")
        assert "allowed_origins ['http://old.example'] -> ['http://new.example']" in line
        assert "max_message_size 65536 -> 1000" in line and line.endswith("; needs a restart, not applied: backlog\n")
        assert opens_from(port, "http://new.example") and not opens_from(port, "http://old.example")
        assert close_code_after_sending(port, "http://new.example", 2000) == 1009
        assert http_request(port, "POST", "/api/publish", body=b"x" * 2000)[0] == 413  # the body limit too

        config.write_text("websocket:\n  allowed_origins: ['http://other.example']\n  max_message_size: -1\n")
        process.send_signal(signal.SIGHUP)
        assert "max_message_size" in output.wait_for("SIGHUP: config not reloaded, the old one stays in force")
        assert opens_from(port, "http://new.example") and not opens_from(port, "http://other.example")
        assert process.poll() is None
    finally:
        stop(process)


def subscribe_reply(port, channel):
    with ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
        ws.recv(timeout=10)
        ws.send(json.dumps({"event": "subscribe", "channel": channel, "_requestId": 1}))
        return json.loads(ws.recv(timeout=10))


def test_sighup_applies_new_channel_rules_to_the_next_subscribe(tmp_path):
    config = tmp_path / "zbifrost.yaml"
    config.write_text("websocket:\n  port: 18774\n")
    process, port, output = start_twistd(config, tmp_path)
    try:
        wait_until_listening(port, process)
        assert "result" in subscribe_reply(port, "secret")
        config.write_text("websocket:\n  port: 18774\nchannels:\n  - pattern: 'secret'\n    subscribe: [admin]\n"
                          "  - pattern: '*'\n")
        process.send_signal(signal.SIGHUP)
        assert "channels 0 -> 2 rule(s)" in output.wait_for("SIGHUP: reloaded")
        assert subscribe_reply(port, "secret")["code"] == "forbidden"
        assert "result" in subscribe_reply(port, "open")
    finally:
        stop(process)
