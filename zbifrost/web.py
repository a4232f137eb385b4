"""The twisted.web Site on the WebSocket port (docs/protocol.md sections 1, 7 and 8).

`/` and `/ws` upgrade to WebSocket; an upgrade on any other path is a 404. Plain HTTP gets
`/healthz`, `/metrics` (unless `metrics_listen` moves it to a site of its own,
`build_metrics_site`), `/bifrost.js`, the demo page at `/`, at `/ws` the reason an upgrade
would be refused, and the server API's `POST /api/<method>` (zbifrost.server_api). Every TCP
connection starts its handshake deadline at accept (`_Channel`), and a request with a body is
refused with 413 before any of the body is read, except a `POST /api/<method>` whose
Content-Length is within `max_message_size` (its body is held in memory, never spooled to
disk). After an upgrade the socket belongs to Autobahn: nothing here sees WebSocket frames.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
from autobahn.twisted.resource import WebSocketResource
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.web import http, resource, server
from twisted.web.pages import notFound
from twisted.web.resource import IResource

from . import __version__, messages, server_api
from .channels.interfaces import ILifecycle
from .channels.sharded import ShardedBroker
from .interfaces import IConnectionTransport
from .logs import escape, stdout_is_the_journal
from .messages import JSON

if TYPE_CHECKING:
    from twisted.python.failure import Failure

    from .hub import Handshakes, Hub
    from .proxies import TrustedProxies
    from .wire.factory import WireFactory

API_PREFIX = b"/api/"

log = Logger()

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


def _is_upgrade(request: server.Request) -> bool:
    return (request.getHeader("upgrade") or "").lower() == "websocket"


class _WebSocketOnly(WebSocketResource):
    """Autobahn's resource, releasing the HTTP channel's idle timer once it has the socket.

    A plain request (no upgrade) to an upgrade path gets the status and reason an upgrade
    would get now: a browser's WebSocket reports every refused upgrade as 1006 alone, so a
    page asks here why. The Origin judged is the request's own, or, since browsers send none
    on a same-origin GET, the `origin` query parameter (`?origin=<location.origin>`)."""

    def __init__(self, hub: Hub, factory: WireFactory) -> None:
        super().__init__(factory)
        self.hub = hub

    def render(self, request: server.Request) -> bytes | int:
        if not _is_upgrade(request):
            return self._explain(request)
        channel = request.channel
        result = super().render(request)
        channel.setTimeout(None)
        # The HTTP channel and its request refer to each other and are done with: unlinked, they
        # are freed now. Left to the collector, every connection's would wait for a full pass,
        # and with connections coming and going those passes came every few seconds and paused
        # the reactor for tens of ms (bench/fanout.py --join-leave).
        channel.requests.clear()
        return result


    def _explain(self, request: server.Request) -> bytes:
        origin = request.getHeader("origin") or _first(request.args.get(b"origin"))
        refusal = self.hub.refusal(origin, request.getHeader("host"))
        if refusal is None:
            status, text = 426, "Upgrade Required: this path speaks WebSocket"
            request.setHeader(b"upgrade", b"websocket")
        else:
            _, status, text = refusal
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"access-control-allow-origin", b"*")  # any page may learn why it was refused
        request.setHeader(b"cache-control", b"no-store")
        return orjson.dumps({"status": status, "reason": text})


def _first(values: list[bytes] | None) -> str | None:
    return values[0].decode("utf-8", "replace") if values else None


class _Page(resource.Resource):
    """A leaf page answering GET, and HEAD with the same headers and no body (a load balancer's
    HEAD /healthz would otherwise log a warning from twisted.web each time)."""

    isLeaf = True

    render_GET: Callable[[server.Request], bytes]  # each page's own

    def render_HEAD(self, request: server.Request) -> bytes:
        body = self.render_GET(request)
        request.setHeader(b"content-length", b"%d" % len(body))
        return b""


class StaticFile(_Page):
    """One file of zbifrost/static, read when asked (they are small), never a path from the URL."""

    def __init__(self, name: str, content_type: bytes, shared: bool = False) -> None:
        super().__init__()
        self.path = os.path.join(STATIC_DIR, name)
        self.content_type = content_type
        self.shared = shared  # other sites' pages may import it (it holds no secrets)

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        if self.shared:
            request.setHeader(b"access-control-allow-origin", b"*")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        with open(self.path, "rb") as handle:
            return handle.read()


class _StatusPage(_Page):
    """A page computed from the hub's live state, never cached by proxies or browsers."""

    content_type: bytes

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub

    body: Callable[[server.Request, Hub], bytes]  # each page's own

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-store")
        return self.body(request, self.hub)


