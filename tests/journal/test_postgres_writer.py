"""What opening a PostgreSQL writer does to the process, beyond its connection."""

from __future__ import annotations

import sys
import uuid

import psycopg

from switch.journal.postgres import CONNECTION_DEFAULTS, WRITER_SWITCH_INTERVAL, PostgresBackend
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
