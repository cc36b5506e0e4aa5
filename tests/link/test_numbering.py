"""STAN and RRN allocation."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.numbering import STAN_MAX, RrnAllocator, StanAllocator, StanExhausted, stan_start


def test_stans_are_six_digits_in_order_and_wrap():
    stans = StanAllocator(start=STAN_MAX - 1)
    assert [stans.allocate() for _ in range(3)] == ["999998", "999999", "000001"]


def test_a_stan_in_use_is_skipped_until_released():
    stans = StanAllocator(start=STAN_MAX)
    held = stans.allocate()
    assert held == "999999"
    for _ in range(STAN_MAX - 1):
        assert stans.allocate() != held
    with pytest.raises(StanExhausted):
        stans.allocate()
    stans.release("000007")
    assert stans.allocate() == "000007"


def test_stan_start_moves_with_the_time_of_day():
    assert stan_start(0) == 1
    assert stan_start(3600) == 36001
    assert 1 <= stan_start(86_399.9) <= STAN_MAX


def test_stan_never_reused_while_pending():
    @settings(max_examples=200, deadline=None)
    @given(
        start=st.integers(min_value=STAN_MAX - 50, max_value=STAN_MAX),
        ops=st.lists(st.one_of(st.just("allocate"), st.integers(min_value=0, max_value=200)), max_size=300),
    )
    def check(start, ops):
        stans = StanAllocator(start)
        pending: list[str] = []
        for op in ops:
            if op == "allocate":
                stan = stans.allocate()
                assert len(stan) == 6 and 1 <= int(stan) <= STAN_MAX
                assert stan not in pending
                pending.append(stan)
            elif pending:
                stans.release(pending.pop(op % len(pending)))
            assert len(stans) == len(pending)
            assert all(s in stans for s in pending)

    check()


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_rrn_is_year_digit_day_of_year_and_milliseconds_of_the_day():
    now = _at("2026-03-01T10:00:00.250")
    rrn = RrnAllocator(lambda: now).allocate()
    assert rrn == "6060" + "36000250"
    assert len(rrn) == 12 and rrn.isdigit()


def test_rrns_stay_unique_in_a_burst_and_across_a_restart_the_same_day():
    t = [_at("2026-03-01T10:00:00")]
    first = RrnAllocator(lambda: t[0])
    burst = [first.allocate() for _ in range(500)]
    assert len(set(burst)) == 500
    t[0] += 1.0  # the process restarts a second later
    second = RrnAllocator(lambda: t[0])
    after = [second.allocate() for _ in range(500)]
    assert not set(burst) & set(after)
    assert min(after) > max(burst)


def test_rrn_sequence_restarts_with_the_business_day_in_the_banks_zone():
    t = [_at("2026-03-01T21:59:59.999")]
    rrns = RrnAllocator(lambda: t[0], utc_offset=2)
    assert rrns.allocate() == "6060" + "86399999"
    t[0] += 0.002
    assert rrns.allocate() == "6061" + "00000001"


def test_rrn_node_digit_replaces_the_year():
    assert RrnAllocator(lambda: _at("2026-03-01T00:00:00"), node=3).allocate().startswith("3060")
    with pytest.raises(ValueError):
        RrnAllocator(lambda: 0.0, node=10)
