"""The delivery guarantee under failure (docs/protocol.md section 6a): real twistd processes on a
real redis-server, subscribers and publishers in threads (tests/chaos.py), one fault per case.
Every case expects 0 acknowledged publications lost, 0 duplicates, 0 reorderings and 0 gaps
not excused by `recovered: false`; the empty restart of Redis and the Sentinel failovers (a
master, a replica and three sentinels: a promoted replica may lack the newest publications)
expect `recovered: false`.
The table of every case is printed at the end of the module."""

import json
import os
import shutil
import signal
import time

import pytest

from tests.helpers import REDIS_SERVER, RedisServer

from .chaos import ApiPublisher, Subscriber, WsPublisher, Zbifrost, check, cut, wait_until_caught_up, write_config

pytestmark = pytest.mark.slow

SUBSCRIBERS = 4
COLUMNS = ("case", "acknowledged", "lost", "duplicates", "reorderings", "silent gaps", "recovered:false",
           "reconnects", "publishes sent again")


@pytest.fixture(scope="module")
def table(request):
    """The rows of the chaos table, printed once the module is done."""
    rows = []
    yield rows
    if rows:
        widths = [max(len(str(row[i])) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
        with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
            print()
            for row in [COLUMNS, *rows]:
                print("| " + " | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)) + " |")


@pytest.fixture
def redis(tmp_path):
    """A redis-server that fsyncs every write (appendonly yes, appendfsync always)."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    server = RedisServer(tmp_path / "redis", args=["--appendfsync", "always"])
    server.start()
    yield server
    server.stop()


def _zbifrost_processes(folder, broker_url):
    """A fixture's body: start zbifrost processes on `broker_url` (each call one, with extra
    arguments); stopped after."""
    started = []
    config = write_config(folder)

    def start(*args):
        process = Zbifrost(folder, "--config", config, "--broker", broker_url, *args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def zbifrost(tmp_path, redis):
    """zbifrost processes on `redis`."""
    yield from _zbifrost_processes(tmp_path, redis.url)


@pytest.fixture
def zbifrost_on_sentinels(tmp_path, sentinels):
    """zbifrost processes on the master that `sentinels` (conftest.py) name."""
    yield from _zbifrost_processes(tmp_path, sentinels.url)


def run_case(folder, table, case, fault, subscriber_urls, publisher_urls, api_ports, padding=0,
             expect_not_recovered=False, slow=None):
    """Subscribers on `subscriber_urls` (in turn), a WebSocket publisher per `publisher_urls` and one
    API publisher over `api_ports`; `fault(subscribers, publishers)` runs once they all go. The
    events and acknowledgements are left in `folder`/events.json."""
    subscribers = [Subscriber(f"s{n}", subscriber_urls[n:] + subscriber_urls[:n]) for n in range(SUBSCRIBERS)]
    if slow is not None:
        subscribers.append(slow)
    publishers = [WsPublisher(f"w{n}", [url], padding=padding) for n, url in enumerate(publisher_urls)]
    publishers.append(ApiPublisher("api", api_ports))
    for subscriber in subscribers:
        subscriber.start()
    deadline = time.monotonic() + 10
    while not all(subscriber.events for subscriber in subscribers):
        assert time.monotonic() < deadline, "a subscriber never got its subscribe reply"
        time.sleep(0.05)
    for publisher in publishers:
        publisher.start()
    time.sleep(1)
    fault(subscribers, publishers)
    time.sleep(1.5)
    for publisher in publishers:
        publisher.stop()
    acks = [ack for publisher in publishers for ack in publisher.acks]
    assert acks, "nothing was acknowledged"
    wait_until_caught_up(subscribers, publishers)
    for subscriber in subscribers:
        subscriber.stop()
    counts = {subscriber.name: check(subscriber.events, acks) for subscriber in subscribers}
    total = {field: sum(getattr(found, field) for found in counts.values())
             for field in ("lost", "duplicates", "reorderings", "silent_gaps", "not_recovered")}
    reconnects = sum(subscriber.reconnects for subscriber in subscribers)
    table.append((case, len(acks), total["lost"], total["duplicates"], total["reorderings"], total["silent_gaps"],
                  total["not_recovered"], reconnects, sum(publisher.retries for publisher in publishers)))
    with open(os.path.join(str(folder), "events.json"), "w") as dump:  # for a failure's post-mortem
        json.dump({"acks": acks, "events": {subscriber.name: subscriber.events for subscriber in subscribers}}, dump)
    errors = [error for worker in [*subscribers, *publishers] for error in worker.errors]
    assert not errors, errors
    assert (total["lost"], total["duplicates"], total["reorderings"], total["silent_gaps"]) == (0, 0, 0, 0), counts
    if expect_not_recovered:
        assert all(found.not_recovered for found in counts.values()), counts
    return subscribers


def test_client_connections_cut_without_a_close_frame(tmp_path, table, zbifrost):
    first, second = zbifrost(), zbifrost()

    def fault(subscribers, publishers):
        for _ in range(3):
            for worker in [*subscribers, *publishers]:
                if worker.connection is not None:
                    cut(worker.connection)
            time.sleep(0.5)

    run_case(tmp_path, table, "client connections cut (RST)", fault, [first.url, second.url], [first.url, second.url],
             [first.port, second.port])


def test_redis_stopped_and_restarted(tmp_path, table, zbifrost, redis):
    first, second = zbifrost(), zbifrost()

    def fault(subscribers, publishers):
        redis.stop()
        time.sleep(1)
        redis.start()

    run_case(tmp_path, table, "redis stopped, restarted (AOF)", fault, [first.url, second.url], [first.url, second.url],
             [first.port, second.port])


def test_redis_frozen_for_three_seconds(tmp_path, table, zbifrost, redis):
    first, second = zbifrost(), zbifrost()

    def fault(subscribers, publishers):
        os.kill(redis.process.pid, signal.SIGSTOP)
        time.sleep(3)
        os.kill(redis.process.pid, signal.SIGCONT)

    run_case(tmp_path, table, "redis frozen 3 s (SIGSTOP)", fault, [first.url, second.url], [first.url, second.url],
             [first.port, second.port])


def test_redis_killed_and_restarted_empty_says_not_recovered(tmp_path, table, zbifrost, redis):
    first, second = zbifrost(), zbifrost()

    def fault(subscribers, publishers):
        redis.process.kill()
        redis.process.wait(10)
        shutil.rmtree(redis.folder)
        os.mkdir(redis.folder)
        redis.start()

    run_case(tmp_path, table, "redis killed, restarted empty", fault, [first.url, second.url], [first.url, second.url],
             [first.port, second.port], expect_not_recovered=True)


def redis_connections_of(pid, redis_port):
    """The local ports of process `pid`'s TCP connections to `redis_port` on loopback."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.split(":")[1], 16) == redis_port:
                ports.append(int(local.split(":")[1], 16))
    return ports


def test_broker_connections_of_one_process_dropped_while_its_clients_stay(tmp_path, table, zbifrost, redis):
    first, second = zbifrost(), zbifrost()

    def fault(subscribers, publishers):
        ports = redis_connections_of(first.process.pid, redis.port)
        assert len(ports) == 2, ports
        for port in ports:
            assert redis.command("CLIENT", "KILL", f"127.0.0.1:{port}") == "+OK"

    subscribers = run_case(tmp_path, table, "broker connections of one process killed", fault, [first.url],
                           [second.url], [second.port])
    assert not any(subscriber.reconnects for subscriber in subscribers)


def test_a_worker_killed_under_two_workers(tmp_path, table, zbifrost):
    workers = zbifrost("--workers", "2")
    workers.wait_for(lambda health: len(health.get("workers", ())) == 2)

    def fault(subscribers, publishers):
        os.kill(workers.health()["workers"][0]["pid"], signal.SIGKILL)

    run_case(tmp_path, table, "a worker SIGKILLed (--workers 2)", fault, [workers.url], [workers.url, workers.url],
             [workers.port])


def test_a_slow_subscriber_closed_with_1013_catches_up(tmp_path, table, zbifrost):
    first = zbifrost()
    slow = Subscriber("slow", [first.url], rcvbuf=4096)

    def fault(subscribers, publishers):
        slow.paused.set()
        time.sleep(6)
        slow.paused.clear()

    run_case(tmp_path, table, "slow subscriber closed with 1013", fault, [first.url], [first.url], [first.port],
             padding=65536, slow=slow)
    assert 1013 in slow.close_codes, slow.close_codes


@pytest.mark.parametrize("fault", ["SENTINEL FAILOVER", "SIGKILL of the master"])
def test_a_sentinel_failover_says_not_recovered(tmp_path, table, zbifrost_on_sentinels, sentinels, fault):
    first, second = zbifrost_on_sentinels(), zbifrost_on_sentinels()

    def fail_over(subscribers, publishers):
        if fault != "SENTINEL FAILOVER":
            sentinels.cut_off_replica()  # what the master acknowledges from here on is lost with it
            time.sleep(0.5)
        sentinels.fail_over(fault)

    case = {"SENTINEL FAILOVER": "sentinel: SENTINEL FAILOVER"}.get(fault, "sentinel: master SIGKILLed, replica behind")
    run_case(tmp_path, table, case, fail_over, [first.url, second.url], [first.url, second.url],
             [first.port, second.port], expect_not_recovered=True)
