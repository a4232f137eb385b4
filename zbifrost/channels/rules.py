"""Channel rules of the config file's `channels:` section: who may subscribe and publish where,
how much history a channel keeps, whether it has presence and join/leave (docs/protocol.md section 6),
and whether the application's subscribe proxy is asked too (section 13).

The first rule whose glob `pattern` matches a channel's whole name applies (`fnmatchcase`
anchors at the very end: `chat` does not match `chat\n`, which `valid_channel` refuses anyway);
a pattern holds only the characters of channel names and the glob's `*?[]!` (`valid_pattern`).
With no rules every channel is open to every role; with rules, a channel that matches none
is closed to clients. `user:<name>` channels are private before any rule: only the
authenticated user `<name>` may subscribe, and no client may publish. The backend (plugins,
`POST /api/publish`) is trusted and is not asked. Nothing here knows about connections or
backends: callers pass the role and the user. `parse_channel_rules` reads the section itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from ..settings import ConfigError, check_mapping
from . import CHANNEL_CHARACTERS, DEFAULT_HISTORY, History, Membership

EVERY_ROLE = "*"
PRIVATE_PREFIX = "user:"
_PATTERN = re.compile(f"[{CHANNEL_CHARACTERS}*?\\[\\]!]+")
_RULE_KEYS = ("pattern", "subscribe", "publish", "history", "presence", "join_leave", "proxy")
_HISTORY_KEYS = ("size", "ttl")


@dataclass(frozen=True)
class ChannelRule:
    pattern: str
    subscribe: tuple[str, ...] = (EVERY_ROLE,)
    publish: tuple[str, ...] = (EVERY_ROLE,)
    history: History = DEFAULT_HISTORY
    presence: bool = False  # `presence` / `presence_stats` answer (1.2)
    join_leave: bool = False  # subscribers get `join` / `leave` events (1.2)
    proxy: bool = False  # each client subscribe is also asked of the application's subscribe proxy (1.3)


def valid_pattern(pattern: object) -> bool:
    """True for a glob that can match channel names: a str of their characters and `*?[]!`,
    matched in full (a YAML block scalar's trailing newline is not part of a pattern)."""
    return type(pattern) is str and _PATTERN.fullmatch(pattern) is not None


def matches(channel: str, pattern: str) -> bool:
    """Whether a glob `pattern` matches the channel's whole name (rules, the server API's `channels`)."""
    return fnmatchcase(channel, pattern)


def parse_channel_rules(where: str, raw: Any, folder: str) -> list[ChannelRule]:
    """The `channels:` section (a list of rules, or null for none) as ChannelRule objects, or a
    one-line ConfigError naming the rule and key at fault."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list of rules (- pattern: ...)")
    return [_rule(f"{where}[{index}]", item) for index, item in enumerate(raw)]


def _rule(where: str, raw: Any) -> ChannelRule:
    check_mapping(where, raw, _RULE_KEYS, '{pattern: "chat.*", subscribe: [user]}')
    pattern = raw.get("pattern")
    if not valid_pattern(pattern):
        raise ConfigError(f"{where}.pattern: expected a glob such as \"chat.*\" of channel-name characters "
                          f"and *?[]!, got {pattern!r}")
    rule: dict[str, Any] = {"pattern": pattern}
    for action in ("subscribe", "publish"):
        if action in raw:
            roles = raw[action]
            if not isinstance(roles, list) or not all(isinstance(role, str) and role for role in roles):
                raise ConfigError(f"{where}.{action}: expected a list of roles (\"*\" for every role), got {roles!r}")
            rule[action] = tuple(roles)
    if "history" in raw:
        rule["history"] = _history(f"{where}.history", raw["history"])
    for switch in ("presence", "join_leave", "proxy"):
        if switch in raw:
            if not isinstance(raw[switch], bool):
                raise ConfigError(f"{where}.{switch}: expected true or false, got {raw[switch]!r}")
            rule[switch] = raw[switch]
    return ChannelRule(**rule)


def _history(where: str, raw: Any) -> History:
    check_mapping(where, raw, _HISTORY_KEYS, "{size: 100, ttl: 300}")
    size, ttl = raw.get("size", History.size), raw.get("ttl", History.ttl)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError(f"{where}.size: expected an integer of 0 or more (0: no history), got {size!r}")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
        raise ConfigError(f"{where}.ttl: expected a number of seconds greater than zero, got {ttl!r}")
    return History(size=size, ttl=float(ttl))


def _allows(roles: tuple[str, ...], role: str) -> bool:
    return EVERY_ROLE in roles or role in roles


class ChannelRules:
    def __init__(self, rules: Iterable[ChannelRule]) -> None:
        self.rules = tuple(rules)

    def rule_for(self, channel: str) -> ChannelRule | None:
        """The first rule matching the channel, or None."""
        for rule in self.rules:
            if matches(channel, rule.pattern):
                return rule
        return None

    def history(self, channel: str) -> History:
        rule = self.rule_for(channel)
        return DEFAULT_HISTORY if rule is None else rule.history

    def membership(self, channel: str, info: dict[str, str]) -> Membership | None:
        """The `Membership` a subscriber with `info` gets, or None when the channel's rule
        turns neither presence nor join/leave on."""
        rule = self.rule_for(channel)
        if rule is None or not (rule.presence or rule.join_leave):
            return None
        return Membership(info, rule.presence, rule.join_leave)

    def asks_application(self, channel: str) -> bool:
        """Whether a client's subscribe must also be allowed by the subscribe proxy."""
        rule = self.rule_for(channel)
        return rule is not None and rule.proxy

    def has_presence(self, channel: str) -> bool:
        rule = self.rule_for(channel)
        return rule is not None and rule.presence

    def may_subscribe(self, channel: str, role: str, user: str | None) -> bool:
        """`user` is the authenticated user's name, or None when auth is off."""
        if channel.startswith(PRIVATE_PREFIX):
            return user is not None and channel == PRIVATE_PREFIX + user
        return self._open_to(channel, role, "subscribe")

    def may_publish(self, channel: str, role: str) -> bool:
        return not channel.startswith(PRIVATE_PREFIX) and self._open_to(channel, role, "publish")

    def _open_to(self, channel: str, role: str, action: str) -> bool:
        if not self.rules:
            return True
        rule = self.rule_for(channel)
        return rule is not None and _allows(getattr(rule, action), role)
