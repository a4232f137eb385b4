"""What a client's session and one of its requests carry.

`Place` is a client's place in the zUI (file, block, history for zBack). `RequestContext`
is the `ctx` of actions and plugin functions; its progress, display and input_request frames
go through an `Asker`: built with `messages.event_frame`, naming the request in `_forRequestId`,
handed to the asking session's `send_frame` only, from any thread.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import threadable

from .channels import INVALID_CHANNEL, INVALID_IDEMPOTENCY_KEY, valid_channel, valid_idempotency_key
from .interfaces import IReactor
from .messages import JSONValue, RequestId, encode, event_frame
from .zui.model import Command
from .zui.workspace import Workspace

if TYPE_CHECKING:  # they import this module
    from .hub import Hub
    from .session import Session

log = Logger()

MAX_HISTORY = 100  # blocks a session remembers for zBack; older ones are forgotten


class Place:
    """One client's place in the zUI: its file and block, and the blocks it came from."""

    __slots__ = ("zvafile", "zblock", "history")

    def __init__(self, zvafile: str, zblock: str) -> None:
        self.zvafile = zvafile
        self.zblock = zblock
        # (zvafile, zblock) pairs, most recent last; made by the first zLink
        self.history: deque[tuple[str, str]] | None = None

    def move_to(self, zvafile: str, zblock: str) -> None:
        """zLink: remember where the client is, then go there."""
        if self.history is None:
            self.history = deque(maxlen=MAX_HISTORY)
        self.history.append((self.zvafile, self.zblock))
        self.zvafile, self.zblock = zvafile, zblock

    def back(self) -> tuple[str, str]:
        """zBack: return to the previous place (stay put at the first one); returns it."""
        if self.history:
            self.zvafile, self.zblock = self.history.pop()
        return self.zvafile, self.zblock


class Asker:
    """The way back to the client that sent one request: its frames name the request in
    `_forRequestId`, go to that client only, and stop once the request has been answered."""

    __slots__ = ("session", "request_id", "reactor", "answered")

    def __init__(self, session: Session, request_id: RequestId, reactor: IReactor) -> None:
        self.session = session
        self.request_id = request_id
        self.reactor = reactor
        self.answered = False

    def send(self, frame: bytes) -> None:
        """Send from any thread: a pool thread hands the frame to the reactor thread."""
        if threadable.isInIOThread():
            self._send(frame)
        else:
            self.reactor.callFromThread(self._send, frame)

    def _send(self, frame: bytes) -> None:
        if not self.answered:
            self.session.send_frame(frame)

    def finished(self, outcome: object) -> object:
        self.answered = True
        return outcome


