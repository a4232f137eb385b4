"""`dispatch`: run a zUI command for the asking client (the work is in zbifrost.dispatcher).

A client may have `max_in_flight` commands unanswered, and as many pool-thread jobs still
running: a thread that outlived its command's timeout keeps its slot until it returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from ..messages import JSON, SHUTTING_DOWN, TOO_MANY_REQUESTS, CachedResult, JSONValue, RequestError, RequestId

if TYPE_CHECKING:
    from ..session import Session
    from . import Handler


def dispatch(session: Session, message: JSON, request_id: RequestId) -> JSONValue | Deferred[JSONValue] | CachedResult:
    hub = session.hub
    if hub.stopping:
        raise RequestError(SHUTTING_DOWN, "The server is shutting down and accepts no new commands")
    if max(session.in_flight, hub.thread_pool.held_by(session)) >= hub.config.max_in_flight:
        raise RequestError(TOO_MANY_REQUESTS,
                           f"Too many commands running: at most {hub.config.max_in_flight} at once")
    return hub.dispatcher.dispatch(session, message, request_id)


HANDLERS: dict[str, Handler] = {"dispatch": dispatch}
