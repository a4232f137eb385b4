"""`python -m zbifrost.tokens`: minting, listing and revoking tokens; only hashes are stored."""

import os
import stat
import subprocess
import sys

import pytest_twisted

from zbifrost.auth import TokenStore
from zbifrost.testing import ConnectionClosed, connect

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tokens(*args):
    result = subprocess.run([sys.executable, "-m", "zbifrost.tokens", *args], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
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


@pytest_twisted.inlineCallbacks
def test_a_running_server_sees_minted_and_revoked_tokens_without_a_restart(make_server, tmp_path):
    path = tmp_path / "tokens.yaml"
    first = tokens("add", "alice", "--file", str(path)).strip()
    server = yield make_server(require_auth=True, tokens_file=str(path))
    later = tokens("add", "bob", "--role", "ops", "--file", str(path)).strip()
    client = yield connect(server.url, token=later)
    assert client.info["auth"] == {"authenticated": True, "user": "bob", "role": "ops"}
    yield client.close()
    tokens("revoke", "alice", "--file", str(path))
    try:
        yield connect(server.url, token=first)
    except ConnectionClosed as closed:
        assert (closed.code, closed.reason) == (1008, "Invalid token")
    else:
        raise AssertionError("a revoked token was accepted")
