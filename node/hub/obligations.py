"""The joint-meeting office's obligations (联席会议办公室任务分工): a checked TOML file, its versions, and each one's status.

An obligation says which departments must deliver which record types by when: once (`due`), or
for every month, quarter or year (`period`, due `due_workdays` working days after the period
ends). A task that is not measured by exchanged records (a meeting, a system going live) names no
record types; the office records its completion date (`completed`). Every version of the file the
hub loads is kept with who loaded it, when, and what changed.

Status of an obligation for one department (and period), as of a moment:
- met: everything due had arrived by the due date;
- met_late: everything due has arrived, some of it after the due date;
- open: not complete, and the due date has not passed;
- overdue: not complete, and the due date has passed.
"Everything due" is the expected count when the file gives one; otherwise what the department's
node reports its source holds (the signed inventory), compared with what the hub holds.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ..config import ConfigError
from ..protocol import jsonutil
from ..protocol.envelope import DEPT_ID, utc_now
from ..protocol.validation import default_registry
from .store import Store, obligation_sets
from .workdays import as_date

OBLIGATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
PERIODS = ("month", "quarter", "year")
KEYS = {"id", "title", "unit", "departments", "record_types", "due", "period", "due_workdays", "expected",
        "completed", "notes", "source"}
DEFAULT_DUE_WORKDAYS = 10
STATUSES = ("met", "met_late", "open", "overdue")


class ObligationsError(ConfigError):
    """An obligations file that cannot be used; lists every problem, each with where it is."""


@dataclass(frozen=True)
class Obligation:
    id: str
    title: str
    departments: tuple[str, ...]
    record_types: tuple[str, ...] = ()
    due: date | None = None  # a one-off deadline
    period: str | None = None  # month | quarter | year: a recurring obligation
    due_workdays: int = DEFAULT_DUE_WORKDAYS  # working days after each period's end
    expected: Mapping[str, int] = field(default_factory=dict)  # record type -> records expected (per period)
    completed: date | None = None  # a task without record types: when the office confirmed it done
    unit: str = ""  # 责任单位 as the office writes it
    notes: str = ""
    source: str = ""  # where the obligation comes from (a directive, an annex table)

    @property
    def measured(self) -> bool:
        """Whether exchanged records measure this obligation."""
        return bool(self.record_types)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "unit": self.unit, "departments": list(self.departments),
                "record_types": list(self.record_types), "due": self.due.isoformat() if self.due else None,
                "period": self.period, "due_workdays": self.due_workdays if self.period else None,
                "expected": dict(sorted(self.expected.items())),
                "completed": self.completed.isoformat() if self.completed else None,
                "notes": self.notes, "source": self.source}

    def instances(self, start: date, end: date, calendar: Any) -> list[Instance]:
        """The deadlines of this obligation that a report from `start` to `end` looks at."""
        if self.due is not None:
            return [Instance(None, None, self.due)]
        out = []
        for first, last in periods_between(self.period or "month", start, end):
            out.append(Instance(first, last, calendar.deadline(last, self.due_workdays)))
        return out


@dataclass(frozen=True)
class Instance:
    """One deadline of an obligation: a one-off due date, or one period and its due date."""

    first: date | None  # the period's first day (None for a one-off obligation)
    last: date | None
    due: date

    def to_json(self) -> dict[str, Any]:
        return {"from": self.first.isoformat() if self.first else None,
                "to": self.last.isoformat() if self.last else None, "due": self.due.isoformat()}


@dataclass(frozen=True)
class ObligationSet:
    """One loaded version of the obligations file."""

    obligations: tuple[Obligation, ...]
    title: str = ""
    version: int | None = None  # id in obligation_sets
    sha256: str = ""
    loaded: str = ""
    loaded_by: str = ""

    def by_id(self) -> dict[str, Obligation]:
        return {o.id: o for o in self.obligations}

    def info(self) -> dict[str, Any] | None:
        if self.version is None:
            return None
        return {"version": self.version, "title": self.title, "sha256": self.sha256, "loaded": self.loaded,
                "loaded_by": self.loaded_by, "obligations": len(self.obligations)}


# -- reading and checking the file -----------------------------------------------------------

def parse(text: str, where: str = "obligations") -> ObligationSet:
    """Read and check an obligations file; every problem is listed, with where it is and what to do."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ObligationsError(f"{where}: not valid TOML 文件格式错误: {exc}") from None
    problems: list[str] = []
    unknown = set(raw) - {"title", "obligation"}
    if unknown:
        problems.append(f"unknown top-level key(s) {sorted(unknown)} 未知的键 (use title and [[obligation]] tables)")
    items = raw.get("obligation", [])
    if not isinstance(items, list):
        problems.append("obligation: write each obligation as an [[obligation]] table 每项任务应为 [[obligation]] 表")
        items = []
    types = set(default_registry().record_types())
    seen: set[str] = set()
    obligations = []
    for n, item in enumerate(items, start=1):
        at = f"[[obligation]] #{n}" + (f" (id {item.get('id')!r})" if isinstance(item, dict) and "id" in item else "")
        found = _obligation(item, at, types, problems)
        if found is None:
            continue
        if found.id in seen:
            problems.append(f"{at} id: {found.id!r} is used twice 任务编号重复")
            continue
        seen.add(found.id)
        obligations.append(found)
    title = raw.get("title", "")
    if not isinstance(title, str):
        problems.append("title: must be text 应为文本")
        title = ""
    if problems:
        raise ObligationsError(f"{where}: {len(problems)} problem(s) 任务文件有误:\n  " + "\n  ".join(problems))
    return ObligationSet(tuple(obligations), title, sha256=hashlib.sha256(text.encode()).hexdigest())


