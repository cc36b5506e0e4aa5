"""Fixtures running the journal tests against SQLite and PostgreSQL.

PostgreSQL comes from KSWITCH_PG_DSN (default postgresql://postgres@127.0.0.1:5432/test).
When it is not reachable its tests skip, unless KSWITCH_REQUIRE_POSTGRES=1, when
they fail. Each PostgreSQL test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import base64
import functools
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor

from switch.journal import Journal, JournalConfig, SecretSource, generate_key, open_journal

PG_DSN = os.environ.get("KSWITCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")


@functools.cache
def postgres_problem() -> str | None:
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


def require_postgres() -> None:
    problem = postgres_problem()
    if problem is None:
        return
    info = psycopg.conninfo.conninfo_to_dict(PG_DSN)
    where = f"{info.get('host', 'localhost')}:{info.get('port', 5432)}"
    reason = f"PostgreSQL not reachable at {where} ({problem}); set KSWITCH_PG_DSN or start it"
    if os.environ.get("KSWITCH_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason} [KSWITCH_REQUIRE_POSTGRES=1 makes this a failure]")
    pytest.skip(reason)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        require_postgres()
    return str(request.param)


@pytest.fixture
def pg_schema(backend: str) -> Iterator[str]:
    name = f"kswitch_test_{uuid.uuid4().hex[:16]}"
    yield name
    if backend == "postgresql":
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@dataclass
class KeyFiles:
    ring: Path
    hash_secret: Path

    def write_ring(self, *entries: tuple[str, str]) -> None:
        self.ring.write_text("\n".join(f"{key_id}:{key}" for key_id, key in entries) + "\n")
        self.ring.chmod(0o600)


@pytest.fixture
def key_files(tmp_path: Path) -> KeyFiles:
    files = KeyFiles(ring=tmp_path / "pan-keys", hash_secret=tmp_path / "pan-hash-secret")
    files.write_ring(("k1", generate_key()))
    files.hash_secret.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    files.hash_secret.chmod(0o600)
    return files


@pytest.fixture
def config(backend: str, tmp_path: Path, key_files: KeyFiles, pg_schema: str) -> JournalConfig:
    return JournalConfig(
        backend=backend,  # type: ignore[arg-type]
        sqlite_path=tmp_path / "state" / "journal.sqlite3",
        pg_dsn=PG_DSN,
        pg_schema=pg_schema,
        pan_keys=SecretSource(file=key_files.ring),
        pan_hash_secret=SecretSource(file=key_files.hash_secret),
        reader_threads=2,
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


class Clock:
    """Wall-clock time that a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_twisted.async_yield_fixture
async def journal(config: JournalConfig, registry: CollectorRegistry, clock: Clock) -> Any:
    opened: Journal = await open_journal(config, reactor, registry=registry, clock=clock)
    yield opened
    await opened.close()


def raw_connect(config: JournalConfig) -> Any:
    """A connection of the test's own, outside the journal, to see what is really committed."""
    if config.backend == "postgresql":
        conn = psycopg.connect(config.pg_dsn, autocommit=True)
        conn.execute(f'SET search_path TO "{config.pg_schema}"')
        return conn
    return sqlite3.connect(config.sqlite_path)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return value or 0.0
