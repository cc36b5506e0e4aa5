"""Unusual and hostile input from the web tier, through real sockets: every line is answered,
card numbers never reach the log lines in any field, slow senders and idle connections are
closed with a logged reason, and a failed second hello de-authenticates (issue 9, findings 3-6)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import pytest_twisted

from switch.gateway.config import ApiLimits
from tests.cardscan import problems

from .conftest import WEB1_TOKEN, authorize_request, error_of

inline = pytest_twisted.inlineCallbacks
CARD = "4012888888881881"


@pytest.fixture
def log_lines(request: pytest.FixtureRequest) -> Iterator[Callable[[], list[str]]]:
    """The rendered log lines (as the switch writes them) produced since the fixture started."""
    tee = request.config._kswitch_tee  # type: ignore[attr-defined]
    tee.file.flush()
    start = tee.file.tell()

    def lines() -> list[str]:
        tee.file.flush()
        with open(tee.file.name, encoding="utf-8") as f:
            f.seek(start)
            return f.read().splitlines()

    yield lines


def request_events(lines: list[str]) -> list[dict]:
    return [event for event in map(json.loads, lines) if event["event"] == "api_request"]


@inline
def test_a_lone_surrogate_is_answered_and_the_pipelined_request_behind_it_too(server, log_lines):
    client = yield server.connect()
    client.send(b'{"id":"\\ud800","op":"nope"}\n{"id":2,"op":"ping"}\n')
    answers = yield client.next(2)
    assert answers[0] == {"id": "\ud800", "ok": False, "error": answers[0]["error"]}
    assert error_of(answers[0]) == ("unknown_op", "op")
    assert answers[1] == {"id": 2, "ok": True, "pong": True}
    client.send(b'{"id":3,"op":"hello","client":"web-1\\udfff","token":"x"}\n', b'{"id":4,"op":"\\ud800"}\n')
    client.send(b'{"id":5,"op":"ping","\\ud800":1}\n', b'{"id":6,"op":"ping","x":"\\q"}\n')
    answers = yield client.next(4)
    assert [(a["id"], *error_of(a)) for a in answers] == [
        (3, "invalid_request", "client"),
        (4, "unknown_op", "op"),
        (5, "invalid_request", None),
        (None, "invalid_json", None),
    ]
    logged = request_events(log_lines())
    assert [event["request_id"] for event in logged][:2] == ["\ud800", 2]
    assert not any(event["event"] == "api_internal_error" for event in map(json.loads, log_lines()))


@inline
def test_card_numbers_in_any_field_are_masked_in_the_log_lines(server, log_lines):
    client = yield server.connect()
    hello = yield client.request({"id": CARD, "op": "hello", "client": CARD, "token": "wrong"})
    assert error_of(hello) == ("unauthenticated", None)
    yield client.hello()
    grouped = "1234 5678 9012 3452"  # passes Luhn but has no card scheme's prefix: a valid order id
    answers = []
    for request in (
        authorize_request(id=int(CARD), order_id=grouped),
        authorize_request(id=2, merchant_id=CARD),
        authorize_request(id=3, store_id=CARD),
        authorize_request(id=4, bank=CARD),
        {"id": 5, "op": "status", "txn_id": CARD},
        {"id": f"id-{CARD}", "op": "ping"},
    ):
        answer = yield client.request(request)
        answers.append(answer)
    assert answers[0]["ok"] and answers[0]["order_id"] == grouped and answers[0]["id"] == int(CARD)
    assert error_of(answers[1]) == ("forbidden", "merchant_id")
    assert error_of(answers[2]) == ("invalid_request", "store_id")
    assert answers[3]["ok"] and error_of(answers[4]) == ("not_found", "txn_id") and answers[5]["pong"]
    assert CARD not in answers[1]["error"]["message"]
    lines = log_lines()
    assert [problems(line) for line in lines if problems(line)] == []
    logged = request_events(lines)
    assert len(logged) == 8
    assert logged[0]["request_id"] == "401288******1881" and logged[0]["client_name"] == "401288******1881"
    assert logged[2]["order_id"] == "1234 56** **** 3452" and logged[2]["request_id"] == "401288******1881"
    assert logged[3]["merchant"] == logged[4]["store"] == logged[5]["bank"] == logged[6]["txn_id"] == "401288******1881"
    assert logged[7]["request_id"] == "id-401288******1881"


@inline
def test_a_line_that_never_ends_is_closed_with_a_logged_reason(make_server, log_lines):
    server = make_server(limits=ApiLimits(line_timeout=0.2, idle_timeout=0))
    client = yield server.connect()
    yield client.hello()
    client.send(b'{"id": 1, "op": "pi')  # then one byte a second, or nothing: the slot must come back
    yield client.wait_closed()
    [answer] = client.answers[1:]
    assert answer["id"] is None and error_of(answer) == ("invalid_request", None)
    closed = [e for e in map(json.loads, log_lines()) if e["event"] == "api_connection_closed_by_server"]
    assert [(e["reason"], e["client"]) for e in closed] == [("line_timeout", "web-1")]


@inline
def test_an_idle_authenticated_connection_is_closed_with_a_logged_reason(make_server, log_lines):
    server = make_server(limits=ApiLimits(idle_timeout=0.2))
    client = yield server.connect()
    yield client.hello()
    yield client.wait_closed()
    assert len(client.answers) == 1  # nothing is written: a pooled client would read it as its next answer
    closed = [e for e in map(json.loads, log_lines()) if e["event"] == "api_connection_closed_by_server"]
    assert [(e["reason"], e["client"]) for e in closed] == [("idle_timeout", "web-1")]


@inline
def test_a_failed_second_hello_de_authenticates_the_connection(server):
    client = yield server.connect()
    yield client.hello()
    other = yield client.hello("web-2", "web-2-secret-token")
    assert error_of(other) == ("invalid_request", "client")
    still = yield client.request(authorize_request(id=1))
    assert still["status"] == "approved"  # naming another client changes nothing
    wrong = yield client.hello("web-1", "wrong-token")
    assert error_of(wrong) == ("unauthenticated", None)
    refused = yield client.request(authorize_request(id=2))
    assert error_of(refused) == ("unauthenticated", None)
    status = yield client.request({"id": 3, "op": "status", "txn_id": still["txn_id"]})
    assert error_of(status) == ("unauthenticated", None)
    again = yield client.hello("web-1", WEB1_TOKEN)
    assert again["ok"]
    answer = yield client.request({"id": 4, "op": "status", "txn_id": still["txn_id"]})
    assert answer["ok"] and answer["status"] == "approved"
    assert len(server.service.calls) == 1


@pytest_twisted.ensureDeferred
async def test_a_de_authenticated_subscription_delivers_nothing_until_hello_succeeds(tmp_path):
    from tests.e2e.harness import TOKEN, start_env, stop_env
    from tests.e2e.test_notifications import reversed_payment, subscriber

    env = await start_env(tmp_path, request_timeout=0.5)
    try:
        watched, _ = await subscriber(env)
        witness, _ = await subscriber(env)
        wrong = await watched.call({"id": "h2", "op": "hello", "client": "web-1", "token": "wrong-token"})
        assert error_of(wrong) == ("unauthenticated", None)
        await reversed_payment(env)
        pushed = await witness.push()  # the event exists and reaches the authenticated subscriber
        assert await watched.quiet() == []
        again = await watched.call({"id": "h3", "op": "hello", "client": "web-1", "token": TOKEN})
        assert again["ok"]
        assert await watched.push() == pushed
    finally:
        await stop_env(env)
