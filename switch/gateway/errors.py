"""The one exception type that turns into an error answer, and the codes it may carry."""

from __future__ import annotations

from enum import StrEnum

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
    """Raised by validators, handlers and the payment service to answer ``ok: false``.

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
