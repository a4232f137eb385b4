"""The JavaScript client and the demo page in a real browser (Debian's Chromium).

Each test starts a real zbifrost on loopback and runs one scenario of
tests/browser/scenarios.mjs under node (playwright-core driving /usr/bin/chromium); the
scenario reports what it saw as JSON and the assertions are made here. node runs as a child
process of the reactor (spawnProcess), so the server keeps serving while the browser works.
Install what they need with tests/browser/install.sh; without it they are skipped, with the
reason.
"""

import json
import os
import shutil

import pytest
import pytest_twisted
import yaml
from twisted.internet import defer, protocol, reactor

from tests.test_server_api import KEY as API_KEY
from tests.test_server_api import api
from zbifrost import messages, testing
from zbifrost.auth import hash_token
from zbifrost.channels import unsubscribed_frame

HERE = os.path.dirname(os.path.abspath(__file__))
BROWSER_DIR = os.path.join(HERE, "browser")
SCENARIOS = os.path.join(BROWSER_DIR, "scenarios.mjs")
TEST_WORKSPACE = os.path.join(BROWSER_DIR, "workspace")
ARTIFACTS = os.path.join(HERE, "artifacts")
CHROMIUM = "/usr/bin/chromium"
NODE = shutil.which("node")
SCRIPT_TIMEOUT = 90  # seconds; the scenario's own waits are shorter and say what they waited for


def _missing_browser():
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is not installed (run tests/browser/install.sh)"
    if NODE is None:
        return "node is not installed"
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        return "playwright-core is not installed in tests/browser (run tests/browser/install.sh)"
    return None


MISSING_BROWSER = _missing_browser()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING_BROWSER is not None, reason=MISSING_BROWSER or "")]


class Scenario(protocol.ProcessProtocol):
    """One `node scenarios.mjs <name> <url> <artifacts>` run: its steps and its result."""

    def __init__(self, name):
        self.name = name
        self._buffer = b""
        self._stderr = []
        self._steps = {}  # step name -> Deferred fired when node prints it
        self._result = None
        self._ended = defer.Deferred()

    @classmethod
    def start(cls, name, server, *extra):
        os.makedirs(ARTIFACTS, exist_ok=True)
        scenario = cls(name)
        reactor.spawnProcess(scenario, NODE, [NODE, SCENARIOS, name, server.http_url, ARTIFACTS, *extra],
                             env=dict(os.environ), path=BROWSER_DIR)
        scenario._ended.addTimeout(SCRIPT_TIMEOUT, reactor, onTimeoutCancel=scenario._kill)
        return scenario

    def _kill(self, value, timeout):
        self.transport.signalProcess("KILL")
        return defer.TimeoutError(f"scenario {self.name} ran longer than {timeout} s")

    def outReceived(self, data):
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            if line.startswith(b"{"):
                message = json.loads(line)
                if "step" in message:
                    self._step(message["step"]).callback(None)
                else:
                    self._result = message["result"]

    def errReceived(self, data):
        self._stderr.append(data)

    def processEnded(self, reason):
        self._ended.callback(reason.value.exitCode)

    def _step(self, name):
        return self._steps.setdefault(name, defer.Deferred())

    def step(self, name):
        """Fires when the scenario prints `{"step": name}`; fails if it ends first."""
        waiting = self._step(name)

        def ended_first(outcome):
            if not waiting.called:
                waiting.errback(self._failure())
            return outcome

        self._ended.addBoth(ended_first)
        return waiting

    def _failure(self):
        return AssertionError(f"scenario {self.name} failed:\n{b''.join(self._stderr).decode(errors='replace')}")

    @defer.inlineCallbacks
    def result(self):
        """What the scenario observed, once node has exited successfully."""
        exit_code = yield self._ended
        if exit_code != 0 or self._result is None:
            raise self._failure()
        return self._result


def run(name, server, *extra):
    return Scenario.start(name, server, *extra).result()


def _error(outcome, code):
    """Assert a client outcome is a BifrostError with `code`."""
    assert outcome["error"] == "BifrostError", outcome
    assert outcome["code"] == code, outcome
    return outcome


