"""What a client's session and one of its requests carry.

`Session` is a client's place in the zUI (file, block, history for zBack). `RequestContext`
is the `ctx` of actions and plugin functions; its progress, display and input_request frames
go through an `Asker`: built with `messages.event_frame`, carrying the request's `_requestId`,
handed to the asking connection's `send_frame` only, from any thread.
"""

import uuid
from collections import deque

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import threadable
from twisted.python.failure import Failure

from .messages import event_frame

log = Logger()

MAX_HISTORY = 100  # blocks a session remembers for zBack; older ones are forgotten


class Session:
    """One client's place in the zUI: its file and block, and the blocks it came from."""

    __slots__ = ("zvafile", "zblock", "history")

    def __init__(self, zvafile, zblock):
        self.zvafile = zvafile
        self.zblock = zblock
        self.history = None  # (zvafile, zblock) pairs, most recent last; made by the first zLink

    def move_to(self, zvafile, zblock):
        """zLink: remember where the client is, then go there."""
        if self.history is None:
            self.history = deque(maxlen=MAX_HISTORY)
        self.history.append((self.zvafile, self.zblock))
        self.zvafile, self.zblock = zvafile, zblock

    def back(self):
        """zBack: return to the previous place (stay put at the first one); returns it."""
        if self.history:
            self.zvafile, self.zblock = self.history.pop()
        return self.zvafile, self.zblock


class Asker:
    """The way back to the client that sent one request: its frames carry the request's
    `_requestId`, go to that client only, and stop once the request has been answered."""

    __slots__ = ("conn", "request_id", "reactor", "answered")

    def __init__(self, conn, request_id, reactor):
        self.conn = conn
        self.request_id = request_id
        self.reactor = reactor
        self.answered = False

    def send(self, frame):
        """Send from any thread: a worker thread hands the frame to the reactor thread."""
        if threadable.isInIOThread():
            self._send(frame)
        else:
            self.reactor.callFromThread(self._send, frame)

    def _send(self, frame):
        if not self.answered:
            self.conn.send_frame(frame)

    def finished(self, outcome):
        self.answered = True
        return outcome


class RequestContext:
    """What a running command may know and do: the `ctx` of actions and plugin functions.

    Plugins use `user`, `role`, `client_id`, `args`, `data`, `zHat` (in a wizard: the earlier
    steps' results), `zConv` (in a zDialog's onSubmit: the validated form), `progress()` and
    `display()`. Actions also use `session`, `workspace`, `command`, `reactor`, `ask()` and
    `derive()`.
    """

    __slots__ = ("user", "role", "client_id", "args", "data", "zHat", "zConv", "command", "session", "workspace",
                 "reactor", "_asker")

    def __init__(self, conn, command, args, data, asker, workspace):
        self.user = conn.identity["user"]
        self.role = conn.identity["role"]
        self.client_id = conn.client_id
        self.args = args
        self.data = data
        self.zHat = None
        self.zConv = None
        self.command = command
        self.session = conn.session
        self.workspace = workspace
        self.reactor = asker.reactor
        self._asker = asker

    def derive(self, **changes):
        """A copy with some attributes changed (a wizard step's zHat, an onSubmit's zConv)."""
        copy = object.__new__(RequestContext)
        for name in RequestContext.__slots__:
            setattr(copy, name, changes.get(name, getattr(self, name)))
        return copy

    def progress(self, current, total, label=None):
        """Send a `progress` frame to the asking client (callable from a worker thread)."""
        self._asker.send(event_frame("progress", self._asker.request_id, current=current, total=total, label=label))

    def display(self, event, **data):
        """Send a `display` frame to the asking client (callable from a worker thread)."""
        self._asker.send(event_frame("display", self._asker.request_id, display_event=event, data=data))

    def run_in_thread(self, function, *args):
        """Run a blocking function in the reactor's thread pool; a Deferred of its result.

        The asking connection counts the job as busy until the thread returns, even when the
        command timed out first (a thread cannot be stopped), so a client cannot pile up jobs
        by outliving its timeouts. Cancelling the Deferred (the timeout does) leaves the job
        running and drops its late result.
        """
        conn, reactor = self._asker.conn, self.reactor
        conn.threads_busy += 1
        result = Deferred()

        def finished(outcome):
            conn.threads_busy -= 1
            if not result.called:
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)
            elif isinstance(outcome, Failure):
                log.failure("A worker thread failed after its command was answered (client {client_id})",
                            outcome, client_id=conn.client_id)

        threads.deferToThreadPool(reactor, reactor.getThreadPool(), function, *args).addBoth(finished)
        return result

    def ask(self, prompt, fields):
        """Send an `input_request` and return a Deferred of the client's `input_response` value.

        Reactor thread only. Cancelling the Deferred (the command's timeout does) forgets it.
        """
        conn = self._asker.conn
        input_id = str(uuid.uuid4())
        waiting = Deferred(lambda _: conn.pending_inputs.pop(input_id, None))
        if conn.pending_inputs is None:
            conn.pending_inputs = {}
        conn.pending_inputs[input_id] = waiting
        self._asker.send(event_frame("input_request", self._asker.request_id, requestId=input_id, prompt=prompt,
                                     fields=fields))
        return waiting
