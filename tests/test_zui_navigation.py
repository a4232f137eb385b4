"""Per-client navigation over a real socket: zLink moves one client, zBack brings it back,
later keys resolve in the new block, links to other files change the client's zVaFile."""


import pytest
import pytest_twisted

from tests.helpers import start_engine
from zbifrost.context import MAX_HISTORY, Place
from zbifrost.testing import BifrostError, connect


@pytest_twisted.inlineCallbacks
def test_zlink_moves_the_client_and_later_keys_resolve_in_the_new_block(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    assert (yield client.dispatch("^Shop")) == {"zBlock": "Shop", "menu": ["Price", "Checkout", "zBack"],
                                                 "zVaFile": "@.zUI.main"}
    assert (yield client.dispatch("^Price")) == {"message": "42 coins"}
    with pytest.raises(BifrostError) as caught:
        yield client.dispatch("^Ping")  # a key of the block it left
    assert caught.value.code == "unknown_command"
    session = (yield client.request("connection_info"))["session"]
    assert (session["zVaFile"], session["zBlock"]) == ("@.zUI.main", "Shop")
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_zback_returns_step_by_step_and_stays_put_at_the_first_block(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    yield client.dispatch("^Shop")
    assert (yield client.dispatch("Checkout"))["zBlock"] == "Checkout"
    # Checkout does not define zBack: it still works there, as zBack and as ^zBack.
    assert (yield client.dispatch("zBack"))["zBlock"] == "Shop"
    assert (yield client.dispatch("^zBack")) == {"zBlock": "root", "zVaFile": "@.zUI.main",
                                                  "menu": ["Ping", "Shop", "Other File", "Add"]}
    assert (yield client.dispatch("^zBack"))["zBlock"] == "root"
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_two_clients_navigate_independently(make_server):
    server = yield start_engine(make_server)
    walker = yield connect(server.url)
    stayer = yield connect(server.url)
    yield walker.dispatch("^Shop")
    yield walker.dispatch("^Checkout")
    assert (yield stayer.dispatch("^Ping")) == {"message": "Pong!"}
    assert (yield stayer.request("connection_info"))["session"]["zBlock"] == "root"
    assert (yield walker.dispatch("^Pay")) == {"message": "Paid"}
    with pytest.raises(BifrostError):
        yield stayer.dispatch("^Pay")
    assert (yield stayer.dispatch("^zBack"))["zBlock"] == "root"  # its own history is empty
    assert (yield walker.dispatch("^zBack"))["zBlock"] == "Shop"
    yield walker.close()
    yield stayer.close()


@pytest_twisted.inlineCallbacks
def test_zlink_to_another_file_changes_the_zvafile_and_discover_follows(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    assert (yield client.dispatch("Other File")) == {"zBlock": "Start", "menu": ["Where", "Home"],
                                                      "zVaFile": "@.zUI.other"}
    assert (yield client.dispatch("^Where")) == {"message": "in the other file"}
    assert (yield client.request("discover"))["zVaFile"] == "@.zUI.other"
    assert (yield client.dispatch("^zBack"))["zVaFile"] == "@.zUI.main"
    assert (yield client.dispatch("Other Default"))["zBlock"] == "Start"  # the file's first block
    assert (yield client.dispatch("Home"))["zBlock"] == "root"
    assert (yield client.dispatch("Nested File")) == {"zBlock": "Inside", "menu": [], "zVaFile": "@.sub.zUI.inner"}
    assert (yield client.dispatch("Where")) == {"message": "in a subfolder"}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_zblock_in_a_dispatch_runs_a_key_of_another_block_without_moving(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    assert (yield client.dispatch("Pay", zBlock="Checkout")) == {"message": "Paid"}
    assert (yield client.request("connection_info"))["session"]["zBlock"] == "root"
    yield client.close()


def test_session_history_is_bounded_so_a_zlink_loop_cannot_grow_it():
    session = Place("@.zUI.main", "root")
    for _ in range(MAX_HISTORY * 3):
        session.move_to("@.zUI.main", "Shop")
    assert len(session.history) == MAX_HISTORY
    for _ in range(MAX_HISTORY + 5):
        session.back()
    assert (session.zvafile, session.zblock) == ("@.zUI.main", "Shop")
