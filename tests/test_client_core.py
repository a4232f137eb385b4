"""The client's sans-IO core (zbifrost.client.core): frames in, frames and events out, no sockets, time
passed in."""

import json

import pytest

from zbifrost.client.core import (
    RETRY_MAX,
    ClientCore,
    Closed,
    Connected,
    InputRequested,
    Membership,
    Position,
    PositionLost,
    Publication,
    Reconnecting,
    RefreshDue,
    Replied,
    RequestEvent,
    SubscriptionEnded,
    retry_delay,
)

T0 = 1_000_000.0


def info(**auth):
    return json.dumps({"event": "connection_info", "data": {"auth": {"authenticated": True, **auth}}})


def connected(core, now=T0, **auth):
    events = core.receive(info(**auth), now)
    assert isinstance(events[0], Connected)
    return events


def sent(core):
    return [json.loads(frame) for frame in core.data_to_send()]


def reply(request_id, result=None, **error):
    frame = {"_requestId": request_id, **(error or {"result": result})}
    return json.dumps(frame)


def message(channel, offset, data=None, sender="c-1"):
    return json.dumps({"event": "message", "channel": channel, "data": data, "from": sender, "offset": offset})


def publications(events):
    return [(event.offset, event.data) for event in events if isinstance(event, Publication)]


def test_requests_get_increasing_ids_and_each_reply_settles_its_own():
    core = ClientCore()
    connected(core)
    first = core.request("dispatch", {"zKey": "^Ping"}, T0)
    second = core.request("dispatch", {"zKey": "^Echo"}, T0)
    assert [frame["_requestId"] for frame in sent(core)] == [first, second] and first != second
    assert core.receive(reply(second, {"message": "b"}), T0) == [Replied(second, {"message": "b"})]
    (failed,) = core.receive(reply(first, error="Unknown command", code="unknown_command"), T0)
    assert (failed.request_id, failed.error.code, failed.error.message) == (first, "unknown_command", "Unknown command")
    assert core.receive(reply(first, {"late": True}), T0) == []  # settled once


def test_progress_display_and_input_request_reach_their_request_and_keep_it_alive():
    core = ClientCore(timeout=10)
    connected(core)
    request_id = core.request("dispatch", {"zKey": "^Import"}, T0)
    progress = json.dumps({"event": "progress", "_forRequestId": request_id, "current": 1, "total": 2})
    (event,) = core.receive(progress, T0 + 9)
    assert isinstance(event, RequestEvent) and event.frame["current"] == 1
    assert core.handle_timer(T0 + 15) == []  # rearmed at T0 + 9
    asking = json.dumps({"event": "input_request", "_forRequestId": request_id, "requestId": "u-1", "fields": []})
    assert isinstance(core.receive(asking, T0 + 15)[0], InputRequested)
    core.answer_input("u-1", {"name": "x"})
    assert sent(core)[-1] == {"event": "input_response", "requestId": "u-1", "value": {"name": "x"}}
    (timed_out,) = core.handle_timer(T0 + 25.5)
    assert timed_out.request_id == request_id and timed_out.error.code == "timeout"


def test_a_request_when_not_connected_fails_at_once():
    with pytest.raises(Exception, match="disconnected"):
        ClientCore().request("ping", {}, T0)


def test_publications_are_delivered_once_in_offset_order_with_the_epoch():
    core = ClientCore()
    connected(core)
    request_id = core.subscribe("chat", T0)
    assert sent(core)[0] == {"event": "subscribe", "channel": "chat", "_requestId": request_id}
    core.receive(reply(request_id, {"channel": "chat", "subscribed": True, "epoch": "e1", "offset": 4}), T0)
    assert publications(core.receive(message("chat", 6, "six"), T0)) == []  # 5 is missing: held
    assert publications(core.receive(message("chat", 5, "five"), T0)) == [(5, "five"), (6, "six")]
    assert publications(core.receive(message("chat", 5, "again"), T0)) == []
    (event,) = core.receive(message("chat", 7, "seven", sender="server"), T0)
    assert event == Publication("chat", "seven", 7, "e1", "server")
    assert core.position("chat") == Position("e1", 7)


