"""Keeps card data that must never be stored in clear out of the journal, by what a value is.

Card data reaches the journal only in its own columns, sealed: the PAN encrypted
(`switch.journal.vault`), masked and keyed-hashed. Everything else is checked by
its kind, the column or key it is written under:

* **References** (`REFERENCE_NAMES`: transaction, merchant, store and client ids,
  order ids, idempotency keys) are accepted whatever their digits. Their syntax is
  checked by `switch.journal.models`; the socket API refuses a reference that
  plausibly is a card number before anything is journalled (specs/socket-api.md).
* **Card-data keys** in a caller's dict: a PAN key (ISO field 2, ``pan``) holds a
  masked value only; a key naming sensitive authentication data (CVV, track data,
  PIN block: PCI DSS 3.3.1) is refused unless fully masked.
* **Everything else** (free text, message fields, event payloads, bytes) is refused
  when it holds a number a card scheme issues (`holds_card_number`: Luhn-valid, with a
  scheme's prefix and length, bare or grouped), a last net for a PAN in the wrong place.
  Epoch timestamps and order numbers that merely pass Luhn are stored.

A refusal is `CardDataRefused`, naming the column or key but never echoing the value.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

import orjson

from switch.domain.cardcheck import SCAN_MIN_DIGITS, may_hold_card_number
from switch.domain.panscan import holds_card_number
from switch.journal.errors import CardDataRefused, InvalidRecord

_BYTE_DIGIT_RUN = re.compile(rb"(?<![0-9])[0-9]{13,19}(?![0-9])")
_DIGIT_BYTES = b"0123456789"
# Columns, query parameters and payload keys that hold references: never scanned for card numbers.
# A query must name its parameter after the column it compares (``:order_id``, not ``:key``).
REFERENCE_NAMES = frozenset(
    {"txn_id", "parent_txn_id", "merchant_id", "store_id", "order_id", "idempotency_key", "client_id", "connector"}
)

# ISO 8583 fields 35 (track 2), 36 (track 3), 45 (track 1), 52 (PIN block) and the
# names callers tend to give card security codes, track data and PIN blocks.
FORBIDDEN_KEYS = frozenset(
    {
        "35", "36", "45", "52",
        "cvv", "cvv2", "cvc", "cvc2", "cvn", "cid", "csc", "cav2", "security_code", "card_security_code",
        "track", "track1", "track2", "track3", "track_1", "track_2", "track_3", "track_data",
        "pin", "pin_block", "pinblock",
    }
)
# `switch.iso.masking.mask_full` output ("[37 masked]"): only the length is left, so a
# masked message may keep the key of a sensitive field.
_FULLY_MASKED = re.compile(r"\[\d{1,4} masked\]")
_PAN_KEYS = frozenset({"2", "pan", "card_number"})
_MASK_CHARS = frozenset("*Xx#")
_PLAIN = frozenset({str, int, bool, type(None)})
_CARD_KEYS = FORBIDDEN_KEYS | _PAN_KEYS


class Guarded(str):
    """JSON text `dump_fields` made and scanned on the caller's thread: the writer thread does not
    scan it a second time (`check_value`). Only this module makes one, from a value it checked."""

    __slots__ = ()


class Derived(str):
    """Text the switch built itself only from parts that hold no card number: hashes spelt in base32
    or letters, and names validated when the config was loaded (a risk counter's name, a card's keyed
    hash).  `check_value` passes it without a scan, which the risk stage's per-payment queries need
    to stay cheap.  Never wrap text that came from outside, or that holds it."""

    __slots__ = ()


class Unguarded(NamedTuple):
    """A caller's dict that goes into a JSON column, checked and encoded by the journal's writer when the
    row is bound (`checked_params`), not by the caller (`guard_later`). Why: the scan and the encoding of
    a payment's messages were a tenth of the reactor's time per payment, and a writer process does them
    beside it instead; a refusal fails the unit that wrote the row, with the same `CardDataRefused`."""

    where: str
    fields: dict[Any, Any]


def guard_later(where: str, fields: Mapping[Any, Any]) -> Unguarded:
    """``fields`` to be checked and dumped as `dump_fields` does, by the writer that binds its row. A copy:
    the caller's dict may change before the writer takes the unit."""
    if not isinstance(fields, Mapping):
        raise InvalidRecord(f"{where} must be a mapping, got {type(fields).__name__}")
    return Unguarded(where, dict(fields))