@pytest_twisted.inlineCallbacks
def test_demo_page_shows_the_menu_and_pong_after_clicking_ping(make_server):
    server = yield make_server()
    seen = yield run("ping", server)
    assert seen["heading"] == "Menu: Level1Menu"
    assert seen["menu"] == [{"name": "Ping", "disabled": False}, {"name": "Echo Test", "disabled": False},
                            {"name": "Status", "disabled": False}, {"name": "stop", "disabled": True}]
    assert seen["entry"] == ["Ping", "Pong!"]
    assert "anonymous (guest)" in seen["info"] and "@.zUI.level1" in seen["info"]
    assert seen["errors"] == []


@pytest_twisted.inlineCallbacks
def test_demo_page_renders_results_by_shape_offline_and_saves_screenshots(make_server):
    server = yield make_server(zvafile="@.zUI.demo")
    seen = yield run("tour", server)
    enabled = {item["name"] for item in seen["root"] if not item["disabled"]}
    assert {"Ping", "Tools", "Import Records", "Sign Up"} <= enabled
    assert seen["ping"] == ["Ping", "Pong!"] and "level-text" in seen["messageClass"]
    assert seen["imported"] == ["Import Records", "Importing: 5 / 5", "imported", "5"]  # key/value list
    assert seen["wizard"] == ["Setup Wizard", "Starting setup", "42", "steps_before", "2", "results",
                              "Starting setup", "42"]
    assert seen["signUp"]["entry"][:4] == ["Sign Up", "registered", "ada", "form"]
    assert "correct horse" not in json.dumps(seen["signUp"]) + seen["raw"]  # the password never echoes
    assert json.loads(seen["raw"])["form"]["password"] == "••••••"
    assert [item["name"] for item in seen["tools"]][-1] == "zBack"
    assert [shape["tag"] for shape in seen["whoAmI"]] == ["dl"] and "guest" in seen["whoAmI"][0]["text"]
    assert seen["time"][0][0] == "Server Time" and seen["cached"] == ["cached"]  # the second call
    assert seen["colors"][0]["className"] == "table-wrap"
    assert seen["colors"][0]["text"].split("\n")[:2] == ["name\thex", "red\t#ff0000"]
    assert seen["foreign"] == []  # no external resource: the page works offline
    assert seen["errors"] == []
    with open(os.path.join(ARTIFACTS, "demo-page.png"), "rb") as screenshot:
        assert screenshot.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest_twisted.inlineCallbacks
def test_demo_page_keeps_a_breadcrumb_offers_zback_and_follows_zlink_in_the_connection_panel(make_server):
    server = yield make_server(zvafile="@.zUI.demo")
    seen = yield run("navigation_demo", server)
    assert seen["atRoot"]["breadcrumb"] == ["root"] and "zBack" not in seen["atRoot"]["menu"]
    linked = seen["linked"]
    assert linked["breadcrumb"] == ["root", "Level1Menu"] and linked["heading"] == "Menu: Level1Menu"
    assert linked["menu"] == ["Ping", "Echo Test", "Status", "stop", "zBack"]
    assert "zVaFile\n@.zUI.level1" in linked["info"] and "zBlock\nLevel1Menu" in linked["info"]
    assert seen["back"]["breadcrumb"] == ["root"] and "zVaFile\n@.zUI.demo" in seen["back"]["info"]
    assert seen["errors"] == []


@pytest_twisted.inlineCallbacks
def test_a_rejected_form_keeps_the_typed_values_and_marks_each_field_and_passwords_never_echo(make_server):
    server = yield make_server(zvafile="@.zUI.demo")
    seen = yield run("form_errors", server)
    fields = {field["label"]: field for field in seen["problems"]}
    assert {label: field["value"] for label, field in fields.items()} == {
        "User name": "A!", "Email": "not-an-email", "Password": "hunter2", "Age": "7",
        "Send me the newsletter": "on"}
    for label in ("User name", "Email", "Password", "Age"):
        assert fields[label]["invalid"] == "true" and fields[label]["problem"], label
    assert fields["Send me the newsletter"]["problem"] is None
    assert fields["Password"]["type"] == "password" and seen["focused"] == "username"
    assert seen["entry"][:3] == ["Sign Up", "registered", "ada"] and seen["dialogOpen"] is False
    assert "hunter2" not in seen["pageText"] and "correct horse" not in seen["pageText"] + seen["raw"]
    assert seen["errors"] == []


