"""The default writer (`switch.journal.adaptive`): the thread for one write at a time, the process once
writes wait together, and the journal sees them in submission order across each switch."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import defer, reactor

from switch.journal import Journal, JournalConfig, JournalUnavailable, open_journal
from switch.journal.adaptive import AdaptiveWriter
from switch.journal.db import Db
from switch.journal.units import Call
from tests.journal.conftest import sample

pytestmark = pytest.mark.timeout(60)

_NEXT = "UPDATE counters SET value = value + 1 WHERE name = 'seq' RETURNING value"


@pytest_twisted.async_yield_fixture
async def auto(config: JournalConfig, registry: CollectorRegistry) -> Any:
    journal: Journal = await open_journal(dataclasses.replace(config, writer="auto"), reactor, registry=registry)
    await journal._writer.submit(Call(Db.execute, "INSERT INTO counters (name, value) VALUES ('seq', 0)"))
    yield journal
    await journal.close()


def next_value() -> Call[Any]:
    return Call(Db.one, _NEXT)


async def one_at_a_time(journal: Journal, count: int) -> list[int]:
    return [(await journal._writer.submit(next_value()))["value"] for _ in range(count)]


@pytest_twisted.ensureDeferred
async def test_writes_one_at_a_time_stay_on_the_thread(auto: Journal, registry: CollectorRegistry,
                                                       config: JournalConfig) -> None:
    writer = auto._writer
    assert isinstance(writer, AdaptiveWriter)
    assert await one_at_a_time(auto, 30) == list(range(1, 31))
    assert not writer.in_process
    assert sample(registry, "kswitch_journal_writer_in_process", backend=config.backend) == 0


@pytest_twisted.ensureDeferred
async def test_writes_that_wait_together_go_to_the_process_and_back_in_order(
        auto: Journal, registry: CollectorRegistry, config: JournalConfig) -> None:
    writer = auto._writer
    assert isinstance(writer, AdaptiveWriter)
    burst = [writer.submit(next_value()) for _ in range(200)]  # switches while the first ones are out
    values = [row["value"] for row in await defer.gatherResults(burst)]
    assert values == list(range(1, 201))  # each saw all the ones before it, whichever writer ran it
    assert writer.in_process
    assert sample(registry, "kswitch_journal_writer_in_process", backend=config.backend) == 1
    assert await one_at_a_time(auto, 40) == list(range(201, 241))
    assert not writer.in_process


class _NoProcess:
    """A writer process that cannot start (no way to spawn one, say)."""

    def start(self, prepare: Any) -> defer.Deferred[Any]:
        return defer.fail(JournalUnavailable("no process here"))

    def stop(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def share(self, key: Any, value: Any) -> None:
        pass

    def backlog(self) -> int:
        return 0

    def after_batches(self, callback: Any) -> None:
        pass


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest_twisted.ensureDeferred
async def test_without_a_process_every_write_goes_to_the_thread(config: JournalConfig,
                                                                registry: CollectorRegistry) -> None:
    journal: Journal = await open_journal(config, reactor, registry=registry)  # a thread writer
    await journal.close()
    thread = type(journal._writer)(reactor, journal._backend.open_writer, metrics=journal.metrics,
                                   backend="sqlite", max_batch=256, max_queue=1000)
    writer = AdaptiveWriter(thread, _NoProcess(), metrics=journal.metrics, backend="sqlite")  # type: ignore[arg-type]
    await writer.start(lambda db: None)
    try:
        await writer.submit(Call(Db.execute, "INSERT INTO counters (name, value) VALUES ('seq', 0)"))
        values = await defer.gatherResults([writer.submit(next_value()) for _ in range(100)])
        assert [row["value"] for row in values] == list(range(1, 101))
        assert not writer.in_process
    finally:
        await writer.stop()