def test_after_a_reconnection_the_subscribe_carries_since_and_the_replay_is_not_repeated():
    core = ClientCore(rng=lambda: 0.5)
    connected(core)
    request_id = core.subscribe("chat", T0)
    core.receive(reply(request_id, {"epoch": "e1", "offset": 2}), T0)
    core.receive(message("chat", 3, "three"), T0)
    sent(core)
    events = core.connection_lost(1006, "")
    assert events[-1] == Reconnecting(1, 0.5)
    connected(core, T0 + 1)
    (resubscribe,) = sent(core)
    assert resubscribe["since"] == {"epoch": "e1", "offset": 3}
    assert publications(core.receive(message("chat", 5, "five"), T0)) == []  # held until the reply
    core.receive(reply(resubscribe["_requestId"], {"epoch": "e1", "offset": 5, "recovered": True}), T0)
    assert publications(core.receive(message("chat", 4, "four"), T0)) == [(4, "four"), (5, "five")]
    assert publications(core.receive(message("chat", 3, "three"), T0)) == []


def test_recovered_false_reports_the_lost_position_and_goes_on_from_the_new_one():
    core = ClientCore()
    core.subscribe("chat", T0, since=Position("old", 9))
    connected(core)
    (subscribe,) = sent(core)
    assert subscribe["since"] == {"epoch": "old", "offset": 9}
    events = core.receive(reply(subscribe["_requestId"], {"epoch": "new", "offset": 0, "recovered": False}), T0)
    assert events[1] == PositionLost("chat", Position("new", 0))
    assert publications(core.receive(message("chat", 1, "one"), T0)) == [(1, "one")]


def test_unsubscribed_for_insufficient_state_subscribes_again_with_since_and_another_reason_ends_it():
    core = ClientCore()
    connected(core)
    core.receive(reply(core.subscribe("chat", T0), {"epoch": "e1", "offset": 3}), T0)
    core.receive(reply(core.subscribe("news", T0), {"epoch": "e1", "offset": 0}), T0)
    sent(core)
    lost = json.dumps({"event": "unsubscribed", "channel": "chat", "reason": "insufficient_state"})
    assert core.receive(lost, T0) == []
    (again,) = sent(core)
    assert again["since"] == {"epoch": "e1", "offset": 3}
    events = core.receive(reply(again["_requestId"], {"epoch": "e1", "offset": 8, "recovered": False}), T0)
    assert events[1] == PositionLost("chat", Position("e1", 8))
    ended = json.dumps({"event": "unsubscribed", "channel": "news", "reason": "server"})
    assert core.receive(ended, T0) == [SubscriptionEnded("news", reason="server")]
    assert core.position("news") is None


def test_a_refused_subscribe_is_forgotten_and_one_cut_short_is_sent_again():
    core = ClientCore()
    connected(core)
    refused = core.subscribe("secret", T0)
    core.subscribe("chat", T0)
    events = core.receive(reply(refused, error="Forbidden", code="forbidden"), T0)
    assert isinstance(events[1], SubscriptionEnded) and events[1].error.code == "forbidden"
    sent(core)
    events = core.connection_lost(1006, "")
    assert [event.error.code for event in events if isinstance(event, Replied)] == ["disconnected"]
    connected(core)
    assert [frame["channel"] for frame in sent(core)] == ["chat"]


def test_frames_not_sent_before_the_connection_was_lost_are_not_sent_on_the_next_one():
    core = ClientCore()
    connected(core)
    core.request("dispatch", {"zKey": "^Ping"}, T0)
    core.connection_lost(1006, "")
    connected(core)
    assert sent(core) == []


def test_join_and_leave_become_membership_events_of_their_channel():
    core = ClientCore()
    connected(core)
    who = {"client_id": "c-2", "user": "bob", "role": "user"}
    joined = core.receive(json.dumps({"event": "join", "channel": "room", "info": who}), T0)
    left = core.receive(json.dumps({"event": "leave", "channel": "room", "info": who}), T0)
    assert joined == [Membership("room", True, who)] and left == [Membership("room", False, who)]


