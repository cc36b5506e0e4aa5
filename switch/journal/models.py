"""Records the journal stores and hands back.

Amounts are integers in minor units of the ISO 4217 currency; timestamps are UTC
`datetime` objects in Python and integer microseconds since the Unix epoch in the
database (the one representation both backends compare and sort the same way).
"""

from __future__ import annotations

import enum
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple, TypedDict, TypeVar

from switch.domain.carddata import CardData
from switch.domain.currency import by_alpha
from switch.domain.panscan import safe_repr
from switch.domain.status import IN_FLIGHT_STATUSES, Kind, Status
from switch.journal.errors import InvalidRecord

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_REFERENCE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?")
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_MTI = re.compile(r"\d{4}")
_TEXT_CHANGES = {
    "stan": re.compile(r"\d{1,12}"),
    "rrn": re.compile(r"[A-Za-z0-9 ]{1,12}"),
    "auth_code": re.compile(r"[A-Za-z0-9 ]{1,6}"),
    "response_code": re.compile(r"[A-Za-z0-9]{2,3}"),
    "transmission_datetime": re.compile(r"\d{10}"),
    "business_date": re.compile(r"\d{4}-\d{2}-\d{2}"),
}
_MAX_REASON = 500


class Direction(enum.StrEnum):
    IN = "in"
    OUT = "out"


class SafKind(enum.StrEnum):
    REVERSAL = "reversal"
    VOID = "void"
    ADVICE = "advice"
    """An advice (a capture's 0220) repeated (0221) until the bank acknowledges it; never reversed."""


class SafState(enum.StrEnum):
    QUEUED = "queued"
    DONE = "done"
    DEAD = "dead"
    DROPPED = "dropped"


def to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise InvalidRecord("timestamps must be timezone-aware (UTC); got a naive datetime")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def optional_from_us(value: int | None) -> datetime | None:
    return None if value is None else from_us(value)


