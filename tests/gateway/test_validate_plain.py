"""The one-pass reading of a plain card payment accepts exactly what the field-by-field reading accepts.

`parse_authorize` tries `_plain_card_authorize` first and reads field by field only when it declines. So
whatever the one-pass reading returns must be what the field-by-field reading returns, and it must decline
everything that reading refuses: otherwise a request the API documents as refused would go to a bank.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from switch.gateway.client import authorize_fields
from switch.gateway.errors import ApiError
from switch.gateway.validate import MAX_AMOUNT, _plain_card_authorize, _read_authorize, parse_authorize

from .conftest import PAN, authorize_request
from .test_validate import AUTHORIZE_KEYS, CARD_KEYS, json_values, valid_authorize


def _wire(fields: dict) -> dict:
    return json.loads(json.dumps({"id": 1, "op": "authorize", **authorize_fields(**fields)}))


def _same_as_field_by_field(obj: dict) -> None:
    plain = _plain_card_authorize(obj)
    try:
        read = _read_authorize(obj)
    except ApiError:
        assert plain is None, "the one-pass reading accepted a request the field-by-field reading refuses"
        return
    assert plain is None or plain == read


@given(valid_authorize)
def test_every_valid_card_payment_without_customer_data_is_read_in_one_pass_as_field_by_field(fields):
    obj = _wire(fields)
    plain = _plain_card_authorize(obj)
    assert plain is not None
    assert plain == _read_authorize(obj)
    assert parse_authorize(obj) == plain


# Any JSON value, amounts at the limit, and text of the lengths and characters a field's pattern draws its lines at.
replacements = json_values | st.integers(min_value=MAX_AMOUNT - 3, max_value=MAX_AMOUNT + 3) | st.text(max_size=70) | st.text(alphabet=" -.:_aZ09\x7f\xe9", max_size=66)


@settings(max_examples=1000)
@given(valid_authorize, st.sampled_from(AUTHORIZE_KEYS + ["idempotency_key", "customer", "extra"]), replacements)
def test_a_valid_payment_with_one_field_replaced_by_any_json_value_is_read_as_field_by_field(fields, key, value):
    obj = _wire(fields)
    obj[key] = value
    _same_as_field_by_field(obj)


@settings(max_examples=500)
@given(valid_authorize, st.sampled_from(CARD_KEYS + ["holder"]),
       replacements | st.just(PAN) | st.just("card") | st.from_regex(r"[0-9]{2,20}", fullmatch=True))
def test_a_valid_payment_with_one_card_field_replaced_is_read_as_field_by_field(fields, key, value):
    obj = _wire(fields)
    obj["instrument"][key] = value
    _same_as_field_by_field(obj)


@given(st.fixed_dictionaries({}, optional={key: json_values for key in AUTHORIZE_KEYS}))
def test_any_values_under_the_payment_keys_are_read_as_field_by_field(obj):
    _same_as_field_by_field(obj)


def test_what_the_one_pass_reading_leaves_to_the_field_by_field_reading():
    customer = authorize_request(customer={"id": "c-42", "country": "KH"})
    assert _plain_card_authorize(customer) is None
    assert parse_authorize(customer).customer is not None
    own_pan = authorize_request(order_id=f"order-{PAN}")
    assert _plain_card_authorize(own_pan) is None
    account = authorize_request(instrument={"type": "bank_account", "bank": "ABA", "account": "000123456"})
    assert _plain_card_authorize(account) is None
    assert parse_authorize(account).instrument.account == "000123456"
