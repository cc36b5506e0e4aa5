"""The state every part of the journal's API shares, and how it starts and stops.

`Journal` (`switch.journal.journal`) is assembled from this base and one mixin per
concern: store-and-forward (`safapi`), events (`eventapi`), housekeeping, node lease and
counters (`upkeep`). Each method returns a Deferred and never blocks the reactor.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ParamSpec, Protocol, Self, TypeVar

import structlog
from twisted.internet import defer

from switch.journal import schema
from switch.journal.adaptive import AdaptiveWriter
from switch.journal.config import JournalConfig
from switch.journal.db import Db
from switch.journal.errors import LeaseLost
from switch.journal.metrics import JournalMetrics
from switch.journal.process import ProcessWriter
from switch.journal.readers import ReaderPool
from switch.journal.units import FEES
from switch.journal.vault import PanVault
from switch.journal.writer import GroupCommitWriter

log = structlog.get_logger("kswitch.journal")

P = ParamSpec("P")
T = TypeVar("T")


class Backend(Protocol):
    name: str

    def describe(self) -> str: ...

    def open_writer(self) -> Db: ...

    def open_reader(self) -> Db: ...


def fails_as_deferred(method: Callable[P, defer.Deferred[T]]) -> Callable[P, defer.Deferred[T]]:
    """An error raised while validating input becomes a failed Deferred, like any other failure."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> defer.Deferred[T]:
        try:
            return method(*args, **kwargs)
        except Exception:
            return defer.fail()

    return wrapper


class JournalBase:
    """The writer, the readers, the vault, the metrics and the clock of one journal."""

    def __init__(
        self,
        reactor: Any,
        backend: Backend,
        vault: PanVault,
        *,
        config: JournalConfig,
        metrics: JournalMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reactor = reactor
        self._backend = backend
        self._vault = vault
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._writer = _writer(reactor, backend, config, metrics)
        self._writer.share(FEES, config.fees)
        self._readers = ReaderPool(reactor, backend.open_reader, size=config.reader_threads, backend=backend.name)
        self._shutdown_trigger: object | None = None
        self._open_dates: dict[str, str] = {}
        """Each connector's open business date: stamped on rows on the reactor, changed by a cutover."""

    def share(self, key: Any, value: Any) -> None:
        """Hand the writer's units ``value`` under ``key`` once, rather than with every unit
        (`switch.journal.units`); units submitted after this call find it."""
        self._writer.share(key, value)

    @property
    def vault(self) -> PanVault:
        return self._vault

    @property
    def metrics(self) -> JournalMetrics:
        return self._metrics

    @property
    def max_batch(self) -> int:
        return self._config.max_batch

    def backlog(self) -> int:
        """Work waiting on the journal's threads: writes not yet taken into a batch, and reads not yet
        answered (a burst of keyed payments is a burst of idempotency look-ups before it is one of writes)."""
        return self._writer.backlog() + self._readers.waiting

    def after_batches(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the reactor after each committed (or failed) batch's Deferreds fired, and
        after reads were answered (`ReaderPool.after_reads`): whenever the backlog may have shrunk."""
        self._writer.after_batches(callback)
        self._readers.after_reads(callback)

    def when_fenced(self, callback: Callable[[LeaseLost], None]) -> None:
        """Call ``callback`` on the reactor with the `LeaseLost` of each writer batch the node lease's fence refused
        (`switch.journal.lease.fence`): the lease is no longer this node's, and nothing of that batch was written."""
        self._writer.when_fenced(callback)

    def start(self) -> defer.Deferred[Self]:
        """Open the database, migrate it, and start the writer and readers; fires with the journal."""
        return defer.ensureDeferred(self._start())

    async def _start(self) -> Self:
        result = await self._writer.start(schema.migrate)
        self._readers.start()
        self._shutdown_trigger = self._reactor.addSystemEventTrigger("before", "shutdown", self.close)
        log.info(
            "journal_opened",
            backend=self._backend.describe(),
            schema_from=result.from_version,
            schema_to=result.to_version,
        )
        return self

    def close(self) -> defer.Deferred[None]:
        """Commit queued writes, then stop the threads and close every connection."""
        if self._shutdown_trigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        return self._writer.stop().addCallback(lambda _: self._readers.stop())

    def _now(self) -> int:
        return int(self._clock() * 1_000_000)


def _writer(reactor: Any, backend: Backend, config: JournalConfig, metrics: JournalMetrics
            ) -> GroupCommitWriter | ProcessWriter | AdaptiveWriter:
    """The writer ``config.writer`` names (`switch.journal.config.JournalConfig`)."""
    def thread() -> GroupCommitWriter:
        return GroupCommitWriter(reactor, backend.open_writer, metrics=metrics, backend=backend.name,
                                 max_batch=config.max_batch, max_queue=config.max_queue)

    def process() -> ProcessWriter:
        return ProcessWriter(reactor, backend, metrics=metrics, max_batch=config.max_batch,
                             max_queue=config.max_queue, log_format=config.log_format, log_level=config.log_level,
                             nice=config.writer_nice)

    if config.writer == "thread":
        return thread()
    if config.writer == "process":
        return process()
    return AdaptiveWriter(thread(), process(), metrics=metrics, backend=backend.name)


def microseconds(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)
