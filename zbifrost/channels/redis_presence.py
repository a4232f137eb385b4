"""Presence in Redis (1.2; `IPresence` and `ILifecycle`), through the Redis broker's connection:
who is subscribed to a channel on every process using the same Redis.

A sorted set `zbifrost:presence:<name>` holds each listed member's info (JSON) scored with the
Redis time (ms) at which it expires; each process renews its own members every third of
`presence_ttl`, and readers drop expired entries first, so that a killed process's members are
gone within `presence_ttl`. It is up when the broker is.
"""

from __future__ import annotations

import orjson
from twisted.internet import defer, task
from zope.interface import implementer

from . import presence_entry
from .interfaces import ILifecycle, IPresence
from .redis import RedisBroker

PRESENCE = "zbifrost:presence:"

# now + ARGV[1] ms in Redis time: when a presence entry written now expires
_EXPIRES = """
local now = redis.call('TIME')
local expires = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1])
"""

# KEYS: presence set; ARGV: ttl in ms, the members to keep...
_ADD = _EXPIRES + """
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expires, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
"""

# KEYS: presence set; ARGV: the member
_REMOVE = "redis.call('ZREM', KEYS[1], ARGV[1])"

# KEYS: presence set; ARGV: 0 (entries expiring from now on are alive)
_PRESENCE = _EXPIRES + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. expires)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


@implementer(IPresence, ILifecycle)
class RedisPresence:
    def __init__(self, broker: RedisBroker, presence_ttl: float) -> None:
        self.broker = broker
        self.ttl_ms = max(1, int(presence_ttl * 1000))
        self._entries: dict[str, dict[str, str]] = {}  # channel -> client_id -> entry, of this process's members
        self._heartbeat = task.LoopingCall(self._renew)
        self._heartbeat.clock = broker.reactor

    @property
    def up(self) -> bool:
        return self.broker.up

    def start(self) -> None:
        self._heartbeat.start(self.ttl_ms / 3000, now=False)

    def stop(self) -> defer.Deferred[None]:
        if self._heartbeat.running:
            self._heartbeat.stop()
        return defer.succeed(None)

    def when_up(self) -> defer.Deferred[None]:
        return self.broker.when_up()

    def _renew(self) -> None:
        """The heartbeat: this process's members stay present for presence_ttl more."""
        if not self.broker.up:
            return
        for name, entries in self._entries.items():
            renewed = self.broker.call(_ADD, [PRESENCE + name], [self.ttl_ms, *entries.values()])
            renewed.addErrback(lambda failure: None)  # lost: renewed at the next beat

    def add_presence(self, name: str, client_id: str, info: dict[str, str]) -> defer.Deferred[None]:
        entry = self._entries.setdefault(name, {})[client_id] = orjson.dumps(info).decode("utf-8")
        return self.broker.call(_ADD, [PRESENCE + name], [self.ttl_ms, entry]).addCallback(lambda _: None)

    def remove_presence(self, name: str, client_id: str) -> defer.Deferred[None]:
        entries = self._entries.get(name, {})
        entry = entries.pop(client_id, None)
        if not entries:
            self._entries.pop(name, None)
        if entry is None:
            return defer.succeed(None)
        return self.broker.call(_REMOVE, [PRESENCE + name], [entry]).addCallback(lambda _: None)

    def presence(self, name: str) -> defer.Deferred[dict[str, dict[str, str]]]:
        return self.broker.call(_PRESENCE, [PRESENCE + name], [0]).addCallback(
            lambda entries: dict(presence_entry(orjson.loads(entry)) for entry in entries))
