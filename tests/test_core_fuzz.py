"""Every client event with random JSON values (docs/protocol.md sections 3, 7 and 9): wrong types,
huge numbers, NaN, deep nesting, long strings, lone surrogates and invalid UTF-8 in every field
of every event, in each of its forms (`event`, the legacy `action`, a bare `zKey`), as text and
as binary frames, now and then with one flaw of the whole frame.

Each frame gets exactly one reply of a documented shape (an `input_response` none or one), or
a documented close (1009 past max_message_size, 1007 for a text frame that is not UTF-8); the
server logs no traceback and nothing at error or critical, and a second client keeps getting
`Pong!` throughout. One server and one pair of connections serve every example.
"""

import base64
import hashlib
import hmac
import json
import time

import pytest
import pytest_twisted
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.logger import LogLevel, eventAsText, globalLogPublisher

from tests.conftest import DEMO_WORKSPACE
from tests.helpers import write_tokens
from zbifrost import messages, testing
from zbifrost.events import HANDLERS
from zbifrost.testing import ConnectionClosed

MAX_MESSAGE_SIZE = 65536  # the default
SECRET = "the fuzz test's HMAC secret, thirty-two bytes or more"
USER, TOKEN, OTHER_TOKEN = "fuzzer", "fuzzer-token", "other-token"
WAIT = 10  # seconds a reply may take before the test fails

# Error codes a fuzzed frame may get. Left out on purpose: command_failed and timeout (no demo
# command fails or outlasts its timeout, and the test answers every input_request),
# shutting_down, broker_unavailable and proxy_unavailable (no shutdown, broker or proxy here).
ERROR_CODES = {messages.BAD_JSON, messages.BAD_MESSAGE, messages.UNKNOWN_EVENT, messages.MISSING_FIELD,
               messages.UNKNOWN_COMMAND, messages.FORBIDDEN, messages.INVALID_INPUT, messages.RATE_LIMITED,
               messages.TOO_MANY_REQUESTS, messages.NOT_AVAILABLE, messages.INVALID_TOKEN}
# Errors that may lack the frame's _requestId: the frame was not read as far as a usable one.
UNNUMBERED_CODES = {messages.BAD_JSON, messages.BAD_MESSAGE, messages.MISSING_FIELD}
# Events a dispatch may send before its reply, and channel events.
EVENTS = {"progress", "display", "input_request", "message", "join", "leave"}


# -- JSON with what a strict encoder refuses ---------------------------------------------------

class Raw:
    """Bytes put into a message as they are: NaN, 1e400, lone surrogate escapes, invalid UTF-8."""

    def __init__(self, data):
        self.data = data

    def __repr__(self):
        return f"Raw({self.data[:60]!r}{'...' if len(self.data) > 60 else ''})"


def encode(value):
    """The JSON text of `value` as bytes, Raw parts as they are (Python's json writes NaN and
    Infinity for such floats, and integers of any size)."""
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, dict):
        return b"{" + b",".join(encode(str(key)) + b":" + encode(item) for key, item in value.items()) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(encode(item) for item in value) + b"]"
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


RAW_VALUES = [Raw(text) for text in (
    b"NaN", b"-Infinity", b"Infinity", b"1e400", b"-1e400", b"1" + b"0" * 400, b"18446744073709551616",
    b"-9223372036854775809", b"9223372036854775807", b"4e-400", b"-0", b"1E+2",
    rb'"\ud800"', rb'"\udfff"', rb'"x\ud800\u0041"', rb'"\udc00\ud800"', rb'"\u0000\u001f"',
    b'"\xed\xa0\x80"', b'"\xff"', b'"\xc3"', b'"\xf4\x90\x80\x80"',  # not UTF-8: a text frame closes 1007
)]


def deep(depth, kind):
    opening, closing = (b"[", b"]") if kind == "list" else (b'{"a":', b"}")
    return Raw(opening * depth + b"1" + closing * depth)


