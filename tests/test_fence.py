"""zbifrost.compat, the fence around other libraries' internals: on the installed releases each
internal it reads exists and behaves as it assumes (an upgrade fails here, not in production),
and with the fence closed zbifrost runs the core protocol tests on public API only."""

import os
import signal
import subprocess
import sys

import pytest
import pytest_twisted
import txaio
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.application.service import Application
from twisted.internet import tcp
from twisted.internet.protocol import Factory
from twisted.logger import ILogObserver, LogLevel
from twisted.python.syslog import SyslogObserver

from zbifrost import compat, logs
from zbifrost.testing import ConnectionClosed, connect

CORE_TESTS = ["tests/test_core_protocol.py", "tests/test_core_hostile.py", "tests/test_core_connections.py",
              "tests/test_core_channels.py", "tests/test_core_in_flight.py"]


@pytest.mark.fence_open
def test_the_installed_releases_are_the_tested_ones_so_the_fast_path_is_on():
    assert compat.untested_releases() == []
    assert compat.INTERNALS is True


def test_a_release_outside_the_tested_series_closes_the_fence():
    assert compat.untested_releases((("autobahn", "26.12.0", "26.11."), ("txaio", "26.6.1", "26.6."))) == [
        "autobahn 26.12.0"]
    assert compat.untested_releases((("Twisted", "26.100.0", "26.10."),)) == ["Twisted 26.100.0"]


def test_txaio_binds_a_disabled_log_level_to_no_op_and_an_enabled_one_to_a_method():
    from txaio.tx import _no_op

    level = txaio.get_global_log_level()
    try:
        txaio.set_global_log_level("info")
        assert txaio.make_logger().debug is _no_op
        txaio.set_global_log_level("debug")
        assert txaio.make_logger().debug is not _no_op
    finally:
        txaio.set_global_log_level(level)


def test_autobahn_has_the_methods_and_option_list_the_fence_uses():
    for name in ("_dataReceived", "_fail_connection", "_cancelAutoPingTimeoutCall", "sendData", "sendCloseFrame",
                 "onMessageEnd", "onMessageFrameBegin", "onMessageBegin"):
        assert callable(getattr(WebSocketServerProtocol, name)), name
    assert {"maxMessagePayloadSize", "maxFramePayloadSize", "utf8validateIncoming", "autoPingRestartOnAnyTraffic",
            "perMessageCompressionAccept"} <= set(WebSocketServerProtocol.CONFIG_ATTRS)


@pytest.mark.fence_open
@pytest_twisted.inlineCallbacks
def test_an_open_connection_has_the_parser_state_and_transport_internals_the_fast_path_reads(server):
    client = yield connect(server.url)
    (session,) = server.hub.clients.values()
    wire = session.connection
    # Autobahn's frame parser, between two messages
    assert (wire.data, wire.current_frame, wire.inside_message, wire.failedByMe) == (b"", None, False, False)
    assert len(wire.send_queue) == 0
    assert wire.utf8validator.validate(b"\xc3")[:2] == (True, False)  # valid so far, not complete
    wire.utf8validator.reset()
    assert wire.utf8validator.validate(b"ok")[:2] == (True, True)
    assert all(getattr(wire, name) is None for name in compat.HANDSHAKE_LEFTOVERS)  # it set them, they existed
    # Twisted's TCP transport: nothing queued, then a write that is queued until the next turn
    transport = wire.transport
    assert isinstance(transport, tcp.Connection) and compat.writes_at_once(transport)
    assert (transport._tempDataLen, len(transport.dataBuffer) - transport.offset) == (0, 0)
    assert (transport._writeDisconnected, transport._aborting) == (False, False)
    transport.write(b"")
    transport.write(b"\x89\x00")  # a ping frame, queued by Twisted
    assert transport._tempDataLen + len(transport.dataBuffer) - transport.offset == 2
    assert transport.socket.fileno() >= 0
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_with_the_fence_closed_connections_use_autobahns_own_receive_and_send(make_server, monkeypatch):
    monkeypatch.setattr(compat, "INTERNALS", False)
    server = yield make_server()
    assert not issubclass(server.factory.protocol, compat.FastPath)
    assert "maxMessagePayloadSize" not in vars(server.factory.protocol)  # Autobahn copies options per connection
    client = yield connect(server.url)
    (session,) = server.hub.clients.values()
    assert session.connection.http_headers  # nothing of the handshake trimmed
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_autobahn_closes_a_refused_upgrade_with_its_status_in_the_words_the_twisted_client_reads(server):
    """zbifrost.client.twisted does not retry an upgrade refused with 403: Autobahn's client gives the
    status only in the text of its 1006 close reason, which compat.refused_status reads."""
    with pytest.raises(ConnectionClosed) as caught:
        yield connect(server.url, origin="http://evil.example")  # not an allowed origin: 403
    assert caught.value.code == 1006
    assert compat.refused_status(caught.value.reason) == 403, caught.value.reason


