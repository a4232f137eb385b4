"""Nothing a client sends names a file, imports a module or runs code; a server whose zUI
file points outside its workspace does not start, and says where."""


import pytest
import pytest_twisted

from tests.helpers import ENGINE
from zbifrost.config import ConfigError
from zbifrost.testing import BifrostError, connect


@pytest.mark.parametrize("message", [
    {"zKey": "@.plugins.funcs.explode"},
    {"zKey": "&funcs.explode()"},
    {"zKey": "zFunc(@.plugins.funcs.explode)"},
    {"zKey": "zLink(@.zUI.other.Start)"},
    {"zKey": "../../etc/passwd"},
    {"zKey": "Ping", "zBlock": "../../etc/passwd"},
    {"zKey": "Where", "zBlock": "@.zUI.other.Start"},
])
@pytest_twisted.inlineCallbacks
def test_client_text_that_looks_like_an_action_or_a_path_is_only_an_unknown_command(make_server, message):
    server = yield make_server(workspace=ENGINE, zvafile="@.zUI.main")
    client = yield connect(server.url)
    with pytest.raises(BifrostError) as caught:
        yield client.request("dispatch", **message)
    assert caught.value.code == "unknown_command"
    session = (yield client.request("connection_info"))["session"]
    assert (session["zVaFile"], session["zBlock"]) == ("@.zUI.main", "root")
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_server_whose_zui_file_links_outside_the_workspace_refuses_to_start(make_server, tmp_path):
    (tmp_path / "zUI.main.yaml").write_text("root:\n  Ping: Pong!\n  Out: zLink(@.zUI..x.B)\n")
    with pytest.raises(ConfigError) as caught:
        yield make_server(workspace=str(tmp_path), zvafile="@.zUI.main")
    assert str(caught.value).startswith("zUI file zUI.main.yaml, line 3: zLink target refused")


@pytest_twisted.inlineCallbacks
def test_a_zvafile_outside_the_workspace_refuses_to_start(make_server):
    with pytest.raises(ConfigError) as caught:
        yield make_server(workspace=ENGINE, zvafile="@.zUI..main")
    assert "zVaFile" in str(caught.value)
