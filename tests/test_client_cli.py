"""The client's command line (`python -m zbifrost.client`), run as a subprocess against a real server:
its output and its exit statuses."""

import json
import os
import socket
import subprocess
import sys
import threading

import pytest
import pytest_twisted

from tests.helpers import in_thread, write_tokens

pytestmark = pytest.mark.slow  # each test starts the command line as a process

CLIENT = [sys.executable, "-m", "zbifrost.client"]


def client(*args, env=None):
    """Run the command line to its end (blocking): (exit status, stdout, stderr)."""
    environ = {name: value for name, value in os.environ.items() if name != "ZBIFROST_TOKEN"}
    environ.update(env or {})
    done = subprocess.run([*CLIENT, *args], capture_output=True, text=True, timeout=60, env=environ)
    return done.returncode, done.stdout, done.stderr


def follow(*args, lines):
    """Run `subscribe` until it has printed `lines` lines on stdout, then stop it (blocking): (lines, stderr)."""
    process = subprocess.Popen([*CLIENT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(30, process.kill)
    watchdog.start()
    try:
        printed = [json.loads(process.stdout.readline()) for _ in range(lines)]
    finally:
        watchdog.cancel()
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    return printed, stderr


@pytest_twisted.inlineCallbacks
def test_dispatch_prints_the_result_and_an_error_reply_exits_1_with_its_code(server):
    status, stdout, _ = yield in_thread(client, server.url, "dispatch", "^Ping")
    assert (status, json.loads(stdout)) == (0, {"message": "Pong!"})
    status, stdout, stderr = yield in_thread(client, server.url, "dispatch", "^Nope")
    assert (status, stdout) == (1, "") and "unknown_command" in stderr


@pytest_twisted.inlineCallbacks
def test_publish_then_subscribe_since_prints_one_json_line_per_publication(server):
    offsets = []
    for n in range(2):
        status, stdout, _ = yield in_thread(client, server.url, "publish", "chat", json.dumps({"n": n}),
                                            "--idempotency-key", f"key-{n}")
        assert status == 0
        offsets.append(json.loads(stdout))
    epoch = offsets[0]["epoch"]
    printed, stderr = yield in_thread(follow, server.url, "subscribe", "chat", "--since", f"{epoch}:0", lines=2)
    assert [(line["offset"], line["data"]) for line in printed] == [(1, {"n": 0}), (2, {"n": 1})]
    assert all(line["epoch"] == epoch and line["channel"] == "chat" for line in printed)
    assert "zbifrost-client: connected" in stderr


@pytest_twisted.inlineCallbacks
def test_usage_errors_exit_2(server):
    for args in ([], [server.url], [server.url, "publish", "chat", "{not json"], ["http://x/", "dispatch", "^Ping"],
                 [server.url, "subscribe", "chat", "--since", "no-offset"]):
        status, _, stderr = yield in_thread(client, *args)
        assert status == 2, (args, stderr)


@pytest_twisted.inlineCallbacks
def test_a_server_that_cannot_be_reached_or_refuses_the_token_exits_3(make_server, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    status, _, stderr = yield in_thread(client, f"ws://127.0.0.1:{closed_port}/ws", "dispatch", "^Ping")
    assert status == 3 and "1006" in stderr
    tokens = write_tokens(tmp_path / "tokens.yaml", ("good-token", "ann", "user"))
    server = yield make_server(require_auth=True, tokens_file=tokens)
    status, _, stderr = yield in_thread(client, server.url, "dispatch", "^Ping", env={"ZBIFROST_TOKEN": "bad-token"})
    assert status == 3 and "1008 Invalid token" in stderr
    status, stdout, _ = yield in_thread(client, server.url, "dispatch", "^Ping", env={"ZBIFROST_TOKEN": "good-token"})
    assert (status, json.loads(stdout)) == (0, {"message": "Pong!"})
    status, stdout, _ = yield in_thread(client, server.url, "dispatch", "^Ping", "--token", "good-token")
    assert status == 0
