"""`connection_info`, `ping` and `refresh`: what a client learns about the server and its own
session, and how it renews its token on an open connection (docs/protocol.md section 2)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from twisted.logger import Logger

from .. import __version__, messages
from ..auth import InvalidToken
from ..messages import FORBIDDEN, INVALID_TOKEN, JSON, RequestError, RequestId

if TYPE_CHECKING:
    from ..session import Session
    from . import Handler

log = Logger()

PROTOCOL_VERSION = 1


def connection_info(session: Session, message: JSON | None = None, request_id: RequestId = None) -> JSON:
    """The `data` of the first frame, and the result of a `connection_info` request."""
    hub = session.hub
    config = hub.config
    return {
        "server_version": __version__,
        "protocol": PROTOCOL_VERSION,
        "client_id": session.client_id,
        "features": hub.features,
        "auth": session.identity,
        "session": {"workspace": hub.workspace.name, "zVaFile": session.place.zvafile,
                    "zBlock": session.place.zblock, "mode": "zBifrost"},
        "limits": {"max_message_size": config.max_message_size, "rate": _number(config.rate), "burst": config.burst,
                   "max_in_flight": config.max_in_flight},
        "cache_stats": {"query_cache": hub.cache.stats(), "schema_cache": hub.workspace.stats()},
    }


def _number(value: float) -> float:
    return int(value) if float(value).is_integer() else value


def ping(session: Session, message: JSON, request_id: RequestId) -> JSON:
    return {"pong": time.time()}


def refresh(session: Session, message: JSON, request_id: RequestId) -> JSON:
    """Renew the connection's token with a new one of the same user; its expiry moves with it."""
    credentials = session.hub.tokens
    if credentials is None:
        raise RequestError(FORBIDDEN, "Authentication is off: there is no token to refresh")
    token = messages.require_string(message, "token")
    try:
        credential = credentials.identify(token)
    except InvalidToken as err:
        log.warn("Refused a refresh from {peer}: invalid_token: {reason}", peer=session.peer, reason=str(err))
        raise RequestError(INVALID_TOKEN, "Invalid token") from None
    if credential.user != session.identity["user"]:
        log.warn("Refused a refresh from {peer}: the new token names another user", peer=session.peer)
        raise RequestError(FORBIDDEN, "The new token names another user")
    session.authenticate(credential)
    return {"expires": session.identity["expires"]}


HANDLERS: dict[str, Handler] = {"connection_info": connection_info, "ping": ping, "refresh": refresh}
