"""The thread pool (docs/protocol.md section 7): the fair pool of thread-run plugin functions, written-off
threads, and a SIGTERM that ends the process although a plugin thread never returns."""

import json
import os
import signal
import subprocess

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from websockets.sync.client import connect as ws_connect

from tests.test_core_in_flight import wait_until
from tests.test_core_twistd import REPO, TWISTD, free_port, wait_until_listening
from zbifrost.config import ConfigError, load_config
from zbifrost.testing import connect

THREADS_WORKSPACE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workspaces", "threads")


def start_threads(make_server, **settings):
    return make_server(workspace=THREADS_WORKSPACE, zvafile="@.zUI.main", **settings)


def plugin_module(server):
    """tests/workspaces/threads/plugins/work.py as this server imported it (fresh per server)."""
    return server.hub.workspace.file("@.zUI.main").blocks["root"].find("Quick").action.module.module


def jobs_of(work, client):
    return [name for client_id, name in work.RAN if client_id == client.info["client_id"]]


@pytest.fixture
def logged():
    """Every twisted.logger event emitted during the test."""
    events = []
    observer = events.append
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def test_thread_settings_default_to_10_2_and_4_x_threads_and_come_from_the_websocket_section(tmp_path):
    config = load_config(environ={})
    assert (config.threads, config.threads_per_client, config.threads_max) == (10, 2, 40)
    path = tmp_path / "zbifrost.yaml"
    path.write_text("websocket:\n  threads: 3\n  threads_per_client: 1\n")
    config = load_config(str(path), environ={})
    assert (config.threads, config.threads_per_client, config.threads_max) == (3, 1, 12)


@pytest.mark.parametrize("settings, message", [
    ({"threads": 0}, "--threads: must be greater than zero, got 0"),
    ({"threads_per_client": -1}, "--threads-per-client: must be greater than zero, got -1"),
    ({"threads": 8, "threads_max": 4}, "--threads-max: must be at least threads (8), got 4"),
    ({"threads": "many"}, "--threads: expected an integer, got 'many'"),
])
def test_bad_thread_settings_stop_start_up_with_one_line(settings, message):
    with pytest.raises(ConfigError) as caught:
        load_config(environ={}, overrides=settings)
    assert str(caught.value) == message


@pytest_twisted.inlineCallbacks
def test_a_fresh_clients_thread_command_answers_while_another_client_has_16_hanging_commands(make_server):
    server = yield start_threads(make_server)  # the defaults: 10 threads, 2 per client
    work = plugin_module(server)
    hog = yield connect(server.url)
    try:
        hanging = [hog.dispatch("Hang") for _ in range(16)]
        yield hog.request("ping")  # frames are handled in order: all 16 are running or queued
        fresh = yield connect(server.url)
        assert (yield fresh.dispatch("Quick")) == "quick"
    finally:
        work.RELEASE.set()
    assert (yield defer.gatherResults(hanging)) == ["released"] * 16
    yield hog.close()
    yield fresh.close()


@pytest_twisted.inlineCallbacks
def test_one_client_never_holds_more_than_threads_per_client_threads(make_server):
    server = yield start_threads(make_server, threads=4, threads_per_client=2)
    work = plugin_module(server)
    greedy = yield connect(server.url)
    other = yield connect(server.url)
    try:
        hanging = [greedy.dispatch("Hang") for _ in range(6)]
        yield from wait_until(lambda: len(jobs_of(work, greedy)) >= 2, server.hub.reactor)
        assert (yield other.dispatch("Quick")) == "quick"  # threads were free...
        assert jobs_of(work, greedy) == ["hang", "hang"]  # ...yet the greedy client's other jobs wait
    finally:
        work.RELEASE.set()
    assert (yield defer.gatherResults(hanging)) == ["released"] * 6
    assert work.PEAK[greedy.info["client_id"]] == 2
    yield greedy.close()
    yield other.close()


@pytest_twisted.inlineCallbacks
def test_a_job_queued_longer_than_its_timeout_gets_timeout_and_never_runs(make_server):
    server = yield start_threads(make_server, threads=1)
    work = plugin_module(server)
    holder = yield connect(server.url)
    waiter = yield connect(server.url)
    try:
        held = holder.dispatch("Hang")
        yield holder.request("ping")
        assert (yield waiter.request_frame("dispatch", zKey="Record Briefly"))["code"] == "timeout"
    finally:
        work.RELEASE.set()
    assert (yield held) == "released"
    # one thread, each client's jobs in order: a Record still queued would run before this Quick
    assert (yield waiter.dispatch("Quick")) == "quick"
    assert [name for _, name in work.RAN] == ["hang", "quick"]
    yield holder.close()
    yield waiter.close()


