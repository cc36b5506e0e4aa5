"""Fees written in the same database transaction as the movement of money they belong to.

Why this exists: a fee journalled apart from its payment can be lost or doubled by a
crash between two commits; here it is computed from the configured `FeeSchedule` inside
the unit of work that settles the payment (`Journal.transition` for a sale,
`Journal.finish_operation` for captures, refunds and voids), so it commits or rolls back
with it.

Where fees land (columns ``bank_fee`` and ``merchant_fee``, minor units, signed):

* an approved sale: the fees on the amount captured, on the sale's own row; a caller that knows
  the sale (the payment service) computes them with `Journal.sale_fees` and passes them with the
  transition, so they are set by its one UPDATE (and not computed again, even where they come to zero:
  `sets_fees`); otherwise they are charged here after it;
* an approved capture: the fees on the captured amount, on the capture's row (a bare
  pre-authorization carries none: no money moved);
* an approved refund: minus its proportional share (`switch.domain.fees.reversal`), on the
  refund's row; an approved void: minus everything not yet reversed, on the void's row;
  a plan with ``on_refund = keep`` reverses nothing;
* a sale reversed after its approval (the switch could not deliver the answer): its fees
  go back to zero, since the money never moved.

The payment's fees are the sum over its row and its operations' rows.
"""

from __future__ import annotations

from collections.abc import Mapping

from switch.domain.cardcheck import scheme
from switch.domain.fees import FeePlan, FeeSchedule, FeeSubject, RefundEffect, reversal
from switch.domain.status import Kind, Status
from switch.journal.db import Db
from switch.journal.models import Transaction
from switch.journal.store import children, transaction_from_row


def subject(payment: Transaction) -> FeeSubject:
    """What plans are chosen by: currency, the card scheme from the masked PAN's BIN, and ``card`` for a card.
    Other instruments are not recorded on the row, so a rule limited to them never applies."""
    return _subject(payment.currency, payment.masked_pan)


def _subject(currency: str, masked_pan: str | None) -> FeeSubject:
    card_scheme = scheme(masked_pan) if masked_pan else None
    return FeeSubject(currency, card_scheme, "card" if card_scheme else None)


def sale_fees(schedule: FeeSchedule, connector: str, merchant_id: str, currency: str, masked_pan: str | None,
              amount: int) -> tuple[int, int]:
    """(bank fee, merchant fee) of a sale approved for ``amount``, chosen as for its row (`subject`)."""
    who = _subject(currency, masked_pan)
    return (_fee(schedule.bank_plan(connector, who), amount, currency),
            _fee(schedule.merchant_plan(merchant_id, who), amount, currency))


def _fee(plan: FeePlan | None, amount: int, currency: str) -> int:
    return plan.fee(amount, currency) if plan is not None else 0


def _write(db: Db, txn: Transaction, bank_fee: int, merchant_fee: int, now: int) -> Transaction:
    if (bank_fee, merchant_fee) == (txn.bank_fee, txn.merchant_fee):
        return txn
    row = db.one(
        "UPDATE transactions SET bank_fee = :bank_fee, merchant_fee = :merchant_fee, updated_at = :now "
        "WHERE txn_id = :txn_id RETURNING *",
        {"bank_fee": bank_fee, "merchant_fee": merchant_fee, "now": now, "txn_id": txn.txn_id},
    )
    return transaction_from_row(row)


FEE_COLUMNS = frozenset({"bank_fee", "merchant_fee"})


def sets_fees(changes: Mapping[str, object]) -> bool:
    """True when a transition sets both fee columns itself: its caller charged the sale (`Journal.sale_fees`,
    from the schedule the writer holds too), so nothing is charged after it, even where both fees are zero."""
    return FEE_COLUMNS <= changes.keys()


def writes_nothing_after(to: str, changes: Mapping[str, object]) -> bool:
    """True when `after_transition` of a move to ``to`` that sets ``changes`` writes nothing, whatever the
    transaction: a move to anything but an approval or a reversal, or an approval that sets its fees."""
    if to == Status.REVERSED:
        return False
    if to == Status.APPROVED:
        return sets_fees(changes)
    return True


def after_transition(db: Db, txn: Transaction, schedule: FeeSchedule, now: int, fees_set: bool = False) -> Transaction:
    """Charge an approved sale that neither its transition (``fees_set``: `sets_fees`) nor an earlier one charged,
    or give back the fees of a sale that was reversed."""
    if txn.kind is not Kind.SALE:
        return txn
    if txn.status is Status.APPROVED and not fees_set and txn.bank_fee == 0 and txn.merchant_fee == 0:
        fees = sale_fees(schedule, txn.connector, txn.merchant_id, txn.currency, txn.masked_pan, txn.amount_captured)
        return _write(db, txn, *fees, now)
    if txn.status is Status.REVERSED:
        return _write(db, txn, 0, 0, now)
    return txn


def _reversed(plan: FeePlan | None, charged: int, already: int, base: int, before: int, amount: int,
              whole: bool) -> int:
    effect = plan.on_refund if plan is not None else RefundEffect.KEEP
    if effect is RefundEffect.KEEP:
        return 0
    left = charged - already
    if whole:
        return left
    return max(0, min(reversal(charged, base, before, amount, effect), left))


def after_operation(db: Db, parent: Transaction, child: Transaction, schedule: FeeSchedule,
                    now: int) -> Transaction:
    """Charge an approved capture, or reverse fees for an approved refund or void, on the child's row."""
    if child.status is not Status.APPROVED:
        return child
    who = subject(parent)
    bank_plan = schedule.bank_plan(parent.connector, who)
    merchant_plan = schedule.merchant_plan(parent.merchant_id, who)
    if child.kind is Kind.CAPTURE:
        return _write(db, child, _fee(bank_plan, child.amount, child.currency),
                      _fee(merchant_plan, child.amount, child.currency), now)
    if child.kind not in (Kind.REFUND, Kind.VOID):
        return child
    others = [c for c in children(db, parent.txn_id) if c.txn_id != child.txn_id]
    charges = [parent] + [c for c in others if c.kind is Kind.CAPTURE]
    reversals = [c for c in others if c.kind in (Kind.REFUND, Kind.VOID)]
    whole = child.kind is Kind.VOID
    before = parent.amount_refunded - (0 if whole else child.amount)
    amounts = []
    for plan, column in ((bank_plan, "bank_fee"), (merchant_plan, "merchant_fee")):
        charged = sum(getattr(c, column) for c in charges)
        already = -sum(getattr(c, column) for c in reversals)
        amounts.append(-_reversed(plan, charged, already, parent.amount_captured, before, child.amount, whole))
    return _write(db, child, amounts[0], amounts[1], now)
