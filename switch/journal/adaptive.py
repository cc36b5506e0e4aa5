"""The journal's default writer: a thread while payments come one at a time, a process once they come together.

Why both: the writer process (`switch.journal.process`) raises the closed loop's throughput by a quarter,
because it commits while the reactor works instead of waiting for the GIL; but each commit crosses two
pipes, which costs a lone payment about 0.2 ms a commit on these machines. The thread writer is the
faster of the two for one payment in flight, the process for many. So the writes go to the thread
until the switch sees several waiting on the journal at once, and go back once it sees one at a time.

Order: a switch waits until every write handed to the current writer is answered (durable), holding
the new ones meanwhile, then hands those to the other writer in the order they came. The two writers
never hold writes at the same time, so the journal sees them in submission order, as from one writer;
the risk counters a writer remembers are checked against the database at each batch, so a writer
notices what the other committed (`switch.journal.riskmemo`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from twisted.internet import defer

from switch.journal.db import Db
from switch.journal.errors import JournalClosed, LeaseLost
from switch.journal.metrics import JournalMetrics
from switch.journal.process import ProcessWriter
from switch.journal.writer import GroupCommitWriter

T = TypeVar("T")
log = structlog.get_logger("kswitch.journal")

TO_PROCESS = 2.0
"""Writes waiting on the journal, on average at each new one, from which the writes go to the process."""
TO_THREAD = 0.5
"""… and below which they go back to the thread (apart from `TO_PROCESS`, so the writer does not flap)."""
_WEIGHT = 0.1
"""How much one write's reading moves the average."""


class AdaptiveWriter:
    def __init__(self, thread: GroupCommitWriter, process: ProcessWriter, *, metrics: JournalMetrics, backend: str,
                 to_process: float = TO_PROCESS, to_thread: float = TO_THREAD) -> None:
        self._thread = thread
        self._process = process
        self._backend = backend
        self._to_process = to_process
        self._to_thread = to_thread
        self._current: GroupCommitWriter | ProcessWriter = thread
        self._process_up = False
        self._switching = False
        self._outstanding = 0
        """Writes handed to the current writer and not answered yet."""
        self._held: list[tuple[Callable[[Db], Any], defer.Deferred[Any]]] = []
        """Writes that came during a switch, for the next writer."""
        self._waiting = 0.0
        metrics.queue_depth.labels(backend).set_function(self.backlog)
        self._in_process = metrics.writer_in_process.labels(backend)

    @property
    def in_process(self) -> bool:
        """True while the writes go to the writer process."""
        return self._current is self._process

    def start(self, prepare: Callable[[Db], T]) -> defer.Deferred[T]:
        """Start the thread (which runs ``prepare``: migration), then the process; without a process (it
        could not start) every write goes to the thread."""
        return defer.ensureDeferred(self._start(prepare))

    async def _start(self, prepare: Callable[[Db], T]) -> T:
        result: T = await self._thread.start(prepare)
        try:
            await self._process.start(prepare)  # the schema is current by now: this only opens
        except Exception as exc:
            log.error("journal_writer_process_unavailable", backend=self._backend, error=str(exc))
        else:
            self._process_up = True
        return result

    def share(self, key: Any, value: Any) -> None:
        self._thread.share(key, value)
        self._process.share(key, value)

    def submit(self, unit: Callable[[Db], T]) -> defer.Deferred[T]:
        """Queue a write on the writer of the moment; the Deferred fires once it is durably committed."""
        if self._switching:
            held: defer.Deferred[T] = defer.Deferred()
            self._held.append((unit, held))
            return held
        self._waiting += _WEIGHT * (self._outstanding - self._waiting)
        if self._process_up and self._wants_switch():
            self._switching = True
            self._current_drained()
            if self._switching:
                held = defer.Deferred()
                self._held.append((unit, held))
                return held
        return self._hand(unit)

    def backlog(self) -> int:
        """Writes submitted and not yet taken into a batch (held by a switch included)."""
        return self._thread.backlog() + self._process.backlog() + len(self._held)

    def after_batches(self, callback: Callable[[], None]) -> None:
        self._thread.after_batches(callback)
        self._process.after_batches(callback)

    def when_fenced(self, callback: Callable[[LeaseLost], None]) -> None:
        self._thread.when_fenced(callback)
        self._process.when_fenced(callback)

    def stop(self) -> defer.Deferred[None]:
        """Stop both writers: each commits what it holds first (what a switch held goes nowhere)."""
        held, self._held = self._held, []
        for _, deferred in held:
            deferred.errback(JournalClosed("the journal was closed before this write was taken"))
        return defer.gatherResults([self._thread.stop(), self._process.stop()], consumeErrors=True).addCallback(
            lambda _: None)

    def _wants_switch(self) -> bool:
        if self._current is self._thread:
            return self._waiting >= self._to_process
        return self._waiting < self._to_thread

    def _hand(self, unit: Callable[[Db], T]) -> defer.Deferred[T]:
        self._outstanding += 1
        return self._current.submit(unit).addBoth(self._answered)

    def _answered(self, result: Any) -> Any:
        self._outstanding -= 1
        if self._switching:
            self._current_drained()
        return result

    def _current_drained(self) -> None:
        """Once nothing is outstanding on the current writer, switch, and hand over what was held."""
        if self._outstanding:
            return
        self._current = self._process if self._current is self._thread else self._thread
        self._in_process.set(1 if self._current is self._process else 0)
        log.info("journal_writer_switched", backend=self._backend,
                 to="process" if self._current is self._process else "thread", waiting=round(self._waiting, 2))
        self._switching = False
        held, self._held = self._held, []
        for unit, deferred in held:
            self._hand(unit).chainDeferred(deferred)
