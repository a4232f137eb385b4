"""The server API's reach over every process (docs/protocol.md section 12): this process's `node`
id, the control messages it sends through the channel broker (`IBroker.publish_control`) and
what it does with those it receives: close or unsubscribe the connections of a user or client
id here, and answer a question (`channels`, `info`) to the process that asked. `ask` gathers
the answers of every process that answers within ANSWER_TIMEOUT seconds; the broker tells how
many processes a question reached, so that it waits no longer than for the last of them. With
the embedded broker the one process is this one.

A control message is one JSON object, `{"op", ...}`; a malformed one is logged and dropped.
"""

from __future__ import annotations

import secrets
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import __version__, messages
from .channels.rules import matches

if TYPE_CHECKING:
    from .channels.interfaces import IBroker
    from .hub import Hub
    from .session import Session

ANSWER_TIMEOUT = 1.0  # seconds a question waits for the other processes' answers
UNSUBSCRIBED_BY_SERVER = "server"  # the reason of the `unsubscribed` event the API's unsubscribe sends

log = Logger()

# who a disconnect or unsubscribe is for: {"user": name} or {"client": client_id}
Target = dict[str, str]


class _Question:
    """A question sent to every process: the answers so far, until `expected` have come or time is up."""

    __slots__ = ("answers", "expected", "done")

    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []
        self.expected: int | None = None  # how many processes the question reached, once known
        self.done: defer.Deferred[list[dict[str, Any]]] = defer.Deferred()

    def check(self) -> None:
        if not self.done.called and self.expected is not None and len(self.answers) >= self.expected:
            self.done.callback(self.answers)


class Control:
    """The server API's operations on every process sharing `broker` (`hub.control`)."""

    def __init__(self, hub: Hub, broker: IBroker) -> None:
        self.hub = hub
        self.broker = broker
        self.node = "n-" + secrets.token_hex(8)  # unique per process, kept for its life
        self._questions: dict[str, _Question] = {}
        broker.listen_control(self.node, self._received)

    # -- what the server API calls ---------------------------------------------------------

    def disconnect(self, target: Target, reason: str) -> defer.Deferred[None]:
        """Close every connection of `target`, on every process, with 1008 and `reason`."""
        return self._send({"op": "disconnect", "target": target, "reason": reason})

    def unsubscribe(self, target: Target, channel: str) -> defer.Deferred[None]:
        """Take every connection of `target`, on every process, off `channel`, telling it so."""
        return self._send({"op": "unsubscribe", "target": target, "channel": channel})

    def ask(self, question: dict[str, Any]) -> defer.Deferred[list[dict[str, Any]]]:
        """The answers of every process (this one included) that answers within ANSWER_TIMEOUT."""
        question_id = secrets.token_hex(8)
        waiting = self._questions[question_id] = _Question()

        def time_is_up() -> None:
            waiting.expected = 0  # those that answered
            waiting.check()

        def reached(count: int) -> None:
            waiting.expected = count
            waiting.check()

        def unsent(failure: Failure) -> None:
            if not waiting.done.called:
                waiting.done.errback(failure)

        timer = self.hub.reactor.callLater(ANSWER_TIMEOUT, time_is_up)

        def finished(result: Any) -> Any:
            del self._questions[question_id]
            if timer.active():
                timer.cancel()
            return result

        waiting.done.addBoth(finished)
        sent = self.broker.publish_control(
            orjson.dumps({"op": "ask", "id": question_id, "from": self.node, "question": question}), None)
        sent.addCallbacks(reached, unsent)
        return waiting.done

    def _send(self, message: dict[str, Any]) -> defer.Deferred[None]:
        return self.broker.publish_control(orjson.dumps(message), None).addCallback(lambda _: None)

    # -- what this process does with a control message -------------------------------------

    def _received(self, payload: bytes) -> None:
        try:
            message = orjson.loads(payload)
            operation = message["op"]
            if operation == "disconnect":
                for session in self._sessions(message["target"]):
                    session.close(1008, message["reason"])
            elif operation == "unsubscribe":
                self._unsubscribe(message["target"], message["channel"])
            elif operation == "ask":
                answer = {"op": "answer", "id": message["id"], "answer": self._answer(message["question"])}
                self.broker.publish_control(orjson.dumps(answer), message["from"]).addErrback(
                    lambda failure: failure.trap(messages.RequestError))  # the asker counts it as silent
            elif operation == "answer":
                waiting = self._questions.get(message["id"])
                if waiting is not None:  # else it came too late
                    waiting.answers.append(message["answer"])
                    waiting.check()
        except Exception:
            log.failure("A control message could not be handled: {payload}", payload=messages.quote(payload))

    def _sessions(self, target: Target) -> list[Session]:
        """The open sessions of `target` in this process; with auth off nobody is a user."""
        clients = self.hub.clients
        if "client" in target:
            session = clients.get(target["client"])
            return [] if session is None else [session]
        if self.hub.tokens is None:
            return []
        user = target["user"]
        return [session for session in clients.values() if session.identity["user"] == user]

    def _unsubscribe(self, target: Target, channel: str) -> None:
        frame = messages.event_frame("unsubscribed", channel=channel, reason=UNSUBSCRIBED_BY_SERVER)
        for session in self._sessions(target):
            if session.subscriptions and channel in session.subscriptions:
                session.subscriptions.discard(channel)
                self.hub.channels.unsubscribe(channel, session)
                session.after_subscribe(channel, partial(session.send_frame, frame))

    def _answer(self, question: dict[str, Any]) -> dict[str, Any]:
        hub = self.hub
        counts = hub.channels.subscriber_counts()
        if question["what"] == "channels":
            pattern = question.get("pattern")
            return {name: count for name, count in counts.items() if pattern is None or matches(name, pattern)}
        users = {session.identity["user"] for session in hub.clients.values()} if hub.tokens is not None else ()
        return {"node": self.node, "version": __version__, "uptime_s": round(time.time() - hub.started, 3),
                "clients": len(hub.clients), "users": len(users), "channels": len(counts)}
