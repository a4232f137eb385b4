"""Channel fan-out: one publisher, many subscribers, zbifrost's channels against a plain
Autobahn broadcast, in one run.

    python bench/fanout.py [--subscribers 1000] [--rates 100,1000] [--duration 10] [--warmup 2] [--rounds 1]
    python bench/fanout.py --rates 10 --join-leave 10 [--broker redis://127.0.0.1:6379/0]
    python bench/fanout.py --throughput [--broker URL --broker URL] [--publishers 32] [--channels 1000]
    python bench/fanout.py --throughput --redis-cpu 0.1
    python bench/fanout.py --sentinel [--rates 100]

Starts bench/broadcast_server.py (one prepared frame written to every socket) and zbifrost
(twistd, this source tree, bench/zbifrost-bench.yaml, the embedded memory backend) pinned to
CPU 0, then for each rate runs this script's generator (`--generate`) pinned to CPU 1 against
each server in turn. The generator opens N subscriber connections and one publisher in one
asyncio process, subscribes them all to one channel, and then publishes at a fixed rate
(open loop: it never waits for replies), each message carrying its send time. It prints the
messages delivered per second, the share of the expected deliveries (publishes in the
measured window x subscribers) that arrived, and the publish-to-receive latency p50/p99.

With `--join-leave N` the channel's rule turns presence and join/leave on, and the generator
also opens N connections a second that subscribe to the channel (a `join` to every subscriber)
and drop 1 s later (a `leave`); only zbifrost runs then (the broadcast server has no join/leave),
on the memory backend or, with `--broker`, on that Redis.

With `--sentinel` only zbifrost runs, twice, on one redis-server of its own: through a
redis-sentinel of its own that monitors it (`redis+sentinel://`, the server named `sentinel`)
and directly (`redis://`, `direct`), taking turns at each rate in the same run. Both processes
run throughout, so each receives the other's publications from Redis (neither has subscribers
then): the same extra work for both.

With `--throughput` it measures the publications/s the brokers carry instead, against the first
broker alone and then against every broker given (shards; without `--broker`, two
redis-servers of its own, each pinned to its own CPU with taskset). Two zbifrost processes
share the brokers; the generator (this script with `--flood`) opens `--publishers` connections
spread over both, each keeping IN_FLIGHT publishes outstanding (closed loop), over `--channels`
channels in turn so that they spread over the shards, and counts the replies. Nothing but the
redis-servers is pinned. With `--redis-cpu SHARE` (its own redis-servers only; root, cgroup v1)
each of them also gets a CPU budget of its own, SHARE of a core, through a cgroup-v1 CPU quota
(/sys/fs/cgroup/cpu/zb-redis-<i>: cpu.cfs_quota_us = SHARE x cpu.cfs_period_us), so that Redis,
not zbifrost or the generator, is the limit on a machine with few cores: it stands in for "each
redis-server on a core of its own, the publishing side on more cores than Redis has". The groups
are removed at exit. Each redis-server's CPU comes from /proc/<pid>/stat (utime + stime)
before and after, its pid from `INFO server`, so the brokers must run on this machine.

To keep the generator from being the bottleneck, only every SAMPLE_EVERY-th subscriber parses
its frames as they come (timing each message and checking which publishes arrived). The
others, once subscribed, leave asyncio: every COUNT_EVERY_S one epoll pass reads whatever
their sockets hold and counts the `message` events in the raw bytes (C-speed `bytes.count`).
Read one by one, 100,000 messages a second cost a Python reader more than a core; read in
batches, a small part of one (figures: bench/README.md). The server's side is unchanged: it
still writes every message to every socket as it is published.
"""

import argparse
import asyncio
import contextlib
import json
import os
import resource
import select
import subprocess
import sys
import tempfile
import time
import urllib.request

import orjson

from loadgen import Client, _Masks, percentile, text_frame
from run import (
    BENCH,
    BENCH_CONFIG,
    LOADGEN_CPU,
    SERVER_CPU,
    TWISTD,
    Server,
    cpu_seconds,
    free_port,
    run_load,
    stop_process,
    stopped_at_exit,
    zbifrost_server,
)

