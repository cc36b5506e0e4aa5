"""The card-data guard: full PANs and sensitive authentication data are refused, masked data passes."""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switch.domain.cardcheck import luhn_check_digit, mask_pan
from switch.domain.panscan import looks_like_pan, safe_repr
from switch.domain.status import Status
from switch.iso.masking import mask_message
from switch.journal import CardDataRefused, InvalidRecord
from switch.journal.guard import Derived, check_value, checked_params, dump_fields

VISA = "4111111111111111"

pans = st.text(alphabet="0123456789", min_size=12, max_size=18).map(lambda body: body + luhn_check_digit(body))
visa_numbers = st.text(alphabet="0123456789", min_size=14, max_size=14).map(
    lambda body: "4" + body + luhn_check_digit("4" + body)
)
not_digits = st.text(alphabet=st.characters(blacklist_categories=("Nd", "Cs")), max_size=20)


@given(prefix=not_digits, pan=visa_numbers, suffix=not_digits)
def test_any_card_number_in_text_is_refused(prefix: str, pan: str, suffix: str) -> None:
    assert looks_like_pan(prefix + pan + suffix)
    with pytest.raises(CardDataRefused):
        check_value("column", prefix + pan + suffix)
    with pytest.raises(CardDataRefused):
        check_value("column", (prefix + pan + suffix).encode("utf-8"))


@given(pan=pans)
def test_masked_pans_pass(pan: str) -> None:
    masked = mask_pan(pan)
    assert not looks_like_pan(masked)
    assert json.loads(dump_fields("fields", {"2": masked})) == {"2": masked}


@given(run=st.text(alphabet="0123456789", min_size=1, max_size=12) | st.text(alphabet="0123456789", min_size=20, max_size=60))
def test_digit_runs_outside_13_to_19_are_not_pans(run: str) -> None:
    assert not looks_like_pan(f"x{run}y")


@pytest.mark.parametrize("text", ["4111 1111 1111 1111", "4111-1111-1111-1111", "3782 822463 10005", f"<{VISA}>"])
def test_grouped_and_embedded_pans(text: str) -> None:
    assert looks_like_pan(text)


@pytest.mark.parametrize("name", ["order_id", "idempotency_key", "txn_id", "merchant_id", "store_id", "client_id"])
@pytest.mark.parametrize("reference", ["1732871234560", "order-4012888888881881", "4012 8888 8888 1881"])
def test_references_are_stored_whatever_their_digits(name: str, reference: str) -> None:
    check_value(name, reference)
    assert json.loads(dump_fields("payload", {name: reference}))[name] == reference


@pytest.mark.parametrize("text", ["1732871234560", "order 1234567890123452", "2026112900000018", "2026-1129-0000-0018"])
def test_numbers_that_only_pass_luhn_are_stored_in_free_text(text: str) -> None:
    assert looks_like_pan(text)
    check_value("reason", text)
    assert json.loads(dump_fields("fields", {"48": text}))["48"] == text


def test_a_card_number_beside_a_reference_is_still_refused() -> None:
    with pytest.raises(CardDataRefused, match="payload.note"):
        dump_fields("payload", {"order_id": "1732871234560", "note": f"card {VISA}"})


@given(prefix=not_digits, pan=visa_numbers)
def test_query_parameters_are_checked_as_check_value_checks_them(prefix: str, pan: str) -> None:
    for value in (prefix + pan, (prefix + pan).encode()):
        with pytest.raises(CardDataRefused, match="reason"):
            checked_params({"txn_id": "T1", "amount": 5, "reason": value})
    assert checked_params({"order_id": prefix + pan, "key": Derived(pan), "at": None}) == {
        "order_id": prefix + pan, "key": pan, "at": None}


def test_query_parameters_hold_enum_values_not_members() -> None:
    bound = checked_params({"status": Status.APPROVED, "n": 1})
    assert bound == {"status": "approved", "n": 1} and type(bound["status"]) is str


def test_luhn_invalid_runs_and_field_90_pass() -> None:
    assert not looks_like_pan("4111111111111112")
    assert not looks_like_pan("020000012311231134000000001234500000000000")
    check_value("ciphertext", b"\x01\xff" * 40)


