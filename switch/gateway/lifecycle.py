"""Socket API ops for what follows an authorization: ``capture``, ``void``, ``refund``.

They are registered on the op table next to protocol version 1's ops; each names the
original ``txn_id`` and, for capture and refund, an optional ``amount`` (default: all
that remains), and an optional ``idempotency_key`` (authorize's semantics).  The
answer describes the original payment after the operation, with the operation itself
under ``"operation"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred

from switch.domain.model import LifecycleRequest
from switch.gateway.ops import Answer, OpContext, Operation, OperationRegistry
from switch.gateway.validate import (
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_KEY_EXPECTED,
    IDENTIFIER,
    IDENTIFIER_EXPECTED,
    MAX_AMOUNT,
    Fields,
    invalid,
    request_fields,
)


def _parser(op: str, with_amount: bool) -> Any:
    def parse(obj: Mapping[str, Any]) -> LifecycleRequest:
        fields: Fields = request_fields(obj)
        txn_id = fields.text("txn_id", IDENTIFIER, IDENTIFIER_EXPECTED)
        amount = None
        if with_amount and "amount" in obj:
            expected = "a positive integer in minor units, at most the amount that remains"
            amount = fields.integer("amount", expected)
            if not 0 < amount <= MAX_AMOUNT:
                raise invalid("amount", f"expected {expected}, got {amount}")
        idempotency_key = fields.optional_text("idempotency_key", IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_EXPECTED)
        fields.finish()
        return LifecycleRequest(op, txn_id, amount, idempotency_key)

    return parse


def _handle(request: LifecycleRequest, ctx: OpContext) -> Deferred[Answer]:
    client = ctx.authenticated_client()
    return maybeDeferred(ctx.service.lifecycle_op, request, client.merchant_ids)


def register_lifecycle(registry: OperationRegistry) -> OperationRegistry:
    for op, with_amount in (("capture", True), ("void", False), ("refund", True)):
        registry.register(Operation(op, _parser(op, with_amount), _handle))
    return registry
