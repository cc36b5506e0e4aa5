"""Rows queued for the end of a batch (`Db.insert_later`) arrive exactly as written, on both backends.

PostgreSQL sends them by COPY, whose text format escapes tabs, newlines and backslashes itself: a
value that went through it wrongly would come back changed, or shifted into the next column."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted

from switch.journal import Journal
from switch.journal.db import Db
from switch.journal.store import append_message, record_transition
from switch.journal.units import Call
from tests.journal.conftest import raw_connect
from tests.journal.test_journal import sale

AWKWARD = ["tab\there", "line\nbreak\r\n", "back\\slash \\N \\.", "quote ' \" ;", "é ü 日本 \u2028", "", " lead"]


def awkward_rows(db: Db, txn_id: str) -> None:
    for i, text in enumerate(AWKWARD):
        record_transition(db, txn_id, None if i % 2 else "pending", "approved", 1000 + i, text,
                          {"note": text} if text else {})
        append_message(db, {"txn_id": txn_id, "direction": "in", "connector": text or "bank", "mti": "0210",
                            "stan": None, "response_code": None, "fields": text, "at": 2000 + i})


@pytest_twisted.ensureDeferred
async def test_queued_rows_keep_every_character_and_null(journal: Journal, config: Any) -> None:
    txn = await journal.create_transaction(sale())
    await journal._writer.submit(Call(awkward_rows, txn.txn_id))
    observer = raw_connect(config)
    try:
        mine = f"txn_id = '{txn.txn_id}'"  # an id the journal made: no quoting to get wrong
        transitions = observer.execute(
            f"SELECT from_status, reason, changes, at FROM transitions WHERE {mine} AND at < 2000 ORDER BY at").fetchall()
        messages = observer.execute(
            f"SELECT connector, stan, fields, at FROM messages WHERE {mine} AND at < 3000 ORDER BY at").fetchall()
    finally:
        observer.close()
    assert [(row[0], row[1], json.loads(row[2]), row[3]) for row in transitions] == [
        (None if i % 2 else "pending", text, {"note": text} if text else {}, 1000 + i) for i, text in enumerate(AWKWARD)]
    assert [tuple(row) for row in messages] == [(text or "bank", None, text, 2000 + i) for i, text in enumerate(AWKWARD)]
