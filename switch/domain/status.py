"""What a payment or operation is (`Kind`) and where it stands (`Status`).

The journal stores these values, the engine moves transactions between them and the
socket API shows them (through `switch.engine.status.API_STATUS`); they are defined here
once so that none of those has to import another for them.
"""

from __future__ import annotations

import enum


class Kind(enum.StrEnum):
    AUTHORIZATION = "authorization"
    SALE = "sale"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"
    REVERSAL = "reversal"


class Status(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"
    FAILED = "failed"
    TIMEOUT = "timeout"
    REVERSAL_PENDING = "reversal_pending"
    REVERSED = "reversed"
    VOIDED = "voided"
    CAPTURED = "captured"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"
    AWAITING_CUSTOMER = "pending_customer_action"


# States that have an owner still working on them; crash recovery must resume each
# (an awaiting-customer transaction gets its confirmation expiry re-armed, not a reversal).
IN_FLIGHT_STATUSES: frozenset[Status] = frozenset(
    {Status.PENDING, Status.REVERSAL_PENDING, Status.TIMEOUT, Status.AWAITING_CUSTOMER}
)
