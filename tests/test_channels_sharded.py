"""Broker shards (docs/protocol.md section 6a, zbifrost.channels.sharded): the jump consistent
hash against reference values and its minimal movement; with two real redis-servers, channels
spread over both, delivery, recovery and presence across two processes, one shard down, and a
process whose list is in another order refused."""

import json
import re

import pytest
import pytest_twisted

from tests.helpers import http_get, in_thread, redis_cli
from tests.test_channel_presence import RULES
from tests.test_channel_rules import _start
from tests.test_core_twistd import free_port, one_line_error, run_twistd
from zbifrost.channels.sharded import SHARDS_KEY, channel_key, jump_hash, shard_of
from zbifrost.testing import connect

# github.com/dgryski/go-jump jump_test.go, and Guava's HashingTest (consistentHash(1..5, 100))
REFERENCE = [(1, 1, 0), (42, 57, 43), (0xDEAD10CC, 1, 0), (0xDEAD10CC, 666, 361), (256, 1024, 520),
             (1, 100, 55), (2, 100, 62), (3, 100, 8), (4, 100, 45), (5, 100, 59)]
PASSWORD = "shard-two-secret"  # the second shard's (conftest's redis_shards)


@pytest.mark.parametrize("key, buckets, bucket", REFERENCE)
def test_the_jump_hash_gives_the_buckets_of_the_reference_implementations(key, buckets, bucket):
    assert jump_hash(key, buckets) == bucket


def test_a_channel_key_is_blake2b_64_of_its_utf8_name_not_pythons_hash():
    assert channel_key("news") == 0xAD662ED3DC9273D1
    assert channel_key("チャンネル") == 2216513293838112855


@pytest.mark.parametrize("count", range(1, 8))
def test_adding_a_shard_moves_only_channels_to_the_new_one_and_about_their_share(count):
    names = [f"room.{number}" for number in range(10000)]
    moved = [name for name in names if shard_of(name, count + 1) != shard_of(name, count)]
    assert {shard_of(name, count + 1) for name in moved} == {count}
    assert 0.8 / (count + 1) < len(moved) / len(names) < 1.2 / (count + 1)


# -- two real redis-servers ----------------------------------------------------------------

def _brokers(redis_shards):
    """The broker URLs of the two shards, the second's with its password."""
    one, two = redis_shards
    return [one.url, f"redis://:{two.password}@127.0.0.1:{two.port}/0"]


def _health(server):
    return in_thread(http_get, server.port, "/healthz").addCallback(lambda response: json.loads(response[2]))


def _names(count=12):
    """Channel names of both shards, those of the first shard first."""
    names = [f"room.{number}" for number in range(count)]
    return sorted(names, key=lambda name: shard_of(name, 2))


@pytest_twisted.inlineCallbacks
def test_channels_live_each_in_the_shard_its_hash_names_and_health_lists_the_shards(make_server, redis_shards):
    brokers = _brokers(redis_shards)
    server = yield make_server(broker=brokers)
    alice = yield connect(server.url)
    assert {"broker", "sharded_broker"} <= set(alice.info["features"])
    names = _names()
    for name in names:
        yield alice.request("publish", channel=name, data=name)
    where = {name: [shard.command("EXISTS", f"zbifrost:meta:{name}") for shard in redis_shards] for name in names}
    assert where == {name: [":1", ":0"] if shard_of(name, 2) == 0 else [":0", ":1"] for name in names}
    assert {shard_of(name, 2) for name in names} == {0, 1}
    addresses = [redis_shards[0].url, f"redis://127.0.0.1:{redis_shards[1].port}/0"]
    recorded = [redis_cli(redis_shards[0].port, "GET", SHARDS_KEY),
                redis_cli(redis_shards[1].port, "-a", PASSWORD, "--no-auth-warning", "GET", SHARDS_KEY)]
    assert [json.loads(found) for [found] in recorded] == [addresses, addresses]
    health = yield _health(server)
    assert health["broker"] == "up"
    assert health["shards"] == [{"address": address, "broker": "up"} for address in addresses]
    assert PASSWORD not in json.dumps(health)
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_two_processes_on_the_same_two_shards_deliver_and_recover_with_since(make_server, redis_shards):
    brokers = _brokers(redis_shards)
    one = yield make_server(broker=brokers)
    two = yield make_server(broker=brokers)
    alice = yield connect(one.url)
    bob = yield connect(two.url)
    names = _names(6)
    subscribed = {}
    for name in names:
        subscribed[name] = yield alice.request("subscribe", channel=name)
    for name in names:
        published = yield bob.request("publish", channel=name, data=f"{name} 1")
        assert (published["epoch"], published["offset"]) == (subscribed[name]["epoch"], 1)
        assert (yield alice.next_event("message"))["data"] == f"{name} 1"
    yield alice.close()
    for name in names:
        yield bob.request("publish", channel=name, data=f"{name} 2")
    carol = yield connect(two.url)
    for name in names:
        reply = yield carol.request("subscribe", channel=name, since={"epoch": subscribed[name]["epoch"], "offset": 1})
        assert (reply["recovered"], reply["offset"]) == (True, 2)
        missed = yield carol.next_event("message")
        assert (missed["channel"], missed["data"], missed["offset"]) == (name, f"{name} 2", 2)
    yield bob.close()
    yield carol.close()


