"""The Redis broker over TLS (`rediss://`, docs/protocol.md section 6a) against a real
redis-server speaking TLS only, with a self-signed certificate made here: trusted through
`?ca=` or the system's CAs, logging in over TLS, and a certificate no trusted CA signed
refused with one log line."""

import json
import os

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.helpers import REDIS_SERVER, RedisServer, http_get, in_thread
from tests.test_channels_redis_login import PASSWORD, _channels_work, log_text
from tests.test_tls_proxies import write_self_signed_certificate
from zbifrost.broker_url import parse_broker
from zbifrost.channels.redis import RedisBroker

pytestmark = pytest.mark.slow


@pytest.fixture
def tls_redis(tmp_path):
    """A real redis-server speaking only TLS, with a self-signed certificate for 127.0.0.1, and requiring PASSWORD."""
    pytest.importorskip("OpenSSL", reason="pyOpenSSL is missing: pip install 'zbifrost[tls]'")
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis", password=PASSWORD, tls=write_self_signed_certificate(tmp_path))
    redis.start()
    yield redis
    redis.stop()


@pytest_twisted.inlineCallbacks
def test_rediss_with_its_ca_file_carries_channels_and_the_login(make_server, tls_redis, log_events):
    server = yield make_server(broker=tls_redis.url.replace("rediss://", f"rediss://:{PASSWORD}@")).addTimeout(
        20, reactor)
    yield _channels_work(server)
    _status, _headers, body = yield in_thread(http_get, server.port, "/healthz")
    assert json.loads(body)["broker"] == "up"
    assert server.hub.channels.broker.address == f"rediss://127.0.0.1:{tls_redis.port}/0"
    assert PASSWORD not in log_text(log_events)


@pytest_twisted.inlineCallbacks
def test_rediss_without_a_ca_file_trusts_the_systems_cas(make_server, tls_redis, monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))  # OpenSSL's default CAs, here this one
    url = f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis.port}/0"
    server = yield make_server(broker=url).addTimeout(20, reactor)
    yield _channels_work(server)


@pytest_twisted.inlineCallbacks
def test_a_certificate_no_trusted_ca_signed_is_refused_with_one_log_line(tls_redis, tmp_path, log_events):
    (tmp_path / "other").mkdir()
    _key, other_ca = write_self_signed_certificate(tmp_path / "other")
    broker = RedisBroker(reactor, parse_broker(f"rediss://:{PASSWORD}@127.0.0.1:{tls_redis.port}/0?ca={other_ca}"))
    broker.start()
    try:
        while "TLS handshake failed" not in log_text(log_events):
            yield task.deferLater(reactor, 0.05, lambda: None)
        yield task.deferLater(reactor, 2, lambda: None)  # its next attempt (after about a second) fails too
        assert not broker.up
    finally:
        yield broker.stop()
    text = log_text(log_events)
    failures = [line for line in text.splitlines() if "TLS handshake failed" in line]
    assert len(failures) == 1 and "certificate verify failed" in failures[0], failures
    assert failures[0].startswith(f"channel broker rediss://127.0.0.1:{tls_redis.port}/0: its TLS handshake failed")
    assert PASSWORD not in text
