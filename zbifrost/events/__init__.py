"""Event handlers, one module per family; `HANDLERS` maps an event name to its handler.

A handler is called as `handler(session, message, request_id)` and returns the reply's `result`,
a Deferred of it, or `messages.NO_REPLY`; it raises `messages.RequestError` for an error
reply. `session` is the client's zbifrost.session.Session (`client_id`, `identity`, `place`,
`hub`, `send_frame`, ...), never its connection or frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..messages import JSON, RequestId
    from ..session import Session

    # returns the reply's result (a JSON value), a Deferred of it, or NO_REPLY
    Handler = Callable[[Session, JSON, RequestId], Any]

from . import cache, channels, discovery, dispatch, input, session

HANDLERS: dict[str, Handler] = {}
for _family in (session, dispatch, discovery, cache, channels, input):
    HANDLERS.update(_family.HANDLERS)
