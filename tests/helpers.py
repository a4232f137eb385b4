"""Small helpers for tests: the engine workspace, blocking clients run in a thread, raw HTTP,
token files."""

import http.client
import json
import os

from twisted.internet import threads
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from zbifrost.auth import hash_token


ENGINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workspaces", "engine")


def start_engine(make_server, **settings):
    """A server for the zUI engine's test workspace (tests/workspaces/engine, @.zUI.main)."""
    return make_server(workspace=ENGINE, zvafile="@.zUI.main", **settings)


def in_thread(function, *args, **kwargs):
    """Run a blocking call (an independent `websockets` client, raw HTTP) off the reactor
    thread, so the server keeps running meanwhile; returns a Deferred to yield on."""
    return threads.deferToThread(function, *args, **kwargs)


def http_get(port, path, headers=None):
    """(status, headers, body) of a plain HTTP GET on loopback."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
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
