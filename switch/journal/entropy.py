"""Random bytes for nonces and ids, read from the operating system in blocks.

Why: ``os.urandom`` is a system call that gives up the GIL; on a busy switch the journal
writer takes it meanwhile, and taking it back cost the reactor far more (about 125 µs a
payment under load) than the 12-byte nonce that sealing a PAN needs. The bytes come from
the same CSPRNG, only read 8 KB at a time; none is handed out twice, and a forked child
drops what its parent also holds.
"""

from __future__ import annotations

import os
import threading

_BLOCK = 8192
_lock = threading.Lock()
_pool = b""
_at = 0


def random_bytes(n: int) -> bytes:
    """``n`` (at most 8,192) bytes from the operating system's CSPRNG, each handed out once."""
    global _pool, _at
    with _lock:
        if _at + n > len(_pool):
            _pool, _at = os.urandom(max(_BLOCK, n)), 0
        chunk = _pool[_at : _at + n]
        _at += n
        return chunk


def _forget() -> None:
    """A forked child must not hand out the bytes its parent will also use."""
    global _pool, _at
    _pool, _at = b"", 0


os.register_at_fork(after_in_child=_forget)
