"""The dispatcher: zKey -> command -> result, or a Deferred of it (PROTOCOL.md section 5).

It resolves a key in the client's block, checks the role, answers from the query cache,
runs the action with a `RequestContext`, and puts a timeout on anything asynchronous.
Failures are exceptions (`RequestError` for the ones with their own code); turning them
into error frames is the protocol's job. It also holds each client's navigation (`Session`)
and the request context (`RequestContext`), whose progress, display and input_request events
are built with `messages.event_frame` and handed to the connection's `send_frame`, to the
asking client only. Nothing here touches WebSocket frames.
"""

import uuid
from collections import deque

import orjson
from twisted.internet.defer import Deferred
from twisted.python import threadable

from .messages import (
    FORBIDDEN,
    MISSING_FIELD,
    UNKNOWN_COMMAND,
    CachedResult,
    RequestError,
    event_frame,
    optional_field,
    quote,
    require_string,
)
from .zui.actions import BackAction
from .zui.model import BACK_KEY, Command

MAX_HISTORY = 100  # blocks a session remembers for zBack; older ones are forgotten

# `zBack` in a block that does not define it.
BACK_COMMAND = Command(key=BACK_KEY, action=BackAction(), line=0, description="Go back to the previous block")


class Session:
    """One client's place in the zUI: its file and block, and the blocks it came from."""

    __slots__ = ("zvafile", "zblock", "history")

    def __init__(self, zvafile, zblock):
        self.zvafile = zvafile
        self.zblock = zblock
        self.history = deque(maxlen=MAX_HISTORY)  # (zvafile, zblock) pairs, most recent last

    def move_to(self, zvafile, zblock):
        """zLink: remember where the client is, then go there."""
        self.history.append((self.zvafile, self.zblock))
        self.zvafile, self.zblock = zvafile, zblock

    def back(self):
        """zBack: return to the previous place (stay put at the first one); returns it."""
        if self.history:
            self.zvafile, self.zblock = self.history.pop()
        return self.zvafile, self.zblock


class _Asker:
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

    def ask(self, prompt, fields):
        """Send an `input_request` and return a Deferred of the client's `input_response` value.

        Reactor thread only. Cancelling the Deferred (the command's timeout does) forgets it.
        """
        conn = self._asker.conn
        input_id = str(uuid.uuid4())
        waiting = Deferred(lambda _: conn.pending_inputs.pop(input_id, None))
        conn.pending_inputs[input_id] = waiting
        self._asker.send(event_frame("input_request", self._asker.request_id, requestId=input_id, prompt=prompt,
                                     fields=fields))
        return waiting


class Dispatcher:
    def __init__(self, workspace, cache, reactor, default_timeout):
        self.workspace = workspace
        self.cache = cache
        self.reactor = reactor
        self.default_timeout = default_timeout

    def resolve(self, session, zkey, zblock=None):
        """(file, block, command) for a zKey in the session's block (or `zblock` of its file).

        `zBack` is answered in every block (and even when the session's block has gone from
        a reloaded file), unless the block defines it itself.
        """
        zfile = self.workspace.file(session.zvafile)
        name = session.zblock if zblock is None else zblock
        block = zfile.blocks.get(name)
        command = block.find(zkey) if block is not None else None
        if command is None:
            if (zkey[1:] if zkey[:1] == "^" else zkey) == BACK_KEY:
                return zfile, block, BACK_COMMAND
            if block is None:
                raise RequestError(UNKNOWN_COMMAND, f"Unknown block: {quote(name)}")
            raise RequestError(UNKNOWN_COMMAND, f"Unknown command: {quote(zkey)}")
        return zfile, block, command

    def dispatch(self, conn, message, request_id):
        zkey = require_string(message, "zKey", alias="cmd")
        zblock = optional_field(message, "zBlock", str, "a string")
        args = optional_field(message, "args", list, "an array")
        data = optional_field(message, "data", dict, "an object")
        no_cache = optional_field(message, "no_cache", bool, "true or false")
        zfile, block, command = self.resolve(conn.session, zkey, zblock)
        role = conn.identity["role"]
        if not command.allows(role):
            raise RequestError(FORBIDDEN, f"Your role may not run {quote(zkey)}")
        cache_key = None
        if command.cache_ttl is not None:
            cache_key = _cache_key(zfile, block.name, command.key, args, data, role)
            if not no_cache:
                hit, value = self.cache.get(cache_key)
                if hit:
                    return CachedResult(value)
        action = command.action
        if not action.uses_context:  # plain strings and zDisplay: the hot path stays lean
            result = action.run(None)
        else:
            asker = _Asker(conn, request_id, self.reactor)
            result = action.run(RequestContext(conn, command, args if args is not None else [], data, asker,
                                               self.workspace))
            if type(result) is Deferred:
                result.addTimeout(command.timeout or self.default_timeout, self.reactor)
                result.addBoth(asker.finished)
        if type(result) is not Deferred:
            if cache_key is not None:
                self.cache.put(cache_key, result, command.cache_ttl)
            return result
        if cache_key is not None:
            result.addCallback(self._store, cache_key, command.cache_ttl)
        return result

    def _store(self, value, cache_key, ttl):
        self.cache.put(cache_key, value, ttl)
        return value


def _cache_key(zfile, block, key, args, data, role):
    """Results are shared per file version, block, key, arguments, form data and role."""
    try:
        arguments = orjson.dumps([args, data], option=orjson.OPT_SORT_KEYS)
    except TypeError:
        raise RequestError(MISSING_FIELD, "args and data must be plain JSON") from None
    return (zfile.zpath, zfile.mtime_ns, block, key, arguments, role)
