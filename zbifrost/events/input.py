"""`input_response`: a client's answer to an `input_request` of a running zDialog."""

from ..messages import NO_REPLY, require_string


def input_response(session, message, request_id):
    input_id = require_string(message, "requestId")
    waiting = session.pending_inputs.pop(input_id, None) if session.pending_inputs else None
    if waiting is not None and not waiting.called:
        waiting.callback(message.get("value"))
    return NO_REPLY


HANDLERS = {"input_response": input_response}
