"""Reload: an edited zUI file or plugin is served on a later request, and an edit that does
not load is logged with its file and line while the last good version keeps serving."""

import os
import shutil

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent, globalLogPublisher

from zbifrost.testing import connect

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workspaces", "reload")
ATTEMPTS = 50  # polls of 0.1 s of reactor time: the reloader checks every 0.5 s


@pytest.fixture
def workspace(tmp_path):
    copy = tmp_path / "reload"
    shutil.copytree(TEMPLATE, copy)
    return copy


@pytest.fixture
def logged_errors():
    errors = []

    def observe(event):
        if event.get("log_level") is not None and event["log_level"].name in ("error", "critical"):
            errors.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield errors
    globalLogPublisher.removeObserver(observe)


@defer.inlineCallbacks
def eventually(probe):
    """Poll `probe()` (a Deferred or value) until it is truthy; fail after ATTEMPTS polls."""
    for _ in range(ATTEMPTS):
        outcome = yield probe()
        if outcome:
            return outcome
        yield task.deferLater(reactor, 0.1, lambda: None)
    raise AssertionError("the condition never held")


def rewrite(path, text):
    path.write_text(text)
    stat = os.stat(path)  # make sure the modification time moves, even on a coarse clock
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


@pytest_twisted.inlineCallbacks
def test_an_edited_zui_file_is_served_on_a_later_request(make_server, workspace):
    server = yield make_server(workspace=str(workspace), zvafile="@.zUI.main")
    client = yield connect(server.url)
    assert (yield client.dispatch("Version")) == {"message": "one"}
    rewrite(workspace / "zUI.main.yaml", 'root:\n  "Version": "two"\n  "Added": "new key"\n')
    yield eventually(lambda: client.dispatch("Version").addCallback(lambda result: result == {"message": "two"}))
    assert (yield client.dispatch("Added")) == {"message": "new key"}
    yield client.close()


@pytest.mark.parametrize("replaced", [False, True])
@pytest_twisted.inlineCallbacks
def test_a_zui_edit_that_keeps_the_modification_time_is_served_when_the_size_or_inode_changes(
        make_server, workspace, replaced):
    server = yield make_server(workspace=str(workspace), zvafile="@.zUI.main")
    client = yield connect(server.url)
    assert (yield client.dispatch("Version")) == {"message": "one"}
    path = workspace / "zUI.main.yaml"
    before = os.stat(path)
    if replaced:  # a new file of the same size renamed over the old one (as deploys do)
        fresh = workspace / "zUI.main.yaml.new"
        fresh.write_text(path.read_text().replace('"one"', '"two"'))
        os.utime(fresh, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(fresh, path)
    else:  # edited in place within the clock's resolution: only the size tells
        path.write_text(path.read_text().replace('"one"', '"two, longer"'))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns
    expected = {"message": "two" if replaced else "two, longer"}
    yield eventually(lambda: client.dispatch("Version").addCallback(lambda result: result == expected))
    yield client.close()


@pytest.mark.parametrize("broken, line", [
    ('root:\n  "Version": "two"\n  bad: [unclosed\n', "line 4"),
    ('root:\n  "Version": "two"\n  "Nope": {zUnknown: 1}\n', "line 3"),
    ('root:\n  "Version": "two"\n  "Gone": "&live.missing()"\n', "line 3"),
])
@pytest_twisted.inlineCallbacks
def test_a_broken_zui_edit_is_logged_with_file_and_line_and_the_last_good_version_serves(
        make_server, workspace, logged_errors, broken, line):
    server = yield make_server(workspace=str(workspace), zvafile="@.zUI.main")
    client = yield connect(server.url)
    rewrite(workspace / "zUI.main.yaml", broken)
    complaint = yield eventually(lambda: [error for error in logged_errors if "zUI.main.yaml" in error])
    assert f"zUI file zUI.main.yaml, {line}" in complaint[0]
    assert (yield client.dispatch("Version")) == {"message": "one"}
    rewrite(workspace / "zUI.main.yaml", 'root:\n  "Version": "fixed"\n')
    yield eventually(lambda: client.dispatch("Version").addCallback(lambda result: result == {"message": "fixed"}))
    assert len([error for error in logged_errors if "zUI.main.yaml" in error]) == 1  # logged once per edit
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_an_edited_plugin_is_served_on_a_later_request(make_server, workspace):
    server = yield make_server(workspace=str(workspace), zvafile="@.zUI.main")
    client = yield connect(server.url)
    assert (yield client.dispatch("Plugin")) == 1
    rewrite(workspace / "plugins" / "live.py", "def version():\n    return 2\n")
    yield eventually(lambda: client.dispatch("Plugin").addCallback(lambda result: result == 2))
    yield client.close()


@pytest.mark.parametrize("broken, complaint", [
    ("def version(:\n    return 2\n", "plugin plugins/live.py, line 1: SyntaxError"),
    ("\n\nraise RuntimeError('import fails')\n", "plugin plugins/live.py, line 3: RuntimeError: import fails"),
    ("def other():\n    return 2\n", "plugin plugins/live.py: no function 'version'"),
    ("def version(required):\n    return 2\n", "version() no longer takes 0 argument(s)"),
])
@pytest_twisted.inlineCallbacks
def test_a_broken_plugin_edit_is_logged_and_the_last_good_version_serves(
        make_server, workspace, logged_errors, broken, complaint):
    server = yield make_server(workspace=str(workspace), zvafile="@.zUI.main")
    client = yield connect(server.url)
    assert (yield client.dispatch("Plugin")) == 1
    rewrite(workspace / "plugins" / "live.py", broken)
    found = yield eventually(lambda: [error for error in logged_errors if "live.py" in error])
    assert complaint in found[0]
    assert (yield client.dispatch("Plugin")) == 1
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_plugin_function_and_the_zui_key_using_it_can_be_removed_together(make_server, workspace, logged_errors,
                                                                            log_events):
    server = yield make_server(workspace=str(workspace), zvafile="@.zUI.main")
    client = yield connect(server.url)
    assert (yield client.dispatch("Plugin")) == 1
    rewrite(workspace / "plugins" / "live.py", "def renamed():\n    return 3\n")
    rewrite(workspace / "zUI.main.yaml", 'root:\n  "Version": "one"\n  "Renamed": "&live.renamed()"\n')
    yield eventually(lambda: client.request_frame("dispatch", zKey="Renamed").addCallback(
        lambda reply: reply.get("result") == 3))
    reloaded = [formatEvent(event) for event in log_events if formatEvent(event).startswith("Plugin reloaded")]
    assert reloaded == ["Plugin reloaded: plugins/live.py"]  # once: the new module served the new zUI file
    assert [error for error in logged_errors if "live.py" in error] == []
    # control: a later edit that does not load is logged, and the same capture holds it
    rewrite(workspace / "plugins" / "live.py", "def renamed(:\n    return 3\n")
    yield eventually(lambda: [error for error in logged_errors if "live.py" in error])
    yield client.close()
