"""Domain errors reach the web tier as the API's error codes, with their message and field."""

from __future__ import annotations

import pytest

from switch.domain import errors as domain
from switch.gateway.errors import ErrorCode, from_domain


def every_domain_error() -> list[type[domain.DomainError]]:
    found, todo = [], [domain.DomainError]
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo.extend(kind.__subclasses__())
    return [kind for kind in found if kind is not domain.DomainError]


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (domain.InvalidRequest, ErrorCode.INVALID_REQUEST),
        (domain.InvalidValue, ErrorCode.INVALID_REQUEST),
        (domain.NotFound, ErrorCode.NOT_FOUND),
        (domain.InvalidState, ErrorCode.INVALID_STATE),
        (domain.IdempotencyConflict, ErrorCode.IDEMPOTENCY_CONFLICT),
        (domain.Busy, ErrorCode.BUSY),
    ],
)
def test_each_domain_error_has_its_code_and_keeps_message_and_field(kind, code):
    answer = from_domain(kind("no transaction 'x' for your merchants", field="txn_id")).as_answer()
    assert answer == {"code": code.value, "field": "txn_id", "message": "no transaction 'x' for your merchants"}


def test_no_domain_error_is_left_without_a_code():
    """A new domain error without a mapping would reach the web tier as ``internal``."""
    for kind in every_domain_error():
        assert from_domain(kind("m")).code is not ErrorCode.INTERNAL


def test_a_card_number_in_a_domain_message_is_masked_on_the_wire():
    answer = from_domain(domain.InvalidRequest("bank refuses 4111111111111111", field="bank")).as_answer()
    assert "4111111111111111" not in answer["message"] and "411111" in answer["message"]
