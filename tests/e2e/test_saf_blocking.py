"""Store-and-forward through real sockets: an item that can never be sent, queued first for a bank,
does not hold up the reversal of another payment to that bank (issue 8: thousands of reversals
stuck behind one unbuildable item)."""

from __future__ import annotations

import pytest_twisted

from switch.journal import CardData, Kind, NewTransaction, SafDraft, SafKind, SafState, Status
from tests.e2e.harness import authorize, eventually

VISA = "4111111111111111"


@pytest_twisted.ensureDeferred
async def test_an_unbuildable_item_first_in_line_does_not_block_a_later_reversal(fast):
    journal = fast.journal
    stuck = await journal.create_transaction(NewTransaction(
        kind=Kind.CAPTURE, merchant_id="M100", connector="bank_a", amount=700, currency="USD",
        order_id="stuck-1", card=CardData(VISA, "3012"), stan="000001",
    ))
    await journal.transition(stuck.txn_id, expected_from=(Status.PENDING,), to=Status.TIMEOUT)
    broken = await journal.saf_enqueue(stuck.txn_id, SafDraft(
        connector="bank_a", kind=SafKind.REVERSAL, mti="0400", fields={"t": "0220", "3": "000000"},
        max_attempts=1000,  # it stays queued for the whole test: only its own payment may wait for it
    ))

    bank = fast.sims["bank_a"]
    before = bank.balance(VISA)
    bank.set_faults(drop_ratio=1.0)
    c = await fast.connect()
    sale = await c.call(authorize(1))
    assert sale["status"] == "timeout" and bank.balance(VISA) == before - 1250
    bank.set_faults(drop_ratio=0.0)

    async def reversed_() -> bool:
        return (await journal.get_transaction(sale["txn_id"])).status is Status.REVERSED

    await eventually(reversed_)
    assert bank.balance(VISA) == before
    item = await journal.saf_get(broken.saf_id)
    assert item.state is SafState.QUEUED and item.attempts >= 1
    assert item.last_error == "not sent: KeyError: '11'"
    assert [m.mti for m in await journal.messages(stuck.txn_id)] == []  # nothing of it reached the bank
