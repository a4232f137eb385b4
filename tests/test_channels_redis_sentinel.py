"""The Redis broker through Redis Sentinel (`redis+sentinel://`, docs/protocol.md section 6a),
against a real master, its replica and three redis-sentinel processes on loopback: a
`SENTINEL FAILOVER` and a SIGKILLed master are followed within 10 s of the sentinels naming the
new master and channel operations meanwhile answer nothing but broker_unavailable. A promoted
replica may lack the newest publications (asynchronous replication), so every failover starts a
new epoch: a subscriber is told `insufficient_state`, learns `recovered: false` when it subscribes
again with `since`, and goes on receiving; one whose replica surely lost a publication (cut off
from the master before it died) is never given that offset again in its epoch. A master demoted
under the broker (REPLICAOF) makes channels answer broker_unavailable, not command_failed."""

import time

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.helpers import RedisServer, in_thread, redis_cli
from zbifrost.testing import connect

pytestmark = pytest.mark.slow
FOLLOWED_WITHIN = 10  # seconds after every sentinel names the new master (docs/protocol.md 6a)


@pytest_twisted.inlineCallbacks
def _follow(broker, sentinels, probe):
    """Until `broker` works on the promoted replica, within FOLLOWED_WITHIN seconds; the set of
    what publishes through `probe` (a client) answered meanwhile."""
    switched = time.monotonic()
    answers = set()
    while not (broker.up and broker.connector.endpoint.master == ("127.0.0.1", sentinels.replica.port)):
        assert time.monotonic() - switched < FOLLOWED_WITHIN, "the broker did not follow the failover in time"
        reply = yield probe.request_frame("publish", channel="probe", data="while switching")
        answers.add("published" if "result" in reply else reply["code"])
        yield task.deferLater(reactor, 0.05, lambda: None)
    return answers


@pytest_twisted.inlineCallbacks
def _learns_the_new_epoch(subscriber, publisher, last):
    """`subscriber`, subscribed to news up to `last` (a publish result from before the failover),
    is told insufficient_state, subscribes again with `since`: recovered false, and receives."""
    after = yield publisher.request("publish", channel="news", data="after")
    assert after["epoch"] != last["epoch"], (last, after)
    ended = yield subscriber.next_frame().addTimeout(10, reactor)
    assert ended == {"event": "unsubscribed", "channel": "news", "reason": "insufficient_state"}, ended
    again = yield subscriber.request("subscribe", channel="news",
                                     since={"epoch": last["epoch"], "offset": last["offset"]})
    assert (again["epoch"], again["offset"], again["recovered"]) == (after["epoch"], after["offset"], False), again
    later = yield publisher.request("publish", channel="news", data="later")
    message = yield subscriber.next_event("message").addTimeout(10, reactor)
    assert (message["data"], message["offset"]) == ("later", later["offset"])


@pytest.mark.parametrize("fault", ["SENTINEL FAILOVER", "SIGKILL of the master"])
@pytest_twisted.inlineCallbacks
def test_a_failover_is_followed_and_subscribers_learn_the_new_epoch(make_server, sentinels, fault):
    server = yield make_server(broker=sentinels.url).addTimeout(20, reactor)
    broker = server.hub.channels.broker
    assert broker.connector.endpoint.master == ("127.0.0.1", sentinels.master.port)
    alice = yield connect(server.url)
    bob = yield connect(server.url)
    yield alice.request("subscribe", channel="news")
    before = yield bob.request("publish", channel="news", data="before")
    assert (yield alice.next_event("message"))["data"] == "before"

    yield in_thread(sentinels.fail_over, fault)
    answers = yield _follow(broker, sentinels, bob)
    assert answers <= {"published", "broker_unavailable"}, answers
    yield _learns_the_new_epoch(alice, bob, before)
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_a_failover_that_lost_publications_starts_a_new_epoch(make_server, sentinels):
    server = yield make_server(broker=sentinels.url).addTimeout(20, reactor)
    broker = server.hub.channels.broker
    alice = yield connect(server.url)
    bob = yield connect(server.url)
    yield alice.request("subscribe", channel="news")
    kept = yield bob.request("publish", channel="news", data="replicated")
    assert (yield alice.next_event("message"))["offset"] == kept["offset"]
    assert redis_cli(sentinels.master.port, "WAIT", "1", "5000") == ["1"]
    yield in_thread(sentinels.cut_off_replica)
    lost = yield bob.request("publish", channel="news", data="acknowledged, never replicated")
    assert (yield alice.next_event("message"))["offset"] == lost["offset"] == kept["offset"] + 1

    yield in_thread(sentinels.fail_over, "SIGKILL of the master")
    yield _follow(broker, sentinels, bob)
    yield _learns_the_new_epoch(alice, bob, lost)  # before: the offset after `kept` again, in the same epoch
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_a_master_demoted_under_the_broker_answers_broker_unavailable_until_it_is_a_master_again(
        make_server, redis_server, tmp_path):
    other = RedisServer(tmp_path / "other")
    yield in_thread(other.start)
    try:
        server = yield make_server(broker=redis_server.url)
        bob = yield connect(server.url)
        assert (yield in_thread(redis_server.command, "REPLICAOF", "127.0.0.1", other.port)) == "+OK"
        for _ in range(2):  # the broker reconnects to this replica (plain redis:// does not check ROLE) and fails again
            reply = yield bob.request_frame("publish", channel="news", data="to a replica")
            assert reply.get("code") == "broker_unavailable", reply
        assert (yield in_thread(redis_server.command, "REPLICAOF", "NO", "ONE")) == "+OK"
        yield server.hub.channels.when_up()
        for _ in range(100):
            reply = yield bob.request_frame("publish", channel="news", data="to a master")
            if reply.get("code") != "broker_unavailable":
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        assert reply["result"]["offset"] >= 1, reply
        yield bob.close()
    finally:
        yield in_thread(other.stop)
