"""`--workers 1` against `--workers 2`: ^Ping dispatch requests/s and server CPU per request.

    python bench/workers.py [--clients 50] [--duration 10] [--warmup 2] [--rounds 3]

Starts a redis-server on a free port (the broker `--workers` above 1 needs) and both zbifrost
parents (twistd from this source tree, bench/zbifrost-bench.yaml), then runs bench/loadgen.py
against each in turn, alternating. Nothing is pinned: on a 2-core machine the load generator
and the workers share the cores, which is the point to see. Server CPU is the sum over the
parent and its workers (read from /proc); the workers' pids come from /healthz.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from run import BENCH, REPO, TWISTD, cpu_seconds, free_port, stop_process


def start_workers(count, broker, workdir):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(os.path.join(workdir, f"workers-{count}.log"), "wb")  # noqa: SIM115 - the server's, for its lifetime
    process = subprocess.Popen([TWISTD, "-n", "--pidfile=", "zbifrost", "--workers", str(count), "--port", str(port),
                                "--broker", broker, "--config", os.path.join(BENCH, "zbifrost-bench.yaml")],
                               cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                health = json.loads(response.read())
            if len(health["workers"]) == count:
                return process, port, [process.pid] + [worker["pid"] for worker in health["workers"]]
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"--workers {count} did not start (see {log.name})")


def measure(port, pids, args):
    before = sum(cpu_seconds(pid) for pid in pids)
    output = subprocess.run([sys.executable, os.path.join(BENCH, "loadgen.py"), "--port", str(port),
                             "--clients", str(args.clients), "--warmup", str(args.warmup),
                             "--duration", str(args.duration)], capture_output=True, check=True,
                            timeout=args.warmup + args.duration + 60).stdout
    cpu = sum(cpu_seconds(pid) for pid in pids) - before
    result = json.loads(output)
    result["server_cpu_us"] = cpu / max(result["all_replies"], 1) * 1e6
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="zbifrost-bench-workers-")
    redis_port = free_port()
    processes = [subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                   "--dir", workdir], stdout=subprocess.DEVNULL)]
    try:
        servers = {}
        for count in (1, 2):
            process, port, pids = start_workers(count, f"redis://127.0.0.1:{redis_port}/0", workdir)
            processes.append(process)
            servers[count] = (port, pids)
        results = {count: [] for count in servers}
        for round_number in range(1, args.rounds + 1):
            for count, (port, pids) in servers.items():
                r = measure(port, pids, args)
                results[count].append(r)
                print(f"  round {round_number} --workers {count}: {r['rps']:7.0f} req/s  p50 {r['p50_ms']:5.2f} ms"
                      f"  p99 {r['p99_ms']:6.2f} ms  server {r['server_cpu_us']:5.1f} us/req  errors {r['errors']}",
                      flush=True)
        print("\nworkers   req/s  p99 ms  server CPU us/req (medians)")
        for count, rs in results.items():
            print(f"{count:7d} {statistics.median(r['rps'] for r in rs):7.0f} "
                  f"{statistics.median(r['p99_ms'] for r in rs):7.2f} "
                  f"{statistics.median(r['server_cpu_us'] for r in rs):9.1f}")
    finally:
        for process in reversed(processes):
            stop_process(process)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
