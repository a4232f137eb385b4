"""`cache_stats`, `clear_cache` and `set_cache_ttl`: the query cache (and the zUI file cache)
seen from a client."""

from ..messages import FORBIDDEN, MISSING_FIELD, RequestError


def cache_stats(session, message, request_id):
    return {"query_cache": session.hub.cache.stats(), "schema_cache": session.hub.workspace.stats()}


def _require_admin(session, event):
    """With auth on, only the admin role may change the cache; with auth off, anyone may."""
    if session.hub.config.require_auth and session.identity["role"] != "admin":
        raise RequestError(FORBIDDEN, f"{event} needs the admin role")


def clear_cache(session, message, request_id):
    _require_admin(session, "clear_cache")
    return {"cleared": session.hub.cache.clear()}


def set_cache_ttl(session, message, request_id):
    """zBifrost 1.5.4's event: one TTL for every command that declares caching (0: off)."""
    _require_admin(session, "set_cache_ttl")
    ttl = message.get("ttl")
    if type(ttl) not in (int, float) or ttl < 0:
        raise RequestError(MISSING_FIELD, "Missing or invalid field 'ttl': expected a number of seconds >= 0")
    cache = session.hub.cache
    cache.ttl_override = ttl
    cache.clear()
    return {"message": f"Query cache TTL set to {ttl:g}s", "ttl": ttl}


HANDLERS = {"cache_stats": cache_stats, "clear_cache": clear_cache, "set_cache_ttl": set_cache_ttl}