def _obligation(item: Any, at: str, types: set[str], problems: list[str]) -> Obligation | None:
    if not isinstance(item, dict):
        problems.append(f"{at}: must be a table 应为表")
        return None
    before = len(problems)
    unknown = set(item) - KEYS
    if unknown:
        problems.append(f"{at}: unknown key(s) {sorted(unknown)} 未知的键; known: {', '.join(sorted(KEYS))}")
    oid = item.get("id")
    if not isinstance(oid, str) or not OBLIGATION_ID.match(oid):
        problems.append(f"{at} id: {oid!r} — give 1–64 letters, digits, '.', '_' or '-' 任务编号格式错误")
    title = item.get("title")
    if not isinstance(title, str) or not title.strip():
        problems.append(f"{at} title: required text 必须填写任务名称")
    depts = item.get("departments")
    if not isinstance(depts, list) or not depts or not all(isinstance(d, str) for d in depts):
        problems.append(f"{at} departments: a list of department ids such as [\"amr\"] 应列出责任部门标识")
        depts = []
    for d in depts:
        if not DEPT_ID.match(d):
            problems.append(f"{at} departments: {d!r} is not a department id (lower-case letters, digits, - or _) "
                            "部门标识无效")
    rtypes = item.get("record_types", [])
    if not isinstance(rtypes, list) or not all(isinstance(t, str) for t in rtypes):
        problems.append(f"{at} record_types: a list of record types 应为记录类型列表")
        rtypes = []
    for t in rtypes:
        if t not in types:
            problems.append(f"{at} record_types: unknown record type {t!r} 未知的记录类型; known: "
                            f"{', '.join(sorted(types))}")
    due = item.get("due")
    period = item.get("period")
    if (due is None) == (period is None):
        problems.append(f"{at}: give either due = YYYY-MM-DD (once) or period = \"month\"|\"quarter\"|\"year\" "
                        "(recurring) 应填写 due 或 period 之一")
    if due is not None:
        due = as_date(due)
        if due is None:
            problems.append(f"{at} due: {item['due']!r} is not a date like 2016-03-31 不是有效日期")
    if period is not None and period not in PERIODS:
        problems.append(f"{at} period: {period!r} — use month, quarter or year 周期应为 month、quarter 或 year")
    due_workdays = item.get("due_workdays", DEFAULT_DUE_WORKDAYS)
    if not isinstance(due_workdays, int) or isinstance(due_workdays, bool) or not 0 <= due_workdays <= 120:
        problems.append(f"{at} due_workdays: {due_workdays!r} — working days after the period ends, 0–120 "
                        "应为0至120个工作日")
    elif "due_workdays" in item and period is None:
        problems.append(f"{at} due_workdays: only for a recurring obligation (period) 仅适用于周期性任务")
    expected = item.get("expected", {})
    if not isinstance(expected, dict):
        problems.append(f"{at} expected: a table of record type = count, e.g. {{ administrative_license = 120 }} "
                        "应为“记录类型 = 数量”表")
        expected = {}
    for t, n in expected.items():
        if t not in rtypes:
            problems.append(f"{at} expected.{t}: not one of this obligation's record_types 不在本任务的记录类型中")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            problems.append(f"{at} expected.{t}: {n!r} is not a count 应为非负整数")
    completed = item.get("completed")
    if completed is not None:
        completed = as_date(completed)
        if completed is None:
            problems.append(f"{at} completed: {item['completed']!r} is not a date like 2016-03-08 不是有效日期")
        elif rtypes:
            problems.append(f"{at} completed: only for a task without record_types; exchanged records measure this "
                            "one 有记录类型的任务由交换数据衡量，不能手工填写完成日期")
    for key in ("unit", "notes", "source"):
        if key in item and not isinstance(item[key], str):
            problems.append(f"{at} {key}: must be text 应为文本")
    if len(problems) > before:
        return None
    return Obligation(oid, title.strip(), tuple(depts), tuple(rtypes), due, period, due_workdays,
                      dict(expected), completed, item.get("unit", ""), item.get("notes", ""), item.get("source", ""))


# -- versions kept in the store --------------------------------------------------------------

@dataclass(frozen=True)
class Loaded:
    """The outcome of loading a file: the set now in force and what changed."""

    current: ObligationSet
    changed: bool
    changes: dict[str, list[str]]


