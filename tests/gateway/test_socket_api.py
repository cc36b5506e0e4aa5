"""The socket API as a web tier sees it: real TCP connections on 127.0.0.1, JSON lines both ways."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from structlog.testing import capture_logs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from switch.domain.errors import NOT_RECORDED_MESSAGE
from switch.domain.model import PingRequest
from switch.gateway.config import ApiLimits
from switch.gateway.ops import Operation
from switch.observe.logs import redact_card_numbers

from .conftest import CVV, PAN, WEB2_TOKEN, authorize_request, error_of, make_config

inline = pytest_twisted.inlineCallbacks


@inline
def test_approved_sale_answers_every_transaction_field(server):
    client = yield server.connect()
    yield client.hello()
    answer = yield client.request(authorize_request(id=7))
    assert answer == {
        "id": 7,
        "ok": True,
        "txn_id": "T000001",
        "status": "approved",
        "reason": "approved",
        "response_code": "00",
        "auth_code": "A1B2C3",
        "rrn": "000000000042",
        "stan": "000042",
        "connector": "bank_a",
        "masked_pan": "411111******1111",
        "merchant_id": "m1",
        "store_id": "s1",
        "order_id": "order-1",
        "amount": 1250,
        "currency": "USD",
    }
    [(request, client_name)] = server.service.calls
    assert client_name == "web-1"
    assert (request.amount, request.currency.numeric, request.capture) == (1250, "840", True)
    assert (request.instrument.pan, request.instrument.cvv) == (PAN, CVV)


@inline
def test_preauth_bank_and_idempotency_key_reach_the_service(server):
    client = yield server.connect()
    yield client.hello()
    answer = yield client.request(
        authorize_request(id=1, capture=False, bank="bank_b", idempotency_key="key-1", currency="JPY")
    )
    assert answer["ok"] is True
    [(request, _)] = server.service.calls
    assert (request.capture, request.bank, request.idempotency_key) == (False, "bank_b", "key-1")
    assert (request.currency.alpha, request.currency.exponent) == ("JPY", 0)


@inline
def test_declined_is_an_ok_answer_with_a_normalised_reason(server):
    client = yield server.connect()
    yield client.hello()
    answer = yield client.request(authorize_request(id=1, order_id="decline-1"))
    assert (answer["ok"], answer["status"], answer["reason"], answer["auth_code"]) == (
        True,
        "declined",
        "insufficient_funds",
        None,
    )


@inline
def test_merchants_of_other_clients_and_unknown_merchants_are_forbidden_alike(server):
    client = yield server.connect()
    yield client.hello()
    other = yield client.request(authorize_request(id=1, merchant_id="m2", store_id="s2"))
    unknown = yield client.request(authorize_request(id=2, merchant_id="nope"))
    assert error_of(other) == error_of(unknown) == ("forbidden", "merchant_id")
    unknown_store = yield client.request(authorize_request(id=3, store_id="s2"))
    assert error_of(unknown_store) == ("invalid_request", "store_id")
    assert server.service.calls == []


@inline
def test_status_shows_own_transactions_only(server):
    web1 = yield server.connect()
    yield web1.hello()
    sale = yield web1.request(authorize_request(id=1))
    mine = yield web1.request({"id": 2, "op": "status", "txn_id": sale["txn_id"]})
    assert mine["ok"] is True
    assert {k: mine[k] for k in ("txn_id", "status", "merchant_id", "order_id", "amount", "currency")} == {
        "txn_id": sale["txn_id"],
        "status": "approved",
        "merchant_id": "m1",
        "order_id": "order-1",
        "amount": 1250,
        "currency": "USD",
    }
    web2 = yield server.connect()
    yield web2.hello("web-2", WEB2_TOKEN)
    theirs = yield web2.request({"id": 3, "op": "status", "txn_id": sale["txn_id"]})
    missing = yield web2.request({"id": 4, "op": "status", "txn_id": "T999999"})
    assert error_of(theirs) == error_of(missing) == ("not_found", "txn_id")
    assert theirs["error"]["message"] == missing["error"]["message"]


@inline
def test_status_answer_for_another_merchant_is_hidden_even_if_the_service_leaks_it(server):
    client = yield server.connect()
    yield client.hello()
    sale = yield client.request(authorize_request(id=1))
    server.service.status_override = {**server.service.transactions[sale["txn_id"]], "merchant_id": "m2"}
    answer = yield client.request({"id": 2, "op": "status", "txn_id": sale["txn_id"]})
    assert error_of(answer) == ("not_found", "txn_id")


@inline
def test_pipelined_requests_are_answered_as_they_complete(server):
    client = yield server.connect()
    yield client.hello()
    client.send(
        authorize_request(id="slow", order_id="hold-slow"),
        authorize_request(id="medium", order_id="hold-medium"),
        {"id": "quick", "op": "ping"},
    )
    [first] = yield client.next()
    assert first["id"] == "quick"
    yield deferLater(reactor, 0.05, lambda: None)
    server.service.release("hold-medium")
    server.service.release("hold-slow")
    answers = yield client.next(2)
    assert [a["id"] for a in answers] == ["medium", "slow"]
    assert all(a["status"] == "approved" for a in answers)


@inline
def test_an_authorize_waiting_on_its_bank_is_told_its_answer_by_no_deferred_and_echoes_its_request(server):
    """Memory per pending payment: the service tells the request's exchange itself (`Operation.handle_to`),
    which builds the answer when it comes (`Operation.present`): no Deferred and no callback per payment."""
    client = yield server.connect()
    yield client.hello()
    client.send(authorize_request(id="held", order_id="hold-echo", amount=777))
    yield client.request({"id": "after", "op": "ping"})  # the authorize line was read before the ping's
    target, _ = server.service.held["hold-echo"]
    assert not isinstance(target, Deferred) and target.request_id == "held"  # the exchange itself
    server.service.release("hold-echo")
    [answer] = yield client.next()
    assert (answer["id"], answer["status"], answer["order_id"], answer["amount"]) == ("held", "approved", "hold-echo", 777)
    assert answer["merchant_id"] == "m1" and answer["masked_pan"] == f"{PAN[:6]}******{PAN[-4:]}"


@inline
def test_a_request_id_still_in_flight_cannot_be_reused(server):
    client = yield server.connect()
    yield client.hello()
    client.send(authorize_request(id=5, order_id="hold-a"), authorize_request(id=5, order_id="order-b"))
    [duplicate] = yield client.next()
    assert error_of(duplicate) == ("invalid_request", "id")
    server.service.release("hold-a")
    [original] = yield client.next()
    assert (original["id"], original["status"]) == (5, "approved")


@inline
def test_in_flight_limit_answers_busy_and_recovers(make_server):
    server = make_server(limits=ApiLimits(max_in_flight=2))
    client = yield server.connect()
    yield client.hello()
    client.send(authorize_request(id=1, order_id="hold-1"), authorize_request(id=2, order_id="hold-2"))
    busy = yield client.request(authorize_request(id=3, order_id="order-3"))
    assert busy["id"] == 3
    assert error_of(busy) == ("busy", None)
    server.service.release("hold-1")
    yield client.next()
    again = yield client.request(authorize_request(id=4, order_id="order-4"))
    assert again["ok"] is True


@pytest.mark.parametrize(
    "line, code, field",
    [
        (b"this is not json\n", "invalid_json", None),
        (b'{"id": 1, "op": "ping"\n', "invalid_json", None),
        (b"\xff\xfe{}\n", "invalid_json", None),
        (b'{"id": 1, "id": 2, "op": "ping"}\n', "invalid_json", None),
        (b'{"id": 1, "op": "ping", "x": NaN}\n', "invalid_json", None),
        (b"[" * 5000 + b"]" * 5000 + b"\n", "invalid_json", None),
        (b"[1, 2]\n", "invalid_request", None),
        (b'"ping"\n', "invalid_request", None),
        (b'{"op": "ping"}\n', "invalid_request", "id"),
        (b'{"id": 1.5, "op": "ping"}\n', "invalid_request", "id"),
        (b'{"id": true, "op": "ping"}\n', "invalid_request", "id"),
        (b'{"id": {"a": 1}, "op": "ping"}\n', "invalid_request", "id"),
        (b'{"id": 9007199254740992, "op": "ping"}\n', "invalid_request", "id"),
        (b'{"id": ""}\n', "invalid_request", "id"),
    ],
)
@inline
def test_unreadable_lines_get_an_error_with_id_null_and_the_connection_stays_open(server, line, code, field):
    client = yield server.connect()
    answer = yield client.request(line)
    assert answer["id"] is None
    assert error_of(answer) == (code, field)
    pong = yield client.request({"id": 1, "op": "ping"})
    assert pong["ok"] is True


@pytest.mark.parametrize(
    "request_, code, field",
    [
        ({"id": 1}, "invalid_request", "op"),
        ({"id": 1, "op": 7}, "invalid_request", "op"),
        ({"id": 1, "op": "refund"}, "unknown_op", "op"),
        ({"id": 1, "op": "../etc/passwd"}, "unknown_op", "op"),
        ({"id": 1, "op": "ping", "extra": True}, "invalid_request", "extra"),
    ],
)
@inline
def test_envelope_errors_echo_the_id(server, request_, code, field):
    client = yield server.connect()
    answer = yield client.request(request_)
    assert answer["id"] == 1
    assert error_of(answer) == (code, field)


@pytest.mark.parametrize(
    "overrides, field, message_part",
    [
        ({"amount": 12.5}, "amount", "fraction"),
        ({"amount": 1250.0}, "amount", "fraction"),
        ({"amount": True}, "amount", "boolean"),
        ({"amount": "1250"}, "amount", "string"),
        ({"amount": -1}, "amount", "positive"),
        ({"amount": 0}, "amount", "positive"),
        ({"amount": 10**12}, "amount", "12 digits"),
        ({"currency": "XYZ"}, "currency", "unknown currency"),
        ({"currency": "usd"}, "currency", "upper case"),
        ({"currency": 840}, "currency", "number"),
        ({"capture": "yes"}, "capture", "boolean"),
        ({"merchant_id": None}, "merchant_id", "missing"),
        ({"order_id": ""}, "order_id", "1-64"),
        ({"order_id": "x" * 65}, "order_id", "1-64"),
        ({"instrument": "4111111111111111"}, "instrument", "object"),
        ({"instrument": {"type": "card", "pan": "4111111111111112", "expiry": "2812"}}, "instrument.pan", "Luhn"),
        ({"instrument": {"type": "card", "pan": "4111 1111 1111 1111", "expiry": "2812"}}, "instrument.pan", "digits"),
        ({"instrument": {"type": "card", "pan": "41111111111", "expiry": "2812"}}, "instrument.pan", "12-19"),
        ({"instrument": {"type": "card", "pan": PAN, "expiry": "2813"}}, "instrument.expiry", "YYMM"),
        ({"instrument": {"type": "card", "pan": PAN, "expiry": "12/28"}}, "instrument.expiry", "YYMM"),
        ({"instrument": {"type": "card", "pan": PAN, "expiry": "2812", "cvv": "12"}}, "instrument.cvv", "3 or 4"),
        ({"instrument": {"type": "card", "pan": PAN, "expiry": "2812", "cvv": 123}}, "instrument.cvv", "number"),
        ({"instrument": {"type": "paypal", "pan": PAN, "expiry": "2812"}}, "instrument.type", "card"),
        ({"instrument": {"type": "card", "pan": PAN}}, "instrument.expiry", "missing"),
        ({"instrument": {"type": "card", "pan": PAN, "expiry": "2812", "cvc": "123"}}, "instrument.cvc", "unknown"),
        ({"bank": ""}, "bank", "1-64"),
        ({"idempotency_key": "k" * 65}, "idempotency_key", "1-64"),
        ({"captrue": True, "capture": None}, "capture", "misspelling"),
    ],
)
@inline
def test_each_validation_failure_names_its_field(server, overrides, field, message_part):
    client = yield server.connect()
    yield client.hello()
    answer = yield client.request(authorize_request(id="v", **overrides))
    assert answer["id"] == "v"
    assert error_of(answer) == ("invalid_request", field)
    assert message_part in answer["error"]["message"]
    assert PAN not in json.dumps(answer)
    assert server.service.calls == []


@inline
def test_the_service_can_refuse_with_its_own_error(server):
    client = yield server.connect()
    yield client.hello()
    answer = yield client.request(authorize_request(id=1, order_id="conflict-1", idempotency_key="k"))
    assert error_of(answer) == ("idempotency_conflict", "idempotency_key")


@inline
def test_a_request_the_journal_could_not_confirm_is_busy_and_says_to_send_it_again(server):
    """Its writer process died mid-batch, say: the payment may or may not be recorded, and its key tells."""
    client = yield server.connect()
    yield client.hello()
    with capture_logs() as logs:
        answer = yield client.request(authorize_request(id=1, order_id="unrecorded-1", idempotency_key="k1"))
    assert error_of(answer) == ("busy", None)
    assert answer["error"]["message"] == NOT_RECORDED_MESSAGE
    assert "signal 9" not in json.dumps(answer)
    [logged] = [entry for entry in logs if entry["event"] == "api_not_recorded"]
    assert "signal 9" in logged["error"]
    assert not [entry for entry in logs if entry["event"] == "api_internal_error"]


@inline
def test_a_service_exception_is_internal_without_details_and_logged_with_traceback(server):
    client = yield server.connect()
    yield client.hello()
    with capture_logs() as logs:
        answer = yield client.request(authorize_request(id=1, order_id="boom-1"))
    assert error_of(answer) == ("internal", None)
    assert "kaboom" not in json.dumps(answer) and "Traceback" not in json.dumps(answer)
    [logged] = [entry for entry in logs if entry["event"] == "api_internal_error"]
    assert "kaboom" in logged["traceback"] and "Traceback" in logged["traceback"]
    pong = yield client.request({"id": 2, "op": "ping"})
    assert pong["ok"] is True


@inline
def test_an_answer_breaking_the_spec_becomes_internal(server):
    client = yield server.connect()
    yield client.hello()
    answer = yield client.request(authorize_request(id=1, order_id="garbage-1"))
    assert error_of(answer) == ("internal", None)


@inline
def test_a_misbehaving_client_does_not_affect_another(server):
    good = yield server.connect()
    yield good.hello()
    bad = yield server.connect()
    yield bad.hello("web-2", WEB2_TOKEN)
    bad.send(b"\x00\xff garbage\n", b"[]\n", authorize_request(id=1, merchant_id="m2", store_id="s2", order_id="boom"))
    good.send(*[authorize_request(id=i, order_id=f"order-{i}") for i in range(20)])
    bad.send(b"y" * 70000)
    answers = yield good.next(20)
    assert sorted(a["id"] for a in answers) == list(range(20))
    assert all(a["status"] == "approved" for a in answers)
    yield bad.wait_closed()
    assert [a["error"]["code"] for a in bad.answers[1:]] == ["invalid_json", "invalid_request", "internal", "too_large"]
    still = yield good.request({"id": "after", "op": "ping"})
    assert still["ok"] is True


@inline
def test_an_answer_to_a_departed_client_is_reported_to_the_service(server):
    client = yield server.connect()
    yield client.hello()
    client.send(authorize_request(id=1, order_id="hold-gone"))
    yield deferLater(reactor, 0.05, lambda: None)
    client.close()
    yield client.wait_closed()
    yield deferLater(reactor, 0.05, lambda: None)
    server.service.release("hold-gone")
    assert server.service.undeliverable == [("T000001", "web-1")]
    assert server.metric("kswitch_api_answers_undeliverable_total", op="authorize") == 1


@inline
def test_connections_beyond_the_limit_are_told_busy(make_server):
    server = make_server(limits=ApiLimits(max_connections=1))
    first = yield server.connect()
    yield first.request({"id": 1, "op": "ping"})
    second = yield server.connect()
    [answer] = yield second.next()
    assert error_of(answer) == ("busy", None)
    yield second.wait_closed()


@inline
def test_a_configuration_reload_applies_to_open_connections(server):
    client = yield server.connect()
    yield client.hello()
    config = make_config()
    server.factory.config = type(config)(
        clients={"web-2": config.clients["web-2"]}, merchants=config.merchants, limits=config.limits
    )
    answer = yield client.request(authorize_request(id=1))
    assert error_of(answer) == ("unauthenticated", None)


@inline
def test_metrics_count_requests_errors_and_connections(server):
    client = yield server.connect()
    yield client.hello()
    yield client.request(authorize_request(id=1))
    yield client.request(authorize_request(id=2, order_id="decline-2"))
    yield client.request({"id": 3, "op": "no_such_op"})
    yield client.request(b"nonsense\n")
    assert server.metric("kswitch_api_requests_total", op="authorize", status="approved") == 1
    assert server.metric("kswitch_api_requests_total", op="authorize", status="declined") == 1
    assert server.metric("kswitch_api_requests_total", op="hello", status="ok") == 1
    assert server.metric("kswitch_api_requests_total", op="unknown", status="error") == 1
    assert server.metric("kswitch_api_requests_total", op="invalid", status="error") == 1
    assert server.metric("kswitch_api_errors_total", code="unknown_op") == 1
    assert server.metric("kswitch_api_errors_total", code="invalid_json") == 1
    assert server.metric("kswitch_api_request_duration_seconds_count", op="authorize") == 2
    assert server.metric("kswitch_api_connections_open") == 1
    assert server.metric("kswitch_api_requests_in_flight") == 0


@inline
def test_one_log_event_per_request_with_masked_card_data_only(server):
    client = yield server.connect()
    with capture_logs(processors=[redact_card_numbers]) as logs:
        yield client.hello()
        yield client.request(authorize_request(id=PAN))
        yield client.request(authorize_request(id=2, instrument={"type": "card", "pan": PAN, "expiry": "2813"}))
        yield client.request(authorize_request(id=3, order_id=f"order {PAN}"))
    requests = [entry for entry in logs if entry["event"] == "api_request"]
    assert [entry["op"] for entry in requests] == ["hello", "authorize", "authorize", "authorize"]
    sale = requests[1]
    assert {k: sale[k] for k in ("client", "merchant", "status", "response_code", "connector", "masked_pan")} == {
        "client": "web-1",
        "merchant": "m1",
        "status": "approved",
        "response_code": "00",
        "connector": "bank_a",
        "masked_pan": "411111******1111",
    }
    assert sale["txn_id"] == "T000001" and isinstance(sale["duration_ms"], float)
    assert requests[2]["error_field"] == "instrument.expiry"
    logged = repr(logs)
    assert PAN not in logged
    assert f"'{CVV}'" not in logged and "secret-token" not in logged


@inline
def test_new_ops_are_added_by_registering_them_not_by_changing_the_protocol(server):
    def parse_echo(obj):
        return PingRequest()

    def handle_echo(request, ctx):
        return deferLater(reactor, 0.01, lambda: {"client": ctx.session.client_name})

    def parse_broken(obj):
        raise KeyError("a bug in a validator")

    server.factory.operations.register(Operation("echo", parse_echo, handle_echo))
    server.factory.operations.register(Operation("broken", parse_broken, handle_echo, requires_hello=False))
    with pytest.raises(ValueError):
        server.factory.operations.register(Operation("echo", parse_echo, handle_echo))
    with pytest.raises(ValueError, match="exactly one of handle and handle_to"):
        Operation("neither", parse_echo)
    with pytest.raises(ValueError, match="exactly one of handle and handle_to"):
        Operation("both", parse_echo, handle_echo, handle_to=lambda request, ctx, answer_to: None)
    client = yield server.connect()
    refused = yield client.request({"id": 1, "op": "echo"})
    assert error_of(refused) == ("unauthenticated", None)
    yield client.hello()
    echoed = yield client.request({"id": 2, "op": "echo"})
    assert echoed == {"id": 2, "ok": True, "client": "web-1"}
    broken = yield client.request({"id": 3, "op": "broken"})
    assert error_of(broken) == ("internal", None)
    unknown = yield client.request({"id": 4, "op": "refund"})
    assert "broken, echo, hello" in unknown["error"]["message"]
