"""The core protocol over a real socket: connection_info, Level-1 commands, errors, _requestId."""

import json

import pytest
import pytest_twisted

from zbifrost import __version__
from zbifrost.testing import BifrostError, connect


@pytest_twisted.inlineCallbacks
def test_connection_info_is_the_first_frame_with_the_compatible_fields(server):
    client = yield connect(server.url)
    info = client.info
    assert client.frames[0]["event"] == "connection_info"
    assert info["server_version"] == __version__
    assert info["protocol"] == 1
    assert {"connection_info", "schema_cache"} <= set(info["features"])
    assert info["auth"] == {"authenticated": True, "user": "anonymous", "role": "guest"}
    assert info["session"] == {"workspace": "zui", "zVaFile": "@.zUI.level1", "zBlock": "Level1Menu",
                               "mode": "zBifrost"}
    assert info["limits"] == {"max_message_size": 65536, "rate": 50, "burst": 100, "max_in_flight": 16}
    assert info["client_id"].startswith("c-")
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_level1_commands_answer_in_sequence_on_one_socket(server):
    client = yield connect(server.url)
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    assert (yield client.dispatch("^Echo Test")) == {"message": "Echo: Hello from zBifrost"}
    assert (yield client.dispatch("^Status")) == {"message": "Server is running"}
    assert (yield client.dispatch("Ping")) == {"message": "Pong!"}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_unknown_command_is_an_error_and_the_connection_stays_usable(server):
    client = yield connect(server.url)
    with pytest.raises(BifrostError) as caught:
        yield client.dispatch("^Nope")
    assert caught.value.code == "unknown_command"
    assert caught.value.message == "Unknown command: ^Nope"
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_request_id_is_echoed_unchanged_on_replies_and_errors(server):
    client = yield connect(server.url)
    cases = [
        ({"event": "dispatch", "zKey": "^Ping", "_requestId": "abc-1"}, "result"),
        ({"event": "dispatch", "zKey": "^Ping", "_requestId": 7.5}, "result"),
        ({"event": "dispatch", "zKey": "^Nope", "_requestId": 42}, "unknown_command"),
        ({"event": "nope", "_requestId": "e1"}, "unknown_event"),
        ({"event": "dispatch", "zKey": 3, "_requestId": 0}, "missing_field"),
        ({"event": "subscribe", "channel": "bad name!", "_requestId": "c"}, "missing_field"),
        ({"event": "ping", "_requestId": -1}, "result"),
    ]
    for message, expected in cases:
        client.send(message)
        reply = yield client.next_frame()
        assert reply["_requestId"] == message["_requestId"]
        assert ("result" in reply) if expected == "result" else (reply["code"] == expected)
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_each_malformed_message_gets_its_error_code_and_the_connection_stays_usable(server):
    client = yield connect(server.url)
    cases = [
        (b"{not json", "bad_json"),
        (b"[1,2]", "bad_message"),
        (b'"x"', "bad_message"),
        (b"null", "bad_message"),
        (b"{}", "bad_message"),
        (b'{"event": 5}', "bad_message"),
        (b'{"event": "launch_missiles"}', "unknown_event"),
        (b'{"event": "dispatch"}', "missing_field"),
        (b'{"event": "dispatch", "zKey": 12}', "missing_field"),
        (b'{"event": "dispatch", "zKey": "^Ping", "args": "no"}', "missing_field"),
        (b'{"event": "dispatch", "zKey": "^Nope"}', "unknown_command"),
        (b'{"event": "dispatch", "zKey": "^Ping", "zBlock": "Nowhere"}', "unknown_command"),
    ]
    for payload, code in cases:
        client.send_raw(payload)
        reply = yield client.next_frame()
        assert reply["code"] == code, payload
        assert isinstance(reply["error"], str) and reply["error"]
        assert "Traceback" not in reply["error"]
        assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_messages_without_event_but_with_zkey_or_cmd_are_dispatches(server):
    client = yield connect(server.url)
    client.send({"zKey": "^Ping", "_requestId": 1})
    assert (yield client.next_frame()) == {"result": {"message": "Pong!"}, "_requestId": 1}
    client.send({"cmd": "^Status", "_requestId": 2})
    assert (yield client.next_frame()) == {"result": {"message": "Server is running"}, "_requestId": 2}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_binary_frame_holding_json_is_handled_like_text(server):
    client = yield connect(server.url)
    client.send_raw(b'{"event": "dispatch", "zKey": "^Ping", "_requestId": "b"}', binary=True)
    reply = yield client.next_frame()
    assert reply == {"result": {"message": "Pong!"}, "_requestId": "b"}
    client.send_raw(b"\xff\xfe not utf-8", binary=True)
    assert (yield client.next_frame())["code"] == "bad_json"
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_three_concurrent_clients_get_only_their_own_replies(server):
    clients = []
    for _ in range(3):
        clients.append((yield connect(server.url)))
    keys = ["^Ping", "^Echo Test", "^Status"]
    expected = ["Pong!", "Echo: Hello from zBifrost", "Server is running"]
    for round_number in range(5):
        for client, key in zip(clients, keys, strict=False):
            client.send({"event": "dispatch", "zKey": key, "_requestId": f"{key}-{round_number}"})
    for client, key, message in zip(clients, keys, expected, strict=False):
        for round_number in range(5):
            reply = yield client.next_frame()
            assert reply == {"result": {"message": message}, "_requestId": f"{key}-{round_number}"}
    for client in clients:
        assert len(client.frames) == 1 + 5  # connection_info and its own five replies, nothing else
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_connection_info_ping_and_cache_events_answer(server):
    client = yield connect(server.url)
    info = yield client.request("connection_info")
    assert info["client_id"] == client.info["client_id"]
    assert isinstance((yield client.request("ping"))["pong"], float)
    assert (yield client.request("cache_stats")) == {"query_cache": {"hits": 0, "misses": 0, "expired": 0,
                                                                     "size": 0},
                                                     "schema_cache": {"files": 1, "reloads": 0}}
    assert (yield client.request("clear_cache")) == {"cleared": 0}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_discover_lists_the_loaded_file_and_introspect_describes_a_command(server):
    client = yield connect(server.url)
    found = yield client.request("discover")
    assert found["zVaFile"] == "@.zUI.level1"
    block = found["blocks"]["Level1Menu"]
    assert block["menu"] == ["Ping", "Echo Test", "Status", "stop"]
    assert [c["key"] for c in block["commands"]] == ["Ping", "Echo Test", "Status"]
    described = yield client.request("introspect", zKey="^Ping")
    assert described["key"] == "Ping" and described["block"] == "Level1Menu"
    assert described["kind"] == "message" and described["roles"] is None
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_the_zbifrost_subprotocol_is_selected_when_offered(server):
    client = yield connect(server.url, protocols=["zbifrost.v1"])
    assert client._protocol.websocket_protocol_in_use == "zbifrost.v1"
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_text_frame_with_invalid_utf8_closes_1007_with_a_close_frame(server):
    client = yield connect(server.url)
    client.send_raw(b'{"event": "ping", "x": "\xff"}')
    code, _ = yield client.closed
    assert code == 1007


