"""Configuration defaults and validation, transaction ids, and the PostgreSQL fixture's skip/fail rule."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from switch.journal import JournalConfig, SecretSource, new_txn_id
from tests.journal import conftest


def test_defaults() -> None:
    config = JournalConfig()
    assert config.backend == "sqlite"
    assert config.sqlite_path == Path("var/journal.sqlite3")
    assert config.pan_keys == SecretSource(env="KSWITCH_PAN_KEYS")
    assert config.pan_hash_secret == SecretSource(env="KSWITCH_PAN_HASH_SECRET")
    assert (config.max_batch, config.max_queue, config.reader_threads) == (256, 10_000, 4)
    assert config.idempotency_ttl == timedelta(hours=24)


@pytest.mark.parametrize(
    "bad",
    [
        {"backend": "mysql"},
        {"pg_schema": "Robert'); DROP TABLE"},
        {"max_batch": 0},
        {"reader_threads": 0},
        {"idempotency_ttl": timedelta(hours=1)},
    ],
)
def test_invalid_settings(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        JournalConfig(**bad)  # type: ignore[arg-type]


def test_txn_ids_sort_by_creation_and_are_unique() -> None:
    ids = [new_txn_id() for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(txn_id) == 26 for txn_id in ids)


def test_unreachable_postgres_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "postgres_problem", lambda: "connection refused")
    monkeypatch.delenv("KSWITCH_REQUIRE_POSTGRES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL not reachable at .*; set KSWITCH_PG_DSN or start it"):
        conftest.require_postgres()
    monkeypatch.setenv("KSWITCH_REQUIRE_POSTGRES", "1")
    with pytest.raises(pytest.fail.Exception, match="KSWITCH_REQUIRE_POSTGRES=1"):
        conftest.require_postgres()
