"""An upper anchor for the benchmark, measured by hand: echo_server.py's job on picows (a
Cython WebSocket library) and uvloop. Unfragmented messages only, which is all the load
generator sends. Needs `pip install picows uvloop`.

    python bench/picows_echo.py --port 18777
"""

import argparse

import orjson
import uvloop
from picows import WSListener, WSMsgType, ws_create_server

PONG = {"message": "Pong!"}
HELLO = orjson.dumps({"event": "connection_info", "data": {"server_version": "picows", "protocol": 1}})


class Echo(WSListener):
    def on_ws_connected(self, transport):
        transport.send(WSMsgType.TEXT, HELLO)

    def on_ws_frame(self, transport, frame):
        if frame.msg_type == WSMsgType.TEXT:
            message = orjson.loads(frame.get_payload_as_bytes())
            transport.send(WSMsgType.TEXT, orjson.dumps({"result": PONG, "_requestId": message.get("_requestId")}))
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def serve_forever(port):
    server = await ws_create_server(lambda request: Echo(), "127.0.0.1", port, max_frame_size=65536, backlog=1024)
    await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description="picows JSON echo (an upper anchor)")
    parser.add_argument("--port", type=int, required=True)
    uvloop.run(serve_forever(parser.parse_args().port))


if __name__ == "__main__":
    main()