def weighted(*choices):
    """A value of one of the strategies of `choices`, (weight, strategy) pairs, chosen by weight
    (st.one_of flattens nested choices into equally likely branches)."""
    return st.sampled_from([strategy for weight, strategy in choices for _ in range(weight)]).flatmap(lambda s: s)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-2**80, max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
    st.text(st.characters(max_codepoint=0x9f), max_size=10),  # control characters, C1 included
)
trees = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
long_strings = st.builds(lambda char, size: char * size, st.sampled_from(["x", "\u00e9", "\U0001f600", "\x00"]),
                         st.integers(min_value=100, max_value=MAX_MESSAGE_SIZE // 2))
deeply_nested = st.builds(deep, st.sampled_from([40, 62, 63, 64, 65, 300, 1023, 1100]),
                          st.sampled_from(["list", "dict"]))
junk = weighted((6, trees), (2, st.sampled_from(RAW_VALUES)), (1, long_strings), (1, deeply_nested))
not_text = st.recursive(st.none() | st.booleans(), lambda inner: st.lists(inner, max_size=2)
                        | st.dictionaries(st.text(max_size=4), inner, max_size=2), max_leaves=3)


class Field:
    """A field's `good` values (a strategy) and its `bad` ones: the given near misses, or anything."""

    def __init__(self, good, *near_misses, anything=junk):
        self.good = good
        self.bad = weighted((1, st.sampled_from(near_misses)), (2, anything)) if near_misses else anything


def one(*values):
    return st.sampled_from(values)


@st.composite
def spoiled(draw, required, optional):
    """A dict of good values for the `required` fields and some of the `optional` ones
    ({name: Field}), then a bad value in none, one or two of them."""
    names = sorted(required) + [name for name in sorted(optional) if draw(st.booleans())]
    fields = dict(required, **optional)
    value = {name: draw(fields[name].good) for name in names}
    if fields:
        for name in draw(st.sets(st.sampled_from(sorted(fields)), max_size=draw(one(0, 0, 1, 1, 1, 2)))):
            value[name] = draw(fields[name].bad)
    return value


# -- the fields of each event (docs/protocol.md section 3) -----------------------------------------

KEY = Field(one("Ping", "^Ping", "Tools", "^Tools", "Greet", "Add", "Who Am I", "Server Time", "Colors",
                "Setup Wizard", "Sign Up", "Level 1 Menu", "Echo Test", "Status", "zBack", "^zBack"),
            "stop", "Nope", "ping", " Ping", "^", "", "x" * 200)
BLOCK = Field(one("root", "Tools", "Level1Menu"), "Nope", "", "root\n")
CHANNEL = Field(one("chat", "room.1", "user:fuzzer", "a@b|c+=d", "c" * 128),
                "user:someone", "c" * 129, "chat\n", "", "chat*", "\u00e9")
SINCE = Field(st.fixed_dictionaries({"epoch": st.text(max_size=20), "offset": one(0, 1, 2**63)}),
              {"epoch": "e", "offset": -1}, {"epoch": "", "offset": 1.5}, {"epoch": 1, "offset": 0}, {"offset": 0},
              [0], "e", 5)


def sign_up_form(anything):
    """Values for the demo's Sign Up form (zDialog): each right, wrong for its field, or anything."""
    return spoiled({}, {"username": Field(one("alice"), "al", "Alice", "a" * 21, anything=anything),
                        "email": Field(one("a@b.example"), "a@b", "", anything=anything),
                        "password": Field(one("secret123"), "short", None, anything=anything),
                        "age": Field(one(13, 130, "40", 40.0), 12, 40.5, "1e3", True, anything=anything),
                        "newsletter": Field(one(True, "yes", "off", 0), 2, "maybe", anything=anything),
                        "nickname": Field(anything)})  # not a field of the form


FORM = Field(sign_up_form(junk))
ANSWERS = weighted((3, sign_up_form(trees)), (1, trees))  # what an input_request is answered with: JSON


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def signed_token(header, claims):
    """An HS256 JWT signed with the server's secret, whatever its header and claims hold."""
    signing_input = _b64(encode(header)) + b"." + _b64(encode(claims))
    return (signing_input + b"." + _b64(hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest())).decode()


NOW = int(time.time())
# A good `exp` is a day away: a refresh that succeeded with an expiry seconds away would close
# the connection later, for no frame of the test. The role stays admin unless spoiled.
HEADER = Field(one({"alg": "HS256", "typ": "JWT"}), {"alg": "none"}, {"alg": "HS512"}, {})
JWTS = st.builds(
    signed_token, weighted((3, HEADER.good), (1, HEADER.bad)),
    spoiled({"sub": Field(one(USER), "someone", "", 1),
             "exp": Field(one(NOW + 86400, NOW + 86400.5), NOW - 60, 2**53, 2**53 + 1, 2**64 - 1, 1e20, 1e308, 0, -1,
                          "9999999999")},
            {"role": Field(one("admin"), "user", "", "r" * 65, "bad role"),
             "nbf": Field(one(NOW - 60), NOW + 3600, 2**64), "iat": Field(one(NOW - 60), NOW + 3600, -1)}))
TOKEN_FIELD = Field(weighted((1, one(TOKEN)), (3, JWTS)), OTHER_TOKEN, "garbage", "a.b.c", "a.b", "\x00\n")

# event: (its required fields, its optional ones)
FIELDS = {
    "dispatch": ({"zKey": KEY}, {"cmd": KEY, "zBlock": BLOCK, "args": Field(st.lists(scalars, max_size=3)),
                                 "data": FORM, "no_cache": Field(st.booleans())}),
    "connection_info": ({}, {}),
    "discover": ({}, {}),
    "introspect": ({"zKey": KEY}, {"cmd": KEY, "zBlock": BLOCK}),
    "cache_stats": ({}, {}),
    "set_cache_ttl": ({"ttl": Field(one(0, 5, 0.5, 1e308, 2**63), -1, "5", None)}, {}),
    "get_schema": ({}, {}),
    "clear_cache": ({}, {}),
    "subscribe": ({"channel": CHANNEL}, {"since": SINCE}),
    "unsubscribe": ({"channel": CHANNEL}, {}),
    "publish": ({"channel": CHANNEL, "data": Field(trees)}, {}),
    "input_response": ({"requestId": Field(one("no-such-request"), ""), "value": FORM}, {}),
    "ping": ({}, {}),
    "refresh": ({"token": TOKEN_FIELD}, {}),
    "presence": ({"channel": CHANNEL}, {}),
    "presence_stats": ({"channel": CHANNEL}, {}),
}


def test_the_fuzzed_events_are_the_servers_events():
    assert set(FIELDS) == set(HANDLERS)


class Frame:
    """One fuzzed frame: the event, its message, how the event is named in it ("event", "action"
    or "zKey": none, a legacy dispatch), whether it gets a fresh _requestId, and what is done to
    it: `whole` is a value sent instead of the message, `cut` where its bytes are cut off.
    `answer` is the value sent back if the frame gets an input_request."""

    def __init__(self, event, message, naming="event", numbered=True, whole=None, cut=None, binary=False,
                 answer=None):
        self.event, self.message, self.naming, self.numbered = event, message, naming, numbered
        self.whole, self.cut, self.binary, self.answer = whole, cut, binary, answer

    def payload(self, request_id):
        """The bytes sent; `request_id` is the frame's _requestId when it is `numbered`."""
        if self.whole is not None:
            return encode(self.whole)
        message = dict(self.message)
        if self.naming in ("event", "action"):
            message[self.naming] = self.event
        if self.numbered:
            message["_requestId"] = request_id
        data = encode(message)
        return data[:self.cut % len(data)] if self.cut is not None else data

    def __repr__(self):
        return (f"Frame({self.event!r}, {self.message!r}, naming={self.naming!r}, numbered={self.numbered}, "
                f"whole={self.whole!r}, cut={self.cut}, binary={self.binary}, answer={self.answer!r})")


FLAWS = [None] * 8 + ["junk event", "junk _requestId", "no _requestId", "missing field", "cut", "whole"]


@st.composite
def frames(draw):
    """A message for one event with its fields, then at most one flaw of the whole frame."""
    event = draw(st.sampled_from(["dispatch"] * 3 + sorted(FIELDS) + ["no_such_event", ""]))
    message = draw(spoiled(*FIELDS.get(event, ({}, {}))))
    message.update(draw(weighted((3, st.just({})), (1, st.dictionaries(st.sampled_from(["extra", "cmd"]), junk)))))
    naming = draw(st.sampled_from(["event", "event", "action"] + (["zKey"] if event == "dispatch" else [])))
    flaw = draw(st.sampled_from(FLAWS))
    if flaw == "missing field" and message:
        del message[draw(st.sampled_from(sorted(message)))]
    if naming == "zKey":
        message.setdefault("zKey", draw(KEY.good))
    elif flaw == "junk event":
        event = draw(not_text)
    else:  # the other name is ignored (`action` beside `event`) or refused (`event` beside `action`)
        message.update(draw(weighted((5, st.just({})), (1, st.dictionaries(st.sampled_from(["event", "action"]),
                                                                          not_text, min_size=1, max_size=1)))))
    if flaw == "junk _requestId":
        message["_requestId"] = draw(not_text.filter(lambda value: value is not None))
    return Frame(event, message, naming, numbered=flaw not in ("junk _requestId", "no _requestId"),
                 whole=draw(junk.filter(lambda value: value is not None)) if flaw == "whole" else None,
                 cut=draw(st.integers(min_value=0)) if flaw == "cut" else None,
                 binary=draw(st.booleans()), answer=draw(ANSWERS))


# -- one server, a fuzzed client and a bystander ------------------------------------------------

def is_utf8(data):
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class Fuzzing:
    """The server under fuzz, its log, the fuzzed connection (opened again after a documented
    close) and a bystander that keeps asking for Pong!."""

    def __init__(self, server, log):
        self.server, self.log = server, log
        self.sent = 0
        self.client = self.bystander = None
        self.settled = False  # the last example passed: nothing of it is still on its way

    @pytest_twisted.inlineCallbacks
    def open(self):
        if self.client is not None:
            yield self.client.close()
        self.client = yield testing.connect(self.server.url, token=TOKEN)
        if self.bystander is None:
            self.bystander = yield testing.connect(self.server.url, token=TOKEN)

    @pytest_twisted.inlineCallbacks
    def send(self, frame):
        """Send one frame, then a ping whose reply follows every reply made at once; check what
        came back (a dispatch may answer later: wait for that one), or how the connection closed."""
        if not self.settled:  # the first example, or the last one failed half-way: start afresh
            del self.log[:]
            yield self.open()
        self.settled = False
        self.sent += 1
        request_id, sentinel = f"fuzz-{self.sent}", f"sentinel-{self.sent}"
        payload = frame.payload(request_id)
        client = self.client
        replies, sentinel_seen = [], False
        try:
            client.send_raw(payload, binary=frame.binary)
            client.send({"event": "ping", "_requestId": sentinel})
            while not sentinel_seen or (not replies and frame.event != "input_response"):
                reply = yield client.next_frame().addTimeout(WAIT, reactor)
                if reply.get("_requestId") == sentinel:
                    assert "pong" in reply["result"], reply
                    sentinel_seen = True
                elif "event" in reply:
                    assert reply["event"] in EVENTS, reply
                    if reply["event"] == "input_request":
                        assert reply.get("_forRequestId") == (request_id if frame.numbered else None), reply
                        client.send_raw(encode({"event": "input_response", "requestId": reply["requestId"],
                                                "value": frame.answer}))
                else:
                    replies.append(reply)
        except ConnectionClosed as closed:
            yield self.open()  # first: the next example needs it, whatever this one's verdict
            check_close(closed, payload, frame.binary)
            return
        assert len(replies) <= 1, replies
        for reply in replies:
            check_reply(reply, request_id if frame.numbered else None)

    @pytest_twisted.inlineCallbacks
    def check_bystander_and_log(self):
        assert (yield self.bystander.dispatch("^Ping").addTimeout(WAIT, reactor)) == {"message": "Pong!"}
        bad = [eventAsText(event) for event in self.log
               if event.get("log_failure") is not None or event.get("log_level") in (LogLevel.error, LogLevel.critical)
               or "Traceback" in eventAsText(event)]
        del self.log[:]
        assert not bad, bad
        self.settled = True


def check_close(closed, payload, binary):
    """The only closes a frame may cause (docs/protocol.md sections 1, 9 and 10)."""
    if closed.code == 1009:
        assert len(payload) > MAX_MESSAGE_SIZE, (closed.code, closed.reason)
        assert closed.reason.startswith("received WebSocket message size"), closed.reason
    elif closed.code == 1007:
        assert not binary and not is_utf8(payload), (closed.code, closed.reason)
        assert "UTF-8" in closed.reason, closed.reason
    else:
        raise AssertionError(f"closed {closed.code} {closed.reason!r}")


def check_reply(reply, request_id):
    """A reply of docs/protocol.md section 3's shape, echoing the frame's _requestId."""
    if "result" in reply:
        assert set(reply) <= {"result", "_requestId", "_cached"}, reply
        assert reply.get("_requestId") == request_id, reply
        return
    assert set(reply) <= {"error", "code", "details", "_requestId"}, reply
    assert reply["code"] in ERROR_CODES, reply
    assert type(reply["error"]) is str and "Traceback" not in reply["error"], reply
    if reply["code"] in UNNUMBERED_CODES:
        assert reply.get("_requestId") in (request_id, None), reply
    else:
        assert reply.get("_requestId") == request_id, reply


@pytest.fixture(scope="module")
def fuzzing(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    tokens = write_tokens(folder / "tokens.yaml", (TOKEN, USER, "admin"), (OTHER_TOKEN, "someone", "user"))
    config = folder / "zbifrost.yaml"
    config.write_text("\n".join([
        "websocket:", "  require_auth: true", f"  tokens: {tokens}", f"  jwt: {{secret: {json.dumps(SECRET)}}}",
        # generous: rate limiting may answer, but does not stand in front of the other answers
        "  rate: 10000", "  burst: 10000",
        "channels:", "  - {pattern: 'room.*', presence: true, join_leave: true}", "  - {pattern: '*'}",
    ]) + "\n")
    log = []
    globalLogPublisher.addObserver(log.append)
    server = pytest_twisted.blockon(testing.start_server(DEMO_WORKSPACE, config_file=str(config),
                                                         zvafile="@.zUI.demo"))
    session = Fuzzing(server, log)
    try:
        yield session
        for client in (session.client, session.bystander):
            if client is not None:
                pytest_twisted.blockon(client.close())
    finally:
        pytest_twisted.blockon(server.stop())
        globalLogPublisher.removeObserver(log.append)


SIGN_UP = {"zKey": "Sign Up", "zBlock": "root"}


@settings(max_examples=500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(frame=frames())
# the brief's own cases, and what is met at random only by luck: a zDialog answered well, badly
# and not as an object; a good refresh, and one whose exp is past 2^63
@example(frame=Frame("dispatch", {"zKey": Raw(b"NaN")}))
@example(frame=Frame("publish", {"channel": "chat", "data": Raw(rb'"\ud800"')}))
@example(frame=Frame("publish", {"channel": "chat", "data": Raw(b'"\xed\xa0\x80"')}, binary=True))
@example(frame=Frame("publish", {"channel": "chat", "data": "x" * MAX_MESSAGE_SIZE}))
@example(frame=Frame("dispatch", SIGN_UP, answer={"username": "alice", "email": "a@b.example", "password": "x" * 8}))
@example(frame=Frame("dispatch", SIGN_UP, answer={"age": 1e308, "newsletter": "\x00", "username": ["alice"]}))
@example(frame=Frame("dispatch", SIGN_UP, answer=[1]))
@example(frame=Frame("refresh", {"token": signed_token({"alg": "HS256"}, {"sub": USER, "role": "admin",
                                                                          "exp": NOW + 86400})}))
@example(frame=Frame("refresh", {"token": signed_token({"alg": "HS256"}, {"sub": USER, "exp": 1e20})}))
@pytest_twisted.inlineCallbacks  # pytest-twisted runs each example in the reactor's greenlet
def test_every_event_with_random_values_gets_a_documented_reply_or_close(fuzzing, frame):
    yield fuzzing.send(frame)
    yield fuzzing.check_bystander_and_log()
