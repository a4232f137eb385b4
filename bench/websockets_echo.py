"""The benchmark's second baseline: echo_server.py's job on the `websockets` library (asyncio).

It sends the same `connection_info` frame on open and answers each message with
`{"result":{"message":"Pong!"},"_requestId":<its _requestId>}` (orjson), with the options
that cost or save time set like zbifrost's: no compression, 64 KiB messages. `--uvloop` runs
it on uvloop (an upper anchor measured by hand: `pip install uvloop`).

    python bench/websockets_echo.py --port 18776 [--uvloop]
"""

import argparse
import asyncio

import orjson
from websockets.asyncio.server import serve

PONG = {"message": "Pong!"}
HELLO = orjson.dumps({"event": "connection_info", "data": {"server_version": "websockets", "protocol": 1}})


async def answer(websocket):
    await websocket.send(HELLO, text=True)
    async for payload in websocket:
        message = orjson.loads(payload)
        await websocket.send(orjson.dumps({"result": PONG, "_requestId": message.get("_requestId")}), text=True)


async def serve_forever(port):
    async with serve(answer, "127.0.0.1", port, compression=None, max_size=65536, backlog=1024):
        await asyncio.get_running_loop().create_future()


def main():
    parser = argparse.ArgumentParser(description="websockets JSON echo baseline")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop
        uvloop.run(serve_forever(args.port))
    else:
        asyncio.run(serve_forever(args.port))


if __name__ == "__main__":
    main()
