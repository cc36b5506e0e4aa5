"""Start-up writes made again when the journal cannot say whether they were made (its writer process died with
the batch): the lease, the business days and RRN blocks, on SQLite and PostgreSQL, each committed for real and
then reported `CommitOutcomeUnknown` once; and `until_known` itself on a `task.Clock`."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task

from switch.journal import CommitOutcomeUnknown, JournalUnavailable, again
from switch.journal.errors import LeaseLost, StorageError
from tests.journal.conftest import raw_connect
from tests.journal.test_lease import holder

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(again, "SECONDS", 0.01)


def unknown_once(journal: Any, monkeypatch: pytest.MonkeyPatch, *units: str) -> list[str]:
    """The first write of each writer unit named in ``units`` commits, and its caller hears `CommitOutcomeUnknown`;
    the names of those written so far, in order."""
    real = journal._writer.submit
    lost: list[str] = []

    def submit(call: Any) -> defer.Deferred[Any]:
        done = real(call)
        name = call.fn.__name__
        if name in units and name not in lost:
            lost.append(name)
            done.addCallback(_unknown)
        return done

    monkeypatch.setattr(journal._writer, "submit", submit)
    return lost


def _unknown(_: object) -> None:
    raise CommitOutcomeUnknown("the sqlite journal writer process ended during a batch")


def rows(config: Any, sql: str) -> list[tuple[Any, ...]]:
    conn = raw_connect(config)
    try:
        return [tuple(row) for row in conn.execute(sql).fetchall()]
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_a_lease_whose_commit_is_unknown_is_taken_again_and_is_this_nodes(journal, config, monkeypatch):
    lost = unknown_once(journal, monkeypatch, "acquire")
    taken = await journal.acquire_lease(holder("first"), 15.0)
    assert lost == ["acquire"]
    assert (taken.holder.owner, taken.previous) == ("first", None), "its own lease, not one taken over"
    assert rows(config, "SELECT owner FROM node_lease") == [("first",)]
    await journal.renew_lease("first", 15.0)


@pytest_twisted.ensureDeferred
async def test_an_rrn_block_whose_commit_is_unknown_is_left_unused_and_the_next_one_taken(journal, config,
                                                                                         monkeypatch):
    lost = unknown_once(journal, monkeypatch, "reserve")
    first = await journal.reserve_numbers("rrn:bank_a", 100)
    assert lost == ["reserve"]
    assert first == 100, "the block the journal could not confirm is a gap, never handed out"
    assert await journal.reserve_numbers("rrn:bank_a", 100) == 200
    assert rows(config, "SELECT name, value FROM counters") == [("rrn:bank_a", 300)]


@pytest_twisted.ensureDeferred
async def test_business_days_whose_commit_is_unknown_open_once(journal, config, monkeypatch):
    lost = unknown_once(journal, monkeypatch, "_open_missing")
    opened = await journal.open_business_days({"bank_a": "2026-11-28", "bank_b": "2026-11-28"})
    assert lost == ["_open_missing"]
    assert opened == {"bank_a": "2026-11-28", "bank_b": "2026-11-28"}
    assert sorted(rows(config, "SELECT connector, business_date, state FROM business_days")) == [
        ("bank_a", "2026-11-28", "open"), ("bank_b", "2026-11-28", "open")]
    assert journal.business_date("bank_a") == "2026-11-28"


def test_until_known_tries_again_a_second_apart_and_returns_the_result() -> None:
    clock = task.Clock()
    errors = [CommitOutcomeUnknown("writer died"), JournalUnavailable("database away")]
    tries: list[float] = []

    def write() -> defer.Deferred[str]:
        tries.append(clock.seconds())
        return defer.fail(errors.pop(0)) if errors else defer.succeed("made")

    result = defer.ensureDeferred(again.until_known(clock, "test", write))
    clock.advance(0.01)
    clock.advance(0.01)
    assert tries == [0.0, 0.01, 0.02]
    assert result.result == "made"


def test_until_known_gives_the_last_error_to_its_caller_after_its_attempts() -> None:
    clock = task.Clock()
    tries: list[float] = []

    def write() -> defer.Deferred[str]:
        tries.append(clock.seconds())
        return defer.fail(CommitOutcomeUnknown(f"try {len(tries)}"))

    result = defer.ensureDeferred(again.until_known(clock, "test", write))
    clock.pump([0.01] * 10)
    assert len(tries) == again.ATTEMPTS
    failure = result.result
    assert failure.check(CommitOutcomeUnknown) and str(failure.value) == f"try {again.ATTEMPTS}"
    result.addErrback(lambda _: None)


def test_until_known_does_not_repeat_a_refusal() -> None:
    clock = task.Clock()
    tries: list[int] = []

    def write() -> defer.Deferred[str]:
        tries.append(1)
        return defer.fail(StorageError("counter changed under this node"))

    result = defer.ensureDeferred(again.until_known(clock, "test", write))
    clock.pump([0.01] * 5)
    assert tries == [1]
    assert result.result.check(StorageError)
    result.addErrback(lambda _: None)


def test_until_known_does_not_repeat_a_write_the_lease_fence_refused() -> None:
    """`LeaseLost` is `NotRecorded` for the web tier, but certain: the write did not happen and never will here."""
    clock = task.Clock()
    tries: list[int] = []

    def write() -> defer.Deferred[str]:
        tries.append(1)
        return defer.fail(LeaseLost("this node lost the journal lease"))

    result = defer.ensureDeferred(again.until_known(clock, "test", write))
    clock.pump([0.01] * 5)
    assert tries == [1]
    assert result.result.check(LeaseLost)
    result.addErrback(lambda _: None)
