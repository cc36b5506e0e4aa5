"""Configuration defaults and validation, opening failures, transaction ids, and the PostgreSQL skip/fail rule."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor

from switch.journal import (
    IN_FLIGHT_STATUSES,
    JournalConfig,
    JournalUnavailable,
    KeyConfigError,
    SecretSource,
    new_txn_id,
    open_journal,
)
from switch.journal.schema import MIGRATIONS
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


@pytest_twisted.ensureDeferred
async def test_an_unreachable_database_fails_the_open_clearly(tmp_path: Path, key_files: conftest.KeyFiles) -> None:
    keys = {"pan_keys": SecretSource(file=key_files.ring), "pan_hash_secret": SecretSource(file=key_files.hash_secret)}
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    for config, message in [
        (JournalConfig(backend="postgresql", pg_dsn="postgresql://postgres@127.0.0.1:1/test", **keys), "cannot connect"),
        (JournalConfig(sqlite_path=blocker / "journal.sqlite3", **keys), "cannot create the journal directory"),
    ]:
        with pytest.raises(JournalUnavailable, match=message):
            await open_journal(config, reactor, registry=CollectorRegistry())


@pytest_twisted.ensureDeferred
async def test_missing_keys_fail_the_open(tmp_path: Path) -> None:
    config = JournalConfig(sqlite_path=tmp_path / "j.sqlite3", pan_keys=SecretSource(env="KSWITCH_TEST_ABSENT"))
    with pytest.raises(KeyConfigError, match="KSWITCH_TEST_ABSENT is not set"):
        await open_journal(config, reactor, registry=CollectorRegistry())
    assert not (tmp_path / "j.sqlite3").exists()


def test_the_in_flight_index_covers_the_in_flight_statuses() -> None:
    statuses = ", ".join(f"'{status}'" for status in sorted(IN_FLIGHT_STATUSES))
    latest = [s for m in MIGRATIONS for s in m.statements if "CREATE INDEX transactions_in_flight" in s][-1]
    assert f"WHERE status IN ({statuses})" in latest


def test_txn_ids_never_look_like_a_card_number(monkeypatch):
    """A 13+ digit Luhn-valid run inside an id would be refused by the journal's PAN guard."""
    from switch.domain.panscan import looks_like_pan
    from switch.journal import ids

    def number(text: str) -> int:
        return int(text.translate(str.maketrans(ids._ALPHABET, "0123456789abcdefghijklmnopqrstuv")), 32)

    texts = ["01M8A4111111111111111BCDEF", "01M847YWW98KWGQ6807FC4XE44"] * 2
    produced = iter([number(text) for text in texts])
    monkeypatch.setattr(ids, "_next_value", lambda: next(produced))
    assert looks_like_pan(texts[0])
    assert ids.new_txn_id() == texts[1]
    assert ids.new_txn() == (texts[1], number(texts[1]))  # the number a payment held keeps, and its text
    assert ids.txn_text(number(texts[1])) == texts[1]


def test_a_forked_child_draws_its_own_id_randomness():
    """Ids come from a pool of random bytes; a child process must not reuse its parent's."""
    import os

    from switch.journal import ids

    ids.new_txn_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, ids.new_txn_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert child != ids.new_txn_id() and child[10:] != ids.new_txn_id()[10:]
