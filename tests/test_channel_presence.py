"""Presence and join/leave (docs/protocol.md section 6, 1.2) on each backend, over real sockets:
`presence` and `presence_stats`, `join` / `leave` to the other subscribers, `forbidden` before
`not_available`, a leave for a connection that ends in any way; with Redis, presence across
processes, and a killed twistd's members gone within `presence_ttl`."""

import os
import subprocess

import pytest_twisted
from twisted.internet import defer, reactor, task

from zbifrost.testing import connect

from .helpers import in_thread
from .test_channel_rules import _start
from .test_core_twistd import REPO, TWISTD, free_port, wait_until_listening

RULES = """
channels:
  - pattern: "room.*"
    subscribe: [user, admin]
    presence: true
    join_leave: true
  - pattern: "staff.*"
    subscribe: [admin]
    presence: true
  - pattern: "plain.*"
"""


@defer.inlineCallbacks
def _alice_sees_bob_join(alice_server, bob_server):
    """alice (role user) and bob (user root, role admin) subscribe to room.1 in turn, on the
    servers given; fires with both clients and bob's info, once alice has had his join."""
    alice = yield connect(alice_server.url, token="t-alice")
    bob = yield connect(bob_server.url, token="t-root")
    yield alice.request("subscribe", channel="room.1")
    yield bob.request("subscribe", channel="room.1")
    bob_info = {"client_id": bob.info["client_id"], "user": "root", "role": "admin"}
    assert (yield alice.next_event("join")) == {"event": "join", "channel": "room.1", "info": bob_info}
    return alice, bob, bob_info


def _joins_and_leaves(client):
    return [f for f in client.frames if f.get("event") in ("join", "leave")]


