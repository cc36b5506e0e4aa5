"""The risk tables on SQLite and PostgreSQL: limits checked inside the counting statement, holds that
expire, decisions kept."""

from __future__ import annotations

import functools
from operator import methodcaller

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from twisted.internet import defer, reactor

from switch.journal import Journal, open_journal
from switch.journal.errors import CommitOutcomeUnknown, InvalidRecord
from switch.journal.risk import Window, stored_window
from tests.journal.conftest import raw_connect

EXPIRES = 10**18


def take(name: str, amount: int, max_amount: int, slot: int = 0, since: int = 0):
    """A unit adding ``amount`` to counter ``name`` unless that passes ``max_amount``, as a cumulative rule does:
    read (locked), check, add, save; the new (count, amount), or None when refused.  (Units are data, as the
    journal sends them to its writer: a module function and its arguments.)"""
    return functools.partial(_take, name, amount, max_amount, slot, since)


def _take(name, amount, max_amount, slot, since, ledger):
    window = ledger.windows([name])[name]
    count, total = window.total(since)
    if total + amount > max_amount:
        return None
    window.add(slot, 1, amount, since, EXPIRES)
    ledger.save([window])
    return count + 1, total + amount


def seen(name: str, since: int = 0):
    return functools.partial(_seen, name, since)


def _seen(name, since, ledger):
    return ledger.windows([name])[name].total(since)


def blocked(*keys: tuple[str, str]):
    return methodcaller("blocked", list(keys))


@pytest_twisted.ensureDeferred
async def test_concurrent_adds_never_pass_a_limit(journal: Journal) -> None:
    results = await defer.gatherResults([journal.risk_unit(take("cum:card:x", 700, 5_000), 1.0) for _ in range(20)])
    taken = [r for r in results if r is not None]
    assert len(taken) == 7  # 7 * 700 = 4900 <= 5000 < 5600
    assert max(amount for _, amount in taken) == 4_900
    assert await journal.risk_unit(seen("cum:card:x"), 1.0) == (7, 4_900)


def _undo(ledger):
    window = ledger.windows(["vel:card:x"])["vel:card:x"]
    window.take_back(10, 1, 5)
    window.take_back(20, 1, 5)  # a slot it never had: nothing
    ledger.save([window])


@pytest_twisted.ensureDeferred
async def test_take_back_undoes_an_add(journal: Journal) -> None:
    await journal.risk_unit(take("vel:card:x", 5, 100, slot=10), 1.0)
    await journal.risk_unit(_undo, 2.0)
    assert await journal.risk_unit(seen("vel:card:x"), 3.0) == (0, 0)


def _add_to_z(start, ledger):
    window = ledger.windows(["vel:ip:z"])["vel:ip:z"]
    window.add(start, 1, 10, since=start - 30, expires_at=start + 40)
    ledger.save([window])


@pytest_twisted.ensureDeferred
async def test_slots_slide_out_one_by_one_and_expired_windows_are_purged(journal: Journal, clock) -> None:
    base = 2**52  # µs, in 2112: the journal's clock (wall time) is long before any of these slots expire

    def add(slot):
        return functools.partial(_add_to_z, base + slot)

    for slot in (10, 20, 30):
        await journal.risk_unit(add(slot), 1.0)
    assert [await journal.risk_unit(seen("vel:ip:z", base + since), 1.0) for since in (0, 11, 21, 31)] == [
        (3, 30), (2, 20), (1, 10), (0, 0)]
    await journal.risk_unit(add(45), 1.0)  # slots before 15 are dropped as it is written
    assert await journal.risk_unit(seen("vel:ip:z"), 1.0) == (3, 30)  # 20, 30, 45
    assert await journal.purge_risk_counters() == 0
    clock.advance(base / 1e6 - clock() + 1)  # past the last slot's expiry (base + 85 µs)
    assert await journal.purge_risk_counters() == 1
    assert await journal.risk_unit(seen("vel:ip:z"), 1.0) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_blocklist_entries_and_holds(journal: Journal) -> None:
    assert await journal.risk_block("card", "ab" * 16, "400000******0259", "operator alice")
    assert not await journal.risk_block("card", "ab" * 16, "400000******0259", "operator alice")
    await journal.risk_unit(methodcaller("hold", "ip", "203.0.113.7", "203.0.113.7", "rule t", 5_000_000), 1.0)
    live = await journal.risk_unit(blocked(("card", "ab" * 16), ("ip", "203.0.113.7")), 2.0)
    assert {e.kind for e in live} == {"card", "ip"}
    later = await journal.risk_unit(blocked(("card", "ab" * 16), ("ip", "203.0.113.7")), 6.0)
    assert [e.kind for e in later] == ["card"]  # the hold expired at 5 s
    assert await journal.risk_unblock("card", "ab" * 16)
    assert not await journal.risk_unblock("card", "ab" * 16)


