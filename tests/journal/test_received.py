"""A bank's answer journalled in the commit of the outcome it decides (`Journal.transition(received=...)`),
on both backends: one writer unit, never an outcome without its answer, and the answer kept even when
the transition is refused or the outcome is journalled without it."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from structlog.testing import capture_logs

from switch.journal import Direction, Journal, Received, Status, TransitionRefused
from tests.journal.conftest import raw_connect, sample
from tests.journal.test_journal import VISA, failure_of, sale

ANSWER = {"t": "0210", "11": "000123", "38": "A1B2C3", "39": "00"}


def _answers_of(config: Any, txn_id: str) -> list[tuple[str, str, str | None]]:
    """The inbound rows as committed, read outside the journal."""
    conn = raw_connect(config)
    try:
        mark = "%s" if config.backend == "postgresql" else "?"
        rows = conn.execute(f"SELECT direction, mti, response_code FROM messages WHERE txn_id = {mark} "
                            "ORDER BY message_id", (txn_id,)).fetchall()
    finally:
        conn.close()
    return [tuple(row) for row in rows]


@pytest_twisted.ensureDeferred
async def test_the_answer_commits_with_the_outcome_as_one_write(journal: Journal, config: Any, registry: Any,
                                                                 backend: str) -> None:
    txn = await journal.create_transaction(sale())
    writes = sample(registry, "kswitch_journal_writes_total", backend=backend, outcome="committed")
    moved = await journal.transition(txn.txn_id, expected_from=(Status.PENDING,), to=Status.APPROVED,
                                     received=Received("bank_a", "0210", ANSWER), auth_code="A1B2C3",
                                     response_code="00", amount_authorized=1250)
    assert moved.status is Status.APPROVED
    assert sample(registry, "kswitch_journal_writes_total", backend=backend, outcome="committed") == writes + 1
    assert _answers_of(config, txn.txn_id) == [("in", "0210", "00")]
    [message] = await journal.messages(txn.txn_id)
    assert (message.direction, message.stan, message.fields["38"]) == (Direction.IN, "000123", "A1B2C3")


@pytest_twisted.ensureDeferred
async def test_a_refused_transition_still_journals_its_answer_on_its_own(journal: Journal, config: Any) -> None:
    txn = await journal.create_transaction(sale())
    await journal.transition(txn.txn_id, expected_from=(Status.PENDING,), to=Status.TIMEOUT, reason="issuer_timeout")
    late = journal.transition(txn.txn_id, expected_from=(Status.PENDING,), to=Status.APPROVED,
                              received=Received("bank_a", "0210", ANSWER))
    assert isinstance(await failure_of(late), TransitionRefused)
    await journal.transition(txn.txn_id, expected_from=(Status.TIMEOUT,), to=Status.REVERSAL_PENDING)  # a later write
    assert _answers_of(config, txn.txn_id) == [("in", "0210", "00")]
    assert (await journal.get_transaction(txn.txn_id)).status is Status.REVERSAL_PENDING


@pytest_twisted.ensureDeferred
async def test_an_answer_the_guard_refuses_does_not_stop_the_outcome(journal: Journal, config: Any) -> None:
    txn = await journal.create_transaction(sale())
    unmasked = {**ANSWER, "2": VISA}  # a caller that forgot to mask: the guard refuses the row, not the outcome
    with capture_logs() as logs:
        moved = await journal.transition(txn.txn_id, expected_from=(Status.PENDING,), to=Status.DECLINED,
                                         received=Received("bank_a", "0210", unmasked), response_code="05")
    assert moved.status is Status.DECLINED
    assert _answers_of(config, txn.txn_id) == []
    [logged] = [entry for entry in logs if entry["event"] == "response_not_journalled"]
    assert logged["txn_id"] == txn.txn_id and VISA not in str(logged)