REPO = os.path.dirname(BENCH)
CHANNEL = "bench"
DRAIN_S = 2.0  # seconds after the last publish for stragglers
SAMPLE_EVERY = 10
COUNT_EVERY_S = 0.05  # how often the counting subscribers' sockets are read
COUNT_CHUNK = 50  # sockets read between two turns of the event loop
CHURN_STAY_S = 1.0  # how long a --join-leave connection stays subscribed
MESSAGE_MARK = b'"event":"message"'
IN_FLIGHT = 8  # --throughput: publishes a publisher keeps outstanding (zbifrost's max_in_flight is 16)
REDIS_SERVER = "redis-server"
CGROUP_CPU = "/sys/fs/cgroup/cpu"  # cgroup v1's cpu controller (--redis-cpu)


class FanoutRun:
    """What loadgen.Client expects of a run, plus the fan-out counters."""

    def __init__(self, subscribers):
        self.masks = _Masks()
        self.connected = 0
        self.open_clients = set()
        self.errors = {}
        self.subscribed = 0
        self.counted = 0  # messages seen by the counting subscribers, all publishes
        self.counting = {}  # fd -> counting Subscriber, read by count_loop
        self.counting_poll = select.epoll()
        self.sampled = 0  # sampling subscribers
        self.all_subscribed = asyncio.get_running_loop().create_future()
        self.expected = subscribers
        self.window = None  # (first, last) publish numbers measured, once known
        self.received = 0  # messages of measured publishes
        self.latencies = []  # ns, messages of measured publishes

    def error(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def closed(self, client):
        self.open_clients.discard(client)


class Subscriber(Client):
    """Reads connection_info and subscribes; then a sampling one times every `message` it
    receives, and the others only count them."""

    def __init__(self, run, host, port, sampling):
        super().__init__(run, host, port)
        self.sampling = sampling
        run.sampled += sampling
        self.tail = b""

    def count(self, data):
        """`message` events in the raw bytes of a counting subscriber, a mark split over two
        reads included."""
        joined = self.tail + data
        self.run.counted += joined.count(MESSAGE_MARK) - self.tail.count(MESSAGE_MARK)
        self.tail = joined[-len(MESSAGE_MARK):]

    def hand_to_count_loop(self):
        self.transport.pause_reading()
        fd = self.transport.get_extra_info("socket").fileno()
        self.run.counting[fd] = self
        self.run.counting_poll.register(fd, select.EPOLLIN)

    def _message(self, payload):
        run = self.run
        if not self.greeted:
            self.greeted = True
            self.transport.write(text_frame(b'{"event":"subscribe","channel":"%s","_requestId":1}' % CHANNEL.encode(),
                                            run.masks.take()))
            return True
        now = time.perf_counter_ns()
        frame = orjson.loads(payload)
        if frame.get("event") == "message":
            number, sent = frame["data"]
            if run.window is not None and run.window[0] <= number <= run.window[1]:
                run.received += 1
                run.latencies.append(now - sent)
        elif frame.get("event") in ("join", "leave"):
            pass  # churn (--join-leave): only the messages are measured
        elif frame.get("result", {}).get("subscribed") is True:
            if not self.sampling:
                self.hand_to_count_loop()
            run.subscribed += 1
            if run.subscribed == run.expected:
                run.all_subscribed.set_result(None)
        else:
            self.fail("bad_frame")
            return False
        return True


class Publisher(Client):
    """Publishes `[number, send time]` when told; counts the replies."""

    replies = 0

    def _message(self, payload):
        self.greeted = True
        if "error" in orjson.loads(payload):
            self.fail("publish_error")
            return False
        self.replies += 1
        return True

    def publish(self, number):
        payload = b'{"event":"publish","channel":"%s","data":[%d,%d],"_requestId":%d}' % (
            CHANNEL.encode(), number, time.perf_counter_ns(), number)
        self.transport.write(text_frame(payload, self.run.masks.take()))


class Churner(Client):
    """Subscribes (every subscriber gets its `join`), then drops its connection after
    CHURN_STAY_S (a `leave`)."""

    def _message(self, payload):
        if not self.greeted:
            self.greeted = True
            self.transport.write(text_frame(b'{"event":"subscribe","channel":"%s","_requestId":1}' % CHANNEL.encode(),
                                            self.run.masks.take()))
        elif orjson.loads(payload).get("result", {}).get("subscribed") is True:
            asyncio.get_running_loop().call_later(CHURN_STAY_S, self.transport.abort)
        return True


async def count_loop(run):
    """Reads the counting subscribers' sockets every COUNT_EVERY_S until cancelled."""
    while True:
        await asyncio.sleep(COUNT_EVERY_S)
        for at, (fd, _) in enumerate(run.counting_poll.poll(0), 1):
            try:
                data = os.read(fd, 1 << 20)
            except BlockingIOError:
                continue
            if data:
                run.counting[fd].count(data)
            else:
                run.counting_poll.unregister(fd)
                run.error("closed")
            if at % COUNT_CHUNK == 0:
                await asyncio.sleep(0)  # the sampling subscribers' frames wait no longer than a chunk


async def churn(args):
    """Opens args.join_leave Churners a second until cancelled."""
    loop = asyncio.get_running_loop()
    run = FanoutRun(0)
    connecting = set()  # asyncio keeps only a weak reference to a task
    while True:
        task = loop.create_task(loop.create_connection(lambda: Churner(run, "127.0.0.1", args.port), "127.0.0.1",
                                                       args.port))
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        await asyncio.sleep(1.0 / args.join_leave)


async def generate(args):
    loop = asyncio.get_running_loop()
    run = FanoutRun(args.subscribers)
    connects = [loop.create_connection(lambda n=n: Subscriber(run, "127.0.0.1", args.port, n % SAMPLE_EVERY == 0),
                                       "127.0.0.1", args.port)
                for n in range(args.subscribers)]
    for result in await asyncio.gather(*connects, return_exceptions=True):
        if isinstance(result, BaseException):
            run.error("connect")
    _, publisher = await loop.create_connection(lambda: Publisher(run, "127.0.0.1", args.port), "127.0.0.1",
                                                args.port)
    await asyncio.wait_for(run.all_subscribed, 30)
    counting = loop.create_task(count_loop(run))
    churning = loop.create_task(churn(args)) if args.join_leave else None
    interval = 1.0 / args.rate
    warmup_publishes, measured_publishes = int(args.warmup * args.rate), int(args.duration * args.rate)
    run.window = (warmup_publishes + 1, warmup_publishes + measured_publishes)
    start = loop.time()
    cpu_before = None
    for number in range(1, warmup_publishes + measured_publishes + 1):
        # always yield, so that receiving goes on when publishing is behind
        await asyncio.sleep(max(0.0, start + number * interval - loop.time()))
        if number == run.window[0]:
            cpu_before, counted_before, window_start = time.process_time(), run.counted, time.perf_counter()
        publisher.publish(number)
    window = time.perf_counter() - window_start
    counted = run.counted - counted_before
    expected = measured_publishes * run.sampled
    deadline = time.perf_counter() + DRAIN_S
    while run.received < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(COUNT_EVERY_S * 2)  # the counting subscribers' last reads
    cpu = time.process_time() - cpu_before
    counting.cancel()
    if churning is not None:
        churning.cancel()
    latencies = sorted(run.latencies)

    def ms(ns):
        return None if ns is None else round(ns / 1e6, 2)

    return {"subscribers": args.subscribers, "rate": args.rate, "connected": run.connected,
            "delivered_per_s": round((counted + run.received) / window),
            "delivered_share": round(run.received / expected, 4),
            "p50_ms": ms(percentile(latencies, 0.50)), "p99_ms": ms(percentile(latencies, 0.99)),
            "errors": run.errors, "loadgen_cpu": round(cpu / (window + DRAIN_S), 3)}


def measure(server, rate, args, children):
    command = [sys.executable, os.path.abspath(__file__), "--generate", "--port", str(server.port),
               "--subscribers", str(args.subscribers), "--rate", str(rate), "--warmup", str(args.warmup),
               "--duration", str(args.duration), "--join-leave", str(args.join_leave)]
    result, cpu = run_load(server, command, args.warmup + args.duration + 120, children)
    result["server_cpu_s"] = round(cpu, 2)
    return result


def churn_config(args, workdir, brokers=None, name="churn"):
    """The bench config plus a presence and join/leave rule for the channel (and the broker:
    `brokers`, else --broker)."""
    brokers = brokers or args.broker
    path = os.path.join(workdir, f"zbifrost-{name}.yaml")
    with open(os.path.join(BENCH, "zbifrost-bench.yaml")) as bench, open(path, "w") as config:
        config.write(bench.read())
        if brokers:
            config.write(f"  broker: {json.dumps(brokers)}\n")  # a YAML flow list: one URL, or shards
        config.write(f"channels:\n  - pattern: {CHANNEL}\n    presence: true\n    join_leave: true\n")
    return path


# -- --throughput: the publications/s the brokers carry ----------------------------------------

class FloodRun:
    """What loadgen.Client expects of a run, plus the replies counted."""

    def __init__(self, channels):
        self.masks = _Masks()
        self.connected = 0
        self.open_clients = set()
        self.errors = {}
        self.channels = channels
        self.replies = 0

    def error(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def closed(self, client):
        self.open_clients.discard(client)


class Flooder(Client):
    """Once greeted, keeps IN_FLIGHT publishes outstanding, to the channels in turn."""

    def __init__(self, run, host, port, first):
        super().__init__(run, host, port)
        self.number = first

    def _message(self, payload):
        if not self.greeted:
            self.greeted = True
            for _ in range(IN_FLIGHT):
                self.publish()
            return True
        if b'"error"' in payload:
            self.fail("publish_error")
            return False
        self.run.replies += 1
        self.publish()
        return True

    def publish(self):
        self.number += 1
        payload = b'{"event":"publish","channel":"bench.%d","data":%d,"_requestId":%d}' % (
            self.number % self.run.channels, self.number, self.number)
        self.transport.write(text_frame(payload, self.run.masks.take()))


async def flood(args):
    loop = asyncio.get_running_loop()
    run = FloodRun(args.channels)
    ports = [int(port) for port in args.ports.split(",")]
    for number in range(args.publishers):
        port = ports[number % len(ports)]
        await loop.create_connection(lambda port=port, number=number: Flooder(run, "127.0.0.1", port, number * 10**9),
                                     "127.0.0.1", port)
    await asyncio.sleep(args.warmup)
    replies, cpu, start = run.replies, time.process_time(), time.perf_counter()
    await asyncio.sleep(args.duration)
    window = time.perf_counter() - start
    return {"publications_per_s": round((run.replies - replies) / window), "connected": run.connected,
            "errors": run.errors, "loadgen_cpu": round((time.process_time() - cpu) / window, 3)}


def redis_pid(url):
    """The pid of the redis-server at a redis:// URL, from INFO server (it must run here)."""
    host, port = url.split("://", 1)[1].rpartition("@")[2].split("/", 1)[0].rsplit(":", 1)
    info = subprocess.run(["redis-cli", "-h", host, "-p", port, "INFO", "server"], capture_output=True, text=True,
                          check=True, timeout=10).stdout
    return int(next(line for line in info.splitlines() if line.startswith("process_id:")).split(":")[1])


def cap_cpu(pids, share, groups):
    """Give each of `pids` `share` of one core: a cgroup-v1 CPU quota of its own, its path added to
    `groups` (for release_cpu_caps)."""
    for index, pid in enumerate(pids):
        group = os.path.join(CGROUP_CPU, f"zb-redis-{index}")
        os.makedirs(group, exist_ok=True)
        groups.append(group)
        with open(os.path.join(group, "cpu.cfs_period_us")) as period:
            quota = round(share * int(period.read()))
        for name, value in (("cpu.cfs_quota_us", quota), ("cgroup.procs", pid)):
            with open(os.path.join(group, name), "w") as handle:
                handle.write(str(value))


def release_cpu_caps(groups):
    """Move what is left in `groups` back to the root group and remove them."""
    for group in groups:
        with open(os.path.join(group, "cgroup.procs")) as procs:
            pids = procs.read().split()
        for pid in pids:
            with contextlib.suppress(OSError), open(os.path.join(CGROUP_CPU, "cgroup.procs"), "w") as root:
                root.write(pid)
        os.rmdir(group)


def own_redis_servers(count, workdir, children):
    """`count` redis-servers on free ports, the i-th pinned to CPU i (modulo the CPUs); their URLs."""
    urls = []
    for index in range(count):
        port, folder = free_port(), os.path.join(workdir, f"redis-{index}")
        os.mkdir(folder)
        cpu = str(index % os.cpu_count())
        children.append(subprocess.Popen(["taskset", "-c", cpu, REDIS_SERVER, "--port", str(port), "--bind",
                                          "127.0.0.1", "--dir", folder, "--save", "", "--appendonly", "no"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls.append(f"redis://127.0.0.1:{port}/0")
    deadline = time.monotonic() + 10
    while not all(_answers(url) for url in urls):
        if time.monotonic() > deadline:
            raise RuntimeError("the redis-servers did not start")
        time.sleep(0.1)
    return urls


def _answers(url):
    try:
        redis_pid(url)
        return True
    except (subprocess.CalledProcessError, StopIteration):
        return False


def zbifrost_processes(brokers, workdir, children, count=2):
    """`count` zbifrost processes (twistd, this tree, unpinned) on `brokers`; their processes and ports."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = []
    for index in range(count):
        port = free_port()
        log = open(os.path.join(workdir, f"zbifrost-{len(brokers)}-{index}.log"), "wb")  # noqa: SIM115 - its lifetime
        command = [TWISTD, "-n", "--pidfile=", "zbifrost", "--port", str(port), "--config", BENCH_CONFIG]
        for broker in brokers:
            command += ["--broker", broker]
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        children.append(process)
        started.append((process, port))
    for process, port in started:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    if json.loads(response.read()).get("broker") == "up":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"zbifrost on {brokers} did not start (logs in {workdir})")
            time.sleep(0.2)
    return started


def throughput(args, workdir, children):
    if args.redis_cpu and args.broker:
        raise SystemExit("--redis-cpu caps only the redis-servers this script starts: drop --broker")
    brokers = args.broker or own_redis_servers(2, workdir, children)
    pids = [redis_pid(url) for url in brokers]
    groups = []
    try:
        if args.redis_cpu:
            cap_cpu(pids, args.redis_cpu, groups)
        measure_throughput(args, workdir, children, brokers, pids)
    finally:
        release_cpu_caps(groups)


def measure_throughput(args, workdir, children, brokers, pids):
    cap = f", each capped at {args.redis_cpu:g} of a core (cgroup CPU quota)" if args.redis_cpu else ""
    print(f"{args.publishers} publishers x {IN_FLIGHT} in flight, {args.channels} channels, 2 zbifrost processes, "
          f"{args.warmup:g} s warm-up + {args.duration:g} s measured; redis-servers{cap}: "
          + ", ".join(f"{url} (pid {pid})" for url, pid in zip(brokers, pids, strict=True)))
    print(f"{'shards':>6s} {'pub/s':>7s} {'redis CPU (each)':>22s} {'redis us/pub (each)':>20s} "
          f"{'redis-bound pub/s':>17s} {'zbifrost CPU':>12s} {'gen CPU':>7s} errors")
    rates = {}
    for _ in range(args.rounds):
        for count in sorted({1, len(brokers)}):
            started = zbifrost_processes(brokers[:count], workdir, children)
            command = [sys.executable, os.path.abspath(__file__), "--flood", "--ports",
                       ",".join(str(port) for _, port in started), "--publishers", str(args.publishers),
                       "--channels", str(args.channels), "--warmup", str(args.warmup), "--duration",
                       str(args.duration)]
            generator = subprocess.Popen(command, stdout=subprocess.PIPE, start_new_session=True)
            children.append(generator)
            time.sleep(args.warmup)
            redis_before = [cpu_seconds(pid) for pid in pids[:count]]
            zbifrost_before = sum(cpu_seconds(process.pid) for process, _ in started)
            output, _ = generator.communicate(timeout=args.warmup + args.duration + 60)
            redis_cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, redis_before, strict=False)]
            zbifrost_cpu = sum(cpu_seconds(process.pid) for process, _ in started) - zbifrost_before
            children.remove(generator)
            for process, _ in started:
                stop_process(process)
                children.remove(process)
            result = json.loads(output)
            rate = result["publications_per_s"]
            rates.setdefault(count, []).append(rate)
            busy = [cpu / args.duration for cpu in redis_cpu]  # the share of its core each redis-server used
            per_publication = [cpu / max(rate * args.duration, 1) * 1e6 for cpu in redis_cpu]
            print(f"{count:6d} {rate:7d} {' '.join(f'{share:6.1%}' for share in busy):>22s} "
                  f"{' '.join(f'{us:5.1f}' for us in per_publication):>20s} {round(rate / max(busy)):17d} "
                  f"{zbifrost_cpu / args.duration:12.0%} {result['loadgen_cpu']:7.0%} {result['errors'] or '-'}",
                  flush=True)
    if len(rates) == 2:
        one, every = (sorted(found)[len(found) // 2] for _, found in sorted(rates.items()))
        print(f"{len(brokers)} shards / 1 (median of {args.rounds} rounds): {every / max(one, 1):.2f}x")


def own_sentinel(url, workdir, children):
    """A redis-sentinel of its own on a free port, monitoring the redis-server at `url` as
    master `zb`; the redis+sentinel:// URL of that master."""
    port, redis_port = free_port(), url.rsplit(":", 1)[1].split("/")[0]
    config = os.path.join(workdir, "sentinel.conf")
    with open(config, "w") as handle:
        handle.write(f"port {port}\nbind 127.0.0.1\ndir {workdir}\nsentinel monitor zb 127.0.0.1 {redis_port} 1\n")
    children.append(subprocess.Popen(["redis-sentinel", config], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "SENTINEL", "get-master-addr-by-name", "zb"],
                         capture_output=True, text=True, timeout=10).stdout.split() != ["127.0.0.1", redis_port]:
        if time.monotonic() > deadline:
            raise RuntimeError("the redis-sentinel did not start")
        time.sleep(0.1)
    return f"redis+sentinel://127.0.0.1:{port}/zb/0"


def run_all(args, workdir, children):
    if args.sentinel:
        (direct,) = own_redis_servers(1, workdir, children)
        through_sentinel = own_sentinel(direct, workdir, children)
        args.broker = [direct, through_sentinel]  # for the header line
        servers = [zbifrost_server(name, REPO, workdir, churn_config(args, workdir, [url], name))
                   for name, url in (("sentinel", through_sentinel), ("direct", direct))]
    elif args.join_leave or args.broker:  # zbifrost alone: the broadcast has no presence and no broker
        servers = [zbifrost_server("zbifrost", REPO, workdir, churn_config(args, workdir))]
    else:
        port = free_port()
        servers = [Server("broadcast", [sys.executable, os.path.join(BENCH, "broadcast_server.py"), "--port",
                                        str(port)], port, workdir),
                   zbifrost_server("zbifrost", REPO, workdir)]
    children.extend(server.process for server in servers)
    for server in servers:
        server.wait_ready()
    brokers = (" vs " if args.sentinel else " + ").join(args.broker) if args.broker else "memory backend"
    print(f"{args.subscribers} subscribers, 1 publisher, {args.join_leave} joins and leaves/s, {brokers}, "
          f"{args.warmup:g} s warm-up + {args.duration:g} s measured, "
          f"servers on CPU {SERVER_CPU}, generator on CPU {LOADGEN_CPU}")
    print(f"{'server':10s} {'pub/s':>6s} {'delivered/s':>11s} {'share':>7s} {'p50 ms':>7s} {'p99 ms':>7s} "
          f"{'server CPU s':>12s} {'gen CPU':>7s} errors")
    for _ in range(args.rounds):
        for rate in args.rates:
            for server in servers:
                r = measure(server, rate, args, children)
                print(f"{server.name:10s} {rate:6d} {r['delivered_per_s']:11d} {r['delivered_share']:7.1%} "
                      f"{r['p50_ms']!s:>7s} {r['p99_ms']!s:>7s} {r['server_cpu_s']:12.2f} {r['loadgen_cpu']:7.0%} "
                      f"{r['errors'] or '-'}", flush=True)


def main():
    parser = argparse.ArgumentParser(description="channel fan-out: zbifrost vs an Autobahn broadcast")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rates", default="100,1000", help="publishes per second, comma-separated")
    parser.add_argument("--rate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--join-leave", type=int, default=0, help="subscribers joining and leaving per second")
    parser.add_argument("--broker", action="append",
                        help="zbifrost's channels in this Redis (redis://host:port/db); repeated: shards")
    parser.add_argument("--sentinel", action="store_true",
                        help="zbifrost on a Redis of its own through a redis-sentinel of its own, and directly")
    parser.add_argument("--throughput", action="store_true",
                        help="measure the publications/s of one broker and of all (shards) instead")
    parser.add_argument("--publishers", type=int, default=32, help="--throughput: publisher connections")
    parser.add_argument("--channels", type=int, default=1000, help="--throughput: channels published to in turn")
    parser.add_argument("--redis-cpu", type=float,
                        help="--throughput: each of its own redis-servers gets this share of a core (cgroup v1 quota)")
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--flood", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers inherit it
    if args.generate or args.flood:
        json.dump(asyncio.run(flood(args) if args.flood else generate(args)), sys.stdout)
        sys.stdout.write("\n")
        return
    args.rates = [int(rate) for rate in args.rates.split(",")]
    with stopped_at_exit() as children, tempfile.TemporaryDirectory(prefix="zbifrost-fanout-") as workdir:
        (throughput if args.throughput else run_all)(args, workdir, children)


if __name__ == "__main__":
    main()
