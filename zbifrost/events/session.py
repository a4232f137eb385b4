"""`connection_info` and `ping`: what a client learns about the server and its own session."""

import time

from .. import __version__

PROTOCOL_VERSION = 1


def connection_info(conn, message=None, request_id=None):
    """The `data` of the first frame, and the result of a `connection_info` request."""
    server = conn.server
    config = server.config
    return {
        "server_version": __version__,
        "protocol": PROTOCOL_VERSION,
        "client_id": conn.client_id,
        "features": server.features,
        "auth": conn.identity,
        "session": {"workspace": server.workspace.name, "zVaFile": conn.session.zvafile,
                    "zBlock": conn.session.zblock, "mode": "zBifrost"},
        "limits": {"max_message_size": config.max_message_size, "rate": _number(config.rate), "burst": config.burst,
                   "max_in_flight": config.max_in_flight},
        "cache_stats": {"query_cache": server.cache.stats(), "schema_cache": server.workspace.stats()},
    }


def _number(value):
    return int(value) if float(value).is_integer() else value


def ping(conn, message, request_id):
    return {"pong": time.time()}


HANDLERS = {"connection_info": connection_info, "ping": ping}
