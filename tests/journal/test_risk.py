"""The risk tables on SQLite and PostgreSQL: limits checked inside the counting statement, holds that
expire, decisions kept."""

from __future__ import annotations

import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import defer, reactor

from switch.journal import Journal, open_journal

EXPIRES = 10**18


@pytest_twisted.ensureDeferred
async def test_concurrent_adds_never_pass_a_limit(journal: Journal) -> None:
    def one(ledger):
        return ledger.add("cum:card:x", EXPIRES, 1, 700, max_amount=5_000)

    results = await defer.gatherResults([journal.risk_unit(one, 1.0) for _ in range(20)])
    taken = [r for r in results if r is not None]
    assert len(taken) == 7  # 7 * 700 = 4900 <= 5000 < 5600
    assert max(amount for _, amount in taken) == 4_900
    assert await journal.risk_unit(lambda ledger: ledger.seen("cum:card:x"), 1.0) == (7, 4_900)


@pytest_twisted.ensureDeferred
async def test_take_back_undoes_an_add_in_the_same_unit(journal: Journal) -> None:
    def add_then_undo(ledger):
        ledger.add("vel:card:x", EXPIRES, 1, 0)
        ledger.take_back("vel:card:x", 1, 0)
        return ledger.seen("vel:card:x")

    assert await journal.risk_unit(add_then_undo, 1.0) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_blocklist_entries_and_holds(journal: Journal) -> None:
    assert await journal.risk_block("card", "ab" * 16, "400000******0259", "operator alice")
    assert not await journal.risk_block("card", "ab" * 16, "400000******0259", "operator alice")
    await journal.risk_unit(lambda ledger: ledger.hold("ip", "203.0.113.7", "203.0.113.7", "rule t", 5_000_000), 1.0)
    live = await journal.risk_unit(lambda ledger: ledger.blocked([("card", "ab" * 16), ("ip", "203.0.113.7")]), 2.0)
    assert {e.kind for e in live} == {"card", "ip"}
    later = await journal.risk_unit(lambda ledger: ledger.blocked([("card", "ab" * 16), ("ip", "203.0.113.7")]), 6.0)
    assert [e.kind for e in later] == ["card"]  # the hold expired at 5 s
    assert await journal.risk_unblock("card", "ab" * 16)
    assert not await journal.risk_unblock("card", "ab" * 16)


@pytest_twisted.ensureDeferred
async def test_a_decision_is_kept(journal: Journal) -> None:
    matches = [{"rule": "m100-max", "action": "block", "mode": "enforce", "seen": {"amount": 600_000}}]
    await journal.risk_unit(lambda ledger: ledger.decide("t-1", "block", "m100-max", matches), 1.0)
    assert await journal.risk_decision("t-1") == {"action": "block", "rule": "m100-max", "matches": matches}
    assert await journal.risk_decision("t-2") is None


@pytest_twisted.ensureDeferred
async def test_a_window_opens_with_its_first_count_and_restarts_once_over(journal: Journal) -> None:
    def add(ledger):
        return ledger.add("vel:card:y", ledger.now_us + 60_000_000, 1, 0, max_count=2)

    assert [await journal.risk_unit(add, t) for t in (100.0, 130.0, 150.0)] == [(1, 0), (2, 0), None]
    assert await journal.risk_unit(add, 160.5) == (1, 0)  # the window of 100 s ended at 160 s
    assert await journal.risk_unit(lambda ledger: ledger.seen("vel:card:y"), 161.0) == (1, 0)


@pytest_twisted.ensureDeferred
async def test_two_writers_share_one_count_and_never_pass_a_limit(journal: Journal, config, clock) -> None:
    """Two journals (two writer connections, as two switch nodes on one database would have):
    the limit is the upsert's WHERE clause, so together they take exactly the limit."""
    other = await open_journal(config, reactor, registry=CollectorRegistry(), clock=clock)
    try:
        def one(ledger):
            return ledger.add("cum:merchant:m", EXPIRES, 1, 300, max_amount=3_000)

        results = await defer.gatherResults([j.risk_unit(one, 1.0) for _ in range(15) for j in (journal, other)])
        assert len([r for r in results if r is not None]) == 10
        assert await other.risk_unit(lambda ledger: ledger.seen("cum:merchant:m"), 1.0) == (10, 3_000)
    finally:
        await other.close()
