"""Transaction ids that sort by creation time (ULID layout, Crockford base32).

Sortable ids keep index inserts append-only and make "what happened around
then" obvious to an operator reading raw rows.
"""

from __future__ import annotations

import os
import threading
import time

from switch.domain.panscan import looks_like_pan

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_BYTES = 10
# os.urandom read 1,024 ids' worth at a time: each call is a system call that gives up the GIL,
# and on a busy switch taking the GIL back cost more than the id itself.
_POOL_BYTES = _RANDOM_BYTES * 1024
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> two characters
_lock = threading.Lock()
_last_ms = -1
_last_random = 0
_pool = b""
_pool_at = 0


def new_txn_id() -> str:
    """A 26-character id: 48 bits of milliseconds then 80 bits that increase within one millisecond.

    An id that happens to hold a Luhn-valid run of 13-19 digits would look like a card
    number to the journal's guard (and to any log scanner), so such a value is skipped.
    """
    while True:
        candidate = _next_id()
        if not looks_like_pan(candidate):
            return candidate


def _random() -> int:
    """80 random bits (called under ``_lock``)."""
    global _pool, _pool_at
    if _pool_at >= len(_pool):
        _pool, _pool_at = os.urandom(_POOL_BYTES), 0
    chunk = _pool[_pool_at : _pool_at + _RANDOM_BYTES]
    _pool_at += _RANDOM_BYTES
    return int.from_bytes(chunk, "big")


def _forget_pool() -> None:
    """A forked child must not hand out the random bits its parent will also use."""
    global _pool, _pool_at, _last_ms
    _pool, _pool_at, _last_ms = b"", 0, -1


os.register_at_fork(after_in_child=_forget_pool)


def _next_id() -> str:
    global _last_ms, _last_random
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            now_ms = _last_ms
            _last_random = (_last_random + 1) % (1 << _RANDOM_BITS)
            if _last_random == 0:
                now_ms += 1
        else:
            _last_random = _random() >> 1
        _last_ms = now_ms
        value = (now_ms << _RANDOM_BITS) | _last_random
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(120, -1, -10)])
