"""The real command line: `twistd -n zbifrost` start-up errors, a port in use, SIGTERM, and the
plugin after `pip install .` in a fresh virtualenv. Each test runs twistd as a subprocess."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

pytestmark = pytest.mark.slow  # twistd runs as a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = [os.path.join(os.path.dirname(sys.executable), "twistd")]


def run_twistd(*args, tmp_path, env=None, timeout=60):
    """Run `twistd -n zbifrost ARGS` from the source tree to completion."""
    environment = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    for name in ("WEBSOCKET_HOST", "WEBSOCKET_PORT", "WEBSOCKET_REQUIRE_AUTH", "WEBSOCKET_ALLOWED_ORIGINS"):
        if not env or name not in env:
            environment.pop(name, None)
    return subprocess.run([*TWISTD, "-n", "--pidfile=", "zbifrost", *args], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_line_error(result):
    """The `zbifrost: ...` line of a failed start-up (stderr, or twistd's log on stdout)."""
    lines = [line for line in (result.stderr + result.stdout).splitlines() if "zbifrost: " in line]
    assert len(lines) == 1, result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["--port", "0"], "--port: must be between 1 and 65535, got 0"),
    (["--port", "70000"], "--port: must be between 1 and 65535, got 70000"),
    (["--workspace", "/no/such/folder"], "--workspace: /no/such/folder is not a directory"),
    (["--zvafile", "@.zUI.missing"], "zVaFile: zPath '@.zUI.missing': no zUI.missing.yaml"),
    (["--zvafile", "@.zUI.level1", "--zblock", "Nope"], "zBlock: 'Nope' is not a block of @.zUI.level1"),
    (["--require-auth"], "--require-auth: needs a tokens file"),
    (["--listen", "garbage:1"], "--listen: 'garbage:1' is not an endpoint description"),
    (["--listen", "tcp:notaport"], "--listen: 'tcp:notaport' is not an endpoint description"),
    (["--trusted-proxy", "proxy.example"], "--trusted-proxy: 'proxy.example' is not an IP address or network"),
    (["--metrics-listen", "garbage:1"], "--metrics-listen: 'garbage:1' is not an endpoint description"),
    (["--broker", "http://127.0.0.1:6379"], "--broker: not a broker URL (expected redis://host:port/db"),
    (["--broker", "redis://127.0.0.1:6379/first"], "(the database must be a number, got 'first')"),
])
def test_a_bad_setting_stops_start_up_with_one_clear_line(tmp_path, args, expected):
    result = run_twistd(*args, tmp_path=tmp_path)
    assert result.returncode != 0
    assert expected in one_line_error(result)


def test_a_bad_config_file_names_the_file_and_the_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("websocket:\n  port: 18774\n  host: [unclosed\n")
    result = run_twistd("--config", str(config), tmp_path=tmp_path)
    assert result.returncode != 0
    line = one_line_error(result)
    assert str(config) in line and "line" in line and "invalid YAML" in line


