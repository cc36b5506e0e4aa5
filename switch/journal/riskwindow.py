"""A risk counter's sliding window, as the rules count in it and as the journal stores it."""

from __future__ import annotations

import functools
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from switch.journal.guard import Derived

Reservation = tuple[str, int, int, int]
"""What a cumulative rule added for one payment: (counter, count, amount, slot start µs)."""
Add = tuple[str, int, int, int, int]
"""What a payment counted in one counter: (counter, slot start µs, count, amount, slot expiry µs)."""

_MAX = 2**63 - 1  # a slot's count and amount are signed 64-bit integers as stored, and saturate here
_TO_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
_FROM_LETTERS = str.maketrans("abcdefghijklmnop", "0123456789abcdef")


@dataclass(slots=True)
class Window:
    """One counter: its slots that may still be inside its window, oldest first, as a flat list
    ``[start, count, amount, start, count, amount, ...]`` (start in µs), which packs and unpacks
    in C (`array`) rather than slot by slot.

    A rule decides what a slot is (a tenth of its window, or a calendar day) and which slots
    still count (`total` from ``since``); the window only adds them up.
    """

    name: str
    slots: list[int]
    expires_at: int = 0
    changed: bool = False
    through: int = 0
    """On SQLite: the adds journalled with payments (numbered, `switch.journal.riskmemo`) up to this number are
    in ``slots``; the later ones are in their payments' rows."""

    def total(self, since: int) -> tuple[int, int]:
        """(count, amount) of the slots that start at ``since`` or later."""
        s, count, amount = self.slots, 0, 0
        for i in range(0, len(s), 3):
            if s[i] >= since:
                count += s[i + 1]
                amount += s[i + 2]
        return count, amount

    def add(self, start: int, count: int, amount: int, since: int, expires_at: int) -> int:
        """Count into the slot starting at ``start``; slots older than ``since`` are dropped, so what is
        left is the window's from ``since``: its count is returned (summed in C, not slot by slot; every
        rule that checks an amount reads it with `total` before it adds)."""
        s = self.slots
        old = 0
        while old < len(s) and s[old] < since:
            old += 3
        del s[:old]
        i = len(s) - 3  # the newest slot is nearly always the one counted into
        while i >= 0 and s[i] > start:
            i -= 3
        if i >= 0 and s[i] == start:
            s[i + 1], s[i + 2] = min(s[i + 1] + count, _MAX), min(s[i + 2] + amount, _MAX)
        else:
            s[i + 3:i + 3] = [start, count, amount]
        if expires_at > self.expires_at:
            self.expires_at = expires_at
        self.changed = True
        return sum(s[1::3])

    def take_back(self, start: int, count: int, amount: int) -> None:
        """Undo an `add` into slot ``start``; nothing when that slot has left the window."""
        s = self.slots
        for i in range(0, len(s), 3):
            if s[i] == start:
                s[i + 1], s[i + 2] = max(s[i + 1] - count, 0), max(s[i + 2] - amount, 0)
                self.changed = True
                return

    def packed(self) -> Derived:
        """The slots as stored: little-endian 64-bit integers in hex spelt with the letters a-p.  Text
        without a single digit holds no card number, so the card-data guard need not scan it."""
        packed = array("q", self.slots)
        if sys.byteorder == "big":
            packed.byteswap()
        return Derived(packed.tobytes().hex().translate(_TO_LETTERS))

    def restorer(self) -> Callable[[], None]:
        """How to put this window back as it is now (a rolled-back unit's adds go with it)."""
        return functools.partial(self.restore, self.state())

    def state(self) -> tuple[list[int], int, bool, int]:
        """This window as it is now, for `restore`."""
        return self.slots[:], self.expires_at, self.changed, self.through

    def restore(self, state: tuple[list[int], int, bool, int]) -> None:
        self.slots, self.expires_at, self.changed, self.through = state


def stored_window(name: str, text: str | None, expires_at: int, through: int = 0) -> Window:
    """A window as stored (`Window.packed`)."""
    if not text:
        return Window(name, [], int(expires_at), through=int(through))
    packed = array("q", bytes.fromhex(text.translate(_FROM_LETTERS)))
    if sys.byteorder == "big":
        packed.byteswap()
    return Window(name, packed.tolist(), int(expires_at), through=int(through))