@pytest.mark.parametrize(
    "fields",
    [
        {"35": "[37 masked]", "52": "[16 masked]", "2": "411111******1111"},
        {2: "411111XXXXXX1111", 4: "000000001250", "nested": {"a": [1, True, None]}},
        mask_message({"2": VISA, "14": "2712", "35": f"{VISA}=2712101", "45": "B4111^DOE^2712", "52": "A" * 16}),
    ],
)
def test_masked_messages_are_accepted(fields: dict[object, object]) -> None:
    stored = json.loads(dump_fields("fields", fields))
    assert set(stored) == {str(key) for key in fields}
    assert VISA not in json.dumps(stored)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"2": VISA}, "must be masked"),
        ({"2": "4111111111"}, "must be masked"),
        ({"35": f"{VISA}=2712"}, "sensitive authentication data"),
        ({"52": "1A2B3C4D5E6F7081"}, "sensitive authentication data"),
        ({"CVV2": "123"}, "sensitive authentication data"),
        ({"card": {"Track2": "x"}}, "fields.card.Track2"),
        ({"note": f"see {VISA}"}, "looks like a full card number"),
        ({"list": ["ok", VISA]}, r"fields.list\[1\]"),
    ],
)
def test_card_data_is_refused(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(CardDataRefused, match=problem) as refused:
        dump_fields("fields", fields)
    assert VISA not in str(refused.value)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({VISA: "a key"}, r"fields \(a key\)"),
        ({"card": {VISA: 1}}, r"fields.card \(a key\)"),
        ({"42": "000000000100001", "48": {"note": [f"card {VISA}"]}}, r"fields.48.note\[0\]"),
        ({"42": "000000000100001", "amount": int(VISA)}, "fields.amount"),
        ({"order_id": VISA, "42": "000000000100001", "48": f"{VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]}"},
         "fields.48"),
    ],
)
def test_a_card_number_anywhere_is_refused_by_its_place(fields: dict[str, object], named: str) -> None:
    """A message whose text has a long digit run everywhere (a 15-digit card acceptor id, field 42)
    is tested value by value: a card number in any value, nested or an integer, or in a key, is found
    and named by its place, never by itself."""
    with pytest.raises(CardDataRefused, match=named) as refused:
        dump_fields("fields", fields)
    assert VISA not in str(refused.value)


def test_a_long_acceptor_id_and_references_are_stored() -> None:
    fields = {"42": "000000000100001", "order_id": VISA, "37": "633300005999", "7": 1129162207}
    assert json.loads(dump_fields("fields", fields)) == {k: v for k, v in fields.items()}


@pytest.mark.parametrize(
    "fields", [{"4": 12.5}, {"x": b"bytes"}, {1.5: "key"}, {"x": {1, 2}}, ["not", "a", "mapping"]]
)
def test_unstorable_values_are_refused(fields: object) -> None:
    with pytest.raises(InvalidRecord):
        dump_fields("fields", fields)  # type: ignore[arg-type]


def test_error_messages_never_echo_a_pan() -> None:
    assert safe_repr(VISA) == "<str withheld>"
    assert safe_repr("order-42") == "'order-42'"


def test_only_text_the_guard_made_skips_the_writers_scan() -> None:
    """`dump_fields` output is not scanned again on the writer; text under the same column name
    that did not come from it (a caller's own JSON) still is."""
    stored = dump_fields("fields", {"2": mask_pan(VISA), "44": "approved"})
    check_value("fields", stored)
    with pytest.raises(CardDataRefused):
        check_value("fields", json.dumps({"2": mask_pan(VISA), "44": VISA}))
    with pytest.raises(CardDataRefused):
        dump_fields("fields", {"44": VISA})


_KEYS = st.sampled_from(["2", "11", "35", "45", "52", "pan", "PAN", "Cvv", "cvv2", "track2", "note", "card_number"])
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=24),
    st.sampled_from([VISA, mask_pan(VISA), "[3 masked]", "123", "4111 1111 1111 1111"]), pans,
    st.lists(st.integers(), max_size=2), st.dictionaries(st.sampled_from(["cvv", "x"]), st.text(max_size=4), max_size=2),
)


def _outcome(fields: object) -> tuple[str, str]:
    try:
        return "stored", dump_fields("fields", fields)  # type: ignore[arg-type]
    except (CardDataRefused, InvalidRecord) as e:
        return type(e).__name__, str(e)


@given(st.dictionaries(st.one_of(_KEYS, st.text(max_size=5), st.integers(0, 128)), _VALUES, max_size=8))
def test_a_message_dict_is_checked_exactly_as_any_other_mapping(fields: dict[object, object]) -> None:
    """A plain dict of a message takes a quicker path (`_clean_flat`): it stores and refuses what the general
    path does for the same fields in another kind of mapping."""
    assert _outcome(fields) == _outcome(MappingProxyType(fields))


@given(before=st.binary(max_size=40), pan=visa_numbers, after=st.binary(max_size=40), with_pan=st.booleans())
def test_bytes_parameters_are_refused_exactly_when_check_value_refuses_them(before: bytes, pan: str, after: bytes,
                                                                            with_pan: bool) -> None:
    """`checked_params` skips the scan of bytes that cannot hold 13 digits (a sealed card, a keyed hash):
    what it passes and refuses is still what `check_value` does."""
    value = before + (pan.encode() if with_pan else b"") + after
    try:
        check_value("pan_ciphertext", value)
    except CardDataRefused:
        with pytest.raises(CardDataRefused, match="pan_ciphertext"):
            checked_params({"pan_ciphertext": value})
    else:
        assert checked_params({"pan_ciphertext": value}) == {"pan_ciphertext": value}
