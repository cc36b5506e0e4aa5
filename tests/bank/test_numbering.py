"""STAN and RRN allocation."""

from __future__ import annotations

import tracemalloc
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from switch.bank.numbering import STAN_MAX, RrnAllocator, RrnUnavailable, StanAllocator, StanExhausted, stan_start


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


def test_a_stan_claimed_while_held_stays_in_use_until_both_holders_release_it():
    stans = StanAllocator(start=7)
    held = stans.allocate()
    assert stans.claim(held) == held  # an advice repeat carries its original's number
    stans.release(held)
    assert held in stans and stans.allocate() != held
    stans.release(held)
    stans.release(held)  # a release nobody holds changes nothing
    assert held not in stans and len(stans) == 1


def test_a_stan_written_without_its_zeros_is_the_same_number_and_a_held_one_is_kept_as_handed_out():
    stans = StanAllocator(start=42)
    held = stans.allocate()
    assert held == "000042" and "42" in stans
    stans.claim("42")
    stans.release("000042")
    assert held in stans
    stans.release("42")
    assert held not in stans and len(stans) == 0


def test_numbers_held_cost_the_allocator_no_memory_each():
    """10,000 payments waiting on a bank hold 10,000 STANs: the allocator's own memory must not grow with them."""
    stans = StanAllocator(start=500_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [stans.allocate() for _ in range(20_000)]
        with_allocator = tracemalloc.get_traced_memory()[0] - before
        del held
        before = tracemalloc.get_traced_memory()[0]
        alone = [f"{n:06d}" for n in range(500_000, 520_000)]
        strings_alone = tracemalloc.get_traced_memory()[0] - before
        del alone
    finally:
        tracemalloc.stop()
    assert len(stans) == 20_000
    assert with_allocator - strings_alone < 4096


@pytest.mark.parametrize("stan", ["", "12a", "²", "１２", " 12", "-5"])
def test_what_is_not_a_stan_is_refused_by_claim_and_release_and_never_held(stan):
    stans = StanAllocator()
    with pytest.raises(ValueError):
        stans.claim(stan)
    with pytest.raises(ValueError):
        stans.release(stan)
    assert stan not in stans and len(stans) == 0


@pytest.mark.parametrize("stan", ["0", "000000", "1000000"])
def test_a_number_outside_the_stan_range_is_held_when_claimed_and_never_handed_out(stan):
    stans = StanAllocator(start=STAN_MAX)
    stans.release(stan)  # held by nobody: nothing to give back
    assert stan not in stans and len(stans) == 0
    stans.claim(stan)
    stans.claim(stan)
    assert stan in stans and len(stans) == 1
    assert [stans.allocate() for _ in range(2)] == ["999999", "000001"]
    stans.release(stan)
    assert stan in stans and len(stans) == 3
    stans.release(stan)
    assert stan not in stans and len(stans) == 2


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


class Counter:
    """The journal's persisted counter (`Journal.reserve_numbers`): survives every restart.
    ``hold`` keeps reservations unconfirmed, as a journal that is behind would."""

    def __init__(self) -> None:
        self.value = 0
        self.hold = False
        self.waiting: list[tuple[Deferred, int]] = []

    def reserve(self, count: int) -> Deferred:
        first, self.value = self.value, self.value + count
        if self.hold:
            d: Deferred = Deferred()
            self.waiting.append((d, first))
            return d
        return succeed(first)

    def confirm(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d, first in waiting:
            d.callback(first)


def started(clock: Clock, counter: Counter, **kw) -> RrnAllocator:
    rrns = RrnAllocator(clock.seconds, counter.reserve, **kw)
    rrns.start()
    return rrns


def test_rrn_is_year_digit_day_of_year_and_a_journalled_sequence():
    clock = Clock()
    clock.advance(_at("2026-03-01T10:00:00.250"))
    rrns = started(clock, Counter())
    assert [rrns.allocate() for _ in range(2)] == ["6060" + "00000000", "6060" + "00000001"]


def test_rrns_stay_unique_across_restarts_at_any_rate():
    """Bursts far above 1,000 per second (here: thousands in the same instant), each run
    killed mid-block and restarted at once: no RRN is ever handed out twice."""

    @settings(max_examples=60, deadline=None)
    @given(bursts=st.lists(st.integers(min_value=0, max_value=3000), min_size=2, max_size=6),
           block=st.integers(min_value=2, max_value=2000))
    def check(bursts, block):
        clock = Clock()
        clock.advance(_at("2026-03-01T10:00:00"))
        counter = Counter()
        seen: set[str] = set()
        for burst in bursts:  # one process per burst, all within the same millisecond
            rrns = started(clock, counter, block=block)
            for _ in range(burst):
                rrn = rrns.allocate()
                assert len(rrn) == 12 and rrn.isdigit()
                assert rrn not in seen
                seen.add(rrn)
        assert len(seen) == sum(bursts)

    check()


def test_next_block_is_reserved_before_the_current_one_runs_out():
    clock = Clock()
    counter = Counter()
    rrns = started(clock, counter, block=10)
    counter.hold = True
    handed = [rrns.allocate() for _ in range(10)]  # the refill was asked for at 5 used, not confirmed yet
    with pytest.raises(RrnUnavailable):
        rrns.allocate()
    assert len(counter.waiting) == 1
    counter.confirm()
    assert rrns.allocate() not in handed


def test_allocate_before_any_block_is_confirmed_refuses_rather_than_guess():
    counter = Counter()
    counter.hold = True
    rrns = started(Clock(), counter)
    with pytest.raises(RrnUnavailable):
        rrns.allocate()
    counter.confirm()
    assert rrns.allocate().endswith("00000000")


def test_rrn_day_follows_the_business_day_in_the_banks_zone_and_the_sequence_goes_on():
    clock = Clock()
    clock.advance(_at("2026-03-01T21:59:59.999"))
    rrns = started(clock, Counter(), utc_offset=2)
    assert rrns.allocate() == "6060" + "00000000"
    clock.advance(0.002)
    assert rrns.allocate() == "6061" + "00000001"


def test_rrn_node_digit_replaces_the_year():
    clock = Clock()
    clock.advance(_at("2026-03-01T00:00:00"))
    assert started(clock, Counter(), node=3).allocate().startswith("3060")
    with pytest.raises(ValueError):
        RrnAllocator(clock.seconds, Counter().reserve, node=10)


def test_rrn_zone_offset_must_be_whole_seconds():
    """The day prefix is computed once a second, which is only right where days start on a whole second."""
    with pytest.raises(ValueError, match="whole seconds"):
        RrnAllocator(Clock().seconds, Counter().reserve, utc_offset=1 / 7200)
