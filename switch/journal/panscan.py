"""Recognising full card numbers in text: the test the card-data guard and error messages share."""

from __future__ import annotations

import re

from switch.cardcheck import luhn_valid

_DIGIT_RUN = re.compile(r"(?<!\d)\d{13,19}(?!\d)", re.ASCII)
_GROUP_HINT = re.compile(r"\d{4}[ -]\d{4}", re.ASCII)
_GROUPED = re.compile(
    r"(?<![\d])(?:\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?|\d{4}([ -])\d{6}\2\d{5})(?![\d])",
    re.ASCII,
)


def looks_like_pan(text: str) -> bool:
    """True when the text holds a Luhn-valid 13-19 digit run, bare or in 4-4-4-4 / 4-6-5 groups."""
    for match in _DIGIT_RUN.finditer(text):
        if luhn_valid(match.group()):
            return True
    if _GROUP_HINT.search(text) is None:  # cheap pre-check: the grouped pattern is the slow one
        return False
    for match in _GROUPED.finditer(text):
        if luhn_valid(re.sub(r"\D", "", match.group())):
            return True
    return False


def safe_repr(value: object, limit: int = 64) -> str:
    """repr() for error messages about caller input: never echoes something that may be a PAN."""
    text = repr(value)
    if len(text) > limit or looks_like_pan(text):
        return f"<{type(value).__name__} withheld>"
    return text
