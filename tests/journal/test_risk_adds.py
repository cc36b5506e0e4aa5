"""The writer's memory of the adds journalled in payments' rows (`switch.journal.riskmemo.Adds`): the same
record a list of tuples was, in a fifth of the memory, since every payment of a window's horizon keeps one
for each counter it counted in (`bench/hold.sh` with the risk rules on)."""

from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from switch.journal.models import MAX_AMOUNT
from switch.journal.riskmemo import Adds, Memo

MICROS = st.integers(min_value=0, max_value=4_102_444_800_000_000)  # up to the year 2100
ADD = st.tuples(MICROS, MICROS, st.integers(0, 1_000_000), st.integers(-MAX_AMOUNT, MAX_AMOUNT), MICROS)


@given(st.lists(st.one_of(ADD, st.just("pop")), max_size=60), MICROS)
def test_adds_keep_what_a_list_of_tuples_kept(steps: list[tuple[int, int, int, int, int] | str], now: int) -> None:
    adds, kept = Adds(), []
    for step in steps:
        if step == "pop":
            if kept:
                adds.pop()
                kept.pop()
        else:
            adds.append(step)
            kept.append(step)
    assert list(adds) == kept and len(adds) == len(kept)
    assert list(adds.live(now)) == [e for e in kept if e[4] > now]
    assert list(Adds(kept)) == kept


class _Db:
    """What `Memo.journalled` asks of a connection: where a rolled-back transaction's undo goes."""

    def __init__(self) -> None:
        self.undo: list[object] = []


def test_a_payment_s_add_costs_the_writer_tens_of_bytes_not_hundreds() -> None:
    memo, db = Memo(None, 0, 0, 0, 0), _Db()
    start = 1_796_300_000_000_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(10_000):  # each a new payment's add to one card's velocity counter, as journalled
            memo.journalled(db, start + i, [("velocity:card:abc", start + i * 1_000, 1, 1_000 + i, start + 10**9 + i)])
            db.undo.clear()  # its batch committed
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(memo.log["velocity:card:abc"]) == 10_000
    assert grown / 10_000 < 60, f"{grown / 10_000:.0f} bytes an add"
