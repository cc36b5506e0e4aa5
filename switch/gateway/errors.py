"""The one exception type that turns into an error answer, the codes it may carry, and how the
payment core's domain errors become them (`from_domain`)."""

from __future__ import annotations

from enum import StrEnum

from switch.domain import errors as domain
from switch.domain.cardcheck import redact_pans


class ErrorCode(StrEnum):
    """Error codes a client may receive in ``error.code``; the spec lists when each happens."""

    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request"
    UNKNOWN_OP = "unknown_op"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    INVALID_STATE = "invalid_state"
    TOO_LARGE = "too_large"
    BUSY = "busy"
    INTERNAL = "internal"


class ApiError(Exception):
    """Raised by validators and handlers to answer ``ok: false`` (the payment service raises
    domain errors instead, which `from_domain` turns into this).

    ``message`` is shown to the web tier, so it must not contain internal details;
    a card number in it (say, a request value echoed back) is masked on the way out.
    ``field`` is the dotted path of the offending request field.
    """

    def __init__(self, code: ErrorCode | str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.field = field

    def as_answer(self) -> dict[str, object]:
        return {"code": self.code.value, "field": self.field, "message": redact_pans(self.message)}

    def __repr__(self) -> str:
        return f"ApiError({self.code.value!r}, {self.message!r}, field={self.field!r})"


_DOMAIN_CODES: dict[type[domain.DomainError], ErrorCode] = {
    domain.InvalidRequest: ErrorCode.INVALID_REQUEST,
    domain.NotFound: ErrorCode.NOT_FOUND,
    domain.InvalidState: ErrorCode.INVALID_STATE,
    domain.IdempotencyConflict: ErrorCode.IDEMPOTENCY_CONFLICT,
    domain.Busy: ErrorCode.BUSY,
}


def from_domain(error: domain.DomainError) -> ApiError:
    """The error answer for a domain error: its class's code, its message and field unchanged."""
    for kind in type(error).__mro__:
        code = _DOMAIN_CODES.get(kind)
        if code is not None:
            return ApiError(code, error.message, field=error.field)
    raise TypeError(f"no error code for {type(error).__name__}")
