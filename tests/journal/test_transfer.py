"""Copying a journal between SQLite and PostgreSQL, both ways."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_twisted
from twisted.internet import reactor

from switch.journal import EventDraft, Journal, JournalConfig, SafState, open_journal
from switch.journal.transfer import CopyRefused, copy_journal
from tests.journal.conftest import PG_DSN, require_postgres
from tests.journal.test_no_card_data import write_everything
from tests.journal.test_risk_row import counted, pay


@pytest.fixture
def both(config: JournalConfig, tmp_path: Path) -> Iterator[tuple[JournalConfig, JournalConfig]]:
    """The SQLite and the PostgreSQL flavour of the test's configuration."""
    require_postgres()
    schema = f"kswitch_test_{uuid.uuid4().hex[:16]}"
    sqlite = dataclasses.replace(config, backend="sqlite", sqlite_path=tmp_path / "copy" / "journal.sqlite3")
    postgres = dataclasses.replace(config, backend="postgresql", pg_schema=schema)
    yield sqlite, postgres
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def snapshot(journal: Journal) -> dict[str, Any]:
    in_flight = await journal.in_flight()
    txns = {t.txn_id: t for t in in_flight}
    for merchant in ("m1", "m2"):
        for event in await journal.events_after([merchant]):
            if event.txn_id:
                txns[event.txn_id] = await journal.get_transaction(event.txn_id)
    return {
        "transactions": txns,
        "transitions": {txn_id: await journal.transitions(txn_id) for txn_id in txns},
        "messages": {txn_id: await journal.messages(txn_id) for txn_id in txns},
        "saf": await journal.saf_list(states=set(SafState)),
        "events": await journal.events_after(["m1", "m2"]),
        "unacknowledged": await journal.unacknowledged_events("hooks", ["m1", "m2"]),
    }


def _risk_writes(ledger: Any) -> None:
    ledger.decide("t-risk", "block", "big", [{"rule": "big", "action": "block", "mode": "enforce", "seen": {}}])
    window = ledger.windows(["vel:card:x"])["vel:card:x"]
    window.add(10, 1, 700, 0, 2**62)
    ledger.save([window])


def _counter_x(ledger: Any) -> tuple[int, int]:
    return ledger.windows(["vel:card:x"])["vel:card:x"].total(0)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("direction", ["sqlite-to-postgresql", "postgresql-to-sqlite"])
@pytest_twisted.ensureDeferred
async def test_copy_keeps_everything(both: tuple[JournalConfig, JournalConfig], direction: str, registry: Any) -> None:
    source, target = both if direction == "sqlite-to-postgresql" else both[::-1]
    journal = await open_journal(source, reactor, registry=registry)
    try:
        await write_everything(journal)
        first = (await journal.events_after(["m1"]))[0]
        await journal.acknowledge_events("hooks", [first.event_id])
        await journal.reserve_numbers("rrn:bank_a", 100_000)
        await journal.risk_block("ip", "192.0.2.1", "192.0.2.1", "operator alice")
        await journal.risk_unit(_risk_writes, 1.0)
        await pay(journal, "vel:card:screened", order_id="screened")  # on SQLite: counted in the payment's row
        before = await snapshot(journal)
    finally:
        await journal.close()

    report = copy_journal(source, target, batch=2)
    assert report.rows["transactions"] == 4 and report.rows["event_acks"] == 1

    copied = await open_journal(target, reactor, registry=registry)
    try:
        assert await snapshot(copied) == before
        stored = next(t for t in before["transactions"].values() if t.card is not None)
        assert copied.reveal_card(stored.card).pan.startswith(stored.masked_pan[:6])
        assert await copied.reserve_numbers("rrn:bank_a", 1) == 100_000, "RRNs go on where the source stopped"
        assert [(e.kind, e.shown) for e in await copied.risk_blocklist()] == [("ip", "192.0.2.1")]
        assert (await copied.risk_decision("t-risk"))["rule"] == "big"
        assert await copied.risk_unit(_counter_x, 1.0) == (1, 700)
        assert await copied.risk_unit(counted("vel:card:screened"), 1.0) == (1, 10)
        newer = await copied.append_event("m1", EventDraft("payment.completed"))
        assert newer.event_id > max(e.event_id for e in before["events"])
    finally:
        await copied.close()

    with pytest.raises(CopyRefused, match="already holds rows"):
        copy_journal(source, target)
