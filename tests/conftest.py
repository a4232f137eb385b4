"""Shared fixtures: a real zbifrost on a loopback port, started and stopped in the reactor."""

import os

import pytest
import pytest_twisted
from twisted.logger import globalLogPublisher

from tests.helpers import REDIS_CLI, REDIS_SENTINEL, REDIS_SERVER, RedisSentinels, RedisServer
from zbifrost import testing

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEMO_WORKSPACE = os.path.join(REPO, "zui")

# trial's TestCase spins the reactor itself, which clashes with pytest-twisted's reactor
# greenlet in the same process; test_core_twistd.py runs that module under `trial` and under
# `pytest -p no:twisted`, each in a process of its own.
collect_ignore = ["test_testing_helpers_trial.py"]

# Fixtures that start a process of their own: every test using one, directly or through another
# fixture, is marked `slow` (pytest.ini), so that `-m "not slow"` leaves it out.
PROCESS_FIXTURES = {"redis_server", "sentinels", "redis_shards"}


def pytest_collection_modifyitems(items):
    for item in items:
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def make_server():
    """Start servers with custom settings (default: the bundled demo workspace): returns a
    Deferred firing with a RunningServer. Every server is stopped after the test."""
    servers = []

    def start(**settings):
        settings.setdefault("workspace", DEMO_WORKSPACE)
        started = testing.start_server(**settings)
        started.addCallback(lambda server: servers.append(server) or server)
        return started

    yield start
    for server in servers:
        pytest_twisted.blockon(server.stop())


@pytest.fixture
def server(make_server):
    """A running server for the bundled demo workspace with default settings."""
    return pytest_twisted.blockon(make_server())


@pytest.fixture
def log_events():
    """Every log event emitted during the test."""
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server of its own (a RedisServer), stopped after the test; skips only
    where Debian's redis-server is not installed (.ci/run installs it)."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    redis = RedisServer(tmp_path)
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def redis_shards(tmp_path):
    """Two real redis-servers of their own (RedisServer, in folders one/ and two/): the shards
    of a sharded broker, the second requiring a password (its `password`), so that a test can see
    it shown nowhere; skips where redis-server is not installed."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    shards = [RedisServer(tmp_path / "one"), RedisServer(tmp_path / "two", password="shard-two-secret")]
    for redis in shards:
        redis.start()
    yield shards
    for redis in shards:
        redis.stop()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.slow)])
def backend_settings(request):
    """Server settings for each channel backend: the embedded one, then a broker on a fresh
    redis-server (marked `slow`); tests of channel semantics run against both."""
    if request.param == "memory":
        return {}
    return {"broker": request.getfixturevalue("redis_server").url}


@pytest.fixture
def channel_server(make_server, backend_settings):
    """A running server for the bundled demo workspace on each channel backend."""
    return pytest_twisted.blockon(make_server(**backend_settings))


@pytest.fixture
def sentinels(tmp_path, request):
    """A master, a replica and three sentinels (RedisSentinels), stopped after the test; skips
    only where Debian's redis-server, redis-sentinel or redis-tools is not installed. Made
    indirect with a parameter, the sentinels require that password."""
    for program, package in ((REDIS_SERVER, "redis-server"), (REDIS_SENTINEL, "redis-sentinel"),
                             (REDIS_CLI, "redis-tools")):
        if not os.access(program, os.X_OK):
            pytest.skip(f"{program} is not installed (apt-get install {package}; .ci/run does it)")
    group = RedisSentinels(tmp_path, sentinel_password=getattr(request, "param", None))
    try:
        group.start()
        yield group
    finally:
        group.stop()
