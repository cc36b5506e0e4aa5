"""After a realistic run of writes, no full PAN, track data or CVV is anywhere in the database.

SQLite: every byte of every file in the state directory (database and WAL).
PostgreSQL: every text and bytea value of every table in the test's schema.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest_twisted

from switch.domain.cardcheck import luhn_valid
from switch.iso.masking import mask_message
from switch.journal import (
    CardData,
    CardDataRefused,
    Direction,
    EventDraft,
    Journal,
    JournalConfig,
    Kind,
    NewTransaction,
    SafDraft,
    SafKind,
    Status,
)
from tests.journal.conftest import PG_DSN

PANS = ("4111111111111111", "5555555555554444", "378282246310005")
CVV = "7319"
TRACK2 = f"{PANS[0]}=27121010000000000000"
_DIGIT_RUN = re.compile(rb"(?<![0-9])[0-9]{13,19}(?![0-9])")
_CVV_KEY = re.compile(rb"""cvv2?["']?\s*[:=]""")
"""CVV as a key, not the letters alone: a random base32 transaction id can contain "CVV"."""


def assert_clean(blob: bytes, where: str) -> None:
    for pan in PANS:
        assert pan.encode() not in blob, f"full PAN found in {where}"
    pan_like = [m.group() for m in _DIGIT_RUN.finditer(blob) if luhn_valid(m.group().decode())]
    assert not pan_like, f"Luhn-valid 13-19 digit run found in {where}"
    assert not _CVV_KEY.search(blob.lower()), f"a CVV key found in {where}"
    assert f'"{CVV}"'.encode() not in blob, f"CVV found in {where}"
    assert b"=2712101" not in blob, f"track data found in {where}"


async def write_everything(journal: Journal) -> None:
    """The writes a day of traffic makes, plus attempts to store what must never be stored."""
    visa, mastercard, amex = (CardData(pan, "2712") for pan in PANS)
    sale = await journal.create_transaction(
        NewTransaction(
            kind=Kind.SALE, merchant_id="m1", connector="bank_a", amount=1999, currency="EUR", order_id="o-1",
            card=visa, retain_card=True, stan="000001", transmission_datetime="1123120000",
            idempotency_key="idem-1", request_hash=b"\x07" * 32,
        ),
        event=EventDraft("payment.created", {"masked_pan": visa.masked}),
    )  # fmt: skip
    request = {"2": PANS[0], "3": "000000", "4": "000000001999", "11": "000001", "14": "2712", "35": TRACK2, "52": "A1B2C3D4E5F60718"}
    await journal.append_message(
        txn_id=sale.txn_id, direction=Direction.OUT, connector="bank_a", mti="0200", fields=mask_message(request)
    )
    await journal.append_message(
        txn_id=sale.txn_id, direction=Direction.IN, connector="bank_a", mti="0210", fields={"11": "000001", "39": "00"}
    )
    await journal.transition(
        sale.txn_id, expected_from={Status.PENDING}, to=Status.APPROVED, response_code="00", auth_code="OK1234",
        rrn="000000000001", amount_authorized=1999, amount_captured=1999, sent_at=datetime.now(timezone.utc),
        event=EventDraft("payment.completed", {"txn_id": sale.txn_id}),
    )  # fmt: skip

    auth = await journal.create_transaction(
        NewTransaction(kind=Kind.AUTHORIZATION, merchant_id="m1", connector="bank_b", amount=500, currency="USD",
                       card=mastercard, retain_card=True, stan="000002")
    )  # fmt: skip
    await journal.transition(
        auth.txn_id, expected_from={Status.PENDING}, to=Status.REVERSAL_PENDING, reason="no answer in 30 s",
        saf=SafDraft(connector="bank_b", kind=SafKind.REVERSAL, mti="0400", fields={"11": "000003", "4": "000000000500"},
                     card=mastercard, max_attempts=2),
    )  # fmt: skip
    head = await journal.saf_head("bank_b")
    due = datetime.now(timezone.utc) + timedelta(seconds=30)
    await journal.saf_record_attempt(head.saf_id, next_due_at=due, response_code="91")
    await journal.saf_record_attempt(head.saf_id, next_due_at=due, error="link down")

    declined = await journal.create_transaction(
        NewTransaction(kind=Kind.SALE, merchant_id="m2", connector="bank_a", amount=100, currency="GBP", card=amex,
                       retain_card=True)
    )  # fmt: skip
    await journal.transition(declined.txn_id, expected_from={Status.PENDING}, to=Status.DECLINED, forget_card=True)

    refused = [
        journal.append_message(txn_id=sale.txn_id, direction=Direction.OUT, connector="bank_a", mti="0200", fields=bad)
        for bad in ({"2": PANS[1]}, {"cvv2": CVV}, {"CVC": CVV}, {"35": TRACK2}, {"48": f"data {PANS[2]}"})
    ]
    refused.append(journal.append_event("m1", EventDraft("payment.note", {"security_code": CVV})))
    for attempt in refused:
        try:
            await attempt
        except CardDataRefused:
            continue
        raise AssertionError("a write carrying card data was accepted")


def scan_sqlite(state_dir: Path) -> None:
    files = [path for path in state_dir.iterdir() if path.is_file()]
    assert files
    for path in files:
        assert_clean(path.read_bytes(), str(path))


def scan_postgres(config: JournalConfig) -> int:
    values = 0
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (config.pg_schema,)
            )
        ]
        assert {"transactions", "messages", "saf_queue", "events", "transitions"} <= set(tables)
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{config.pg_schema}"."{table}"'):
                for value in row:
                    if isinstance(value, str):
                        assert_clean(value.encode(), f"{table} (text)")
                    elif isinstance(value, (bytes, memoryview)):
                        assert_clean(bytes(value), f"{table} (bytea)")
                    values += 1
    return values


@pytest_twisted.ensureDeferred
async def test_no_card_data_at_rest(journal: Journal, config: JournalConfig, backend: str) -> None:
    await write_everything(journal)
    if backend == "sqlite":
        scan_sqlite(config.sqlite_path.parent)
        await journal.close()
        scan_sqlite(config.sqlite_path.parent)
    else:
        assert scan_postgres(config) > 100


def test_the_scan_would_notice() -> None:
    """The scanner itself finds planted card data, so a clean result means something."""
    assert all(luhn_valid(pan) for pan in PANS)
    for planted in (PANS[2].encode(), f'{{"cvv2":"{CVV}"}}'.encode(), TRACK2.encode()[16:], b"x6011000990139424y"):
        try:
            assert_clean(b"\x00prefix " + planted + b" suffix", "planted")
        except AssertionError:
            continue
        raise AssertionError(f"scanner missed {planted!r}")
