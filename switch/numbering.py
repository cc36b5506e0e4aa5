"""Trace numbers: STAN (field 11) per connector and RRN (field 37) per business day.

A bank matches its response to our request, and duplicate-checks our requests, with
these numbers.  A STAN handed out twice while the first request is still unanswered
would let one card's response settle another card's request, so the allocator keeps
every number that is in use and skips it until it is released.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable

STAN_MAX = 999_999
_SECONDS_PER_DAY = 86_400


class StanExhausted(RuntimeError):
    """All 999 999 STANs are in use: the connector has far more requests pending than any bank allows."""


class StanAllocator:
    """Hands out STANs 000001-999999 in order, wrapping, never one still in use.

    ``start`` lets a connector begin where a previous process would have been rather
    than at 000001 again (see `stan_start`): banks duplicate-check recent STANs.
    """

    def __init__(self, start: int = 1) -> None:
        if not 1 <= start <= STAN_MAX:
            raise ValueError(f"STAN start must be 1..{STAN_MAX}, got {start}")
        self._next = start
        self._in_use: set[int] = set()

    def __len__(self) -> int:
        return len(self._in_use)

    def __contains__(self, stan: object) -> bool:
        return isinstance(stan, str) and stan.isdigit() and int(stan) in self._in_use

    def allocate(self) -> str:
        """The next free STAN, marked in use until `release`."""
        if len(self._in_use) >= STAN_MAX:
            raise StanExhausted(f"all {STAN_MAX} STANs are in use")
        candidate = self._next
        while candidate in self._in_use:
            candidate = candidate % STAN_MAX + 1
        self._next = candidate % STAN_MAX + 1
        self._in_use.add(candidate)
        return f"{candidate:06d}"

    def claim(self, stan: str) -> str:
        """Mark a given STAN in use: the repeat of an advice carries its original's STAN."""
        self._in_use.add(int(stan))
        return stan

    def release(self, stan: str) -> None:
        self._in_use.discard(int(stan))


def stan_start(now: float) -> int:
    """A STAN to start from: ten per second since midnight UTC, so a restart later in
    the day starts past the numbers a modest-volume previous run already used."""
    return int(now % _SECONDS_PER_DAY * 10) % STAN_MAX + 1


class RrnAllocator:
    """Retrieval reference numbers (field 37, an12) unique within a business day.

    Format ``YDDDnnnnnnnn``: last digit of the year, day of the year (001-366) and an
    eight-digit sequence.  The sequence is tied to the clock: each RRN takes
    ``max(previous + 1, milliseconds since the start of the day)``.  It therefore never
    repeats within a process, and a process started later the same day begins at its
    own start time in milliseconds, past every number an earlier run handed out
    unless that run averaged more than 1000 RRNs per second for its whole life (it
    then runs ahead of the clock and a restart could meet its numbers).  No file or
    database is needed, which matters because an RRN is allocated before the journal
    write that would otherwise have to persist it.  86 400 000 ms fit in eight digits;
    the day (in ``utc_offset`` hours, the bank's business-day zone) resets the sequence.

    When several switch processes share a bank, give each a distinct ``node`` digit: it
    replaces the year digit, trading the ten-year span for uniqueness across nodes.
    """

    def __init__(self, now: Callable[[], float], utc_offset: float = 0.0, node: int | None = None) -> None:
        if node is not None and not 0 <= node <= 9:
            raise ValueError(f"RRN node must be a single digit, got {node}")
        self._now = now
        self._zone = timezone(timedelta(hours=utc_offset))
        self._node = node
        self._day: str | None = None
        self._last = -1

    def allocate(self) -> str:
        moment = datetime.fromtimestamp(self._now(), self._zone)
        prefix = f"{moment.year % 10 if self._node is None else self._node}{moment.timetuple().tm_yday:03d}"
        if prefix != self._day:
            self._day, self._last = prefix, -1
        midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        clock_seq = int((moment - midnight).total_seconds() * 1000)
        self._last = max(self._last + 1, clock_seq)
        if self._last > 99_999_999:
            raise OverflowError("RRN sequence exhausted for the business day (over 1000 per second all day)")
        return f"{prefix}{self._last:08d}"
