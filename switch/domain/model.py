"""Canonical, validated requests: what handlers and the payment service receive.

Everything here is already checked (see `switch.gateway.validate`), so the rest of the
switch never has to re-validate web-tier input. ``CardInstrument`` hides card data
from ``repr`` because dataclass reprs end up in logs and tracebacks.
"""

from __future__ import annotations

from dataclasses import dataclass

from switch.domain import cardcheck
from switch.domain.cardcheck import mask_last4
from switch.domain.currency import Currency
from switch.domain.customer import Customer


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

    @property
    def kind(self) -> str:
        return "card"

    @property
    def masked(self) -> str:
        return self.masked_pan


class _LastFourMasked:
    """Answers show ``masked_pan`` for every instrument; for accounts and wallets it is the
    identifier masked to its last four, as the journal keeps it."""

    __slots__ = ()

    @property
    def masked_pan(self) -> str:
        return self.masked  # type: ignore[attr-defined,no-any-return]


ACCOUNT_TYPES = {"savings": "10", "checking": "20"}
"""Account types as the from-account digits of processing code (field 3, positions 3-4)."""


@dataclass(frozen=True, slots=True)
class BankAccountInstrument(_LastFourMasked):
    """A customer's account at ``bank`` (the bank code the customer chose, used for routing).

    ``account`` and ``holder_id`` identify a person's money as much as a PAN does, so
    ``repr`` shows only their last four characters.
    """

    bank: str
    account: str
    holder_id: str | None = None
    account_type: str | None = None

    @property
    def kind(self) -> str:
        return "bank_account"

    @property
    def masked(self) -> str:
        return mask_last4(self.account)

    def __repr__(self) -> str:
        holder = "None" if self.holder_id is None else repr(mask_last4(self.holder_id))
        return (f"BankAccountInstrument(bank={self.bank!r}, account={self.masked!r}, holder_id={holder}, "
                f"account_type={self.account_type!r})")

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class WalletInstrument(_LastFourMasked):
    """A wallet at ``provider`` (e.g. a mobile-money operator); ``wallet_id`` is masked like an account."""

    provider: str
    wallet_id: str

    @property
    def kind(self) -> str:
        return "wallet"

    @property
    def masked(self) -> str:
        return mask_last4(self.wallet_id)

    def __repr__(self) -> str:
        return f"WalletInstrument(provider={self.provider!r}, wallet_id={self.masked!r})"

    __str__ = __repr__


Instrument = CardInstrument | BankAccountInstrument | WalletInstrument


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    """``capture`` True is a sale (0200), False a pre-authorization (0100)."""

    merchant_id: str
    store_id: str
    order_id: str
    amount: int
    currency: Currency
    capture: bool
    instrument: Instrument
    bank: str | None = None
    idempotency_key: str | None = None
    customer: Customer | None = None

    def log_fields(self) -> dict[str, object]:
        customer = self.customer.log_fields() if self.customer is not None else {}
        return {
            **customer,
            "merchant": self.merchant_id,
            "store": self.store_id,
            "order_id": self.order_id,
            "amount": self.amount,
            "currency": self.currency.alpha,
            "capture": self.capture,
            "instrument": self.instrument.kind,
            "masked_pan": self.instrument.masked_pan,
            "scheme": self.instrument.scheme if isinstance(self.instrument, CardInstrument) else None,
            "bank": self.bank,
        }


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """By ``txn_id``, or by ``merchant_id`` + ``order_id`` (the shop's own reference, for a web
    tier that lost the answer and never learnt the txn_id)."""

    txn_id: str | None = None
    merchant_id: str | None = None
    order_id: str | None = None

    def log_fields(self) -> dict[str, object]:
        return {"txn_id": self.txn_id, "merchant": self.merchant_id, "order_id": self.order_id}


@dataclass(frozen=True)
class LifecycleRequest:
    """capture / void / refund of ``txn_id``; ``amount`` None means the whole remaining amount."""

    op: str
    txn_id: str
    amount: int | None = None
    idempotency_key: str | None = None

    def log_fields(self) -> dict[str, object]:
        return {"txn_id": self.txn_id, "amount": self.amount}