class RequestContext:
    """What a running command may know and do: the `ctx` of actions and plugin functions.

    Plugins use `user`, `role`, `client_id`, `args`, `data`, `zHat` (in a wizard: the earlier
    steps' results), `zConv` (in a zDialog's onSubmit: the validated form), `progress()`,
    `display()` and `publish()`. Actions also use `session`, `workspace`, `command`, `reactor`, `ask()` and
    `derive()`.
    """

    __slots__ = ("user", "role", "client_id", "args", "data", "zHat", "zConv", "command", "zblock", "session",
                 "workspace", "reactor", "_asker")
    user: str
    role: str
    client_id: str
    args: list[JSONValue]
    data: dict[str, JSONValue] | None
    zHat: list[JSONValue] | None  # in a wizard: the results of the earlier steps
    zConv: dict[str, JSONValue] | None  # in a zDialog's onSubmit: the validated form
    command: Command
    zblock: str  # the block the command was found in
    session: Place  # the asking client's place in the zUI (zLink and zBack move it)
    workspace: Workspace
    reactor: IReactor

    def __init__(self, session: Session, command: Command, args: list[JSONValue], data: dict[str, JSONValue] | None,
                 asker: Asker, workspace: Workspace, zblock: str) -> None:
        self.user = session.identity["user"]
        self.role = session.identity["role"]
        self.client_id = session.client_id
        self.args = args
        self.data = data
        self.zHat = None
        self.zConv = None
        self.command = command
        self.zblock = zblock
        self.session = session.place
        self.workspace = workspace
        self.reactor = asker.reactor
        self._asker = asker

    def derive(self, **changes: Any) -> RequestContext:
        """A copy with some attributes changed (a wizard step's zHat, an onSubmit's zConv)."""
        copy = object.__new__(RequestContext)
        for name in RequestContext.__slots__:
            setattr(copy, name, changes.get(name, getattr(self, name)))
        return copy

    def progress(self, current: float, total: float, label: str | None = None) -> None:
        """Send a `progress` frame to the asking client (callable from a pool thread)."""
        self._asker.send(event_frame("progress", self._asker.request_id, current=current, total=total, label=label))

    def display(self, event: str, **data: Any) -> None:
        """Send a `display` frame to the asking client (callable from a pool thread)."""
        self._asker.send(event_frame("display", self._asker.request_id, display_event=event, data=data))

    def publish(self, channel: str, data: JSONValue, idempotency_key: str | None = None) -> None:
        """Publish `data` on `channel` as the server (`"from": "server"`): past the channel
        rules, to every subscriber, the asking client included; a second publish with the same
        `idempotency_key` on the channel within 300 s publishes nothing. Callable from a pool
        thread; returns at once and delivery continues on the reactor. Raises ValueError for a
        bad channel name or idempotency key and TypeError for data that JSON cannot hold."""
        if not valid_channel(channel):
            raise ValueError(INVALID_CHANNEL)
        if idempotency_key is not None and not valid_idempotency_key(idempotency_key):
            raise ValueError(INVALID_IDEMPOTENCY_KEY)
        # checks the data now, and copies it so that a thread may go on changing its own
        data = orjson.loads(encode(data))
        hub = self._asker.session.hub
        if threadable.isInIOThread():
            _publish_logged(hub, channel, data, idempotency_key)
        else:
            self.reactor.callFromThread(_publish_logged, hub, channel, data, idempotency_key)

    def run_in_thread(self, function: Callable[..., Any], *args: Any, name: str) -> Deferred[Any]:
        """Run a blocking function in the server's fair thread pool (zbifrost.thread_pool) for
        the asking client; a Deferred of its result. `name` (the plugin function) and the
        command's zKey name the job in log lines. Cancelling the Deferred (the timeout does)
        unqueues a job that has not started, or writes off its thread and drops the late result.
        """
        session = self._asker.session
        description = f"command {self.command.key!r} (plugin function {name}, client {session.client_id})"
        return session.hub.thread_pool.submit(session, description, function, *args)

    def ask(self, prompt: str, fields: list[dict[str, JSONValue]]) -> Deferred[JSONValue]:
        """Send an `input_request` and return a Deferred of the client's `input_response` value.

        Reactor thread only. Cancelling the Deferred (the command's timeout does) forgets it.
        """
        session = self._asker.session
        input_id = str(uuid.uuid4())
        if session.pending_inputs is None:
            session.pending_inputs = {}
        pending = session.pending_inputs

        def forget(_: Deferred[JSONValue]) -> None:
            pending.pop(input_id, None)

        waiting: Deferred[JSONValue] = Deferred(forget)
        pending[input_id] = waiting
        self._asker.send(event_frame("input_request", self._asker.request_id, requestId=input_id, prompt=prompt,
                                     fields=fields))
        return waiting


def _publish_logged(hub: Hub, channel: str, data: JSONValue, idempotency_key: str | None) -> None:
    """A plugin's publish, whose caller has moved on: a failure is logged, not returned."""
    hub.publish_from_backend(channel, data, idempotency_key).addErrback(
        lambda failure: log.failure("A plugin's publish on {channel} failed", failure, channel=channel))
