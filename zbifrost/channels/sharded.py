"""Shards (`broker` given several URLs, docs/protocol.md sections 6a and 10): `ShardedBroker`, an
`IBroker` over one `RedisBroker` per URL, and `ShardedPresence`, one `RedisPresence` per shard.

Each channel lives in exactly one shard, `shard_of(name, count)`: the jump consistent hash of
Lamping and Veach ("A Fast, Minimal Memory, Consistent Hash Algorithm", 2014) over the list
order, of a stable 64-bit key of the name (`channel_key`: BLAKE2b with an 8-byte digest of its
UTF-8, big-endian). Everything about a channel (publish, idempotency keys, history, joins and
leaves, presence) goes to its shard; the server API's control channel lives in the first shard.
Each shard hands its publications to the event handler directly; when one comes back after an
outage, only its own channels are filled from history.

The list check: as each shard comes up, the process records the shards' addresses (without
credentials, in order, a JSON list) at SHARDS_KEY there (SET NX) and reads what it holds; a list
that differs fires `refused` with one line naming both, and the broker stays down. Every shard,
not the first alone: a list in another order has another first shard. Until every shard holds
this process's list, every channel answers broker_unavailable. The broker is up while the list is
checked and every shard is up; meanwhile a channel of a shard that is down answers
broker_unavailable and the others go on working. Nothing here knows Redis beyond
`RedisBroker.call`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import orjson
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..messages import RequestError
from . import History, Stream
from .interfaces import IBroker, IBrokerEventHandler, ILifecycle, IPresence
from .redis import RedisBroker, broker_unavailable
from .redis_presence import RedisPresence

SHARDS_KEY = "zbifrost:shards"  # in every shard: the list of shards every process must have
RETRY_CHECK = 1.0  # seconds before the list check is tried again in a shard that failed it

# KEYS: SHARDS_KEY; ARGV: this process's list. Returns the list recorded (this one, if none was).
_RECORD = "redis.call('SET', KEYS[1], ARGV[1], 'NX')\nreturn redis.call('GET', KEYS[1])"

_LCG_MULTIPLIER = 2862933555777941757  # the paper's 64-bit linear congruential generator
_UINT64 = (1 << 64) - 1

log = Logger()


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in range(buckets) of the 64-bit `key`, as the paper's loop computes it: adding
    a bucket moves only the keys that go to the new one."""
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * _LCG_MULTIPLIER + 1) & _UINT64
        jump = int((bucket + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return bucket


def channel_key(name: str) -> int:
    """A 64-bit key of a channel name, the same in every process and every Python."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "big")


def shard_of(name: str, count: int) -> int:
    """The index, in the list of `count` shards, of the shard holding channel `name`."""
    return jump_hash(channel_key(name), count)


class _Unchecked:
    """Where every channel goes until the list of shards is checked: broker_unavailable."""

    def subscribe(self, name: str) -> None:
        """Nothing to keep: a subscribe answers broker_unavailable from its history read."""

    unsubscribe = subscribe

    def _unavailable(self, *args: Any) -> defer.Deferred[Any]:
        return defer.fail(broker_unavailable())

    publish = history = publish_join_leave = publish_control = _unavailable
    add_presence = remove_presence = presence = _unavailable


_UNCHECKED = _Unchecked()


@implementer(IBrokerEventHandler)
class _ShardEvents:
    """What one shard hands the handler: publications and joins/leaves as they come; its coming
    back after an outage concerns only the channels that live in it."""

    def __init__(self, handler: IBrokerEventHandler, owns: Callable[[str], bool]) -> None:
        self.handle_publication = handler.handle_publication
        self.handle_join_leave = handler.handle_join_leave
        self._handler = handler
        self._owns = owns

    def handle_reconnected(self, concerned: Callable[[str], bool] | None = None) -> None:
        owns = self._owns
        self._handler.handle_reconnected(owns if concerned is None else lambda name: owns(name) and concerned(name))


@implementer(IBroker, ILifecycle)
class ShardedBroker:
    features = ("broker", "sharded_broker")

    def __init__(self, shards: Sequence[RedisBroker]) -> None:
        self.shards = tuple(shards)
        self.addresses = [shard.address for shard in self.shards]  # without credentials
        self.reactor = self.shards[0].reactor
        # fires with one line when the list recorded in the first shard is another
        self.refused: defer.Deferred[str] = defer.Deferred()
        self.checked = False  # once every shard holds this process's list
        self._mine = orjson.dumps(self.addresses).decode("utf-8")
        self._unchecked = set(range(len(self.shards)))  # the shards whose list is still to be compared
        self._waiting_for_check: list[defer.Deferred[None]] = []
        self._retries: dict[int, Any] = {}  # shard index -> the IDelayedCall of its next check, after a failure

    def route(self, name: str, parts: Sequence[Any]) -> Any:
        """The part of `parts` (one per shard, in the list order) that channel `name` belongs to."""
        return parts[shard_of(name, len(parts))] if self.checked else _UNCHECKED

    def states(self) -> list[dict[str, str]]:
        """/healthz: each shard's address (no credentials) and whether it is up."""
        return [{"address": shard.address, "broker": "up" if shard.up else "unavailable"} for shard in self.shards]

    # -- ILifecycle ----------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.checked and all(shard.up for shard in self.shards)

    def start(self) -> None:
        for shard in self.shards:
            shard.start()
        self._check_list()

    def stop(self) -> defer.Deferred[None]:
        for retry in self._retries.values():
            if retry.active():
                retry.cancel()
        stopped = defer.gatherResults([shard.stop() for shard in self.shards], consumeErrors=True)
        return stopped.addCallback(lambda _: None)

    def when_up(self) -> defer.Deferred[None]:
        if self.checked:
            checked: defer.Deferred[None] = defer.succeed(None)
        else:
            checked = defer.Deferred()
            self._waiting_for_check.append(checked)
        every = checked.addCallback(lambda _: defer.gatherResults([shard.when_up() for shard in self.shards]))
        return every.addCallback(lambda _: None)

    # -- the list check ------------------------------------------------------------------

    def _check_list(self, index: int | None = None) -> None:
        """Record this process's list in shard `index` (every shard, when None) unless one is,
        and compare it with what that shard holds, once the shard is up."""
        for number in range(len(self.shards)) if index is None else (index,):
            recorded = self.shards[number].when_up().addCallback(self._record, self.shards[number])
            recorded.addCallbacks(self._compare, self._check_again, callbackArgs=(number,), errbackArgs=(number,))

    def _record(self, _: None, shard: RedisBroker) -> defer.Deferred[str]:
        return shard.call(_RECORD, [SHARDS_KEY], [self._mine])

    def _check_again(self, failure: Failure, index: int) -> None:
        if not failure.check(RequestError):
            log.failure("The list of broker shards could not be checked in {address}", failure,
                        address=self.addresses[index])
        self._retries[index] = self.reactor.callLater(RETRY_CHECK, self._check_list, index)

    def _compare(self, recorded: str, index: int) -> None:
        if recorded != self._mine:
            if not self.refused.called:
                self.refused.callback(
                    f"the broker shards {self._mine} differ from those recorded in shard {index + 1} "
                    f"({self.addresses[index]}, key {SHARDS_KEY}): {recorded}; every process must list the same "
                    "shards in the same order")
            return
        self._unchecked.discard(index)
        if self._unchecked:
            return
        self.checked = True
        waiting, self._waiting_for_check = self._waiting_for_check, []
        for deferred in waiting:
            deferred.callback(None)

    # -- IBroker -------------------------------------------------------------------------

    def attach(self, handler: IBrokerEventHandler) -> None:
        for index, shard in enumerate(self.shards):
            shard.attach(_ShardEvents(handler, partial(self._holds, index)))

    def _holds(self, index: int, name: str) -> bool:
        """Whether channel `name` lives in shard `index`."""
        return shard_of(name, len(self.shards)) == index

    def subscribe(self, name: str) -> None:
        self.route(name, self.shards).subscribe(name)

    def unsubscribe(self, name: str) -> None:
        self.route(name, self.shards).unsubscribe(name)

    def publish(self, name: str, data: Any, sender_id: str, history: History,
                idempotency_key: str | None = None) -> defer.Deferred[dict[str, Any]]:
        return self.route(name, self.shards).publish(name, data, sender_id, history, idempotency_key)

    def history(self, name: str, since: int | None, epoch: str | None) -> defer.Deferred[Stream]:
        return self.route(name, self.shards).history(name, since, epoch)

    def publish_join_leave(self, name: str, client_id: str, frame: bytes) -> defer.Deferred[None]:
        return self.route(name, self.shards).publish_join_leave(name, client_id, frame)

    def listen_control(self, node: str, listener: Callable[[bytes], None]) -> None:
        self.shards[0].listen_control(node, listener)

    def publish_control(self, message: bytes, node: str | None) -> defer.Deferred[int]:
        return (self.shards[0] if self.checked else _UNCHECKED).publish_control(message, node)


@implementer(IPresence, ILifecycle)
class ShardedPresence:
    """Presence in each channel's shard: one RedisPresence per shard of `broker`."""

    def __init__(self, broker: ShardedBroker, presence_ttl: float) -> None:
        self.broker = broker
        self.parts = tuple(RedisPresence(shard, presence_ttl) for shard in broker.shards)

    @property
    def up(self) -> bool:
        return self.broker.up

    def start(self) -> None:
        for part in self.parts:
            part.start()

    def stop(self) -> defer.Deferred[None]:
        stopped = defer.gatherResults([part.stop() for part in self.parts], consumeErrors=True)
        return stopped.addCallback(lambda _: None)

    def when_up(self) -> defer.Deferred[None]:
        return self.broker.when_up()

    def add_presence(self, name: str, client_id: str, info: dict[str, str]) -> defer.Deferred[None]:
        return self.broker.route(name, self.parts).add_presence(name, client_id, info)

    def remove_presence(self, name: str, client_id: str) -> defer.Deferred[None]:
        return self.broker.route(name, self.parts).remove_presence(name, client_id)

    def presence(self, name: str) -> defer.Deferred[dict[str, dict[str, str]]]:
        return self.broker.route(name, self.parts).presence(name)