class Healthz(_StatusPage):
    content_type = b"application/json"

    def body(self, request: server.Request, hub: Hub) -> bytes:
        if hub.stopping:
            request.setResponseCode(503)
        health: JSON = {
            "status": "stopping" if hub.stopping else "ok",
            "version": __version__,
            "uptime_s": round(time.time() - hub.started, 3),
            "clients": len(hub.clients),
            "authenticated_clients": hub.authenticated_clients,
            "require_auth": hub.config.require_auth,
        }
        broker = hub.channels.broker
        if ILifecycle.providedBy(broker):
            health["broker"] = "up" if broker.up else "unavailable"
        if isinstance(broker, ShardedBroker):
            health["shards"] = broker.states()
        board = hub.worker_board  # set in a worker of --workers (zbifrost.workers)
        if board is not None:
            health = board.whole_server(health)
        return orjson.dumps(health)


class Metrics(_StatusPage):
    content_type = CONTENT_TYPE_LATEST.encode("ascii")

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.registry = hub.metrics.registry(hub)

    def body(self, request: server.Request, hub: Hub) -> bytes:
        board = hub.worker_board  # set in a worker of --workers: every worker's metrics
        return generate_latest(self.registry if board is None else board.registry)


class ServerApi(resource.Resource):
    """`POST /api/<method>` (docs/protocol.md section 12): the methods are zbifrost.server_api's;
    this carries them over HTTP. Refusals are logged with the method and the peer, never the
    key or the token."""

    isLeaf = True

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub

    def render_POST(self, request: _Request) -> bytes | int:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        hub = self.hub
        method = request.prepath[-1].decode("utf-8", "replace")
        refused = server_api.refusal(hub, request.getHeader("authorization"), request.getHeader("x-api-key"))
        if refused is not None:
            log.warn("Refused POST /api/{method} from {peer}: {reason}", method=escape(method),
                     peer=_peer(request), reason=refused.code)
            if refused.code == messages.INVALID_TOKEN:
                request.setHeader(b"www-authenticate", b"Bearer")
            return _api_error(request, server_api.STATUS[refused.code], refused)
        try:
            params = server_api.parse_body(request.content.getvalue())
        except messages.RequestError as err:
            return _api_error(request, 400, err)

        gone: list[Failure] = []  # the client left before the answer
        request.notifyFinish().addErrback(gone.append)

        def answered(result: JSON) -> None:
            if not gone:
                request.write(orjson.dumps(result))
                request.finish()

        def failed(failure: Failure) -> None:
            status, error = server_api.error_for(failure, method)
            if not gone:
                request.write(_api_error(request, status, error))
                request.finish()

        server_api.call(hub, method, params).addCallbacks(answered, failed)
        return server.NOT_DONE_YET


def _api_error(request: server.Request, status: int, error: messages.RequestError) -> bytes:
    request.setResponseCode(status)
    return orjson.dumps({"error": error.message, "code": error.code})


def _peer(request: _Request) -> str:
    """The client's address, as the access log names it (behind a trusted proxy: the forwarded one)."""
    host = getattr(request.getClientAddress(), "host", None)
    return "-" if host is None else request.site.trusted_proxies.client_address(host, request.getHeader)


class Root(resource.Resource):
    """`/`: the WebSocket endpoint for upgrades, the demo page otherwise; routes the rest."""

    def __init__(self, hub: Hub, factory: WireFactory) -> None:
        super().__init__()
        self.websocket = _WebSocketOnly(hub, factory)
        self.page = StaticFile("index.html", b"text/html; charset=utf-8")
        self.routes: dict[bytes, IResource] = {
            b"ws": self.websocket,
            b"healthz": Healthz(hub),
            b"bifrost.js": StaticFile("bifrost.js", b"text/javascript; charset=utf-8", shared=True),
            b"demo.js": StaticFile("demo.js", b"text/javascript; charset=utf-8"),
            b"forms.js": StaticFile("forms.js", b"text/javascript; charset=utf-8"),
            b"render.js": StaticFile("render.js", b"text/javascript; charset=utf-8"),
            b"demo.css": StaticFile("demo.css", b"text/css; charset=utf-8"),
        }
        self.api = ServerApi(hub)
        if not hub.config.metrics_listen:
            self.routes[b"metrics"] = Metrics(hub)

    def getChildWithDefault(self, path: bytes, request: _Request) -> IResource:
        if path == b"" and not request.postpath:
            return self.websocket if _is_upgrade(request) else self.page
        child = self.routes.get(b"/".join([path, *request.postpath]))
        if path == API_PREFIX[1:-1] and len(request.postpath) == 1:
            child = self.api
        if child is None or (_is_upgrade(request) and child is not self.websocket):
            return notFound()
        request.prepath.extend(request.postpath)
        del request.postpath[:]
        return child

    def render(self, request: _Request) -> bytes | int:  # reached only for a request without a path
        return self.getChildWithDefault(b"", request).render(request)


