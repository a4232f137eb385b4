"""The server API's methods (docs/protocol.md section 12): who may call them (`refusal`), the
checks of each method's body, and running it against the hub (`call`), which fires with the
method's result object or fails with a RequestError whose code gives the HTTP status (`STATUS`).
What acts on every process goes through the hub's control (zbifrost.control). zbifrost.web
carries the HTTP: routing, the body limit, writing the answer.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import messages
from .auth import InvalidToken, bearer_token
from .channels import channel_of, idempotency_key_of, valid_channel
from .channels.rules import valid_pattern
from .events.channels import channel_presence, since_of, stats_of
from .logs import log_failure_with_id
from .messages import BAD_MESSAGE, COMMAND_FAILED, JSON, MISSING_FIELD, UNKNOWN_EVENT, RequestError

if TYPE_CHECKING:
    from .hub import Hub

MAX_BATCH = 100  # commands of one `batch`
MAX_BROADCAST = 100  # channels of one `broadcast`
MAX_HISTORY_LIMIT = 1000
DEFAULT_HISTORY_LIMIT = 100
MAX_REASON = 100  # characters of a `disconnect` reason
MAX_REASON_BYTES = 123  # what a WebSocket close frame holds of it
DEFAULT_REASON = "Disconnected"

# HTTP status of each error code a method fails with (any other failure: 500, logged with an id)
STATUS = {messages.BAD_MESSAGE: 400, messages.MISSING_FIELD: 400, messages.NOT_AVAILABLE: 400,
          messages.INVALID_TOKEN: 401, messages.FORBIDDEN: 403, messages.UNKNOWN_EVENT: 404,
          messages.BROKER_UNAVAILABLE: 503}

log = Logger()

Method = Callable[["Hub", JSON], "defer.Deferred[JSON]"]


# -- who may call ----------------------------------------------------------------------------

def refusal(hub: Hub, authorization: str | None, api_key: str | None) -> RequestError | None:
    """Why a request with these `Authorization` and `X-API-Key` headers may not call the API:
    `invalid_token` (401) or `forbidden` (403); None when it may. The key is compared in
    constant time, and only when `websocket.api_key` is set."""
    key = hub.config.api_key
    if key is not None and api_key is not None and hmac.compare_digest(api_key.encode(), key.encode()):
        return None
    token = bearer_token(authorization)
    identity = None
    if token and hub.api_tokens is not None:
        try:
            identity = hub.api_tokens.identify(token)
        except InvalidToken:
            pass  # refused just below
    if identity is None:
        return RequestError(messages.INVALID_TOKEN, "A valid X-API-Key or bearer token is required")
    if identity.role not in hub.config.api_roles:
        return RequestError(messages.FORBIDDEN, f"Role {identity.role!r} may not use the server API")
    return None


# -- running a method ------------------------------------------------------------------------

def parse_body(body: bytes) -> JSON:
    """The JSON object of a request's body, or RequestError(bad_message)."""
    try:
        params = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError(BAD_MESSAGE, "The body must be one JSON object") from None
    if type(params) is not dict:
        raise RequestError(BAD_MESSAGE, "The body must be one JSON object")
    messages.check_depth(params, body)
    return params


def call(hub: Hub, method: str, params: JSON) -> defer.Deferred[JSON]:
    """Run `method` with its `params`; fires with its result, or fails (RequestError or another)."""
    run = METHODS.get(method)
    if run is None:
        return defer.fail(RequestError(UNKNOWN_EVENT, f"Unknown API method: {messages.quote(method)}"))
    return defer.maybeDeferred(run, hub, params)


def error_for(failure: Failure, method: str) -> tuple[int, RequestError]:
    """The HTTP status and error of a failed method; one that is no RequestError is logged with an id."""
    value = failure.value
    if isinstance(value, RequestError):
        return STATUS.get(value.code, 400), value
    error_id = log_failure_with_id(log, failure, "API method {method} failed (error id {error_id})", method=method)
    return 500, RequestError(COMMAND_FAILED, f"The {method} failed (error id {error_id})")


# -- the checks of bodies --------------------------------------------------------------------

def _data(params: JSON) -> Any:
    if "data" not in params:
        raise RequestError(MISSING_FIELD, "Missing field 'data'")
    return params["data"]


def _target(params: JSON) -> dict[str, str]:
    """{"user": name} or {"client": client_id}: exactly one of them."""
    given = [name for name in ("user", "client") if name in params]
    if len(given) != 1 or type(params[given[0]]) is not str or not params[given[0]]:
        raise RequestError(MISSING_FIELD, "Expected exactly one of 'user' and 'client', a non-empty string")
    return {given[0]: params[given[0]]}


def _reason(params: JSON) -> str:
    reason = params.get("reason", DEFAULT_REASON)
    if (type(reason) is not str or not 0 < len(reason) <= MAX_REASON or not reason.isprintable()
            or len(reason.encode("utf-8")) > MAX_REASON_BYTES):
        raise RequestError(MISSING_FIELD, f"Invalid field 'reason': 1-{MAX_REASON} printable characters "
                                          f"({MAX_REASON_BYTES} bytes in UTF-8)")
    return reason


