"""Card number and expiry checks, PAN masking, and card scheme from the BIN.

These run before anything is sent to a bank, so a typo is refused with a clear
message instead of costing a round trip and an issuer decline. Masking follows
PCI DSS 3.4.1: a displayed PAN shows at most the first six and last four digits.

This module also owns the one scanner for card numbers inside free text
(`card_numbers`): a Luhn-valid run of 13-19 digits, unbroken or written in groups
separated by single spaces or dashes (``4012 8888 8888 1881``, ``3782-822463-10005``).
Logs mask what it finds (`redact_pans`), the suite's log scan and the journal's guard
look for it, and `plausible_card_number` narrows it to what a card scheme issues.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

PAN_MIN_DIGITS = 12
PAN_MAX_DIGITS = 19

_EXPIRY = re.compile(r"\d\d(0[1-9]|1[0-2])")
SCAN_MIN_DIGITS = 13
# Digit groups joined by single spaces or dashes; a lone group is an unbroken run.
_GROUPED_DIGITS = re.compile(r"(?<![0-9])[0-9]+(?:[ -][0-9]+)*", re.ASCII)
# A necessary condition, checked first because most text has no such run: 13 digits in a row,
# single spaces or dashes allowed between them.
_CANDIDATE = re.compile(r"[0-9](?:[ -]?[0-9]){12}", re.ASCII)
# Weaker still, and tested without the regex engine, which tries a character class at every digit of a
# digit-rich text (a log line, an ISO message as JSON) at some 12 ns a character: every `_CANDIDATE` match
# lies in 13 or more consecutive digits, spaces or dashes. `_shape` spells each of those "0" and every other
# character "x", one byte per character, so `bytes.find` locates such stretches and nothing else.
_RUN_SHAPE = bytes(0x30 if chr(code) in "0123456789 -" else 0x78 for code in range(256))
_STRETCH = b"0" * SCAN_MIN_DIGITS
# A digit's value, and the digit sum of its double (Luhn), by ASCII code.
_DIGIT_VALUES = bytes.maketrans(b"0123456789", bytes(range(10)))
_DOUBLED_DIGITS = bytes.maketrans(b"0123456789", bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))
# The lengths each scheme of `scheme` issues; with the prefix they make a run plausible as a card.
SCHEME_LENGTHS: dict[str, frozenset[int]] = {
    "visa": frozenset({13, 16, 19}),
    "mastercard": frozenset({16}),
    "amex": frozenset({15}),
    "jcb": frozenset(range(16, 20)),
    "unionpay": frozenset(range(16, 20)),
    "discover": frozenset(range(16, 20)),
}


def luhn_valid(number: str) -> bool:
    """True when a string of ASCII digits passes the Luhn (mod 10) check.

    Digits are summed as bytes, the doubled ones through a table, so the loop is in C: every
    request checks its PAN, its order id and its log line this way."""
    if not number.isascii() or not number.isdigit():
        return False
    data = number.encode("ascii")
    return (sum(data[-1::-2].translate(_DIGIT_VALUES)) + sum(data[-2::-2].translate(_DOUBLED_DIGITS))) % 10 == 0


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


def mask_last4(value: str) -> str:
    """Only the last four characters shown (account numbers, wallet ids); four or fewer are hidden entirely."""
    return "*" * (len(value) - 4) + value[-4:] if len(value) > 4 else "*" * len(value)


Spans = list[tuple[int, int]]
"""The (start, end) of each digit group of one window, in the scanned text."""


def _card_number_spans(text: str) -> Iterator[Spans]:
    """For each Luhn-valid window of 13-19 digits, where its digits are in ``text``.

    A window is a whole unbroken run, or consecutive whole groups of a grouped run; a
    run of 20 or more digits is no card number (ISO 8583 field 90 is 42 digits). A grouped
    run is split with string methods and only a window that passes Luhn is located: an order
    id or a log line holding a timestamp is scanned on every request.
    """
    for match in _long_runs(text):
        run = match.group()
        offset = match.start()
        if run.isdigit():  # unbroken: its own only window
            if len(run) <= PAN_MAX_DIGITS and luhn_valid(run):
                yield [(offset, match.end())]
            continue
        groups = run.replace("-", " ").split(" ")  # one separator between groups: offsets follow from lengths
        for first in range(len(groups)):
            count = 0
            for last in range(first, len(groups)):
                count += len(groups[last])
                if count > PAN_MAX_DIGITS:
                    break
                if count >= SCAN_MIN_DIGITS and luhn_valid("".join(groups[first : last + 1])):
                    yield _group_spans(groups, offset, first, last)


def _group_spans(groups: list[str], offset: int, first: int, last: int) -> Spans:
    """Where groups ``first`` to ``last`` of a run that starts at ``offset`` are in the text."""
    start = offset + sum(map(len, groups[:first])) + first
    spans = []
    for group in groups[first : last + 1]:
        spans.append((start, start + len(group)))
        start += len(group) + 1
    return spans


def _digits(text: str, spans: Spans) -> str:
    return "".join(text[start:end] for start, end in spans)


def _shape(text: str) -> bytes:
    """``text`` with one byte a character: "0" where a card number's run may go on (a digit, space or
    dash), "x" elsewhere. Non-ASCII characters become "?" first, which keeps the offsets a character each."""
    return text.encode("ascii", "replace").translate(_RUN_SHAPE)


def _long_runs(text: str) -> Iterator[re.Match[str]]:
    """The `_GROUPED_DIGITS` runs of ``text`` with 13 digits or more: each starts at a `_candidate`."""
    shape = _shape(text)
    position = 0
    while (candidate := _candidate(text, shape, position)) is not None:
        run = _GROUPED_DIGITS.match(text, candidate.start())
        assert run is not None, "a candidate starts a run"
        yield run
        position = run.end()


def _candidate(text: str, shape: bytes, position: int) -> re.Match[str] | None:
    """The leftmost `_CANDIDATE` match from ``position`` on, searched only in stretches of 13 or more digits,
    spaces or dashes. It starts a run: one digit earlier would match too, and a stretch starts after a
    character that is none of these, or at ``position`` where the last run ended, at a character no digit."""
    while (start := shape.find(_STRETCH, position)) >= 0:
        end = shape.find(b"x", start)
        end = len(text) if end < 0 else end
        if (candidate := _CANDIDATE.search(text, start, end)) is not None:
            return candidate
        position = end
    return None


def may_hold_card_number(text: str) -> bool:
    """A quick test that is False for most text: True when 13 digits could form a run `card_numbers` finds."""
    return len(text) >= SCAN_MIN_DIGITS and _candidate(text, _shape(text), 0) is not None


def card_numbers(text: str) -> Iterator[str]:
    """The digits of every Luhn-valid 13-19 digit run in ``text``, unbroken or grouped by spaces or dashes."""
    for spans in _card_number_spans(text):
        yield _digits(text, spans)


def plausible_card_number(digits: str) -> bool:
    """A Luhn-valid number with a card scheme's prefix and one of that scheme's lengths.

    Epoch-millisecond timestamps (``1732871234560``), sequential and date-prefixed
    order numbers pass Luhn one time in ten but carry no scheme's prefix.
    """
    lengths = SCHEME_LENGTHS.get(scheme(digits) or "")
    return lengths is not None and len(digits) in lengths and luhn_valid(digits)


def redact_pans(text: str) -> str:
    """``text`` with every run `card_numbers` finds masked to its first six and last four digits.

    Separators stay in place. Masking repeats until nothing is found, because digits
    left visible by one mask could form a new window with their neighbours.
    """
    if not may_hold_card_number(text):
        return text
    while True:
        hidden = {i for spans in _card_number_spans(text) for i in _positions(spans)[6:-4]}
        if not hidden:
            return text
        text = "".join("*" if i in hidden else char for i, char in enumerate(text))


def _positions(spans: Spans) -> list[int]:
    return [i for start, end in spans for i in range(start, end)]


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
