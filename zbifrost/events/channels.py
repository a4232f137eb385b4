"""`subscribe`, `unsubscribe` and `publish`: the only way one client reaches another."""

from ..channels import MAX_SUBSCRIPTIONS_PER_CLIENT, valid_channel
from ..messages import FORBIDDEN, MISSING_FIELD, RequestError


def _channel(message):
    channel = message.get("channel")
    if not valid_channel(channel):
        raise RequestError(MISSING_FIELD,
                           "Invalid field 'channel': 1-128 characters of letters, digits and _-.:/")
    return channel


def subscribe(conn, message, request_id):
    channel = _channel(message)
    if conn.subscriptions is None:
        conn.subscriptions = set()
    if channel not in conn.subscriptions and len(conn.subscriptions) >= MAX_SUBSCRIPTIONS_PER_CLIENT:
        raise RequestError(FORBIDDEN, f"Too many subscriptions: at most {MAX_SUBSCRIPTIONS_PER_CLIENT}")
    conn.subscriptions.add(channel)
    conn.server.hub.subscribe(channel, conn)
    return {"channel": channel, "subscribed": True}


def unsubscribe(conn, message, request_id):
    channel = _channel(message)
    if conn.subscriptions:
        conn.subscriptions.discard(channel)
    conn.server.hub.unsubscribe(channel, conn)
    return {"channel": channel, "subscribed": False}


def publish(conn, message, request_id):
    channel = _channel(message)
    if "data" not in message:
        raise RequestError(MISSING_FIELD, "Missing field 'data'")
    delivered = conn.server.hub.publish(channel, message["data"], conn.client_id)
    return {"channel": channel, "delivered": delivered}


HANDLERS = {"subscribe": subscribe, "unsubscribe": unsubscribe, "publish": publish}
