"""Per-command roles with auth on: discover hides, dispatch and introspect forbid, and
clear_cache and set_cache_ttl need the admin role."""


import pytest
import pytest_twisted

from tests.helpers import ENGINE
from zbifrost.auth import hash_token
from zbifrost.testing import BifrostError, connect

TOKENS = {"admin-token": ("ada", "admin"), "user-token": ("bob", "user"), "auditor-token": ("eve", "auditor")}


@pytest.fixture
def tokens_file(tmp_path):
    path = tmp_path / "tokens.yaml"
    lines = ["tokens:"]
    for token, (user, role) in TOKENS.items():
        lines += [f"  - user: {user}", f"    role: {role}", f"    sha256: \"{hash_token(token)}\""]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def start_with_auth(make_server, tokens_file, **settings):
    return make_server(workspace=ENGINE, zvafile="@.zUI.main", require_auth=True, tokens_file=tokens_file,
                       **settings)


@pytest_twisted.inlineCallbacks
def test_discover_hides_commands_and_menu_entries_the_role_may_not_run(make_server, tokens_file):
    server = yield start_with_auth(make_server, tokens_file)
    user = yield connect(server.url, token="user-token")
    admin = yield connect(server.url, token="admin-token")
    seen_by_user = (yield user.request("discover"))["blocks"]["root"]
    seen_by_admin = (yield admin.request("discover"))["blocks"]["root"]
    assert seen_by_user["menu"] == ["Ping", "Shop", "Other File", "Add"]
    assert seen_by_admin["menu"] == ["Ping", "Shop", "Admin Panel", "Other File", "Add"]
    user_keys = {command["key"] for command in seen_by_user["commands"]}
    admin_keys = {command["key"] for command in seen_by_admin["commands"]}
    assert admin_keys - user_keys == {"Admin Panel", "Audit"}
    yield user.close()
    yield admin.close()


@pytest_twisted.inlineCallbacks
def test_dispatch_and_introspect_of_a_command_of_other_roles_are_forbidden(make_server, tokens_file):
    server = yield start_with_auth(make_server, tokens_file)
    user = yield connect(server.url, token="user-token")
    auditor = yield connect(server.url, token="auditor-token")
    admin = yield connect(server.url, token="admin-token")
    for event in ("dispatch", "introspect"):
        with pytest.raises(BifrostError) as caught:
            yield user.request(event, zKey="Audit")
        assert caught.value.code == "forbidden"
    assert (yield auditor.dispatch("Audit")) == 0
    assert (yield auditor.request("introspect", zKey="Audit"))["roles"] == ["admin", "auditor"]
    with pytest.raises(BifrostError) as caught:
        yield auditor.dispatch("Admin Panel")
    assert caught.value.code == "forbidden"
    assert (yield admin.dispatch("Admin Panel")) == {"zBlock": "Admin", "menu": ["Secrets"], "zVaFile": "@.zUI.main"}
    assert (yield admin.dispatch("Secrets")) == {"message": "admin only"}
    for client in (user, auditor, admin):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_plugin_sees_the_token_user_and_role_in_ctx(make_server, tokens_file):
    server = yield start_with_auth(make_server, tokens_file)
    client = yield connect(server.url, token="user-token")
    result = yield client.dispatch("Context")
    assert (result["user"], result["role"]) == ("bob", "user")
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_clear_cache_needs_the_admin_role_when_auth_is_on(make_server, tokens_file):
    server = yield start_with_auth(make_server, tokens_file)
    user = yield connect(server.url, token="user-token")
    admin = yield connect(server.url, token="admin-token")
    yield user.dispatch("Cached Count")
    with pytest.raises(BifrostError) as caught:
        yield user.request("clear_cache")
    assert caught.value.code == "forbidden"
    assert (yield admin.request("clear_cache")) == {"cleared": 1}
    yield user.close()
    yield admin.close()


@pytest_twisted.inlineCallbacks
def test_set_cache_ttl_needs_the_admin_role_when_auth_is_on(make_server, tokens_file):
    server = yield start_with_auth(make_server, tokens_file)
    user = yield connect(server.url, token="user-token")
    admin = yield connect(server.url, token="admin-token")
    with pytest.raises(BifrostError) as caught:
        yield user.request("set_cache_ttl", ttl=5)
    assert caught.value.code == "forbidden"
    assert (yield user.request("introspect", zKey="Cached Count"))["cache_ttl"] == 60
    assert (yield admin.request("set_cache_ttl", ttl=5))["ttl"] == 5
    assert (yield user.request("introspect", zKey="Cached Count"))["cache_ttl"] == 5
    yield user.close()
    yield admin.close()


@pytest_twisted.inlineCallbacks
def test_cached_results_are_shared_within_a_role_but_not_across_roles(make_server, tokens_file):
    server = yield start_with_auth(make_server, tokens_file)
    user = yield connect(server.url, token="user-token")
    admin = yield connect(server.url, token="admin-token")
    another_user = yield connect(server.url, token="user-token")
    first = yield user.request_frame("dispatch", zKey="Cached Count")
    by_admin = yield admin.request_frame("dispatch", zKey="Cached Count")
    shared = yield another_user.request_frame("dispatch", zKey="Cached Count")
    assert "_cached" not in first and "_cached" not in by_admin
    assert by_admin["result"] != first["result"]
    assert shared["_cached"] is True and shared["result"] == first["result"]
    for client in (user, admin, another_user):
        yield client.close()
