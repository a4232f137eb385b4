"""The benchmark's baseline: the plainest Autobahn/Twisted JSON server doing zbifrost's job.

On open it sends one `{"event":"connection_info",...}` frame (so the load generator treats
both servers alike); for every message it parses the JSON with orjson and replies
`{"result":{"message":"Pong!"},"_requestId":<its _requestId>}`, the same bytes zbifrost
sends for `^Ping`. The Autobahn options that cost or save time are zbifrost's: no
compression, UTF-8 validation of incoming text, masked client frames required, unmasked
server frames, no auto-fragmentation, TCP_NODELAY. No zbifrost code is used.

    python bench/echo_server.py --port 18775
"""

import argparse

import orjson
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor

PONG = {"message": "Pong!"}
HELLO = orjson.dumps({"event": "connection_info", "data": {"server_version": "echo", "protocol": 1}})


class EchoProtocol(WebSocketServerProtocol):
    def onOpen(self):
        self.sendMessage(HELLO, False)

    def onMessage(self, payload, isBinary):
        message = orjson.loads(payload)
        self.sendMessage(orjson.dumps({"result": PONG, "_requestId": message.get("_requestId")}), False)


def set_zbifrost_options(factory):
    """The Autobahn options that cost or save time, set as zbifrost sets them."""
    factory.setProtocolOptions(
        versions=[13],
        webStatus=False,
        utf8validateIncoming=True,
        requireMaskedClientFrames=True,
        maskServerFrames=False,
        maxFramePayloadSize=65536,
        maxMessagePayloadSize=65536,
        autoFragmentSize=0,
        failByDrop=False,
        tcpNoDelay=True,
        perMessageCompressionAccept=lambda offers: None,
        allowNullOrigin=True,
    )


def serve(protocol, description, backlog, **factory_attributes):
    """Run an Autobahn server of `protocol`, with zbifrost's options, on 127.0.0.1:--port."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    factory = WebSocketServerFactory()
    factory.protocol = protocol
    for name, value in factory_attributes.items():
        setattr(factory, name, value)
    set_zbifrost_options(factory)
    reactor.listenTCP(args.port, factory, interface="127.0.0.1", backlog=backlog)
    reactor.run()


def main():
    serve(EchoProtocol, "Autobahn/Twisted JSON echo baseline", backlog=1024)


if __name__ == "__main__":
    main()