def test_a_broken_zui_file_names_the_file_and_the_line(tmp_path):
    (tmp_path / "zUI.broken.yaml").write_text("Menu:\n  Ping: Pong\n  Bad: {zNope: 1}\n")
    result = run_twistd("--workspace", str(tmp_path), "--zvafile", "@.zUI.broken", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "zUI file zUI.broken.yaml, line 3:" in one_line_error(result)


def test_a_misspelt_section_stops_start_up_suggesting_the_right_one(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("Websocket:\n  require_auth: true\n")
    result = run_twistd("--config", str(config), tmp_path=tmp_path)
    assert result.returncode != 0
    assert one_line_error(result).endswith(
        f"zbifrost: config file {config}: unknown key 'Websocket' (did you mean 'websocket'?)")


def test_a_workspace_without_the_default_zui_file_names_its_path_and_lists_its_zui_files(tmp_path):
    workspace = tmp_path / "myapp"
    workspace.mkdir()
    for name in ("main", "admin"):
        (workspace / f"zUI.{name}.yaml").write_text("Menu:\n  Ping: Pong\n")
    result = run_twistd("--workspace", "myapp", tmp_path=tmp_path)
    assert result.returncode != 0
    line = one_line_error(result)
    assert f"no zUI.level1.yaml (or .yml/.json) in {workspace.resolve()}" in line
    assert "zUI files there: zUI.admin.yaml, zUI.main.yaml" in line and "<workspace>" not in line


def test_a_workspace_with_one_zui_file_serves_it_by_default(tmp_path):
    (tmp_path / "zUI.main.yaml").write_text("Menu:\n  Ping: Pong\n")
    result = run_twistd("--workspace", str(tmp_path), "--zblock", "Nope", tmp_path=tmp_path)
    assert "zBlock: 'Nope' is not a block of @.zUI.main (it has Menu)" in one_line_error(result)


def test_environment_overrides_the_config_file_and_flags_override_both(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("websocket:\n  port: 1\n")
    result = run_twistd("--config", str(config), tmp_path=tmp_path, env={"WEBSOCKET_PORT": "0"})
    assert "environment WEBSOCKET_PORT: must be between 1 and 65535, got 0" in one_line_error(result)
    result = run_twistd("--config", str(config), "--port", "99999", tmp_path=tmp_path, env={"WEBSOCKET_PORT": "0"})
    assert "--port: must be between 1 and 65535, got 99999" in one_line_error(result)


def test_a_port_in_use_stops_start_up_naming_the_port(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_twistd("--port", str(port), tmp_path=tmp_path)
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(result)


def test_a_daemon_with_its_port_in_use_exits_at_once_with_the_error_and_no_pidfile(tmp_path):
    pidfile, logfile = tmp_path / "twistd.pid", tmp_path / "twistd.log"
    environment = dict(os.environ, PYTHONPATH=REPO)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        try:
            result = subprocess.run([*TWISTD, f"--pidfile={pidfile}", f"--logfile={logfile}", "zbifrost",
                                     "--port", str(port)], cwd=tmp_path, env=environment, capture_output=True,
                                    text=True, timeout=30)
        finally:
            if pidfile.exists():  # a daemon left behind: end it
                with contextlib.suppress(ValueError, ProcessLookupError):
                    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert result.returncode != 0
    assert f"zbifrost: cannot listen on 127.0.0.1:{port}: " in result.stderr
    assert "Traceback" not in result.stderr + logfile.read_text()
    assert f"zbifrost: cannot listen on 127.0.0.1:{port}: " in logfile.read_text()
    assert not pidfile.exists()


def wait_until_listening(port, process, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"twistd did not listen on {port}")


def test_sigterm_tells_clients_closes_them_with_1001_and_exits(tmp_path):
    port = free_port()
    environment = dict(os.environ, PYTHONPATH=REPO)
    process = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "zbifrost", "--port", str(port)], cwd=tmp_path,
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_listening(port, process)
        with ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            json.loads(ws.recv(timeout=10))
            ws.send(json.dumps({"zKey": "^Ping", "_requestId": 1}))
            assert json.loads(ws.recv(timeout=10))["result"] == {"message": "Pong!"}
            process.send_signal(signal.SIGTERM)
            assert json.loads(ws.recv(timeout=10)) == {"event": "server_shutdown", "message": "Server is shutting down"}
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "Server shutdown")
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM), output
    assert "Traceback" not in output
    assert not (tmp_path / "twistd.pid").exists()


def test_autobahn_nvx_acceleration_is_on():
    import autobahn.websocket

    assert autobahn.websocket.USES_NVX is True


def ping_over_websocket(port):
    with ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
        json.loads(ws.recv(timeout=10))
        ws.send(json.dumps({"zKey": "^Ping", "_requestId": 1}))
        return json.loads(ws.recv(timeout=10))["result"]


def stop_process(process, signalled=False):
    """SIGTERM (unless `signalled` already), wait for the exit (killing the process if it does
    not come) and return what it wrote to its pipe ("" when its output went to a file); a
    traceback in it fails the test."""
    try:
        if not signalled:
            process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    output = output or ""
    assert "Traceback" not in output, output
    return output


def serve_and_ping(command, cwd, env, port=None):
    """Start `command` as a process (with `--port P` added unless it listens on `port` itself),
    answer ^Ping over it, stop it with SIGTERM; returns its output."""
    if port is None:
        port = free_port()
        command = [*command, "--port", str(port)]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        wait_until_listening(port, process)
        assert ping_over_websocket(port) == {"message": "Pong!"}
    finally:
        output = stop_process(process)
    return output


def test_twistd_zbifrost_version_names_zbifrost_and_twisted(tmp_path):
    import twisted
    from zbifrost import __version__

    result = subprocess.run([*TWISTD, "zbifrost", "--version"], cwd=tmp_path, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"zbifrost {__version__} (Twisted {twisted.__version__})"


def test_python_m_zbifrost_runs_the_twistd_server_in_the_foreground_without_a_pidfile(tmp_path):
    output = serve_and_ping([sys.executable, "-m", "zbifrost"], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=REPO))
    assert "zbifrost listening on tcp:" in output
    assert not (tmp_path / "twistd.pid").exists()


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """One virtualenv for the install tests (each installs the checkout its own way into it)."""
    if os.environ.get("ZBIFROST_SKIP_INSTALL_TEST") == "1":
        pytest.skip("ZBIFROST_SKIP_INSTALL_TEST=1")
    venv = tmp_path_factory.mktemp("install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    return venv


def pip_install(venv, *args, cwd):
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *args], check=True, timeout=600, cwd=cwd)


CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


# what a checkout holds but a clean clone does not: a stale build/ left by an earlier `pip install .`
# would hand pip modules that setup.py no longer lists, and hide a package it leaves out
NOT_IN_A_CLEAN_CLONE = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "node_modules",
                                              "__pycache__", "_trial_temp", ".*_cache", "artifacts")


def test_pip_install_puts_the_plugin_where_twistd_finds_it(fresh_venv, tmp_path):
    venv = fresh_venv
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=NOT_IN_A_CLEAN_CLONE)
    pip_install(venv, str(source), cwd=tmp_path)
    listed = subprocess.run([str(venv / "bin" / "twistd"), "--help"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path, env=CLEAN_ENV)
    assert listed.returncode == 0
    assert any(line.split()[:1] == ["zbifrost"] for line in listed.stdout.splitlines()), listed.stdout
    demo = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "from zbifrost.config import BUNDLED_WORKSPACE as w; import os, zbifrost; "
                           "print(os.path.isfile(os.path.join(w, 'zUI.level1.yaml')), "
                           "os.path.isfile(os.path.join(os.path.dirname(zbifrost.__file__), 'py.typed')))"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=CLEAN_ENV)
    assert demo.stdout.split() == ["True", "True"]
    serve_and_ping([str(venv / "bin" / "twistd"), "-n", "--pidfile=", "zbifrost"], cwd=tmp_path, env=CLEAN_ENV)


def test_an_editable_install_serves_with_twistd_zbifrost(fresh_venv, tmp_path):
    venv = fresh_venv
    pip_install(venv, "-e", REPO, cwd=tmp_path)
    serve_and_ping([str(venv / "bin" / "twistd"), "-n", "--pidfile=", "zbifrost"], cwd=tmp_path, env=CLEAN_ENV)


@pytest.mark.parametrize("runner, passed", [
    (["-m", "twisted.trial", "tests.test_testing_helpers_trial"], "PASSED (successes=4)"),
    (["-m", "pytest", "-p", "no:twisted", "-p", "no:cacheprovider", "-q", "--noconftest",
      "tests/test_testing_helpers_trial.py"], "4 passed"),
])
def test_the_trial_test_module_passes_under_trial_and_plain_pytest(runner, passed):
    result = subprocess.run([sys.executable, *runner], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert passed in result.stdout


def test_the_public_api_is_typed_and_marked_so():
    import inspect
    import typing

    from zbifrost import context, testing

    public = [testing.start_server, testing.connect, testing.RunningServer.stop,
              *(member for name, member in inspect.getmembers(testing.BifrostTestClient, inspect.isfunction)
                if not name.startswith("_")),
              *(member for name, member in inspect.getmembers(context.RequestContext, inspect.isfunction)
                if not name.startswith("_"))]
    for function in public:
        hints = typing.get_type_hints(function)
        parameters = [name for name in inspect.signature(function).parameters if name != "self"]
        assert "return" in hints and all(name in hints for name in parameters), function.__qualname__
    assert typing.get_type_hints(context.RequestContext)["user"] is str
    assert os.path.isfile(os.path.join(REPO, "zbifrost", "py.typed"))
