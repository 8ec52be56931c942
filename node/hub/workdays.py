"""Chinese working days (public holidays, make-up working weekends 调休) from chinesecalendar and the hub's override file.

chinesecalendar carries the State Council's holiday notices for the years it covers (2004–2026 in
1.11) and raises NotImplementedError beyond them. The hub's calendar file (`[compliance] calendar`)
takes precedence: a year marked `complete` there is counted from the file alone; dates listed for
any other year correct the package, or, for a year the package does not cover, improve the
Monday–Friday estimate. A year that neither covers fully is *estimated*, and every figure counted
across it says so.

Counting rule: the lag from an event date to a receipt date is the number of working days after
the event, up to and including the receipt day (received on the event day or the next holiday: 0;
on the next working day: 1). The deadline for a limit of N working days is the N-th working day
after the event; a record is on time when its lag is at most N, i.e. it arrived on or before the
deadline.
"""

from __future__ import annotations

import bisect
import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..protocol import jsonutil

PACKAGE = "chinesecalendar"


@dataclass(frozen=True)
class YearOverride:
    """What the calendar file says about one year."""

    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()
    complete: bool = False  # the year's whole arrangement is given here (its State Council notice)
    note: str = ""  # where the dates come from

    def to_json(self) -> dict[str, Any]:
        return {"holidays": sorted(d.isoformat() for d in self.holidays),
                "workdays": sorted(d.isoformat() for d in self.workdays),
                "complete": self.complete, "note": self.note}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> YearOverride:
        return cls(frozenset(date.fromisoformat(d) for d in obj.get("holidays", [])),
                   frozenset(date.fromisoformat(d) for d in obj.get("workdays", [])),
                   bool(obj.get("complete", False)), str(obj.get("note", "")))


class CalendarFileError(ConfigError):
    """The calendar file cannot be used; lists every problem found, each with where it is."""


def load_overrides(path: str | Path) -> dict[int, YearOverride]:
    """Read and check the calendar file; an absent file is no overrides."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise CalendarFileError(f"{path}: not valid TOML 日历文件格式错误: {exc}") from None
    return parse_overrides(raw, str(path))


def parse_overrides(raw: Mapping[str, Any], where: str = "calendar") -> dict[int, YearOverride]:
    problems: list[str] = []
    out: dict[int, YearOverride] = {}
    for key, table in raw.items():
        if not (key.isdigit() and len(key) == 4 and 1949 <= int(key) <= 2200):
            problems.append(f"[{key}]: a section must be a year such as [2027] 节名应为年份")
            continue
        year = int(key)
        if not isinstance(table, dict):
            problems.append(f"[{key}]: must be a table of holidays/workdays 应为表")
            continue
        unknown = set(table) - {"holidays", "workdays", "complete", "note"}
        if unknown:
            problems.append(f"[{key}]: unknown key(s) {sorted(unknown)} 未知的键 (known: holidays, workdays, complete, note)")
        lists: dict[str, set[date]] = {}
        for name in ("holidays", "workdays"):
            values = table.get(name, [])
            if not isinstance(values, list):
                problems.append(f"[{key}] {name}: must be a list of dates 应为日期列表")
                values = []
            found: set[date] = set()
            for i, value in enumerate(values):
                day = as_date(value)
                if day is None:
                    problems.append(f"[{key}] {name}[{i}]: {value!r} is not a date like 2027-01-01 不是有效日期")
                elif day.year != year:
                    problems.append(f"[{key}] {name}[{i}]: {day} lies outside {year} 日期不在该年度")
                elif day in found:
                    problems.append(f"[{key}] {name}[{i}]: {day} is listed twice 日期重复")
                else:
                    found.add(day)
            lists[name] = found
        for day in sorted(lists["holidays"] & lists["workdays"]):
            problems.append(f"[{key}]: {day} is both a holiday and a working day 同时列为假日和工作日")
        complete = table.get("complete", False)
        if not isinstance(complete, bool):
            problems.append(f"[{key}] complete: must be true or false 应为 true 或 false")
            complete = False
        note = table.get("note", "")
        if not isinstance(note, str):
            problems.append(f"[{key}] note: must be text 应为文本")
            note = ""
        out[year] = YearOverride(frozenset(lists["holidays"]), frozenset(lists["workdays"]), complete, note)
    if problems:
        raise CalendarFileError(f"{where}: {len(problems)} problem(s) 日历文件有误:\n  " + "\n  ".join(problems))
    return out


def as_date(value: Any) -> date | None:
    """A TOML date or an ISO date string as a date; None for anything else."""
    if isinstance(value, date) and not hasattr(value, "hour"):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


def package_years() -> tuple[int, int] | None:
    """The years chinesecalendar covers, or None when it is not installed."""
    try:
        import chinese_calendar
    except ImportError:
        return None
    years = [d.year for d in chinese_calendar.holidays]
    return min(years), max(years)


def package_version() -> str:
    try:
        import chinese_calendar
    except ImportError:
        return "none"
    return f"{PACKAGE} {getattr(chinese_calendar, '__version__', '?')}"


@dataclass
class _Year:
    through: list[int]  # working days from 1 January up to and including each day of the year
    workdays: list[int]  # ordinals of the year's working days, in order

    @property
    def total(self) -> int:
        return len(self.workdays)


@dataclass(frozen=True)
class Coverage:
    """Where one year's working days come from."""

    year: int
    source: str  # package | override | package+override | estimated
    estimated: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"year": self.year, "source": self.source, "estimated": self.estimated, "detail": self.detail}


