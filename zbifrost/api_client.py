"""A synchronous Python client of the server API (docs/protocol.md section 12), for the
application's backend (a Django or Flask view, a job): one method per API method, each a
`POST /api/<method>` answering the method's result as a dict, or raising `ApiError` with the
error's `code` and the HTTP `status`.

    api = ApiClient("http://127.0.0.1:18774", api_key=os.environ["ZBIFROST_API_KEY"])
    api.publish("orders", {"id": 7})          # {"channel", "epoch", "offset"}
    api.disconnect(user="alice")              # every connection of alice, on every process

It uses only the standard library (urllib.request), so that calling zbifrost adds no dependency
to the application; a call opens one HTTP connection.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

__all__ = ["ApiClient", "ApiError"]

UNREACHABLE = "unreachable"  # the `code` of an ApiError when no HTTP answer came (status 0)


class ApiError(Exception):
    """An error answer: `code` (`bad_message`, `missing_field`, `not_available`, `invalid_token`,
    `forbidden`, `unknown_event`, `broker_unavailable`, ...), `status` (the HTTP status; 0 when
    the server could not be reached, with `code` "unreachable") and `message`."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(f"{code} ({status}): {message}")
        self.code = code
        self.status = status
        self.message = message


class ApiClient:
    """The server API of the zbifrost at `url` (http(s)://host:port), authorized by `api_key`
    (sent as X-API-Key) or `token` (a bearer token of a role in `api_roles`)."""

    def __init__(self, url: str, api_key: str | None = None, token: str | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json"}
        if api_key is not None:
            self._headers["X-API-Key"] = api_key
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST /api/<method> with `params` as the body; the result, or ApiError."""
        request = urllib.request.Request(f"{self.url}/api/{method}", data=json.dumps(params or {}).encode("utf-8"),
                                         headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                result: dict[str, Any] = json.load(response)
                return result
        except urllib.error.HTTPError as err:
            raise _error_of(err) from None
        except OSError as err:  # URLError, a refused connection, a timeout
            raise ApiError(UNREACHABLE, 0, str(err)) from None

    # -- one method per API method ---------------------------------------------------------

    def publish(self, channel: str, data: Any) -> dict[str, Any]:
        return self.call("publish", {"channel": channel, "data": data})

    def broadcast(self, channels: list[str], data: Any) -> dict[str, Any]:
        return self.call("broadcast", {"channels": channels, "data": data})

    def disconnect(self, user: str | None = None, client: str | None = None, reason: str | None = None
                   ) -> dict[str, Any]:
        """Close every connection of `user` (or the one of `client`) with 1008 and `reason`."""
        return self.call("disconnect", _given(user=user, client=client, reason=reason))

    def unsubscribe(self, channel: str, user: str | None = None, client: str | None = None) -> dict[str, Any]:
        return self.call("unsubscribe", _given(channel=channel, user=user, client=client))

    def presence(self, channel: str) -> dict[str, Any]:
        return self.call("presence", {"channel": channel})

    def presence_stats(self, channel: str) -> dict[str, Any]:
        return self.call("presence_stats", {"channel": channel})

    def history(self, channel: str, since: dict[str, Any] | None = None, limit: int | None = None) -> dict[str, Any]:
        """since: {"epoch", "offset"}; limit: 1-1000 (the server's default: 100)."""
        return self.call("history", _given(channel=channel, since=since, limit=limit))

    def channels(self, pattern: str | None = None) -> dict[str, Any]:
        return self.call("channels", _given(pattern=pattern))

    def info(self) -> dict[str, Any]:
        return self.call("info")

    def batch(self, commands: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Run (method, params) commands in order; their replies, each a result or {"error", "code"}."""
        replies: list[dict[str, Any]] = self.call(
            "batch", {"commands": [{"method": method, "params": params} for method, params in commands]})["replies"]
        return replies


def _given(**params: Any) -> dict[str, Any]:
    return {name: value for name, value in params.items() if value is not None}


def _error_of(err: urllib.error.HTTPError) -> ApiError:
    """The ApiError of an error answer; one without the API's JSON (a 413, a proxy's page) is named by its status."""
    try:
        answer = json.loads(err.read())
        return ApiError(str(answer["code"]), err.code, str(answer["error"]))
    except (ValueError, KeyError, TypeError):
        return ApiError(f"http_{err.code}", err.code, err.reason)
