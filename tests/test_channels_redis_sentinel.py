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
from tests.test_channels_redis_login import log_text
from tests.test_core_twistd import free_port
from zbifrost.channels.redis_sentinel import PASSWORD_VARIABLE
from zbifrost.testing import connect

pytestmark = pytest.mark.slow
FOLLOWED_WITHIN = 10  # seconds after every sentinel names the new master (docs/protocol.md 6a)
SENTINEL_PASSWORD = "sentinel-secret-8f3a"


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


@pytest.mark.parametrize("sentinels", [SENTINEL_PASSWORD], indirect=True)
@pytest_twisted.inlineCallbacks
def test_sentinels_that_require_a_password_are_asked_with_the_sentinel_password(
        make_server, sentinels, monkeypatch, log_events):
    monkeypatch.setenv(PASSWORD_VARIABLE, SENTINEL_PASSWORD)
    server = yield make_server(broker=sentinels.url).addTimeout(20, reactor)
    assert server.hub.channels.broker.connector.endpoint.master == ("127.0.0.1", sentinels.master.port)
    bob = yield connect(server.url)
    assert (yield bob.request("publish", channel="news", data="found through the sentinels"))["offset"] == 1
    yield bob.close()
    listening = yield in_thread(sentinels.ask, sentinels.ports[0], "CLIENT", "LIST")
    assert any("cmd=subscribe" in client for client in listening), listening  # the +switch-master watch
    assert SENTINEL_PASSWORD not in log_text(log_events)


@pytest.mark.parametrize("sentinels", [SENTINEL_PASSWORD], indirect=True)
@pytest_twisted.inlineCallbacks
def test_a_sentinel_refusing_the_password_is_logged_once_without_it_until_it_takes_it(
        make_server, sentinels, monkeypatch, log_events):
    wrong = "not-the-sentinel-secret"
    monkeypatch.setenv(PASSWORD_VARIABLE, wrong)
    port = free_port()
    starting = make_server(broker=sentinels.url, port=port)
    deadline = time.monotonic() + 20
    while "refused" not in log_text(log_events):
        assert time.monotonic() < deadline, "the refusal was never logged"
        yield task.deferLater(reactor, 0.05, lambda: None)
    bob = yield connect(f"ws://127.0.0.1:{port}/ws")
    assert (yield bob.request_frame("publish", channel="news", data=1))["code"] == "broker_unavailable"
    yield bob.close()
    for sentinel in sentinels.ports:  # the sentinels now take that password: the next attempt logs in
        assert (yield in_thread(sentinels.ask, sentinel, "ACL", "SETUSER", "default", f">{wrong}")) == ["OK"]
    server = yield starting.addTimeout(20, reactor)
    assert server.hub.channels.broker.up
    refusals = [line for line in log_text(log_events).splitlines() if "refused" in line]
    assert len(refusals) == 1 and refusals[0].startswith(
        f"channel broker redis+sentinel://127.0.0.1:{sentinels.ports[0]}"), refusals
    assert "WRONGPASS" in refusals[0] and "ZBIFROST_SENTINEL_PASSWORD" in refusals[0], refusals
    assert wrong not in log_text(log_events) and SENTINEL_PASSWORD not in log_text(log_events)


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
