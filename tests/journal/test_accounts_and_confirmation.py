"""Bank accounts and wallets in the journal (sealed like a PAN), and the awaiting-customer status."""

from __future__ import annotations

from contextlib import closing

import pytest
import pytest_twisted

from switch.domain.carddata import AccountData
from switch.domain.errors import InvalidValue
from switch.domain.status import IN_FLIGHT_STATUSES
from switch.journal import Journal, JournalConfig, Kind, NewTransaction, SafDraft, SafKind, Status
from switch.journal.journal import backend_for
from switch.journal.models import utc_from_seconds
from switch.journal.schema import MIGRATIONS, migrate
from tests.journal.conftest import Clock

ACCOUNT = "000123456789"


def test_account_data_masks_to_last_four_and_refuses_bad_values() -> None:
    assert AccountData(ACCOUNT).masked == "********6789"
    assert ACCOUNT not in repr(AccountData(ACCOUNT))
    for bad in ("12", "has space", "x" * 29):
        with pytest.raises(InvalidValue):
            AccountData(bad)
    with pytest.raises(InvalidValue):
        AccountData(ACCOUNT, expiry="3012")


def test_awaiting_customer_is_in_flight() -> None:
    assert Status.AWAITING_CUSTOMER.value == "pending_customer_action"
    assert Status.AWAITING_CUSTOMER in IN_FLIGHT_STATUSES


@pytest_twisted.ensureDeferred
async def test_account_is_sealed_hashed_and_masked_like_a_pan(journal: Journal) -> None:
    txn = await journal.create_transaction(NewTransaction(
        kind=Kind.SALE, merchant_id="m1", connector="bank_b", amount=100, currency="USD",
        card=AccountData(ACCOUNT), retain_card=True,
    ))
    assert txn.masked_pan == "********6789" and txn.card is not None
    assert ACCOUNT.encode() not in txn.card.ciphertext
    revealed = journal.reveal_card(txn.card)
    assert isinstance(revealed, AccountData) and revealed.pan == ACCOUNT
    item = await journal.saf_enqueue(txn.txn_id, SafDraft(
        connector="bank_b", kind=SafKind.REVERSAL, mti="1420", fields={"102": "********6789"},
        card=AccountData("TRUEMONEY:0812345678"),
    ))
    assert journal.reveal_card(item.card) == AccountData("TRUEMONEY:0812345678")


@pytest_twisted.ensureDeferred
async def test_awaiting_customer_transactions_are_found_in_flight(journal: Journal) -> None:
    txn = await journal.create_transaction(NewTransaction(
        kind=Kind.SALE, merchant_id="m1", connector="bank_b", amount=100, currency="USD",
    ))
    await journal.transition(txn.txn_id, expected_from={Status.PENDING}, to=Status.AWAITING_CUSTOMER,
                             reason="customer_action_required")
    assert [t.txn_id for t in await journal.in_flight()] == [txn.txn_id]


def test_migration_4_rebuilds_the_in_flight_index(config: JournalConfig) -> None:
    with closing(backend_for(config).open_writer()) as db:
        migrate(db, MIGRATIONS[:3])
        migrate(db)
        db.begin()
        db.execute("INSERT INTO transactions (txn_id, kind, merchant_id, connector, status, version, amount, currency, "
                   "amount_authorized, amount_captured, amount_refunded, created_at, updated_at) VALUES "
                   "('t1', 'sale', 'm1', 'bank_b', 'pending_customer_action', 1, 1, 'USD', 0, 0, 0, 1, 1)")
        db.commit()
        rows = db.all("SELECT txn_id FROM transactions WHERE status IN "
                      "('pending', 'pending_customer_action', 'reversal_pending', 'timeout')")
        assert [r["txn_id"] for r in rows] == ["t1"]


@pytest_twisted.ensureDeferred
async def test_stale_pending_transactions_are_chosen_by_the_query(journal: Journal, clock: Clock) -> None:
    """The sweeper's candidates: still ``pending`` and created before the cutoff, oldest first, at most
    ``limit``; a payment awaiting the customer and a young one are left to their owners."""
    def sale() -> NewTransaction:
        return NewTransaction(kind=Kind.SALE, merchant_id="m1", connector="bank_b", amount=100, currency="USD")

    old = await journal.create_transaction(sale())
    waiting = await journal.create_transaction(sale())
    await journal.transition(waiting.txn_id, expected_from={Status.PENDING}, to=Status.AWAITING_CUSTOMER,
                             reason="customer_action_required")
    clock.advance(120.0)
    young = await journal.create_transaction(sale())
    assert [t.txn_id for t in await journal.stale_pending(utc_from_seconds(clock() - 60.0))] == [old.txn_id]
    everything = await journal.stale_pending(utc_from_seconds(clock() + 1.0))
    assert [t.txn_id for t in everything] == [old.txn_id, young.txn_id]
    assert [t.txn_id for t in await journal.stale_pending(utc_from_seconds(clock() + 1.0), limit=1)] == [old.txn_id]