def check_value(where: str, value: object) -> None:
    """Refuse a text or bytes value about to be written under column ``where`` if it holds a card number.

    A reference column (`REFERENCE_NAMES`), `Derived` text, text shorter than a card number and
    `Guarded` text (already scanned) are not scanned.
    """
    if where in REFERENCE_NAMES or type(value) is Derived:
        return
    if isinstance(value, str):
        if len(value) >= SCAN_MIN_DIGITS and type(value) is not Guarded and holds_card_number(value):
            raise _refused(where)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        for match in _BYTE_DIGIT_RUN.finditer(bytes(value)):
            if holds_card_number(match.group().decode("ascii")):
                raise _refused(where)


# Parameter types `checked_params` passes with one type look-up: nothing in them to scan.
_UNSCANNED = frozenset({int, float, bool, type(None), Guarded, Derived})


def checked_params(params: Mapping[str, object]) -> dict[str, object]:
    """Query parameters as the driver gets them: enum members as their values, each value checked as
    `check_value` does. Every parameter of every journal statement passes here on the writer thread,
    whose Python time the reactor waits for (one GIL): ints, None and scanned text cost a type look-up,
    plain text a length test, bytes one deletion, instead of two function calls each (a transaction's row:
    7.6 -> 4.2 µs). An `Unguarded` dict is dumped here."""
    bound = dict(params)
    for name, value in bound.items():
        kind = type(value)
        if kind in _UNSCANNED:
            continue
        if kind is str:
            if len(value) >= SCAN_MIN_DIGITS and name not in REFERENCE_NAMES and holds_card_number(value):
                raise _refused(name)
            continue
        if kind is Unguarded:
            bound[name] = dump_fields(value.where, value.fields)
            continue
        if isinstance(value, enum.Enum):
            value = bound[name] = value._value_  # the member's value without the property's descriptor call
            kind = type(value)
            if kind in _UNSCANNED or (kind is str and len(value) < SCAN_MIN_DIGITS):
                continue
        # A sealed card, a keyed hash: random bytes, as good as never 13 of them digits, told by one deletion.
        if kind is bytes and len(value) - len(value.translate(None, _DIGIT_BYTES)) < SCAN_MIN_DIGITS:
            continue
        check_value(name, value)
    return bound


