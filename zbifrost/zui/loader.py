"""Load one zUI file: safe YAML with line numbers -> a validated `ZuiFile`.

Every problem is a `ZuiError` naming the file (relative to the workspace) and the line, found
here at load time so that requests never meet a malformed action. This module reads files;
it knows nothing of connections, caching or reloading (see `zbifrost.zui.workspace`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from .. import filestamp
from ..yaml_errors import yaml_error_text
from .actions import ZuiError, parse_action
from .model import BACK_KEY, Block, Command, ZuiFile

if TYPE_CHECKING:
    from ..app_proxy import Application
    from .actions import FunctionAction
    from .plugins import Plugins

# A value as safe YAML loads it (mappings are _LineDicts): what a zUI file holds is only known once read.
YAMLValue = Any

OPTION_KEYS = ("description", "roles", "cache_ttl", "timeout")


class _LineDict(dict):
    """A YAML mapping that remembers where it and each of its keys were written."""

    line = 0
    lines: dict[Any, int]  # key -> the line it is written on, set with the mapping


class _LineLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags that build objects), recording line numbers and
    refusing duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    mapping = _LineDict()
    mapping.line = node.start_mark.line + 1
    mapping.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            duplicate = key in mapping
        except TypeError:
            raise ZuiError(f"line {line}: a mapping key must be a string or number") from None
        if duplicate:
            raise ZuiError(f"line {line}: duplicate key {key!r}")
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = line
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True)
class ParseContext:
    """What an action may need to know while it is built."""

    workspace: str  # the workspace's real path
    zpath: str  # of the file being loaded
    block_names: frozenset[str]  # the blocks of the file being loaded
    plugins: Plugins  # imports and checks zFunc targets
    # zpath -> block names of another file, or None while it is loading
    linked_blocks: Callable[[str], frozenset[str] | None]
    plugin_calls: list[FunctionAction]  # every zFunc action of the file, appended as they are built
    application: Application | None = None  # what zHTTP actions ask; None without a `proxy:` section
    form_fields: frozenset[str] | None = None  # inside a zDialog's onSubmit: the names zConv.<field> may use
    depth: int = 0  # how deep inside wizards and dialogs

    def nested(self, **changes: Any) -> ParseContext:
        """The context for an action inside a wizard or a dialog."""
        return dataclasses.replace(self, depth=self.depth + 1, **changes)

    def blocks_of(self, zpath: str) -> frozenset[str] | None:
        """The block names of a zLink's target file (None: not known yet, it is loading)."""
        return self.block_names if zpath == self.zpath else self.linked_blocks(zpath)


def _number(value: YAMLValue, name: str, line: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ZuiError(f"line {line}: {name} must be a number greater than zero")
    return float(value)


def _parse_command(key: str, value: YAMLValue, line: int, context: ParseContext) -> Command:
    options = {}
    if isinstance(value, _LineDict):  # every mapping _LineLoader builds
        options = {name: value[name] for name in OPTION_KEYS if name in value}
        if options:
            lines = value.lines
            value = _LineDict({k: v for k, v in value.items() if k not in OPTION_KEYS})
            value.line, value.lines = line, lines
    command = Command(key=key, action=parse_action(value, line, context))
    if "description" in options:
        if not isinstance(options["description"], str):
            raise ZuiError(f"line {line}: description must be a string")
        command.description = options["description"]
    if "roles" in options:
        roles = options["roles"]
        roles = [roles] if isinstance(roles, str) else roles
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise ZuiError(f"line {line}: roles must be a list of role names")
        command.roles = frozenset(roles)
    if "cache_ttl" in options:
        if not command.action.cacheable:
            raise ZuiError(f"line {line}: cache_ttl cannot be used on a {command.action.kind} action "
                           "(it moves the client or asks it for input)")
        command.cache_ttl = _number(options["cache_ttl"], "cache_ttl", line)
    if "timeout" in options:
        command.timeout = _number(options["timeout"], "timeout", line)
    return command


def _parse_block(name: str, body: YAMLValue, line: int, context: ParseContext) -> Block:
    if not isinstance(body, _LineDict):
        raise ZuiError(f"line {line}: block {name!r} must be a mapping of keys to actions")
    block = Block(name=name)
    for key, value in body.items():
        key_line = body.lines.get(key, line)
        if not isinstance(key, str) or not key:
            raise ZuiError(f"line {key_line}: key {key!r} in block {name!r} must be a non-empty string")
        if key.startswith("~"):
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise ZuiError(f"line {key_line}: menu {key!r} must be a list of key names")
            block.menu = list(value)
            continue
        lookup = key[1:] if key.startswith("^") else key
        if lookup in block.commands:
            raise ZuiError(f"line {key_line}: key {key!r} repeats {block.commands[lookup].key!r} in block {name!r}")
        command = _parse_command(key, value, key_line, context)
        if lookup == BACK_KEY and command.action.kind != "back":
            raise ZuiError(f"line {key_line}: the key {key!r} is reserved for going back; its action must be zBack")
        block.commands[lookup] = command
    return block


def load_zui_file(workspace: str, zpath: str, path: str, plugins: Plugins,
                  linked_blocks: Callable[[str], frozenset[str] | None], application: Application | None = None
                  ) -> ZuiFile:
    """Parse and validate the file at `path` (found from `zpath`). Raises ZuiError.

    `plugins` imports the functions the file calls; `linked_blocks(zpath)` gives the block
    names of a file a zLink names (or None when they cannot be known yet).
    """
    shown = os.path.relpath(path, workspace)
    try:
        with open(path, "rb") as handle:
            stamp = filestamp.stamp_of(os.fstat(handle.fileno()))
            text = handle.read()
        raw = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
        if not isinstance(raw, _LineDict) or not raw:
            raise ZuiError("line 1: a zUI file must be a mapping of block names to blocks")
        context = ParseContext(workspace=workspace, zpath=zpath, block_names=frozenset(raw),
                               plugins=plugins, linked_blocks=linked_blocks, plugin_calls=[], application=application)
        blocks: dict[str, Block] = {}
        for name, body in raw.items():
            line = raw.lines.get(name, 1)
            if not isinstance(name, str) or not name:
                raise ZuiError(f"line {line}: block name {name!r} must be a non-empty string")
            blocks[name] = _parse_block(name, body, line, context)
    except ZuiError as err:
        raise ZuiError(f"zUI file {shown}, {err}") from None
    except yaml.YAMLError as err:
        raise ZuiError(yaml_error_text(f"zUI file {shown}", err)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ZuiError(f"zUI file {shown}: cannot read it ({err})") from None
    return ZuiFile(zpath=zpath, path=path, blocks=blocks, stamp=stamp,
                   plugin_calls=tuple(context.plugin_calls))
