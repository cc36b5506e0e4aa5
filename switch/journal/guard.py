"""Refuses card data that must never be stored in clear.

The journal runs every text and byte value it writes through `check_value`, and
every caller-supplied dict (message fields, event payloads, SAF fields) through
`dump_fields`. A value that looks like a full PAN (a Luhn-valid run of 13-19
digits) or a key that names sensitive authentication data (CVV, track, PIN
block: PCI DSS 3.3.1) is refused with `CardDataRefused`, naming the column or key
but never echoing the value.

Timestamps inside payloads should therefore be ISO 8601 strings, not epoch
integers: a 13-digit epoch-millisecond number is Luhn-valid one time in ten.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from switch.cardcheck import luhn_valid
from switch.journal.errors import CardDataRefused, InvalidRecord
from switch.journal.panscan import looks_like_pan

_BYTE_DIGIT_RUN = re.compile(rb"(?<![0-9])[0-9]{13,19}(?![0-9])")

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
# `switch.masking.mask_full` output ("[37 masked]"): only the length is left, so a
# masked message may keep the key of a sensitive field.
_FULLY_MASKED = re.compile(r"\[\d{1,4} masked\]")
_PAN_KEYS = frozenset({"2", "pan", "card_number"})
_MASK_CHARS = frozenset("*Xx#")


def check_value(where: str, value: object) -> None:
    """Refuse a text or bytes value about to be written if it holds what looks like a full PAN."""
    if isinstance(value, str):
        if looks_like_pan(value):
            raise _refused(where)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        for match in _BYTE_DIGIT_RUN.finditer(bytes(value)):
            if luhn_valid(match.group().decode("ascii")):
                raise _refused(where)


def dump_fields(where: str, fields: Mapping[Any, Any]) -> str:
    """Validate a caller's dict and encode it as canonical JSON for storage.

    Keys may be ISO field numbers (int) or names; they are stored as strings.
    Values may be strings, ints, None, booleans, lists or nested dicts; floats are
    refused so that an amount can never be stored as one.
    """
    if not isinstance(fields, Mapping):
        raise InvalidRecord(f"{where} must be a mapping, got {type(fields).__name__}")
    clean = _clean(where, fields)
    text = orjson.dumps(clean, option=orjson.OPT_SORT_KEYS).decode()
    if looks_like_pan(text):
        _locate(where, clean)
        raise _refused(where)
    return text


def _locate(where: str, value: Any) -> None:
    """Name the value holding a PAN: run only once the whole text was refused (rare), so
    the per-message hot path scans the JSON once instead of every value twice."""
    if isinstance(value, dict):
        for name, item in value.items():
            _locate(f"{where}.{name}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _locate(f"{where}[{index}]", item)
    elif isinstance(value, (str, int)) and not isinstance(value, bool):
        check_value(where, str(value))


def load_fields(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    loaded: dict[str, Any] = orjson.loads(text)
    return loaded


def _clean(where: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        clean: dict[str, Any] = {}
        for key, item in value.items():
            name = _key(where, key)
            path = f"{where}.{name}"
            if name.lower() in FORBIDDEN_KEYS and not (isinstance(item, str) and _FULLY_MASKED.fullmatch(item)):
                raise CardDataRefused(
                    f"{path}: sensitive authentication data (CVV, track data, PIN block) is never stored; "
                    "drop the field or mask it with switch.masking before journaling"
                )
            if name.lower() in _PAN_KEYS and item is not None:
                _require_masked(path, item)
            clean[name] = _clean(path, item)
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


def _key(where: str, key: object) -> str:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise InvalidRecord(f"{where}: keys must be field numbers or names, got {type(key).__name__}")
    return str(key)


def _require_masked(path: str, value: object) -> None:
    text = str(value)
    digits = sum(char.isdigit() for char in text)
    if digits > 12 or not _MASK_CHARS.intersection(text):
        raise CardDataRefused(f"{path}: the PAN must be masked (first six and last four digits at most)")


def _refused(where: str) -> CardDataRefused:
    return CardDataRefused(
        f"{where}: refused a value that looks like a full card number (Luhn-valid run of 13-19 digits); "
        "mask it before it reaches the journal"
    )
