"""`discover` and `introspect`: what the client's role may run in its current zUI file
(and `get_schema`, zBifrost 1.5.4's data-model query, which has nothing to answer here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from ..messages import FORBIDDEN, JSON, NOT_AVAILABLE, RequestError, RequestId, optional_field, quote, require_string

if TYPE_CHECKING:
    from ..session import Session
    from . import Handler


def discover(session: Session, message: JSON, request_id: RequestId) -> JSON:
    role = session.identity["role"]
    zfile = session.hub.workspace.file(session.place.zvafile)
    blocks: JSON = {}
    for name, block in zfile.blocks.items():
        commands = [{"key": command.key, "kind": command.action.kind, "description": command.description}
                    for command in block.commands.values() if command.allows(role)]
        blocks[name] = {"menu": block.visible_menu(role), "commands": commands}
    return {"zVaFile": zfile.zpath, "blocks": blocks}


def introspect(session: Session, message: JSON, request_id: RequestId) -> JSON:
    zkey = require_string(message, "zKey", alias="cmd")
    zblock = optional_field(message, "zBlock", str, "a string")
    _, block, command = session.hub.dispatcher.resolve(session.place, zkey, zblock)
    if not command.allows(session.identity["role"]):
        raise RequestError(FORBIDDEN, f"Your role may not run {quote(zkey)}")
    info = command.describe(block.name if block is not None else session.place.zblock)
    info["cache_ttl"] = session.hub.cache.ttl_for(command.cache_ttl)  # after any set_cache_ttl
    return info


def get_schema(session: Session, message: JSON, request_id: RequestId) -> NoReturn:
    raise RequestError(NOT_AVAILABLE, "get_schema is not available: zbifrost has no data models")


HANDLERS: dict[str, Handler] = {"discover": discover, "introspect": introspect, "get_schema": get_schema}
