"""Journal refusals that hand back the record that caused them, so the caller can answer precisely.

A repeated idempotency key returns the transaction it is bound to, a refused reservation
the parent as it is now, a refused store-and-forward action the item.
"""

from __future__ import annotations

from collections.abc import Iterable

from switch.journal.errors import JournalError
from switch.journal.models import SafItem, Transaction


class DuplicateIdempotencyKey(JournalError):
    """The (merchant, idempotency key) pair is already bound to a transaction.

    ``same_request`` tells the caller whether to replay the stored answer (same
    request hash) or answer a conflict (different hash).
    """

    def __init__(self, transaction: Transaction, same_request: bool) -> None:
        verdict = "same request" if same_request else "different request"
        super().__init__(
            f"idempotency key {transaction.idempotency_key!r} of merchant {transaction.merchant_id!r} "
            f"is already used by transaction {transaction.txn_id!r} ({verdict})"
        )
        self.transaction = transaction
        self.same_request = same_request


class ReservationRefused(JournalError):
    """An operation could not reserve what it needs on its parent (state or amount).

    ``parent`` is the parent as it is now, so the caller can say why.
    """

    def __init__(self, parent: Transaction, kind: str, amount: int) -> None:
        super().__init__(
            f"cannot reserve {kind} of {amount} on transaction {parent.txn_id!r} ({parent.status.value}, "
            f"captured {parent.amount_captured}, refunded {parent.amount_refunded}, pending capture "
            f"{parent.amount_capture_pending}, pending refund {parent.amount_refund_pending})"
        )
        self.parent = parent
        self.kind = kind
        self.amount = amount


class SafStateError(JournalError):
    """An SAF action is not allowed in the item's current state (e.g. retrying a completed item)."""

    def __init__(self, item: SafItem, action: str, allowed: Iterable[str]) -> None:
        super().__init__(
            f"cannot {action} store-and-forward item {item.saf_id}: it is {item.state.value!r}, "
            f"allowed from [{', '.join(sorted(allowed))}]"
        )
        self.item = item
        self.action = action
