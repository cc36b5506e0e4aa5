"""Group commit: one thread owns the write connection and commits queued writes in batches.

Callers on the reactor thread submit a unit of work (a function of a `Db`) and get
a Deferred. The writer takes everything queued (up to ``max_batch``), runs it in
one database transaction, commits once (one fsync), and only then fires every
Deferred back on the reactor thread. While one batch is committing, the next one
queues up, so throughput grows with concurrency instead of being one fsync per write.

Units run in submission order and each sees the effects of the ones before it.
If a unit raises, the batch is rolled back and replayed with a savepoint around
each unit, so only the failing caller gets the error. Units must therefore have
no effects outside the database.

On PostgreSQL the first run of a batch is pipelined (`Db.pipelined`): statements
whose answers nobody reads (`Db.send`) go out without a round trip of their own,
so a payment costs the round trips of what it reads back, not of every statement.
Such a statement's failure surfaces at the next read, possibly in another unit;
since any failure sends the batch to the unpipelined replay, it still reaches the
unit that caused it, and only that one.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog
from twisted.internet import defer
from twisted.python.failure import Failure

from switch.journal.db import Db, resolved, run
from switch.journal.errors import CommitOutcomeUnknown, JournalClosed, JournalOverloaded, JournalUnavailable
from switch.journal.metrics import JournalMetrics

T = TypeVar("T")
log = structlog.get_logger("kswitch.journal")

_REOPEN_BACKOFF_SECONDS = 1.0


class Reactor(Protocol):
    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None: ...


@dataclass
class _Pending:
    unit: Callable[[Db], Any]
    deferred: defer.Deferred[Any]
    submitted: float


_Outcome = tuple[bool, Any]
_STOP = object()


class _ConnectionLost(Exception):
    """The connection failed outside any unit, before COMMIT: nothing of the batch was written."""


class GroupCommitWriter:
    def __init__(
        self,
        reactor: Reactor,
        open_db: Callable[[], Db],
        *,
        metrics: JournalMetrics,
        backend: str,
        max_batch: int,
        max_queue: int,
    ) -> None:
        self._reactor = reactor
        self._open_db = open_db
        self._backend = backend
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._db: Db | None = None
        self._last_open_failure = -_REOPEN_BACKOFF_SECONDS
        self._accepting = False
        self._stop_requested = False
        self._finished = False
        self._stop_waiters: list[defer.Deferred[None]] = []
        self._delivered: list[Callable[[], None]] = []
        # Children bound once: `.labels()` is a lock and a dict look-up, per write otherwise.
        # Read when scraped: an inc per submit and a dec per batch were a lock each, on both threads.
        metrics.queue_depth.labels(backend).set_function(self.backlog)
        self._commit_seconds = metrics.commit_seconds.labels(backend)
        self._batch_size = metrics.batch_size.labels(backend)
        self._commits = metrics.commits.labels(backend)
        self._write_seconds = metrics.write_seconds.labels(backend)
        self._writes = {outcome: metrics.writes.labels(backend, outcome)
                        for outcome in ("committed", "refused", "failed")}

    def start(self, prepare: Callable[[Db], T]) -> defer.Deferred[T]:
        """Open the connection on the writer thread and run ``prepare`` (migration) before any write."""
        started: defer.Deferred[T] = defer.Deferred()
        thread = threading.Thread(
            target=self._main, args=(prepare, started), name=f"kswitch-journal-writer-{self._backend}", daemon=True
        )
        thread.start()
        return started

    def submit(self, unit: Callable[[Db], T]) -> defer.Deferred[T]:
        """Queue a write; the Deferred fires once it is durably committed (call on the reactor thread)."""
        if not self._accepting:
            return defer.fail(JournalClosed("the journal is closed or not started"))
        if self._queue.qsize() >= self._max_queue:
            self._writes["failed"].inc()
            return defer.fail(JournalOverloaded(f"{self._max_queue} journal writes already waiting"))
        deferred: defer.Deferred[T] = defer.Deferred()
        self._queue.put(_Pending(unit, deferred, time.monotonic()))
        return deferred

    def backlog(self) -> int:
        """Writes submitted and not yet taken into a batch."""
        return self._queue.qsize()

    def after_batches(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the reactor after each batch's Deferreds have fired (flow control)."""
        self._delivered.append(callback)

    def _deliver(self, batch: list[_Pending], outcomes: list[_Outcome]) -> None:
        _deliver(batch, outcomes)
        for callback in self._delivered:
            callback()

    def stop(self) -> defer.Deferred[None]:
        """Commit what is queued, close the connection, and fire when the thread is done."""
        self._accepting = False
        if not self._stop_requested:
            self._stop_requested = True
            self._queue.put(_STOP)
        if self._finished:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._stop_waiters.append(waiter)
        return waiter

    def _thread_finished(self) -> None:
        self._finished = True
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _main(self, prepare: Callable[[Db], T], started: defer.Deferred[T]) -> None:
        try:
            self._db = self._open_db()
            result = run(self._db, prepare)
        except Exception:
            failure = Failure()
            self._discard()
            self._reactor.callFromThread(self._thread_finished)
            self._reactor.callFromThread(started.errback, failure)
            return
        self._accepting = not self._stop_requested
        self._reactor.callFromThread(started.callback, result)
        stopping = False
        while not stopping:
            batch, stopping = self._take()
            if batch:
                self._commit(batch)
        self._discard()
        self._reactor.callFromThread(self._thread_finished)

    def _take(self) -> tuple[list[_Pending], bool]:
        batch: list[_Pending] = []
        item = self._queue.get()
        while item is not _STOP:
            batch.append(item)
            if len(batch) >= self._max_batch:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        return batch, item is _STOP

    def _commit(self, batch: list[_Pending]) -> None:
        began = time.monotonic()
        outcomes, committed = self._execute(batch)
        done = time.monotonic()
        if committed:
            self._commit_seconds.observe(done - began)
            self._batch_size.observe(len(batch))
            self._commits.inc()
        succeeded = 0
        for pending, (ok, _) in zip(batch, outcomes):
            if ok:
                succeeded += 1
                self._write_seconds.observe(done - pending.submitted)
        # One increment per outcome and batch: each is a lock on the thread the reactor waits for.
        if succeeded:
            self._writes["committed"].inc(succeeded)
        if succeeded < len(batch):
            self._writes["refused" if committed else "failed"].inc(len(batch) - succeeded)
        self._reactor.callFromThread(self._deliver, batch, outcomes)

    def _execute(self, batch: list[_Pending]) -> tuple[list[_Outcome], bool]:
        """Run and commit the batch; a connection lost before COMMIT is retried once on a new one."""
        for attempt in (1, 2):
            db = self._connection()
            if db is None:
                break
            try:
                outcomes = self._run(db, batch)
            except _ConnectionLost as lost:
                log.warning("journal_batch_connection_lost", backend=self._backend, attempt=attempt, error=str(lost))
                self._discard()
                continue
            return self._finish(db, batch, outcomes)
        error = JournalUnavailable(f"the {self._backend} journal database is unreachable; nothing was written")
        return [(False, Failure(error)) for _ in batch], False

    def _run(self, db: Db, batch: list[_Pending]) -> list[_Outcome]:
        try:
            with db.pipelined():  # PostgreSQL: what no unit reads back rides with the next read
                db.begin()
                results = [run(db, pending.unit) for pending in batch]
                pipelined = db.pipelining
            if pipelined:  # rows the pipeline has answered (`Later`)
                results = [run(db, lambda _, r=r: resolved(r)) for r in results]
            run(db, _flush)  # after the pipeline: PostgreSQL sends the queued rows by COPY, which it excludes
        except Exception:
            return self._replay_isolated(db, batch)
        return [(True, result) for result in results]

    def _replay_isolated(self, db: Db, batch: list[_Pending]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        try:
            db.rollback()
            db.begin()
            for pending in batch:
                db.savepoint("unit")
                try:
                    result = resolved(run(db, pending.unit))  # unpipelined: resolved already
                    run(db, _flush)  # the unit's queued rows fail with the unit
                    outcomes.append((True, result))
                except Exception:
                    outcomes.append((False, Failure()))
                    db.rollback_to("unit")
                db.release("unit")
        except Exception as exc:
            raise _ConnectionLost(str(exc)) from exc
        return outcomes

    def _finish(self, db: Db, batch: list[_Pending], outcomes: list[_Outcome]) -> tuple[list[_Outcome], bool]:
        try:
            db.commit()
        except Exception as exc:
            log.error("journal_commit_failed", backend=self._backend, writes=len(batch), error=str(exc))
            self._discard()
            error = CommitOutcomeUnknown(
                f"{self._backend} COMMIT failed, the writes may or may not be durable: {exc}"
            )
            return [(False, Failure(error)) if ok else (ok, value) for ok, value in outcomes], False
        return outcomes, True

    def _connection(self) -> Db | None:
        if self._db is not None and not self._db.broken:
            return self._db
        self._discard()
        if time.monotonic() - self._last_open_failure < _REOPEN_BACKOFF_SECONDS:
            return None
        try:
            self._db = self._open_db()
        except Exception as exc:
            self._last_open_failure = time.monotonic()
            log.error("journal_reconnect_failed", backend=self._backend, error=str(exc))
            return None
        log.info("journal_reconnected", backend=self._backend)
        return self._db

    def _discard(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except Exception as exc:
                log.warning("journal_close_failed", backend=self._backend, error=str(exc))
            self._db = None


def _deliver(batch: list[_Pending], outcomes: list[_Outcome]) -> None:
    for pending, (ok, value) in zip(batch, outcomes):
        if ok:
            pending.deferred.callback(value)
        else:
            pending.deferred.errback(value)


def _flush(db: Db) -> None:
    db.flush()
