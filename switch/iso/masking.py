"""Masking of card data before anything is logged, traced or shown.

PCI DSS 3.4.1 allows at most the BIN (first six) and the last four digits of a PAN
to be displayed; everything else a dialect marks sensitive is replaced entirely, so a
log line or a trace can be shared with a bank without leaking card data.

A bank may also put card data where nobody expects it (a PAN echoed in field 34, 44
or 63, track data in a private field).  `mask_message` therefore scans every other
value too: a Luhn-valid run of 13-19 digits, unbroken or grouped by spaces or dashes,
keeps only its first six and last four digits, and a value holding track data
(``;PAN=YYMM...?``, ``%B...^``, or a bare ``PAN=YYMM...``) is masked entirely.  After
masking nothing in the message looks like a PAN to the journal's guard, so such a
message is still journalled, only masked.
"""

from __future__ import annotations

import re
from typing import Mapping

from switch.domain.cardcheck import SCAN_MIN_DIGITS, mask_last4, mask_pan, redact_pans
from switch.iso.dialect import ALWAYS_SENSITIVE, Dialect

__all__ = ["mask_pan", "mask_last4", "mask_full", "mask_message", "mask_card_data"]

_TRACK = re.compile(
    r"[;%]?B?[0-9]{12,19}[=^D][0-9]{4}"  # track 2 (``;PAN=YYMM``, ``PAN D YYMM``) or the start of track 1
    r"|%[A-Z][0-9]{12,19}\^"  # track 1 format B: ``%BPAN^NAME^``
    r"|[0-9]{12,19}\^[^^]{0,26}\^[0-9]{4}",  # track 1 without its sentinel: ``PAN^NAME^YYMM``
    re.ASCII,
)


def mask_full(value: str) -> str:
    return f"[{len(value)} masked]"


_STYLES = {"pan": mask_pan, "last4": mask_last4, "full": mask_full}


_CLEAN_VALUES_KEPT = 1024
_clean: dict[str, None] = {}
"""Long values found to hold no card data. Why: the ones a payment's messages carry are mostly the same
every time (its merchant's card acceptor id and name and location, fields 42 and 43, in the request and
the answer), and scanning them was about 5 µs of the reactor a payment. Only text that holds no card data
is kept, so nothing here needs protecting; bounded, and emptied when full."""


def mask_card_data(value: str) -> str:
    """``value`` with any card data it holds masked: track data entirely, a PAN down to six and four.

    A value shorter than a card number (most fields of a message) holds neither, and track data is
    longer still (12 digits, a separator, 4 digits): it is returned without running the patterns."""
    if len(value) < SCAN_MIN_DIGITS or value in _clean:
        return value
    if _TRACK.search(value) is not None:
        return mask_full(value)
    masked = redact_pans(value)
    if masked is value:
        if len(_clean) >= _CLEAN_VALUES_KEPT:
            _clean.clear()
        _clean[value] = None
    return masked


def mask_message(message: Mapping[str, str], dialect: Dialect | None = None) -> dict[str, str]:
    """A copy of an ISO message that is safe to log or journal: sensitive fields masked, and card
    data found in any other field masked as well."""
    styles = dialect.mask_styles if dialect is not None else _ALWAYS_SENSITIVE_STYLES
    out = dict(message)  # most fields are copied as they are: only the few long enough to hide a PAN are scanned
    for number, value in message.items():
        style = styles.get(number)
        if style is not None:
            out[number] = _STYLES[style](value)
        elif isinstance(value, str) and len(value) >= SCAN_MIN_DIGITS and number != "t":
            out[number] = mask_card_data(value)
    return out


_ALWAYS_SENSITIVE_STYLES = {number: "pan" if number == "2" else "full" for number in ALWAYS_SENSITIVE}
