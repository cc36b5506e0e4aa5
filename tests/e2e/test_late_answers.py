"""A late answer attaches only to the transaction it answers, never to another one that used its STAN."""

from __future__ import annotations

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families

from switch.bank.numbering import STAN_MAX
from switch.domain.carddata import CardData
from switch.domain.status import Kind, Status
from switch.journal.ids import new_txn_id
from switch.journal.models import Direction, NewTransaction
from tests.e2e.harness import authorize, eventually, http_get


async def late_answers(env, outcome: str) -> float:
    _, body = await http_get(env.admin_port, "/metrics")
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == "kswitch_late_answers_total" and s.labels.get("outcome") == outcome:
                return s.value
    return 0.0


@pytest_twisted.ensureDeferred
async def test_late_approval_lands_on_its_own_payment_not_on_another_merchants_with_the_same_stan(fast):
    journal, bank = fast.journal, fast.switch.banks["bank_a"]
    probe = bank.reserve_stan()
    bank.release_stan(probe)
    reused = f"{int(probe) % STAN_MAX + 1:06d}"  # the STAN our payment is about to get
    other = new_txn_id()  # another merchant's payment that went out with that STAN before it wrapped
    await journal.create_transaction(
        NewTransaction(txn_id=other, kind=Kind.SALE, merchant_id="M200", store_id="web", order_id="other-1",
                       connector="bank_a", amount=990, currency="USD", card=CardData("4000000000000002", "3012"),
                       stan=reused, transmission_datetime="0101000000", status=Status.FAILED,
                       reason="issuer_unavailable"),
        request=("0200", {"t": "0200", "4": "000000000990", "7": "0101000000", "11": reused, "41": "WEB00002"}),
    )
    fast.sims["bank_a"].set_faults(delay=1.0)  # answers after the switch gave up
    payer = await fast.connect()
    answer = await payer.call(authorize(1))
    assert answer["status"] == "timeout"
    mine = await journal.get_transaction(answer["txn_id"])
    assert mine.stan == reused, "precondition: our payment reused the other payment's STAN"
    assert mine.rrn is not None and len(mine.rrn) == 12, "the RRN is journalled when the request is sent"

    async def late_on_mine() -> bool:
        return any(m.direction is Direction.IN for m in await journal.messages(mine.txn_id))

    await eventually(late_on_mine)
    fast.sims["bank_a"].set_faults(delay=0.0)
    assert [m.direction for m in await journal.messages(other)] == [Direction.OUT]
    assert [e.type for e in await journal.events_after(["M200"], 0)] == []
    mine_events = [e.type for e in await journal.events_after(["M100"], 0) if e.txn_id == mine.txn_id]
    assert "payment.late_response" in mine_events
    assert await late_answers(fast, "matched") == 1
