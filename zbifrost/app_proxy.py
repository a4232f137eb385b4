"""The requests zbifrost makes to the application behind it, and what their answers mean
(docs/protocol.md section 13): the connect proxy, `zHTTP` commands and the subscribe proxy.

Every request is a signed JSON `POST` (`X-Zbifrost-Timestamp`, `X-Zbifrost-Signature: sha256=<hex
HMAC-SHA256 of "<timestamp>.<body>">`) on Twisted's own HTTP client, over one pool of persistent
connections: no blocking call, no thread. An answer is read up to a limit (`max_message_size`)
and no further. A timeout, a connection that fails, a 5xx or an answer that is not the documented
JSON is logged at warning with the URL and the status (never a header value, never the secret)
and becomes `proxy_unavailable`, except where a command's contract says otherwise. Nothing here
knows about WebSocket frames; callers pass plain values and get plain values back.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import orjson
from twisted.internet import defer
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from . import compat
from .auth import Identity, identity_problem
from .logs import escape
from .messages import FORBIDDEN, INVALID_INPUT, JSON, PROXY_UNAVAILABLE, TIMEOUT, JSONValue, RequestError, quote

if TYPE_CHECKING:
    from twisted.python.failure import Failure
    from twisted.web.iweb import IResponse

    from .app_proxy_settings import ProxySettings
    from .interfaces import IReactor

log = Logger()

UNAUTHORIZED = (1008, "Unauthorized")
UNAVAILABLE = (1011, "Internal error")
MAX_IDLE_CONNECTIONS = 32  # kept open per application host and port for the next requests (Twisted's default: 2)
MAX_REASON = 100  # characters of a refusal reason the application gives
_CLOSE_REASON_BYTES = 123  # what a WebSocket close frame can carry
_PASSED_CODES = (FORBIDDEN, INVALID_INPUT)  # the error codes a zHTTP answer may give
_NOT_JSON = object()  # an answer's body that is not JSON, or is over the limit


class Unavailable(Exception):
    """The application did not answer: str(err) says why, fit for the log."""


class TimedOut(Unavailable):
    """No answer within the timeout."""


class CommandFailed(Exception):
    """A zHTTP command's answer is neither a result nor an error it may pass on."""


