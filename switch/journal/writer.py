"""Group commit on a thread: one thread owns the write connection and commits queued writes in batches.

Callers on the reactor thread submit a unit of work (a picklable function of a `Db`: see
`switch.journal.units`) and get a Deferred. The writer takes everything queued (up to ``max_batch``),
runs it in one database transaction and commits once (one fsync: `switch.journal.batch`), and only
then fires every Deferred back on the reactor thread. While one batch is committing, the next one
queues up, so throughput grows with concurrency instead of being one fsync per write.

This writer shares the GIL with the reactor; `switch.journal.process.ProcessWriter` runs the same
batches in a process of its own, behind the same interface.
"""

from __future__ import annotations

import pickle
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog
from twisted.internet import defer
from twisted.python.failure import Failure

from switch.journal import lease
from switch.journal.batch import Committer, Outcome
from switch.journal.db import Db, run
from switch.journal.errors import JournalClosed, JournalOverloaded, LeaseLost
from switch.journal.metrics import JournalMetrics

T = TypeVar("T")
log = structlog.get_logger("kswitch.journal")


class Reactor(Protocol):
    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None: ...


@dataclass
class _Pending:
    unit: Callable[[Db], Any]
    deferred: defer.Deferred[Any]
    submitted: float


_STOP = object()

CHECK_PICKLABLE = False
"""Tests set this: every unit submitted to a thread writer is pickled and unpickled first, and every
outcome on its way back, so a unit a writer process could not run fails in the test that submits it."""


class BatchMetrics:
    """The writer's Prometheus children, bound once (`.labels()` is a lock and a dict look-up, per write
    otherwise), and what one batch adds to them."""

    def __init__(self, metrics: JournalMetrics, backend: str, backlog: Callable[[], int]) -> None:
        # Read when scraped: an inc per submit and a dec per batch were a lock each, on both threads.
        metrics.queue_depth.labels(backend).set_function(backlog)
        self._commit_seconds = metrics.commit_seconds.labels(backend)
        self._batch_size = metrics.batch_size.labels(backend)
        self._commits = metrics.commits.labels(backend)
        self._write_seconds = metrics.write_seconds.labels(backend)
        self.writes = {outcome: metrics.writes.labels(backend, outcome) for outcome in ("committed", "refused", "failed")}

    def batch_done(self, submitted: Sequence[float], outcomes: Sequence[Outcome], committed: bool, seconds: float,
                   done: float) -> None:
        """A batch of writes submitted at ``submitted`` (monotonic) ran for ``seconds`` and ended at ``done``."""
        if committed:
            self._commit_seconds.observe(seconds)
            self._batch_size.observe(len(outcomes))
            self._commits.inc()
        succeeded = 0
        for at, (ok, _) in zip(submitted, outcomes):
            if ok:
                succeeded += 1
                self._write_seconds.observe(done - at)
        # One increment per outcome and batch: each is a lock on the thread the reactor waits for.
        if succeeded:
            self.writes["committed"].inc(succeeded)
        if succeeded < len(outcomes):
            self.writes["refused" if committed else "failed"].inc(len(outcomes) - succeeded)


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
        self._backend = backend
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._shared: dict[Any, Any] = {}
        self._committer = Committer(open_db, backend, self._shared, fence=lease.fence)
        self._accepting = False
        self._stop_requested = False
        self._finished = False
        self._stop_waiters: list[defer.Deferred[None]] = []
        self._delivered: list[Callable[[], None]] = []
        self._fenced: list[Callable[[LeaseLost], None]] = []
        self._metrics = BatchMetrics(metrics, backend, self.backlog)

    def start(self, prepare: Callable[[Db], T]) -> defer.Deferred[T]:
        """Open the connection on the writer thread and run ``prepare`` (migration) before any write."""
        started: defer.Deferred[T] = defer.Deferred()
        thread = threading.Thread(
            target=self._main, args=(prepare, started), name=f"kswitch-journal-writer-{self._backend}", daemon=True
        )
        thread.start()
        return started

    def share(self, key: Any, value: Any) -> None:
        """Hand the units ``value`` under ``key`` (`switch.journal.units.shared`); units submitted after
        this call see it."""
        self._shared[key] = value

    def submit(self, unit: Callable[[Db], T]) -> defer.Deferred[T]:
        """Queue a write; the Deferred fires once it is durably committed (call on the reactor thread)."""
        if CHECK_PICKLABLE:
            unit = pickle.loads(pickle.dumps(unit))
        if not self._accepting:
            return defer.fail(JournalClosed("the journal is closed or not started"))
        if self._queue.qsize() >= self._max_queue:
            self._metrics.writes["failed"].inc()
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

    def when_fenced(self, callback: Callable[[LeaseLost], None]) -> None:
        """Call ``callback`` on the reactor with the `LeaseLost` of each batch the lease fence refused."""
        self._fenced.append(callback)

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

    def _deliver(self, batch: list[_Pending], outcomes: list[Outcome], committed: bool, seconds: float,
                 done: float) -> None:
        # Counted here, on the reactor, not on the writer thread: the journal's metrics then take no lock.
        self._metrics.batch_done([pending.submitted for pending in batch], outcomes, committed, seconds, done)
        tell_fenced(self._fenced, outcomes, committed)
        deliver([pending.deferred for pending in batch], outcomes)
        for callback in self._delivered:
            callback()

    def _thread_finished(self) -> None:
        self._finished = True
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _main(self, prepare: Callable[[Db], T], started: defer.Deferred[T]) -> None:
        try:
            result = run(self._committer.open(), prepare)
        except Exception:
            failure = Failure()
            self._committer.close()
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
        self._committer.close()
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
        outcomes, committed = self._committer.commit([pending.unit for pending in batch])
        done = time.monotonic()
        if CHECK_PICKLABLE:
            outcomes = [_sent_back(outcome) for outcome in outcomes]
        self._reactor.callFromThread(self._deliver, batch, outcomes, committed, done - began, done)


def deliver(deferreds: Sequence[defer.Deferred[Any]], outcomes: Sequence[Outcome]) -> None:
    """Fire each caller's Deferred with its unit's outcome."""
    for deferred, (ok, value) in zip(deferreds, outcomes):
        if ok:
            deferred.callback(value)
        else:
            deferred.errback(value)


def tell_fenced(callbacks: Sequence[Callable[[LeaseLost], None]], outcomes: Sequence[Outcome], committed: bool) -> None:
    """If the lease fence refused this batch (`switch.journal.lease.fence`: every unit failed with one `LeaseLost`,
    nothing committed), tell ``callbacks``, so the node steps down now rather than at its next heartbeat (before the
    callers hear of it: what they do next happens on a node that is stopping)."""
    if committed or not callbacks or not outcomes:
        return
    ok, value = outcomes[0]
    if not ok and isinstance(value.value, LeaseLost):
        for callback in callbacks:
            try:
                callback(value.value)
            except Exception:  # the batch's callers must still hear of it
                log.exception("journal_fenced_callback_failed")


def _sent_back(outcome: Outcome) -> Outcome:
    """An outcome as a writer process sends it back (`CHECK_PICKLABLE`)."""
    ok, value = outcome
    if ok:
        return ok, pickle.loads(pickle.dumps(value))
    return ok, Failure(pickle.loads(pickle.dumps(value.value)))
