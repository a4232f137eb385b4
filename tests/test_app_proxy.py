"""Proxies to the application (docs/protocol.md section 13): the `proxy:` section, the connect
proxy, `zHTTP` commands and the subscribe proxy, against a stand-in application - a twisted.web
server on a loopback port inside the test that checks every request's signature - with a real
zbifrost and real WebSocket clients."""

import hashlib
import hmac
import json
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web import resource, server

from zbifrost.config import ConfigError, load_config
from zbifrost.testing import connect

SECRET = b"0123456789abcdef0123456789abcdef-the-proxy-secret"


class StandIn(resource.Resource):
    """The application: checks the signature of every request, records it, and answers with
    what `answer(path, body, request)` returns: (status, body bytes), or a Deferred of it."""

    isLeaf = True

    def __init__(self, answer):
        super().__init__()
        self.answer = answer
        self.requests = []  # (path, parsed body, headers as {lower-case name: value})

    def render_POST(self, request):
        body = request.content.read()
        timestamp = request.getHeader("x-zbifrost-timestamp")
        expected = "sha256=" + hmac.new(SECRET, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(request.getHeader("x-zbifrost-signature") or "", expected)
        assert abs(int(timestamp) - time.time()) < 60
        assert request.getHeader("content-type") == "application/json"
        headers = {name.decode().lower(): values[0].decode()
                   for name, values in request.requestHeaders.getAllRawHeaders()}
        self.requests.append((request.path.decode(), json.loads(body), headers))
        answered = defer.maybeDeferred(self.answer, request.path.decode(), json.loads(body), request)

        def reply(outcome):
            status, payload = outcome
            request.setResponseCode(status)
            request.write(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
            request.finish()

        answered.addCallback(reply)
        return server.NOT_DONE_YET


@pytest.fixture
def application():
    """Start a stand-in application: `start(answer)` returns (StandIn, base URL)."""
    ports = []

    def start(answer):
        stand_in = StandIn(answer)
        port = reactor.listenTCP(0, server.Site(stand_in), interface="127.0.0.1")
        ports.append(port)
        return stand_in, f"http://127.0.0.1:{port.getHost().port}"

    yield start
    for port in ports:
        pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def _secret_file(tmp_path, secret=SECRET):
    path = tmp_path / "proxy.secret"
    path.write_bytes(secret + b"\n")
    return path


def _config_file(tmp_path, section, extra=""):
    path = tmp_path / "zbifrost.yaml"
    path.write_text(f"proxy:\n  secret_file: {_secret_file(tmp_path)}\n" + "".join(f"  {line}\n" for line in section)
                    + extra)
    return str(path)


# -- the proxy: section -------------------------------------------------------------------------

@pytest.mark.parametrize(("section", "message"), [
    (["timeout: 0"], "proxy.timeout: expected a number of seconds greater than zero"),
    (["connect: {url: 'ftp://127.0.0.1/x'}"], "proxy.connect.url: 'ftp://127.0.0.1/x' must be an http:// or https://"),
    (["subscribe: {url: 'javascript:alert(1)'}"], "proxy.subscribe.url: 'javascript:alert(1)' must be an http://"),
    (["connect: {url: 'http://127.0.0.1/c', headers: Cookie}"], "proxy.connect.headers: expected a list"),
    (["connnect: {url: 'http://127.0.0.1/c'}"], "unknown key 'connnect' (did you mean 'connect'?)"),
])
def test_a_wrong_proxy_section_stops_the_start_with_one_line_naming_the_key(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_config(_config_file(tmp_path, section), environ={})


def test_a_secret_under_32_bytes_stops_the_start_and_is_never_repeated(tmp_path):
    path = tmp_path / "zbifrost.yaml"
    path.write_text(f"proxy:\n  secret_file: {_secret_file(tmp_path, b'short-secret-31-bytes-long-abcd')}\n")
    with pytest.raises(ConfigError, match="holds 31 bytes; the secret must be at least 32") as caught:
        load_config(str(path), environ={})
    assert "short-secret" not in str(caught.value) and "\n" not in str(caught.value)


def test_a_proxy_section_is_read_with_its_defaults(tmp_path):
    config = load_config(_config_file(tmp_path, ["connect: {url: 'http://127.0.0.1:8000/c', headers: [Cookie]}"]),
                         environ={})
    assert config.proxy.secret == SECRET and config.proxy.timeout == 5
    assert config.proxy.connect.headers == ("cookie",) and config.proxy.subscribe_url is None
    assert "secret" not in repr(config.proxy).replace("secret=", "")  # the secret itself is never in a repr


@pytest_twisted.inlineCallbacks
def test_features_name_proxy_only_when_the_section_is_set(make_server, tmp_path):
    plain = yield make_server()
    client = yield connect(plain.url)
    assert "proxy" not in client.info["features"]
    yield client.close()
    proxied = yield make_server(config_file=_config_file(tmp_path, ["timeout: 2"]))
    client = yield connect(proxied.url)
    assert "proxy" in client.info["features"]
    yield client.close()
