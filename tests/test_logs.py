"""twistd --logger=zbifrost.logs.json / .text on a real server: every JSON line parses and
carries level, namespace, message and the event's fields; no token is ever written; on the
systemd journal (JOURNAL_STREAM naming stdout) no line carries a timestamp of its own; in every
format, twistd's own included, a client's text is escaped and cut (docs/protocol.md section 7a)."""

import base64
import json
import os
import re
import subprocess

import pytest
from twisted.application.service import Application
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from twisted.python import log as legacy_log
from twisted.python import syslog
from websockets.sync.client import connect as ws_connect

from tests.helpers import ENGINE, http_get
from tests.test_core_twistd import REPO, TWISTD, free_port, stop_process, wait_until_listening
from zbifrost import compat
from zbifrost import logs as zbifrost_logs

CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # every control character but the newline

pytestmark = pytest.mark.slow  # twistd runs as a subprocess


def run_server(tmp_path, logger, journal=False, args=(), internals=True):
    """Start twistd with `--logger=logger` (None: twistd's own) and its output going to a file (the
    journal's stand-in when `journal`), with the fence (zbifrost.compat) closed unless `internals`;
    returns (process, port, path of that file) once it listens."""
    log_path = tmp_path / "out.log"
    stdout = open(log_path, "w")  # noqa: SIM115 - the process's stdout; closed here once handed over
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("WEBSOCKET_", "JOURNAL_"))}
    if journal:
        status = os.fstat(stdout.fileno())
        environment["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"
    if not internals:
        environment[compat.SWITCH] = "off"
    port = free_port()
    chosen = [f"--logger={logger}"] if logger else []
    process = subprocess.Popen([*TWISTD, "-n", "--pidfile=", *chosen, "zbifrost", "--port", str(port), *args],
                               cwd=tmp_path, env=dict(environment, PYTHONPATH=REPO), stdout=stdout,
                               stderr=subprocess.STDOUT, text=True)
    stdout.close()
    wait_until_listening(port, process)
    return process, port, log_path


def stop(process, log_path):
    stop_process(process)
    return log_path.read_text()


def test_json_logs_parse_line_by_line_with_the_event_fields_and_never_a_token(tmp_path):
    tokens = tmp_path / "tokens.yaml"
    subprocess.run([os.path.join(os.path.dirname(TWISTD[0]), "python"), "-m", "zbifrost.tokens", "add", "alice",
                    "--file", str(tokens)], check=True, capture_output=True, cwd=REPO, timeout=60)
    process, port, log_path = run_server(tmp_path, "zbifrost.logs.json", args=[
        "--workspace", ENGINE, "--zvafile", "@.zUI.main", "--require-auth", "--tokens", str(tokens)])
    try:
        try:
            with ws_connect(f"ws://127.0.0.1:{port}/ws?token=not-a-token-SECRET123", open_timeout=10):
                pass
        except Exception:
            pass
    finally:
        output = stop(process, log_path)
    records = [json.loads(line) for line in output.splitlines()]  # every line parses
    assert records and all({"time", "level", "namespace", "message"} <= set(record) for record in records)
    assert any(record["namespace"] == "zbifrost.service" and record["message"].startswith("zbifrost listening on")
               and record["zvafile"] == "@.zUI.main" for record in records)
    refusals = [record for record in records if record["level"] == "warn"]
    assert refusals, output
    assert "SECRET123" not in output


def test_json_logs_carry_client_id_error_id_and_the_traceback_of_a_failed_command(tmp_path):
    process, port, log_path = run_server(tmp_path, "zbifrost.logs.json",
                                         args=["--workspace", ENGINE, "--zvafile", "@.zUI.main"])
    try:
        with ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            ws.recv(timeout=10)
            ws.send(json.dumps({"zKey": "Boom", "_requestId": 1}))
            assert json.loads(ws.recv(timeout=10))["code"] == "command_failed"
    finally:
        output = stop(process, log_path)
    failed = [json.loads(line) for line in output.splitlines() if "Command failed" in line]
    assert len(failed) == 1 and failed[0]["level"] == "error"
    assert failed[0]["error_id"] in failed[0]["message"] and failed[0]["client_id"]
    assert "ValueError: the plugin blew up on purpose" in failed[0]["traceback"]


def test_on_the_journal_json_and_text_lines_carry_no_timestamp(tmp_path):
    process, _, log_path = run_server(tmp_path, "zbifrost.logs.json", journal=True)
    records = [json.loads(line) for line in stop(process, log_path).splitlines()]
    assert records and not any("time" in record for record in records)
    process, port, log_path = run_server(tmp_path, "zbifrost.logs.text", journal=True)
    assert http_get(port, "/healthz")[0] == 200
    lines = stop(process, log_path).splitlines()
    assert any('"GET /healthz HTTP/1.1" 200' in line for line in lines), lines
    assert not any(re.search(r"\[\d\d/\w{3}/\d{4}:", line) for line in lines), lines
    assert lines and all(line.startswith("[") for line in lines), lines
    assert not any(re.match(r"\d{4}-\d\d-\d\d", line) for line in lines)


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("logger, journal, internals", [
    ("zbifrost.logs.text", False, True), ("zbifrost.logs.json", False, True), ("zbifrost.logs.text", True, True),
    ("zbifrost.logs.json", True, True), (None, False, True), (None, False, False)])
def test_a_clients_control_characters_and_long_text_never_reach_a_log_line_as_written(tmp_path, logger, journal,
                                                                                       internals):
    config = tmp_path / "zbifrost.yaml"
    config.write_text("websocket:\n  require_auth: true\n  jwt:\n    secret: " + "s" * 64 + "\n")
    # PyJWT's refusal names the unsupported `crit` extension as the client wrote it
    forged = "\x1b[2J\x1b[31m\r\n2030-01-01T00:00:00+0000 [-] forged line\n\x00\x7f\x9b" + "x" * 6000
    token = f"{_b64(json.dumps({'alg': 'HS256', 'crit': [forged]}).encode())}.{_b64(b'{}')}.{_b64(b'x' * 32)}"
    process, port, log_path = run_server(tmp_path, logger, journal, args=["--config", str(config)],
                                         internals=internals)
    try:
        try:
            with ws_connect(f"ws://127.0.0.1:{port}/ws", additional_headers={"Authorization": f"Bearer {token}"},
                            open_timeout=10) as ws:
                ws.recv(timeout=10)  # the close for the invalid token
        except Exception:
            pass
        assert http_get(port, "/" + "p" * 5000)[0] == 404  # a path past the cut, in the access log
    finally:
        output = stop(process, log_path)
    lines = output.split("\n")
    assert not CONTROL.search(output), output
    assert max(len(line) for line in lines) < 1000, output
    texts = [json.loads(line)["message"] for line in lines if line] if "json" in (logger or "") else lines
    refusal = [text for text in texts if "Refused a connection" in text]
    assert len(refusal) == 1 and "critical extension: \\x1b[2J\\x1b[31m\\x0d\\x0a2030" in refusal[0], output
    assert not any(text.startswith("2030") or ("forged line" in text and text is not refusal[0]) for text in texts)
    assert any("p" * 150 in text and "...[cut: 5001 characters]" in text for text in texts), output


TWISTD_OPTIONS = {"logger": None, "logfile": None, "syslog": 0, "prefix": "twisted", "nodaemon": 1}


def test_under_twistd_with_syslog_every_line_reaches_syslog_escaped(monkeypatch):
    sent = []
    monkeypatch.setattr(syslog.SyslogObserver, "openlog", lambda self, *args: None)
    monkeypatch.setattr(syslog.SyslogObserver, "syslog", lambda self, priority, line: sent.append(line))
    application = Application("zbifrost")
    zbifrost_logs.escape_twistd_default(application, dict(TWISTD_OPTIONS, syslog=1, prefix="zbifrost"))
    Logger(observer=ILogObserver(application)).warn("Refused {origin}", origin="evil\n2030-01-01 forged line")
    assert sent == ["[-] Refused evil\\x0a2030-01-01 forged line"]


FORGED_MESSAGE = "bad \x1b[2J\n2030-01-01T00:00:00+0000 [-] forged line" + "x" * 600


def _failure_logged(observer, legacy=False):
    """Log a ValueError carrying FORGED_MESSAGE to `observer`: with twisted.logger's failure(), or
    with twisted.python.log.err (`legacy`), whose events reach observers through the global publisher."""
    try:
        raise ValueError(FORGED_MESSAGE)
    except ValueError:
        if not legacy:
            Logger(observer=observer).failure("Command failed (client {client_id})", client_id="c1")
            return
        globalLogPublisher.addObserver(observer)
        try:
            legacy_log.err(None, "A legacy error")
        finally:
            globalLogPublisher.removeObserver(observer)


@pytest.mark.parametrize("legacy", [False, True])
def test_a_failures_exception_message_is_escaped_and_its_traceback_keeps_one_frame_a_line(capsys, legacy):
    _failure_logged(zbifrost_logs.text(), legacy)
    lines = capsys.readouterr().out.splitlines()
    assert not CONTROL.search("".join(lines)) and max(map(len, lines)) < 1000, lines
    assert not any("forged line" in line and not line.startswith("builtins.ValueError") for line in lines), lines
    assert "Traceback (most recent call last):" in lines and any(line.startswith('  File "') for line in lines)
    said = [line for line in lines if line.startswith("builtins.ValueError: ")]
    assert len(said) == 1 and said[0].startswith("builtins.ValueError: bad \\x1b[2J\\x0a2030-01-01T00:00:00+0000 [-]")


@pytest.mark.parametrize("legacy", [False, True])
def test_a_json_traceback_keeps_its_lines_with_the_exception_message_escaped(capsys, legacy):
    _failure_logged(zbifrost_logs.json(), legacy)
    output = capsys.readouterr().out
    record = json.loads(output)  # one line, one object
    assert record["message"] == ("A legacy error" if legacy else "Command failed (client c1)")
    traceback = record["traceback"].splitlines()
    assert traceback[0] == "Traceback (most recent call last):" and len(traceback) > 2
    assert traceback[-1].startswith("builtins.ValueError: bad \\x1b[2J\\x0a2030") and len(traceback[-1]) < 300