def _access_log_line(timestamp: str, request: _Request) -> str:
    """An access-log line without the query string, where a `?token=` would otherwise land, with
    the path escaped and cut like any log field (twisted.web refuses control characters in it),
    and without its time on the systemd journal, which has its own."""
    path = escape(request.uri.split(b"?", 1)[0].decode("ascii", "replace"))
    client = _peer(request)
    timestamp = timestamp if request.site.timestamped else "-"
    return (f'{client} - - {timestamp} "{request.method.decode("ascii", "replace")} {path} '
            f'{request.clientproto.decode("ascii", "replace")}" {request.code} {request.sentLength or "-"}')


_TOO_LARGE = (b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n"
              b"Cache-Control: no-store\r\n\r\n")


class _Request(server.Request):
    """A request of the site on the WebSocket port."""

    site: _Site
    content: io.BytesIO
    prepath: list[bytes]  # set, like postpath, before the resources see the request
    postpath: list[bytes]

    def gotLength(self, length: int | None) -> None:
        """Hold the body in memory: `_Channel` lets only a small one through (twisted.web would
        spool one past 100 kB to a temporary file)."""
        self.content = io.BytesIO()


class _Channel(http.HTTPChannel):
    """One TCP connection while it speaks HTTP: its handshake deadline runs from the accept
    (`Handshakes`), however slowly its bytes arrive, and no request body is read but that of a
    `POST /api/<method>` within `max_message_size`."""

    site: _Site
    transport: IConnectionTransport
    _request_line: list[bytes] | tuple[()] = ()  # method and target of the request whose headers are being received
    _awaiting_request_line = True

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.handshakes.begin(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.site.handshakes.end(self.transport)
        super().connectionLost(reason)

    def lineReceived(self, line: bytes) -> None:
        if self._awaiting_request_line and line:  # twisted.web skips a blank line before it
            self._awaiting_request_line = False
            self._request_line = line.split(b" ", 2)[:2]
        super().lineReceived(line)

    def allHeadersReceived(self) -> None:
        self._awaiting_request_line = True
        # `length` is 0 without a body, None for a chunked one: refuse before twisted.web
        # allocates the body's buffer (a temporary file past 100 kB)
        if self.length != 0 and not self._may_send_body():
            self.transport.write(_TOO_LARGE)
            self.loseConnection()  # stops reading: the body stays unread
            return
        super().allHeadersReceived()

    def _may_send_body(self) -> bool:
        """A POST /api/<method> whose Content-Length (chunked bodies have none) is within the limit."""
        if len(self._request_line) != 2:
            return False
        method, target = self._request_line
        return (method == b"POST" and target.split(b"?", 1)[0].startswith(API_PREFIX)
                and self.length is not None and self.length <= self.site.hub.config.max_message_size)


class _Site(server.Site):
    """The Site on the WebSocket port, with what its HTTP connections need of the hub."""

    hub: Hub  # its config, which SIGHUP replaces
    handshakes: Handshakes
    trusted_proxies: TrustedProxies
    timestamped: bool  # access-log lines carry their time (not on the systemd journal)
    # HTTP/1.1 only, not twisted.web's HTTP/2-capable wrapper: the WebSocket upgrade needs nothing else
    protocol = _Channel  # type: ignore[assignment]
    requestFactory = _Request


def build_site(hub: Hub, factory: WireFactory, timeout: float) -> server.Site:
    """The Site serving everything on the port, upgrading to `factory`'s WebSocket protocol;
    `timeout` closes idle HTTP connections."""
    site = _Site(Root(hub, factory), timeout=timeout, logFormatter=_access_log_line)
    site.hub = hub
    site.handshakes = hub.handshakes
    site.trusted_proxies = hub.trusted_proxies
    site.timestamped = not stdout_is_the_journal()
    site.displayTracebacks = False
    site.noisy = False
    return site


class _MetricsRoot(resource.Resource):
    """The root of the metrics site: its children, and a 404 for anything else."""

    def getChild(self, path: bytes, request: server.Request) -> IResource:
        return notFound()


def build_metrics_site(hub: Hub) -> server.Site:
    """The Site of `--metrics-listen`: `/metrics` and `/healthz` only, without access-log lines
    (a scrape every few seconds would fill the log)."""
    root = _MetricsRoot()
    root.putChild(b"metrics", Metrics(hub))
    root.putChild(b"healthz", Healthz(hub))
    site = server.Site(root)
    site.log = lambda request: None  # type: ignore[method-assign]  # no access log
    site.displayTracebacks = False
    return site
