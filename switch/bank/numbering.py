"""Trace numbers: STAN (field 11) per connector and RRN (field 37), unique across restarts.

A bank matches its response to our request, and duplicate-checks our requests, with
these numbers.  A STAN handed out twice while the first request is still unanswered
would let one card's response settle another card's request, so the allocator keeps
every number that is in use and skips it until it is released.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Callable

import structlog
from twisted.internet.defer import Deferred

log = structlog.get_logger("kswitch.numbering")

STAN_MAX = 999_999
_SECONDS_PER_DAY = 86_400


class StanExhausted(RuntimeError):
    """All 999 999 STANs are in use: the connector has far more requests pending than any bank allows."""


class StanAllocator:
    """Hands out STANs 000001-999999 in order, wrapping, never one still in use.

    ``start`` lets a connector begin where a previous process would have been rather
    than at 000001 again (see `stan_start`): banks duplicate-check recent STANs.

    A STAN may be held twice: an advice's repeat claims its original's number (`claim`) even
    while a new request of this run holds it (numbered from the time of day after a restart).
    Each holder releases its own hold; the number is free once both have.

    Why a bitmap: a table of the numbers held (a `Counter` before) took a dict entry per payment
    waiting on its bank, some 37 bytes each with 11,000 held (`bench/hold.sh`), and more after every
    doubling; one bit per number is 125 KB at most, touched page by page as the numbers advance, whatever
    the number held. The rare second holder is counted apart.
    """

    def __init__(self, start: int = 1) -> None:
        if not 1 <= start <= STAN_MAX:
            raise ValueError(f"STAN start must be 1..{STAN_MAX}, got {start}")
        self._next = start
        self._held = bytearray((STAN_MAX >> 3) + 1)  # bit n: number n is held at least once
        # numbers held more than once: their holders beyond the first; and numbers outside 1-999999: all their holders
        self._more: dict[int, int] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, stan: object) -> bool:
        if not (isinstance(stan, str) and stan.isascii() and stan.isdigit()):
            return False
        number = int(stan)
        if 1 <= number <= STAN_MAX:
            return bool(self._held[number >> 3] & (1 << (number & 7)))
        return number in self._more

    def allocate(self) -> str:
        """The next free STAN, marked in use until `release`."""
        if self._count >= STAN_MAX:
            raise StanExhausted(f"all {STAN_MAX} STANs are in use")
        held = self._held
        candidate = self._next
        while held[candidate >> 3] & (1 << (candidate & 7)):
            candidate = candidate % STAN_MAX + 1
        self._next = candidate % STAN_MAX + 1
        held[candidate >> 3] |= 1 << (candidate & 7)
        self._count += 1
        return f"{candidate:06d}"

    def claim(self, stan: str) -> str:
        """Hold a given STAN, whoever else holds it: the repeat of an advice carries its original's STAN
        (a number this allocator never hands out, 0 or past 999999, is held all the same, apart)."""
        number = _number(stan)
        if not 1 <= number <= STAN_MAX:
            self._more[number] = self._more.get(number, 0) + 1
            self._count += self._more[number] == 1
            return stan
        byte, bit = number >> 3, 1 << (number & 7)
        if self._held[byte] & bit:
            self._more[number] = self._more.get(number, 0) + 1
        else:
            self._held[byte] |= bit
            self._count += 1
        return stan

    def release(self, stan: str) -> None:
        """Give back one hold (a release of a number nobody holds changes nothing)."""
        number = _number(stan)
        more = self._more.get(number)
        if more is not None:
            if more > 1:
                self._more[number] = more - 1
            else:
                del self._more[number]
                self._count -= not 1 <= number <= STAN_MAX
            return
        if 1 <= number <= STAN_MAX:
            byte, bit = number >> 3, 1 << (number & 7)
            if self._held[byte] & bit:
                self._held[byte] &= ~bit & 0xFF
                self._count -= 1


def _number(stan: str) -> int:
    """A STAN's number: ``"42"`` and ``"000042"`` are one number; anything else is no STAN at all."""
    if not (stan.isascii() and stan.isdigit()):
        raise ValueError(f"a STAN is digits, got {stan!r}")
    return int(stan)


def stan_start(now: float) -> int:
    """A STAN to start from: ten per second since midnight UTC, so a restart later in
    the day starts past the numbers a modest-volume previous run already used."""
    return int(now % _SECONDS_PER_DAY * 10) % STAN_MAX + 1


