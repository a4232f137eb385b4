"""The Redis broker (`--broker redis://host:port/db`, `IBroker` and `ILifecycle`): channels
shared by every zbifrost process using the same Redis, through txredisapi on the reactor
(never a blocking client). It owns the two connections; `redis_presence` runs its commands
through this broker's (`call`).

Per channel, a hash `zbifrost:meta:<name>` holds its `epoch` and `offset`, and a stream
`zbifrost:history:<name>` its history, the entry of offset N having the id `N-0`. One Lua script
publishes atomically: it takes the next offset, XADDs with MAXLEN and sets the stream's expiry
(the channel's `History`), and PUBLISHes `<offset> <payload>` on `zbifrost:message:<name>`;
another reads epoch, offset and the entries after an offset at one instant. Each process holds
one pub/sub connection, PSUBSCRIBEd to every channel (so `subscribe` has nothing to do), and
hands what arrives to its event handler (`node.Channels`), each publication encoded once.
Joins and leaves are PUBLISHed as `<client_id> <event>` on `zbifrost:join_leave:<name>`, and the
server API's control messages on `zbifrost:control` (to every process) or
`zbifrost:control:<node>` (to one); PUBLISH's count of receivers tells how many processes a
control message reached (one pub/sub connection each).

Two connections (commands, pub/sub) reconnect with txredisapi's backoff. While either is down,
every command fails at once with `broker_unavailable` (one log line per outage); once both are
back, the handler is told (`handle_reconnected`), so that subscribers get what was published
meanwhile (as far as history reaches).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import orjson
import txredisapi
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import messages
from . import History, Publication, Stream, message_frame
from .interfaces import IBroker, IBrokerEventHandler, ILifecycle

META = "zbifrost:meta:"
HISTORY = "zbifrost:history:"
MESSAGES = "zbifrost:message:"
JOIN_LEAVE = "zbifrost:join_leave:"
CONTROL = "zbifrost:control"
ANY_EPOCH = "*"
CONNECT_TIMEOUT = 5  # seconds; also when a broker not reached since start-up counts as an outage

log = Logger()

# KEYS: meta, stream, pub/sub channel; ARGV: a new epoch, the payload, history size, ttl in ms
_PUBLISH = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 'm', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PUBLISH', KEYS[3], offset .. ' ' .. ARGV[2])
return {redis.call('HGET', KEYS[1], 'epoch'), offset}
"""

# KEYS: meta, stream; ARGV: a new epoch, the epoch asked about (*: any), the offset asked from (-1: none)
_READ = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local since = tonumber(ARGV[3])
if (ARGV[2] ~= '*' and ARGV[2] ~= epoch) or since < 0 or since >= offset then return {epoch, offset, {}} end
return {epoch, offset, redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+')}
"""

# KEYS: a pub/sub channel (join/leave: ARGV `<client_id> <event>`; control); returns how many received it
_ANNOUNCE = "return redis.call('PUBLISH', KEYS[1], ARGV[1])"


def _publication(name: str, offset: int, payload: str) -> Publication:
    """A publication of its payload as Redis holds it (`[sender_id, data]`), encoded."""
    sender_id, data = orjson.loads(payload)
    return Publication(offset, sender_id, message_frame(name, data, sender_id, offset))


def broker_unavailable() -> messages.RequestError:
    return messages.RequestError(messages.BROKER_UNAVAILABLE, "The channel broker cannot be reached: retry later")


@implementer(IBroker, ILifecycle)
class RedisBroker:
    features = ("broker",)

    def __init__(self, reactor: Any, host: str, port: int, db: int) -> None:
        self.reactor = reactor  # IReactorTCP and IReactorTime
        self.endpoint = endpoints.HostnameEndpoint(reactor, host, port, timeout=CONNECT_TIMEOUT)
        self.address = f"{host}:{port}/{db}"
        # a Redis that stops answering fails a command after CONNECT_TIMEOUT (broker_unavailable)
        self._commands = txredisapi.RedisFactory(None, db, 1, isLazy=True, convertNumbers=False,
                                                 replyTimeout=CONNECT_TIMEOUT)
        self._pubsub = txredisapi.SubscriberFactory(isLazy=True)
        self._pubsub.protocol = type("_Fanout", (txredisapi.SubscriberProtocol,), {
            "messageReceived": lambda protocol, pattern, channel, message: self._received(channel, message)})
        self._pubsub.buildProtocol = self._watch(self._pubsub.buildProtocol, self._fanout_ready)
        self._commands.buildProtocol = self._watch(self._commands.buildProtocol, self._command_ready)
        self._command: Any = None  # the command protocol once usable
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
        self._commands.startConnecting(self.endpoint)
        self._pubsub.startConnecting(self.endpoint)
        self._first_check = self.reactor.callLater(CONNECT_TIMEOUT, self._check_state)

    def stop(self) -> defer.Deferred[None]:
        self._running = False
        if self._first_check is not None and self._first_check.active():
            self._first_check.cancel()
        stopped = defer.gatherResults([self._commands.disconnect(), self._pubsub.disconnect()], consumeErrors=True)
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

    def _command_ready(self, protocol: Any) -> None:
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
        """Run a Lua script; fails with broker_unavailable when Redis cannot be reached."""
        connection = self._command if self.up else None
        if connection is None:
            return defer.fail(broker_unavailable())

        def unavailable(failure: Failure) -> None:
            failure.trap(txredisapi.ConnectionError)
            raise broker_unavailable()

        return connection.eval(script, keys, args).addErrback(unavailable)

    # -- from Redis to the handler -------------------------------------------------------

    def _received(self, redis_channel: str, message: str) -> None:
        handler = self._handler
        if handler is None:
            return
        if redis_channel.startswith(MESSAGES):
            name = redis_channel[len(MESSAGES):]
            offset, payload = message.split(" ", 1)
            handler.handle_publication(name, _publication(name, int(offset), payload))
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
        read = self.call(_READ, [META + name, HISTORY + name], [secrets.token_hex(8), *asked])
        return read.addCallback(lambda found: Stream(found[0], int(found[1]), tuple(
            _publication(name, int(entry_id.split("-")[0]), fields[1]) for entry_id, fields in found[2])))

    def publish(self, name: str, data: Any, sender_id: str, history: History) -> defer.Deferred[dict[str, Any]]:
        payload = orjson.dumps([sender_id, data]).decode("utf-8")
        published = self.call(_PUBLISH, [META + name, HISTORY + name, MESSAGES + name],
                              [secrets.token_hex(8), payload, history.size, max(1, int(history.ttl * 1000))])
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
