"""The journal's writer in a process of its own, behind the thread writer's interface.

Why: measured under the closed-loop yardstick, the switch runs as a convoy. A group of payments
reaches the journal together, is committed as one batch, comes back together, and the reactor then
has nothing to do until the next batch is durable: about a fifth of its time. A writer thread cannot
break that, because it starts a batch only once the reactor lets go of the GIL. A process can: units
go to it as soon as a few are ready (``flush_every``), so it commits the first payments of a group
while the reactor is still reading the rest (`switch.journal.writerproc` for the child's side).

The child runs at a lower CPU priority than the switch (``nice``, `switch.journal.config.WRITER_NICE`): on a
machine whose cores are all busy, the reactor every payment waits on gets one first.

What it costs: the units are pickled on the way out (the ones sent together in one pickle, so the rows they
share the shape of share their column names) and the outcomes on the way back, on the reactor.

Semantics, as the thread writer's (`switch.journal.writer.GroupCommitWriter`): a Deferred fires once
its unit is durably committed, or fails with the unit's error. If the child dies, what had been handed
to it and not answered fails with `CommitOutcomeUnknown` (its batch may or may not have committed; a
write is never sent twice), and what had not been handed to it yet goes to the child started in its
place, one second later at most.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from twisted.internet import defer, protocol
from twisted.python.failure import Failure

from switch.journal.batch import REOPEN_BACKOFF_SECONDS
from switch.journal.db import Db
from switch.journal.errors import (
    CommitOutcomeUnknown,
    JournalClosed,
    JournalOverloaded,
    JournalUnavailable,
    LeaseLost,
    StorageError,
)
from switch.journal.frames import RESULTS_FD, Frames, frame
from switch.journal.metrics import JournalMetrics
from switch.journal.pipe import PipeOut
from switch.journal.writer import BatchMetrics, deliver, tell_fenced
from switch.observe.logchild import child_environment

T = TypeVar("T")
log = structlog.get_logger("kswitch.journal")

FLUSH_EVERY = 16
"""Units sent to the child together at most: it starts on them while the reactor builds the next."""

START_ATTEMPTS = 3
"""Children started before `start` gives up on one that dies before it reports (killed, say, as a restarted switch
starts it); a child that reports it cannot start (a database it cannot reach) fails `start` at once."""


class _Child(protocol.ProcessProtocol):
    """One writer process, as the reactor sees it."""

    def __init__(self, owner: ProcessWriter) -> None:
        self._owner = owner
        self._frames = Frames()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == RESULTS_FD:
            for message in self._frames.feed(data):
                self._owner.received(self, message)

    def processEnded(self, reason: Failure) -> None:
        self._owner.ended(self, reason)


class ProcessWriter:
    def __init__(
        self,
        reactor: Any,
        backend: Any,
        *,
        metrics: JournalMetrics,
        max_batch: int,
        max_queue: int,
        log_format: str = "json",
        log_level: str = "info",
        flush_every: int = FLUSH_EVERY,
        nice: int = 0,
    ) -> None:
        self._reactor = reactor
        self._backend = backend
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._log = (log_format, log_level)
        self._flush_every = flush_every
        self._nice = nice
        self._shared: dict[Any, Any] = {}
        self._prepare: Callable[[Db], Any] | None = None
        self._child: _Child | None = None
        self._transport: Any = None
        self._pipe: PipeOut | None = None
        """Where units go to the child (not the transport's stdin: `switch.journal.pipe` says why)."""
        self._ready = False
        self._starting: defer.Deferred[Any] | None = None
        self._start_attempts = 0
        self._started_at = 0.0
        self._accepting = False
        self._stopping = False
        self._stop_waiters: list[defer.Deferred[None]] = []
        self._delivered: list[Callable[[], None]] = []
        self._fenced: list[Callable[[LeaseLost], None]] = []
        self._next_uid = 0
        self._waiting: dict[int, tuple[defer.Deferred[Any], float]] = {}
        """Every unit not answered yet: its caller and when it was submitted."""
        self._unsent: list[tuple[int, Callable[[Db], Any]]] = []
        """Units not handed to a child yet: a child started after one that died gets them."""
        self._sent: deque[int] = deque()
        """Units handed to the child and not answered yet, in order: the order it answers them in."""
        self._flush_scheduled = False
        self._metrics = BatchMetrics(metrics, backend.name, self.backlog)

    def start(self, prepare: Callable[[Db], T]) -> defer.Deferred[T]:
        """Start the child, open the connection there and run ``prepare`` (migration) before any write."""
        self._prepare = prepare
        started: defer.Deferred[T] = defer.Deferred()
        self._starting = started
        self._start_attempts = 1
        self._spawn()
        return started

    def share(self, key: Any, value: Any) -> None:
        """Hand the units ``value`` under ``key`` (`switch.journal.units.shared`): sent to the child in
        order with the units, so those submitted after this call see it."""
        self._shared[key] = value
        if self._ready:
            self._flush()
            self._pipe.write(frame(("share", key, value)))

    def submit(self, unit: Callable[[Db], T]) -> defer.Deferred[T]:
        """Queue a write; the Deferred fires once it is durably committed."""
        if not self._accepting:
            return defer.fail(JournalClosed("the journal is closed or not started"))
        if self.backlog() >= self._max_queue:
            self._metrics.writes["failed"].inc()
            return defer.fail(JournalOverloaded(f"{self._max_queue} journal writes already waiting"))
        self._next_uid += 1
        uid = self._next_uid
        deferred: defer.Deferred[T] = defer.Deferred()
        self._waiting[uid] = (deferred, time.monotonic())
        self._unsent.append((uid, unit))
        if not self._sent or len(self._unsent) >= self._flush_every:  # an idle child starts at once
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._reactor.callLater(0, self._flush_later)
        return deferred

    def backlog(self) -> int:
        """Writes submitted and not answered yet (the child does not say when it takes them into a batch:
        that would wake the reactor once more per batch, and the scheduler would then tend to put both
        processes on one core)."""
        return len(self._waiting)

    def after_batches(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each batch's Deferreds have fired (flow control)."""
        self._delivered.append(callback)

    def when_fenced(self, callback: Callable[[LeaseLost], None]) -> None:
        """Call ``callback`` with the `LeaseLost` of each batch the lease fence refused."""
        self._fenced.append(callback)

    def stop(self) -> defer.Deferred[None]:
        """Commit what is queued, let the child close its connection and exit; fires once it has."""
        self._accepting = False
        self._stopping = True
        waiter: defer.Deferred[None] = defer.Deferred()
        self._stop_waiters.append(waiter)
        if self._child is None:  # never started, or between a child that ended and the next
            starting, self._starting = self._starting, None
            if starting is not None:
                starting.errback(Failure(JournalClosed("the journal was closed before its writer process started")))
            self._stopped()
            return waiter
        if self._ready:
            self._flush()
            self._pipe.close()
        return waiter

    # -- the child's messages ------------------------------------------------------------------

    def received(self, child: _Child, message: Any) -> None:
        if child is not self._child:
            return
        kind = message[0]
        if kind == "batch":
            self._answered(message[1], message[2], message[3])
        elif kind == "started":
            self._started(message[1], message[2])

    def _started(self, ok: bool, result: Any) -> None:
        starting, self._starting = self._starting, None
        if not ok:
            self._pipe.close()
            if starting is not None:
                starting.errback(Failure(result))
                return
            log.error("journal_writer_restart_failed", backend=self._backend.name, error=str(result))
            self._fail_unsent(JournalUnavailable(f"the {self._backend.name} journal database is unreachable; "
                                                  f"nothing was written: {result}"))
            return
        self._ready = True
        if self._stopping:
            self._pipe.close()
        else:
            self._accepting = True
            self._flush()
        if starting is not None:
            starting.callback(result)

    def _answered(self, results: list[tuple[int, bool, Any]], committed: bool, seconds: float) -> None:
        done = time.monotonic()
        deferreds, outcomes, submitted = [], [], []
        waiting, sent = self._waiting, self._sent
        for uid, ok, value in results:
            sent.popleft()
            deferred, at = waiting.pop(uid)
            deferreds.append(deferred)
            submitted.append(at)
            outcomes.append((ok, value if ok else Failure(value)))
        self._metrics.batch_done(submitted, outcomes, committed, seconds, done)
        tell_fenced(self._fenced, outcomes, committed)
        deliver(deferreds, outcomes)
        for callback in self._delivered:
            callback()

    def ended(self, child: _Child, reason: Failure) -> None:
        if child is not self._child:
            return
        self._child = self._transport = None
        self._pipe.abort()
        self._ready = False
        lost = [self._waiting.pop(uid)[0] for uid in self._sent]
        self._sent.clear()
        if lost:
            error = CommitOutcomeUnknown(f"the {self._backend.name} journal writer process ended during a batch: "
                                         f"{reason.value}; its writes may or may not be durable")
            deliver(lost, [(False, Failure(error))] * len(lost))
        if self._starting is not None and not self._stopping and self._start_attempts < START_ATTEMPTS:
            self._start_attempts += 1
            log.error("journal_writer_process_ended", backend=self._backend.name, reason=str(reason.value),
                      starting=True, attempt=self._start_attempts)
            self._reactor.callLater(REOPEN_BACKOFF_SECONDS, self._start_again)
            return
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.errback(Failure(JournalUnavailable(
                f"the {self._backend.name} journal writer process ended before it started: {reason.value}")))
        if self._stopping:
            self._stopped()
        elif self._accepting:
            log.error("journal_writer_process_ended", backend=self._backend.name, reason=str(reason.value),
                      unknown=len(lost), waiting=len(self._unsent))
            delay = max(0.0, REOPEN_BACKOFF_SECONDS - (time.monotonic() - self._started_at))
            self._reactor.callLater(delay, self._respawn)

    def _stopped(self) -> None:
        self._fail_unsent(JournalClosed("the journal was closed before this write was taken"))
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _start_again(self) -> None:
        if self._starting is not None:  # not stopped meanwhile
            self._spawn()

    def _respawn(self) -> None:
        if self._accepting and self._child is None:
            self._spawn()

    def _fail_unsent(self, error: Exception) -> None:
        gone = [self._waiting.pop(uid)[0] for uid, _ in self._unsent]
        self._unsent = []
        deliver(gone, [(False, Failure(error))] * len(gone))

    # -- sending ---------------------------------------------------------------------------------

    def _spawn(self) -> None:
        child = _Child(self)
        self._child = child
        self._started_at = time.monotonic()
        executable = sys.executable
        units_in, units_out = os.pipe()
        try:
            self._transport = self._reactor.spawnProcess(
                child, executable, [executable, "-m", "switch.journal.writerproc"], env=child_environment(),
                childFDs={0: units_in, 1: 1, 2: 2, RESULTS_FD: "r"},
            )
        except BaseException:
            os.close(units_out)
            raise
        finally:
            os.close(units_in)
        self._pipe = PipeOut(self._reactor, units_out)
        self._pipe.write(frame(("start", self._backend, self._prepare, self._shared, self._max_batch,
                                *self._log, self._nice)))

    def _flush_later(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        """Write the units not sent yet, now: the child starts on them while the reactor goes on."""
        units = self._unsent
        if not units or not self._ready:
            return
        self._unsent = []
        try:
            payload = pickle.dumps([unit for _, unit in units], protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            units, payload = self._picklable(units)
            if not units:
                return
        uids = [uid for uid, _ in units]
        self._sent.extend(uids)
        self._pipe.write(frame(("units", uids, payload)))  # at once: the child starts while the reactor goes on

    def _picklable(self, units: list[tuple[int, Callable[[Db], Any]]]
                   ) -> tuple[list[tuple[int, Callable[[Db], Any]]], bytes]:
        """The units that pickle, pickled; each that does not (a closure, say: a programming error) fails."""
        kept = []
        for uid, unit in units:
            try:
                pickle.dumps(unit, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                deferred, _ = self._waiting.pop(uid)
                deferred.errback(StorageError(f"a journal write that cannot be sent to the writer process: {exc}"))
            else:
                kept.append((uid, unit))
        return kept, pickle.dumps([unit for _, unit in kept], protocol=pickle.HIGHEST_PROTOCOL)
