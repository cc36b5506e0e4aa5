"""Fee arithmetic: the rules stated in switch.domain.fees, checked as properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switch.domain.fees import (
    FeePlan,
    FeeSchedule,
    FeeSubject,
    RefundEffect,
    reversal,
    round_half_up,
    to_minor,
)

amounts = st.integers(min_value=0, max_value=999_999_999_999)
small = st.integers(min_value=0, max_value=100_000)


@st.composite
def plans(draw: st.DrawFn) -> FeePlan:
    low = draw(st.none() | small)
    high = draw(st.none() | small)
    if low is not None and high is not None and high < low:
        low, high = high, low
    return FeePlan(
        basis_points=draw(st.integers(min_value=0, max_value=10_000)),
        fixed={"USD": draw(small)},
        minimum={} if low is None else {"USD": low},
        maximum={} if high is None else {"USD": high},
    )


def test_demo_plans_worked_example() -> None:
    bank_a = FeePlan(basis_points=50, minimum={"USD": 10})
    bank_b = FeePlan(basis_points=40, fixed={"USD": 5})
    m100 = FeePlan(basis_points=250)
    assert bank_a.fee(10_000, "USD") == 50      # 0.50 % of 100.00 = 0.50
    assert bank_a.fee(1_000, "USD") == 10       # 0.05 raised to the 0.10 minimum
    assert bank_b.fee(12_345, "USD") == 54      # 49.38 -> 49, + 5
    assert m100.fee(12_345, "USD") == 309       # 308.625 -> 309 (half up)
    assert m100.fee(20, "USD") == 1             # 0.5 -> 1
    assert m100.fee(19, "USD") == 0             # 0.475 -> 0


@given(amounts, st.integers(min_value=1, max_value=10**9))
def test_round_half_up_is_nearest_with_halves_up(numerator: int, denominator: int) -> None:
    rounded = round_half_up(numerator, denominator)
    assert 2 * abs(numerator - rounded * denominator) <= denominator
    if 2 * (numerator % denominator) == denominator:
        assert rounded * denominator > numerator


@given(plans(), amounts)
def test_fee_is_never_negative_and_within_min_max_and_amount(plan: FeePlan, amount: int) -> None:
    fee = plan.fee(amount, "USD")
    assert 0 <= fee <= amount
    if "USD" in plan.maximum:
        assert fee <= plan.maximum["USD"]
    if "USD" in plan.minimum and amount >= plan.minimum["USD"]:
        assert fee >= plan.minimum["USD"]


@given(plans(), amounts, amounts)
def test_fee_is_monotone_in_amount(plan: FeePlan, a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert plan.fee(low, "USD") <= plan.fee(high, "USD")


@given(plans(), st.lists(st.integers(min_value=1, max_value=10**7), min_size=1, max_size=12))
def test_proportional_reversals_of_a_full_refund_sum_to_the_fee(plan: FeePlan, parts: list[int]) -> None:
    base = sum(parts)
    fee = plan.fee(base, "USD")
    refunded, reversals = 0, []
    for part in parts:
        reversals.append(reversal(fee, base, refunded, part, RefundEffect.REVERSE))
        refunded += part
    assert all(r >= 0 for r in reversals)
    assert sum(reversals) == fee


@given(plans(), st.lists(st.integers(min_value=1, max_value=10**7), min_size=2, max_size=12))
def test_partial_refunds_never_reverse_more_than_charged(plan: FeePlan, parts: list[int]) -> None:
    base = sum(parts) + 1
    fee = plan.fee(base, "USD")
    total, refunded = 0, 0
    for part in parts:
        total += reversal(fee, base, refunded, part, RefundEffect.REVERSE)
        refunded += part
        assert total <= fee
        assert abs(total * base - fee * refunded) * 2 <= base  # stays proportional, within half a minor unit


@given(plans(), st.integers(min_value=1, max_value=10**9), st.data())
def test_keep_reverses_nothing(plan: FeePlan, base: int, data: st.DataObject) -> None:
    amount = data.draw(st.integers(min_value=0, max_value=base))
    assert reversal(plan.fee(base, "USD"), base, 0, amount, RefundEffect.KEEP) == 0


def test_major_units_use_the_currency_exponent() -> None:
    assert to_minor("0.10", "USD") == 10
    assert to_minor("5", "JPY") == 5
    assert to_minor("0.125", "BHD") == 125
    for bad, currency in (("0.105", "USD"), ("0.5", "JPY"), ("-1", "USD"), ("x", "USD"), ("1", "XXX")):
        with pytest.raises(ValueError):
            to_minor(bad, currency)


def test_first_matching_plan_by_scheme_instrument_currency() -> None:
    visa = FeePlan(basis_points=10, schemes=frozenset({"visa"}))
    eur = FeePlan(basis_points=20, currencies=frozenset({"EUR"}))
    wallet = FeePlan(basis_points=30, instruments=frozenset({"wallet"}))
    fallback = FeePlan(basis_points=40)
    schedule = FeeSchedule(banks={"b": [visa, eur, wallet, fallback]})
    assert schedule.bank_plan("b", FeeSubject("USD", "visa", "card")) is visa
    assert schedule.bank_plan("b", FeeSubject("EUR", "mastercard", "card")) is eur
    assert schedule.bank_plan("b", FeeSubject("USD", None, "wallet")) is wallet
    assert schedule.bank_plan("b", FeeSubject("USD", None, None)) is fallback
    assert schedule.bank_plan("other", FeeSubject("USD")) is None


def test_minimum_above_maximum_is_refused() -> None:
    with pytest.raises(ValueError):
        FeePlan(minimum={"USD": 10}, maximum={"USD": 5})


subjects = st.builds(FeeSubject, st.sampled_from(["USD", "EUR", "KHR"]),
                     st.sampled_from([None, "visa", "mastercard"]), st.sampled_from([None, "card", "wallet"]))
filters = st.none() | st.frozensets(st.sampled_from(["USD", "EUR", "visa", "card", "wallet"]), min_size=1)


@given(st.lists(st.tuples(filters, filters, filters), max_size=5), st.lists(subjects, min_size=1, max_size=20))
def test_the_remembered_choice_is_always_the_first_match(shapes: list[tuple], asked: list[FeeSubject]) -> None:
    """The schedule remembers its choice per owner and subject: asked in any order, again and again, it
    gives what the first match in configuration order gives, and remembers nothing of unknown owners."""
    rules = [FeePlan(basis_points=i, currencies=c, schemes=s, instruments=n) for i, (c, s, n) in enumerate(shapes)]
    schedule = FeeSchedule(banks={"b": rules}, merchants={"m": rules[::-1]})
    for subject in asked + asked[::-1]:
        assert schedule.bank_plan("b", subject) is next((p for p in rules if p.matches(subject)), None)
        assert schedule.merchant_plan("m", subject) is next((p for p in rules[::-1] if p.matches(subject)), None)
        assert schedule.merchant_plan("unknown", subject) is None
    assert all(owner != "unknown" for _, owner, _ in schedule._chosen)
