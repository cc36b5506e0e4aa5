"""What the payment service answers is checked before it reaches the wire (`switch.gateway.answers`): every
transaction field is a string, the amount an integer (never a bool), or None; anything else is the service's
mistake, an ``internal`` error, never an answer the web tier misreads."""

from __future__ import annotations

from collections import UserDict
from enum import IntEnum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switch.gateway.answers import TRANSACTION_FIELDS, ServiceContractError, transaction_answer


class Code(str):
    """A str subclass: still text to the web tier."""


class Flag(IntEnum):
    ONE = 1


VALUES = st.sampled_from([None, "x", Code("y"), 0, 1250, True, False, 1.5, b"x", Flag.ONE, ["x"], {"x": 1}])


def _acceptable(name: str, value: object) -> bool:
    wanted = int if name == "amount" else str
    return value is None or (not isinstance(value, bool) and isinstance(value, wanted))


@given(st.sampled_from([f for f in TRANSACTION_FIELDS if f not in ("txn_id", "reason", "status")]), VALUES)
def test_a_field_is_accepted_exactly_when_it_has_its_type(name: str, value: object) -> None:
    raw = {"txn_id": "T1", "status": "approved", "reason": "approved", name: value}
    if _acceptable(name, value):
        assert transaction_answer(raw)[name] is value
    else:
        with pytest.raises(ServiceContractError, match=f"{name} must be"):
            transaction_answer(raw)


def test_any_mapping_is_read_and_every_field_is_present() -> None:
    answer = transaction_answer(UserDict({"txn_id": "T1", "status": "declined", "reason": "do_not_honour", "extra": 1}))
    assert set(TRANSACTION_FIELDS) <= answer.keys() and answer["extra"] == 1 and answer["amount"] is None


@pytest.mark.parametrize("raw", [None, ["txn_id"], "T1"])
def test_an_answer_that_is_not_a_mapping_is_refused(raw: object) -> None:
    with pytest.raises(ServiceContractError, match="expected a mapping"):
        transaction_answer(raw)
