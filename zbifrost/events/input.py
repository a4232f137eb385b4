"""`input_response`: a client's answer to an `input_request` of a running zDialog."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..messages import JSON, NO_REPLY, RequestId, _NoReply, require_string

if TYPE_CHECKING:
    from ..session import Session
    from . import Handler


def input_response(session: Session, message: JSON, request_id: RequestId) -> _NoReply:
    input_id = require_string(message, "requestId")
    waiting = session.pending_inputs.pop(input_id, None) if session.pending_inputs else None
    if waiting is not None and not waiting.called:
        waiting.callback(message.get("value"))
    return NO_REPLY


HANDLERS: dict[str, Handler] = {"input_response": input_response}