@pytest_twisted.inlineCallbacks
def test_replies_larger_than_max_message_size_are_delivered_whole(make_server):
    from tests.helpers import start_engine

    server = yield start_engine(make_server)  # max_message_size limits clients' messages only
    client = yield connect(server.url)
    assert (yield client.dispatch("^Big")) == "x" * 200000
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_replies_of_every_frame_length_encoding_reach_an_independent_client(make_server):
    from tests.helpers import in_thread, start_engine, websockets_exchange

    server = yield start_engine(make_server, rate=0)
    sizes = [0, 40, 80, 100, 150, 65300, 65450]  # replies cross the 125 and 65535 length limits
    messages = [{"event": "dispatch", "zKey": "Cached Echo", "args": ["y" * size], "_requestId": size}
                for size in sizes] + [{"event": "dispatch", "zKey": "Big", "_requestId": "big"}]
    _, replies = yield in_thread(websockets_exchange, server.url, messages, max_size=None)
    assert [reply["_requestId"] for reply in replies] == [*sizes, "big"]
    assert [len(reply["result"]["args"][0]) for reply in replies[:-1]] == sizes
    assert replies[-1]["result"] == "x" * 200000


@pytest_twisted.inlineCallbacks
def test_with_compression_on_replies_are_deflated_and_big_ones_still_arrive(make_server):
    from websockets.sync.client import connect as ws_connect

    from tests.helpers import in_thread, start_engine

    server = yield start_engine(make_server, compression=True)

    def exchange():
        with ws_connect(server.url, max_size=None, open_timeout=10) as ws:  # offers permessage-deflate
            extensions = [type(extension).__name__ for extension in ws.protocol.extensions]
            ws.recv(timeout=10)
            replies = []
            for key in ("^Ping", "^Big"):
                ws.send(json.dumps({"zKey": key, "_requestId": key}))
                replies.append(json.loads(ws.recv(timeout=10)))
            return extensions, replies

    extensions, replies = yield in_thread(exchange)
    assert extensions == ["PerMessageDeflate"]
    assert replies[0] == {"result": {"message": "Pong!"}, "_requestId": "^Ping"}
    assert replies[1]["result"] == "x" * 200000
