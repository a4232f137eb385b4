"""The `broker` setting: a broker URL (docs/protocol.md section 6a), read into a `BrokerURL`.

`redis://[[user]:password@]host[:port][/db]`, the same with `rediss://` (TLS, `?ca=FILE` for a
CA of one's own), or `redis+sentinel://[[user]:password@]host[:port],.../<master name>[/db]`
(the sentinels to ask for that master; the credentials are the master's). The password may
instead come from the environment variable ZBIFROST_BROKER_PASSWORD. No error and no `repr`
repeats the URL's password; what logs and /healthz show is `BrokerURL.address`, without
credentials. Nothing here connects: zbifrost.channels.redis_connect does.

Several URLs are shards (zbifrost.channels.sharded), each a Redis of its own: two databases of one
Redis share its pub/sub, so a list naming one Redis (or one Sentinel master) twice is refused.
"""

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

PASSWORD_VARIABLE = "ZBIFROST_BROKER_PASSWORD"
SENTINEL = "redis+sentinel"
_DEFAULT_PORT = {"redis": 6379, "rediss": 6379, SENTINEL: 26379}


@dataclass(frozen=True)
class BrokerURL:
    """Where the broker is and how to log in; `password` is left out of the repr."""
    scheme: str  # redis, rediss, redis+sentinel
    hosts: tuple[tuple[str, int], ...]  # (host, port) of the one Redis, or of each sentinel
    db: int
    master: str | None = None  # redis+sentinel: the name of the master to ask the sentinels for
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None  # rediss: the CA file that signs the server's certificate (else the system's CAs)

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    @property
    def host(self) -> str:
        """The host of the one Redis (redis://, rediss://)."""
        return self.hosts[0][0]

    @property
    def port(self) -> int:
        return self.hosts[0][1]

    @property
    def address(self) -> str:
        """What logs and /healthz call this broker: the URL without user and password."""
        hosts = ",".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self.hosts)
        return f"{self.scheme}://{hosts}/{self.master + '/' if self.master else ''}{self.db}"


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
        raise ValueError("expected redis://host:port/db, rediss://host:port/db or "
                         "redis+sentinel://host:port,host:port/master/db")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, has_password, password = credentials.partition(":")
    addresses = tuple(_host_port(host, _DEFAULT_PORT[parts.scheme]) for host in hosts.split(","))
    if len(addresses) > 1 and parts.scheme != SENTINEL:
        raise ValueError("several hosts are for redis+sentinel://")
    master, db = None, parts.path.strip("/")
    if parts.scheme == SENTINEL:
        master, _, db = db.partition("/")
        if not master:
            raise ValueError("the master's name is missing: redis+sentinel://host:port,host:port/master/db")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    if set(query) - {"ca"} or len(query.get("ca", ())) > 1 or (query and parts.scheme != "rediss"):
        raise ValueError("the only query is ?ca=/path/ca.pem, with rediss://")
    ca = query["ca"][0] if query else None
    if parts.scheme == "rediss" and importlib.util.find_spec("OpenSSL") is None:
        raise ValueError("rediss:// needs pyOpenSSL: pip install 'zbifrost[tls]'")
    if ca is not None and not _holds_certificates(ca):
        raise ValueError("the ca= file is not a PEM file of certificates")
    return BrokerURL(parts.scheme, addresses, _number(db or "0"), master, unquote(username) or None,
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


def brokers_problem(urls: list[str], config: object) -> str | None:
    """The config check of `broker` (one URL, or several: shards): what is wrong with which entry,
    never repeating a URL, or None."""
    servers: dict[tuple[object, ...], int] = {}
    for number, url in enumerate(urls, 1):
        problem = broker_problem(url, config)
        if problem is not None:
            return problem if len(urls) == 1 else f"entry {number}: {problem}"
        target = parse_broker(url)
        server = (target.hosts, target.master)
        if server in servers:
            return (f"entries {servers[server]} and {number} are the same Redis ({target.address}): each shard "
                    "needs a Redis of its own")
        servers[server] = number
    return None
