"""The fan-out benchmark's baseline: the plainest Autobahn/Twisted broadcast doing zbifrost's
channel job for one channel.

On open it sends one `connection_info`-like frame. `{"event": "subscribe"}` adds the client to
the subscribers; `{"event": "publish", "data": ...}` encodes one `message` frame, prepares it
once (Autobahn's `prepareMessage`) and writes it to every subscriber but the publisher, then
replies to the publisher. No history, offsets or permissions: the ceiling of the stack. Its
Autobahn options are the echo baseline's (zbifrost's).

    python bench/broadcast_server.py --port 18776
"""

import argparse

import orjson
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet import reactor

from echo_server import EchoProtocol, set_zbifrost_options  # bench/ is on sys.path when run as a script


class BroadcastProtocol(EchoProtocol):  # its first frame is the echo's
    def onMessage(self, payload, isBinary):
        message = orjson.loads(payload)
        subscribers = self.factory.subscribers
        if message["event"] == "subscribe":
            subscribers.add(self)
            result = {"channel": message["channel"], "subscribed": True}
        else:
            frame = self.factory.prepareMessage(orjson.dumps(
                {"event": "message", "channel": message["channel"], "data": message["data"], "from": "p"}))
            for subscriber in subscribers:
                if subscriber is not self:
                    subscriber.sendPreparedMessage(frame)
            result = {"channel": message["channel"], "delivered": len(subscribers) - (self in subscribers)}
        self.sendMessage(orjson.dumps({"result": result, "_requestId": message.get("_requestId")}), False)

    def onClose(self, wasClean, code, reason):
        self.factory.subscribers.discard(self)


def main():
    parser = argparse.ArgumentParser(description="Autobahn/Twisted broadcast baseline")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    factory = WebSocketServerFactory()
    factory.protocol = BroadcastProtocol
    factory.subscribers = set()
    set_zbifrost_options(factory)
    reactor.listenTCP(args.port, factory, interface="127.0.0.1", backlog=2048)
    reactor.run()


if __name__ == "__main__":
    main()