def utc_from_seconds(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


MAX_AMOUNT = 999_999_999_999  # ISO 8583 field 4 is n12


def require_amount(name: str, value: object) -> int:
    """Amounts are integers of minor units; floats and Decimals are refused to keep rounding out."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecord(f"{name} must be an int of minor units, got {type(value).__name__}")
    if not 0 <= value <= MAX_AMOUNT:
        raise InvalidRecord(f"{name} must be from 0 to {MAX_AMOUNT} minor units (ISO 8583 field 4 is n12)")
    return value


def require_currency(value: object) -> str:
    if not isinstance(value, str) or by_alpha(value) is None:
        raise InvalidRecord(f"currency must be a current ISO 4217 alphabetic code such as 'EUR', got {safe_repr(value)}")
    return value


def require_id(name: str, value: object) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidRecord(f"{name} must be 1-64 characters of letters, digits and _.:- , got {safe_repr(value)}")
    return value


def require_reference(name: str, value: object) -> str:
    """Merchant-chosen references (order id, idempotency key): printable ASCII, up to 255 characters,
    not starting or ending with a space (the socket API's rule too). Their digits are not checked:
    the card-data guard stores references as given (`switch.journal.guard`)."""
    if not isinstance(value, str) or not _REFERENCE.fullmatch(value):
        raise InvalidRecord(
            f"{name} must be 1-255 printable ASCII characters, not starting or ending with a space, "
            f"got {safe_repr(value)}"
        )
    return value


def require_event_type(value: object) -> str:
    if not isinstance(value, str) or not _EVENT_TYPE.fullmatch(value):
        raise InvalidRecord(f"event type must look like 'payment.completed', got {safe_repr(value)}")
    return value


def require_mti(value: object) -> str:
    if not isinstance(value, str) or not _MTI.fullmatch(value):
        raise InvalidRecord(f"MTI must be 4 digits, got {safe_repr(value)}")
    return value


class TxnChanges(TypedDict, total=False):
    """Columns a transition may change besides the status."""

    amount_authorized: int
    amount_captured: int
    amount_refunded: int
    stan: str | None
    rrn: str | None
    auth_code: str | None
    response_code: str | None
    reason: str | None
    transmission_datetime: str | None
    sent_at: datetime | None
    business_date: str | None
    bank_fee: int
    merchant_fee: int


def prepare_changes(changes: Mapping[str, object]) -> dict[str, object]:
    """Validate transition changes and convert them to column values."""
    allowed = TxnChanges.__annotations__
    prepared: dict[str, object] = {}
    for name, value in changes.items():
        if name not in allowed:
            raise InvalidRecord(f"a transition cannot change {name!r}; changeable: {', '.join(sorted(allowed))}")
        if name.startswith("amount_") or name.endswith("_fee"):  # a sale's fees (`Journal.sale_fees`)
            prepared[name] = require_amount(name, value)
        elif value is None:
            prepared[name] = None
        elif name == "sent_at":
            if not isinstance(value, datetime):
                raise InvalidRecord(f"sent_at must be a datetime, got {type(value).__name__}")
            prepared[name] = to_us(value)
        elif name == "reason":
            prepared[name] = require_text(name, value, _MAX_REASON)
        else:
            if not isinstance(value, str) or not _TEXT_CHANGES[name].fullmatch(value):
                raise InvalidRecord(f"{name} has an invalid format: {safe_repr(value)}")
            prepared[name] = value
    return prepared


E = TypeVar("E", bound=enum.Enum)


def require_enum(kind: type[E], value: object, name: str) -> E:
    if isinstance(value, kind):  # the common case; calling the enum class costs several µs on the hot path
        return value
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(str(member.value) for member in kind)
        raise InvalidRecord(f"{name} must be one of {allowed}; got {safe_repr(value)}") from None


def require_response_code(value: object) -> str:
    if not isinstance(value, str) or not _TEXT_CHANGES["response_code"].fullmatch(value):
        raise InvalidRecord(f"response code must be 2-3 letters or digits, got {safe_repr(value)}")
    return value


def require_text(name: str, value: object, max_length: int) -> str:
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise InvalidRecord(f"{name} must be a non-empty string of at most {max_length} characters")
    return value


@dataclass(frozen=True)
class EncryptedCard:
    """A PAN (and expiry) sealed with AES-GCM.

    ``context`` is the row the ciphertext belongs to; it is authenticated data, so
    a ciphertext copied onto another row fails to decrypt.
    """

    key_id: str
    ciphertext: bytes = field(repr=False)
    context: str


@dataclass(frozen=True)
class EventDraft:
    """A notification to append in the same database transaction as a state change."""

    type: str
    payload: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_event_type(self.type)


class Received(NamedTuple):
    """A bank's answer journalled in the commit of the transition it decides (`Journal.transition`):
    one writer unit a payment fewer than journalling it on its own, and never an outcome without it."""

    connector: str
    mti: str
    fields: Mapping[str, Any]
    """Masked (`switch.iso.masking.mask_message`), as for `Journal.append_message`."""


@dataclass(frozen=True)
class SafAcknowledged:
    """A store-and-forward item the bank acknowledged, completed in the commit of the outcome it settles.

    Why in that commit: an item completed by a commit of its own, and its outcome by the next, left the
    transaction unsettled for good when the second commit failed or its outcome was unknown (nothing
    sends a completed item again). In one commit both happen or neither does, and an item still queued
    is sent again."""

    saf_id: int
    response_code: str

    def __post_init__(self) -> None:
        if isinstance(self.saf_id, bool) or not isinstance(self.saf_id, int):
            raise InvalidRecord(f"saf_id must be an int, got {self.saf_id!r}")
        require_response_code(self.response_code)


@dataclass(frozen=True)
class SafDraft:
    """A store-and-forward item to enqueue in the same database transaction as a state change.

    ``fields`` are the ISO 8583 fields to send, already masked: field 2 is rebuilt
    from ``card`` (stored encrypted) when the item is sent.
    """

    connector: str
    kind: SafKind
    mti: str
    fields: Mapping[str, Any]
    card: CardData | None = None
    max_attempts: int = 10
    due_at: datetime | None = None

    def __post_init__(self) -> None:
        require_id("connector", self.connector)
        require_mti(self.mti)
        require_enum(SafKind, self.kind, "kind")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidRecord(f"max_attempts must be a positive int, got {self.max_attempts!r}")


@dataclass(frozen=True)
class NewTransaction:
    """What the switch knows when a transaction starts.

    ``retain_card`` keeps the PAN (encrypted) for later messages that need it:
    reversal, completion, refund. Without it only the masked PAN and keyed hash
    are kept.
    """

    kind: Kind
    merchant_id: str
    connector: str
    amount: int
    currency: str
    txn_id: str | None = None
    parent_txn_id: str | None = None
    store_id: str | None = None
    order_id: str | None = None
    card: CardData | None = None
    retain_card: bool = False
    stan: str | None = None
    transmission_datetime: str | None = None
    rrn: str | None = None
    idempotency_key: str | None = None
    request_hash: bytes | None = None
    status: Status = Status.PENDING
    reason: str | None = None
    pan_hash: bytes | None = field(default=None, repr=False)
    """The card's keyed hash when the caller has it already (the risk stage's), so it is not computed twice."""

    def __post_init__(self) -> None:
        require_enum(Kind, self.kind, "kind")
        require_enum(Status, self.status, "status")
        require_id("merchant_id", self.merchant_id)
        require_id("connector", self.connector)
        require_amount("amount", self.amount)
        require_currency(self.currency)
        for name in ("txn_id", "parent_txn_id", "store_id"):
            if getattr(self, name) is not None:
                require_id(name, getattr(self, name))
        for name in ("order_id", "idempotency_key"):
            if getattr(self, name) is not None:
                require_reference(name, getattr(self, name))
        if (self.idempotency_key is None) != (self.request_hash is None):
            raise InvalidRecord("idempotency_key and request_hash go together: give both or neither")
        if self.request_hash is not None and not isinstance(self.request_hash, bytes):
            raise InvalidRecord("request_hash must be bytes (a digest), not text")
        if self.retain_card and self.card is None:
            raise InvalidRecord("retain_card needs card")
        prepare_changes({"stan": self.stan, "transmission_datetime": self.transmission_datetime, "rrn": self.rrn,
                         "reason": self.reason})


@dataclass(frozen=True)
class Transaction:
    txn_id: str
    kind: Kind
    parent_txn_id: str | None
    merchant_id: str
    store_id: str | None
    order_id: str | None
    connector: str
    status: Status
    version: int
    amount: int
    currency: str
    amount_authorized: int
    amount_captured: int
    amount_refunded: int
    stan: str | None
    rrn: str | None
    auth_code: str | None
    response_code: str | None
    reason: str | None
    masked_pan: str | None
    pan_hash: bytes | None = field(repr=False)
    card: EncryptedCard | None
    transmission_datetime: str | None
    sent_at: datetime | None
    idempotency_key: str | None
    request_hash: bytes | None = field(repr=False)
    created_at: datetime
    updated_at: datetime
    amount_capture_pending: int = 0
    """Reserved by a capture still in flight (its completion advice not yet acknowledged)."""
    amount_refund_pending: int = 0
    """Reserved by refunds still in flight: never refundable twice."""
    bank_fee: int = 0
    """Settlement fee the bank earned on this row's movement of money (negative: reversed); minor units."""
    merchant_fee: int = 0
    """Merchant discount charged on this row's movement of money (negative: reversed); minor units."""
    business_date: str | None = None
    """The connector's business date (YYYY-MM-DD) when the request was sent, or the bank's settlement date."""
    reversal_business_date: str | None = None
    """The connector's business date when the row's reversal was acknowledged (status ``reversed``)."""

    @property
    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT_STATUSES

    def __reduce__(self) -> tuple[object, tuple[tuple[object, ...]]]:
        """Its values in field order, without the names: a payment's rows come back from the journal's writer
        process pickled (`switch.journal.process`), and a row with its 34 names took twice as long to read."""
        return _transaction, (_TRANSACTION_VALUES(self.__dict__),)


def _transaction(values: tuple[object, ...]) -> Transaction:
    txn = object.__new__(Transaction)
    txn.__dict__.update(zip(_TRANSACTION_FIELDS, values))
    return txn


_TRANSACTION_FIELDS = tuple(f.name for f in fields(Transaction))
_TRANSACTION_VALUES = operator.itemgetter(*_TRANSACTION_FIELDS)


@dataclass(frozen=True)
class TransitionRecord:
    transition_id: int
    txn_id: str
    from_status: Status | None
    to_status: Status
    at: datetime
    reason: str | None
    changes: Mapping[str, Any]


@dataclass(frozen=True)
class MessageRecord:
    message_id: int
    txn_id: str | None
    direction: Direction
    connector: str
    mti: str
    stan: str | None
    response_code: str | None
    fields: Mapping[str, Any]
    at: datetime


@dataclass(frozen=True)
class SafItem:
    saf_id: int
    connector: str
    txn_id: str
    kind: SafKind
    mti: str
    fields: Mapping[str, Any]
    card: EncryptedCard | None
    state: SafState
    attempts: int
    max_attempts: int
    enqueued_at: datetime
    next_due_at: datetime
    last_attempt_at: datetime | None
    last_response_code: str | None
    last_error: str | None
    response_code: str | None
    state_reason: str | None
    operator: str | None
    updated_at: datetime


@dataclass(frozen=True)
class SafStats:
    connector: str
    depth: int
    oldest_enqueued_at: datetime | None
    dead_letters: int


@dataclass(frozen=True)
class BusinessDay:
    """One business date of one connector: ``open`` (new rows get it) or ``closed`` by a cutover."""

    connector: str
    business_date: str
    state: str
    opened_at: datetime
    closed_at: datetime | None
    closed_by: str | None
