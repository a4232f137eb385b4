"""`cache_stats` and `clear_cache`: the query cache seen from a client."""

from ..messages import FORBIDDEN, RequestError


def cache_stats(conn, message, request_id):
    return {"query_cache": conn.server.cache.stats()}


def clear_cache(conn, message, request_id):
    if conn.server.config.require_auth and conn.identity["role"] != "admin":
        raise RequestError(FORBIDDEN, "clear_cache needs the admin role")
    return {"cleared": conn.server.cache.clear()}


HANDLERS = {"cache_stats": cache_stats, "clear_cache": clear_cache}
