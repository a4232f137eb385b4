"""The dispatcher: zKey -> command -> result, or a Deferred of it (PROTOCOL.md section 5).

It resolves a key in the client's block, checks the role, answers from the query cache,
runs the action with a `RequestContext`, and puts a timeout on anything asynchronous.
Failures are exceptions (`RequestError` for the ones with their own code); turning them
into error frames is the protocol's job. Nothing here touches WebSocket frames.
"""

import orjson
from twisted.internet.defer import Deferred

from .messages import (
    FORBIDDEN,
    MISSING_FIELD,
    UNKNOWN_COMMAND,
    CachedResult,
    RequestError,
    optional_field,
    quote,
    require_string,
)


class Session:
    """One client's place in the zUI: its file and block, and the blocks it came from."""

    __slots__ = ("zvafile", "zblock", "history")

    def __init__(self, zvafile, zblock):
        self.zvafile = zvafile
        self.zblock = zblock
        self.history = []  # (zvafile, zblock) pairs, most recent last


class RequestContext:
    """What a running command may know and do: the `ctx` of plugin functions."""

    def __init__(self, conn, command, args, data, request_id, dispatcher):
        self.user = conn.identity["user"]
        self.role = conn.identity["role"]
        self.client_id = conn.client_id
        self.args = args
        self.data = data
        self.zHat = None
        self.command = command
        self.request_id = request_id
        self.session = conn.session
        self.connection = conn
        self.dispatcher = dispatcher


class Dispatcher:
    def __init__(self, workspace, cache, clock, default_timeout):
        self.workspace = workspace
        self.cache = cache
        self.clock = clock
        self.default_timeout = default_timeout

    def resolve(self, session, zkey, zblock=None):
        """(file, block, command) for a zKey in the session's block (or `zblock` of its file)."""
        zfile = self.workspace.file(session.zvafile)
        block = zfile.blocks.get(session.zblock if zblock is None else zblock)
        if block is None:
            raise RequestError(UNKNOWN_COMMAND, f"Unknown block: {quote(zblock)}")
        command = block.find(zkey)
        if command is None:
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
            cache_key = _cache_key(zfile.zpath, block.name, command.key, args, data, role)
            if not no_cache:
                hit, value = self.cache.get(cache_key)
                if hit:
                    return CachedResult(value)
        ctx = RequestContext(conn, command, args if args is not None else [], data, request_id, self)
        result = command.action.run(ctx)
        if type(result) is not Deferred:
            if cache_key is not None:
                self.cache.put(cache_key, result, command.cache_ttl)
            return result
        result.addTimeout(command.timeout or self.default_timeout, self.clock)
        if cache_key is not None:
            result.addCallback(self._store, cache_key, command.cache_ttl)
        return result

    def _store(self, value, cache_key, ttl):
        self.cache.put(cache_key, value, ttl)
        return value


def _cache_key(zpath, block, key, args, data, role):
    try:
        arguments = orjson.dumps([args, data], option=orjson.OPT_SORT_KEYS)
    except TypeError:
        raise RequestError(MISSING_FIELD, "args and data must be plain JSON") from None
    return (zpath, block, key, arguments, role)
