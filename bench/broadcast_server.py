"""The fan-out benchmark's baseline: the plainest Autobahn/Twisted broadcast doing zbifrost's
channel job for one channel.

On open it sends one `connection_info`-like frame. `{"event": "subscribe"}` adds the client to
the subscribers; `{"event": "publish", "data": ...}` encodes one `message` frame, prepares it
once (Autobahn's `prepareMessage`) and writes it to every subscriber but the publisher, then
replies to the publisher. No history, offsets or permissions: the ceiling of the stack. Its
Autobahn options are the echo baseline's (zbifrost's).

    python bench/broadcast_server.py --port 18776
"""

import orjson

from echo_server import EchoProtocol, serve  # bench/ is on sys.path when run as a script


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
    serve(BroadcastProtocol, "Autobahn/Twisted broadcast baseline", backlog=2048, subscribers=set())


if __name__ == "__main__":
    main()
