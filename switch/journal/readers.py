"""Reads on a small pool of threads, each with its own read-only connection.

Reads never run on the reactor thread, and never share the writer's connection,
so a slow report does not delay a commit. A read issued after a write's
Deferred fired sees that write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from switch.journal.db import Db, run
from switch.journal.errors import JournalClosed, JournalUnavailable

T = TypeVar("T")


class ReaderPool:
    def __init__(self, reactor: Any, open_db: Callable[[], Db], *, size: int, backend: str) -> None:
        self._reactor = reactor
        self._open_db = open_db
        self._pool = ThreadPool(minthreads=0, maxthreads=size, name=f"kswitch-journal-reader-{backend}")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Db] = []
        self._running = False
        self.waiting = 0
        """Reads issued and not yet answered (on the reactor: until their Deferred fires)."""
        self._after: list[Callable[[], None]] = []
        self._after_due = False

    def start(self) -> None:
        self._pool.start()
        self._running = True

    def read(self, work: Callable[[Db], T]) -> defer.Deferred[T]:
        if not self._running:
            return defer.fail(JournalClosed("the journal is closed or not started"))
        self.waiting += 1
        result: defer.Deferred[T] = deferToThreadPool(self._reactor, self._pool, self._run, work)
        return result.addBoth(self._answered)

    def after_reads(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the reactor once reads have been answered, at most once a reactor turn and
        after the reads' own callbacks (flow control: what they started is in the backlog by then)."""
        self._after.append(callback)

    def _answered(self, result: Any) -> Any:
        self.waiting -= 1
        if self._after and not self._after_due:
            self._after_due = True
            self._reactor.callLater(0, self._run_after)
        return result

    def _run_after(self) -> None:
        self._after_due = False
        for callback in self._after:
            callback()

    def stop(self) -> None:
        """Stop the threads (waiting for reads in progress) and close their connections."""
        if not self._running:
            return
        self._running = False
        self._pool.stop()
        with self._lock:
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()

    def _run(self, work: Callable[[Db], T]) -> T:
        """Run a read; one that finds its connection dead is retried once on a new connection."""
        db = self._connection()
        try:
            return run(db, work)
        except JournalUnavailable:
            if not db.broken:
                raise
            return run(self._connection(), work)

    def _connection(self) -> Db:
        db: Db | None = getattr(self._local, "db", None)
        if db is not None and not db.broken:
            return db
        if db is not None:
            self._forget(db)
        self._local.db = db = self._open_db()
        with self._lock:
            self._connections.append(db)
        return db

    def _forget(self, db: Db) -> None:
        with self._lock:
            if db in self._connections:
                self._connections.remove(db)
        db.close()
