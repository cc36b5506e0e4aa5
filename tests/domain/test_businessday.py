"""Business-date arithmetic: field 15 (MMDD) as a full date, and when a scheduled cutover is due."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switch.domain.businessday import following, local_date, mmdd, nearest_date, next_cutover, parse_hhmm, zone

dates = st.dates(min_value=date(1901, 1, 1), max_value=date(9998, 12, 31))


@given(dates, st.integers(min_value=-150, max_value=150))
def test_a_date_within_five_months_is_recovered_from_its_mmdd(reference, offset):
    day = reference + timedelta(days=offset)
    if date(1900, 1, 1) < day < date(9999, 1, 1):
        assert nearest_date(mmdd(day), reference) == day


@given(st.text(max_size=6), dates)
def test_anything_else_is_none_or_a_date_near_the_reference(text, reference):
    found = nearest_date(text, reference)
    assert found is None or (abs((found - reference).days) <= 366 and mmdd(found) == text)


@pytest.mark.parametrize("text", ["1301", "0001", "0132", "0230", "12", "1231 ", "abcd", "", None, 1231])
def test_impossible_month_days_are_none(text):
    assert nearest_date(text, date(2026, 6, 15)) is None


def test_the_year_is_the_nearest_one_across_new_year():
    assert nearest_date("0101", date(2026, 12, 31)) == date(2027, 1, 1)
    assert nearest_date("1231", date(2027, 1, 1)) == date(2026, 12, 31)
    assert nearest_date("0229", date(2027, 1, 1)) == date(2028, 2, 29)  # the only leap year in reach


def test_a_cutover_time_is_the_next_local_time_strictly_after_now():
    tz = "Asia/Phnom_Penh"  # UTC+7, no daylight saving
    now = datetime(2026, 6, 15, 16, 0, tzinfo=timezone.utc).timestamp()  # 23:00 local
    due = next_cutover(now, time(23, 59), tz)
    assert datetime.fromtimestamp(due, ZoneInfo(tz)) == datetime(2026, 6, 15, 23, 59, tzinfo=ZoneInfo(tz))
    assert next_cutover(due, time(23, 59), tz) == due + 86400


@given(st.integers(min_value=0, max_value=4_000_000_000), st.integers(0, 23), st.integers(0, 59),
       st.sampled_from(["UTC", "Asia/Phnom_Penh", "Europe/Paris", "America/New_York", "Australia/Lord_Howe"]))
def test_the_next_cutover_is_within_a_day_and_a_bit(now, hour, minute, tz):
    due = next_cutover(float(now), time(hour, minute), tz)
    assert now < due <= now + 86400 + 3600


def test_local_dates_times_and_zones_are_checked():
    noon = datetime(2026, 6, 15, 20, 0, tzinfo=timezone.utc).timestamp()
    assert local_date(noon, "Asia/Phnom_Penh") == date(2026, 6, 16)
    assert local_date(noon, "UTC") == date(2026, 6, 15)
    assert parse_hhmm("00:00") == time(0, 0)
    for bad in ("24:00", "9:00", "12:60", "noon"):
        with pytest.raises(ValueError, match="HH:MM"):
            parse_hhmm(bad)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        zone("Mars/Olympus")
    assert following("2026-12-31") == "2027-01-01"
