"""Persisted counters: numbers a node hands out that must never repeat, even after a crash.

A counter only goes up.  `reserve` takes a block of ``count`` numbers in the caller's
database transaction and returns its first number: once that commits, no later
reservation (by this process or the next one) can return any number of the block.
Used for RRN blocks (`switch.bank.numbering.RrnAllocator`).
"""

from __future__ import annotations

from switch.journal.db import Db
from switch.journal.errors import InvalidRecord, StorageError


def reserve(db: Db, name: str, count: int) -> int:
    """Take ``count`` numbers from counter ``name`` (created at 0); the first of them."""
    if count < 1:
        raise InvalidRecord(f"a counter block needs at least 1 number, got {count}")
    row = db.one("SELECT value FROM counters WHERE name = :name", {"name": name})
    if row is None:
        db.execute("INSERT INTO counters (name, value) VALUES (:name, :value)", {"name": name, "value": count})
        return 0
    first = int(row["value"])
    moved = db.execute(
        "UPDATE counters SET value = :next WHERE name = :name AND value = :first",
        {"name": name, "next": first + count, "first": first},
    )
    if moved != 1:
        raise StorageError(f"counter {name!r} changed under this node: is another process writing this journal?")
    return first