@dataclass(frozen=True)
class Answer:
    status: int
    data: JSONValue  # the parsed body, or _NOT_JSON
    problem: str | None = None  # why data is _NOT_JSON


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `X-Zbifrost-Signature` value of a request."""
    return "sha256=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


class _BoundedBody(Protocol):
    """Collects a response body up to `limit` bytes; past that it stops reading (the pool then
    drops the connection) and fires with None."""

    def __init__(self, limit: int, finished: defer.Deferred[bytes | None]) -> None:
        self.limit = limit
        self.finished = finished
        self.chunks: list[bytes] = []
        self.size = 0
        self.over = False

    def dataReceived(self, data: bytes) -> None:
        if self.over:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.over = True
            self.chunks = []
            self.stop()
        else:
            self.chunks.append(data)

    def stop(self) -> None:
        cast(IPushProducer, self.transport).stopProducing()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self.finished.called:  # cancelled: the timeout
            return
        if self.over:
            self.finished.callback(None)
        elif reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(Unavailable(f"the answer broke off ({type(reason.value).__name__})"))


@implementer(IBodyProducer)
class _Body:
    """A request body written at once (Twisted's FileBodyProducer reads a file in a cooperative
    task: reactor turns and timers for a few hundred bytes)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> defer.Deferred[None]:
        consumer.write(self.body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def _read(response: IResponse, limit: int) -> defer.Deferred[Answer]:
    reader: _BoundedBody

    def stop(_: defer.Deferred[bytes | None]) -> None:
        reader.stop()

    finished: defer.Deferred[bytes | None] = defer.Deferred(stop)
    reader = _BoundedBody(limit, finished)
    response.deliverBody(reader)
    return finished.addCallback(_parsed, response.code, limit)


def _parsed(body: bytes | None, status: int, limit: int) -> Answer:
    if body is None:
        return Answer(status, _NOT_JSON, f"the answer is over {limit} bytes")
    try:
        return Answer(status, orjson.loads(body))
    except orjson.JSONDecodeError:
        return Answer(status, _NOT_JSON, "the answer is not JSON")


class Application:
    """The application's three proxies, as the `proxy:` section (ProxySettings) names them."""

    def __init__(self, settings: ProxySettings, reactor: IReactor, max_answer: int) -> None:
        self.settings = settings
        self.reactor = reactor
        self.max_answer = max_answer  # bytes of an answer read at most: max_message_size (a reload updates it)
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = MAX_IDLE_CONNECTIONS
        compat.quiet_connection_pool(self.pool)
        self._agent = Agent(reactor, pool=self.pool)

    # -- one request -----------------------------------------------------------------------

    def post(self, url: str, payload: JSON, timeout: float | None = None,
             headers: dict[bytes, list[bytes]] | None = None) -> defer.Deferred[Answer]:
        """POST `payload` signed to `url`; fires with the Answer (its body read up to `max_answer`
        bytes) or fails with Unavailable (TimedOut past `timeout`, default the section's)."""
        body = orjson.dumps(payload)
        timestamp = str(int(time.time()))
        sent = Headers(headers or {})
        sent.setRawHeaders(b"content-type", [b"application/json"])
        sent.setRawHeaders(b"x-zbifrost-timestamp", [timestamp.encode("ascii")])
        sent.setRawHeaders(b"x-zbifrost-signature", [signature(self.settings.secret, timestamp, body).encode("ascii")])
        seconds = self.settings.timeout if timeout is None else timeout
        asked: defer.Deferred[Any] = self._agent.request(b"POST", url.encode("utf-8"), sent, _Body(body))
        asked.addCallback(_read, self.max_answer)
        asked.addTimeout(seconds, self.reactor, onTimeoutCancel=_timed_out)
        return asked.addErrback(_unavailable)

    # -- what the answers mean -------------------------------------------------------------

    def connect(self, facts: JSON, headers: Mapping[str, str]) -> defer.Deferred[Identity | tuple[int, str]]:
        """Ask the connect proxy about an upgrade (`facts`: client_id, remote_addr, origin, path;
        `headers`: the upgrade's, by lower-case name, of which only the listed ones are sent);
        fires with the Identity it authenticates, or the close (code, reason) refusing it."""
        connect = self.settings.connect
        assert connect is not None
        url = connect.url
        copied = {name.encode("latin-1"): [headers[name].encode("latin-1", "replace")]
                  for name in connect.headers if name in headers}

        def judge(answer: Answer) -> Identity | tuple[int, str]:
            if answer.status in (401, 403):
                return UNAUTHORIZED
            data = answer.data
            if answer.status != 200 or type(data) is not dict:
                return _unusable(url, answer, UNAVAILABLE)
            if type(data.get("result")) is dict:
                user, role = data["result"].get("user"), data["result"].get("role", "user")
                problem = identity_problem(user, role)
                if problem is not None:
                    log.warn("The connect proxy {url} named an identity zbifrost refuses: {problem}", url=url,
                             problem=problem)
                    return UNAUTHORIZED
                return Identity(user=user, role=role)
            if type(data.get("disconnect")) is dict:
                return 1008, close_reason(data["disconnect"].get("reason"))
            return _unusable(url, answer, UNAVAILABLE)

        def failed(failure: Failure) -> tuple[int, str]:
            failure.trap(Unavailable)
            _log_unavailable(url, failure.value)
            return UNAVAILABLE

        return self.post(url, facts, headers=copied).addCallbacks(judge, failed)

    def may_subscribe(self, facts: JSON) -> defer.Deferred[None]:
        """Ask the subscribe proxy (`facts`: channel, user, role, client_id); fires with None when
        it allows, fails with RequestError forbidden or proxy_unavailable."""
        url = self.settings.subscribe_url
        assert url is not None

        def judge(answer: Answer) -> None:
            data = answer.data
            if answer.status == 403 or (type(data) is dict and "error" in data and answer.status in (200, 403)):
                raise RequestError(FORBIDDEN, f"Not allowed to subscribe on channel {quote(facts['channel'])}")
            if answer.status != 200 or type(data) is not dict or type(data.get("result")) is not dict:
                _unusable(url, answer, None)
                raise _unavailable_error()

        return self.post(url, facts).addCallbacks(judge, _as_unavailable, errbackArgs=(url,))

    def command(self, url: str, facts: JSON, timeout: float | None) -> defer.Deferred[JSONValue]:
        """Run a `zHTTP` command (`facts`: zKey, zBlock, args, data, user, role, client_id); fires
        with its result or fails with RequestError (the answer's forbidden or invalid_input,
        command_failed, timeout or proxy_unavailable)."""

        def judge(answer: Answer) -> JSONValue:
            data = answer.data
            if answer.status == 200 and data is not _NOT_JSON:
                return data
            if (400 <= answer.status < 500 and type(data) is dict and type(data.get("error")) is str
                    and data.get("code") in _PASSED_CODES):
                details = data.get("details")
                raise RequestError(data["code"], data["error"], details if type(details) is dict else None)
            # the session logs it with an error id, which the client's command_failed quotes
            raise CommandFailed(f"zHTTP {url} answered {answer.status}: "
                                f"{answer.problem or 'neither a result nor a forbidden/invalid_input error'}")

        def failed(failure: Failure) -> JSONValue:
            failure.trap(Unavailable)
            _log_unavailable(url, failure.value)
            if failure.check(TimedOut):
                raise RequestError(TIMEOUT, "The command did not finish within its timeout")
            raise _unavailable_error()

        return self.post(url, facts, timeout).addCallbacks(judge, failed)


def close_reason(given: object) -> str:
    """The close reason of a refusal: the application's own (escaped, at most 100 characters and
    what a close frame can carry), or `Unauthorized`."""
    if not isinstance(given, str) or not given.strip():
        return UNAUTHORIZED[1]
    reason = escape(given, limit=None)[:MAX_REASON]
    while len(reason.encode("utf-8", "replace")) > _CLOSE_REASON_BYTES:
        reason = reason[:-1]
    return reason.encode("utf-8", "replace").decode("utf-8")


def _timed_out(result: object, seconds: float) -> None:
    """addTimeout's onTimeoutCancel: whatever the cancelled request failed with, it timed out."""
    raise TimedOut(f"no answer within {seconds:g} s")


def _unavailable(failure: Failure) -> Failure:
    """Any failure of a request as Unavailable."""
    if failure.check(Unavailable):
        return failure
    raise Unavailable(f"{type(failure.value).__name__}: {failure.getErrorMessage()}")


def _log_unavailable(url: str, err: object) -> None:
    log.warn("The application at {url} is unavailable: {problem}", url=url, problem=str(err))


def _unusable(url: str, answer: Answer, outcome: Any) -> Any:
    log.warn("The application at {url} answered {status}: {problem}", url=url, status=answer.status,
             problem=answer.problem or "not the documented JSON")
    return outcome


def _unavailable_error() -> RequestError:
    return RequestError(PROXY_UNAVAILABLE, "The application did not answer; retry later")


def _as_unavailable(failure: Failure, url: str) -> None:
    failure.trap(Unavailable)
    _log_unavailable(url, failure.value)
    raise _unavailable_error()
