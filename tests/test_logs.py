"""twistd --logger=zbifrost.logs.json / .text on a real server: every JSON line parses and
carries level, namespace, message and the event's fields; no token is ever written; on the
systemd journal (JOURNAL_STREAM naming stdout) no line carries a timestamp of its own."""

import json
import os
import re
import subprocess

import pytest
from websockets.sync.client import connect as ws_connect

from tests.helpers import ENGINE, http_get
from tests.test_core_twistd import REPO, TWISTD, free_port, stop_process, wait_until_listening

pytestmark = pytest.mark.slow  # twistd runs as a subprocess


def run_server(tmp_path, logger, journal=False, args=()):
    """Start twistd with `--logger=logger` and its output going to a file (the journal's stand-in
    when `journal`); returns (process, port, path of that file) once it listens."""
    log_path = tmp_path / "out.log"
    stdout = open(log_path, "w")  # the process's stdout; closed here once handed over
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("WEBSOCKET_", "JOURNAL_"))}
    if journal:
        status = os.fstat(stdout.fileno())
        environment["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"
    port = free_port()
    process = subprocess.Popen([*TWISTD, "-n", "--pidfile=", f"--logger={logger}", "zbifrost", "--port", str(port),
                                *args], cwd=tmp_path, env=dict(environment, PYTHONPATH=REPO), stdout=stdout,
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
