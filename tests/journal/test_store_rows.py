"""`store.transaction_from_row` builds a `Transaction` without its ``__init__`` (it is on the writer's hot
path): what it builds must be the very object the dataclass would, field for field."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from switch.domain.status import Kind, Status
from switch.journal.models import EncryptedCard, Transaction, from_us
from switch.journal.store import TRANSACTION_COLUMNS, transaction_from_row


def _row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys((*TRANSACTION_COLUMNS, "bank_fee", "merchant_fee",
                                           "reversal_business_date"))
    row.update(txn_id="T1", kind="sale", merchant_id="M1", connector="bank", status="approved", version=2, amount=150,
               currency="USD", amount_authorized=150, amount_captured=150, amount_refunded=0,
               created_at=1_700_000_000_000_001, updated_at=1_700_000_000_500_000, amount_capture_pending=0,
               amount_refund_pending=0, bank_fee=3, merchant_fee=4, pan_key_id="k1", pan_ciphertext=memoryview(b"c" * 40),
               pan_hash=b"h" * 32, sent_at=1_700_000_000_100_000, business_date="2026-11-29")
    row.update(overrides)
    return row


@pytest.mark.parametrize("overrides", [{}, {"pan_key_id": None, "pan_ciphertext": None, "sent_at": None,
                                           "pan_hash": None, "kind": "refund", "status": "pending"}])
def test_a_row_becomes_the_transaction_the_dataclass_would_build(overrides: dict[str, object]) -> None:
    txn = transaction_from_row(_row(**overrides))
    names = [f.name for f in dataclasses.fields(Transaction)]
    assert sorted(vars(txn)) == sorted(names)
    assert txn == Transaction(**{name: getattr(txn, name) for name in names})
    with pytest.raises(dataclasses.FrozenInstanceError):
        txn.status = Status.DECLINED  # type: ignore[misc]


def test_columns_are_converted() -> None:
    txn = transaction_from_row(_row())
    assert txn.kind is Kind.SALE and txn.status is Status.APPROVED
    assert txn.created_at == from_us(1_700_000_000_000_001) and txn.sent_at == from_us(1_700_000_000_100_000)
    assert txn.card == EncryptedCard(key_id="k1", ciphertext=b"c" * 40, context="T1")
    assert type(txn.card.ciphertext) is bytes and txn.pan_hash == b"h" * 32


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError):
        transaction_from_row(_row(status="nonsense"))


@pytest.mark.parametrize("overrides", [{}, {"pan_key_id": None, "pan_ciphertext": None, "sent_at": None,
                                           "pan_hash": None, "kind": "refund", "status": "pending"}])
def test_a_transaction_crosses_pickle_whole_and_without_its_field_names(overrides: dict[str, object]) -> None:
    """As it comes back from the journal's writer process: every field, and the same frozen object."""
    txn = transaction_from_row(_row(**overrides))
    sent = pickle.dumps(txn, protocol=pickle.HIGHEST_PROTOCOL)
    back = pickle.loads(sent)
    assert back == txn and vars(back) == vars(txn) and type(back) is Transaction
    assert b"amount_refund_pending" not in sent
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.status = Status.DECLINED  # type: ignore[misc]
