"""The group-commit writer's failure handling, with a scripted stand-in for the database connection."""

from __future__ import annotations

import threading
from typing import Any

import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from switch.journal import CommitOutcomeUnknown, JournalOverloaded, JournalUnavailable, TransactionExists
from switch.journal.db import Dialect
from switch.journal.metrics import JournalMetrics
from switch.journal.units import Call, shared
from switch.journal.writer import BatchMetrics, GroupCommitWriter


class ScriptedDb:
    """Records what the writer asks of it; fails where a test says so."""

    dialect = Dialect()

    def __init__(self, fail_begin: bool = False, fail_commit: bool = False, commit_gate: threading.Event | None = None):
        self.fail_begin = fail_begin
        self.fail_commit = fail_commit
        self.commit_gate = commit_gate
        self.calls: list[str] = []
        self.broken = False
        self.committed = False

    def begin(self) -> None:
        self.calls.append("begin")
        if self.fail_begin:
            self.broken = True
            raise ConnectionError("server closed the connection")

    def commit(self) -> None:
        if self.commit_gate is not None:
            self.commit_gate.wait(10)
        self.calls.append("commit")
        if self.fail_commit:
            raise OSError("I/O error during COMMIT")
        self.committed = True

    def rollback(self) -> None:
        self.calls.append("rollback")
        if self.broken:
            raise ConnectionError("connection is closed")

    def flush(self) -> None:
        """Queued inserts are a `Db` matter; the writer only has to ask for them before COMMIT."""

    def savepoint(self, name: str) -> None:
        self.calls.append("savepoint")

    def release(self, name: str) -> None:
        self.calls.append("release")

    def rollback_to(self, name: str) -> None:
        self.calls.append("rollback_to")

    def close(self) -> None:
        self.calls.append("close")


def start_writer(*connections: ScriptedDb, max_queue: int = 100) -> tuple[GroupCommitWriter, CollectorRegistry]:
    supply = list(connections)
    registry = CollectorRegistry()

    def open_db() -> Any:
        if not supply:
            raise ConnectionError("connection refused")
        return supply.pop(0)

    writer = GroupCommitWriter(
        reactor, open_db, metrics=JournalMetrics.on(registry), backend="scripted", max_batch=64, max_queue=max_queue
    )
    return writer, registry


async def outcome(d: defer.Deferred[Any]) -> Any:
    try:
        return await d
    except Exception as exc:  # noqa: BLE001 - the test looks at what came back
        return exc


def refuse(db: Any) -> None:
    raise TransactionExists("t1")


def value(db: Any, result: Any) -> Any:
    return result


def wait_for_gate(db: Any) -> bool:
    """Hold the writer until the test opens the gate it shared (a unit carries data, not an event)."""
    gate: threading.Event = shared(db, "gate")
    return gate.wait(10)


@pytest_twisted.ensureDeferred
async def test_the_deferred_waits_for_the_commit() -> None:
    gate = threading.Event()
    db = ScriptedDb(commit_gate=gate)
    writer, _ = start_writer(db)
    await writer.start(lambda db: None)
    write = writer.submit(Call(value, "written"))
    await deferLater(reactor, 0.1, lambda: None)
    assert not write.called and not db.committed
    gate.set()
    assert await write == "written"
    assert db.committed
    await writer.stop()


@pytest_twisted.ensureDeferred
async def test_a_failed_commit_is_reported_as_unknown() -> None:
    first, second = ScriptedDb(fail_commit=True), ScriptedDb()
    writer, registry = start_writer(first, second)
    await writer.start(lambda db: None)
    results = [await outcome(d) for d in [writer.submit(Call(value, 1)), writer.submit(refuse)]]
    assert isinstance(results[0], CommitOutcomeUnknown) and "may or may not be durable" in str(results[0])
    assert isinstance(results[1], TransactionExists)
    assert "close" in first.calls
    assert registry.get_sample_value("kswitch_journal_writes_total", {"backend": "scripted", "outcome": "failed"}) == 2
    assert await writer.submit(Call(value, "again")) == "again"
    assert second.committed
    await writer.stop()


@pytest_twisted.ensureDeferred
async def test_a_connection_lost_before_commit_is_retried_once_on_a_new_one() -> None:
    lost, fresh = ScriptedDb(fail_begin=True), ScriptedDb()
    writer, _ = start_writer(lost, fresh)
    await writer.start(lambda db: None)
    assert await writer.submit(Call(value, "written")) == "written"
    assert fresh.committed and not lost.committed
    await writer.stop()


@pytest_twisted.ensureDeferred
async def test_an_unreachable_database_fails_fast_and_recovers() -> None:
    writer, _ = start_writer(ScriptedDb(fail_begin=True))
    await writer.start(lambda db: None)
    error = await outcome(writer.submit(Call(value, "lost")))
    assert isinstance(error, JournalUnavailable) and "nothing was written" in str(error)
    await writer.stop()


@pytest_twisted.ensureDeferred
async def test_a_full_queue_refuses_new_writes() -> None:
    gate = threading.Event()
    writer, _ = start_writer(ScriptedDb(), max_queue=2)
    writer.share("gate", gate)
    await writer.start(lambda db: None)
    blocker = writer.submit(Call(wait_for_gate))
    await deferLater(reactor, 0.1, lambda: None)
    queued = [writer.submit(Call(value, n)) for n in range(2)]
    overloaded = await outcome(writer.submit(Call(value, "too many")))
    assert isinstance(overloaded, JournalOverloaded)
    gate.set()
    assert await blocker is True
    assert await defer.gatherResults(queued) == [0, 1]
    await writer.stop()


@pytest_twisted.ensureDeferred
async def test_stop_commits_what_is_queued() -> None:
    db = ScriptedDb()
    writer, _ = start_writer(db)
    await writer.start(lambda db: None)
    pending = [writer.submit(Call(value, n)) for n in range(10)]
    await writer.stop()
    assert await defer.gatherResults(pending) == list(range(10))
    assert db.calls[-1] == "close"
    assert await writer.stop() is None


@pytest_twisted.ensureDeferred
async def test_a_batch_is_counted_on_the_reactor_thread_so_its_metrics_need_no_lock(monkeypatch) -> None:
    counted_on: list[threading.Thread] = []
    original = BatchMetrics.batch_done

    def batch_done(self: BatchMetrics, *args: Any) -> None:
        counted_on.append(threading.current_thread())
        original(self, *args)

    monkeypatch.setattr(BatchMetrics, "batch_done", batch_done)
    writer, registry = start_writer(ScriptedDb())
    await writer.start(lambda db: None)
    assert await writer.submit(Call(value, "written")) == "written"
    assert counted_on == [threading.main_thread()]
    assert registry.get_sample_value("kswitch_journal_writes_total", {"backend": "scripted", "outcome": "committed"}) == 1
    assert registry.get_sample_value("kswitch_journal_write_seconds_count", {"backend": "scripted"}) == 1
    await writer.stop()