def load(store: Store, text: str, *, by: str, source: str = "") -> Loaded:
    """Check `text` and keep it as the new version unless it equals the one in force."""
    parsed = parse(text, source or "obligations")
    previous = current(store)
    if previous is not None and previous.sha256 == parsed.sha256:
        return Loaded(previous, False, {"added": [], "removed": [], "changed": []})
    changes = diff(previous, parsed)
    with store.writer.begin() as conn:
        loaded = utc_now()
        result = conn.execute(obligation_sets.insert().values(
            loaded=loaded, loaded_by=by[:100], source=source[:500] or None, sha256=parsed.sha256, content=text,
            changes=jsonutil.dumps(changes).decode()))
        version = result.inserted_primary_key[0]
    return Loaded(ObligationSet(parsed.obligations, parsed.title, version, parsed.sha256, loaded, by[:100]), True,
                  changes)


def diff(old: ObligationSet | None, new: ObligationSet) -> dict[str, list[str]]:
    before = old.by_id() if old else {}
    after = new.by_id()
    return {"added": sorted(set(after) - set(before)), "removed": sorted(set(before) - set(after)),
            "changed": sorted(i for i in set(after) & set(before) if after[i].to_json() != before[i].to_json())}


def current(store: Store) -> ObligationSet | None:
    """The obligations in force: the latest version loaded."""
    with store.reader.connect() as conn:
        row = conn.execute(select(obligation_sets).order_by(obligation_sets.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    parsed = parse(row.content, f"obligations version {row.id}")
    return ObligationSet(parsed.obligations, parsed.title, row.id, row.sha256, row.loaded, row.loaded_by)


def history(store: Store) -> list[dict[str, Any]]:
    with store.reader.connect() as conn:
        found = conn.execute(select(obligation_sets.c.id, obligation_sets.c.loaded, obligation_sets.c.loaded_by,
                                    obligation_sets.c.source, obligation_sets.c.sha256, obligation_sets.c.changes)
                             .order_by(obligation_sets.c.id)).all()
    return [{"version": r.id, "loaded": r.loaded, "loaded_by": r.loaded_by, "source": r.source, "sha256": r.sha256,
             "changes": jsonutil.loads(r.changes)} for r in found]


def load_file(store: Store, path: Path, *, by: str) -> Loaded:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ObligationsError(f"cannot read {path}: {exc.strerror} 无法读取任务文件") from None
    return load(store, text, by=by, source=str(path))


# -- status ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Facts:
    """What the hub knows about one department's delivery of one obligation's record types."""

    arrivals: Sequence[date]  # receipt dates (Asia/Shanghai) of the records in scope, sorted
    held: int  # records of these types the hub holds now (active)
    inventory: int | None  # records of these types the department's source holds, per its heartbeats


@dataclass(frozen=True)
class Status:
    status: str  # met | met_late | open | overdue
    reason: str  # a code the report says in words (see REASONS in reports.py)
    params: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, **self.params}


def evaluate(obligation: Obligation, instance: Instance, facts: Facts | None, as_of: date) -> Status:
    """The status of one obligation instance for one department, on `as_of` (a date in Asia/Shanghai)."""
    due = instance.due
    passed = as_of > due
    if not obligation.measured:
        if obligation.completed is not None and obligation.completed <= as_of:
            late = obligation.completed > due
            return Status("met_late" if late else "met", "completed_late" if late else "completed",
                          {"completed": obligation.completed.isoformat()})
        return Status("overdue" if passed else "open", "not_confirmed", {})
    assert facts is not None
    received = len(facts.arrivals)
    counts = {"received": received, "held": facts.held, "inventory": facts.inventory}
    expected = sum(obligation.expected.get(t, 0) for t in obligation.record_types) if obligation.expected else None
    if expected is not None:
        counts["expected"] = expected
        if received >= expected:
            reached = facts.arrivals[expected - 1] if expected else None
            if reached is not None and reached > due:
                return Status("met_late", "expected_reached_late", {**counts, "reached": reached.isoformat()})
            return Status("met", "expected_reached", counts)
        missing = expected - received
        return Status("overdue" if passed else "open", "expected_missing", {**counts, "missing": missing})
    if facts.inventory is None:
        return Status("overdue" if passed else "open", "no_inventory", counts)
    missing = facts.inventory - facts.held
    if missing > 0:
        return Status("overdue" if passed else "open", "inventory_missing", {**counts, "missing": missing})
    if instance.last is not None and as_of <= instance.last:
        return Status("open", "period_running", counts)  # complete so far, but the period goes on
    late = [d for d in facts.arrivals if d > due]
    if late:
        return Status("met_late", "arrived_late", {**counts, "late": len(late), "last": max(late).isoformat()})
    return Status("met", "all_arrived", counts)


def periods_between(period: str, start: date, end: date) -> list[tuple[date, date]]:
    """The calendar months, quarters or years that overlap [start, end]."""
    months = {"month": 1, "quarter": 3, "year": 12}[period]
    first = date(start.year, ((start.month - 1) // months) * months + 1, 1)
    out = []
    while first <= end:
        year, month = divmod(first.month - 1 + months, 12)
        following = date(first.year + year, month + 1, 1)
        out.append((first, following - timedelta(days=1)))
        first = following
    return out