@pytest_twisted.inlineCallbacks
def test_presence_lists_every_subscriber_and_stats_count_distinct_users(make_server, tmp_path, backend_settings):
    server = yield _start(make_server, tmp_path, RULES, **backend_settings)
    alice_1 = yield connect(server.url, token="t-alice")
    alice_2 = yield connect(server.url, token="t-alice")
    root = yield connect(server.url, token="t-root")
    assert "presence" in root.info["features"]
    for client in (alice_1, alice_2):
        yield client.request("subscribe", channel="room.1")
    # the client asking need not be subscribed
    found = yield root.request("presence", channel="room.1")
    assert found == {"channel": "room.1", "clients": {alice_1.info["client_id"]: {"user": "alice", "role": "user"},
                                                      alice_2.info["client_id"]: {"user": "alice", "role": "user"}}}
    yield root.request("subscribe", channel="room.1")
    stats = yield alice_1.request("presence_stats", channel="room.1")
    assert stats == {"channel": "room.1", "clients": 3, "users": 2}
    yield alice_2.request("unsubscribe", channel="room.1")
    assert set((yield root.request("presence", channel="room.1"))["clients"]) == {alice_1.info["client_id"],
                                                                                 root.info["client_id"]}
    for client in (alice_1, alice_2, root):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_presence_is_forbidden_where_the_client_may_not_subscribe_and_else_not_available_without_the_rule(
        make_server, tmp_path, backend_settings):
    server = yield _start(make_server, tmp_path, RULES, **backend_settings)
    alice = yield connect(server.url, token="t-alice")
    for event in ("presence", "presence_stats"):
        refused = yield alice.request_frame(event, channel="staff.1")  # presence on, but alice may not subscribe
        assert (refused["code"], refused["error"]) == ("forbidden", "Not allowed to see presence on channel staff.1")
        refused = yield alice.request_frame(event, channel="plain.1")
        assert (refused["code"], refused["error"]) == ("not_available",
                                                       "Presence is not turned on for channel plain.1")
    assert (yield alice.request("ping")) is not None  # the connection stays open
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_join_and_leave_reach_the_other_subscribers_whenever_a_subscription_ends(make_server, tmp_path,
                                                                               backend_settings):
    server = yield _start(make_server, tmp_path, RULES, **backend_settings)
    alice, bob, _bob_info = yield _alice_sees_bob_join(server, server)
    yield bob.request("subscribe", channel="room.1")  # again: no second join
    leavers = []
    for ending in ("unsubscribe", "close", "drop"):
        carol = yield connect(server.url, token="t-alice")
        yield carol.request("subscribe", channel="room.1")
        carol_info = {"client_id": carol.info["client_id"], "user": "alice", "role": "user"}
        assert (yield bob.next_event("join"))["info"] == carol_info
        if ending == "unsubscribe":
            yield carol.request("unsubscribe", channel="room.1")
        elif ending == "close":
            yield carol.close()
        else:  # the TCP connection is cut without a close frame
            carol._protocol.transport.abortConnection()
        assert (yield bob.next_event("leave")) == {"event": "leave", "channel": "room.1", "info": carol_info}
        leavers.append(carol)
    # with a broker the events reach alice through Redis, in order but not before her next reply:
    # wait (bounded) for the last of them
    for _ in range(100):
        if len(_joins_and_leaves(alice)) >= 1 + 2 * len(leavers):
            break
        yield task.deferLater(reactor, 0.05, lambda: None)
    yield bob.request("ping")
    # neither got anything about itself: bob saw each carol come and go, nothing else (its own
    # subscribe and resubscribe absent from the same list), and alice saw bob join once, then the same
    carols = [(event, carol.info["client_id"]) for carol in leavers for event in ("join", "leave")]
    assert [(f["event"], f["info"]["client_id"]) for f in _joins_and_leaves(bob)] == carols
    assert [(f["event"], f["info"]["client_id"]) for f in _joins_and_leaves(alice)] == [
        ("join", bob.info["client_id"]), *carols]
    yield leavers[0].close()
    for client in (alice, bob):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_two_servers_on_one_redis_share_presence_and_a_stopping_server_sends_its_leaves(make_server, redis_server,
                                                                                       tmp_path):
    one = yield _start(make_server, tmp_path, RULES, broker=redis_server.url)
    two = yield _start(make_server, tmp_path, RULES, broker=redis_server.url)
    alice, bob, bob_info = yield _alice_sees_bob_join(one, two)
    for asking in (alice, bob):
        assert set((yield asking.request("presence", channel="room.1"))["clients"]) == {
            alice.info["client_id"], bob.info["client_id"]}
        assert (yield asking.request("presence_stats", channel="room.1")) == {"channel": "room.1", "clients": 2,
                                                                             "users": 2}
    yield two.stop()  # a graceful shutdown ends bob's connection: its leave is owed
    assert (yield alice.next_event("leave")) == {"event": "leave", "channel": "room.1", "info": bob_info}
    assert list((yield alice.request("presence", channel="room.1"))["clients"]) == [alice.info["client_id"]]
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_the_members_of_a_killed_twistd_vanish_from_presence_within_presence_ttl(make_server, redis_server, tmp_path):
    config = tmp_path / "zbifrost.yaml"
    rules = RULES.replace("[user, admin]", "[guest]")  # auth is off: every client is a guest
    config.write_text(f"websocket:\n  broker: {redis_server.url}\n  presence_ttl: 1\n{rules}")
    port = free_port()
    process = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "zbifrost", "--port", str(port), "--config", str(config)],
                               cwd=tmp_path, env=dict(os.environ, PYTHONPATH=REPO),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield in_thread(wait_until_listening, port, process)

        ghost = yield connect(f"ws://127.0.0.1:{port}/ws")
        for _ in range(50):  # its broker connection may still be on its way
            if (yield ghost.request_frame("subscribe", channel="room.1")).get("code") != "broker_unavailable":
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        server = yield make_server(config_file=str(config))
        alice = yield connect(server.url)
        yield alice.request("subscribe", channel="room.1")
        ghost_id = ghost.info["client_id"]
        present = (yield alice.request("presence", channel="room.1"))["clients"]
        assert set(present) == {ghost_id, alice.info["client_id"]}
        yield task.deferLater(reactor, 2, lambda: None)  # past presence_ttl: the heartbeat keeps the living listed
        assert ghost_id in (yield alice.request("presence", channel="room.1"))["clients"]
        process.kill()
        yield in_thread(process.wait, timeout=20)
        for _ in range(100):  # a bounded wait: presence_ttl is 1 s
            clients = (yield alice.request("presence", channel="room.1"))["clients"]
            if ghost_id not in clients:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        assert list(clients) == [alice.info["client_id"]]
        yield alice.close()
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=20)
