"""Benchmark zbifrost against two echo baselines, Autobahn/Twisted and `websockets`, in one run.

    python bench/run.py [--clients 50] [--duration 10] [--warmup 2] [--rounds 3] [--tree PATH ...]
                        [--anchors]

Starts bench/echo_server.py, bench/websockets_echo.py and zbifrost (twistd, from this source
tree, with bench/zbifrost-bench.yaml) as subprocesses pinned to CPU 0, each on a free loopback
port, then runs bench/loadgen.py pinned to CPU 1 against each in turn, alternating for
--rounds rounds so that background noise hits all alike. Prints one line per run and a table
of medians: requests/s, p50/p99 latency, the server's CPU time per request (read from /proc,
so it is less sensitive than req/s to other work on the machine), the load generator's CPU,
and each server's ratio to the Autobahn echo; zbifrost is checked against the target (at
least the `websockets` echo's req/s, p99 < 5 ms). `--tree PATH` adds another zbifrost source
tree (a scratch copy with a proposed change) to the same alternation, so a change is measured
against the same baselines and noise. `--anchors` adds the upper anchors, the `websockets`
echo on uvloop and bench/picows_echo.py (they need `pip install uvloop picows`).
The servers are stopped on exit, on error and on Ctrl-C or SIGTERM.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
SERVER_CPU, LOADGEN_CPU = "0", "1"
TARGET_P99_MS = 5.0
TICKS = os.sysconf("SC_CLK_TCK")
TWISTD = shutil.which("twistd", path=os.path.dirname(sys.executable)) or "twistd"  # this Python's own


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU time of a process so far (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Server:
    def __init__(self, name, command, port, workdir, env=None):
        self.name, self.port = name, port
        self.log_path = os.path.join(workdir, name + ".log")
        with open(self.log_path, "wb") as log:
            # taskset execs the command, so the pid is the server's own
            self.process = subprocess.Popen(["taskset", "-c", SERVER_CPU, *command], cwd=workdir, env=env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start; its log:\n{self.log_tail()}")

    def log_tail(self):
        with open(self.log_path, errors="replace") as handle:
            return "".join(handle.readlines()[-20:])


@contextlib.contextmanager
def stopped_at_exit():
    """A list for a benchmark's child processes; every one is stopped on the way out, also after
    Ctrl-C (exit 130) or SIGTERM (exit 143), so that no server outlives the run."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # run the finally below
    children = []
    try:
        yield children
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        for process in reversed(children):
            stop_process(process)


def stop_process(process):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_load(server, command, timeout, children):
    """Run a load generator (`command`, printing one JSON object) pinned to LOADGEN_CPU against
    `server`; returns (its JSON, the server's CPU seconds meanwhile)."""
    cpu_before = cpu_seconds(server.process.pid)
    loadgen = subprocess.Popen(["taskset", "-c", LOADGEN_CPU, *command], stdout=subprocess.PIPE,
                               start_new_session=True)
    children.append(loadgen)
    output, _ = loadgen.communicate(timeout=timeout)
    children.remove(loadgen)
    cpu = cpu_seconds(server.process.pid) - cpu_before
    if not output.strip():
        raise RuntimeError(f"the load generator failed against {server.name} (exit {loadgen.returncode})")
    return json.loads(output), cpu


def measure(server, args, children):
    """One load-generator run against one server; the loadgen's JSON plus server CPU per request."""
    command = [sys.executable, os.path.join(BENCH, "loadgen.py"), "--port", str(server.port),
               "--clients", str(args.clients), "--warmup", str(args.warmup), "--duration", str(args.duration)]
    result, cpu = run_load(server, command, args.warmup + args.duration + 60, children)
    if result["p50_ms"] is None:
        raise RuntimeError(f"no replies from {server.name}: {result['error_kinds']}")
    result["server_cpu_us"] = round(cpu / max(result["all_replies"], 1) * 1e6, 1)
    return result


def summary(results):
    def median(key):
        return statistics.median(r[key] for r in results)

    return {"rps": median("rps"), "rps_min": min(r["rps"] for r in results),
            "rps_max": max(r["rps"] for r in results), "p50_ms": median("p50_ms"), "p99_ms": median("p99_ms"),
            "server_cpu_us": median("server_cpu_us"), "loadgen_cpu": median("loadgen_cpu"),
            "errors": sum(r["errors"] for r in results)}


