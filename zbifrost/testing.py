"""Test helpers for suites that use zbifrost (trial or pytest-twisted), like `treq.testing`.

    server = yield start_server("path/to/workspace", require_auth=False)
    client = yield connect(server.url)
    result = yield client.dispatch("^Ping")          # {"message": "Pong!"}
    yield client.close()
    yield server.stop()

`start_server` runs a real zbifrost inside the running reactor on an ephemeral loopback port;
`connect` opens a zbifrost.client.twisted Client to it that never reconnects, and keeps every
frame it receives. Replies are matched by `_requestId`
(the progress, display and input_request events of a dispatch name it in `_forRequestId` and
are read with `next_event`); an error reply fails the Deferred with `BifrostError` (`.code`, `.message`, `.reply`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlencode

import orjson
from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.python.failure import Failure

from .client.core import BifrostError as ClientError
from .client.twisted import Client
from .client.twisted import connect as connect_client
from .config import load_config
from .interfaces import IReactor
from .messages import JSON, RequestId
from .service import BifrostService

__all__ = ["BifrostError", "ConnectionClosed", "RunningServer", "start_server", "connect", "BifrostTestClient"]


class BifrostError(ClientError):
    """An error reply: `code` is one of the codes of docs/protocol.md section 3, `reply` the whole
    frame (a kind of zbifrost.client's BifrostError)."""

    def __init__(self, reply: dict[str, Any]) -> None:
        code: Any = reply.get("code")  # strings, in every error reply of docs/protocol.md
        message: Any = reply.get("error")
        super().__init__(code, message, details=reply.get("details"))
        self.reply = reply


class ConnectionClosed(Exception):
    """The connection closed before the awaited frame arrived."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"connection closed: {code} {reason}")
        self.code = code
        self.reason = reason


class RunningServer:
    """A started zbifrost: `url` (ws://.../ws), `http_url`, `port`, `service`, `hub` (its
    zbifrost.hub.Hub: `clients`, `metrics`, `publish_from_backend`, ...) and `factory` (the
    Autobahn factory building its connections' protocol)."""

    def __init__(self, service: BifrostService) -> None:
        self.service = service
        self.hub = service.hub
        self.factory = service.factory
        listening = service.ports()[0]
        assert listening is not None  # started
        self.port: int = cast(IPv4Address, listening.getHost()).port
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.http_url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> defer.Deferred[None]:
        """Stop gracefully (clients get server_shutdown and 1001); fires when it is down."""
        return defer.maybeDeferred(self.service.stopService)


def start_server(workspace: str | None = None, reactor: Any = None, port: int = 0, config_file: str | None = None,
                 **settings: Any) -> defer.Deferred[RunningServer]:
    """Start a zbifrost on 127.0.0.1 and `port` (default: an ephemeral one); fires with a
    RunningServer. A fixed `port` lets a test restart a server where its clients expect it.

    `settings` are Config attributes (e.g. zvafile, require_auth, tokens_file, rate), over
    those of `config_file` (a zbifrost YAML file) when one is given.
    The environment's WEBSOCKET_* variables are ignored.
    """
    if reactor is None:
        from twisted.internet import reactor as installed

        reactor = cast(IReactor, installed)  # it provides IReactorFromThreads too
    overrides = dict(settings, listen=[f"tcp:{int(port)}:interface=127.0.0.1"])
    if workspace is not None:
        overrides["workspace"] = workspace
    try:
        service = BifrostService(load_config(config_file, environ={}, overrides=overrides), reactor=reactor)
        service.startService()
    except Exception:
        return defer.fail()
    running = RunningServer(service)
    # once a broker is reached (or never, when a test's redis-server is down)
    return service.hub.channels.when_up().addCallback(lambda _: running)


class BifrostTestClient:
    """A zbifrost.client.twisted Client that never reconnects, seen frame by frame, for tests.

    `frames` logs every frame received. Requests are matched here, by a `_requestId` of their own,
    rather than by the Client's `request`: a test asserts on the frames themselves (the whole
    reply, errors and `_cached` included, from `request_frame`; a dispatch's progress and
    input_request, read with `next_event` and answered with `send` while the dispatch waits),
    which the Client would interpret (keep only the result, fail a dispatch that asks for input
    with nothing to answer it, time out after 30 s). Every frame that answers none of them waits
    for `next_frame`."""

    def __init__(self) -> None:
        self.info: dict[str, Any] | None = None  # connection_info data
        self.frames: list[dict[str, Any]] = []  # every frame received, in order
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed: defer.Deferred[tuple[int, str]] = defer.Deferred()  # fires with (code, reason)
        self._client: Client | None = None  # once connected
        self._ids = itertools.count(1)
        self._pending: dict[RequestId, defer.Deferred[dict[str, Any]]] = {}  # _requestId -> Deferred
        self._unsolicited: list[dict[str, Any]] = []  # frames that answer no request and nobody awaited yet
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], defer.Deferred[dict[str, Any]]]] = []

    @property
    def _protocol(self) -> WebSocketClientProtocol | None:
        """The connection's Autobahn protocol (for a test that aborts it or reads its handshake)."""
        return self._client.protocol if self._client is not None else None

    # -- the Client's hooks ----------------------------------------------------------------

    def _received(self, payload: bytes, is_binary: bool) -> None:
        frame = orjson.loads(payload)
        self.frames.append(frame)
        if self.info is None and frame.get("event") == "connection_info":
            self.info = frame["data"]
            return
        waiting = self._pending.pop(frame.get("_requestId"), None)
        if waiting is not None:
            if "error" in frame:
                waiting.errback(BifrostError(frame))
            else:
                waiting.callback(frame)
            return
        for index, (predicate, deferred) in enumerate(self._waiters):
            if predicate(frame):
                del self._waiters[index]
                deferred.callback(frame)
                return
        self._unsolicited.append(frame)

    def _closed(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        failure = ConnectionClosed(code, reason)
        waiting: list[defer.Deferred[Any]] = [*self._pending.values(), *(d for _, d in self._waiters)]
        for deferred in waiting:
            if not deferred.called:
                deferred.errback(failure)
        self._pending.clear()
        self._waiters.clear()
        self.closed.callback((code, reason))

    # -- requests --------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Send a dict as a JSON text frame (no _requestId is added)."""
        self.send_raw(orjson.dumps(message))

    def send_raw(self, payload: bytes, binary: bool = False) -> None:
        """Send bytes exactly as given, as a text frame or a binary one."""
        if self._protocol is None:
            raise ConnectionClosed(self.close_code, self.close_reason)
        self._protocol.sendMessage(payload, isBinary=binary)

    def _send_request(self, event: str, fields: JSON) -> defer.Deferred[JSON]:
        req_id = next(self._ids)
        deferred: defer.Deferred[JSON] = defer.Deferred()
        self._pending[req_id] = deferred
        self.send(dict(fields, event=event, _requestId=req_id))
        return deferred

    def request_frame(self, event: str, **fields: Any) -> defer.Deferred[dict[str, Any]]:
        """Send an event with a fresh _requestId; fires with the whole reply frame, errors
        included (use `request` to get just the result)."""
        def reply_of(failure: Failure) -> JSON:
            failure.trap(BifrostError)  # any other failure goes on
            return cast(BifrostError, failure.value).reply

        return self._send_request(event, fields).addErrback(reply_of)

    def request(self, event: str, **fields: Any) -> defer.Deferred[Any]:
        """Send an event; fires with the reply's `result`, or fails with BifrostError."""
        return self._send_request(event, fields).addCallback(lambda frame: frame["result"])

    def dispatch(self, zkey: str, **fields: Any) -> defer.Deferred[Any]:
        """Run a zUI command; fires with its `result`, or fails with BifrostError."""
        return self.request("dispatch", zKey=zkey, **fields)

    def next_frame(self, predicate: Callable[[dict[str, Any]], bool] | None = None
                   ) -> defer.Deferred[dict[str, Any]]:
        """The next frame that answers no request (an event, or a reply to `send`/`send_raw`),
        optionally the next one for which `predicate(frame)` is true."""
        predicate = predicate or (lambda frame: True)
        for index, frame in enumerate(self._unsolicited):
            if predicate(frame):
                del self._unsolicited[index]
                return defer.succeed(frame)
        if self._protocol is None:
            return defer.fail(ConnectionClosed(self.close_code, self.close_reason))
        deferred: defer.Deferred[JSON] = defer.Deferred()
        self._waiters.append((predicate, deferred))
        return deferred

    def next_event(self, event: str) -> defer.Deferred[dict[str, Any]]:
        return self.next_frame(lambda frame: frame.get("event") == event)

    def close(self, code: int = 1000) -> defer.Deferred[tuple[int, str]]:
        """Close the connection; fires with (code, reason) once it is closed."""
        if self._client is not None:
            self._client.close(code)
        return self.closed


def connect(url: str, token: str | None = None, origin: str | None = None, headers: dict[str, str] | None = None,
            protocols: list[str] | None = None, reactor: Any = None) -> defer.Deferred[BifrostTestClient]:
    """Open a connection (the token goes in the URL's query); fires with a BifrostTestClient once
    `connection_info` has arrived, or fails with ConnectionClosed (e.g. 1008 for a refused token)."""
    if token is not None:
        url = f"{url}{'&' if '?' in url else '?'}{urlencode({'token': token})}"
    test_client = BifrostTestClient()

    def connected(client: Client) -> BifrostTestClient:
        test_client._client = client
        return test_client

    def refused(failure: Failure) -> Failure:
        failure.trap(ClientError)  # the Client's `disconnected`: say it as the close it was
        return Failure(ConnectionClosed(test_client.close_code, test_client.close_reason))

    return connect_client(url, origin=origin, headers=headers, protocols=protocols, reconnect=False, reactor=reactor,
                          on_frame=test_client._received, on_close=test_client._closed).addCallbacks(connected, refused)
