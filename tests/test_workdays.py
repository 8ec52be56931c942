"""Chinese working days: holidays and 调休 from chinesecalendar, the override file, estimated years — hand-checked."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings, strategies as st

from cx.hub.timeliness import load_calendar
from cx.hub.workdays import CalendarFileError, WorkCalendar, YearOverride, load_overrides, parse_overrides

D = date.fromisoformat


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return load_calendar(None)  # chinesecalendar and the calendar file shipped with cx


def test_2016_spring_festival_make_up_saturday_and_holiday_monday(cal):
    assert D("2016-02-06").weekday() == 5 and cal.is_workday(D("2016-02-06"))  # 调休: a Saturday worked
    assert D("2016-02-08").weekday() == 0 and not cal.is_workday(D("2016-02-08"))  # 春节: a Monday off


@pytest.mark.parametrize("day, working", [
    # 2025 春节: 28 Jan – 4 Feb off; Sunday 26 Jan and Saturday 8 Feb worked
    ("2025-01-26", True), ("2025-01-27", True), ("2025-01-28", False), ("2025-02-04", False),
    ("2025-02-05", True), ("2025-02-08", True), ("2025-02-09", False),
    # 2025 国庆 and 中秋: 1–8 Oct off; Sunday 28 Sep and Saturday 11 Oct worked
    ("2025-09-28", True), ("2025-09-30", True), ("2025-10-01", False), ("2025-10-06", False),
    ("2025-10-08", False), ("2025-10-09", True), ("2025-10-11", True), ("2025-10-12", False),
    # 2026 春节: 15–23 Feb off; Saturdays 14 and 28 Feb worked
    ("2026-02-13", True), ("2026-02-14", True), ("2026-02-15", False), ("2026-02-23", False),
    ("2026-02-24", True), ("2026-02-28", True),
    # 2026 国庆: 1–7 Oct off; Sunday 20 Sep and Saturday 10 Oct worked
    ("2026-09-20", True), ("2026-10-01", False), ("2026-10-07", False), ("2026-10-08", True),
    ("2026-10-10", True), ("2026-10-11", False),
])
def test_2025_and_2026_spring_festival_and_national_day(cal, day, working):
    assert cal.is_workday(D(day)) is working


@pytest.mark.parametrize("event, limit, deadline", [
    # Friday before 春节 2025: Sun 26 Jan (1), Mon 27 (2), 5–7 Feb (3–5), Sat 8 Feb (6), Mon 10 Feb (7)
    ("2025-01-24", 7, "2025-02-10"),
    # 2026 国庆: Wed 30 Sep; 8, 9 Oct (1, 2), Sat 10 Oct (3), 12–15 Oct (4–7)
    ("2025-09-30", 1, "2025-10-09"),
    ("2026-09-30", 7, "2026-10-15"),
    # an event on a holiday counts from the next working day
    ("2026-10-03", 1, "2026-10-08"),
    ("2016-02-05", 1, "2016-02-06"),  # Friday before 春节 2016: the next working day is Saturday 6 Feb
])
def test_deadlines_across_holidays(cal, event, limit, deadline):
    assert cal.deadline(D(event), limit) == D(deadline)
    assert cal.lag(D(event), D(deadline)) == limit
    assert cal.lag(D(event), D(deadline) + timedelta(days=1)) >= limit


def test_lag_counts_working_days_after_the_event_up_to_receipt(cal):
    assert cal.lag(D("2025-01-24"), D("2025-01-24")) == 0  # same day
    assert cal.lag(D("2025-01-24"), D("2025-01-25")) == 0  # a Saturday off
    assert cal.lag(D("2025-01-24"), D("2025-01-26")) == 1  # the make-up Sunday
    assert cal.lag(D("2025-01-24"), D("2025-02-04")) == 2  # the whole holiday adds nothing
    assert cal.lag(D("2025-02-10"), D("2025-01-24")) == 0  # received before the event: never negative


def test_a_lag_across_a_year_the_package_does_not_cover(cal):
    """chinesecalendar ends with 2026 (NotImplementedError beyond): 2027 is Monday–Friday plus the shipped
    statutory holidays, and marked estimated."""
    import chinese_calendar

    with pytest.raises(NotImplementedError):
        chinese_calendar.is_workday(D("2027-01-04"))
    assert not cal.estimated(2026) and cal.estimated(2027)
    # Mon 21 Dec 2026: 22–31 Dec are 8 working days; 1 Jan 2027 (Fri) is a statutory holiday;
    # 4–8 Jan (13), 11–15 Jan (18), 18 Jan (19), 19 Jan (20)
    assert cal.deadline(D("2026-12-21"), 20) == D("2027-01-19")
    assert cal.lag(D("2026-12-21"), D("2027-01-20")) == 21
    assert cal.estimated_years(D("2026-12-21"), D("2027-01-20")) == [2027]
    assert cal.estimated_years(D("2026-01-05"), D("2026-12-31")) == []
    coverage = cal.coverage(2027)
    assert coverage.source == "estimated" and coverage.estimated and "7 holiday" in coverage.detail
    assert cal.coverage(2031).detail.startswith("Monday–Friday")
    assert cal.coverage(2025).source == "package"


def test_without_the_package_or_the_file_a_year_is_plain_monday_to_friday():
    bare = WorkCalendar({}, use_package=False)
    assert bare.estimated(2016) and bare.is_workday(D("2016-02-08")) and not bare.is_workday(D("2016-02-06"))
    assert bare.lag(D("2030-01-04"), D("2030-01-11")) == 5  # Friday to Friday


def test_the_override_file_takes_precedence():
    # a complete year replaces the package; corrections to a package year change only their dates
    cal = WorkCalendar({
        2026: YearOverride(holidays=frozenset({D("2026-03-02")}), workdays=frozenset({D("2026-03-07")})),
        2027: YearOverride(holidays=frozenset({D("2027-02-08"), D("2027-02-09")}),
                           workdays=frozenset({D("2027-02-20")}), complete=True),
    })
    assert not cal.is_workday(D("2026-03-02")) and cal.is_workday(D("2026-03-07"))
    assert not cal.is_workday(D("2026-02-16"))  # the rest of 2026 still from chinesecalendar
    assert cal.coverage(2026).source == "package+override" and not cal.estimated(2026)
    assert cal.coverage(2027).source == "override" and not cal.estimated(2027)
    assert not cal.is_workday(D("2027-02-09")) and cal.is_workday(D("2027-02-20"))
    assert cal.is_workday(D("2027-01-01"))  # the complete file does not list it: a Friday worked


def test_the_calendar_file_is_checked_and_every_problem_named(tmp_path):
    bad = tmp_path / "calendar.toml"
    bad.write_text("""