@pytest_twisted.inlineCallbacks
def test_the_page_follows_the_system_theme_fits_a_phone_and_works_from_the_keyboard(make_server):
    server = yield make_server()
    seen = yield run("look", server)
    assert seen["light"] != seen["dark"]
    assert seen["phone"]["scroll"] <= seen["phone"]["width"]
    assert seen["second"] == "Echo Test"
    assert seen["entry"] == ["Echo Test", "Echo: Hello from zBifrost"]
    assert seen["errors"] == []


@pytest_twisted.inlineCallbacks
def test_client_rejects_with_bifrost_error_codes_timeout_and_disconnected(make_server):
    server = yield make_server()
    seen = yield run("client_errors", server)
    assert _error(seen["unknown"], "unknown_command")["message"] == "Unknown command: ^Nope"
    _error(seen["missing"], "missing_field")
    _error(seen["noReply"], "timeout")
    assert seen["afterErrors"] == {"result": {"message": "Pong!"}}
    assert _error(seen["cutOff"], "disconnected")["closeCode"] == 1000
    _error(seen["afterDisconnect"], "disconnected")


def _auth_server(make_server, tmp_path, token, **settings):
    """A require-auth server knowing one token, alice's."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [{"sha256": hash_token(token), "user": "alice", "role": "user"}]}))
    return make_server(require_auth=True, tokens_file=str(tokens), **settings)


@pytest_twisted.inlineCallbacks
def test_client_sends_the_token_in_the_query_and_connect_rejects_with_the_close_code(make_server, tmp_path):
    token = "browser-test-token"
    server = yield _auth_server(make_server, tmp_path, token)
    seen = yield run("auth", server, token)
    client = seen["client"]
    for case, reason in (("none", "Authentication required"), ("wrong", "Invalid token")):
        refused = _error(client[case], "disconnected")
        assert (refused["closeCode"], refused["reason"], refused["retries"]) == (1008, reason, 0)
    assert client["good"]["result"]["auth"] == {"authenticated": True, "user": "alice", "role": "user", "expires": None}
    assert "Authentication required" in seen["refusedPage"]
    assert "alice (user)" in seen["allowedPage"]


@pytest_twisted.inlineCallbacks
def test_the_server_apis_unsubscribe_and_disconnect_are_shown_on_the_page_which_does_not_reconnect(
        make_server, tmp_path):
    token = "browser-test-token"
    server = yield _auth_server(make_server, tmp_path, token, api_key=API_KEY)
    scenario = Scenario.start("api_disconnect", server, token)
    yield scenario.step("subscribed")
    gap = messages.event_frame("unsubscribed", channel="news", reason="insufficient_state")
    for session in server.hub.clients.values():  # the demo's client and the probe's: as a gap would
        server.hub.channels.unsubscribe("news", session)
        session.send_frame(gap)
    yield scenario.step("resubscribed")
    assert server.hub.channels.subscriber_counts() == {"news": 2}  # both subscribed again
    assert (yield api(server, "unsubscribe", {"user": "alice", "channel": "news"})) == (200, {})
    yield scenario.step("unsubscribed")
    assert (yield api(server, "disconnect", {"user": "alice"})) == (200, {})
    seen = yield scenario.result()
    probe = seen["probe"]
    assert probe["unsubscribed"] == [["news", "insufficient_state"], ["news", "server"]] and seen["channels"] == []
    assert probe["recovered"] == [["news", True]]  # nothing was published meanwhile
    assert ["note:warning", "The server took this page off news: it receives no more of its messages."] in (
        seen["unsubscribedLog"])
    why = "The server disconnected this client (Disconnected); it does not reconnect."
    assert probe["disconnects"] == [{"code": 1008, "reason": "Disconnected", "final": True, "why": why}]
    assert probe["reconnecting"] == 0 and not server.hub.clients
    assert seen["status"] == f"{why} Reload the page to connect again."
    assert seen["errors"] == []


@pytest_twisted.inlineCallbacks
def test_a_page_with_get_token_and_5_second_tokens_stays_connected_15_seconds(make_server, tmp_path):
    secret = "a browser test secret of at least thirty-two bytes"
    config = tmp_path / "zbifrost.yaml"
    config.write_text(yaml.safe_dump({"websocket": {"require_auth": True, "jwt": {"secret": secret, "leeway": 0}}}))
    server = yield make_server(config_file=str(config))
    seen = yield run("jwt_refresh", server, secret)
    before = seen["before"]
    assert (seen["user"], before["connected"], before["disconnects"], seen["pong"]) == ("alice", 1, [], True)
    assert before["tokens"] >= 4  # the first connection and a refresh before each 5-second token expired
    assert seen["lastExpires"] > seen["expires"][0] + 10
    # its first token said role user, the refreshed ones admin: the client knows the new role
    assert (seen["roles"][0], seen["lastRole"]) == ("user", "admin")
    # dropped after its first token expired, it reconnects with a token fresh from getToken
    assert seen["connected"] == 2 and seen["tokens"] > before["tokens"] and seen["pongAfter"] is True
    assert len(seen["disconnects"]) == 1 and "Token expired" not in seen["disconnects"][0]


@pytest_twisted.inlineCallbacks
def test_the_page_works_behind_an_origin_list_and_says_why_a_connection_is_refused(make_server):
    server = yield make_server(allowed_origins=["https://app.example.com"])
    full = yield make_server(max_connections=1)
    holder = yield testing.connect(full.url)
    seen = yield run("refusals", server, full.http_url)
    yield holder.close()
    assert seen["ownStatus"] == "Connected"
    assert "HTTP 403: Origin not allowed" in seen["namedStatus"], seen["namedStatus"]
    assert "allowed_origins" in seen["namedStatus"] and "Retrying" not in seen["namedStatus"]
    refused = _error(seen["namedClient"], "disconnected")
    assert (refused["status"], refused["reason"], refused["closeCode"], refused["retries"]) == (
        403, "Origin not allowed", 1006, 0)
    assert "HTTP 503: Too many connections" in seen["fullStatus"] and "Retrying" in seen["fullStatus"]


@pytest_twisted.inlineCallbacks
def test_a_page_too_busy_to_handle_the_refusal_at_once_still_gets_1008_and_does_not_retry(make_server, tmp_path):
    server = yield _auth_server(make_server, tmp_path, "browser-test-token")
    refused = _error((yield run("auth_busy_page", server)), "disconnected")
    assert (refused["closeCode"], refused["reason"], refused["retries"]) == (1008, "Authentication required", 0)


@pytest_twisted.inlineCallbacks
def test_two_tabs_do_not_see_each_others_replies(make_server):
    server = yield make_server()
    seen = yield run("two_tabs", server)
    for (tab, mine, theirs) in ((seen["seen"][0], "Pong!", "Server is running"),
                                (seen["seen"][1], "Server is running", "Pong!")):
        assert tab["results"] == [{"message": mine}] * 5
        replies = [frame for frame in tab["frames"] if "event" not in frame]
        assert sorted(frame["_requestId"] for frame in replies) == [1, 2, 3, 4, 5]
        assert all(frame["result"] == {"message": mine} for frame in replies)
        assert theirs not in json.dumps(tab["frames"])
    assert seen["entries"] == [["Ping", "Pong!"], ["Status", "Server is running"]]
    assert "Server is running" not in seen["logs"][0] and "Pong!" not in seen["logs"][1]


@pytest_twisted.inlineCallbacks
def test_client_reconnects_and_resubscribes_after_the_server_restarts(make_server):
    first = yield testing.start_server(workspace=os.path.join(os.path.dirname(HERE), "zui"))
    try:
        scenario = Scenario.start("reconnect", first)
        yield scenario.step("connected")
    finally:
        yield first.stop()
    second = yield make_server(port=first.port)
    yield scenario.step("reconnected")
    publisher = yield testing.connect(second.url)
    published = yield publisher.request("publish", channel="news", data={"hello": "again"})
    yield publisher.close()
    seen = yield scenario.result()
    probe = seen["probe"]
    assert published["delivered"] == 1
    assert probe["messages"] == [{"data": {"hello": "again"}, "from": publisher.info["client_id"]}]
    assert probe["shutdown"] == 1 and probe["disconnects"][0] == 1001
    assert probe["connected"] == 2
    assert probe["reconnecting"][0]["attempt"] == 1 and 300 <= probe["reconnecting"][0]["delay"] <= 700
    assert seen["entry"] == ["Ping", "Pong!"]
    assert seen["errors"] == []


@pytest_twisted.inlineCallbacks
def test_a_tab_that_lost_its_connection_gets_the_missed_messages_and_is_told_it_recovered(make_server):
    server = yield make_server()
    hub = server.hub
    scenario = Scenario.start("recovery", server)
    yield scenario.step("subscribed")
    yield hub.publish_from_backend("orders", "first")
    yield scenario.step("first")
    yield scenario.step("published")  # the tab's own "mine", offset 2
    [tab] = [session for session in hub.clients.values() if session.subscriptions and "orders" in session.subscriptions]
    # in one reactor turn: the tab's connection is cut, then two messages are published that it misses
    tab.connection.abort()
    for text in ("missed 1", "missed 2"):
        hub.publish_from_backend("orders", text)
    seen = yield scenario.result()
    probe = seen["probe"]
    assert probe["disconnects"] == 1
    assert probe["messages"] == [{"data": data, "from": "server", "offset": offset}
                                 for offset, data in [(1, "first"), (3, "missed 1"), (4, "missed 2")]]
    assert probe["recovered"] == [{"channel": "orders", "recovered": True}]
    assert seen["position"]["offset"] == 4
    assert seen["fromSaved"] == {"recovered": True, "replayed": ["first", "mine", "missed 1", "missed 2"]}
    assert seen["errors"] == []


@pytest_twisted.inlineCallbacks
def test_a_tab_told_insufficient_state_subscribes_again_with_since_and_gets_what_it_missed(make_server):
    server = yield make_server()
    hub = server.hub
    scenario = Scenario.start("insufficient_state", server)
    yield scenario.step("subscribed")
    [tab] = [session for session in hub.clients.values() if session.subscriptions and "orders" in session.subscriptions]
    # in one reactor turn: the server ends the tab's subscription, then publishes while it has none
    tab.send_frame(unsubscribed_frame("orders", "insufficient_state"))
    yield hub.channels.unsubscribe("orders", tab)
    yield hub.publish_from_backend("orders", "missed")
    seen = yield scenario.result()
    assert seen["probe"] == {"messages": [{"data": "missed", "offset": 1}],
                             "recovered": [{"channel": "orders", "recovered": True}]}
    assert seen["errors"] == []


@pytest_twisted.inlineCallbacks
def test_a_subscribe_the_server_refused_is_not_sent_again_after_a_reconnection(make_server, tmp_path):
    config = tmp_path / "zbifrost.yaml"
    config.write_text("channels:\n  - pattern: 'secret'\n    subscribe: [admin]\n")
    server = yield make_server(config_file=str(config))
    scenario = Scenario.start("refused_subscribe", server)
    yield scenario.step("refused")
    assert server.hub.metrics.errors == {"forbidden": 1}
    for conn in list(server.hub.clients.values()):  # the page's own client and the probe's
        conn.connection.transport.abortConnection()
    seen = yield scenario.result()
    assert seen == {"outcome": "forbidden", "errors": []}
    assert server.hub.metrics.errors == {"forbidden": 1}


@pytest_twisted.inlineCallbacks
def test_two_tabs_talk_through_the_channel_panel_each_seeing_who_sent_what(make_server):
    server = yield make_server()
    seen = yield run("channel_talk", server)
    first, second = seen["ids"]
    assert seen["logs"] == [[["you", "hello from the first tab"], [second, "hello back"]],
                            [[first, "hello from the first tab"], ["you", "hello back"]]]
    assert seen["errors"] == []


@pytest_twisted.inlineCallbacks
def test_two_tabs_see_each_other_arrive_and_go_in_the_channel_panel(make_server, tmp_path):
    config = tmp_path / "zbifrost.yaml"
    config.write_text("channels:\n  - pattern: 'room.*'\n    presence: true\n    join_leave: true\n"
                      "  - pattern: '*'\n")
    server = yield make_server(config_file=str(config))
    seen = yield run("presence_panel", server)
    first, second = seen["ids"]
    assert seen["unavailable"] == "Presence is not turned on for chat."
    first_tab = [[f"{first} (guest)", "anonymous (you)"], [f"{second} (guest)", "anonymous"]]
    second_tab = [[f"{first} (guest)", "anonymous"], [f"{second} (guest)", "anonymous (you)"]]
    assert [sorted(members) for members in seen["members"]] == [sorted(first_tab), sorted(second_tab)]
    assert seen["after"] == [[f"{first} (guest)", "anonymous (you)"]]
    assert seen["log"] == [["note:info", f"anonymous ({second}) joined."], ["note:info", f"anonymous ({second}) left."]]
    assert seen["errors"] == []


def _cut_and_publish(server, channel, texts):
    """In one reactor turn: the connection subscribed to `channel` is cut, then `texts` are
    published from the backend, so that the tab misses them."""
    [tab] = [conn for conn in server.hub.clients.values() if conn.subscriptions and channel in conn.subscriptions]
    tab.connection.transport.abortConnection()
    for text in texts:
        server.hub.publish_from_backend(channel, text)


@pytest_twisted.inlineCallbacks
def test_the_channel_panel_shows_missed_messages_after_a_reconnection_or_says_they_are_lost(make_server, tmp_path):
    config = tmp_path / "zbifrost.yaml"
    config.write_text("channels:\n  - pattern: '*'\n    history: {size: 3, ttl: 60}\n")
    server = yield make_server(config_file=str(config))
    scenario = Scenario.start("channel_recovery", server)
    yield scenario.step("subscribed")
    yield server.hub.publish_from_backend("orders", "first")
    yield scenario.step("published")  # the tab's own "mine" is offset 2
    _cut_and_publish(server, "orders", ["missed 1", "missed 2"])
    yield scenario.step("recovered")
    _cut_and_publish(server, "orders", [f"lost {n}" for n in range(1, 5)])  # more than the 3 kept
    yield scenario.step("lost")
    yield server.hub.publish_from_backend("orders", "after")
    seen = yield scenario.result()
    lost_connection = ["note:info", "Connection lost: the messages missed meanwhile will be asked for on reconnection."]
    assert seen["log"] == [
        ["server", "first"], ["you", "mine"],
        lost_connection, ["note:success", "Reconnected: 2 missed messages recovered."],
        ["server", "missed 1"], ["server", "missed 2"],  # and "mine" only once, though replayed
        lost_connection, ["note:warning", "Reconnected, but the messages published meanwhile could not be recovered."],
        ["server", "after"]]
    assert seen["errors"] == []


def _test_workspace_server(make_server):
    return make_server(workspace=TEST_WORKSPACE, zvafile="@.zUI.browser")


@pytest_twisted.inlineCallbacks
def test_dialog_form_submits_its_values_and_shows_the_result(make_server):
    server = yield _test_workspace_server(make_server)
    seen = yield run("dialog", server)
    assert seen["title"] == "Say hello"
    assert seen["entry"] == ["Greet", "Hello Ada (36)"]
    assert seen["dialogOpen"] is False
    client = seen["client"]
    assert client["asked"] == {"result": {"message": "Hello Bob (7)"}}
    assert [field["name"] for field in client["requests"][0]["fields"]] == ["name", "age"]
    assert "age" in _error(client["invalid"], "invalid_input")["details"]
    assert seen["errors"] == []


@pytest_twisted.inlineCallbacks
def test_display_output_and_progress_render_and_reach_hooks_and_per_call_callbacks(make_server):
    server = yield _test_workspace_server(make_server)
    seen = yield run("progress", server)
    assert seen["entry"] == ["Import", "alpha", "beta", "Importing: 3 / 3", "Imported 3 rows"]
    assert seen["bar"] == {"value": 3, "max": 3}
    streamed = [{"items": ["alpha", "beta"]}] + [{"current": n, "total": 3, "label": "Importing"} for n in (1, 2, 3)]
    assert seen["client"] == {"result": {"message": "Imported 3 rows"}, "hook": streamed, "perCall": streamed}
    assert seen["errors"] == []


@pytest_twisted.inlineCallbacks
def test_client_matches_replies_by_request_id_not_by_order(make_server):
    server = yield _test_workspace_server(make_server)
    order = yield run("out_of_order", server)
    assert order == [["Ping", {"message": "Pong!"}], ["Greet", {"message": "Hello Zed (1)"}]]


@pytest_twisted.inlineCallbacks
def test_demo_page_follows_zlink_and_zback(make_server):
    server = yield _test_workspace_server(make_server)
    seen = yield run("navigation", server)
    assert seen["linked"] == ["Go Deeper", "Now in Deeper"]
    assert seen["deeper"] == {"heading": "Menu: Deeper", "menu": [{"name": "Hello", "disabled": False},
                                                                 {"name": "zBack", "disabled": False}]}
    assert seen["hello"] == ["Hello", "Hello from Deeper"]
    assert seen["back"]["heading"] == "Menu: root"
    assert [item["name"] for item in seen["back"]["menu"]] == ["Ping", "Greet", "Import", "Go Deeper", "stop"]
    assert seen["errors"] == []