def _limit(params: JSON) -> int:
    limit = params.get("limit", DEFAULT_HISTORY_LIMIT)
    if type(limit) is not int or not 1 <= limit <= MAX_HISTORY_LIMIT:
        raise RequestError(MISSING_FIELD, f"Invalid field 'limit': an integer from 1 to {MAX_HISTORY_LIMIT}")
    return limit


def _list(params: JSON, name: str, most: int) -> list[Any]:
    value = params.get(name)
    if type(value) is not list or not 1 <= len(value) <= most:
        raise RequestError(MISSING_FIELD, f"Invalid field '{name}': a list of 1 to {most} entries")
    return value


# -- the methods -----------------------------------------------------------------------------

def publish(hub: Hub, params: JSON) -> defer.Deferred[JSON]:
    return hub.publish_from_backend(channel_of(params), _data(params), idempotency_key_of(params))


def broadcast(hub: Hub, params: JSON) -> defer.Deferred[JSON]:
    channels = _list(params, "channels", MAX_BROADCAST)
    if not all(valid_channel(channel) for channel in channels):
        raise RequestError(MISSING_FIELD, "Invalid field 'channels': names of 1-128 letters, digits and _-.:/@|+=")
    data, idempotency_key = _data(params), idempotency_key_of(params)  # a key is per channel

    def one(channel: str) -> defer.Deferred[JSON]:
        def failed(failure: Failure) -> JSON:
            _, error = error_for(failure, "broadcast")
            return {"channel": channel, "error": error.message, "code": error.code}

        return hub.publish_from_backend(channel, data, idempotency_key).addErrback(failed)

    gathered = defer.gatherResults([one(channel) for channel in channels])
    return gathered.addCallback(lambda results: {"results": results})


def disconnect(hub: Hub, params: JSON) -> defer.Deferred[JSON]:
    target, reason = _target(params), _reason(params)
    return hub.control.disconnect(target, reason).addCallback(lambda _: {})


def unsubscribe(hub: Hub, params: JSON) -> defer.Deferred[JSON]:
    target, channel = _target(params), channel_of(params)
    return hub.control.unsubscribe(target, channel).addCallback(lambda _: {})


def presence(hub: Hub, params: JSON) -> defer.Deferred[JSON]:
    return channel_presence(hub, channel_of(params))


def presence_stats(hub: Hub, params: JSON) -> defer.Deferred[JSON]:
    return channel_presence(hub, channel_of(params)).addCallback(stats_of)


def history(hub: Hub, params: JSON) -> defer.Deferred[JSON]:
    channel, since, limit = channel_of(params), since_of(params), _limit(params)

    def result(found: Any) -> JSON:
        stream, recovered = found
        kept = stream.publications[:limit] if since is not None else stream.publications[-limit:]
        publications = []
        for publication in kept:
            message = orjson.loads(publication.frame)
            publications.append({"offset": publication.offset, "data": message["data"], "from": message["from"]})
        answer: JSON = {"channel": channel, "epoch": stream.epoch, "offset": stream.offset,
                        "publications": publications}
        if recovered is not None:
            answer["recovered"] = recovered
        return answer

    return hub.channels.read_history(channel, since).addCallback(result)


def channels(hub: Hub, params: JSON) -> defer.Deferred[JSON]:
    pattern = params.get("pattern")
    if pattern is not None and not valid_pattern(pattern):
        raise RequestError(MISSING_FIELD, "Invalid field 'pattern': a glob of channel-name characters and *?[]!")

    def merged(answers: list[dict[str, int]]) -> JSON:
        counts: dict[str, int] = {}
        for answer in answers:
            for name, count in answer.items():
                counts[name] = counts.get(name, 0) + count
        return {"channels": {name: {"subscribers": count} for name, count in sorted(counts.items())},
                "nodes": len(answers)}

    return hub.control.ask({"what": "channels", "pattern": pattern}).addCallback(merged)


def info(hub: Hub, params: JSON) -> defer.Deferred[JSON]:
    return hub.control.ask({"what": "info"}).addCallback(
        lambda answers: {"nodes": sorted(answers, key=lambda node: node["node"])})


def batch(hub: Hub, params: JSON) -> defer.Deferred[JSON]:
    commands = _list(params, "commands", MAX_BATCH)
    replies: list[JSON] = []

    @defer.inlineCallbacks
    def run_all() -> Any:
        for command in commands:
            method = command.get("method") if type(command) is dict else None
            command_params = command.get("params", {}) if type(command) is dict else None
            try:
                if type(method) is not str or type(command_params) is not dict:
                    raise RequestError(MISSING_FIELD, 'Each command must be {"method": string, "params": object}')
                if method == "batch":
                    raise RequestError(BAD_MESSAGE, "A batch cannot hold a batch")
                replies.append((yield call(hub, method, command_params)))
            except Exception:
                _, error = error_for(Failure(), method if type(method) is str else "batch")
                replies.append({"error": error.message, "code": error.code})
        return {"replies": replies}

    return run_all()


METHODS: dict[str, Method] = {
    "publish": publish, "broadcast": broadcast, "disconnect": disconnect, "unsubscribe": unsubscribe,
    "presence": presence, "presence_stats": presence_stats, "history": history, "channels": channels,
    "info": info, "batch": batch}
