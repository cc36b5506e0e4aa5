"""The validator on its own: canonical requests out, ApiError naming the field otherwise, nothing else ever."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from switch.domain import cardcheck
from switch.domain.currency import CURRENCIES
from switch.domain.model import AuthorizeRequest, CardInstrument
from switch.domain.panscan import holds_card_number
from switch.gateway.client import authorize_fields
from switch.gateway.config import ApiLimits
from switch.gateway.errors import ApiError
from switch.gateway.protocol import ApiFactory
from switch.gateway.validate import parse_authorize, parse_hello, parse_status

from .conftest import PAN, FakePaymentService, authorize_request, make_config

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
AUTHORIZE_KEYS = ["merchant_id", "store_id", "order_id", "amount", "currency", "capture", "instrument", "bank"]
CARD_KEYS = ["type", "pan", "expiry", "cvv"]


def test_a_valid_request_becomes_a_canonical_frozen_request():
    request = parse_authorize(authorize_request(id=1, bank="bank_b", idempotency_key="k-1"))
    assert isinstance(request, AuthorizeRequest)
    assert request.currency == CURRENCIES["USD"]
    assert request.instrument == CardInstrument(PAN, "2812", "123")
    assert (request.bank, request.idempotency_key) == ("bank_b", "k-1")
    with pytest.raises(AttributeError):
        request.amount = 1  # type: ignore[misc]


def test_requests_of_one_store_share_its_merchant_and_store_id_strings_and_cards_their_expiry_and_cvv():
    """Decoded from two different lines, as the socket API decodes each request: the payments waiting on a
    bank keep one string per merchant and store id, per expiry date and per card security code, not one copy
    each."""
    first, second = (parse_authorize(json.loads(json.dumps(authorize_request(order_id=o)))) for o in ("a", "b"))
    assert first.merchant_id is second.merchant_id and first.store_id is second.store_id
    assert first.instrument.expiry is second.instrument.expiry
    assert first.instrument.cvv == "123" and first.instrument.cvv is second.instrument.cvv


def test_optional_fields_may_be_null_or_absent():
    request = parse_authorize(
        authorize_request(bank=None, idempotency_key=None, instrument={"type": "card", "pan": PAN, "expiry": "2812"})
    )
    assert (request.bank, request.idempotency_key, request.instrument.cvv) == (None, None, None)


def test_card_data_never_shows_in_repr_or_str():
    request = parse_authorize(authorize_request())
    for text in (repr(request), str(request), repr(request.instrument), str(request.instrument)):
        assert PAN not in text
        assert "123" not in text.replace("411111******1111", "")
        assert "411111******1111" in text
    assert "secret" not in repr(parse_hello({"client": "web-1", "token": "secret"}))


def test_status_needs_a_txn_id():
    assert parse_status({"txn_id": "T000001"}).txn_id == "T000001"
    with pytest.raises(ApiError) as refused:
        parse_status({"txn_id": 12})
    assert (refused.value.code, refused.value.field) == ("invalid_request", "txn_id")


@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_any_json_object_at_all_is_refused_only_with_api_error(obj):
    for parse in (parse_authorize, parse_hello, parse_status):
        try:
            parse(obj)
        except ApiError as error:
            assert error.code == "invalid_request"


@given(
    st.fixed_dictionaries(
        {},
        optional={
            **{key: json_values for key in AUTHORIZE_KEYS},
            "instrument": st.fixed_dictionaries({}, optional={k: json_values | st.just(PAN) for k in CARD_KEYS})
            | json_values,
        },
    )
)
def test_requests_with_the_right_keys_and_random_values_only_raise_api_error(obj):
    try:
        parse_authorize(obj)
    except ApiError as error:
        assert error.field is not None
        assert PAN not in error.message


def valid_pans() -> st.SearchStrategy[str]:
    body = st.integers(min_value=11, max_value=18).flatmap(
        lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n)
    )
    return body.map(lambda digits: digits + cardcheck.luhn_check_digit(digits))


identifiers = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", fullmatch=True)
valid_authorize = st.fixed_dictionaries(
    {
        "merchant_id": identifiers,
        "store_id": identifiers,
        "order_id": st.from_regex(r"[\x21-\x7e]([\x20-\x7e]{0,62}[\x21-\x7e])?", fullmatch=True),
        "amount": st.integers(min_value=1, max_value=999_999_999_999),
        "currency": st.sampled_from(sorted(CURRENCIES)),
        "pan": valid_pans(),
        "expiry": st.from_regex(r"[0-9]{2}(0[1-9]|1[0-2])", fullmatch=True),
        "cvv": st.none() | st.from_regex(r"[0-9]{3,4}", fullmatch=True),
        "capture": st.booleans(),
        "bank": st.none() | identifiers,
        "idempotency_key": st.none() | st.from_regex(r"[\x21-\x7e]{1,64}", fullmatch=True),
    }
).filter(  # references that plausibly are card numbers are refused: see test_references.py
    lambda f: not any(f["pan"] in ref or holds_card_number(ref) for ref in (f["order_id"], f["idempotency_key"] or ""))
)


@given(valid_authorize)
def test_valid_requests_round_trip_through_json_and_the_validator(fields):
    wire = json.loads(json.dumps({"id": 1, "op": "authorize", **authorize_fields(**fields)}))
    request = parse_authorize(wire)
    assert (request.merchant_id, request.store_id, request.order_id) == (
        fields["merchant_id"],
        fields["store_id"],
        fields["order_id"],
    )
    assert (request.amount, request.currency.alpha, request.capture) == (
        fields["amount"],
        fields["currency"],
        fields["capture"],
    )
    assert request.instrument == CardInstrument(fields["pan"], fields["expiry"], fields["cvv"])
    assert (request.bank, request.idempotency_key) == (fields["bank"], fields["idempotency_key"])


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(st.lists(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()), max_size=8))
def test_any_bytes_get_one_answer_per_line_and_never_break_the_protocol(lines):
    service = FakePaymentService()
    config = make_config(ApiLimits(max_line_bytes=256))
    factory = ApiFactory(service, config, Clock(), registry=CollectorRegistry())
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b'{"id":0,"op":"hello","client":"web-1","token":"web-1-secret-token"}\n')
    for line in lines:
        protocol.dataReceived(line.replace(b"\n", b" ") + b"\n")
    answers = [json.loads(raw) for raw in transport.value().splitlines()]
    assert all(set(answer) >= {"id", "ok"} for answer in answers)
    assert all(answer["ok"] or answer["error"]["code"] != "internal" for answer in answers)
    expected = sum(1 for line in lines if line.replace(b"\n", b" ").strip())
    assert len(answers) - 1 == expected or answers[-1]["error"]["code"] == "too_large"
