"""`twistd -n zbifrost --workers N --broker URL` (zbifrost.workers): real twistd processes on a
real redis-server; connections spread over the workers, channels cross them, a dead worker
is replaced (but not one refused for its list of broker shards), SIGTERM stops them all
gracefully, /healthz counts every worker's clients."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from zbifrost.channels.sharded import SHARDS_KEY
from zbifrost.config import load_config
from zbifrost.workers import CONFIG_REFUSED, WorkersParent, state_file

from .test_core_twistd import REPO, TWISTD, free_port, one_line_error, run_twistd

pytestmark = pytest.mark.slow  # twistd --workers runs as a subprocess

MOST_CONNECTIONS = 40  # opened one by one until two workers have some (the kernel picks the worker)


def health(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        return json.loads(response.read())


def metric_samples(port):
    """/metrics as {sample name: [(labels, value), ...]}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def wait_for(condition, port, process, seconds=20, read=health):
    """The first `read(port)` (/healthz) for which `condition` holds (each worker writes its state
    twice a second, so the other workers' may lag that much)."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        with contextlib.suppress(OSError):
            last = read(port)
            if condition(last):
                return last
        time.sleep(0.1)
    raise AssertionError(f"/healthz never matched; last: {last}")


@pytest.fixture
def workers(redis_server, tmp_path):
    """A running `twistd -n zbifrost --workers 2` on a fresh port: (process, port); the output of
    the parent and its workers goes to tmp_path/twistd.log."""
    port = free_port()
    with open(tmp_path / "twistd.log", "w") as log:
        process = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "zbifrost", "--workers", "2", "--port", str(port),
                                    "--broker", redis_server.url], cwd=tmp_path,
                                   env=dict(os.environ, PYTHONPATH=REPO, TMPDIR=str(tmp_path)), stdout=log,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda state: len(state["workers"]) == 2 and state["broker"] == "up", port, process)
        yield process, port
    finally:
        if process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # whatever is left of the parent and its workers
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def clients():
    """Where open_client's connections go; they are closed when the test ends."""
    with contextlib.ExitStack() as stack:
        yield stack


def open_client(port, clients):
    ws = clients.enter_context(ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10))
    assert json.loads(ws.recv(timeout=10))["event"] == "connection_info"
    return ws


def ping(ws, request_id=1):
    ws.send(json.dumps({"zKey": "^Ping", "_requestId": request_id}))
    return json.loads(ws.recv(timeout=10))


def clients_per_worker(port, process, total):
    state = wait_for(lambda state: state["clients"] == total, port, process)
    return {worker["worker"]: worker["clients"] for worker in state["workers"]}


def clients_on_two_workers(port, process, clients):
    """Connections opened one at a time until two workers serve some: {worker: [ws, ...]}."""
    by_worker, before = {}, {}
    for opened in range(1, MOST_CONNECTIONS + 1):
        ws = open_client(port, clients)
        after = clients_per_worker(port, process, opened)
        (worker,) = [index for index, count in after.items() if count > before.get(index, 0)]
        by_worker.setdefault(worker, []).append(ws)
        before = after
        if len(by_worker) == 2:
            return by_worker
    raise AssertionError(f"{MOST_CONNECTIONS} connections all went to worker {list(by_worker)}")


def test_more_than_one_worker_without_a_broker_is_refused_with_one_line(tmp_path):
    result = run_twistd("--workers", "2", tmp_path=tmp_path)
    assert result.returncode == 1
    assert one_line_error(result).startswith("zbifrost: --workers 2 needs --broker redis://host:port/db")
    assert "Traceback" not in result.stdout + result.stderr


def test_a_worker_that_cannot_start_stops_the_parent_with_its_error_and_exit_1(tmp_path):
    result = run_twistd("--workers", "1", "--zblock", "Nope", tmp_path=tmp_path)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "zbifrost: zBlock: 'Nope' is not a block" in output
    assert "zbifrost: worker 0 could not start (exit status 1); stopping the other workers" in output
    assert "Traceback" not in output


