"""`subscribe`, `unsubscribe` and `publish`: the only way one client reaches another; and
`presence` / `presence_stats`: who is subscribed to a channel (1.2).

The handlers check the message (and, where a rule says `proxy: true`, ask the application's
subscribe proxy: zbifrost.app_proxy), then ask the server's channels (`session.hub.channels`, a
`zbifrost.channels.node.Channels`), whichever broker is behind them, and turn what they answer
into replies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from .. import messages
from ..channels import MAX_SUBSCRIPTIONS_PER_CLIENT, channel_of, idempotency_key_of
from ..messages import (
    FORBIDDEN,
    JSON,
    MISSING_FIELD,
    NO_REPLY,
    NOT_AVAILABLE,
    PROXY_UNAVAILABLE,
    RequestError,
    RequestId,
)

if TYPE_CHECKING:
    from ..channels import Subscribed
    from ..hub import Hub
    from ..messages import _NoReply
    from ..session import Session
    from . import Handler


def since_of(message: JSON) -> tuple[str, int] | None:
    """The optional `since` of a subscribe (or of the server API's `history`) as (epoch, offset)."""
    since = message.get("since")
    if since is None:
        return None
    epoch = since.get("epoch") if type(since) is dict else None
    offset = since.get("offset") if type(since) is dict else None
    if type(epoch) is not str or type(offset) is not int or offset < 0:
        raise RequestError(MISSING_FIELD,
                           "Invalid field 'since': expected {\"epoch\": string, \"offset\": integer >= 0}")
    return epoch, offset


def _forbidden(action: str, channel: str) -> RequestError:
    return RequestError(FORBIDDEN, f"Not allowed to {action} on channel {messages.quote(channel)}")


def _check_may_subscribe(session: Session, channel: str, action: str) -> None:
    # with auth off and no connect proxy every client is the anonymous guest: nobody is authenticated
    user = session.identity["user"] if session.identity is not session.hub.anonymous else None
    if not session.hub.channel_rules.may_subscribe(channel, session.identity["role"], user):
        raise _forbidden(action, channel)


def subscribe(session: Session, message: JSON, request_id: RequestId) -> Deferred[_NoReply]:
    channel = channel_of(message)
    since = since_of(message)
    hub = session.hub
    _check_may_subscribe(session, channel, "subscribe")
    if not hub.channel_rules.asks_application(channel):
        return _subscribe(session, channel, since, request_id)
    if hub.application is None:  # a reload turned the rule on without the (start-only) proxy section
        raise RequestError(PROXY_UNAVAILABLE, "No application is configured to ask; retry later")
    asking = hub.application.may_subscribe({"channel": channel, "user": session.identity["user"],
                                            "role": session.identity["role"], "client_id": session.client_id})
    return asking.addCallback(lambda _: _subscribe(session, channel, since, request_id)
                              if session.connection.can_send() else NO_REPLY)  # not for a client gone meanwhile


def _subscribe(session: Session, channel: str, since: tuple[str, int] | None, request_id: RequestId
               ) -> Deferred[_NoReply]:
    """Subscribe once every check has passed; the reply first, then what was missed."""
    hub = session.hub
    if session.subscriptions is None:
        session.subscriptions = set()
    if channel not in session.subscriptions and len(session.subscriptions) >= MAX_SUBSCRIPTIONS_PER_CLIENT:
        raise RequestError(FORBIDDEN, f"Too many subscriptions: at most {MAX_SUBSCRIPTIONS_PER_CLIENT}")
    session.subscriptions.add(channel)

    def reply_then_missed(found: Subscribed) -> _NoReply:
        """The reply first, then the missed publications in order (docs/protocol.md section 6)."""
        result = {"channel": channel, "subscribed": True, "epoch": found.epoch, "offset": found.offset}
        if found.recovered is not None:
            result["recovered"] = found.recovered
        session.send_frame(messages.result_frame(result, request_id))
        for frame in found.missed:
            session.send_frame(frame)
        return NO_REPLY

    info = {"client_id": session.client_id, "user": session.identity["user"], "role": session.identity["role"]}
    membership = hub.channel_rules.membership(channel, info)
    return session.answering_subscribe(
        channel, hub.channels.subscribe(channel, session, since, membership).addCallback(reply_then_missed))


def unsubscribe(session: Session, message: JSON, request_id: RequestId) -> Deferred[JSON]:
    channel = channel_of(message)
    if session.subscriptions:
        session.subscriptions.discard(channel)
    answered: Deferred[JSON] = Deferred()
    session.hub.channels.unsubscribe(channel, session).addCallback(lambda _: session.after_subscribe(
        channel, lambda: answered.callback({"channel": channel, "subscribed": False}))).addErrback(answered.errback)
    return answered


def publish(session: Session, message: JSON, request_id: RequestId) -> Deferred[JSON]:
    channel = channel_of(message)
    if "data" not in message:
        raise RequestError(MISSING_FIELD, "Missing field 'data'")
    idempotency_key = idempotency_key_of(message)
    rules = session.hub.channel_rules
    if not rules.may_publish(channel, session.identity["role"]):
        raise _forbidden("publish", channel)
    publishing = session.hub.channels.publish(channel, message["data"], session.client_id, rules.history(channel),
                                              idempotency_key)
    return publishing.addCallback(lambda published: dict(channel=channel, **published))


def channel_presence(hub: Hub, channel: str) -> Deferred[JSON]:
    """The `presence` result of a channel, or `not_available` where its rule has no presence
    (for clients and the server API alike)."""
    if not hub.channel_rules.has_presence(channel):
        raise RequestError(NOT_AVAILABLE, f"Presence is not turned on for channel {messages.quote(channel)}")
    return hub.channels.presence(channel).addCallback(lambda found: {"channel": channel, "clients": found})


def stats_of(presence: JSON) -> JSON:
    """The `presence_stats` result made of a `presence` one."""
    clients = presence["clients"]
    return {"channel": presence["channel"], "clients": len(clients),
            "users": len({entry["user"] for entry in clients.values()})}


def _presence_of(session: Session, message: JSON) -> Deferred[JSON]:
    """The presence result of the channel asked about; `forbidden` first, then `not_available`
    (docs/protocol.md section 6)."""
    channel = channel_of(message)
    _check_may_subscribe(session, channel, "see presence")
    return channel_presence(session.hub, channel)


def presence(session: Session, message: JSON, request_id: RequestId) -> Deferred[JSON]:
    return _presence_of(session, message)


def presence_stats(session: Session, message: JSON, request_id: RequestId) -> Deferred[JSON]:
    return _presence_of(session, message).addCallback(stats_of)


HANDLERS: dict[str, Handler] = {"subscribe": subscribe, "unsubscribe": unsubscribe, "publish": publish,
            "presence": presence, "presence_stats": presence_stats}
