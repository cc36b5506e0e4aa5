"""Check and complete what the payment service answers before it goes on the wire.

The service is another team's code; a missing status or a stray type must become
an ``internal`` error here rather than an answer the web tier misreads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STATUSES = (
    "approved", "declined", "failed", "timeout", "pending",
    "reversed", "captured", "refunded", "partially_refunded", "pending_customer_action",
)
FINAL_STATUSES = frozenset(STATUSES) - {"pending"}
TRANSACTION_FIELDS = (
    "txn_id",
    "status",
    "reason",
    "response_code",
    "auth_code",
    "rrn",
    "stan",
    "connector",
    "masked_pan",
    "merchant_id",
    "store_id",
    "order_id",
    "amount",
    "currency",
)
_REQUIRED_TEXT = ("txn_id", "reason")
_TYPES = tuple((name, int if name == "amount" else str) for name in TRANSACTION_FIELDS)


class ServiceContractError(TypeError):
    """The payment service answered something the spec does not allow."""


def transaction_answer(raw: Any, statuses: frozenset[str] = frozenset(STATUSES)) -> dict[str, Any]:
    """The service's answer with every transaction field present (None when not applicable)."""
    if type(raw) is not dict and not isinstance(raw, Mapping):  # an ABC's check costs more than the exact type's
        raise ServiceContractError(f"expected a mapping from the payment service, got {type(raw).__name__}")
    answer = {name: raw.get(name) for name in TRANSACTION_FIELDS}
    answer.update((key, value) for key, value in raw.items() if key not in answer)
    if answer["status"] not in statuses:
        raise ServiceContractError(f"status {answer['status']!r} is not one of {sorted(statuses)}")
    for name in _REQUIRED_TEXT:
        if not isinstance(answer[name], str) or not answer[name]:
            raise ServiceContractError(f"{name} must be a non-empty string")
    for name, wanted in _TYPES:
        value = answer[name]
        # The exact type is the common case, and a bool's type is never int: isinstance only for the rest.
        if value is not None and type(value) is not wanted and (isinstance(value, bool) or not isinstance(value, wanted)):
            raise ServiceContractError(f"{name} must be {wanted.__name__} or None, got {type(value).__name__}")
    return answer
