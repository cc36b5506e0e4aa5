"""Canonical, validated requests: what handlers and the payment service receive.

Everything here is already checked (see `switch.api.validate`), so the rest of the
switch never has to re-validate web-tier input. ``CardInstrument`` hides card data
from ``repr`` because dataclass reprs end up in logs and tracebacks.
"""

from __future__ import annotations

from dataclasses import dataclass

from switch import cardcheck
from switch.currency import Currency


@dataclass(frozen=True, slots=True)
class HelloRequest:
    client: str
    token: str

    def __repr__(self) -> str:
        return f"HelloRequest(client={self.client!r}, token=<hidden>)"

    def log_fields(self) -> dict[str, object]:
        return {"client_name": self.client}


@dataclass(frozen=True, slots=True)
class PingRequest:
    def log_fields(self) -> dict[str, object]:
        return {}


@dataclass(frozen=True, slots=True)
class CardInstrument:
    """A card as typed by the cardholder; ``cvv`` must never outlive the authorization (PCI DSS 3.3.1)."""

    pan: str
    expiry: str
    cvv: str | None = None

    @property
    def masked_pan(self) -> str:
        return cardcheck.mask_pan(self.pan)

    @property
    def scheme(self) -> str | None:
        return cardcheck.scheme(self.pan)

    def __repr__(self) -> str:
        cvv = "None" if self.cvv is None else "<hidden>"
        return f"CardInstrument(pan={self.masked_pan!r}, expiry={self.expiry!r}, cvv={cvv})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    """``capture`` True is a sale (0200), False a pre-authorization (0100)."""

    merchant_id: str
    store_id: str
    order_id: str
    amount: int
    currency: Currency
    capture: bool
    instrument: CardInstrument
    bank: str | None = None
    idempotency_key: str | None = None

    def log_fields(self) -> dict[str, object]:
        return {
            "merchant": self.merchant_id,
            "store": self.store_id,
            "order_id": cardcheck.redact_pans(self.order_id),
            "amount": self.amount,
            "currency": self.currency.alpha,
            "capture": self.capture,
            "masked_pan": self.instrument.masked_pan,
            "scheme": self.instrument.scheme,
            "bank": self.bank,
        }


@dataclass(frozen=True, slots=True)
class StatusRequest:
    txn_id: str

    def log_fields(self) -> dict[str, object]:
        return {"txn_id": self.txn_id}
