"""`dispatch`: run a zUI command for the asking client (the work is in zbifrost.dispatch)."""

from ..messages import SHUTTING_DOWN, TOO_MANY_REQUESTS, RequestError


def dispatch(conn, message, request_id):
    server = conn.server
    if server.stopping:
        raise RequestError(SHUTTING_DOWN, "The server is shutting down and accepts no new commands")
    if conn.in_flight >= server.config.max_in_flight:
        raise RequestError(TOO_MANY_REQUESTS,
                           f"Too many commands running: at most {server.config.max_in_flight} at once")
    return server.dispatcher.dispatch(conn, message, request_id)


HANDLERS = {"dispatch": dispatch}
