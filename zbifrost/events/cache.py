"""`cache_stats`, `clear_cache` and `set_cache_ttl`: the query cache (and the zUI file cache)
seen from a client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..messages import FORBIDDEN, JSON, MISSING_FIELD, JSONValue, RequestError, RequestId

if TYPE_CHECKING:
    from ..session import Session
    from . import Handler


def cache_stats(session: Session, message: JSON, request_id: RequestId) -> JSON:
    return {"query_cache": session.hub.cache.stats(), "schema_cache": session.hub.workspace.stats()}


def _require_admin(session: Session, event: str) -> None:
    """With auth on, only the admin role may change the cache; with auth off, anyone may."""
    if session.hub.config.require_auth and session.identity["role"] != "admin":
        raise RequestError(FORBIDDEN, f"{event} needs the admin role")


def clear_cache(session: Session, message: JSON, request_id: RequestId) -> JSON:
    _require_admin(session, "clear_cache")
    return {"cleared": session.hub.cache.clear()}


def set_cache_ttl(session: Session, message: JSON, request_id: RequestId) -> JSON:
    """zBifrost 1.5.4's event: one TTL for every command that declares caching (0: off)."""
    _require_admin(session, "set_cache_ttl")
    ttl: JSONValue = message.get("ttl")
    if type(ttl) not in (int, float) or ttl < 0:
        raise RequestError(MISSING_FIELD, "Missing or invalid field 'ttl': expected a number of seconds >= 0")
    cache = session.hub.cache
    cache.ttl_override = ttl
    cache.clear()
    return {"message": f"Query cache TTL set to {ttl:g}s", "ttl": ttl}


HANDLERS: dict[str, Handler] = {"cache_stats": cache_stats, "clear_cache": clear_cache, "set_cache_ttl": set_cache_ttl}
