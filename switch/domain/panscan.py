"""Recognising card numbers in text: the tests the card-data guard, log scans and error messages share.

Both build on `switch.domain.cardcheck.card_numbers` (Luhn-valid 13-19 digit runs, unbroken
or grouped by spaces or dashes):

* `looks_like_pan` is the broad test, for logs and for ids the switch makes itself:
  anything that could be read as a card number.
* `holds_card_number` is the narrow test, for text the journal stores: a run that
  also has a card scheme's prefix and length, so timestamps and order numbers pass.
"""

from __future__ import annotations

from switch.domain.cardcheck import card_numbers, plausible_card_number


def looks_like_pan(text: str) -> bool:
    """True when the text holds a Luhn-valid 13-19 digit run, bare or grouped by spaces or dashes."""
    return next(card_numbers(text), None) is not None


def holds_card_number(text: str) -> bool:
    """True when the text holds a run `looks_like_pan` finds that also has a card scheme's prefix and length."""
    return any(plausible_card_number(digits) for digits in card_numbers(text))


def safe_repr(value: object, limit: int = 64) -> str:
    """repr() for error messages about caller input: never echoes something that may be a PAN."""
    text = repr(value)
    if len(text) > limit or looks_like_pan(text):
        return f"<{type(value).__name__} withheld>"
    return text
