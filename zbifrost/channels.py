"""Channels inside one process: who subscribed to what, and delivery of published messages.

A publish is encoded once and the same bytes go to every subscriber but the publisher
(PROTOCOL.md section 6). Subscribers are anything with `client_id` and `send_frame(bytes)`.
"""

import re

from . import messages

CHANNEL_NAME = re.compile(r"^[A-Za-z0-9_\-.:/]{1,128}$")
MAX_SUBSCRIPTIONS_PER_CLIENT = 1000


def valid_channel(name):
    return type(name) is str and CHANNEL_NAME.match(name) is not None


class ChannelHub:
    def __init__(self):
        self._subscribers = {}  # channel -> {client_id: subscriber}, in subscription order

    def subscribe(self, channel, subscriber):
        self._subscribers.setdefault(channel, {})[subscriber.client_id] = subscriber

    def unsubscribe(self, channel, subscriber):
        members = self._subscribers.get(channel)
        if members is not None:
            members.pop(subscriber.client_id, None)
            if not members:
                del self._subscribers[channel]

    def unsubscribe_all(self, subscriber, channels):
        for channel in channels:
            self.unsubscribe(channel, subscriber)

    def publish(self, channel, data, sender_id):
        """Deliver to every local subscriber except the sender; returns how many were reached."""
        members = self._subscribers.get(channel)
        if not members:
            return 0
        frame = messages.event_frame("message", channel=channel, data=data, **{"from": sender_id})
        delivered = 0
        for client_id, subscriber in list(members.items()):
            if client_id != sender_id and subscriber.send_frame(frame):
                delivered += 1
        return delivered
