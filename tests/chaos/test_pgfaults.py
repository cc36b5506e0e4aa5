"""The chaos test's PostgreSQL fault ends the switch's journal connections and no one else's."""

from __future__ import annotations

import os

import pytest

from tests.chaos.pgfaults import WRITER, terminate_backends
from tests.chaos.scenario import PG_DSN
from tests.journal.conftest import require_postgres


def test_only_the_given_processes_writer_connections_are_ended() -> None:
    require_postgres()
    import psycopg

    writer = psycopg.connect(PG_DSN, autocommit=True, application_name=WRITER, connect_timeout=5)
    reader = psycopg.connect(PG_DSN, autocommit=True, application_name="kswitch-journal-reader", connect_timeout=5)
    try:
        assert terminate_backends(PG_DSN, [os.getppid()], writer_only=False) == 0, "another process's ports"
        assert terminate_backends(PG_DSN, [os.getpid()], writer_only=True) == 1
        with pytest.raises(psycopg.OperationalError):
            writer.execute("SELECT 1")
        assert reader.execute("SELECT 1").fetchone() == (1,), "a reader's connection is kept"
        assert terminate_backends(PG_DSN, [os.getpid()], writer_only=False) == 1
        with pytest.raises(psycopg.OperationalError):
            reader.execute("SELECT 1")
    finally:
        writer.close()
        reader.close()