@pytest_twisted.inlineCallbacks
def test_the_queued_jobs_of_a_client_that_disconnects_never_run(make_server):
    server = yield start_threads(make_server, threads=1)
    work = plugin_module(server)
    holder = yield connect(server.url)
    leaver = yield connect(server.url)
    try:
        held = holder.dispatch("Hang")
        yield holder.request("ping")
        for request_id in range(3):
            leaver.send({"event": "dispatch", "zKey": "Record", "_requestId": request_id})
        yield leaver.request("ping")
        yield leaver.close()
        yield from wait_until(lambda: len(server.hub.clients) == 1, server.hub.reactor)
        assert len(server.hub.clients) == 1
    finally:
        work.RELEASE.set()
    assert (yield held) == "released"
    assert (yield holder.dispatch("Quick")) == "quick"  # the one thread is free again, and ran no Record
    assert [name for _, name in work.RAN] == ["hang", "quick"]
    yield holder.close()


@pytest.mark.slow  # about 2 s
@pytest_twisted.inlineCallbacks
def test_written_off_threads_are_replaced_until_threads_max_then_the_log_says_so_at_error(make_server, logged):
    server = yield start_threads(make_server, threads=1, threads_max=2, threads_per_client=1)
    work = plugin_module(server)
    pool = server.hub.thread_pool
    first, second, third = yield defer.gatherResults([connect(server.url) for _ in range(3)])
    try:
        assert (yield first.request_frame("dispatch", zKey="Hang Briefly"))["code"] == "timeout"
        # the written-off thread still fills the first client's share of one...
        assert (yield first.request_frame("dispatch", zKey="Record Briefly"))["code"] == "timeout"
        # ...while its replacement serves the others
        assert (yield second.dispatch("Quick")) == "quick"
        assert (yield second.request_frame("dispatch", zKey="Hang Briefly"))["code"] == "timeout"
        # two threads alive, both written off: threads_max allows no replacement
        assert (yield third.request_frame("dispatch", zKey="Record Briefly"))["code"] == "timeout"
        assert (pool.alive, pool.working) == (2, 0)
    finally:
        work.RELEASE.set()
    assert (yield third.dispatch("Quick")) == "quick"  # a thread that returns works again
    yield from wait_until(lambda: pool.alive == 1, server.hub.reactor)
    assert (pool.alive, pool.working) == (1, 1)  # the other one left the pool
    assert [name for _, name in work.RAN] == ["hang", "quick", "hang", "quick"]
    warnings = [formatEvent(event) for event in logged if event.get("log_level") == LogLevel.warn
                and "written off" in formatEvent(event)]
    assert len(warnings) == 2 and all("'Hang Briefly' (plugin function hang" in line for line in warnings)
    errors = [formatEvent(event) for event in logged if event.get("log_level") == LogLevel.error]
    assert len(errors) == 1 and "No replacement" in errors[0] and "'Hang Briefly'" in errors[0]
    for client in (first, second, third):
        yield client.close()


@pytest.mark.slow  # twistd runs as a subprocess
def test_sigterm_ends_the_process_although_a_plugin_thread_never_returns(tmp_path):
    port = free_port()
    config = tmp_path / "zbifrost.yaml"
    config.write_text(f"zWorkspace: {THREADS_WORKSPACE}\nzVaFile: '@.zUI.main'\n"
                      f"websocket:\n  port: {port}\n  shutdown_grace: 1\n")
    process = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "zbifrost", "--config", str(config)], cwd=tmp_path,
                               env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_listening(port, process)
        with ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            json.loads(ws.recv(timeout=10))
            ws.send(json.dumps({"event": "dispatch", "zKey": "Stuck", "_requestId": 1}))
            ws.send(json.dumps({"event": "ping", "_requestId": 2}))
            assert json.loads(ws.recv(timeout=10))["_requestId"] == 2  # the Stuck job went to a thread
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM), output
    assert "Traceback" not in output