def test_own_publications_are_skipped_in_order_not_waited_for():
    core = ClientCore()
    connected(core)
    core.receive(reply(core.subscribe("chat", T0), {"epoch": "e1", "offset": 1}), T0)
    mine = core.publish("chat", {"x": 1}, T0, idempotency_key="k-1")
    assert sent(core)[-1] == {"event": "publish", "channel": "chat", "data": {"x": 1}, "idempotency_key": "k-1",
                              "_requestId": mine}
    assert publications(core.receive(message("chat", 3, "three"), T0)) == []  # 2 is ours, its reply not yet in
    events = core.receive(reply(mine, {"channel": "chat", "epoch": "e1", "offset": 2}), T0)
    assert publications(events) == [(3, "three")]


def test_a_gap_nothing_fills_is_declared_lost_past_the_held_limit():
    core = ClientCore()
    connected(core)
    core.receive(reply(core.subscribe("chat", T0), {"epoch": "e1", "offset": 0}), T0)
    events = []
    for offset in range(2, 1003):
        events += core.receive(message("chat", offset, offset), T0)
    assert events[0] == PositionLost("chat", Position("e1", 1))
    assert [offset for offset, _ in publications(events)] == list(range(2, 1003))


def test_backoff_doubles_from_half_a_second_to_thirty_with_twenty_percent_jitter():
    assert [retry_delay(n, lambda: 0.5) for n in (1, 2, 3, 7, 8, 20)] == [0.5, 1, 2, 30, 30, 30]
    assert retry_delay(1, lambda: 0.0) == 0.4 and retry_delay(2, lambda: 0.999999) == pytest.approx(1.2, 1e-5)
    assert retry_delay(20, lambda: 0.999) == RETRY_MAX
    core = ClientCore(rng=lambda: 0.5)
    delays = [core.connection_lost(1006, "")[-1].delay for _ in range(3)]
    assert delays == [0.5, 1, 2]
    connected(core)
    assert core.connection_lost(1011, "Internal error")[-1] == Reconnecting(1, 0.5)  # counted afresh


@pytest.mark.parametrize(("code", "reason", "status"), [
    (1006, "", None), (1011, "Internal error", None), (1012, "", None), (1013, "Slow consumer", None),
    (1006, "", 503), (1001, "Server shutdown", None)])
def test_reconnects_after_failures_a_retry_can_cure(code, reason, status):
    assert isinstance(ClientCore().connection_lost(code, reason, status)[-1], Reconnecting)


@pytest.mark.parametrize(("code", "reason", "status"), [
    (1008, "Invalid token", None), (1008, "Disconnected", None), (1008, "Unauthorized", None),
    (1008, "Authentication required", None), (1006, "", 403)])
def test_never_reconnects_after_a_refusal(code, reason, status):
    core = ClientCore(renewable=True)
    assert core.connection_lost(code, reason, status)[-1] == Closed(code, reason, status)
    assert core.closed


def test_token_expired_is_retried_only_with_get_token():
    assert isinstance(ClientCore(renewable=True).connection_lost(1008, "Token expired")[-1], Reconnecting)
    assert isinstance(ClientCore(renewable=False).connection_lost(1008, "Token expired")[-1], Closed)


def test_close_by_the_client_fails_what_waits_and_does_not_reconnect():
    core = ClientCore()
    connected(core)
    request_id = core.request("ping", {}, T0)
    events = core.close()
    assert events[0].request_id == request_id and events[0].error.close_code == 1000
    assert isinstance(events[-1], Closed)


def test_the_token_is_refreshed_ten_seconds_before_it_expires_or_at_two_thirds_of_a_short_life():
    core = ClientCore(renewable=True)
    connected(core, expires=T0 + 60)
    assert core.next_timer() == T0 + 50
    assert core.handle_timer(T0 + 49) == []
    assert core.handle_timer(T0 + 50) == [RefreshDue()]
    core.refresh("new-token", T0 + 50)
    (refresh,) = sent(core)
    assert refresh["token"] == "new-token"
    core.receive(reply(refresh["_requestId"], {"expires": T0 + 53}), T0 + 50)
    assert core.next_timer() == T0 + 52  # 3 s left: at 2/3 of them
    static = ClientCore(renewable=False)
    connected(static, expires=T0 + 60)
    assert static.next_timer() is None


def test_a_connection_lost_cancels_the_refresh():
    core = ClientCore(renewable=True)
    connected(core, expires=T0 + 60)
    core.connection_lost(1006, "")
    assert core.next_timer() is None
