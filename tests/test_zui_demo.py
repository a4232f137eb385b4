"""The bundled demo workspace: `--zvafile @.zUI.demo` shows every action kind, and the
default run still serves zUI.level1.yaml as before."""

import os

import pytest_twisted

from zbifrost.testing import connect

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zui")


@pytest_twisted.inlineCallbacks
def test_the_demo_menu_links_to_tools_and_back(make_server):
    server = yield make_server(zvafile="@.zUI.demo")
    client = yield connect(server.url)
    assert client.info["session"]["zBlock"] == "root"
    tools = yield client.dispatch("Tools")
    assert tools["zBlock"] == "Tools" and "zBack" in tools["menu"]
    assert (yield client.dispatch("Greet")) == {"message": "Hello, zbifrost!"}
    assert (yield client.dispatch("Add")) == 5
    assert (yield client.dispatch("Who Am I"))["client_id"] == client.info["client_id"]
    assert (yield client.dispatch("Colors"))["display_event"] == "table"
    first = yield client.request_frame("dispatch", zKey="Server Time")
    assert (yield client.request_frame("dispatch", zKey="Server Time"))["_cached"] is True
    assert "time" in first["result"]
    assert (yield client.dispatch("zBack"))["zBlock"] == "root"
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_the_demo_import_reports_progress_the_wizard_and_the_dialog_run(make_server):
    server = yield make_server(zvafile="@.zUI.demo")
    client = yield connect(server.url)
    imported = yield client.request_frame("dispatch", zKey="Import Records")
    assert imported["result"] == {"imported": 5}
    progress = [frame for frame in client.frames if frame.get("event") == "progress"]
    assert [frame["current"] for frame in progress] == [1, 2, 3, 4, 5]
    wizard = yield client.dispatch("Setup Wizard")
    assert wizard == [{"message": "Starting setup"}, 42,
                      {"steps_before": 2, "results": [{"message": "Starting setup"}, 42]}]
    answered = client.dispatch("Sign Up")
    asked = yield client.next_event("input_request")
    assert asked["prompt"] == "Create an account"
    client.send({"event": "input_response", "requestId": asked["requestId"],
                 "value": {"username": "ada", "email": "ada@example.org", "password": "correct horse", "age": "36"}})
    assert (yield answered) == {"registered": "ada", "form": {"username": "ada", "email": "ada@example.org",
                                                              "password": "correct horse", "age": 36,
                                                              "newsletter": None}}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_the_demo_links_to_the_level1_file_and_back(make_server):
    server = yield make_server(zvafile="@.zUI.demo")
    client = yield connect(server.url)
    level1 = yield client.dispatch("Level 1 Menu")
    assert level1 == {"zBlock": "Level1Menu", "menu": ["Ping", "Echo Test", "Status", "stop"],
                      "zVaFile": "@.zUI.level1"}
    assert (yield client.dispatch("^Echo Test")) == {"message": "Echo: Hello from zBifrost"}
    assert (yield client.dispatch("^zBack"))["zVaFile"] == "@.zUI.demo"
    yield client.close()


def test_the_level1_file_is_unchanged():
    with open(os.path.join(DEMO, "zUI.level1.yaml"), encoding="utf-8") as handle:
        assert handle.read() == (
            'Level1Menu:\n'
            '  ~Root*: ["Ping", "Echo Test", "Status", "stop"]\n'
            '  "Ping": "Pong!"\n'
            '  "Echo Test": "Echo: Hello from zBifrost"\n'
            '  "Status": "Server is running"\n')
