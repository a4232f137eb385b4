"""Connections per second authenticated with a JWT against a tokens-file token, same run.

    python bench/auth_connect.py [--clients 20] [--duration 5] [--rounds 3]

Starts zbifrost (twistd, from this source tree) pinned to CPU 0 with `require_auth`, a tokens
file and a `jwt` section (HS256), then runs this script with `--generate` pinned to CPU 1:
`--clients` loops each open a TCP connection, send the WebSocket upgrade with the token in the
query, read the first frame (connection_info, i.e. authenticated and registered) and close.
The two kinds of token alternate for --rounds rounds; it prints connections/s per run, the
medians, the server's CPU per connection and the JWT's cost relative to the tokens file.
"""

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time

import jwt

from run import BENCH, LOADGEN_CPU, SERVER_CPU, TWISTD, Server, free_port, run_load, stop_process

sys.path.insert(0, os.path.dirname(BENCH))
from zbifrost.auth import hash_token  # this source tree's

FILE_TOKEN = "bench-tokens-file-token"
SECRET = "a benchmark secret of at least thirty-two bytes long"


async def _connect_once(port, token):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
        _, length = await reader.readexactly(2)
        length &= 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        frame = json.loads(await reader.readexactly(length))
        if frame.get("event") != "connection_info":
            raise RuntimeError(f"refused: {frame}")
    finally:
        writer.close()


async def generate(port, token, clients, duration):
    done, errors = 0, 0
    deadline = time.monotonic() + duration

    async def loop():
        nonlocal done, errors
        while time.monotonic() < deadline:
            try:
                await _connect_once(port, token)
                done += 1
            except (OSError, RuntimeError, asyncio.IncompleteReadError, ValueError):
                errors += 1

    started = time.monotonic()
    cpu = time.process_time()
    await asyncio.gather(*(loop() for _ in range(clients)))
    elapsed = time.monotonic() - started
    return {"connections": done, "cps": done / elapsed, "errors": errors,
            "loadgen_cpu": (time.process_time() - cpu) / elapsed}


def server_files(workdir):
    tokens = os.path.join(workdir, "tokens.yaml")
    with open(tokens, "w") as handle:
        handle.write(f"tokens:\n  - user: bench\n    role: user\n    sha256: \"{hash_token(FILE_TOKEN)}\"\n")
    config = os.path.join(workdir, "zbifrost-auth.yaml")
    with open(config, "w") as handle:
        handle.write(f"websocket:\n  require_auth: true\n  tokens: {tokens}\n  rate: 1000000\n  burst: 1000000\n"
                     f"  max_connections: 100000\n  jwt:\n    secret: {json.dumps(SECRET)}\n")
    return config


def main():
    parser = argparse.ArgumentParser(description="connections/s with JWTs vs tokens-file tokens")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        print(json.dumps(asyncio.run(generate(args.port, args.token, args.clients, args.duration))))
        return 0
    signed = jwt.encode({"sub": "bench", "role": "user", "exp": int(time.time()) + 86400}, SECRET, algorithm="HS256")
    children = []
    with tempfile.TemporaryDirectory(prefix="zbifrost-bench-") as workdir:
        port = free_port()
        env = dict(os.environ, PYTHONPATH=os.path.dirname(BENCH) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        server = Server("zbifrost", [TWISTD, "-n", "--pidfile=", "zbifrost", "--port", str(port), "--config",
                                     server_files(workdir)], port, workdir, env)
        children.append(server.process)
        try:
            server.wait_ready()
            print(f"{args.clients} clients, {args.duration:g} s per run, server on CPU {SERVER_CPU}, "
                  f"load generator on CPU {LOADGEN_CPU}")
            results = {"tokens file": [], "JWT": []}
            for round_number in range(1, args.rounds + 1):
                for name, token in (("tokens file", FILE_TOKEN), ("JWT", signed)):
                    command = [sys.executable, os.path.abspath(__file__), "--generate", "--port", str(port),
                               "--token", token, "--clients", str(args.clients), "--duration", str(args.duration)]
                    result, cpu = run_load(server, command, args.duration + 60, children)
                    result["server_cpu_us"] = cpu / max(result["connections"], 1) * 1e6
                    results[name].append(result)
                    print(f"  round {round_number} {name:11s} {result['cps']:7.0f} connections/s  server "
                          f"{result['server_cpu_us']:6.0f} us/connection  loadgen CPU {result['loadgen_cpu']:.0%}  "
                          f"errors {result['errors']}", flush=True)
        finally:
            for child in children:
                stop_process(child)
    medians = {name: {key: statistics.median(r[key] for r in rs) for key in ("cps", "server_cpu_us")}
               for name, rs in results.items()}
    for name, m in medians.items():
        print(f"{name:11s} median {m['cps']:7.0f} connections/s, {m['server_cpu_us']:6.0f} us of server CPU each")
    cost = 1 - medians["JWT"]["cps"] / medians["tokens file"]["cps"]
    print(f"JWT costs {cost:.1%} of the tokens-file connection rate (target: under 10%)")
    return 1 if any(r["errors"] for rs in results.values() for r in rs) else 0


if __name__ == "__main__":
    sys.exit(main())
