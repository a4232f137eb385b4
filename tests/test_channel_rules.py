"""Channel permissions and history per rule, over real sockets: the config file's `channels:`
rules, private `user:<name>` channels, and `forbidden` with the connection kept open."""

import pytest_twisted
from twisted.internet import reactor, task

from zbifrost.testing import connect

from .helpers import write_tokens

RULES = """
channels:
  - pattern: "chat.*"
    subscribe: [user, admin]
    publish: [admin]
  - pattern: "short.*"
    history: {size: 2, ttl: 60}
"""


def _start(make_server, tmp_path, rules=RULES, auth=True, **settings):
    config = tmp_path / "zbifrost.yaml"
    config.write_text(rules)
    if not auth:
        return make_server(config_file=str(config), **settings)
    tokens = write_tokens(tmp_path / "tokens.yaml", ("t-alice", "alice", "user"), ("t-guest", "gus", "guest"),
                          ("t-root", "root", "admin"))
    return make_server(config_file=str(config), require_auth=True, tokens_file=tokens, **settings)


def _code(reply):
    return reply.get("code", "ok")


@pytest_twisted.inlineCallbacks
def test_rules_decide_who_subscribes_and_publishes_and_refusals_keep_the_connection(make_server, tmp_path):
    server = yield _start(make_server, tmp_path)
    alice = yield connect(server.url, token="t-alice")
    gus = yield connect(server.url, token="t-guest")
    root = yield connect(server.url, token="t-root")
    assert _code((yield gus.request_frame("subscribe", channel="chat.lobby"))) == "forbidden"
    assert (yield alice.request("subscribe", channel="chat.lobby"))["subscribed"] is True
    refused = yield alice.request_frame("publish", channel="chat.lobby", data="hi")
    assert (refused["code"], refused["error"]) == ("forbidden", "Not allowed to publish on channel chat.lobby")
    assert (yield root.request("publish", channel="chat.lobby", data="from root"))["delivered"] == 1
    assert (yield alice.next_event("message"))["data"] == "from root"
    # a rule with only history leaves subscribe and publish open to every role
    assert (yield gus.request("subscribe", channel="short.x"))["subscribed"] is True
    assert (yield gus.request("publish", channel="short.x", data=1))["offset"] == 1
    # with rules, a channel that matches none is closed to clients
    for client in (alice, gus, root):
        assert _code((yield client.request_frame("subscribe", channel="elsewhere"))) == "forbidden"
        assert _code((yield client.request_frame("publish", channel="elsewhere", data=1))) == "forbidden"
    assert "pong" in (yield gus.request("ping"))
    for client in (alice, gus, root):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_user_channel_is_open_only_to_its_user_and_no_client_publishes_there(make_server, tmp_path):
    server = yield _start(make_server, tmp_path, rules="channels:\n  - pattern: '*'\n")
    alice = yield connect(server.url, token="t-alice")
    root = yield connect(server.url, token="t-root")
    assert (yield alice.request("subscribe", channel="user:alice"))["subscribed"] is True
    assert _code((yield root.request_frame("subscribe", channel="user:alice"))) == "forbidden"
    for client in (alice, root):
        assert _code((yield client.request_frame("publish", channel="user:alice", data=1))) == "forbidden"
    yield alice.close()
    yield root.close()


@pytest_twisted.inlineCallbacks
def test_with_auth_off_nobody_may_subscribe_to_a_user_channel(server):
    client = yield connect(server.url)
    assert _code((yield client.request_frame("subscribe", channel="user:anonymous"))) == "forbidden"
    assert (yield client.request("subscribe", channel="user-ish:a@b.example|x+y=z"))["subscribed"] is True
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_history_follows_the_rule_of_the_channel(make_server, tmp_path, backend_settings):
    server = yield _start(make_server, tmp_path, rules=RULES + "  - pattern: '*'\n", auth=False, **backend_settings)
    client = yield connect(server.url)
    for channel in ("short.a", "long.a"):
        epoch = (yield client.request("subscribe", channel=channel))["epoch"]
        for n in range(3):
            yield client.request("publish", channel=channel, data=n)
        reply = yield client.request("subscribe", channel=channel, since={"epoch": epoch, "offset": 0})
        assert reply["recovered"] is (channel == "long.a"), channel
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_history_expires_ttl_after_the_last_publish_but_epoch_and_offset_stay(make_server, tmp_path,
                                                                              backend_settings):
    rules = "channels:\n  - pattern: 'brief.*'\n    history: {size: 5, ttl: 0.2}\n"
    server = yield _start(make_server, tmp_path, rules=rules, auth=False, **backend_settings)
    client = yield connect(server.url)
    published = yield client.request("publish", channel="brief.a", data=1)
    yield task.deferLater(reactor, 0.5, lambda: None)  # past the ttl
    since = {"epoch": published["epoch"], "offset": 0}
    reply = yield client.request("subscribe", channel="brief.a", since=since)
    assert (reply["recovered"], reply["epoch"], reply["offset"]) == (False, published["epoch"], 1)
    up_to_date = yield client.request("subscribe", channel="brief.a", since=dict(since, offset=1))
    assert up_to_date["recovered"] is True
    yield client.close()
