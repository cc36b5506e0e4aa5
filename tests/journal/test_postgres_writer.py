"""What opening a PostgreSQL writer does to the process, beyond its connection."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import tomllib
import uuid

import psycopg
import pytest

from switch.journal.batch import Committer
from switch.journal.config import PG_BATCH_DEADLINE
from switch.journal.db import Db
from switch.journal.errors import CommitOutcomeUnknown
from switch.journal.journal import backend_for
from switch.journal.postgres import CONNECTION_DEFAULTS, WRITER_SWITCH_INTERVAL, PostgresBackend
from switch.ops.config import DEFAULT_CONFIG, from_document
from tests.journal.conftest import PG_DSN, require_postgres


def test_a_postgres_writer_gets_the_gil_back_within_its_switch_interval() -> None:
    """The writer waits on the server for every statement; the reactor must hand the GIL back soon
    after each answer, not after Python's default 5 ms."""
    require_postgres()
    schema = f"kswitch_test_{uuid.uuid4().hex[:16]}"
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    try:
        PostgresBackend(PG_DSN, schema).open_writer().close()
        assert sys.getswitchinterval() <= WRITER_SWITCH_INTERVAL < 0.005
    finally:
        sys.setswitchinterval(before)
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_journal_connections_give_up_on_a_silent_server_unless_the_dsn_says_otherwise() -> None:
    """Keepalives and a TCP user timeout bound how long a vanished server can hold a batch, and the server's
    keepalives how long a vanished switch's session holds its locks; a DSN's own values win."""
    require_postgres()
    schema = f"kswitch_test_{uuid.uuid4().hex[:16]}"
    separator = "&" if "?" in PG_DSN else "?"
    try:
        writer = PostgresBackend(PG_DSN, schema).open_writer()
        reader = PostgresBackend(f"{PG_DSN}{separator}keepalives_idle=30&options=-c%20tcp_keepalives_idle%3D20",
                                 schema).open_reader()
        try:
            for db in (writer, reader):
                given = db.conn.info.get_parameters()
                assert {key: given.get(key) for key in ("tcp_user_timeout", "keepalives", "connect_timeout")} == {
                    "tcp_user_timeout": CONNECTION_DEFAULTS["tcp_user_timeout"], "keepalives": "1",
                    "connect_timeout": CONNECTION_DEFAULTS["connect_timeout"]}
            assert writer.conn.info.get_parameters()["keepalives_idle"] == CONNECTION_DEFAULTS["keepalives_idle"]
            assert reader.conn.info.get_parameters()["keepalives_idle"] == "30"
            server = [(db.one("SHOW tcp_keepalives_idle")["tcp_keepalives_idle"],
                       db.one("SHOW tcp_keepalives_count")["tcp_keepalives_count"]) for db in (writer, reader)]
            assert server == [("10", "3"), ("20", "3")], "the server probes a silent client too; the DSN's options win"
        finally:
            writer.close()
            reader.close()
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def stoppable_writer():
    """A committer on a PostgreSQL schema of its own whose batches may take half a second, a table ``t`` in it,
    and a way to stop (SIGSTOP) its server backend: a server whose host still acknowledges while the server does
    not answer. Whatever was stopped is resumed afterwards."""
    require_postgres()
    schema = f"kswitch_test_{uuid.uuid4().hex[:16]}"
    backend = PostgresBackend(PG_DSN, schema, batch_deadline=0.5)
    committer = Committer(backend.open_writer, backend.name, {})
    committer.open()
    assert committer.commit([lambda db: db.execute("CREATE TABLE t (n INTEGER)")])[1]
    stopped: list[int] = []

    def stop() -> int:
        assert committer.db is not None
        row = committer.db.one("SELECT pg_backend_pid() AS pid")
        assert row is not None
        try:
            os.kill(row["pid"], signal.SIGSTOP)
        except PermissionError:
            pytest.skip("stopping PostgreSQL's backend needs its user or root")
        stopped.append(row["pid"])
        return int(row["pid"])

    yield committer, stop, schema
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):  # resumed by the test, and gone
            os.kill(pid, signal.SIGCONT)
    committer.close()
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def commit_in_time(committer: Committer, units: list) -> tuple[list, bool]:
    """``committer.commit(units)`` on a thread, which must end well within the test's own timeout."""
    done: list[tuple[list, bool]] = []
    thread = threading.Thread(target=lambda: done.append(committer.commit(units)), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert done, "the batch was not given up: it waits on the stopped server"
    return done[0]


def rows_of(schema: str) -> list[int]:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        return [n for (n,) in conn.execute(f'SELECT n FROM "{schema}".t ORDER BY n')]


def backend_alive(pid: int) -> bool:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (1,)


def test_a_batch_its_server_holds_past_the_deadline_runs_again_on_a_new_connection(stoppable_writer) -> None:
    """The server's host acknowledges but the server does not answer: the batch is given up at its deadline
    and, nothing of it committed, runs once more on a connection of its own; the stopped backend's
    transaction ends uncommitted when it resumes."""
    committer, stop, schema = stoppable_writer
    first = committer.db
    pid = stop()
    outcomes, committed = commit_in_time(committer, [lambda db: db.execute("INSERT INTO t VALUES (1)")])
    assert committed and outcomes == [(True, 1)]
    assert committer.db is not first and not committer.db.broken
    os.kill(pid, signal.SIGCONT)
    for _ in range(100):  # the resumed backend reads the end of its connection and goes
        if not backend_alive(pid):
            break
        time.sleep(0.05)
    assert not backend_alive(pid)
    assert rows_of(schema) == [1], "written once: by the batch's second run, not by the stopped backend"


def test_a_commit_its_server_holds_past_the_deadline_is_unknown_and_not_run_again(stoppable_writer, monkeypatch) -> None:
    """Given up during COMMIT, the batch may have committed: its writes are answered `CommitOutcomeUnknown`
    (resolved as after a writer process's death), never run again. Here the COMMIT had reached the stopped
    backend, which commits it once resumed: why the outcome is unknown, not failed."""
    committer, stop, schema = stoppable_writer
    committing = Db.commit
    pids: list[int] = []

    def stopped_first(db: Db) -> None:
        pids.append(stop())
        committing(db)

    monkeypatch.setattr(Db, "commit", stopped_first)
    outcomes, committed = commit_in_time(committer, [lambda db: db.execute("INSERT INTO t VALUES (2)")])
    assert not committed and committer.db is None
    [(ok, failure)] = outcomes
    assert not ok and failure.check(CommitOutcomeUnknown)
    assert pids and rows_of(schema) == [], "not committed while the backend is stopped"
    os.kill(pids[0], signal.SIGCONT)
    for _ in range(100):
        if not backend_alive(pids[0]):
            break
        time.sleep(0.05)
    assert rows_of(schema) == [2]


def test_the_batch_deadline_is_the_configs() -> None:
    """``[journal] postgres_batch_deadline`` reaches the writer's dialect; 30 s when left out; none on SQLite."""
    def deadline(journal: dict) -> object:
        doc = tomllib.loads(DEFAULT_CONFIG.read_text())
        doc["journal"] = {**doc["journal"], **journal}
        return backend_for(from_document(DEFAULT_CONFIG, doc).journal).dialect.batch_deadline

    assert deadline({"backend": "postgresql", "postgres_batch_deadline": 2.5}) == 2.5
    assert deadline({"backend": "postgresql"}) == PG_BATCH_DEADLINE == 30.0
    assert deadline({}) is None