TWISTD_OPTIONS = {"logger": None, "logfile": None, "syslog": 0, "prefix": "twisted", "nodaemon": 1}
EVENT = {"log_format": "Refused {origin}", "origin": "https://example.com", "log_level": LogLevel.warn,
         "log_namespace": "zbifrost.test", "log_time": 1_700_000_000.0}


@pytest.fixture
def sigusr1():
    """SIGUSR1's handler as it was, put back after the test (twistd's log file rotation sets one)."""
    before = signal.getsignal(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGUSR1, before)


@pytest.mark.parametrize("destination", ["stdout", "logfile -", "logfile", "syslog"])
def test_twistds_private_log_observer_writes_what_the_public_fallback_writes(
        destination, tmp_path, monkeypatch, capsys, sigusr1):
    from twisted.scripts._twistd_unix import UnixAppLogger

    assert callable(UnixAppLogger._getLogObserver)
    sent = []
    monkeypatch.setattr(SyslogObserver, "openlog", lambda self, *args: None)
    monkeypatch.setattr(SyslogObserver, "syslog", lambda self, priority, line: sent.append((priority, line)))
    written = []
    for internals in (True, False):
        monkeypatch.setattr(compat, "INTERNALS", internals)
        options = dict(TWISTD_OPTIONS, **{"stdout": {}, "logfile -": {"logfile": "-"}, "syslog": {"syslog": 1},
                                          "logfile": {"logfile": str(tmp_path / f"{internals}.log")}}[destination])
        observer = compat.twistd_log_observer(options)
        observer(dict(EVENT))
        if destination == "logfile":
            assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None)  # rotation on SIGUSR1
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
            written.append((tmp_path / f"{internals}.log").read_text())
        else:
            written.append(sent.pop() if destination == "syslog" else capsys.readouterr().out)
    assert "Refused https://example.com" in str(written[0]) and written[0] == written[1]


def test_with_the_fence_closed_twistds_log_observer_is_built_without_its_private_logger(monkeypatch, capsys):
    from twisted.scripts import _twistd_unix

    def private(self):
        raise AssertionError("twistd's private UnixAppLogger._getLogObserver was used")

    monkeypatch.setattr(_twistd_unix.UnixAppLogger, "_getLogObserver", private)
    monkeypatch.setattr(compat, "INTERNALS", False)
    application = Application("zbifrost")
    logs.escape_twistd_default(application, TWISTD_OPTIONS)
    ILogObserver(application)(dict(EVENT, origin="evil\n2030-01-01 forged line"))
    assert capsys.readouterr().out.endswith("Refused evil\\x0a2030-01-01 forged line\n")


def test_the_core_protocol_tests_pass_with_the_fence_closed():
    env = dict(os.environ, **{compat.SWITCH: "off"})
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *CORE_TESTS],
                         env=env, capture_output=True, text=True, timeout=600,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


def test_with_the_switch_off_a_server_says_so_in_one_line_at_start():
    code = ("import logging, sys; from twisted.logger import Logger, globalLogPublisher, formatEvent;"
            "from zbifrost import compat; lines = [];"
            "globalLogPublisher.addObserver(lambda e: lines.append(formatEvent(e)));"
            "compat.report(Logger()); print(compat.INTERNALS); print(lines)")
    run = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **{compat.SWITCH: "off"}),
                         capture_output=True, text=True, timeout=60)
    internals, lines = run.stdout.splitlines()
    assert internals == "False"
    assert "ZBIFROST_INTERNALS is off" in lines and lines.count("public API") == 1


def test_twisteds_connection_pool_builds_its_connections_with_the_factory_class_the_fence_quietens():
    from twisted.internet import reactor
    from twisted.web.client import HTTPConnectionPool

    pool = HTTPConnectionPool(reactor)
    assert issubclass(pool._factory, Factory)
    assert pool._factory.noisy is True  # what makes the two lines per connection
    compat.quiet_connection_pool(pool)
    assert pool._factory.noisy is (not compat.INTERNALS)
