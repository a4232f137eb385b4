"""The Redis channel backend (`--broker redis://host:port/db`): channels shared by every zbifrost
process using the same Redis, through txredisapi on the reactor (never a blocking client).

Per channel, a hash `zbifrost:meta:<name>` holds its `epoch` and `offset`, and a stream
`zbifrost:history:<name>` its history, the entry of offset N having the id `N-0`. One Lua script
publishes atomically: it takes the next offset, XADDs with MAXLEN and sets the stream's expiry
(the channel's `History`), and PUBLISHes `<offset> <payload>` on `zbifrost:message:<name>`;
another reads epoch, offset and the missed entries of a subscribe at one instant. Each process
holds one pub/sub connection, PSUBSCRIBEd to every channel, and delivers to its own
subscribers; each subscriber ignores the offsets it already has (or its subscribe reply
covered), and what arrives while a read for it is under way waits for that read.

Two connections (commands, pub/sub) reconnect with txredisapi's backoff. While either is down,
subscribes and publishes fail at once with `broker_unavailable` (one log line per outage);
once both are back, each channel with local subscribers is read again from the last offset
this process delivered, so that they get what was published meanwhile (as far as history
reaches). Nothing here knows about connections beyond a subscriber's `send_frame` and `deliver`.

Presence (1.2): a sorted set `zbifrost:presence:<name>` holds each listed member's info (JSON)
scored with the Redis time (ms) at which it expires; each process renews its own members every
third of `presence_ttl`, and readers drop expired entries first, so that a killed process's
members are gone within `presence_ttl`. Joins and leaves are PUBLISHed as `<client_id> <event>`
on `zbifrost:join_leave:<name>` and sent by each process to its subscribers that have their
subscribe reply.
"""

import secrets

import orjson
import txredisapi
from twisted.application import service
from twisted.internet import defer, endpoints, task
from twisted.logger import Logger
from zope.interface import implementer

from .. import messages
from . import DEFAULT_HISTORY, IChannelBackend, Subscribed, message_frame, presence_entry

META = "zbifrost:meta:"
HISTORY = "zbifrost:history:"
MESSAGES = "zbifrost:message:"
PRESENCE = "zbifrost:presence:"
JOIN_LEAVE = "zbifrost:join_leave:"
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

# KEYS: meta, stream; ARGV: a new epoch, the epoch and offset asked from (-1: none; epoch *: any)
_READ = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local since = tonumber(ARGV[3])
if (ARGV[2] ~= '*' and ARGV[2] ~= epoch) or since < 0 or since >= offset then return {epoch, offset, {}} end
return {epoch, offset, redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+')}
"""

# now + ARGV[1] ms in Redis time: when a presence entry written now expires
_EXPIRES = """
local now = redis.call('TIME')
local expires = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1])
"""

# KEYS: presence set, join/leave channel; ARGV: ttl in ms, the join announcement or '', members to keep...
_JOIN = _EXPIRES + """
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], expires, ARGV[i]) end
if #ARGV > 2 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if ARGV[2] ~= '' then redis.call('PUBLISH', KEYS[2], ARGV[2]) end
"""

# KEYS: presence set, join/leave channel; ARGV: the member, the leave announcement or ''
_LEAVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('PUBLISH', KEYS[2], ARGV[2]) end
"""

# KEYS: presence set; ARGV: 0 (entries expiring from now on are alive)
_PRESENCE = _EXPIRES + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. expires)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def _frame(name, offset, payload):
    """(sender id, the encoded `message` event) of a publication's payload as Redis holds it."""
    sender_id, data = orjson.loads(payload)
    return sender_id, message_frame(name, data, sender_id, offset)


def broker_unavailable():
    return messages.RequestError(messages.BROKER_UNAVAILABLE, "The channel broker cannot be reached: retry later")


class _Subscription:
    """One local subscriber of a channel: offsets up to `floor` are not delivered (its subscribe
    reply covered them, or it has them already); while a read from Redis is under way for it
    (its subscribe, a catch-up), `waiting` holds the live (offset, frame)s, else None."""

    __slots__ = ("subscriber", "floor", "waiting", "membership", "entry")

    def __init__(self, subscriber):
        self.subscriber = subscriber
        self.floor = 0
        self.waiting = []
        self.membership = None  # its Membership once joined
        self.entry = None  # its presence entry (the info as JSON) once joined

    def release(self, frames):
        """Stop waiting: send `frames` then the waiting ones, each offset past `floor` once, in order."""
        waiting, self.waiting = self.waiting, None
        for offset, frame in sorted(frames + waiting, key=lambda pair: pair[0]):
            if offset > self.floor:
                self.floor = offset
                self.subscriber.send_frame(frame)


