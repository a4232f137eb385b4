"""The `broker` setting: a broker URL (docs/protocol.md section 6a), read into a `BrokerURL`.

`redis://[[user]:password@]host[:port][/db]`, or the same with `rediss://` (TLS, `?ca=FILE` for a
CA of one's own). The password may instead come from the environment variable
ZBIFROST_BROKER_PASSWORD. No error and no `repr` repeats the URL's password; what logs and
/healthz show is `BrokerURL.address`, without credentials. Nothing here connects:
zbifrost.channels.redis_connect does.
"""

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

PASSWORD_VARIABLE = "ZBIFROST_BROKER_PASSWORD"
_DEFAULT_PORT = {"redis": 6379, "rediss": 6379}


@dataclass(frozen=True)
class BrokerURL:
    """Where the broker is and how to log in; `password` is left out of the repr."""
    scheme: str  # redis, rediss
    host: str
    port: int
    db: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None  # rediss: the CA file that signs the server's certificate (else the system's CAs)

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    @property
    def address(self) -> str:
        """What logs and /healthz call this broker: the URL without user and password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/{self.db}"


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit("//" + text)
    if not parts.hostname:
        raise ValueError("a host is missing")
    port = default_port if parts.port is None else parts.port  # not a number or past 65535: ValueError
    if port == 0:
        raise ValueError("the port must be between 1 and 65535")
    return parts.hostname, port


def _number(db: str) -> int:
    if not db.isdigit():
        raise ValueError(f"the database must be a number, got {db!r}")
    return int(db)


def _holds_certificates(path: str) -> bool:
    try:
        with open(path, "rb") as pem:
            return b"-----BEGIN CERTIFICATE-----" in pem.read()
    except OSError:
        return False


def parse_broker(url: str, environ: Mapping[str, str] = os.environ) -> BrokerURL:
    """The BrokerURL of `url`, its password from the URL or else from ZBIFROST_BROKER_PASSWORD;
    ValueError saying what is wrong, never repeating the URL."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORT or parts.fragment:
        raise ValueError("expected redis://host:port/db or rediss://host:port/db")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, has_password, password = credentials.partition(":")
    host, port = _host_port(hosts, _DEFAULT_PORT[parts.scheme])
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    if set(query) - {"ca"} or len(query.get("ca", ())) > 1 or (query and parts.scheme != "rediss"):
        raise ValueError("the only query is ?ca=/path/ca.pem, with rediss://")
    ca = query["ca"][0] if query else None
    if parts.scheme == "rediss" and importlib.util.find_spec("OpenSSL") is None:
        raise ValueError("rediss:// needs pyOpenSSL: pip install 'zbifrost[tls]'")
    if ca is not None and not _holds_certificates(ca):
        raise ValueError("the ca= file is not a PEM file of certificates")
    return BrokerURL(parts.scheme, host, port, _number(parts.path.strip("/") or "0"), unquote(username) or None,
                     unquote(password) if has_password else environ.get(PASSWORD_VARIABLE) or None, ca)


def broker_problem(url: str | None, config: object) -> str | None:
    """The config check of `broker`: what is wrong with the URL (not repeating it), or None."""
    if url is None:
        return None
    try:
        parse_broker(url)
    except ValueError as err:
        return f"not a broker URL ({err}), such as redis://127.0.0.1:6379/0"
    return None
