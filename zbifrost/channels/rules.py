"""Channel rules of the config file's `channels:` section: who may subscribe and publish where,
how much history a channel keeps, and whether it has presence and join/leave (PROTOCOL.md section 6).

The first rule whose glob `pattern` matches a channel's whole name applies (`fnmatchcase`
anchors at the very end: `chat` does not match `chat\n`, which `valid_channel` refuses anyway);
a pattern holds only the characters of channel names and the glob's `*?[]!` (`valid_pattern`).
With no rules every channel is open to every role; with rules, a channel that matches none
is closed to clients. `user:<name>` channels are private before any rule: only the
authenticated user `<name>` may subscribe, and no client may publish. The backend (plugins,
`POST /api/publish`) is trusted and is not asked. Nothing here knows about connections or
backends: callers pass the role and the user.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from . import CHANNEL_CHARACTERS, DEFAULT_HISTORY, History, Membership

EVERY_ROLE = "*"
PRIVATE_PREFIX = "user:"
_PATTERN = re.compile(f"[{CHANNEL_CHARACTERS}*?\\[\\]!]+")


@dataclass(frozen=True)
class ChannelRule:
    pattern: str
    subscribe: tuple[str, ...] = (EVERY_ROLE,)
    publish: tuple[str, ...] = (EVERY_ROLE,)
    history: History = DEFAULT_HISTORY
    presence: bool = False  # `presence` / `presence_stats` answer (1.2)
    join_leave: bool = False  # subscribers get `join` / `leave` events (1.2)


def valid_pattern(pattern: object) -> bool:
    """True for a glob that can match channel names: a str of their characters and `*?[]!`,
    matched in full (a YAML block scalar's trailing newline is not part of a pattern)."""
    return type(pattern) is str and _PATTERN.fullmatch(pattern) is not None


def _allows(roles: tuple[str, ...], role: str) -> bool:
    return EVERY_ROLE in roles or role in roles


class ChannelRules:
    def __init__(self, rules: Iterable[ChannelRule]) -> None:
        self.rules = tuple(rules)

    def rule_for(self, channel: str) -> ChannelRule | None:
        """The first rule matching the channel, or None."""
        for rule in self.rules:
            if fnmatchcase(channel, rule.pattern):
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
