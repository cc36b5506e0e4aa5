"""SQL for operations on a payment: what a capture, refund or void reserves on its parent,
and how the parent's totals follow the operation's outcome.

Why this exists: a capture or refund that commits its own outcome in one database
transaction and its parent's totals in another can be cut in two by a crash, and the web
tier then captures or refunds again.  Here the operation's start (reservation + child row
+ outgoing message) is one unit of work and its end (child's final state + parent's totals
and status) is another, each committed atomically by the group-commit writer.

The guard is the UPDATE's WHERE clause, so it holds even with several writers:

* capture: an authorization in an allowed state, nothing captured or being captured,
  amount <= authorized; reserves ``amount_capture_pending``;
* refund: amount <= captured - refunded - refunds in flight; reserves ``amount_refund_pending``;
* void: nothing captured-in-flight, refunded or being refunded; the parent becomes
  ``reversal_pending`` (reason ``void_requested``) until the void is settled.

Settling: approved moves the reservation into the totals (captured, refunded, voided);
declined, failed or reversed releases it; pending or timeout keeps it (the outcome is
still being resolved by store-and-forward).
"""

from __future__ import annotations

from collections.abc import Collection

from switch.domain.status import Kind, Status
from switch.journal.db import Db, in_list
from switch.journal.errors import StorageError, TransactionNotFound
from switch.journal.models import Transaction
from switch.journal.refusals import ReservationRefused
from switch.journal.store import get_transaction, record_transition, transaction_from_row

_RESERVE = {
    Kind.CAPTURE: (
        "amount_capture_pending = :amount",
        "kind = 'authorization' AND amount_captured = 0 AND amount_capture_pending = 0 "
        "AND amount_refund_pending = 0 AND :amount <= amount_authorized",
    ),
    Kind.REFUND: (
        "amount_refund_pending = amount_refund_pending + :amount",
        "amount_capture_pending = 0 AND amount_captured - amount_refunded - amount_refund_pending >= :amount",
    ),
    Kind.VOID: (
        "previous_status = status, status = 'reversal_pending', reason = 'void_requested'",
        "amount_capture_pending = 0 AND amount_refund_pending = 0 AND amount_refunded = 0",
    ),
}

_SETTLE = {
    Kind.CAPTURE: (
        "amount_capture_pending = amount_capture_pending - :amount, amount_captured = amount_captured + :amount, "
        "previous_status = status, status = 'captured'",
        "amount_capture_pending >= :amount AND status = 'approved'",
    ),
    Kind.REFUND: (
        "amount_refund_pending = amount_refund_pending - :amount, amount_refunded = amount_refunded + :amount, "
        "previous_status = status, status = CASE WHEN amount_refunded + :amount >= amount_captured "
        "THEN 'refunded' ELSE 'partially_refunded' END",
        "amount_refund_pending >= :amount",
    ),
    Kind.VOID: (
        "previous_status = status, status = 'voided', reason = 'voided', pan_key_id = NULL, pan_ciphertext = NULL",
        "status = 'reversal_pending'",
    ),
}

_RELEASE = {
    Kind.CAPTURE: ("amount_capture_pending = amount_capture_pending - :amount", "amount_capture_pending >= :amount"),
    Kind.REFUND: ("amount_refund_pending = amount_refund_pending - :amount", "amount_refund_pending >= :amount"),
    Kind.VOID: ("status = previous_status, previous_status = status, reason = NULL", "status = 'reversal_pending'"),
}

SETTLED = frozenset({Status.APPROVED})
RELEASED = frozenset({Status.DECLINED, Status.FAILED, Status.REVERSED})
OPERATION_KINDS = frozenset(_RESERVE)


def reserve(db: Db, parent_id: str, kind: Kind, amount: int, allowed: Collection[Status], now: int) -> Transaction:
    """Take what the operation needs from its parent, or raise `ReservationRefused` (nothing changed)."""
    if kind not in _RESERVE:
        raise StorageError(f"{kind.value} is not an operation on a payment")
    assignments, condition = _RESERVE[kind]
    statuses, params = in_list("allowed", sorted(allowed))
    before = get_transaction(db, parent_id)
    if before is None:
        raise TransactionNotFound(parent_id)
    row = db.one(
        f"UPDATE transactions SET {assignments}, version = version + 1, updated_at = :now "
        f"WHERE txn_id = :txn_id AND status IN {statuses} AND {condition} RETURNING *",
        {**params, "amount": amount, "now": now, "txn_id": parent_id},
    )
    if row is None:
        raise ReservationRefused(before, kind.value, amount)
    parent = transaction_from_row(row)
    record_transition(db, parent_id, before.status, parent.status, now, parent.reason,
                       {"reserved": kind.value, "amount": amount})
    return parent


def settle(db: Db, child: Transaction, now: int) -> Transaction | None:
    """Move the child's reservation on its parent into the parent's totals, or release it,
    by the child's (new) status; None when the child's outcome is not final yet."""
    if child.parent_txn_id is None or child.kind not in OPERATION_KINDS:
        return None
    if child.status in SETTLED:
        assignments, condition = _SETTLE[child.kind]
    elif child.status in RELEASED:
        assignments, condition = _RELEASE[child.kind]
    else:
        return None
    before = get_transaction(db, child.parent_txn_id)
    if before is None:
        raise TransactionNotFound(child.parent_txn_id)
    row = db.one(
        f"UPDATE transactions SET {assignments}, version = version + 1, updated_at = :now "
        f"WHERE txn_id = :txn_id AND {condition} RETURNING *",
        {"amount": child.amount, "now": now, "txn_id": child.parent_txn_id},
    )
    if row is None:
        raise StorageError(
            f"{child.kind.value} {child.txn_id} ({child.status.value}) does not match the reservation on its "
            f"parent {child.parent_txn_id} ({before.status.value}); nothing was changed"
        )
    parent = transaction_from_row(row)
    verb = "settled" if child.status in SETTLED else "released"
    record_transition(db, parent.txn_id, before.status, parent.status, now, parent.reason,
                       {verb: child.kind.value, "amount": child.amount, "operation": child.txn_id})
    return parent
