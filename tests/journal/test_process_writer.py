"""The journal's writer process (`switch.journal.process`): what a caller sees of it, and what happens
to the writes when one of the two processes dies."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import defer, reactor, task

from switch.domain.status import Kind, Status
from switch.journal import (
    CommitOutcomeUnknown,
    JournalClosed,
    JournalConfig,
    JournalUnavailable,
    NewTransaction,
    StorageError,
    open_journal,
)
from switch.journal.db import Db
from switch.journal.journal import backend_for
from switch.journal.metrics import JournalMetrics
from switch.journal.process import ProcessWriter, child_environment
from switch.journal.schema import migrate
from switch.journal.units import Call
from tests.journal.conftest import raw_connect, sample
from tests.journal.test_journal import failure_of

pytestmark = pytest.mark.timeout(60)

_INSERT = "INSERT INTO counters (name, value) VALUES (:name, 1)"
_SLOW = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
         "SELECT COUNT(*) AS n FROM c")


def insert(name: str) -> Call[int]:
    return Call(Db.execute, _INSERT, {"name": name})


def counted(config: JournalConfig) -> set[str]:
    conn = raw_connect(config)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM counters").fetchall()}
    finally:
        conn.close()


async def until(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await task.deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.async_yield_fixture
async def writer(config: JournalConfig, registry: CollectorRegistry) -> Any:
    started = ProcessWriter(reactor, backend_for(config), metrics=JournalMetrics(registry), max_batch=64,
                            max_queue=1000)
    await started.start(migrate)
    yield started
    await started.stop()


@pytest_twisted.ensureDeferred
async def test_each_write_commits_or_fails_alone(writer: ProcessWriter, config: JournalConfig,
                                                 registry: CollectorRegistry) -> None:
    names = [f"n{i}" for i in range(40)]
    results = [writer.submit(insert(name)) for name in names]
    twice = writer.submit(insert("n3"))  # the same key again, in the same batch or the next
    assert await defer.gatherResults(results) == [1] * 40
    assert isinstance(await failure_of(twice), StorageError)
    assert counted(config) == set(names)
    backend = config.backend
    assert sample(registry, "kswitch_journal_writes_total", backend=backend, outcome="committed") == 40
    assert sample(registry, "kswitch_journal_writes_total", backend=backend, outcome="refused") == 1
    assert sample(registry, "kswitch_journal_commits_total", backend=backend) >= 1
    assert sample(registry, "kswitch_journal_queue_depth", backend=backend) == 0


@pytest_twisted.ensureDeferred
async def test_a_write_that_cannot_cross_to_the_process_is_refused_alone(writer: ProcessWriter,
                                                                         config: JournalConfig) -> None:
    refused = await failure_of(writer.submit(lambda db: db.execute(_INSERT, {"name": "closure"})))
    assert isinstance(refused, StorageError)
    assert "cannot be sent to the writer process" in str(refused)
    assert await writer.submit(insert("after")) == 1
    assert counted(config) == {"after"}


def _only_here(db: Db) -> int:
    return 1


@pytest_twisted.ensureDeferred
async def test_a_write_the_process_cannot_read_fails_with_its_frame_alone(writer: ProcessWriter,
                                                                         config: JournalConfig) -> None:
    """Code the switch has and its writer process has not (a module that exists only in this process)."""
    module = types.ModuleType("kswitch_only_in_the_test_process")
    module._only_here = _only_here  # type: ignore[attr-defined]
    _only_here.__module__ = module.__name__
    sys.modules[module.__name__] = module
    try:
        unreadable = writer.submit(Call(_only_here))
        writer._flush()
        after = writer.submit(insert("after"))
        refused = await failure_of(unreadable)
    finally:
        del sys.modules[module.__name__]
        _only_here.__module__ = __name__
    assert isinstance(refused, StorageError)
    assert "cannot read this write" in str(refused)
    assert await after == 1
    assert counted(config) == {"after"}


def _inserted_then_unsendable(db: Db, name: str) -> object:
    db.execute(_INSERT, {"name": name})
    return (n for n in range(1))  # a generator: no pickle takes it back to the switch


@pytest_twisted.ensureDeferred
async def test_a_result_that_cannot_come_back_fails_alone_and_its_batch_commits(writer: ProcessWriter,
                                                                               config: JournalConfig) -> None:
    """The batch's results go back in one pickle; one that cannot is answered as an error and the others
    as they are, in the same batch."""
    before = writer.submit(insert("before"))
    odd = writer.submit(Call(_inserted_then_unsendable, "odd"))
    after = writer.submit(insert("after"))
    refused = await failure_of(odd)
    assert "could not send back a generator" in str(refused)
    assert [await before, await after] == [1, 1]
    assert counted(config) == {"before", "odd", "after"}  # its write committed; only its result was lost


@pytest_twisted.ensureDeferred
async def test_stop_commits_what_was_queued_then_refuses(writer: ProcessWriter, config: JournalConfig) -> None:
    queued = [writer.submit(insert(f"q{i}")) for i in range(50)]
    await writer.stop()
    assert await defer.gatherResults(queued) == [1] * 50
    assert len(counted(config)) == 50
    assert isinstance(await failure_of(writer.submit(insert("late"))), JournalClosed)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest_twisted.ensureDeferred
async def test_a_killed_writer_process_is_replaced(writer: ProcessWriter, config: JournalConfig) -> None:
    """What was handed to the process may or may not have committed: its callers hear so, and nothing is
    sent twice. What comes while no process runs goes to the one started in its place, and commits."""
    handed = [writer.submit(Call(Db.one, _SLOW)), writer.submit(insert("handed"))]
    writer._flush()
    first = writer._transport.pid
    os.kill(first, signal.SIGKILL)
    for failed in handed:
        assert isinstance(await failure_of(failed), CommitOutcomeUnknown)
    assert writer._transport is None  # gone, not yet replaced
    waiting = [writer.submit(insert(f"w{i}")) for i in range(5)]
    assert await defer.gatherResults(waiting) == [1] * 5
    assert writer._transport.pid != first
    assert await writer.submit(insert("later")) == 1
    assert counted(config) == {f"w{i}" for i in range(5)} | {"later"}


def _new_writer(config: JournalConfig, registry: CollectorRegistry) -> ProcessWriter:
    return ProcessWriter(reactor, backend_for(config), metrics=JournalMetrics(registry), max_batch=64, max_queue=1000)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest_twisted.ensureDeferred
async def test_the_writer_process_runs_at_a_lower_cpu_priority(config: JournalConfig,
                                                               registry: CollectorRegistry) -> None:
    """Its niceness is the switch's plus ``nice`` (Linux caps it at 19), and so is its replacement's."""
    writer = ProcessWriter(reactor, backend_for(config), metrics=JournalMetrics(registry), max_batch=64,
                           max_queue=1000, nice=7)
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 7)
    await writer.start(migrate)
    try:
        assert await writer.submit(insert("first")) == 1
        first = writer._transport.pid
        assert os.getpriority(os.PRIO_PROCESS, first) == expected
        os.kill(first, signal.SIGKILL)
        await until(lambda: writer._transport is not None and writer._transport.pid != first, "a new writer process")
        assert await writer.submit(insert("second")) == 1
        assert os.getpriority(os.PRIO_PROCESS, writer._transport.pid) == expected
    finally:
        await writer.stop()


@pytest_twisted.ensureDeferred
async def test_a_writer_process_killed_before_it_started_is_started_again(config: JournalConfig,
                                                                          registry: CollectorRegistry) -> None:
    """Killed as it starts (by a chaos schedule, the OOM killer): start waits for the one started in its place."""
    writer = _new_writer(config, registry)
    started = writer.start(migrate)
    first = writer._transport.pid
    os.kill(first, signal.SIGKILL)
    try:
        await started
        assert writer._transport.pid != first
        assert await writer.submit(insert("after")) == 1
    finally:
        await writer.stop()
    assert counted(config) == {"after"}


@pytest_twisted.ensureDeferred
async def test_start_gives_up_on_writer_processes_that_keep_dying(config: JournalConfig,
                                                                  registry: CollectorRegistry,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    writer = _new_writer(config, registry)
    spawn = writer._spawn
    killed = []

    def spawn_and_kill() -> None:
        spawn()
        killed.append(writer._transport.pid)
        os.kill(killed[-1], signal.SIGKILL)

    monkeypatch.setattr(writer, "_spawn", spawn_and_kill)
    refused = await failure_of(writer.start(migrate))
    assert isinstance(refused, JournalUnavailable)
    assert "ended before it started" in str(refused)
    assert len(killed) == 3
    await writer.stop()


_PARENT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from prometheus_client import CollectorRegistry
    from twisted.internet import reactor
    from switch.journal.metrics import JournalMetrics
    from switch.journal.process import ProcessWriter, child_environment
    from switch.journal.schema import migrate
    from switch.journal.sqlite import SQLiteBackend

    writer = ProcessWriter(reactor, SQLiteBackend(Path(sys.argv[1])), metrics=JournalMetrics(CollectorRegistry()),
                           max_batch=64, max_queue=100)
    def started(_):
        print(writer._transport.pid, flush=True)
    reactor.callWhenRunning(lambda: writer.start(migrate).addCallback(started))
    reactor.run()
""")


