"""zDialog: values sent as `data` are validated and coerced, failures name each field, and
without `data` the server asks with `input_request` and waits for `input_response`."""


import pytest
import pytest_twisted

from tests.helpers import start_engine
from zbifrost.messages import RequestError, quote
from zbifrost.testing import connect
from zbifrost.zui.errors import ZuiError
from zbifrost.zui.forms import parse_fields, validate

GOOD = {"name": "Ada", "age": "36", "ratio": 0.5, "admin": "yes", "email": "ada@example.org", "secret": "Abc1"}
COERCED = {"name": "Ada", "age": 36, "ratio": 0.5, "admin": True, "email": "ada@example.org", "secret": "Abc1"}


@pytest_twisted.inlineCallbacks
def test_good_data_is_coerced_and_reaches_onsubmit_as_zconv_values(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    assert (yield client.dispatch("Profile", data=GOOD)) == ["Ada", 36, COERCED]
    minimal = yield client.dispatch("Profile", data={"name": "Bo", "age": 7})
    assert minimal == ["Bo", 7, {"name": "Bo", "age": 7, "ratio": None, "admin": None, "email": None,
                                 "secret": None}]
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_bad_data_gives_invalid_input_with_each_fields_problem(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    bad = {"name": "A", "age": "old", "ratio": 2, "admin": "maybe", "email": "nope", "secret": "abc", "x": 1}
    reply = yield client.request_frame("dispatch", zKey="Profile", data=bad)
    assert reply["code"] == "invalid_input"
    assert reply["details"] == {
        "name": "must be at least 2 characters long",
        "age": "must be a whole number",
        "ratio": "must be at most 1",
        "admin": "must be true or false",
        "email": "must be an email address",
        "secret": "does not have the expected format",
        "x": "is not a field of this form",
    }
    missing = yield client.request_frame("dispatch", zKey="Profile", data={})
    assert missing["details"] == {"name": "is required", "age": "is required"}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_without_data_the_server_asks_with_input_request_and_continues_on_input_response(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    answered = client.request_frame("dispatch", zKey="Profile")
    asked = yield client.next_event("input_request")
    assert asked["prompt"] == "Your profile"
    assert asked["_forRequestId"] == 1 and "_requestId" not in asked
    assert asked["fields"][:2] == [{"name": "name", "type": "string", "required": True, "label": "Name"},
                                   {"name": "age", "type": "int", "required": True, "label": "age"}]
    assert [field["name"] for field in asked["fields"]] == ["name", "age", "ratio", "admin", "email", "secret"]
    client.send({"event": "input_response", "requestId": asked["requestId"], "value": GOOD})
    assert (yield answered) == {"result": ["Ada", 36, COERCED], "_requestId": 1}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_an_input_response_is_validated_like_data(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    answered = client.request_frame("dispatch", zKey="Profile")
    asked = yield client.next_event("input_request")
    client.send({"event": "input_response", "requestId": asked["requestId"], "value": {"name": "Ada"}})
    reply = yield answered
    assert reply["code"] == "invalid_input" and reply["details"] == {"age": "is required"}
    yield client.close()


@pytest_twisted.inlineCallbacks
def test_an_unanswered_input_request_times_out_and_a_late_or_foreign_answer_is_ignored(make_server):
    server = yield start_engine(make_server)
    client = yield connect(server.url)
    other = yield connect(server.url)
    answered = client.request_frame("dispatch", zKey="Quick Form")
    asked = yield client.next_event("input_request")
    other.send({"event": "input_response", "requestId": asked["requestId"], "value": {"answer": 1}})
    reply = yield answered
    assert reply["code"] == "timeout"
    conn = server.hub.clients[client.info["client_id"]]
    assert conn.pending_inputs == {}
    client.send({"event": "input_response", "requestId": asked["requestId"], "value": {"answer": 1}})
    assert (yield client.dispatch("^Ping")) == {"message": "Pong!"}
    assert asked["_forRequestId"] == reply["_requestId"]
    # nothing answered the late answer: the reply to the ping sent after it follows the timeout
    assert client.frames[-2:] == [reply, {"result": {"message": "Pong!"}, "_requestId": 2}]
    # nor the foreign one: after connection_info, the other client's only frame is its ping's reply
    assert (yield other.dispatch("^Ping")) == {"message": "Pong!"}
    assert other.frames[1:] == [{"result": {"message": "Pong!"}, "_requestId": 1}]
    yield client.close()
    yield other.close()


@pytest_twisted.inlineCallbacks
def test_a_huge_unknown_field_name_is_echoed_cut_short_in_the_error_and_details(make_server):
    server = yield start_engine(make_server, max_message_size=1024 * 1024)
    client = yield connect(server.url)
    answered = client.request_frame("dispatch", zKey="Profile")
    asked = yield client.next_event("input_request")
    huge = "x" * 200_000
    client.send({"event": "input_response", "requestId": asked["requestId"],
                 "value": {"name": "Ada", "age": 36, huge: 1}})
    reply = yield answered
    assert reply["code"] == "invalid_input"
    assert reply["details"] == {quote(huge): "is not a field of this form"}
    assert len(reply["error"]) < 200 and reply["error"] == f"Invalid input: {quote(huge)}"
    yield client.close()


# -- field validation, without a server -----------------------------------------------------

def fields(*specs):
    return parse_fields(list(specs), 1)


def test_each_field_type_coerces_what_a_form_sends():
    form = fields({"name": "n", "type": "int"}, {"name": "f", "type": "float"}, {"name": "b", "type": "bool"},
                  {"name": "s"}, {"name": "e", "type": "email"}, {"name": "p", "type": "password"})
    assert validate(form, {"n": " -12 ", "f": "2.5", "b": "off", "s": " x ", "e": "a@b.co", "p": " pw "}) == {
        "n": -12, "f": 2.5, "b": False, "s": " x ", "e": "a@b.co", "p": " pw "}
    assert validate(form, {"n": 3.0, "f": 4, "b": 1, "s": "x", "e": "a@b.co", "p": "x"})["n"] == 3


@pytest.mark.parametrize("spec, value, problem", [
    ({"type": "int"}, True, "must be a whole number"),
    ({"type": "int"}, 2.5, "must be a whole number"),
    ({"type": "int", "min": 5}, 4, "must be at least 5"),
    ({"type": "float"}, "nan", "must be a finite number"),
    ({"type": "float"}, [1], "must be a number"),
    ({"type": "bool"}, 2, "must be true or false"),
    ({"type": "string"}, 12, "must be text"),
    ({"type": "string", "max": 3}, "abcd", "must be at most 3 characters long"),
    ({"type": "string", "pattern": "[a-z]+"}, "abc1", "does not have the expected format"),
    ({"type": "email"}, "a@b", "must be an email address"),
])
def test_a_bad_value_is_reported_with_its_problem(spec, value, problem):
    with pytest.raises(RequestError) as caught:
        validate(fields(dict(spec, name="v")), {"v": value})
    assert caught.value.code == "invalid_input"
    assert caught.value.details == {"v": problem}


def test_values_that_are_not_an_object_are_invalid_input():
    with pytest.raises(RequestError) as caught:
        validate(fields({"name": "v"}), ["not", "a", "dict"])
    assert caught.value.code == "invalid_input"


@pytest.mark.parametrize("spec, problem", [
    ({"name": "v", "type": "date"}, "type 'date' is not one of"),
    ({"name": "v", "pattern": "(unclosed"}, "is not a valid regular expression"),
    ({"name": "v", "type": "int", "pattern": "[0-9]"}, "pattern must be a string, on a string"),
    ({"name": "v", "min": 3, "max": 2}, "min is greater than max"),
    ({"name": "v", "type": "bool", "min": 0}, "makes no sense on a bool field"),
    ({"name": "v", "min": -1}, "is a length"),
    ({"name": "not valid"}, "name must be an identifier"),
    ({"name": "v", "colour": "red"}, "unknown key(s) colour"),
    ({"name": "v", "required": "yes"}, "required must be true or false"),
])
def test_a_malformed_field_is_refused_at_load_time(spec, problem):
    with pytest.raises(ZuiError) as caught:
        parse_fields([spec], 7)
    assert problem in str(caught.value)
    assert str(caught.value).startswith("line 7")


def test_two_fields_with_one_name_are_refused():
    with pytest.raises(ZuiError, match="used twice"):
        parse_fields([{"name": "v"}, {"name": "v", "type": "int"}], 1)


def test_bounds_apply_to_numbers_by_value_and_to_text_by_length():
    form = fields({"name": "n", "type": "float", "min": 0.5, "max": 1}, {"name": "s", "min": 2, "required": False})
    assert validate(form, {"n": 1, "s": "ab"}) == {"n": 1.0, "s": "ab"}
    with pytest.raises(RequestError) as caught:
        validate(form, {"n": 0.4, "s": "a"})
    assert caught.value.details == {"n": "must be at least 0.5", "s": "must be at least 2 characters long"}
