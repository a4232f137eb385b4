"""`discover` and `introspect`: what the client's role may run in its current zUI file."""

from ..messages import FORBIDDEN, RequestError, optional_field, quote, require_string


def discover(conn, message, request_id):
    role = conn.identity["role"]
    zfile = conn.server.workspace.file(conn.session.zvafile)
    blocks = {}
    for name, block in zfile.blocks.items():
        commands = [{"key": command.key, "kind": command.action.kind, "description": command.description}
                    for command in block.commands.values() if command.allows(role)]
        blocks[name] = {"menu": block.visible_menu(role), "commands": commands}
    return {"zVaFile": zfile.zpath, "blocks": blocks}


def introspect(conn, message, request_id):
    zkey = require_string(message, "zKey", alias="cmd")
    zblock = optional_field(message, "zBlock", str, "a string")
    _, block, command = conn.server.dispatcher.resolve(conn.session, zkey, zblock)
    if not command.allows(conn.identity["role"]):
        raise RequestError(FORBIDDEN, f"Your role may not run {quote(zkey)}")
    return command.describe(block.name if block is not None else conn.session.zblock)


HANDLERS = {"discover": discover, "introspect": introspect}