@pytest_twisted.ensureDeferred
async def test_a_decision_is_kept(journal: Journal) -> None:
    matches = [{"rule": "m100-max", "action": "block", "mode": "enforce", "seen": {"amount": 600_000}}]
    await journal.risk_unit(methodcaller("decide", "t-1", "block", "m100-max", matches), 1.0)
    assert await journal.risk_decision("t-1") == {"action": "block", "rule": "m100-max", "matches": matches}
    assert await journal.risk_decision("t-2") is None


@pytest_twisted.ensureDeferred
async def test_two_writers_share_one_count_and_never_pass_a_limit(journal: Journal, config, clock) -> None:
    """Two journals (two writer connections, as two switch nodes on one database would have): a unit
    locks the counter's row as it reads it, so together they take exactly the limit."""
    other = await open_journal(config, reactor, registry=CollectorRegistry(), clock=clock)
    try:
        one = take("cum:merchant:m", 300, 3_000)
        results = await defer.gatherResults([j.risk_unit(one, 1.0) for _ in range(15) for j in (journal, other)])
        assert len([r for r in results if r is not None]) == 10
        assert await other.risk_unit(seen("cum:merchant:m"), 1.0) == (10, 3_000)
    finally:
        await other.close()


def add_then_fail(name: str):
    """A unit that counts, then fails (as a payment whose insert is refused after its screening)."""
    return functools.partial(_add_then_fail, name)


def _add_then_fail(name, ledger):
    window = ledger.windows([name])[name]
    window.add(0, 1, 1_000, 0, EXPIRES)
    ledger.save([window])
    raise InvalidRecord("refused after counting")


@pytest_twisted.ensureDeferred
async def test_a_failed_unit_keeps_none_of_its_counts(journal: Journal, config) -> None:
    """The SQLite writer remembers counters in memory: what a failed unit added there must go with its
    rollback, while its batch-mates' counts stay."""
    name = "cum:card:f"
    outcomes = await defer.DeferredList([journal.risk_unit(take(name, 10, 10**6), 1.0),
                                         journal.risk_unit(add_then_fail(name), 1.0),
                                         journal.risk_unit(take(name, 10, 10**6), 1.0)], consumeErrors=True)
    assert [ok for ok, _ in outcomes] == [True, False, True]
    outcomes[1][1].trap(InvalidRecord)
    assert await journal.risk_unit(seen(name), 2.0) == (2, 20)
    assert await journal.risk_unit(take(name, 10, 10**6), 3.0) == (3, 30)
    conn = raw_connect(config)
    try:
        [(slots,)] = conn.execute("SELECT slots FROM risk_windows WHERE name = 'cum:card:f'").fetchall()
    finally:
        conn.close()
    assert stored_window(name, slots, 0).total(0) == (3, 30)


@pytest_twisted.ensureDeferred
async def test_a_commit_that_fails_leaves_no_count_behind(journal: Journal) -> None:
    """A COMMIT that fails (the disk, the server) may have written nothing: the next unit counts from
    what the database holds, not from what the writer remembered of the failed batch."""
    name = "vel:card:c"
    await journal.risk_unit(take(name, 5, 10**6), 1.0)
    db = journal._writer._committer.db
    assert db is not None

    def failing_commit() -> None:
        db.conn.rollback()
        raise OSError("disk I/O error")

    db.commit = failing_commit  # type: ignore[method-assign]
    with pytest.raises(CommitOutcomeUnknown):
        await journal.risk_unit(take(name, 5, 10**6), 2.0)
    assert await journal.risk_unit(seen(name), 3.0) == (1, 5)