class RrnUnavailable(RuntimeError):
    """No journalled RRN block is left: the journal has not confirmed the next reservation (it is
    far behind), or the business day has used all 100 000 000 sequence numbers."""


RRN_BLOCK = 100_000
_RRN_SEQUENCE = 100_000_000
Reserve = Callable[[int], "Deferred[int]"]


class RrnAllocator:
    """Retrieval reference numbers (field 37, an12) that never repeat, at any rate, across restarts.

    Format ``YDDDnnnnnnnn``: last digit of the year (or the ``node`` digit), day of the
    year (001-366) in the bank's business-day zone (``utc_offset`` hours), and the last
    eight digits of a counter that only goes up and is persisted in the journal.

    Why unique: the counter is handed out in blocks of ``block`` numbers, and a block is
    used only after the journal has durably recorded it as taken (``reserve(count)``
    fires with the first number of a block nobody else got).  A restart, however
    abrupt, reserves a fresh block above every number an earlier run could have used,
    whatever its rate; the unused rest of a block is simply skipped.  Two RRNs are
    therefore equal only if they carry the same day and counters 100 000 000 apart:
    more than 100 million RRNs in one business day (1 157 per second around the
    clock), which `allocate` refuses within a run.  One journal has one node (the
    journal lease), so one writer of the counter.

    The next block is reserved when half of the current one is used, so the journal
    has ``block / 2`` RRNs' worth of time to confirm it; until then `allocate` raises
    `RrnUnavailable` rather than repeat a number.  Call `start` (reserves the first
    block) before `allocate`.
    """

    def __init__(
        self, now: Callable[[], float], reserve: Reserve, *, utc_offset: float = 0.0, node: int | None = None,
        block: int = RRN_BLOCK,
    ) -> None:
        if node is not None and not 0 <= node <= 9:
            raise ValueError(f"RRN node must be a single digit, got {node}")
        if block < 2:
            raise ValueError(f"RRN block must be at least 2, got {block}")
        if utc_offset * 3600 % 1:
            raise ValueError(f"RRN zone offset must be whole seconds, got {utc_offset} hours")
        self._now = now
        self._reserve = reserve
        self._zone = timezone(timedelta(hours=utc_offset))
        self._node = node
        self._block = block
        self._blocks: deque[tuple[int, int]] = deque()  # reserved [first, end) ranges, in order
        self._left = 0  # what the blocks hold together, kept as they change: asked on every allocation
        self._second: int | None = None  # the whole second ``_prefix`` was computed for
        self._prefix = ""
        self._refilling = False
        self._day: str | None = None
        self._day_first = 0

    def start(self) -> Deferred[None]:
        """Reserve the first block; fires once it is durable."""
        return self._reserve(self._block).addCallback(self._add)

    @property
    def available(self) -> int:
        """RRNs that can be handed out without another reservation."""
        return self._left

    def allocate(self) -> str:
        if not self._blocks:
            self._refill()
            raise RrnUnavailable("no RRN block is reserved yet: the journal has not confirmed one")
        prefix = self._day_prefix(int(self._now()))
        first, end = self._blocks[0]
        if prefix != self._day:
            self._day, self._day_first = prefix, first
        if first - self._day_first >= _RRN_SEQUENCE:
            raise RrnUnavailable(f"over {_RRN_SEQUENCE} RRNs in business day {prefix}: the next would repeat one")
        if first + 1 == end:
            self._blocks.popleft()
        else:
            self._blocks[0] = (first + 1, end)
        self._left -= 1
        if self._left <= self._block // 2:
            self._refill()
        return f"{prefix}{first % _RRN_SEQUENCE:08d}"

    def _day_prefix(self, second: int) -> str:
        """``YDDD`` of ``second``, computed once a second: a day starts on a whole second in any zone."""
        if second != self._second:
            moment = datetime.fromtimestamp(second, self._zone)
            self._prefix = f"{moment.year % 10 if self._node is None else self._node}{moment.timetuple().tm_yday:03d}"
            self._second = second
        return self._prefix

    def _refill(self) -> None:
        if self._refilling:
            return
        self._refilling = True

        def done(result: object) -> object:
            self._refilling = False
            return result

        self._reserve(self._block).addCallback(self._add).addBoth(done).addErrback(
            lambda f: log.error("rrn_block_not_reserved", error=f.getErrorMessage())
        )

    def _add(self, first: int) -> None:
        self._blocks.append((first, first + self._block))
        self._left += self._block
