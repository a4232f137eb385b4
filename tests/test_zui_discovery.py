"""discover and introspect describe every action kind of the loaded file."""


import pytest_twisted

from tests.helpers import ENGINE
from zbifrost.testing import connect


@pytest_twisted.inlineCallbacks
def test_discover_names_the_kind_of_every_command(make_server):
    server = yield make_server(workspace=ENGINE, zvafile="@.zUI.main")
    client = yield connect(server.url)
    found = yield client.request("discover")
    assert found["zVaFile"] == "@.zUI.main"
    assert list(found["blocks"]) == ["root", "Shop", "Checkout", "Admin"]
    kinds = {command["key"]: command["kind"] for command in found["blocks"]["root"]["commands"]}
    assert {key: kinds[key] for key in ("Ping", "Level", "Shop", "Add", "Add Short", "Async", "Wizard", "Profile")} == {
        "Ping": "message", "Level": "display", "Shop": "link", "Add": "function", "Add Short": "function",
        "Async": "function", "Wizard": "wizard", "Profile": "dialog"}
    add_dict = next(c for c in found["blocks"]["root"]["commands"] if c["key"] == "Add Dict")
    assert add_dict["description"] == "adds in dict form"
    shop = found["blocks"]["Shop"]
    assert shop["menu"] == ["Price", "Checkout", "zBack"]
    assert [command["key"] for command in shop["commands"]] == ["^Price", "Checkout"]
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_introspect_describes_dialog_fields_link_targets_wizard_steps_and_zback(make_server):
    server = yield make_server(workspace=ENGINE, zvafile="@.zUI.main")
    client = yield connect(server.url)
    profile = yield client.request("introspect", zKey="Profile")
    assert profile["kind"] == "dialog" and profile["description"] == "Edit the profile"
    assert profile["prompt"] == "Your profile"
    assert profile["fields"][0] == {"name": "name", "type": "string", "required": True, "label": "Name",
                                    "min": 2, "max": 10}
    assert profile["fields"][5]["pattern"] == "[A-Z][a-z]+[0-9]"
    assert (yield client.request("introspect", zKey="Other File"))["target"] == {"zVaFile": "@.zUI.other",
                                                                                 "zBlock": "Start"}
    assert (yield client.request("introspect", zKey="Wizard"))["steps"] == ["first", "second", "third"]
    cached = yield client.request("introspect", zKey="Cached Count")
    assert (cached["kind"], cached["cache_ttl"]) == ("function", 60)
    back = yield client.request("introspect", zKey="^zBack", zBlock="Checkout")
    assert (back["kind"], back["block"], back["key"]) == ("back", "Checkout", "zBack")
    yield client.close()
