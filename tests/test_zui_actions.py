"""Every action kind over a real socket: messages, zDisplay, zFunc in its three spellings,
plugins run in threads, as coroutines and as Deferreds, the request context, progress and
display frames, wizards, timeouts and failures (the zUI engine's workspace in
tests/workspaces/engine)."""

import re

import pytest
import pytest_twisted
from twisted.logger import globalLogPublisher

from tests.helpers import start_engine
from zbifrost.testing import BifrostError, connect


def plugin_module(server, key="Blocking"):
    """The module object the server imported for the function behind `key`."""
    zfile = server.hub.workspace.file("@.zUI.main")
    return zfile.blocks["root"].find(key).action.module.module


@pytest.fixture
def open_gates():
    """Gates of blocking plugins to open at the end of a test, so no pool thread lingers."""
    gates = []
    yield gates
    for gate in gates:
        gate.set()


@pytest_twisted.inlineCallbacks
def test_plain_strings_and_zdisplay_answer_synchronously_with_their_shapes(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    assert (yield client.dispatch("Level")) == {"message": "Careful", "level": "warning"}
    assert server.hub.dispatcher.dispatch(
        server.hub.clients[client.info["client_id"]], {"zKey": "^Ping"}, None) == {"message": "Pong!"}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_zfunc_string_dict_and_ampersand_forms_call_the_plugin_with_literal_arguments(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    assert (yield client.dispatch("^Add")) == 5
    assert (yield client.dispatch("^Add Dict")) == 6
    assert (yield client.dispatch("^Add Short")) == 3.5
    assert (yield client.dispatch("Literals")) == [[1, "two", {"k": None}, True, False, None, -3]]
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_async_deferred_and_inline_callbacks_plugins_run_on_the_reactor(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    assert (yield client.dispatch("Async")) == 42
    assert (yield client.dispatch("Deferred")) == 15
    assert (yield client.dispatch("Inline Callbacks")) == 8
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_plugin_with_ctx_sees_the_request_and_runs_in_a_pool_thread(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    result = yield client.dispatch("Context", args=[1, "x"], data={"k": "v"})
    assert result == {"user": "anonymous", "role": "guest", "client_id": client.info["client_id"],
                      "args": [1, "x"], "data": {"k": "v"}, "zHat": None, "thread": True}
    yield client.close()


def _frames_of_request(client, request_id):
    """The events of one dispatch (`_forRequestId`) and its reply (`_requestId`), in order."""
    return [frame for frame in client.frames if request_id in (frame.get("_requestId"), frame.get("_forRequestId"))]


@pytest_twisted.inlineCallbacks
def test_progress_and_display_frames_come_before_the_result_and_only_to_the_asker(make_server):
    server = yield start_engine(make_server)
    asker = yield connect(server.url)
    bystander = yield connect(server.url)
    reply = yield asker.request_frame("dispatch", zKey="Progress")
    assert reply["result"] == {"counted": 3}
    request_id = reply["_requestId"]
    assert _frames_of_request(asker, request_id) == [
        {"event": "progress", "_forRequestId": request_id, "current": 1, "total": 3, "label": "Counting"},
        {"event": "progress", "_forRequestId": request_id, "current": 2, "total": 3, "label": "Counting"},
        {"event": "progress", "_forRequestId": request_id, "current": 3, "total": 3, "label": "Counting"},
        {"event": "display", "_forRequestId": request_id, "display_event": "text", "data": {"content": "counted"}},
        reply,
    ]
    # Anything sent to the bystander before the asker's result would arrive before this pong.
    yield bystander.dispatch("^Ping")
    assert [frame.get("event") for frame in bystander.frames] == ["connection_info", None]
    yield asker.close()
    yield bystander.close()


@pytest_twisted.inlineCallbacks
def test_progress_and_display_from_a_coroutine_on_the_reactor(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    reply = yield client.request_frame("dispatch", zKey="Reactor Progress")
    request_id = reply["_requestId"]
    assert _frames_of_request(client, request_id) == [
        {"event": "progress", "_forRequestId": request_id, "current": 1, "total": 1, "label": None},
        {"event": "display", "_forRequestId": request_id, "display_event": "json", "data": {"value": {"a": 1}}},
        {"result": "shown", "_requestId": request_id},
    ]
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_blocking_plugin_does_not_stall_another_client(make_server, open_gates):
    server = yield start_engine(make_server)
    gate = plugin_module(server).GATES["blocking"]
    open_gates.append(gate)
    sleeper = yield connect(server.url)
    other = yield connect(server.url)
    blocked = sleeper.dispatch("Blocking")
    assert (yield other.dispatch("^Ping")) == {"message": "Pong!"}
    assert (yield sleeper.request("ping"))["pong"] > 0  # the sleeper's own connection answers too
    assert not blocked.called
    gate.set()
    assert (yield blocked) == {"gate": "blocking"}
    yield sleeper.close()
    yield other.close()


@pytest_twisted.inlineCallbacks
def test_a_slow_thread_gets_timeout_and_its_late_result_is_never_sent(make_server, open_gates):
    server = yield start_engine(make_server)
    gate = plugin_module(server).GATES["slow"]
    open_gates.append(gate)
    client = yield connect(server.url)
    reply = yield client.request_frame("dispatch", zKey="Slow Thread")
    assert reply["code"] == "timeout"
    gate.set()  # the thread finishes in the background now
    conn = server.hub.clients[client.info["client_id"]]
    while server.hub.thread_pool.held_by(conn):
        yield client.request("ping")
    yield client.request("ping")
    assert [frame for frame in client.frames if frame.get("_requestId") == reply["_requestId"]] == [reply]
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_deferred_that_never_fires_gets_timeout_and_the_connection_goes_on(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    with pytest.raises(BifrostError) as caught:
        yield client.dispatch("Never")
    assert caught.value.code == "timeout"
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_raising_plugin_gives_command_failed_with_an_error_id_that_is_logged_with_the_traceback(make_server):
    server = yield start_engine(make_server)
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        client = yield connect(server.url)
        with pytest.raises(BifrostError) as caught:
            yield client.dispatch("Boom")
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert caught.value.code == "command_failed"
    error_id = re.fullmatch(r"The command failed \(error id ([0-9a-f]{12})\)", caught.value.message).group(1)
    assert "Traceback" not in caught.value.message and "/" not in caught.value.message
    assert "blew up" not in caught.value.message
    failures = [event for event in logged if event.get("error_id") == error_id]
    assert failures and "the plugin blew up on purpose" in str(failures[0]["log_failure"].value)
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_wizard_runs_its_steps_in_order_and_each_sees_the_earlier_results(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    assert (yield client.dispatch("Wizard")) == [{"message": "one"}, 2, {"zHat": [{"message": "one"}, 2]}]
    assert (yield client.dispatch("Async Wizard")) == [2, {"zHat": [2]}]
    yield client.close()
