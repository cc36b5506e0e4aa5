"""A payment left pending at run time (its owner lost, e.g. a failed journal write after the bank
answered) is given an owner by the sweeper: reversed, not left in "processing" forever."""

from __future__ import annotations

from datetime import timedelta

import pytest_twisted
from twisted.internet import reactor

from switch.domain.carddata import CardData
from switch.domain.status import Kind, Status
from switch.engine.recovery import sweep_stale_pending
from switch.journal.ids import new_txn_id
from switch.journal.models import NewTransaction, SafState, utc_from_seconds
from tests.e2e.harness import eventually

VISA = "4111111111111111"


@pytest_twisted.ensureDeferred
async def test_stale_pending_payment_is_reversed_by_the_sweeper(env):
    journal, bank = env.journal, env.switch.banks["bank_a"]
    stan = bank.reserve_stan()
    txn_id = new_txn_id()
    request = {"t": "0200", "2": "411111******1111", "3": "000000", "4": "000000001250", "7": "1123120000",
               "11": stan, "12": "120000", "13": "1123", "14": "[4 masked]", "32": "400001", "37": "632700000001",
               "41": "WEB00001", "42": "000000000100001", "49": "840"}
    await journal.create_transaction(
        NewTransaction(txn_id=txn_id, kind=Kind.SALE, merchant_id="M100", store_id="web", order_id="lost-1",
                       connector="bank_a", amount=1250, currency="USD", card=CardData(VISA, "3012"),
                       retain_card=True, stan=stan, transmission_datetime="1123120000"),
        request=("0200", request),
    )
    now = utc_from_seconds(reactor.seconds())
    assert await sweep_stale_pending(journal, env.switch.banks, env.switch.saf, env.registry,
                                     now, timedelta(seconds=60)) == 0  # young: its owner may still be working
    swept = await sweep_stale_pending(journal, env.switch.banks, env.switch.saf, env.registry,
                                      now + timedelta(hours=1), timedelta(seconds=60))
    assert swept == 1

    async def reversed_() -> bool:
        return (await journal.get_transaction(txn_id)).status is Status.REVERSED

    await eventually(reversed_)
    assert await journal.saf_list(states=(SafState.QUEUED,)) == []
    assert env.sims["bank_a"].received["0420"] + env.sims["bank_a"].received["0400"] >= 1
