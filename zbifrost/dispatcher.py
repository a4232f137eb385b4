"""The dispatcher: zKey -> command -> result, or a Deferred of it (docs/protocol.md section 5).

It resolves a key in the client's block, checks the role, answers from the query cache,
runs the action with a `RequestContext` (zbifrost.context), and puts a timeout on anything
asynchronous. Failures are exceptions (`RequestError` for the ones with their own code);
turning them into error frames is the protocol's job. Nothing here touches WebSocket frames.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .context import Asker, RequestContext
from .filestamp import Stamp
from .messages import (
    FORBIDDEN,
    JSON,
    MISSING_FIELD,
    UNKNOWN_COMMAND,
    CachedResult,
    JSONValue,
    RequestError,
    RequestId,
    optional_field,
    quote,
    require_string,
)
from .zui.actions import BackAction
from .zui.model import BACK_KEY, Block, Command, ZuiFile

if TYPE_CHECKING:
    from .cache import QueryCache
    from .context import Place
    from .interfaces import IReactor
    from .session import Session
    from .zui.workspace import Workspace

# the key a result is cached under (`_cache_key`)
CacheKey = tuple[str, Stamp | None, str, str, bytes, str]

# `zBack` in a block that does not define it.
BACK_COMMAND = Command(key=BACK_KEY, action=BackAction(), description="Go back to the previous block")


log = Logger()

MAX_CACHED_ARGUMENTS = 1024  # bytes of JSON args + data beyond which a result is not cached


class Dispatcher:
    def __init__(self, workspace: Workspace, cache: QueryCache, reactor: IReactor, default_timeout: float) -> None:
        self.workspace = workspace
        self.cache = cache
        self.reactor = reactor
        self.default_timeout = default_timeout

    def resolve(self, place: Place, zkey: str, zblock: str | None = None) -> tuple[ZuiFile, Block | None, Command]:
        """(file, block, command) for a zKey in the block of a client's `place` (or `zblock` of
        its file).

        `zBack` is answered in every block (and even when the client's block has gone from
        a reloaded file), unless the block defines it itself.
        """
        zfile = self.workspace.file(place.zvafile)
        name = place.zblock if zblock is None else zblock
        block = zfile.blocks.get(name)
        command = block.find(zkey) if block is not None else None
        if command is None:
            if (zkey[1:] if zkey[:1] == "^" else zkey) == BACK_KEY:
                return zfile, block, BACK_COMMAND
            if block is None:
                raise RequestError(UNKNOWN_COMMAND, f"Unknown block: {quote(name)}")
            raise RequestError(UNKNOWN_COMMAND, f"Unknown command: {quote(zkey)}")
        return zfile, block, command

    def dispatch(self, session: Session, message: JSON, request_id: RequestId
                 ) -> JSONValue | Deferred[JSONValue] | CachedResult:
        zkey = require_string(message, "zKey", alias="cmd")
        zblock = optional_field(message, "zBlock", str, "a string")
        args = optional_field(message, "args", list, "an array")
        data = optional_field(message, "data", dict, "an object")
        no_cache = optional_field(message, "no_cache", bool, "true or false")
        zfile, block, command = self.resolve(session.place, zkey, zblock)
        role = session.identity["role"]
        if not command.allows(role):
            raise RequestError(FORBIDDEN, f"Your role may not run {quote(zkey)}")
        cache_key = None
        if command.cache_ttl is not None:
            cache_ttl = self.cache.ttl_for(command.cache_ttl)
            if cache_ttl:  # 0: set_cache_ttl turned caching off
                assert block is not None  # only zBack is found outside a block, and it never caches
                cache_key = _cache_key(zfile, block.name, command.key, args, data, role)
            if cache_key is not None and not no_cache:
                hit, value = self.cache.get(cache_key)
                if hit:
                    return CachedResult(value)
        action = command.action
        if not action.uses_context:  # plain strings and zDisplay: the hot path stays lean
            result = action.run(None)  # type: ignore[arg-type]  # an action that uses no context takes None
        else:
            asker = Asker(session, request_id, self.reactor)
            block_name = session.place.zblock if zblock is None else zblock
            result = action.run(RequestContext(session, command, args if args is not None else [], data, asker,
                                               self.workspace, block_name))
            if type(result) is Deferred:
                timeout = command.timeout or self.default_timeout
                result.addTimeout(timeout, self.reactor,
                                  onTimeoutCancel=lambda value, seconds: _timed_out(value, seconds, command, session))
                result.addBoth(asker.finished)
        if type(result) is not Deferred:
            if cache_key is not None:
                self.cache.put(cache_key, result, cache_ttl)
            return result
        if cache_key is not None:
            result.addCallback(self._store, cache_key, cache_ttl)
        return result

    def _store(self, value: JSONValue, cache_key: CacheKey, ttl: float) -> JSONValue:
        self.cache.put(cache_key, value, ttl)
        return value


def _timed_out(value: JSONValue, seconds: float, command: Command, session: Session) -> JSONValue:
    """addTimeout's onTimeoutCancel: log the timeout; the CancelledError it leaves becomes the
    client's `timeout` error in the protocol."""
    log.warn("Command {zkey!r} timed out after {seconds} s (client {client_id}, user {user})", zkey=command.key,
             seconds=seconds, client_id=session.client_id, user=session.identity["user"])
    return value


def _cache_key(zfile: ZuiFile, block: str, key: str, args: list[JSONValue] | None, data: JSON | None, role: str
               ) -> CacheKey | None:
    """Results are shared per file version, block, key, arguments, form data and role.

    None (run uncached) when the arguments are larger than MAX_CACHED_ARGUMENTS: the cache
    is bounded by entries, and large keys from one client must not fill memory."""
    try:
        arguments = orjson.dumps([args, data], option=orjson.OPT_SORT_KEYS)
    except TypeError:
        raise RequestError(MISSING_FIELD, "args and data must be plain JSON") from None
    if len(arguments) > MAX_CACHED_ARGUMENTS:
        return None
    return (zfile.zpath, zfile.stamp, block, key, arguments, role)
