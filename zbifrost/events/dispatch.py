"""`dispatch`: run a zUI command for the asking client (the work is in zbifrost.dispatch).

A client may have `max_in_flight` commands unanswered, and as many worker-thread jobs still
running: a thread that outlived its command's timeout keeps its slot until it returns.
"""

from ..messages import SHUTTING_DOWN, TOO_MANY_REQUESTS, RequestError


def dispatch(conn, message, request_id):
    server = conn.server
    if server.stopping:
        raise RequestError(SHUTTING_DOWN, "The server is shutting down and accepts no new commands")
    if max(conn.in_flight, server.thread_pool.held_by(conn)) >= server.config.max_in_flight:
        raise RequestError(TOO_MANY_REQUESTS,
                           f"Too many commands running: at most {server.config.max_in_flight} at once")
    return server.dispatcher.dispatch(conn, message, request_id)


HANDLERS = {"dispatch": dispatch}