def dump_fields(where: str, fields: Mapping[Any, Any]) -> Guarded:
    """Validate a caller's dict and encode it as canonical JSON for storage.

    Keys may be ISO field numbers (int) or names; they are stored as strings.
    Values may be strings, ints, None, booleans, lists or nested dicts; floats are
    refused so that an amount can never be stored as one. Values under reference
    keys (`REFERENCE_NAMES`) are not scanned for card numbers.
    """
    if not isinstance(fields, Mapping):
        raise InvalidRecord(f"{where} must be a mapping, got {type(fields).__name__}")
    clean = _clean(where, fields)
    try:
        text = orjson.dumps(clean, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError as e:  # an integer beyond 64 bits, a lone surrogate
        raise InvalidRecord(f"{where}: cannot be stored as JSON ({e})") from None
    if may_hold_card_number(text):  # most messages and payloads hold no 13-digit run at all
        _locate(where, clean)
    return Guarded(text)


def _locate(where: str, value: Any) -> None:
    """Refuse the first value (or key) holding a card number, naming it; reference values pass.  Run
    only when the whole text may hold one: a 15-digit card acceptor id (field 42) makes that every
    message of some banks, and testing its few long values costs a fraction of scanning the text
    again (JSON quotes end every run, so a card number in the text is one in a value or a key)."""
    if isinstance(value, dict):
        for name, item in value.items():
            if len(name) >= SCAN_MIN_DIGITS and holds_card_number(name):
                raise _refused(f"{where} (a key)")  # never the key itself: it is the card number
            if name not in REFERENCE_NAMES and _may_hold(item):
                _locate(f"{where}.{name}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if _may_hold(item):
                _locate(f"{where}[{index}]", item)
    elif holds_card_number(str(value)):
        raise _refused(where)


def _may_hold(value: Any) -> bool:
    """Whether `_locate` must look into ``value``: a container, or a text or integer long enough to
    hold a card number that passes the quick test."""
    kind = type(value)
    if kind is str:
        return len(value) >= SCAN_MIN_DIGITS and may_hold_card_number(value)
    if kind is int:
        return not -10**12 < value < 10**12
    return kind is dict or kind is list


def load_fields(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    loaded: dict[str, Any] = orjson.loads(text)
    return loaded


def _clean(where: str, value: Any) -> Any:
    if type(value) is dict and (flat := _clean_flat(where, value)) is not None:
        return flat
    if isinstance(value, Mapping):
        clean: dict[str, Any] = {}
        for key, item in value.items():
            name = key if type(key) is str else _key(where, key)
            lowered = name.lower()
            if lowered in _CARD_KEYS:
                _check_card_key(where, name, lowered, item)
            # A message is a flat dict of strings: plain values need no path and no recursion.
            clean[name] = item if type(item) in _PLAIN else _clean(f"{where}.{name}", item)
        return clean
    if isinstance(value, (list, tuple)):
        return [_clean(f"{where}[{index}]", item) for index, item in enumerate(value)]
    if isinstance(value, float):
        raise InvalidRecord(f"{where}: floats are not stored; use integer minor units or a string")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (str, int)):
        return value
    raise InvalidRecord(f"{where}: cannot store a value of type {type(value).__name__}")


def _clean_flat(where: str, value: dict[Any, Any]) -> dict[str, Any] | None:
    """A message as it is: a flat dict of plain values under keys of text in lower case (field numbers), checked
    with set operations rather than key by key (two per payment on the journal's writer); None for any other."""
    try:
        keys = "".join(value)
    except TypeError:  # a key that is not text
        return None
    if keys != keys.lower() or not _PLAIN.issuperset(map(type, value.values())):
        return None
    special: Collection[str] = _CARD_KEYS.intersection(value)
    if len(special) > 1:  # in the message's order, so the first refused is the one the general path names
        special = [name for name in value if name in special]
    for name in special:
        _check_card_key(where, name, name, value[name])
    return value


def _check_card_key(where: str, name: str, lowered: str, item: object) -> None:
    if lowered in FORBIDDEN_KEYS and not (isinstance(item, str) and _FULLY_MASKED.fullmatch(item)):
        raise CardDataRefused(
            f"{where}.{name}: sensitive authentication data (CVV, track data, PIN block) is never stored; "
            "drop the field or mask it with switch.iso.masking before journaling"
        )
    if lowered in _PAN_KEYS and item is not None:
        _require_masked(f"{where}.{name}", item)


def _key(where: str, key: object) -> str:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise InvalidRecord(f"{where}: keys must be field numbers or names, got {type(key).__name__}")
    return str(key)


def _require_masked(path: str, value: object) -> None:
    text = str(value)
    digits = sum(map(str.isdigit, text))
    if digits > 12 or not _MASK_CHARS.intersection(text):
        raise CardDataRefused(f"{path}: the PAN must be masked (first six and last four digits at most)")


def _refused(where: str) -> CardDataRefused:
    return CardDataRefused(
        f"{where}: refused a value that looks like a full card number (Luhn-valid, with a card scheme's prefix "
        "and length); mask it before it reaches the journal"
    )
