"""The loaded form of a zUI file: files hold blocks, blocks hold a menu and commands.

Plain data, built once by the loader and shared read-only by every connection. Nothing here
knows about connections or YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from ..context import RequestContext
    from ..filestamp import Stamp
    from ..messages import JSON, JSONValue
    from .actions import FunctionAction

BACK_KEY = "zBack"  # answered in every block, defined there or not


class Action(Protocol):
    """What a command does: one of the kinds of zbifrost.zui.actions."""

    kind: str
    cacheable: bool  # its result may be kept in the query cache
    uses_context: bool  # False: `run` is given None instead of a RequestContext

    def run(self, ctx: RequestContext) -> JSONValue | Deferred[JSONValue]:
        """The result, or a Deferred of it."""

    def introspect(self) -> JSON:
        """What `introspect` tells a client about the action, beyond its kind."""


@dataclass
class Command:
    key: str  # as written in the file, e.g. "^List Users"
    action: Action
    description: str | None = None
    roles: frozenset[str] | None = None  # None: everyone
    cache_ttl: float | None = None
    timeout: float | None = None  # None: the server's command_timeout

    def allows(self, role: str) -> bool:
        return self.roles is None or role in self.roles

    def describe(self, block: str) -> JSON:
        info = {"key": self.key, "block": block, "kind": self.action.kind, "description": self.description,
                "roles": sorted(self.roles) if self.roles is not None else None,
                "cache_ttl": self.cache_ttl}
        info.update(self.action.introspect())
        return info


@dataclass
class Block:
    name: str
    menu: list[str] = field(default_factory=list)
    commands: dict[str, Command] = field(default_factory=dict)  # lookup name (no leading "^") -> Command

    def find(self, zkey: str) -> Command | None:
        """The command a zKey names: one leading `^` is stripped, so `^Ping` and `Ping` match."""
        return self.commands.get(zkey[1:] if zkey[:1] == "^" else zkey)

    def visible_menu(self, role: str) -> list[str]:
        """The menu without the commands `role` may not run (entries naming no command stay)."""
        return [item for item in self.menu if (found := self.find(item)) is None or found.allows(role)]


@dataclass
class ZuiFile:
    zpath: str
    path: str
    blocks: dict[str, Block]  # name -> Block, in file order
    stamp: Stamp | None = None  # zbifrost.filestamp's, of the file as it was read
    plugin_calls: tuple[FunctionAction, ...] = ()  # its zFunc actions, which a plugin reload must keep working

    def default_block(self) -> str:
        return "root" if "root" in self.blocks else next(iter(self.blocks))
