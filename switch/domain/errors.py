"""Domain errors: why the payment core refuses a request, independent of any wire protocol.

The engine raises these; the socket API (`switch.gateway.errors.from_domain`) turns each
class into its error code, and the message and field reach the web tier unchanged, so a
message must say what was wrong in the client's terms and hold no internal detail.
``field`` is the dotted path of the request field at fault, when there is one.
"""

from __future__ import annotations


class DomainError(Exception):
    """A refused request: the base of every error the payment core raises on purpose."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, field={self.field!r})"


class InvalidRequest(DomainError):
    """The request contradicts what the switch knows (an unknown bank, more than is left to refund)."""


class InvalidValue(InvalidRequest, ValueError):
    """A value that cannot be a domain value at all (a PAN failing Luhn, a malformed account)."""


class NotFound(DomainError):
    """No such payment for the caller's merchants (another merchant's payment is not found either)."""


class InvalidState(DomainError):
    """The payment's state does not allow the operation now (void after capture, a capture in flight)."""


class IdempotencyConflict(DomainError):
    """An idempotency key reused for a different request."""


class Busy(DomainError):
    """The switch cannot take the request now (a bank at its in-flight limit); retrying later may work."""


class NotRecorded(Exception):
    """A mark, not a refusal: the journal could not confirm it recorded a request (its database unreachable
    or far behind, its writer process gone mid-batch), so the request may or may not have been recorded,
    and was not carried further than what was. The web tier is told ``busy``: the same request again,
    with the same idempotency key, is answered with what became of it. Its message is the journal's, for
    the logs; the web tier gets `NOT_RECORDED_MESSAGE`."""


NOT_RECORDED_MESSAGE = ("the switch could not confirm it recorded this request; send it again shortly with the same "
                        "idempotency_key: the answer then says what became of it")
