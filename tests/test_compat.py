"""zBifrost 1.5.4 clients keep working (docs/protocol.md sections 2-4): a client that resolves a
request on the first frame carrying its `_requestId`, the legacy `{"action": ...}` form,
`set_cache_ttl`, `get_schema`, `realtime_sync` and real `schema_cache` figures."""

import json

import pytest
import pytest_twisted
from websockets.sync.client import connect as ws_connect

from tests.helpers import in_thread, start_engine
from tests.test_zui_reload import rewrite
from zbifrost.testing import BifrostError, connect

SIGN_UP = {"username": "ada", "email": "ada@example.org", "password": "correct horse"}


class OldClient:
    """The rule of zBifrost 1.5.4's JavaScript client, over a blocking socket: a frame that
    carries the `_requestId` of a pending request resolves it, whatever else it holds; any
    other frame is routed by its `event` (progress, input_request, ...)."""

    def __init__(self, ws):
        self.ws = ws
        self.routed = []  # frames routed by event: what the old client's hooks would see

    def request(self, message, on_input=None):
        """Send a message and return the frame that resolves it; an input_request routed by
        event is answered with `on_input(frame)`, as the old client's onInput did."""
        self.ws.send(json.dumps(message))
        while True:
            frame = json.loads(self.ws.recv(timeout=30))
            if frame.get("_requestId") == message["_requestId"]:
                return frame
            self.routed.append(frame)
            if frame.get("event") == "input_request" and on_input is not None:
                self.ws.send(json.dumps({"event": "input_response", "requestId": frame["requestId"],
                                         "value": on_input(frame)}))


def old_client_session(url):
    with ws_connect(url, open_timeout=10) as ws:
        client = OldClient(ws)
        info = json.loads(ws.recv(timeout=10))
        imported = client.request({"event": "dispatch", "zKey": "^Import Records", "_requestId": 1})
        signed_up = client.request({"action": "dispatch", "zKey": "^Sign Up", "_requestId": 2},
                                   on_input=lambda frame: SIGN_UP)
        return info, imported, signed_up, client.routed


@pytest_twisted.inlineCallbacks
def test_an_old_client_gets_the_real_import_result_and_answers_the_input_request(make_server):
    server = yield make_server(zvafile="@.zUI.demo")
    info, imported, signed_up, routed = yield in_thread(old_client_session, server.url)
    assert info["event"] == "connection_info"
    assert imported == {"result": {"imported": 5}, "_requestId": 1}
    assert signed_up["result"]["registered"] == "ada"
    assert [frame["event"] for frame in routed] == ["progress"] * 5 + ["input_request"]
    assert {frame["_forRequestId"] for frame in routed} == {1, 2}


@pytest.mark.parametrize("message, expected", [
    ({"action": "ping", "_requestId": 1}, "result"),
    ({"action": "get_schema", "_requestId": 2}, "not_available"),
    ({"action": "nope", "_requestId": 3}, "unknown_event"),
    ({"action": 5, "zKey": "^Ping", "_requestId": 4}, "bad_message"),
    ({"event": "ping", "action": "nope", "_requestId": 5}, "result"),  # `event` wins
    ({"zKey": "^Ping", "_requestId": 6}, "result"),  # no action: still a dispatch
])
@pytest_twisted.inlineCallbacks
def test_the_legacy_action_form_names_the_event(server, message, expected):
    client = yield connect(server.url)
    client.send(message)
    reply = yield client.next_frame()
    assert reply.get("code", "result" if "result" in reply else None) == expected
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_get_schema_is_not_available(server):
    client = yield connect(server.url)
    with pytest.raises(BifrostError) as caught:
        yield client.request("get_schema", model="users")
    assert caught.value.code == "not_available"
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_set_cache_ttl_changes_the_ttl_of_caching_commands_only_and_zero_turns_caching_off(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    first = yield client.dispatch("Cached Count")
    assert (yield client.request_frame("dispatch", zKey="Cached Count"))["_cached"] is True
    assert (yield client.request("set_cache_ttl", ttl=5)) == {"message": "Query cache TTL set to 5s", "ttl": 5}
    assert (yield client.request("cache_stats"))["query_cache"]["size"] == 0  # cleared
    assert (yield client.request("introspect", zKey="Cached Count"))["cache_ttl"] == 5
    assert (yield client.request("introspect", zKey="Ping"))["cache_ttl"] is None
    assert (yield client.dispatch("Cached Count")) != first  # a fresh run after the clear
    assert (yield client.request_frame("dispatch", zKey="Cached Count"))["_cached"] is True
    assert (yield client.request("set_cache_ttl", ttl=0))["message"] == "Query cache TTL set to 0s"
    once = yield client.request_frame("dispatch", zKey="Cached Count")
    again = yield client.request_frame("dispatch", zKey="Cached Count")
    assert "_cached" not in once and "_cached" not in again and once["result"] != again["result"]
    yield client.close()


@pytest.mark.parametrize("fields", [{}, {"ttl": -1}, {"ttl": "5"}, {"ttl": True}, {"ttl": None}])
@pytest_twisted.inlineCallbacks
def test_set_cache_ttl_refuses_a_missing_negative_or_non_number_ttl(server, fields):
    client = yield connect(server.url)
    reply = yield client.request_frame("set_cache_ttl", **fields)
    assert reply["code"] == "missing_field" and "'ttl'" in reply["error"]
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_connection_info_lists_realtime_sync_and_counts_zui_files_and_reloads(make_server, tmp_path):
    (tmp_path / "zUI.main.yaml").write_text('root:\n  "Version": "one"\n  "Other": "zLink(@.zUI.other.Start)"\n')
    (tmp_path / "zUI.other.yaml").write_text('Start:\n  "Hi": "hi"\n')
    server = yield make_server(workspace=str(tmp_path), zvafile="@.zUI.main")
    client = yield connect(server.url)
    assert "realtime_sync" in client.info["features"] and "channels" in client.info["features"]
    assert client.info["cache_stats"]["schema_cache"] == {"files": 2, "reloads": 0}
    rewrite(tmp_path / "zUI.main.yaml", 'root:\n  "Version": "two"\n')
    server.hub.workspace.refresh()
    assert (yield client.request("cache_stats"))["schema_cache"] == {"files": 2, "reloads": 1}
    yield client.close()
