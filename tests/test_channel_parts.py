"""The channel parts behind `hub.channels` on each backend keep the contracts they declare
(zbifrost.channels.interfaces): the broker, the presence manager and the lifecycle of those with
connections of their own, which /healthz reports."""

import json

import pytest_twisted
from zope.interface import providedBy
from zope.interface.verify import verifyObject

from zbifrost.channels.interfaces import IBroker, IBrokerEventHandler, ILifecycle, IPresence

from .helpers import http_get, in_thread


@pytest_twisted.inlineCallbacks
def test_each_channel_part_keeps_every_interface_it_declares(channel_server, backend_settings):
    channels = channel_server.hub.channels
    with_connections = {ILifecycle} if backend_settings else set()  # Redis's parts: connections to watch
    assert set(providedBy(channels.broker)) == {IBroker} | with_connections
    assert set(providedBy(channels.presence_manager)) == {IPresence} | with_connections
    for part in (channels, channels.broker, channels.presence_manager):
        for interface in providedBy(part):
            assert verifyObject(interface, part)
    assert verifyObject(IBrokerEventHandler, channels)
    health = json.loads((yield in_thread(http_get, channel_server.port, "/healthz"))[2])
    assert health.get("broker") == ("up" if with_connections else None)
