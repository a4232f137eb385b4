"""The loaded form of a zUI file: files hold blocks, blocks hold a menu and commands.

Plain data, built once by the loader and shared read-only by every connection. Nothing here
knows about connections or YAML.
"""

from dataclasses import dataclass, field

BACK_KEY = "zBack"  # answered in every block, defined there or not

@dataclass
class Command:
    key: str  # as written in the file, e.g. "^List Users"
    action: object  # an action from zbifrost.zui.actions
    description: str = None
    roles: frozenset = None  # None: everyone
    cache_ttl: float = None
    timeout: float = None  # None: the server's command_timeout

    def allows(self, role):
        return self.roles is None or role in self.roles

    def describe(self, block):
        info = {"key": self.key, "block": block, "kind": self.action.kind, "description": self.description,
                "roles": sorted(self.roles) if self.roles is not None else None,
                "cache_ttl": self.cache_ttl}
        info.update(self.action.introspect())
        return info


@dataclass
class Block:
    name: str
    menu: list = field(default_factory=list)
    commands: dict = field(default_factory=dict)  # lookup name (no leading "^") -> Command

    def find(self, zkey):
        """The command a zKey names: one leading `^` is stripped, so `^Ping` and `Ping` match."""
        return self.commands.get(zkey[1:] if zkey[:1] == "^" else zkey)

    def visible_menu(self, role):
        """The menu without the commands `role` may not run (entries naming no command stay)."""
        return [item for item in self.menu if (found := self.find(item)) is None or found.allows(role)]


@dataclass
class ZuiFile:
    zpath: str
    path: str
    blocks: dict  # name -> Block, in file order
    stamp: tuple = None  # zbifrost.filestamp's, of the file as it was read
    plugin_calls: tuple = ()  # its zFunc actions, which a plugin reload must keep working

    def default_block(self):
        return "root" if "root" in self.blocks else next(iter(self.blocks))
