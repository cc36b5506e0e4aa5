"""Transaction ids that sort by creation time (ULID layout, Crockford base32).

Sortable ids keep index inserts append-only and make "what happened around
then" obvious to an operator reading raw rows.
"""

from __future__ import annotations

import os
import threading
import time

from switch.domain.panscan import looks_like_pan
from switch.journal.entropy import random_bytes

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_BYTES = 10
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> two characters
_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def new_txn_id() -> str:
    """A 26-character id: 48 bits of milliseconds then 80 bits that increase within one millisecond.

    An id that happens to hold a Luhn-valid run of 13-19 digits would look like a card
    number to the journal's guard (and to any log scanner), so such a value is skipped.
    """
    return new_txn()[0]


def new_txn() -> tuple[str, int]:
    """A `new_txn_id` and the 128 bits it spells: what holds many ids for long keeps the number, 48 bytes
    where the text takes 80, and spells it again with `txn_text` (a payment held at its bank, issue 13)."""
    while True:
        value = _next_value()
        candidate = txn_text(value)
        if not looks_like_pan(candidate):
            return candidate, value


def txn_text(value: int) -> str:
    """The id that 128-bit ``value`` spells (`new_txn`)."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(120, -1, -10)])


def _forget_last() -> None:
    """A forked child starts its own sequence (`switch.journal.entropy` gives it fresh bits)."""
    global _last_ms
    _last_ms = -1


os.register_at_fork(after_in_child=_forget_last)


def _next_value() -> int:
    global _last_ms, _last_random
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            now_ms = _last_ms
            _last_random = (_last_random + 1) % (1 << _RANDOM_BITS)
            if _last_random == 0:
                now_ms += 1
        else:
            _last_random = int.from_bytes(random_bytes(_RANDOM_BYTES), "big") >> 1
        _last_ms = now_ms
        return (now_ms << _RANDOM_BITS) | _last_random