@dataclass
class WorkCalendar:
    """Working days for any year, each year built once on first use."""

    overrides: Mapping[int, YearOverride] = field(default_factory=dict)
    use_package: bool = True
    _years: dict[int, _Year] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._package = package_years() if self.use_package else None

    # -- what covers a year -------------------------------------------------------------------

    def package_covers(self, year: int) -> bool:
        return self._package is not None and self._package[0] <= year <= self._package[1]

    def estimated(self, year: int) -> bool:
        override = self.overrides.get(year)
        return not (self.package_covers(year) or (override is not None and override.complete))

    def coverage(self, year: int) -> Coverage:
        override = self.overrides.get(year)
        if override is not None and override.complete:
            return Coverage(year, "override", False, f"calendar file ({_counted(override)})"
                            + (f"; {override.note}" if override.note else ""))
        if self.package_covers(year):
            if override is not None:
                return Coverage(year, "package+override", False,
                                f"{package_version()}, corrected by the calendar file ({_counted(override)})")
            return Coverage(year, "package", False, package_version())
        if override is not None:
            return Coverage(year, "estimated", True, f"Monday–Friday, with {_counted(override)} from the calendar "
                                                     "file; the year's full arrangement is not known yet")
        return Coverage(year, "estimated", True, "Monday–Friday: neither chinesecalendar nor the calendar file "
                                                 "covers this year")

    def estimated_years(self, start: date, end: date) -> list[int]:
        """Years between two dates (inclusive) whose working days are estimated."""
        return [y for y in range(min(start, end).year, max(start, end).year + 1) if self.estimated(y)]

    # -- counting -----------------------------------------------------------------------------

    def is_workday(self, day: date) -> bool:
        table = self._year(day.year)
        through = table.through[day.timetuple().tm_yday - 1]
        before = table.through[day.timetuple().tm_yday - 2] if day.timetuple().tm_yday > 1 else 0
        return through > before

    def lag(self, event: date, received: date) -> int:
        """Working days after `event` up to and including `received` (0 when received on or before it)."""
        if received <= event:
            return 0
        count = self._through(received) - self._through(event)
        for year in range(event.year, received.year):
            count += self._year(year).total
        return count

    def deadline(self, event: date, limit: int) -> date:
        """The `limit`-th working day after `event` (the event day itself for 0)."""
        if limit <= 0:
            return event
        year = event.year
        wanted = self._through(event) + limit  # position of the deadline within `year`'s working days
        while True:
            table = self._year(year)
            if wanted <= table.total:
                return date.fromordinal(table.workdays[wanted - 1])
            wanted -= table.total
            year += 1

    def workdays_between(self, start: date, end: date) -> list[date]:
        """The working days from `start` to `end`, both included."""
        out: list[date] = []
        for year in range(start.year, end.year + 1):
            days = self._year(year).workdays
            lo = bisect.bisect_left(days, start.toordinal())
            hi = bisect.bisect_right(days, end.toordinal())
            out.extend(date.fromordinal(o) for o in days[lo:hi])
        return out

    def _through(self, day: date) -> int:
        return self._year(day.year).through[day.timetuple().tm_yday - 1]

    def _year(self, year: int) -> _Year:
        table = self._years.get(year)
        if table is None:
            table = self._years[year] = self._build(year)
        return table

    def _build(self, year: int) -> _Year:
        override = self.overrides.get(year, YearOverride())
        from_package = self.package_covers(year) and not override.complete
        if from_package:
            import chinese_calendar
        through, workdays, count = [], [], 0
        day, end = date(year, 1, 1), date(year, 12, 31)
        while day <= end:
            if day in override.holidays:
                working = False
            elif day in override.workdays:
                working = True
            elif from_package:
                working = chinese_calendar.is_workday(day)
            else:
                working = day.weekday() < 5
            if working:
                count += 1
                workdays.append(day.toordinal())
            through.append(count)
            day += timedelta(days=1)
        return _Year(through, workdays)

    # -- as stored with the timeliness it was used for ------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"package": package_version() if self._package else "none",
                "package_years": list(self._package) if self._package else None,
                "overrides": {str(y): o.to_json() for y, o in sorted(self.overrides.items())}}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> WorkCalendar:
        return cls({int(y): YearOverride.from_json(o) for y, o in obj.get("overrides", {}).items()})

    def fingerprint(self) -> str:
        return hashlib.sha256(jsonutil.dumps(self.to_json())).hexdigest()[:16]


def _counted(override: YearOverride) -> str:
    return f"{len(override.holidays)} holiday(s), {len(override.workdays)} working day(s)"


def years_of(days: Iterable[date]) -> list[int]:
    return sorted({d.year for d in days})
