"""One kswitch per journal: a second process on the same journal is refused at start-up."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.e2e import harness
from tests.e2e.harness import authorize, start_env, stop_env
from tests.journal.conftest import PG_DSN, require_postgres

KSWITCH = Path(__file__).resolve().parents[2] / "bin" / "kswitch"


def run_second(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(KSWITCH), "run", "--config", str(config)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_toml(request, monkeypatch):
    """The e2e config with its journal on SQLite (default) or on a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield
        return
    require_postgres()
    schema = f"kswitch_test_{uuid.uuid4().hex[:16]}"
    plain = harness.config_text

    def on_postgres(*args, **kwargs):
        return plain(*args, **kwargs).replace(
            "[journal]\n", f'[journal]\nbackend = "postgresql"\npostgres_dsn = "{PG_DSN}"\npostgres_schema = "{schema}"\n'
        )

    monkeypatch.setattr(harness, "config_text", on_postgres)
    yield
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_a_second_kswitch_on_the_same_journal_is_refused_in_one_line(tmp_path, journal_toml):
    env = await start_env(tmp_path)
    try:
        second = await deferToThread(run_second, tmp_path / "kswitch.toml")
        assert second.returncode != 0
        (line,) = [t for t in second.stderr.splitlines() if t.startswith("kswitch: ")]  # the rest are JSON logs
        assert line.startswith("kswitch: cannot start: the journal is in use by kswitch node ")
        assert env.switch.lease is not None and env.switch.lease.me.owner in line
        assert f"pid {env.switch.lease.me.pid}" in line
        payer = await env.connect()
        assert (await payer.call(authorize(1)))["status"] == "approved", "the first switch still serves"
    finally:
        await stop_env(env)
