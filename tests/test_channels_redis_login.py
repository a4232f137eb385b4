"""The Redis broker logging in (docs/protocol.md section 6a): a real redis-server with
`requirepass` (and a Redis 6 ACL user), the password given in the URL or ZBIFROST_BROKER_PASSWORD,
never in a log line or /healthz; a wrong one is logged once, without it (also by a real twistd),
and channels answer broker_unavailable until Redis takes it."""

import json
import os
import subprocess
import threading

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent

from tests.helpers import REDIS_SERVER, RedisServer, http_get, in_thread
from tests.test_core_twistd import REPO, TWISTD, free_port, stop_process
from zbifrost.broker_url import PASSWORD_VARIABLE
from zbifrost.testing import connect

pytestmark = pytest.mark.slow
PASSWORD = "Redis-pa55-word"
WRONG = "Wrong-pa55-word"
USER_PASSWORD = "Acl-user-pa55"


@pytest.fixture
def locked_redis(tmp_path):
    """A real redis-server that requires PASSWORD."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    redis = RedisServer(tmp_path, password=PASSWORD)
    redis.start()
    yield redis
    redis.stop()


def log_text(events):
    """Every log event as text, with its failure's traceback when it has one."""
    return "\n".join(formatEvent(event) + (event["log_failure"].getTraceback() if "log_failure" in event else "")
                     for event in events)


@defer.inlineCallbacks
def _channels_work(server):
    alice = yield connect(server.url)
    bob = yield connect(server.url)
    yield alice.request("subscribe", channel="news")
    yield bob.request("publish", channel="news", data="hello")
    assert (yield alice.next_event("message").addTimeout(10, reactor))["data"] == "hello"
    yield alice.close()
    yield bob.close()


@pytest.mark.parametrize("how", ["url", "environment", "acl user"])
@pytest_twisted.inlineCallbacks
def test_the_broker_logs_in_with_the_password_and_never_shows_it(make_server, locked_redis, log_events,
                                                                 monkeypatch, how):
    url = f"redis://:{PASSWORD}@127.0.0.1:{locked_redis.port}/0"
    if how == "environment":
        url = locked_redis.url
        monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)
    elif how == "acl user":
        assert locked_redis.command("ACL", "SETUSER", "zb", "on", f">{USER_PASSWORD}", "~*", "&*", "+@all") == "+OK"
        url = f"redis://zb:{USER_PASSWORD}@127.0.0.1:{locked_redis.port}/0"
    server = yield make_server(broker=url).addTimeout(20, reactor)
    yield _channels_work(server)
    _status, _headers, body = yield in_thread(http_get, server.port, "/healthz")
    assert json.loads(body)["broker"] == "up"
    assert PASSWORD not in body.decode() and USER_PASSWORD not in body.decode()
    assert server.hub.channels.broker.address == f"redis://127.0.0.1:{locked_redis.port}/0"
    text = log_text(log_events)
    assert PASSWORD not in text and USER_PASSWORD not in text


@pytest_twisted.inlineCallbacks
def test_a_wrong_password_is_logged_once_without_it_and_channels_wait_for_redis_to_take_it(
        make_server, locked_redis, log_events):
    port = free_port()
    starting = make_server(broker=f"redis://:{WRONG}@127.0.0.1:{locked_redis.port}/0", port=port)
    while "refused the login" not in log_text(log_events):
        yield task.deferLater(reactor, 0.05, lambda: None)
    _status, _headers, body = yield in_thread(http_get, port, "/healthz")
    assert json.loads(body)["broker"] == "unavailable"
    bob = yield connect(f"ws://127.0.0.1:{port}/ws")
    assert (yield bob.request_frame("publish", channel="news", data=1))["code"] == "broker_unavailable"
    yield bob.close()
    # Redis now takes that password: the broker's next attempt (with its backoff) logs in
    assert locked_redis.command("CONFIG", "SET", "requirepass", WRONG) == "+OK"
    server = yield starting.addTimeout(30, reactor)
    yield _channels_work(server)
    text = log_text(log_events)
    refusals = [line for line in text.splitlines() if "refused the login" in line]
    assert refusals == [f"channel broker redis://127.0.0.1:{locked_redis.port}/0: it refused the login (user default): "
                        "WRONGPASS invalid username-password pair or user is disabled. (check the broker URL's "
                        "password or ZBIFROST_BROKER_PASSWORD)"], refusals
    assert WRONG not in text and PASSWORD not in text


def test_a_twistd_with_a_wrong_password_from_the_environment_says_so_without_it(locked_redis, tmp_path):
    port = free_port()
    environment = {name: value for name, value in os.environ.items() if not name.startswith("WEBSOCKET_")}
    process = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "zbifrost", "--port", str(port),
                                "--broker", locked_redis.url], cwd=tmp_path,
                               env=dict(environment, PYTHONPATH=REPO, **{PASSWORD_VARIABLE: WRONG}),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    guard = threading.Timer(30, process.kill)  # the line never coming fails the test, not hangs it
    guard.start()
    try:
        lines = []
        while not lines or "refused the login" not in lines[-1]:
            lines.append(process.stdout.readline())
            assert lines[-1], "twistd ended without the refused login:\n" + "".join(lines)
    finally:
        guard.cancel()
        lines.append(stop_process(process))
    output = "".join(lines)
    assert "WRONGPASS" in output and WRONG not in output
