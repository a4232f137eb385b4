"""The Redis broker (`--broker redis://host:port/db`, `IBroker` and `ILifecycle`): channels
shared by every zbifrost process using the same Redis, through txredisapi on the reactor
(never a blocking client). It owns the two connections; `redis_presence` runs its commands
through this broker's (`call`).

Per channel, a hash `zbifrost:meta:<name>` holds its `epoch` and `offset`, and a stream
`zbifrost:history:<name>` its history, the entry of offset N having the id `N-0`. One Lua script
publishes atomically: it takes the next offset, XADDs with MAXLEN and sets the stream's expiry
(the channel's `History`), and PUBLISHes `<offset> <epoch> <payload>` on
`zbifrost:message:<name>`;
another reads epoch, offset and the entries after an offset at one instant. A publish with an
`idempotency_key` first looks in the hash `zbifrost:idem:<name>:<key>` (field: the channel name,
so that names and keys with `:` cannot meet; expires IDEMPOTENCY_WINDOW seconds after it was
set) for the `<epoch> <offset>` of a publish with that key, and answers it without publishing. Each process holds
one pub/sub connection, PSUBSCRIBEd to every channel (so `subscribe` has nothing to do), and
hands what arrives to its event handler (`node.Channels`), each publication encoded once.
Joins and leaves are PUBLISHed as `<client_id> <event>` on `zbifrost:join_leave:<name>`, and the
server API's control messages on `zbifrost:control` (to every process) or
`zbifrost:control:<node>` (to one); PUBLISH's count of receivers tells how many processes a
control message reached (one pub/sub connection each).

Redis replicates asynchronously, so a replica promoted to master (Sentinel) may lack the newest
publications, and would hand out their offsets again. So the data carries a lineage: the hash
`zbifrost:lineage` names it (`id`) and the master it was last seen on (`replid`, Redis's
`master_replid`). Each new command connection first runs `_ADOPT`: on the master that wrote the
lineage, or on a master restarted since (a new replid, but never a replica since its start: its
`master_replid2` is zero, and its data is what it kept, AOF), the lineage stays; on a master that
was promoted from a replica, the lineage is new. Each channel's meta hash holds the lineage it
was written in (`lineage`); a publish or a read that finds another one starts a new epoch there
(its offsets go on counting, so that the stream ids keep increasing), and subscribers are told
`recovered: false`. The hot path pays one HGET and a compare.

Two connections (commands, pub/sub), made and logged in by `redis_connect`, reconnect with
txredisapi's backoff. While either is down, every command fails at once with `broker_unavailable`
(one log line per outage), as does one that Redis refuses to write durably now (loading,
MISCONF, no replicas, read-only: a master demoted under us also drops the connection, so that
the master is found again); once both are back, the handler is told (`handle_reconnected`), so
that subscribers get what was published meanwhile (as far as history reaches).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import orjson
import txredisapi
from twisted.internet import defer
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import messages
from ..broker_url import BrokerURL
from . import IDEMPOTENCY_WINDOW, History, Publication, Stream, message_frame
from .interfaces import IBroker, IBrokerEventHandler, ILifecycle
from .redis_connect import CONNECT_TIMEOUT, Connector

META = "zbifrost:meta:"
HISTORY = "zbifrost:history:"
MESSAGES = "zbifrost:message:"
JOIN_LEAVE = "zbifrost:join_leave:"
IDEMPOTENCY = "zbifrost:idem:"
LINEAGE = "zbifrost:lineage"
CONTROL = "zbifrost:control"
ANY_EPOCH = "*"

log = Logger()

# the errors of a Redis that is up but cannot take (or durably keep) a write now: broker_unavailable
_UNAVAILABLE_REPLIES = ("LOADING", "MISCONF", "MASTERDOWN", "READONLY", "NOREPLICAS", "BUSY", "TRYAGAIN")

# KEYS: the lineage hash; ARGV: a new lineage id. Returns {the lineage of this master's data, 1 when
# it is new because this master was promoted from a replica (it may lack the newest writes)}.
_ADOPT = """
local info = redis.call('INFO', 'replication')
if not string.find(info, 'role:master', 1, true) then
  return redis.error_reply('READONLY this Redis is a replica')
