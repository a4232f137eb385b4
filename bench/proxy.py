"""zHTTP commands and the connect proxy against what they stand in for, in one run.

    python bench/proxy.py [--clients 50] [--warmup 1] [--duration 5] [--rounds 3]

Starts a stand-in application (this script with --app: asyncio, HTTP/1.1 keep-alive, answering
every POST at once with {"message": "Pong!"}, pinned to CPU 1 beside the load generator) and
two zbifrost servers (twistd, this source tree, CPU 0) whose `^Ping` is a `zHTTP` action to that
application in one and an `async def` plugin function returning the same in the other (both run
on the reactor, no thread). bench/loadgen.py runs against each in turn for --rounds rounds and
the medians give the commands/s and the latency zHTTP adds. Then connections/s on a third
server with `require_auth`, a tokens file and `proxy.connect`: bench/auth_connect.py's
generator alternates a tokens-file token and a token-less upgrade that the connect proxy
authenticates. The application's CPU is not the server's: the server CPU per request (from
/proc) is the figure to compare; on a 2-core machine the requests/s are those of three
processes sharing two cores.
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile

from auth_connect import FILE_TOKEN
from run import (
    BENCH,
    LOADGEN_CPU,
    Server,
    free_port,
    measure,
    run_load,
    stop_process,
    stopped_at_exit,
    summary,
    zbifrost_server,
)

sys.path.insert(0, os.path.dirname(BENCH))
from zbifrost.auth import hash_token  # this source tree's

ANSWERS = {b"/ping": b'{"message":"Pong!"}', b"/connect": b'{"result":{"user":"bench","role":"user"}}'}
SECRET = "a benchmark secret of at least thirty-two bytes long"


async def _answer(reader, writer):
    """Answer every request of one keep-alive connection at once, by its path (ANSWERS)."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in lines
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            body = ANSWERS[lines[0].split(b" ")[1]]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def serve_application(port):
    server = await asyncio.start_server(_answer, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def server_files(workdir, app_port):
    """The workspaces and config files of the three servers: {name: config path}."""
    with open(os.path.join(workdir, "proxy.secret"), "w") as handle:
        handle.write(SECRET)
    with open(os.path.join(workdir, "tokens.yaml"), "w") as handle:
        handle.write(f"tokens:\n  - user: bench\n    role: user\n    sha256: \"{hash_token(FILE_TOKEN)}\"\n")
    actions = {"zHTTP": f"{{zHTTP: \"http://127.0.0.1:{app_port}/ping\"}}",
               "plugin": '{zFunc: "@.plugins.pong.pong"}', "connect": "Pong!"}
    proxy = {"plugin": "", "zHTTP": "proxy:\n  secret_file: proxy.secret\n",
             "connect": f"proxy:\n  secret_file: proxy.secret\n  connect: {{url: \"http://127.0.0.1:{app_port}/connect\"}}\n"}
    configs = {}
    for name, action in actions.items():
        workspace = os.path.join(workdir, name)
        os.makedirs(os.path.join(workspace, "plugins"))
        with open(os.path.join(workspace, "zUI.bench.yaml"), "w") as handle:
            handle.write(f"Main:\n  Ping: {action}\n")
        with open(os.path.join(workspace, "plugins", "pong.py"), "w") as handle:
            handle.write("async def pong():\n    return {'message': 'Pong!'}\n")
        auth = "  require_auth: true\n  tokens: tokens.yaml\n  max_connections: 100000\n" if name == "connect" else ""
        configs[name] = os.path.join(workdir, f"{name}.yaml")
        with open(configs[name], "w") as handle:
            handle.write(f"zWorkspace: {name}\nwebsocket:\n  rate: 1000000\n  burst: 1000000\n{auth}{proxy[name]}")
    return configs


def main():
    parser = argparse.ArgumentParser(description="zHTTP and the connect proxy against a plugin and a token")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--app", type=int, help=argparse.SUPPRESS)  # run the stand-in application on this port
    args = parser.parse_args()
    if args.app:
        asyncio.run(serve_application(args.app))
        return 0
    with stopped_at_exit() as children, tempfile.TemporaryDirectory(prefix="zbifrost-bench-") as workdir:
        app_port = free_port()
        app = Server("application", ["taskset", "-c", LOADGEN_CPU, sys.executable, os.path.abspath(__file__),
                                     "--app", str(app_port)], app_port, workdir)
        children.append(app.process)
        app.wait_ready()
        configs = server_files(workdir, app_port)
        tree = os.path.dirname(BENCH)
        servers = {name: zbifrost_server(name, tree, workdir, config) for name, config in configs.items()}
        for server in servers.values():
            children.append(server.process)
            server.wait_ready()
        print(f"{args.clients} clients, {args.duration:g} s per run; zbifrost on CPU 0, the load generator and "
              f"the application on CPU {LOADGEN_CPU}")
        commands = {"plugin": [], "zHTTP": []}
        connections = {"tokens file": [], "connect proxy": []}
        for round_number in range(1, args.rounds + 1):
            for name, results in commands.items():
                result = measure(servers[name], args, children)
                results.append(result)
                print(f"  round {round_number} {name:13s} {result['rps']:8.0f} commands/s  p50 {result['p50_ms']:.2f} "
                      f"ms  p99 {result['p99_ms']:.2f} ms  server {result['server_cpu_us']:5.0f} us/command  "
                      f"errors {result['errors']}", flush=True)
            for name, token in (("tokens file", FILE_TOKEN), ("connect proxy", "")):
                command = [sys.executable, os.path.join(BENCH, "auth_connect.py"), "--generate", "--port",
                           str(servers["connect"].port), "--token", token, "--clients", "20", "--duration",
                           str(args.duration)]
                result, cpu = run_load(servers["connect"], command, args.duration + 60, children)
                result["server_cpu_us"] = cpu / max(result["connections"], 1) * 1e6
                connections[name].append(result)
                print(f"  round {round_number} {name:13s} {result['cps']:8.0f} connections/s  server "
                      f"{result['server_cpu_us']:5.0f} us/connection  errors {result['errors']}", flush=True)
        for process in children:
            stop_process(process)
    medians = {name: summary(results) for name, results in commands.items()}
    for name, m in medians.items():
        print(f"{name:13s} median {m['rps']:8.0f} commands/s  p50 {m['p50_ms']:.2f} ms  p99 {m['p99_ms']:.2f} ms  "
              f"server {m['server_cpu_us']:5.0f} us/command")
    print(f"zHTTP adds {medians['zHTTP']['p50_ms'] - medians['plugin']['p50_ms']:.2f} ms at p50 and "
          f"{medians['zHTTP']['p99_ms'] - medians['plugin']['p99_ms']:.2f} ms at p99 over a plugin function")
    rates = {name: statistics.median(r["cps"] for r in results) for name, results in connections.items()}
    for name, rate in rates.items():
        cpu = statistics.median(r["server_cpu_us"] for r in connections[name])
        print(f"{name:13s} median {rate:8.0f} connections/s  server {cpu:5.0f} us/connection")
    print(f"the connect proxy costs {1 - rates['connect proxy'] / rates['tokens file']:.1%} of the tokens-file "
          "connection rate")
    errors = sum(m["errors"] for m in medians.values()) + sum(r["errors"] for rs in connections.values() for r in rs)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
