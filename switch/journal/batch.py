"""One batch of writer units, run and committed on one connection: the group commit both writers share.

`GroupCommitWriter` (a thread beside the reactor) and the writer process (`switch.journal.writerproc`)
differ only in how units reach them and how outcomes go back; what a batch is stays here, once.

Units run in submission order and each sees the effects of the ones before it. If a unit raises, the
batch is rolled back and replayed with a savepoint around each unit, so only the failing caller gets
the error. Units must therefore have no effects outside the database.

On PostgreSQL the first run of a batch is pipelined (`Db.pipelined`): statements whose answers nobody
reads (`Db.send`) go out without a round trip of their own, so a payment costs the round trips of what
it reads back, not of every statement. Such a statement's failure surfaces at the next read, possibly
in another unit; since any failure sends the batch to the unpipelined replay, it still reaches the unit
that caused it, and only that one.

A batch whose server does not answer within the dialect's deadline is given up (`Watchdog`), and fails as
one whose connection was lost.

A batch may be fenced: a check sent first in its transaction (`Fence`: the node lease's,
`switch.journal.lease.fence`) that, when it refuses, rolls the whole batch back and fails every unit
with its error, whatever the units did; nothing of the batch is written, and nothing is replayed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import structlog
from twisted.python.failure import Failure

from switch.journal.db import Db, Later, resolved, run
from switch.journal.errors import CommitOutcomeUnknown, JournalUnavailable

log = structlog.get_logger("kswitch.journal")

Outcome = tuple[bool, Any]
"""(True, the unit's result) or (False, a `Failure`)."""
Unit = Callable[[Db], Any]
Fence = Callable[[Db], "Later[Exception | None] | None"]
"""Sends a batch's check at the start of its transaction (or nothing: None); what it returns resolves to the error
the whole batch fails with, or None to let it commit."""

REOPEN_BACKOFF_SECONDS = 1.0


class _ConnectionLost(Exception):
    """The connection failed outside any unit, before COMMIT: nothing of the batch was written."""


class _Refused(Exception):
    """The batch's `Fence` refused it, and it was rolled back: ``error`` is every unit's."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Watchdog:
    """Gives up a batch its server holds past the dialect's `Dialect.batch_deadline`, from a thread of its own
    (the writer's own thread is the one waiting): `Dialect.abandon` breaks the connection under the batch.

    One thread for the writer's life, woken only when it has nothing to watch and a batch starts: a batch's
    deadline is never before the one the thread already sleeps until, so arming costs a lock, not a wake-up.
    It abandons while holding the lock, and `watching` takes the lock before the batch goes on: the writer
    never closes the connection while the thread still works on it."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._armed: tuple[Db, float] | None = None
        self._idle = True
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watching(self, db: Db) -> Iterator[None]:
        deadline = db.dialect.batch_deadline
        if deadline is None:
            yield
            return
        with self._lock:
            self._armed = (db, time.monotonic() + deadline)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="kswitch-journal-deadline", daemon=True)
                self._thread.start()
            elif self._idle:
                self._lock.notify()
        try:
            yield
        finally:
            with self._lock:
                self._armed = None

    def _watch(self) -> None:
        with self._lock:
            while True:
                armed = self._armed
                self._idle = armed is None
                if armed is None:
                    self._lock.wait()
                    continue
                db, due = armed
                left = due - time.monotonic()
                if left > 0:
                    self._lock.wait(left)
                    continue
                self._armed = None
                log.error("journal_batch_overdue", backend=db.dialect.name, deadline=db.dialect.batch_deadline)
                db.dialect.abandon(db.conn)


class Committer:
    """The writer's connection and what it does with a batch: open (and reopen after a loss, at most
    once a second), fence, run, replay unit by unit on a failure, commit."""

    def __init__(self, open_db: Callable[[], Db], backend: str, shared: dict[Any, Any],
                 fence: Fence | None = None) -> None:
        self._open_db = open_db
        self._backend = backend
        self._shared = shared
        self._fence = fence
        self._db: Db | None = None
        self._last_open_failure = -REOPEN_BACKOFF_SECONDS
        self._watchdog = Watchdog()

    def open(self) -> Db:
        """Open the connection now (start-up: a failure is the caller's to report)."""
        self._db = self._opened()
        return self._db

    def commit(self, units: Sequence[Unit]) -> tuple[list[Outcome], bool]:
        """Run and commit ``units``; a connection lost before COMMIT (or given up by the `Watchdog`) is retried
        once on a new one. The flag is True when the batch committed."""
        for attempt in (1, 2):
            db = self._connection()
            if db is None:
                break
            try:
                with self._watchdog.watching(db):
                    outcomes, committed = self._finish(db, units, self._run(db, units))
            except _ConnectionLost as lost:
                log.warning("journal_batch_connection_lost", backend=self._backend, attempt=attempt, error=str(lost))
                self.close()
                continue
            except _Refused as refused:  # the connection is sound: kept for the next batch
                log.error("journal_batch_fenced", backend=self._backend, writes=len(units), error=str(refused))
                return [(False, Failure(refused.error)) for _ in units], False
            if not committed:
                self.close()
            return outcomes, committed
        error = JournalUnavailable(f"the {self._backend} journal database is unreachable; nothing was written")
        return [(False, Failure(error)) for _ in units], False

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except Exception as exc:
                log.warning("journal_close_failed", backend=self._backend, error=str(exc))
            self._db = None

    @property
    def db(self) -> Db | None:
        return self._db

    def _opened(self) -> Db:
        db = self._open_db()
        db.shared = self._shared
        return db

    def _run(self, db: Db, units: Sequence[Unit]) -> list[Outcome]:
        try:
            with db.pipelined():  # PostgreSQL: what no unit reads back rides with the next read
                db.begin()
                fence = self._fenced(db)  # first: on PostgreSQL its row lock is held before any unit runs
                results = [run(db, unit) for unit in units]
                pipelined = db.pipelining
            refused = run(db, lambda _: resolved(fence))
            if refused is None:
                if pipelined:  # rows the pipeline has answered (`Later`)
                    results = [run(db, lambda _, r=r: resolved(r)) for r in results]
                run(db, _flush)  # after the pipeline: PostgreSQL sends the queued rows by COPY, which it excludes
        except Exception:
            return self._replay_isolated(db, units)
        if refused is not None:
            self._refuse(db, refused)
        return [(True, result) for result in results]

    def _replay_isolated(self, db: Db, units: Sequence[Unit]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        try:
            db.rollback()
            db.begin()
            refused = resolved(self._fenced(db))  # unpipelined: read already
            if refused is None:
                for unit in units:
                    db.savepoint("unit")
                    try:
                        result = resolved(run(db, unit))  # unpipelined: resolved already
                        run(db, _flush)  # the unit's queued rows fail with the unit
                        outcomes.append((True, result))
                    except Exception:
                        outcomes.append((False, Failure()))
                        db.rollback_to("unit")
                    db.release("unit")
        except Exception as exc:
            raise _ConnectionLost(str(exc)) from exc
        if refused is not None:
            self._refuse(db, refused)
        return outcomes

    def _fenced(self, db: Db) -> Later[Exception | None] | None:
        return self._fence(db) if self._fence is not None else None

    def _refuse(self, db: Db, error: Exception) -> NoReturn:
        """Roll the batch back (`_Refused`): nothing of it is written."""
        try:
            db.rollback()
        except Exception as exc:
            raise _ConnectionLost(str(exc)) from exc
        raise _Refused(error)

    def _finish(self, db: Db, units: Sequence[Unit], outcomes: list[Outcome]) -> tuple[list[Outcome], bool]:
        try:
            db.commit()
        except Exception as exc:
            log.error("journal_commit_failed", backend=self._backend, writes=len(units), error=str(exc))
            error = CommitOutcomeUnknown(
                f"{self._backend} COMMIT failed, the writes may or may not be durable: {exc}"
            )
            return [(False, Failure(error)) if ok else (ok, value) for ok, value in outcomes], False
        return outcomes, True

    def _connection(self) -> Db | None:
        if self._db is not None and not self._db.broken:
            return self._db
        self.close()
        if time.monotonic() - self._last_open_failure < REOPEN_BACKOFF_SECONDS:
            return None
        try:
            self._db = self._opened()
        except Exception as exc:
            self._last_open_failure = time.monotonic()
            log.error("journal_reconnect_failed", backend=self._backend, error=str(exc))
            return None
        log.info("journal_reconnected", backend=self._backend)
        return self._db


def _flush(db: Db) -> None:
    db.flush()
