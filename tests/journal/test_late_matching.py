"""Which transaction a late bank answer belongs to (`switch.engine.late.match_late`), on SQLite and PostgreSQL."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted

from switch.engine.late import match_late
from switch.journal import CardData, Kind, NewTransaction
from tests.journal.conftest import sample

BANK = SimpleNamespace(name="bank_a")


async def sent(journal: Any, merchant: str, stan: str, when: str, rrn: str, amount: int, terminal: str) -> str:
    request = {"t": "0200", "4": f"{amount:012d}", "7": when, "11": stan, "37": rrn, "41": terminal}
    txn = await journal.create_transaction(
        NewTransaction(kind=Kind.SALE, merchant_id=merchant, connector="bank_a", amount=amount, currency="USD",
                       card=CardData("4111111111111111", "3012"), stan=stan, transmission_datetime=when, rrn=rrn),
        request=("0200", request),
    )
    return txn.txn_id


def answer(**fields: str) -> dict[str, str]:
    base = {"t": "0210", "4": "000000001250", "7": "1129101500", "11": "000042", "37": "633300000017",
            "41": "WEB00001", "39": "00"}
    return {k: v for k, v in {**base, **fields}.items() if v is not None}


@pytest.fixture
def unknown(registry):
    return lambda: sample(registry, "kswitch_late_answers_total", connector="bank_a", outcome="unknown")


@pytest_twisted.ensureDeferred
async def test_the_answer_lands_on_the_one_transaction_it_identifies(journal, registry, unknown):
    earlier = await sent(journal, "M200", "000042", "1129094200", "633300000003", 990, "WEB00002")  # STAN wrapped
    mine = await sent(journal, "M100", "000042", "1129101500", "633300000017", 1250, "WEB00001")
    assert (await match_late(journal, BANK, answer())).txn_id == mine
    assert (await match_late(journal, BANK, answer(**{"4": "000000000990", "7": "1129094200", "37": "633300000003",
                                                        "41": "WEB00002"}))).txn_id == earlier
    assert sample(registry, "kswitch_late_answers_total", connector="bank_a", outcome="matched") == 2
    assert unknown() == 0


@pytest.mark.parametrize("changed", [
    {"4": "000000009999"},  # another amount
    {"41": "WEB00009"},  # another terminal
    {"7": "1129101501"},  # another transmission time
    {"37": "633300000018"},  # another RRN
    {"7": None, "37": None},  # nothing but the STAN to go on
    {"t": "0430"},  # an answer to another kind of request
])
@pytest_twisted.ensureDeferred
async def test_an_answer_that_disagrees_on_any_identifying_field_is_unknown(journal, unknown, changed):
    await sent(journal, "M100", "000042", "1129101500", "633300000017", 1250, "WEB00001")
    assert await match_late(journal, BANK, answer(**changed)) is None
    assert unknown() == 1


@pytest_twisted.ensureDeferred
async def test_an_answer_without_an_rrn_still_matches_on_its_transmission_time(journal):
    mine = await sent(journal, "M100", "000042", "1129101500", "633300000017", 1250, "WEB00001")
    assert (await match_late(journal, BANK, answer(**{"37": None}))).txn_id == mine
