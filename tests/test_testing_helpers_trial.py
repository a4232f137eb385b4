"""zbifrost.testing from a twisted.trial suite, as our users' own tests would use it.

Run by `python -m twisted.trial tests` and by `pytest -p no:twisted` (test_core_twistd.py
runs both), never inside the pytest-twisted session.
"""

import os

from twisted.internet import defer
from twisted.trial import unittest

from zbifrost.testing import BifrostError, connect, start_server

DEMO_WORKSPACE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zui")


class StartServerAndClientTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.server = yield start_server(DEMO_WORKSPACE)
        self.addCleanup(self.server.stop)
        self.client = yield connect(self.server.url)
        self.addCleanup(self.client.close)

    @defer.inlineCallbacks
    def test_dispatch_fires_with_the_result(self):
        result = yield self.client.dispatch("^Ping")
        self.assertEqual(result, {"message": "Pong!"})

    @defer.inlineCallbacks
    def test_request_fires_with_the_result_of_any_event(self):
        result = yield self.client.request("subscribe", channel="room")
        self.assertEqual((result["channel"], result["subscribed"], result["offset"]), ("room", True, 0))

    @defer.inlineCallbacks
    def test_an_error_reply_fails_with_bifrost_error(self):
        failure = yield self.assertFailure(self.client.dispatch("^Nope"), BifrostError)
        self.assertEqual(failure.code, "unknown_command")

    def test_the_server_listens_on_an_ephemeral_loopback_port(self):
        self.assertNotEqual(self.server.port, 18774)
        self.assertTrue(self.server.url.startswith("ws://127.0.0.1:"))
        self.assertEqual(self.client.info["session"]["zBlock"], "Level1Menu")
