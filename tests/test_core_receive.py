"""The receive fast path (protocol.BifrostServerProtocol.dataReceived): the common frame skips
Autobahn's general frame parser, and everything else gets exactly the outcome it gets there."""

import pytest_twisted

from zbifrost.testing import connect


@pytest_twisted.inlineCallbacks
def test_whole_masked_text_and_binary_messages_skip_autobahns_frame_parser(make_server, monkeypatch):
    server = yield make_server(rate=0)
    client = yield connect(server.url)
    parsed = []
    protocol_class = server.factory.protocol
    general_path = protocol_class.processData
    monkeypatch.setattr(protocol_class, "processData", lambda self: parsed.append(1) or general_path(self))
    for _ in range(20):
        assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    client.send_raw(b'{"event": "dispatch", "zKey": "^Ping", "_requestId": 99}', binary=True)
    assert (yield client.next_frame(lambda frame: frame.get("_requestId") == 99))["result"] == {"message": "Pong!"}
    client.send_raw(b"not json")
    assert (yield client.next_frame(lambda frame: "code" in frame))["code"] == "bad_json"
    assert parsed == []
    yield client.close()
