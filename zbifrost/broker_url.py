"""The `broker` setting: a `redis://host[:port][/db]` URL, read into what the Redis backend connects to.

The URL holds no user, password or query, and no error repeats it (it might hold a password).
Nothing here connects: zbifrost.channels.redis does.
"""

from urllib.parse import urlsplit


def broker_address(url: str) -> tuple[str, int, int]:
    """(host, port, db) of a `redis://host[:port][/db]` URL, or ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname or parts.query or parts.fragment or parts.username \
            or parts.password:
        raise ValueError("expected redis://host:port/db, without user, password or query")
    port = 6379 if parts.port is None else parts.port  # a port out of 0-65535 or not a number is a ValueError here
    if port == 0:
        raise ValueError("the port must be between 1 and 65535")
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"the database must be a number, got {db!r}")
    return parts.hostname, port, int(db)


def broker_problem(url: str | None, config: object) -> str | None:
    """The config check of `broker`: what is wrong with the URL (not repeating it), or None."""
    if url is None:
        return None
    try:
        broker_address(url)
    except ValueError as err:
        return f"not a broker URL ({err}), such as redis://127.0.0.1:6379/0"
    return None
