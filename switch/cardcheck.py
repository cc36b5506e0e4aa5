"""Card number and expiry checks, PAN masking, and card scheme from the BIN.

These run before anything is sent to a bank, so a typo is refused with a clear
message instead of costing a round trip and an issuer decline. Masking follows
PCI DSS 3.4.1: a displayed PAN shows at most the first six and last four digits.
"""

from __future__ import annotations

import re

PAN_MIN_DIGITS = 12
PAN_MAX_DIGITS = 19

_EXPIRY = re.compile(r"\d\d(0[1-9]|1[0-2])")
_PAN_LIKE = re.compile(r"(?<!\d)[1-9]\d{11,18}(?!\d)")


def luhn_valid(number: str) -> bool:
    """True when a string of ASCII digits passes the Luhn (mod 10) check."""
    if not number.isascii() or not number.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = ord(char) - 48
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def luhn_check_digit(partial: str) -> str:
    """The digit that makes ``partial + digit`` pass Luhn; test data and simulators need it."""
    for digit in "0123456789":
        if luhn_valid(partial + digit):
            return digit
    raise ValueError("expected a string of ASCII digits")


def valid_pan(pan: str) -> bool:
    """12 to 19 ASCII digits passing Luhn."""
    return PAN_MIN_DIGITS <= len(pan) <= PAN_MAX_DIGITS and luhn_valid(pan)


def mask_pan(pan: str) -> str:
    """First six and last four shown, the rest replaced by ``*``.

    Too short to hide anything that way (fewer than 13 characters would leave two
    or fewer digits hidden) means only the last four are shown; four or fewer
    characters are hidden entirely. The result always has the input's length.
    """
    length = len(pan)
    if length >= 13:
        return pan[:6] + "*" * (length - 10) + pan[-4:]
    if length > 4:
        return "*" * (length - 4) + pan[-4:]
    return "*" * length


def redact_pans(text: str) -> str:
    """Mask every run of 12–19 digits that passes Luhn, for free text bound for a log.

    Runs with a leading zero are left alone: no card number starts with 0 (MII 0
    is not issued), but zero-padded RRNs and amounts do.
    """
    return _PAN_LIKE.sub(lambda m: mask_pan(m.group()) if luhn_valid(m.group()) else m.group(), text)


def valid_expiry(expiry: str) -> bool:
    """``YYMM`` with a month from 01 to 12 (ISO 8583 field 14)."""
    return len(expiry) == 4 and expiry.isascii() and _EXPIRY.fullmatch(expiry) is not None


def scheme(pan: str) -> str | None:
    """Card scheme from the leading digits, or None when the BIN is not one we know.

    ``62`` is China UnionPay even where Discover also accepts it (622126–622925),
    because routing to a UnionPay acquirer is what such a card needs.
    """
    if len(pan) < 6 or not pan[:6].isdigit():
        return None
    two, three, four = int(pan[:2]), int(pan[:3]), int(pan[:4])
    if pan[0] == "4":
        return "visa"
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "mastercard"
    if two in (34, 37):
        return "amex"
    if 3528 <= four <= 3589:
        return "jcb"
    if two == 62 or 8100 <= four <= 8171:
        return "unionpay"
    if four == 6011 or two == 65 or 644 <= three <= 649:
        return "discover"
    return None
