"""The config file's `proxy:` section: where the application behind zbifrost answers the connect,
command (`zHTTP`) and subscribe proxies, and the secret zbifrost signs its requests with
(docs/protocol.md section 13).

`parse_proxy_settings` checks the mapping and reads the secret file at once, so that a wrong
section stops start-up with one line naming the key at fault; it never logs or repeats the
secret. Nothing here sends a request (zbifrost.app_proxy does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .settings import ConfigError, check_mapping

MIN_SECRET_BYTES = 32
DEFAULT_TIMEOUT = 5.0
_KEYS = ("secret_file", "timeout", "connect", "subscribe")
_EXAMPLE = '{secret_file: proxy.secret, connect: {url: "http://127.0.0.1:8000/zbifrost/connect"}}'


@dataclass(frozen=True)
class ConnectProxy:
    url: str
    headers: tuple[str, ...] = ()  # request headers copied from the upgrade, lower-cased


@dataclass(frozen=True)
class ProxySettings:
    """The checked `proxy:` section."""
    secret: bytes = field(repr=False)  # never in a log line or a traceback
    timeout: float = DEFAULT_TIMEOUT
    connect: ConnectProxy | None = None
    subscribe_url: str | None = None


def url_problem(url: object) -> str | None:
    """What is wrong with a URL the application answers at, or None: it must be http(s)://host..."""
    if not isinstance(url, str) or not url:
        return "expected a URL such as http://127.0.0.1:8000/zbifrost"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return f"{url!r} is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} must be an http:// or https:// URL with a host"
    return None


def parse_proxy_settings(where: str, raw: Any, folder: str) -> ProxySettings | None:
    """The `proxy:` mapping as ProxySettings (its secret file, relative to `folder`, read now), None
    for an empty section, or a one-line ConfigError."""
    if raw is None:
        return None
    check_mapping(where, raw, _KEYS, _EXAMPLE)
    settings: dict[str, Any] = {"secret": _secret(f"{where}.secret_file", raw.get("secret_file"), folder)}
    if "timeout" in raw:
        timeout = raw["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"{where}.timeout: expected a number of seconds greater than zero, got {timeout!r}")
        settings["timeout"] = float(timeout)
    if raw.get("connect") is not None:
        connect = raw["connect"]
        check_mapping(f"{where}.connect", connect, ("url", "headers"), "{url: http://..., headers: [Cookie]}")
        headers = connect.get("headers", [])
        if not isinstance(headers, list) or not all(isinstance(name, str) and name for name in headers):
            raise ConfigError(f"{where}.connect.headers: expected a list of header names such as [Cookie], "
                              f"got {headers!r}")
        settings["connect"] = ConnectProxy(_url(f"{where}.connect.url", connect.get("url")),
                                           tuple(name.lower() for name in headers))
    if raw.get("subscribe") is not None:
        subscribe = raw["subscribe"]
        check_mapping(f"{where}.subscribe", subscribe, ("url",), "{url: http://...}")
        settings["subscribe_url"] = _url(f"{where}.subscribe.url", subscribe.get("url"))
    return ProxySettings(**settings)


def _url(where: str, url: object) -> str:
    problem = url_problem(url)
    if problem is not None:
        raise ConfigError(f"{where}: {problem}")
    assert isinstance(url, str)
    return url


def _secret(where: str, value: object, folder: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected the path of a file holding the secret shared with the application")
    file = os.path.join(folder, value)
    try:
        with open(file, "rb") as handle:
            secret = handle.read().strip()
    except OSError as err:
        raise ConfigError(f"{where}: cannot read {file} ({err.strerror})") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"{where}: {file} holds {len(secret)} bytes; the secret must be at least "
                          f"{MIN_SECRET_BYTES} (python -c 'import secrets; print(secrets.token_hex(32))')")
    return secret
