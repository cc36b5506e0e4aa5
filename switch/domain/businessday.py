"""Business-date arithmetic: a bank's MMDD settlement date as a full date, and when a cutover is due.

Why pure functions: the engine, banksim and the tests must agree on the same calendar
rules, and the year a bank leaves out of field 15 (MMDD) is a guess best made in one place.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MMDD = re.compile(r"(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])", re.ASCII)
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])", re.ASCII)


def nearest_date(mmdd: object, reference: date) -> date | None:
    """Field 15 (MMDD) as the date with that month and day nearest to ``reference``.

    A bank's settlement date is within days of ours, so of the candidates in the year
    before, the same year and the year after, the closest wins (a tie goes to the later
    one: a bank that already cut over is ahead, not a year behind). None when ``mmdd`` is
    not a real month and day in any of those years (``1331``, ``0230``, text).
    """
    if not isinstance(mmdd, str) or not _MMDD.fullmatch(mmdd):
        return None
    month, day = int(mmdd[:2]), int(mmdd[2:])
    candidates = []
    for year in (reference.year - 1, reference.year, reference.year + 1):
        try:
            candidates.append(date(year, month, day))
        except ValueError:
            continue  # 29 February outside a leap year
    if not candidates:
        return None
    return min(candidates, key=lambda d: (abs((d - reference).days), -d.toordinal()))


def mmdd(day: date) -> str:
    """The inverse of `nearest_date` for field 15."""
    return day.strftime("%m%d")


def zone(name: str) -> ZoneInfo:
    """An IANA time zone; ValueError naming it when the system does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; expected an IANA name such as Asia/Phnom_Penh") from None


def parse_hhmm(text: str) -> time:
    """``"23:59"`` as a local time of day; ValueError for anything else."""
    match = _HHMM.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"expected a 24-hour time HH:MM such as 23:59, got {text!r}")
    return time(int(match[1]), int(match[2]))


def local_date(now: float, tz: str) -> date:
    """The calendar date at Unix time ``now`` in time zone ``tz``."""
    return datetime.fromtimestamp(now, timezone.utc).astimezone(zone(tz)).date()


def next_cutover(now: float, at: time, tz: str) -> float:
    """The Unix time of the next ``at`` (local, in ``tz``) strictly after ``now``.

    A local time that a daylight-saving jump skips is taken at the instant the clocks
    land on (zoneinfo's fold rules); one repeated by a jump back is taken the first time.
    """
    tzinfo = zone(tz)
    today = datetime.fromtimestamp(now, timezone.utc).astimezone(tzinfo).date()
    for offset in range(0, 3):
        candidate = datetime.combine(today + timedelta(days=offset), at, tzinfo).timestamp()
        if candidate > now:
            return candidate
    raise AssertionError("unreachable: a local time recurs within two days")


def following(business_date: str) -> str:
    """The business date after ``business_date`` (YYYY-MM-DD)."""
    return (date.fromisoformat(business_date) + timedelta(days=1)).isoformat()