BENCH_CONFIG = os.path.join(BENCH, "zbifrost-bench.yaml")


def zbifrost_server(name, tree, workdir, config=BENCH_CONFIG):
    """zbifrost run by twistd from the source tree `tree`, with the bench config (or `config`)."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=tree + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [TWISTD, "-n", "--pidfile=", "zbifrost", "--port", str(port),
               "--config", config]
    return Server(name, command, port, workdir, env)


def script_server(name, script, workdir, *options):
    """One of the bench/ scripts that take --port."""
    port = free_port()
    return Server(name, [sys.executable, os.path.join(BENCH, script), "--port", str(port), *options], port, workdir)


def run(args, workdir, children):
    servers = [script_server("echo", "echo_server.py", workdir),
               script_server("websockets", "websockets_echo.py", workdir),
               zbifrost_server("zbifrost", REPO, workdir)]
    if args.anchors:
        servers += [script_server("websockets+uvloop", "websockets_echo.py", workdir, "--uvloop"),
                    script_server("picows", "picows_echo.py", workdir)]
    children.extend(server.process for server in servers)
    for tree in args.tree:
        name = "zb@" + os.path.basename(os.path.normpath(tree))
        servers.append(zbifrost_server(name, os.path.abspath(tree), workdir))
        children.append(servers[-1].process)
    for server in servers:
        server.wait_ready()
    results = {server.name: [] for server in servers}
    width = max(len(name) for name in results)
    print(f"{args.clients} clients, {args.warmup:g} s warm-up + {args.duration:g} s measured, "
          f"servers on CPU {SERVER_CPU}, load generator on CPU {LOADGEN_CPU}")
    for round_number in range(1, args.rounds + 1):
        for server in servers:
            r = measure(server, args, children)
            results[server.name].append(r)
            print(f"  round {round_number} {server.name:{width}s} {r['rps']:7.0f} req/s  p50 {r['p50_ms']:5.2f} ms"
                  f"  p99 {r['p99_ms']:6.2f} ms  max {r['max_ms']:7.2f} ms  server {r['server_cpu_us']:5.1f} us/req"
                  f"  loadgen CPU {r['loadgen_cpu']:.0%}  errors {r['errors']}", flush=True)
    table = {name: summary(rs) for name, rs in results.items()}
    print(f"\n{'server':{width}s} {'req/s':>7s} {'(min-max)':>13s} {'p50 ms':>6s} {'p99 ms':>6s} "
          f"{'CPU us/req':>10s} {'loadgen CPU':>11s} {'errors':>6s}")
    for name, s in table.items():
        print(f"{name:{width}s} {s['rps']:7.0f} {s['rps_min']:6.0f}-{s['rps_max']:<6.0f} {s['p50_ms']:6.2f}"
              f" {s['p99_ms']:6.2f} {s['server_cpu_us']:10.1f} {s['loadgen_cpu']:11.0%} {s['errors']:6d}")
    echo, target = table["echo"], table["websockets"]
    print()
    for name, s in table.items():
        if name != "echo":
            line = (f"{name}/echo: {s['rps'] / echo['rps']:.2f}x req/s, "
                    f"{s['server_cpu_us'] / echo['server_cpu_us']:.2f}x CPU per request")
            if name == "zbifrost" or name.startswith("zb@"):
                met = s["rps"] >= target["rps"] and s["p99_ms"] < TARGET_P99_MS
                line += (f"; target (>= the websockets echo, {target['rps'] / echo['rps']:.2f}x; p99 < "
                         f"{TARGET_P99_MS:g} ms): {'met' if met else 'NOT met'}")
            print(line)
    return 1 if any(s["errors"] for s in table.values()) else 0


def main():
    parser = argparse.ArgumentParser(description="zbifrost vs the Autobahn and websockets echo baselines")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring, per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server, alternating")
    parser.add_argument("--tree", action="append", default=[], metavar="PATH",
                        help="also benchmark the zbifrost source tree at PATH (e.g. a scratch copy with a change)")
    parser.add_argument("--anchors", action="store_true",
                        help="also run the upper anchors: websockets on uvloop, and picows")
    args = parser.parse_args()
    with stopped_at_exit() as children, tempfile.TemporaryDirectory(prefix="zbifrost-bench-") as workdir:
        sys.exit(run(args, workdir, children))


if __name__ == "__main__":
    main()
