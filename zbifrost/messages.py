"""The one place for message shapes: parse incoming frames, build replies, events and errors.

Inside the server a failed request is a `RequestError` exception; `error_frame` is where it
becomes the `{"error", "code", "_requestId"}` value of docs/protocol.md section 3. Nothing here
knows about sockets or zUI files. JSON goes through orjson (bytes in, bytes out), which parses
and encodes the small frames of this protocol several times faster than the standard library
(README, "Benchmark").
"""

from __future__ import annotations

from typing import Any

import orjson

# A JSON value as orjson decodes it (dict, list, str, int, float, bool or None): what clients send and
# what results hold is only known at run time.
JSONValue = Any
# A JSON object: a parsed message, a reply's result, an event's data.
JSON = dict[str, Any]
# The `_requestId` a client chose: a string or a number (`request_id`).
RequestId = str | int | float | None

# Error codes of docs/protocol.md section 3.
BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
UNKNOWN_EVENT = "unknown_event"
MISSING_FIELD = "missing_field"
UNKNOWN_COMMAND = "unknown_command"
FORBIDDEN = "forbidden"
INVALID_INPUT = "invalid_input"
RATE_LIMITED = "rate_limited"
TOO_MANY_REQUESTS = "too_many_requests"
TIMEOUT = "timeout"
COMMAND_FAILED = "command_failed"
SHUTTING_DOWN = "shutting_down"
NOT_AVAILABLE = "not_available"
BROKER_UNAVAILABLE = "broker_unavailable"
INVALID_TOKEN = "invalid_token"
PROXY_UNAVAILABLE = "proxy_unavailable"

_MAX_ECHO = 120  # longest piece of client text quoted back in an error message
MAX_DEPTH = 64  # levels of nesting in a client message (docs/protocol.md section 7)
_TOO_DEEP = "A message may nest at most 64 levels of objects and arrays"


class RequestError(Exception):
    """A request that gets an error reply; the connection stays open."""

    def __init__(self, code: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class CachedResult:
    """A result served from the query cache: its reply carries `"_cached": true`."""

    __slots__ = ("value",)

    def __init__(self, value: JSONValue) -> None:
        self.value = value


class _NoReply:
    """Returned by a handler whose event gets no reply (`input_response`)."""

    __slots__ = ()


NO_REPLY = _NoReply()


def quote(text: object) -> str:
    """Client-supplied text, shortened, for use inside an error message."""
    text = str(text)
    return text if len(text) <= _MAX_ECHO else text[:_MAX_ECHO] + "..."


def parse(payload: bytes) -> JSON:
    """Decode one frame (text or binary: both hold UTF-8 JSON) into a message dict.

    Raises RequestError(bad_json | bad_message). A message with no `event` takes its event
    from a string `action`, or else is a `dispatch` when it has a `zKey` or `cmd` (both the
    legacy forms of zBifrost 1.5 clients; a message with `event` never looks at them).
    """
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        if str(err).startswith("depth limit"):  # orjson's own limit, far past ours
            raise RequestError(BAD_MESSAGE, _TOO_DEEP) from None
        raise RequestError(BAD_JSON, "Invalid JSON: the frame must be one UTF-8 JSON object") from None
    if type(message) is not dict:
        raise RequestError(BAD_MESSAGE, "A message must be a JSON object")
    event = message.get("event")
    if type(event) is not str:
        action = message.get("action") if event is None else False  # a non-string event stays an error
        if type(action) is str:
            message["event"] = action
        elif action is None and ("zKey" in message or "cmd" in message):
            message["event"] = "dispatch"
        else:
            raise RequestError(BAD_MESSAGE, "A message needs a string field 'event'")
    return message


def check_depth(message: JSON, payload: bytes) -> None:
    """Raise RequestError(bad_message) when a parsed message nests past MAX_DEPTH levels.

    Only a frame with more brackets than the limit can nest past it, so the common case costs
    two counts. (Separate from `parse` so that the error can carry the message's _requestId.)"""
    if payload.count(b"{") + payload.count(b"[") > MAX_DEPTH and _deeper_than(message, MAX_DEPTH):
        raise RequestError(BAD_MESSAGE, _TOO_DEEP)


def _deeper_than(value: JSON | list[JSONValue], limit: int) -> bool:
    """Whether objects and arrays nest past `limit` levels in a parsed value (no recursion:
    the structure comes from a client)."""
    stack: list[tuple[JSON | list[JSONValue], int]] = [(value, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        for child in (value.values() if type(value) is dict else value):
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


_REQUEST_ID_TYPES = (str, int, float)


def request_id(message: JSON) -> RequestId:
    """The `_requestId` of a parsed message, to echo on every reply (None when absent).

    Raises RequestError(missing_field) for a value that is neither a string nor a number."""
    value = message.get("_requestId")
    if value is None or type(value) in _REQUEST_ID_TYPES:
        return value
    raise RequestError(MISSING_FIELD, "Invalid field '_requestId': expected a string or number")


def encode(frame: JSONValue) -> bytes:
    return orjson.dumps(frame, option=orjson.OPT_NON_STR_KEYS)


def result_frame(result: JSONValue, req_id: RequestId) -> bytes:
    if type(result) is CachedResult:
        frame = {"result": result.value, "_cached": True}
    else:
        frame = {"result": result}
    if req_id is not None:
        frame["_requestId"] = req_id
    return encode(frame)


def error_frame(err: RequestError, req_id: RequestId) -> bytes:
    frame: JSON = {"error": err.message, "code": err.code}
    if err.details is not None:
        frame["details"] = err.details
    if req_id is not None:
        frame["_requestId"] = req_id
    return encode(frame)


def event_frame(event: str, for_request_id: RequestId = None, **fields: JSONValue) -> bytes:
    """An event frame; one that belongs to a running dispatch names it in `_forRequestId`
    (never `_requestId`, which marks the final reply: docs/protocol.md section 4)."""
    frame: JSON = {"event": event}
    if for_request_id is not None:
        frame["_forRequestId"] = for_request_id
    frame.update(fields)
    return encode(frame)


def require_string(message: JSON, name: str, alias: str | None = None) -> str:
    """The string field `name` (or its alias) of a message, or a missing_field error."""
    value = message.get(name)
    if value is None and alias is not None:
        value = message.get(alias)
    if type(value) is not str or not value:
        raise RequestError(MISSING_FIELD, f"Missing or invalid field '{name}': expected a non-empty string")
    return value


def optional_field(message: JSON, name: str, kind: type | tuple[type, ...], kind_name: str) -> JSONValue:
    """An optional field that must have a given JSON type when present."""
    value = message.get(name)
    if value is not None and not isinstance(value, kind):
        raise RequestError(MISSING_FIELD, f"Invalid field '{name}': expected {kind_name}")
    return value