@pytest_twisted.inlineCallbacks
def test_presence_of_channels_on_both_shards_is_seen_from_the_other_process(make_server, tmp_path, redis_shards):
    brokers = _brokers(redis_shards)
    one = yield _start(make_server, tmp_path, RULES, broker=brokers)
    two = yield _start(make_server, tmp_path, RULES, broker=brokers)
    alice = yield connect(one.url, token="t-alice")
    root = yield connect(two.url, token="t-root")
    names = [_names()[0], _names()[-1]]  # one in each shard
    for name in names:
        yield alice.request("subscribe", channel=name)
    for name in names:
        found = yield root.request("presence", channel=name)
        assert found["clients"] == {alice.info["client_id"]: {"user": "alice", "role": "user"}}
        assert redis_shards[shard_of(name, 2)].command("EXISTS", f"zbifrost:presence:{name}") == ":1"
    yield alice.close()
    yield root.close()


@pytest_twisted.inlineCallbacks
def test_a_stopped_shard_answers_broker_unavailable_for_its_channels_while_the_other_works(make_server, redis_shards):
    brokers = _brokers(redis_shards)
    server = yield make_server(broker=brokers)
    alice = yield connect(server.url)
    bob = yield connect(server.url)
    first, second = _names()[0], _names()[-1]
    for name in (first, second):
        yield alice.request("subscribe", channel=name)
    yield in_thread(redis_shards[1].stop)
    reply = yield bob.request_frame("publish", channel=second, data="lost")
    assert reply["code"] == "broker_unavailable", reply
    published = yield bob.request("publish", channel=first, data="still here")
    assert published["offset"] == 1
    assert (yield alice.next_event("message"))["data"] == "still here"
    health = yield _health(server)
    assert (health["status"], health["broker"]) == ("ok", "unavailable")
    assert [shard["broker"] for shard in health["shards"]] == ["up", "unavailable"]
    yield in_thread(redis_shards[1].start)
    yield server.hub.channels.when_up()
    yield bob.request("publish", channel=second, data="back")
    assert (yield alice.next_event("message"))["data"] == "back"  # her subscription outlived the outage
    assert not [frame for frame in alice.frames if frame.get("event") == "unsubscribed"]
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_a_process_listing_the_shards_in_another_order_refuses_to_start_with_one_line(
        make_server, redis_shards, tmp_path):
    brokers = _brokers(redis_shards)
    yield make_server(broker=brokers)  # records the list in both shards
    result = yield in_thread(run_twistd, "--port", str(free_port()), "--broker", brokers[1], "--broker", brokers[0],
                             tmp_path=tmp_path, timeout=20)
    assert result.returncode == 78  # CONFIG_REFUSED (EX_CONFIG): a unit does not restart it
    line = one_line_error(result)
    one, two = (f"redis://127.0.0.1:{redis.port}/0" for redis in redis_shards)
    mine, recorded = json.dumps([two, one], separators=(",", ":")), json.dumps([one, two], separators=(",", ":"))
    # the shard that answers first tells
    assert re.search(rf"zbifrost: the broker shards {re.escape(mine)} differ from those recorded in shard [12] "
                     rf"\(redis://127\.0\.0\.1:\d+/0, key zbifrost:shards\): {re.escape(recorded)}; every process "
                     "must list the same shards in the same order$", line), line
    assert PASSWORD not in result.stdout + result.stderr