def test_workers_refused_for_their_list_of_shards_are_not_restarted_and_the_parent_exits_78(redis_shards, tmp_path):
    one, two = redis_shards
    addresses = [f"redis://127.0.0.1:{redis.port}/0" for redis in (one, two)]
    recorded = json.dumps(addresses[::-1], separators=(",", ":"))  # another process's list: the other order
    for redis in redis_shards:
        assert redis.command("SET", SHARDS_KEY, recorded) == "+OK"
    result = run_twistd("--workers", "2", "--port", str(free_port()), "--broker", one.url, "--broker",
                        f"redis://:{two.password}@127.0.0.1:{two.port}/0", tmp_path=tmp_path, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == CONFIG_REFUSED == 78, output
    refusals = [line for line in output.splitlines() if "#critical] the broker shards" in line]
    assert 1 <= len(refusals) <= 2, output  # once per worker at most: none was started again
    assert "; restarting it in" not in output
    assert re.search(r"zbifrost: worker [01] was refused for its configuration \(exit status 78\); not restarting "
                     r"it, stopping the other workers$", output.rstrip("\n")), output
    assert "Traceback" not in output
    assert two.password not in output


def test_connections_reach_both_workers_all_get_answers_and_healthz_and_metrics_count_them_all(workers, clients):
    process, port = workers
    by_worker = clients_on_two_workers(port, process, clients)
    everyone = [ws for connections in by_worker.values() for ws in connections]
    for request_id, ws in enumerate(everyone):
        assert ping(ws, request_id) == {"result": {"message": "Pong!"}, "_requestId": request_id}
    # whichever worker answers, it counts every worker's clients (as of their last write)
    state = wait_for(lambda state: state["clients"] == len(everyone), port, process)
    assert {worker["worker"]: worker["clients"] for worker in state["workers"]} == \
        {index: len(connections) for index, connections in by_worker.items()}
    connections = {str(index): len(connections) for index, connections in by_worker.items()}
    metrics = wait_for(lambda samples: {labels["worker"]: value for labels, value in samples["zbifrost_connections"]}
                       == connections, port, process, read=metric_samples)
    assert sum(value for _, value in metrics["zbifrost_connections_accepted_total"]) == len(everyone)


def test_a_message_published_through_one_worker_reaches_a_subscriber_on_the_other(workers, clients):
    process, port = workers
    (subscriber, *_), (publisher, *_) = clients_on_two_workers(port, process, clients).values()
    subscriber.send(json.dumps({"event": "subscribe", "channel": "chat", "_requestId": 1}))
    assert json.loads(subscriber.recv(timeout=10))["result"]["subscribed"] is True
    publisher.send(json.dumps({"event": "publish", "channel": "chat", "data": {"text": "hi"}, "_requestId": 2}))
    assert "result" in json.loads(publisher.recv(timeout=10))
    message = json.loads(subscriber.recv(timeout=10))
    assert (message["event"], message["channel"], message["data"]) == ("message", "chat", {"text": "hi"})


def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(workers, clients):
    process, port = workers
    before = {worker["worker"]: worker["pid"] for worker in health(port)["workers"]}
    os.kill(before[0], signal.SIGKILL)
    after = wait_for(lambda state: len(state["workers"]) == 2 and state["workers"][0]["pid"] != before[0],
                     port, process)
    assert after["workers"][1]["pid"] == before[1]
    assert ping(open_client(port, clients))["result"] == {"message": "Pong!"}
    # the replaced worker is really gone
    with pytest.raises(ProcessLookupError):
        os.kill(before[0], 0)


def test_sighup_to_the_parent_reaches_every_worker(workers, tmp_path):
    process, port = workers
    log = tmp_path / "twistd.log"
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while log.read_text().count("SIGHUP: no --config file, nothing to reload") < 2:
        assert time.monotonic() < deadline, log.read_text()
        assert process.poll() is None, log.read_text()
        time.sleep(0.1)
    assert health(port)["status"] == "ok"


def test_sigterm_to_the_parent_shuts_every_worker_down_gracefully_and_the_parent_exits(workers, tmp_path, clients):
    process, port = workers
    by_worker = clients_on_two_workers(port, process, clients)
    pids = [worker["pid"] for worker in health(port)["workers"]]
    process.send_signal(signal.SIGTERM)
    for connections in by_worker.values():
        ws = connections[0]
        assert json.loads(ws.recv(timeout=10)) == {"event": "server_shutdown", "message": "Server is shutting down"}
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1001
    process.wait(timeout=30)
    output = (tmp_path / "twistd.log").read_text()
    assert process.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM), output
    assert "Traceback" not in output
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def running(pid):
    """Whether process `pid` still runs (an unreaped zombie does not)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return "zombie" not in status.read()
    except FileNotFoundError:
        return False


def test_workers_stop_by_themselves_when_the_parent_is_killed(workers, tmp_path):
    process, port = workers
    pids = [worker["pid"] for worker in health(port)["workers"]]
    process.kill()
    process.wait(timeout=10)
    deadline = time.monotonic() + 30
    for pid in pids:
        while running(pid):
            assert time.monotonic() < deadline, (tmp_path / "twistd.log").read_text()
            time.sleep(0.1)
    assert f"the parent (pid {process.pid}) is gone; stopping" in (tmp_path / "twistd.log").read_text()


class _SpawningClock(Clock):
    """A task.Clock whose spawnProcess only records the workers started."""

    def __init__(self):
        super().__init__()
        self.spawned = []

    def spawnProcess(self, worker, executable, args, env, path, childFDs):
        worker.makeConnection(_FakeProcess(len(self.spawned) + 1000))
        self.spawned.append(worker)
        return worker.transport


class _FakeProcess:
    def __init__(self, pid):
        self.pid = pid
        self.signals = []

    def signalProcess(self, number):
        self.signals.append(number)


def test_a_worker_that_keeps_dying_young_is_restarted_later_each_time_and_soon_again_once_it_lived(tmp_path):
    config = load_config(None, overrides={"port": free_port(), "broker": "redis://127.0.0.1:1/0"})
    clock = _SpawningClock()
    parent = WorkersParent(config, 1, [], reactor=clock)
    sighup = signal.getsignal(signal.SIGHUP)  # startService passes SIGHUP on: the handler goes back after
    parent.privilegedStartService()
    parent.startService()
    try:
        delays = []
        for lived in (1, 1, 1, 60):
            clock.advance(lived)
            open(state_file(parent.folder, 0), "w").close()  # it got up (wrote its state), then died
            clock.spawned[-1].processEnded(Failure(ProcessTerminated(exitCode=1)))
            (restart,) = clock.getDelayedCalls()
            delays.append(restart.getTime() - clock.seconds())
            clock.advance(delays[-1])
        assert delays == [0.5, 1.0, 2.0, 0.5]
        assert len(clock.spawned) == 5
    finally:
        signal.signal(signal.SIGHUP, sighup)
        parent.running = False
        parent.listening.close()
        shutil.rmtree(parent.folder)