end
local replid = string.match(info, 'master_replid:(%x+)')
local promoted = string.match(info, 'master_replid2:(%x+)') ~= string.rep('0', 40)
local lineage = redis.call('HGET', KEYS[1], 'id')
local changed = lineage and redis.call('HGET', KEYS[1], 'replid') ~= replid and promoted
if not lineage or changed then
  lineage = ARGV[1]
end
redis.call('HSET', KEYS[1], 'id', lineage, 'replid', replid)
return {lineage, changed and 1 or 0}
"""

# the start of the scripts on a channel (KEYS[1] its meta hash; ARGV[1] a new epoch, ARGV[2] the
# lineage of the data): written in another lineage, it starts a new epoch; a new channel gets one
_CURRENT_EPOCH = """
local mark = redis.call('HGET', KEYS[1], 'lineage')
if mark ~= ARGV[2] then
  if mark then redis.call('HSET', KEYS[1], 'epoch', ARGV[1]) end
  redis.call('HSET', KEYS[1], 'lineage', ARGV[2])
end
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
"""

# KEYS: meta, stream, pub/sub channel[, idempotency hash]; ARGV: a new epoch, the lineage, the
# payload, history size, ttl in ms[, channel name, idempotency window in s]
_PUBLISH = """
if KEYS[4] then
  local seen = redis.call('HGET', KEYS[4], ARGV[6])
  if seen then
    local epoch, offset = string.match(seen, '(%S+) (%d+)')
    return {epoch, tonumber(offset)}
  end
end
""" + _CURRENT_EPOCH + """
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
if tonumber(ARGV[4]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], offset .. '-0', 'm', ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
redis.call('PUBLISH', KEYS[3], offset .. ' ' .. epoch .. ' ' .. ARGV[3])
if KEYS[4] then
  redis.call('HSET', KEYS[4], ARGV[6], epoch .. ' ' .. offset)
  redis.call('EXPIRE', KEYS[4], ARGV[7])
