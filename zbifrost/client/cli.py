"""The command line of the Python client (`python -m zbifrost.client`, `zbifrost-client`):

    zbifrost-client ws://127.0.0.1:18774/ws dispatch ^Ping
    zbifrost-client URL subscribe chat [--since EPOCH:OFFSET]     # one JSON line per publication
    zbifrost-client URL publish chat '{"x": 1}' [--idempotency-key KEY]

`--token` (or the environment variable ZBIFROST_TOKEN) authenticates. Exit status: 0 success, 1 an
error reply (its code and text on stderr), 2 usage, 3 the connection could not be made or was lost.
`subscribe` reconnects and recovers as the client does, with one line on stderr per state change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from websockets.exceptions import InvalidURI

from .aio import RecoveryLost, State, connect
from .core import BifrostError, Position

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CONNECTION = 0, 1, 2, 3


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None


def _position(text: str) -> Position:
    epoch, _, offset = text.rpartition(":")
    if not epoch or not offset.isdigit():
        raise argparse.ArgumentTypeError("expected EPOCH:OFFSET, as printed by subscribe")
    return Position(epoch, int(offset))


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--token", default=argparse.SUPPRESS, help="token (default: $ZBIFROST_TOKEN)")
    common.add_argument("--origin", default=argparse.SUPPRESS, help="the Origin header to send")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS,
                        help="seconds without a frame for a request (default 30)")
    main = argparse.ArgumentParser(prog="zbifrost-client", parents=[common],
                                   description="Talk to a zbifrost server from the command line.")
    main.add_argument("url", help="ws://host:port/ws or wss://...")
    commands = main.add_subparsers(dest="command", required=True)
    dispatch = commands.add_parser("dispatch", parents=[common], help="run a zUI command, print its result")
    dispatch.add_argument("zkey")
    dispatch.add_argument("--zblock")
    dispatch.add_argument("--args", type=_json, help="a JSON array")
    dispatch.add_argument("--data", type=_json, help="a JSON object: a zDialog's values")
    subscribe = commands.add_parser("subscribe", parents=[common], help="print each publication as a JSON line")
    subscribe.add_argument("channel")
    subscribe.add_argument("--since", type=_position, help="EPOCH:OFFSET: also what was published after it")
    publish = commands.add_parser("publish", parents=[common], help="publish JSON data, print {channel, epoch, offset}")
    publish.add_argument("channel")
    publish.add_argument("data", type=_json)
    publish.add_argument("--idempotency-key")
    return main


def _say(text: str) -> None:
    print(f"zbifrost-client: {text}", file=sys.stderr, flush=True)


def _print(value: Any) -> None:
    print(json.dumps(value), flush=True)


async def _dispatch(args: argparse.Namespace, options: dict[str, Any]) -> None:
    async with connect(args.url, reconnect=False, **options) as client:
        _print(await client.dispatch(args.zkey, zblock=args.zblock, args=args.args, data=args.data,
                                     on_event=lambda frame: print(json.dumps(frame), file=sys.stderr)))


async def _publish(args: argparse.Namespace, options: dict[str, Any]) -> None:
    async with connect(args.url, reconnect=False, **options) as client:
        _print(await client.publish(args.channel, args.data, idempotency_key=args.idempotency_key))


async def _subscribe(args: argparse.Namespace, options: dict[str, Any]) -> None:
    def on_state(state: State) -> None:
        _say(str(state))

    async with connect(args.url, on_state=on_state, **options) as client:
        subscription = await client.subscribe(args.channel, since=args.since)
        while True:
            try:
                async for pub in subscription:
                    _print({"channel": pub.channel, "epoch": pub.epoch, "offset": pub.offset, "from": pub.sender,
                            "data": pub.data})
                break
            except RecoveryLost as lost:
                _say(f"publications were lost; going on from {lost.position}")
        _say(f"unsubscribed from {args.channel} by the server")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    options: dict[str, Any] = {"token": getattr(args, "token", None) or os.environ.get("ZBIFROST_TOKEN") or None,
                               "origin": getattr(args, "origin", None)}
    if hasattr(args, "timeout"):
        options["timeout"] = args.timeout
    run = {"dispatch": _dispatch, "publish": _publish, "subscribe": _subscribe}[args.command]
    try:
        asyncio.run(run(args, options))
    except BifrostError as error:
        if error.code == "disconnected":
            _say(error.message)
            return EXIT_CONNECTION
        _say(f"{error.code}: {error.message}")
        return EXIT_ERROR
    except InvalidURI as error:
        _say(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return EXIT_OK