@implementer(IChannelBackend)
class RedisBackend(service.Service):
    features = ("broker",)

    def __init__(self, reactor, host, port, db, presence_ttl):
        self.reactor = reactor
        self.presence_ttl_ms = max(1, int(presence_ttl * 1000))
        self._heartbeat = task.LoopingCall(self._renew_presence)
        self._heartbeat.clock = reactor
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
        self._command = None  # the command protocol once usable
        self._fanout = None  # the pub/sub protocol once PSUBSCRIBEd
        self._channels = {}  # name -> {client_id: _Subscription}
        self._delivered = {}  # name -> the last offset delivered here (for catching up after an outage)
        self.up = False
        self._outage_logged = False
        self._waiting_for_up = []
        self._first_check = None

    # -- connections ---------------------------------------------------------------------

    def _watch(self, build, ready):
        """A buildProtocol that calls `ready(protocol)` once the connection is usable and
        `_lost` once it ends."""

        def build_and_watch(addr):
            protocol = build(addr)
            protocol.whenConnected().addCallback(ready)
            protocol.whenDisconnected().addCallback(self._lost)
            return protocol

        return build_and_watch

    def startService(self):
        super().startService()
        self._commands.startConnecting(self.endpoint)
        self._pubsub.startConnecting(self.endpoint)
        self._first_check = self.reactor.callLater(CONNECT_TIMEOUT, self._check_state)
        self._heartbeat.start(self.presence_ttl_ms / 3000, now=False)

    def stopService(self):
        super().stopService()
        if self._first_check.active():
            self._first_check.cancel()
        self._heartbeat.stop()
        return defer.gatherResults([self._commands.disconnect(), self._pubsub.disconnect()], consumeErrors=True)

    def when_up(self):
        """Fires once both connections are usable (for tests and start-up checks)."""
        if self.up:
            return defer.succeed(None)
        waiting = defer.Deferred()
        self._waiting_for_up.append(waiting)
        return waiting

    @defer.inlineCallbacks
    def _fanout_ready(self, protocol):
        try:
            yield protocol.psubscribe([MESSAGES + "*", JOIN_LEAVE + "*"])
        except Exception:
            return  # lost again: _lost has run or will
        self._fanout = protocol
        self._check_state()

    def _command_ready(self, protocol):
        self._command = protocol
        self._check_state()

    def _lost(self, protocol):
        if protocol is self._fanout:
            self._fanout = None
        if protocol is self._command:
            self._command = None
        self._check_state()

    def _check_state(self):
        up = self._fanout is not None and self._command is not None
        if up and not self.up:
            self.up = True
            if self._outage_logged:
                log.info("channel broker {address} is back", address=self.address)
            self._outage_logged = False
            waiting, self._waiting_for_up = self._waiting_for_up, []
            for deferred in waiting:
                deferred.callback(None)
            for name in list(self._channels):
                self._catch_up(name)
        elif not up:
            self.up = False
            if not self._outage_logged and self.running:
                self._outage_logged = True
                log.warn("channel broker {address} cannot be reached: channels answer broker_unavailable "
                         "until it is back (reconnecting with backoff)", address=self.address)

    def _call(self, script, keys, args):
        """Run a Lua script; fails with broker_unavailable when Redis cannot be reached."""
        connection = self._command if self.up else None
        if connection is None:
            return defer.fail(broker_unavailable())

        def unavailable(failure):
            failure.trap(txredisapi.ConnectionError)
            raise broker_unavailable()

        return connection.eval(script, keys, args).addErrback(unavailable)

    # -- delivery ------------------------------------------------------------------------

    def _received(self, redis_channel, message):
        if redis_channel.startswith(JOIN_LEAVE):
            self._announced(redis_channel[len(JOIN_LEAVE):], message)
            return
        name = redis_channel[len(MESSAGES):]
        offset, payload = message.split(" ", 1)
        self._deliver(name, int(offset), payload)

    def _announced(self, name, message):
        """A join or leave: to the channel's local subscribers that have their reply, but the member."""
        client_id, event = message.split(" ", 1)
        frame = event.encode("utf-8")
        for subscription in list(self._channels.get(name, {}).values()):
            if subscription.waiting is None and subscription.subscriber.client_id != client_id:
                subscription.subscriber.deliver(frame)

    def _deliver(self, name, offset, payload):
        subscriptions = self._channels.get(name)
        if not subscriptions:
            return
        if offset > self._delivered.get(name, 0):
            self._delivered[name] = offset
        sender_id, frame = _frame(name, offset, payload)
        for client_id, subscription in list(subscriptions.items()):
            if client_id == sender_id:
                continue
            if subscription.waiting is not None:
                subscription.waiting.append((offset, frame))
            elif offset > subscription.floor:
                subscription.floor = offset
                subscription.subscriber.deliver(frame)

    def _read(self, name, since=None):
        epoch, offset = since if since is not None else (ANY_EPOCH, -1)
        read = self._call(_READ, [META + name, HISTORY + name], [secrets.token_hex(8), epoch, offset])
        return read.addCallback(lambda found: (found[0], int(found[1]),
                                               [(int(entry_id.split("-")[0]), fields[1]) for entry_id, fields in found[2]]))

    @defer.inlineCallbacks
    def _catch_up(self, name):
        """After an outage: deliver what the channel's local subscribers missed, as far as its
        history reaches, before what arrives live meanwhile."""
        last = self._delivered.get(name)
        if last is None:  # its subscribes are still being read
            return
        held = [subscription for subscription in self._channels.get(name, {}).values() if subscription.waiting is None]
        for subscription in held:
            subscription.waiting = []
        try:
            _, _, entries = yield self._read(name, (ANY_EPOCH, last))
        except Exception:
            entries = []  # lost again: live messages only
        publications = [(offset, *_frame(name, offset, payload)) for offset, payload in entries]
        if publications:
            self._delivered[name] = max(self._delivered.get(name, 0), publications[-1][0])
        for subscription in held:
            subscription.release([(offset, frame) for offset, sender_id, frame in publications
                                  if sender_id != subscription.subscriber.client_id])

    # -- IChannelBackend -----------------------------------------------------------------

    def _announcement(self, name, subscription, event):
        """`<client_id> <event>` for the join/leave channel, or '' when the member is not announced."""
        if not subscription.membership.announced:
            return ""
        return f"{subscription.subscriber.client_id} {subscription.membership.frame(event, name).decode('utf-8')}"

    def _join(self, name, subscription, membership):
        subscription.membership = membership
        subscription.entry = orjson.dumps(membership.info).decode("utf-8")
        listed = [subscription.entry] if membership.listed else []
        return self._call(_JOIN, [PRESENCE + name, JOIN_LEAVE + name],
                          [self.presence_ttl_ms, self._announcement(name, subscription, "join"), *listed])

    def _leave(self, name, subscription):
        if subscription.membership is None:
            return
        self._call(_LEAVE, [PRESENCE + name, JOIN_LEAVE + name],
                   [subscription.entry, self._announcement(name, subscription, "leave")]).addErrback(
            lambda failure: None)  # with Redis away, the entry expires within presence_ttl

    def _renew_presence(self):
        """The heartbeat: this process's listed members stay present for presence_ttl more."""
        if not self.up:
            return
        for name, subscriptions in self._channels.items():
            entries = [s.entry for s in subscriptions.values() if s.membership is not None and s.membership.listed]
            if entries:
                renewed = self._call(_JOIN, [PRESENCE + name, JOIN_LEAVE + name], [self.presence_ttl_ms, "", *entries])
                renewed.addErrback(lambda failure: None)  # lost: renewed at the next beat

    def presence(self, name):
        return self._call(_PRESENCE, [PRESENCE + name], [0]).addCallback(
            lambda entries: dict(presence_entry(orjson.loads(entry)) for entry in entries))

    def subscribe(self, name, subscriber, since=None, membership=None):
        if not self.up:
            return defer.fail(broker_unavailable())
        subscription = _Subscription(subscriber)
        previous = self._channels.setdefault(name, {}).get(subscriber.client_id)
        if previous is not None:  # a repeated subscribe keeps the membership it joined with, unannounced
            subscription.membership, subscription.entry = previous.membership, previous.entry
        self._channels[name][subscriber.client_id] = subscription
        result = defer.Deferred()

        def joined(read):
            current = self._channels.get(name, {}).get(subscriber.client_id) is subscription
            if membership is None or subscription.membership is not None or not current:
                return read
            return self._join(name, subscription, membership).addCallback(lambda _: read)

        def found(read):
            epoch, offset, entries = read
            recovered = None
            if since is not None:
                recovered = since[0] == epoch and since[1] <= offset and len(entries) == offset - since[1]
            missed = tuple(_frame(name, at, payload)[1] for at, payload in entries) if recovered else ()
            self._delivered.setdefault(name, offset)
            subscription.floor = offset
            result.callback(Subscribed(epoch, offset, recovered, missed))  # the reply and missed go out now
            if self._channels.get(name, {}).get(subscriber.client_id) is subscription:
                subscription.release([])

        def failed(failure):
            self._forget(name, subscriber, subscription)
            result.errback(failure)

        self._read(name, since if since is not None else None).addCallback(joined).addCallbacks(found, failed)
        return result

    def _forget(self, name, subscriber, subscription=None):
        subscriptions = self._channels.get(name)
        if subscriptions is None:
            return
        if subscription is None or subscriptions.get(subscriber.client_id) is subscription:
            forgotten = subscriptions.pop(subscriber.client_id, None)
            if forgotten is not None:
                self._leave(name, forgotten)
        if not subscriptions:
            del self._channels[name]
            self._delivered.pop(name, None)

    def unsubscribe(self, name, subscriber):
        self._forget(name, subscriber)
        return defer.succeed(None)

    def unsubscribe_all(self, subscriber, names):
        for name in names:
            self._forget(name, subscriber)

    def publish(self, name, data, sender_id, history=DEFAULT_HISTORY):
        payload = orjson.dumps([sender_id, data]).decode("utf-8")
        published = self._call(_PUBLISH, [META + name, HISTORY + name, MESSAGES + name],
                               [secrets.token_hex(8), payload, history.size, max(1, int(history.ttl * 1000))])
        return published.addCallback(lambda found: {"epoch": found[0], "offset": int(found[1])})
