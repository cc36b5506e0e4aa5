"""What opening a PostgreSQL writer does to the process, beyond its connection."""

from __future__ import annotations

import sys
import uuid

import psycopg

from switch.journal.postgres import WRITER_SWITCH_INTERVAL, PostgresBackend
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