[2027]
holidays = [2027-01-01, "2027-02-30", 2028-01-03, 2027-01-01]
workdays = [2027-01-01]
complete = "yes"
colour = "red"
[holidays]
x = 1
""", "utf-8")
    with pytest.raises(CalendarFileError) as err:
        load_overrides(bad)
    text = str(err.value)
    for expected in ("'2027-02-30' is not a date", "2028-01-03 lies outside 2027", "2027-01-01 is listed twice",
                     "both a holiday and a working day", "[2027] complete", "unknown key(s) ['colour']",
                     "[holidays]: a section must be a year"):
        assert expected in text, text
    assert load_overrides(tmp_path / "absent.toml") == {}
    (tmp_path / "broken.toml").write_text("[2027\n")
    with pytest.raises(CalendarFileError, match="not valid TOML"):
        load_overrides(tmp_path / "broken.toml")


def test_the_shipped_file_and_json_round_trip(cal):
    again = WorkCalendar.from_json(cal.to_json())
    assert again.to_json() == cal.to_json() and again.fingerprint() == cal.fingerprint()
    assert parse_overrides({"2027": {"holidays": ["2027-10-01"]}})[2027].holidays == {D("2027-10-01")}


days = st.dates(min_value=date(2003, 1, 1), max_value=date(2029, 12, 31))


@settings(max_examples=300, deadline=None)
@given(event=days, limit=st.integers(min_value=1, max_value=60))
def test_deadline_is_the_limit_th_working_day_after_the_event(event, limit):
    cal = _shared()
    deadline = cal.deadline(event, limit)
    assert cal.is_workday(deadline) and deadline > event
    assert cal.lag(event, deadline) == limit
    assert cal.lag(event, deadline - timedelta(days=1)) == limit - 1
    assert len(cal.workdays_between(event + timedelta(days=1), deadline)) == limit


@settings(max_examples=300, deadline=None)
@given(a=days, b=days, c=days)
def test_lags_add_up_and_agree_with_a_day_by_day_count(a, b, c):
    cal = _shared()
    a, b, c = sorted((a, b, c))
    assert cal.lag(a, c) == cal.lag(a, b) + cal.lag(b, c)
    if (b - a).days <= 400:
        counted = sum(cal.is_workday(a + timedelta(days=i)) for i in range(1, (b - a).days + 1))
        assert cal.lag(a, b) == counted


_CAL: list[WorkCalendar] = []


def _shared() -> WorkCalendar:
    if not _CAL:
        _CAL.append(load_calendar(None))
    return _CAL[0]
