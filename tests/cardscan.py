"""Finding card data where it must never be: log lines and journal files.

A full PAN is a Luhn-valid run of 13-19 digits; a CVV is any value under a key that
names it, or the test cards' CVV in the CVV field; track data is a PAN followed by
the track-2 separator and an expiry (``;4111...=3012``) or track-1's ``%B4111...^``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from switch.domain.panscan import looks_like_pan

_CVV_KEY = re.compile(r"""["']?cvv2?["']?\s*[:=]\s*["']?(\d{3,4})\b""", re.IGNORECASE)
_CVV_FIELD = re.compile(r"""["']48["']\s*:\s*["']\d{3,4}["']""")
_TRACK = re.compile(r"(?:;\d{13,19}[=D]\d{4})|(?:%B\d{13,19}\^)")


def problems(line: str) -> list[str]:
    found = []
    if looks_like_pan(line):
        found.append("full PAN")
    if _CVV_KEY.search(line) or _CVV_FIELD.search(line):
        found.append("CVV")
    if _TRACK.search(line):
        found.append("track data")
    return found


def scan(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    for number, line in enumerate(lines, 1):
        found = problems(line)
        if found:
            yield number, found