@pytest_twisted.ensureDeferred
async def test_a_blocklist_change_amid_payments_keeps_their_counts(journal: Journal) -> None:
    """Blocking forgets what the writer remembers of the blocklist, not the counts queued with the batch."""
    name, card = "vel:card:b", blocked(("card", "ef" * 16))
    await defer.gatherResults([journal.risk_unit(take(name, 1, 10**6), 1.0),
                               journal.risk_block("card", "ef" * 16, "400000******0259", "operator alice"),
                               journal.risk_unit(take(name, 1, 10**6), 1.0)])
    assert await journal.risk_unit(seen(name), 2.0) == (2, 2)
    assert [e.kind for e in await journal.risk_unit(card, 2.0)] == ["card"]


@pytest_twisted.ensureDeferred
async def test_counts_and_lists_survive_a_restart(config, clock) -> None:
    first = await open_journal(config, reactor, registry=CollectorRegistry(), clock=clock)
    try:
        await first.risk_unit(take("vel:ip:r", 7, 10**6), 1.0)
        await first.risk_unit(methodcaller("hold", "ip", "198.51.100.9", "198.51.100.9", "rule t", EXPIRES), 1.0)
    finally:
        await first.close()
    again = await open_journal(config, reactor, registry=CollectorRegistry(), clock=clock)
    try:
        assert await again.risk_unit(take("vel:ip:r", 7, 10**6), 2.0) == (2, 14)
        assert [e.kind for e in await again.risk_unit(blocked(("ip", "198.51.100.9")), 2.0)] == ["ip"]
    finally:
        await again.close()


@pytest_twisted.ensureDeferred
async def test_what_another_connection_commits_is_seen_at_once(journal: Journal, config, clock) -> None:
    """An operator's `kswitch risk block` runs beside the switch, on its own connection: the switch's
    writer, which remembers blocklist values and counters it has read, sees the change on its next unit."""
    card = blocked(("card", "cd" * 16))
    assert await journal.risk_unit(card, 1.0) == []
    await journal.risk_unit(take("vel:card:o", 1, 10**6), 1.0)
    operator = await open_journal(config, reactor, registry=CollectorRegistry(), clock=clock)
    try:
        assert await operator.risk_block("card", "cd" * 16, "400000******0259", "operator alice")
        assert [e.kind for e in await journal.risk_unit(card, 2.0)] == ["card"]
        assert await operator.risk_unblock("card", "cd" * 16)
        assert await journal.risk_unit(card, 3.0) == []
        await operator.risk_unit(take("vel:card:o", 1, 10**6), 3.0)
        assert await journal.risk_unit(seen("vel:card:o"), 4.0) == (2, 2)
    finally:
        await operator.close()


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3), st.integers(0, 10**6), st.booleans()), max_size=40))
def test_a_window_adds_up_what_a_plain_dict_of_slots_would(steps):
    """Adds (and take-backs) in any order of slots, and what survives packing, against a dict model."""
    window, model = Window("w", []), {}
    for start, count, amount, back in steps:
        since = start - 10
        if back:
            window.take_back(start, count, amount)
            if start in model:
                model[start] = [max(model[start][0] - count, 0), max(model[start][1] - amount, 0)]
        else:
            window.add(start, count, amount, since, start + 20)
            model = {s: v for s, v in model.items() if s >= since}
            slot = model.setdefault(start, [0, 0])
            slot[0] += count
            slot[1] += amount
        for cut in (0, start, start - 5):
            assert window.total(cut) == (sum(v[0] for s, v in model.items() if s >= cut),
                                         sum(v[1] for s, v in model.items() if s >= cut))
    assert window.slots[::3] == sorted(model)
    text = window.packed()
    assert not any(ch.isdigit() for ch in text)
    assert stored_window("w", text, 0).slots == window.slots
