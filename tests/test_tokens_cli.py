"""`python -m zbifrost.tokens`: minting, listing and revoking tokens; only hashes are stored."""

import os
import stat
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.logger import LogLevel, formatEvent

from zbifrost.auth import TokenFileError, TokenStore
from zbifrost.config import ConfigError
from zbifrost.testing import ConnectionClosed, connect

from .helpers import write_tokens

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow  # every test runs the command as a subprocess, about 0.3 s a run


def run_tokens(*args):
    return subprocess.run([sys.executable, "-m", "zbifrost.tokens", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO)


def tokens(*args):
    result = run_tokens(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_add_prints_the_token_once_and_stores_only_its_hash(tmp_path):
    path = tmp_path / "tokens.yaml"
    token = tokens("add", "alice", "--role", "admin", "--file", str(path)).strip()
    text = path.read_text()
    assert len(token) >= 40 and token not in text and "sha256:" in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    identity = TokenStore(str(path)).identify(token)
    assert (identity.user, identity.role) == ("alice", "admin")
    assert tokens("list", "--file", str(path)) == "alice\tadmin\n"


def test_an_expired_token_is_refused(tmp_path):
    path = tmp_path / "tokens.yaml"
    token = tokens("add", "old", "--expires", "2001-01-01", "--file", str(path)).strip()
    assert TokenStore(str(path)).identify(token) is None


@pytest.mark.parametrize("text, said", [
    ("tokens:\n  - user: alice\n    role: [admin\n",
     ", line 4: invalid YAML (expected ',' or ']', but got '<stream end>')"),
    ("tokens: \x00\n", ": invalid YAML (unacceptable character #x0000: special characters are not allowed)"),
])
def test_a_tokens_file_that_is_not_yaml_is_refused_in_one_line_naming_the_line(
        tmp_path, text, said):
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    with pytest.raises(TokenFileError) as caught:
        TokenStore(str(path))
    assert str(caught.value) == f"tokens file {path}{said}"


@pytest_twisted.inlineCallbacks
def test_a_running_server_sees_minted_and_revoked_tokens_without_a_restart(make_server, tmp_path):
    path = tmp_path / "tokens.yaml"
    first = tokens("add", "alice", "--file", str(path)).strip()
    server = yield make_server(require_auth=True, tokens_file=str(path))
    later = tokens("add", "bob", "--role", "ops", "--file", str(path)).strip()
    client = yield connect(server.url, token=later)
    assert client.info["auth"] == {"authenticated": True, "user": "bob", "role": "ops", "expires": None}
    yield client.close()
    tokens("revoke", "alice", "--file", str(path))
    try:
        yield connect(server.url, token=first)
    except ConnectionClosed as closed:
        assert (closed.code, closed.reason) == (1008, "Invalid token")
    else:
        raise AssertionError("a revoked token was accepted")


@pytest_twisted.inlineCallbacks
def test_a_tokens_file_without_tokens_is_logged_at_start_and_its_first_token_works_without_a_restart(
        make_server, tmp_path, log_events):
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens: []\n")
    server = yield make_server(require_auth=True, tokens_file=str(path))
    warnings = [formatEvent(event) for event in log_events if event["log_level"] == LogLevel.warn]
    assert warnings == [f"tokens file {path} has no tokens: none of its tokens can connect"]
    token = tokens("add", "alice", "--file", str(path)).strip()
    client = yield connect(server.url, token=token)
    assert client.info["auth"]["user"] == "alice"
    yield client.close()


def test_revoking_a_user_without_a_token_to_revoke_fails_and_says_so(tmp_path):
    path = tmp_path / "tokens.yaml"
    tokens("add", "alice", "--file", str(path))
    before = path.read_text()
    result = run_tokens("revoke", "nobody", "--file", str(path))
    assert result.returncode != 0
    assert result.stderr == f"nobody: no token to revoke in {path}\n"
    assert path.read_text() == before
    tokens("revoke", "alice", "--file", str(path))
    assert run_tokens("revoke", "alice", "--file", str(path)).returncode != 0


def test_list_marks_expired_and_revoked_tokens(tmp_path):
    path = tmp_path / "tokens.yaml"
    tokens("add", "old", "--expires", "2001-01-01", "--file", str(path))
    tokens("add", "gone", "--file", str(path))
    tokens("add", "fresh", "--expires", "2999-01-01T00:00:00", "--file", str(path))
    tokens("revoke", "gone", "--file", str(path))
    assert tokens("list", "--file", str(path)) == "old\tuser (expired)\ngone\tuser (revoked)\nfresh\tuser\n"


@pytest.mark.parametrize("text, message", [
    ("token:\n  - {user: a, sha256: %s}\n", ": unknown key 'token' (did you mean 'tokens'?)"),
    ("tokens:\n  - {user: a, sha256: %s, revokd: true}\n",
     ": entry 1: unknown key 'revokd' (did you mean 'revoked'?)"),
])
@pytest_twisted.inlineCallbacks
def test_an_unknown_key_in_a_tokens_file_stops_the_server_and_the_command(make_server, tmp_path, text, message):
    path = tmp_path / "tokens.yaml"
    path.write_text(text % ("0" * 64))
    expected = f"tokens file {path}{message}"
    with pytest.raises(ConfigError) as refused:
        yield make_server(require_auth=True, tokens_file=str(path))
    assert str(refused.value) == expected
    listed = run_tokens("list", "--file", str(path))
    assert (listed.returncode, listed.stderr) == (2, f"{expected}\n")


@pytest.mark.parametrize("entry, message", [
    ('user: ""', "the user must be a non-empty string"),
    (f'user: {"a" * 257}', "the user is longer than 256 characters"),
    ('user: "\\ud800"', "the user is not valid Unicode text"),
    ("user: [alice]", "the user must be a non-empty string"),
    ("user: alice, role: ''", "the role must be 1-64 characters"),
    (f"user: alice, role: {'r' * 65}", "the role must be 1-64 characters"),
    ('user: alice, role: "ad\\nmin"', "the role must be 1-64 characters"),
    ("user: alice, role: ad min", "the role must be 1-64 characters"),
    ("user: alice, expires: 100000000000000000000", "expires in epoch seconds must be a number from 0 to 2^53"),
    ("user: alice, expires: .nan", "expires in epoch seconds must be a number from 0 to 2^53"),
    ("user: alice, expires: -1", "expires in epoch seconds must be a number from 0 to 2^53"),
])
@pytest_twisted.inlineCallbacks
def test_a_tokens_file_user_or_role_breaking_the_identity_rules_stops_the_start_naming_file_and_entry(
        make_server, tmp_path, entry, message):
    path = tmp_path / "tokens.yaml"
    path.write_text(f'tokens:\n  - {{user: bob, sha256: "{"1" * 64}"}}\n  - {{{entry}, sha256: "{"0" * 64}"}}\n')
    with pytest.raises(ConfigError) as refused:
        yield make_server(require_auth=True, tokens_file=str(path))
    assert str(refused.value).startswith(f"tokens file {path}: entry 2: {message}")


def test_a_tokens_file_user_of_256_characters_and_a_role_of_64_load(tmp_path):
    path = tmp_path / "tokens.yaml"
    write_tokens(path, ("long-token", "u" * 256, "Role_1.a:b-" + "r" * 53))
    identity = TokenStore(str(path)).identify("long-token")
    assert (identity.user, identity.role) == ("u" * 256, "Role_1.a:b-" + "r" * 53)


def test_add_refuses_a_user_or_role_the_server_would_refuse_and_leaves_the_file_alone(tmp_path):
    path = tmp_path / "tokens.yaml"
    tokens("add", "alice", "--file", str(path))
    before = path.read_text()
    for args, message in ((["a" * 257], "the user is longer than 256 characters"),
                          (["bob", "--role", "ad min"], "the role must be 1-64 characters")):
        refused = run_tokens("add", *args, "--file", str(path))
        assert (refused.returncode, refused.stderr.startswith(message)) == (2, True), refused.stderr
    assert path.read_text() == before
    assert tokens("list", "--file", str(path)).splitlines() == ["alice\tuser"]