end
return {epoch, offset}
"""

# KEYS: meta, stream; ARGV: a new epoch, the lineage, the epoch asked about (*: any), the offset
# asked from (-1: none)
_READ = _CURRENT_EPOCH + """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local since = tonumber(ARGV[4])
if (ARGV[3] ~= '*' and ARGV[3] ~= epoch) or since < 0 or since >= offset then return {epoch, offset, {}} end
return {epoch, offset, redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+')}
"""

# KEYS: a pub/sub channel (join/leave: ARGV `<client_id> <event>`; control); returns how many received it
_ANNOUNCE = "return redis.call('PUBLISH', KEYS[1], ARGV[1])"


def _publication(name: str, offset: int, payload: str, epoch: str) -> Publication:
    """A publication of its payload as Redis holds it (`[sender_id, data]`), encoded."""
    sender_id, data = orjson.loads(payload)
    return Publication(offset, sender_id, message_frame(name, data, sender_id, offset), epoch)


def broker_unavailable() -> messages.RequestError:
    return messages.RequestError(messages.BROKER_UNAVAILABLE, "The channel broker cannot be reached: retry later")


@implementer(IBroker, ILifecycle)
class RedisBroker:
    features = ("broker",)

    def __init__(self, reactor: Any, target: BrokerURL) -> None:
        self.reactor = reactor  # IReactorTCP and IReactorTime
        self.connector = Connector(reactor, target)
        self.address = target.address  # without credentials: for logs
        # a Redis that stops answering fails a command after CONNECT_TIMEOUT (broker_unavailable)
        self._commands = txredisapi.RedisFactory(None, target.db, 1, isLazy=True, convertNumbers=False,
                                                 replyTimeout=CONNECT_TIMEOUT)
        self._pubsub = txredisapi.SubscriberFactory(isLazy=True)
        self._pubsub.protocol = type("_Fanout", (txredisapi.SubscriberProtocol,), {
            "messageReceived": lambda protocol, pattern, channel, message: self._received(channel, message)})
        self.connector.prepare(self._commands)
        self.connector.prepare(self._pubsub)
        self._pubsub.buildProtocol = self._watch(self._pubsub.buildProtocol, self._fanout_ready)
        self._commands.buildProtocol = self._watch(self._commands.buildProtocol, self._command_ready)
        self._command: Any = None  # the command protocol once usable
        self._lineage = ""  # the lineage of the data _command reaches (_ADOPT)
        self._fanout: Any = None  # the pub/sub protocol once PSUBSCRIBEd
        self._handler: IBrokerEventHandler | None = None
        self._control_channels: list[str] = []  # the control channels of this process, once listening
        self._control: Callable[[bytes], None] | None = None
        self.up = False
        self._running = False
        self._outage_logged = False
        self._waiting_for_up: list[defer.Deferred[None]] = []
        self._first_check: IDelayedCall | None = None

    # -- ILifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self.connector.start()
        self._commands.startConnecting(self.connector.endpoint)
        self._pubsub.startConnecting(self.connector.endpoint)
        self._first_check = self.reactor.callLater(CONNECT_TIMEOUT, self._check_state)

    def stop(self) -> defer.Deferred[None]:
        self._running = False
        if self._first_check is not None and self._first_check.active():
            self._first_check.cancel()
        stopped = defer.gatherResults([self._commands.disconnect(), self._pubsub.disconnect(), self.connector.stop()],
                                      consumeErrors=True)
        return stopped.addCallback(lambda _: None)

    def when_up(self) -> defer.Deferred[None]:
        if self.up:
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred()
        self._waiting_for_up.append(waiting)
        return waiting

    # -- connections ---------------------------------------------------------------------

    def _watch(self, build: Callable[[IAddress], Any], ready: Callable[[Any], Any]) -> Callable[[IAddress], Any]:
        """A buildProtocol that calls `ready(protocol)` once the connection is usable and
        `_lost` once it ends."""

        def build_and_watch(addr: IAddress) -> Any:
            protocol = build(addr)
            protocol.whenConnected().addCallback(ready)
            protocol.whenDisconnected().addCallback(self._lost)
            return protocol

        return build_and_watch

    @defer.inlineCallbacks
    def _fanout_ready(self, protocol: Any) -> Any:
        try:
            # the control channels hold no glob character: as patterns they match themselves only
            yield protocol.psubscribe([MESSAGES + "*", JOIN_LEAVE + "*", *self._control_channels])
        except Exception:
            return  # lost again: _lost has run or will
        self._fanout = protocol
        self._check_state()

    @defer.inlineCallbacks
    def _command_ready(self, protocol: Any) -> Any:
        """The command connection is usable once it knows the lineage of the data it reaches."""
        try:
            lineage, promoted = yield protocol.eval(_ADOPT, [LINEAGE], [secrets.token_hex(8)])
        except Exception as failed:  # a replica (READONLY), not ready, or lost: try again on a new connection
            if isinstance(failed, txredisapi.ResponseError) and not str(failed).startswith(_UNAVAILABLE_REPLIES):
                log.error("channel broker {address} refused to say which data it holds: {why}",
                          address=self.address, why=str(failed))
            protocol.transport.loseConnection()
            return
        if int(promoted):
            log.warn("channel broker {address}: this master was a replica, which may lack the newest publications: "
                     "each channel starts a new epoch (its subscribers are told recovered: false)",
                     address=self.address)
        self._lineage = lineage
        self._command = protocol
        self._check_state()

    def _lost(self, protocol: Any) -> None:
        if protocol is self._fanout:
            self._fanout = None
        if protocol is self._command:
            self._command = None
        self._check_state()

    def _check_state(self) -> None:
        up = self._fanout is not None and self._command is not None
        if up and not self.up:
            self.up = True
            if self._outage_logged:
                log.info("channel broker {address} is back", address=self.address)
            self._outage_logged = False
            waiting, self._waiting_for_up = self._waiting_for_up, []
            for deferred in waiting:
                deferred.callback(None)
            if self._handler is not None:
                self._handler.handle_reconnected()
        elif not up:
            self.up = False
            if not self._outage_logged and self._running:
                self._outage_logged = True
                log.warn("channel broker {address} cannot be reached: channels answer broker_unavailable "
                         "until it is back (reconnecting with backoff)", address=self.address)

    def call(self, script: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        """Run a Lua script; fails with broker_unavailable when Redis cannot be reached or is a
        replica now (READONLY: the connection is closed, to reconnect to the master)."""
        connection = self._command if self.up else None
        if connection is None:
            return defer.fail(broker_unavailable())

        def unavailable(failure: Failure) -> Failure:
            failure.trap(txredisapi.ConnectionError, txredisapi.ResponseError)
            if failure.check(txredisapi.ResponseError):
                message = failure.getErrorMessage()
                if not message.startswith(_UNAVAILABLE_REPLIES):
                    return failure
                if message.startswith("READONLY"):
                    connection.transport.loseConnection()  # a master demoted under us: find the master again
            raise broker_unavailable()

        return connection.eval(script, keys, args).addErrback(unavailable)

    # -- from Redis to the handler -------------------------------------------------------

    def _received(self, redis_channel: str, message: str) -> None:
        handler = self._handler
        if handler is None:
            return
        if redis_channel.startswith(MESSAGES):
            name = redis_channel[len(MESSAGES):]
            offset, epoch, payload = message.split(" ", 2)
            handler.handle_publication(name, _publication(name, int(offset), payload, epoch))
        elif redis_channel.startswith(JOIN_LEAVE):
            client_id, event = message.split(" ", 1)
            handler.handle_join_leave(redis_channel[len(JOIN_LEAVE):], client_id, event.encode("utf-8"))
        elif self._control is not None:
            self._control(message.encode("utf-8"))

    # -- IBroker -------------------------------------------------------------------------

    def attach(self, handler: IBrokerEventHandler) -> None:
        self._handler = handler

    def subscribe(self, name: str) -> None:
        """Nothing to do: the pub/sub connection receives every channel."""

    def unsubscribe(self, name: str) -> None:
        """Nothing to do: the pub/sub connection receives every channel."""

    def history(self, name: str, since: int | None, epoch: str | None) -> defer.Deferred[Stream]:
        asked = [ANY_EPOCH if epoch is None else epoch, -1 if since is None else since]
        read = self.call(_READ, [META + name, HISTORY + name], [secrets.token_hex(8), self._lineage, *asked])
        return read.addCallback(lambda found: Stream(found[0], int(found[1]), tuple(
            _publication(name, int(entry_id.split("-")[0]), fields[1], found[0]) for entry_id, fields in found[2])))

    def publish(self, name: str, data: Any, sender_id: str, history: History,
                idempotency_key: str | None = None) -> defer.Deferred[dict[str, Any]]:
        payload = orjson.dumps([sender_id, data]).decode("utf-8")
        keys = [META + name, HISTORY + name, MESSAGES + name]
        args: list[Any] = [secrets.token_hex(8), self._lineage, payload, history.size, max(1, int(history.ttl * 1000))]
        if idempotency_key is not None:
            keys.append(f"{IDEMPOTENCY}{name}:{idempotency_key}")
            args += [name, IDEMPOTENCY_WINDOW]
        published = self.call(_PUBLISH, keys, args)
        return published.addCallback(lambda found: {"epoch": found[0], "offset": int(found[1])})

    def publish_join_leave(self, name: str, client_id: str, frame: bytes) -> defer.Deferred[None]:
        announced = self.call(_ANNOUNCE, [JOIN_LEAVE + name], [f"{client_id} {frame.decode('utf-8')}"])
        return announced.addCallback(lambda _: None)

    def listen_control(self, node: str, listener: Callable[[bytes], None]) -> None:
        self._control_channels = [CONTROL, f"{CONTROL}:{node}"]
        self._control = listener

    def publish_control(self, message: bytes, node: str | None) -> defer.Deferred[int]:
        channel = CONTROL if node is None else f"{CONTROL}:{node}"
        return self.call(_ANNOUNCE, [channel], [message.decode("utf-8")]).addCallback(int)