def test_the_writer_process_ends_when_the_switch_is_killed(tmp_path: Path) -> None:
    """A switch killed outright closes the pipe the writer process reads; it ends rather than linger
    holding the journal's database."""
    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")]))}
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path / "journal.sqlite3")], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _running(child)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 20
        while _running(child):
            assert time.monotonic() < deadline, "the writer process outlived the switch"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait(timeout=10)


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent that is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest_twisted.ensureDeferred
async def test_a_journal_on_a_writer_process_records_a_payment(config: JournalConfig,
                                                               registry: CollectorRegistry) -> None:
    """The journal's own writes (units of `switch.journal.units`) run in the process unchanged."""
    journal = await open_journal(dataclasses.replace(config, writer="process"), reactor, registry=registry)
    try:
        assert isinstance(journal._writer, ProcessWriter)
        txn = await journal.create_transaction(NewTransaction(
            kind=Kind.SALE, merchant_id="m1", connector="bank_a", amount=1250, currency="EUR", order_id="o-1",
            stan="000123", transmission_datetime="1123113400"))
        moved = await journal.transition(txn.txn_id, expected_from=(Status.PENDING,), to=Status.APPROVED,
                                         response_code="00", auth_code="A1B2C3")
        assert (moved.status, moved.version, moved.auth_code) == (Status.APPROVED, 2, "A1B2C3")
        assert (await journal.get_transaction(txn.txn_id)).status is Status.APPROVED
    finally:
        await journal.close()


def test_the_writer_process_runs_the_switchs_own_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bin/kswitch`` puts its checkout on ``sys.path``; the child inherits only the environment."""
    import switch

    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    path = child_environment()["PYTHONPATH"].split(os.pathsep)
    assert path == [str(Path(switch.__file__).resolve().parent.parent), "/elsewhere"]
