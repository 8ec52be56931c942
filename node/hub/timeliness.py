"""Record timeliness: each accepted version's event date, deadline, receipt date and lag in working days, kept once.

The rules a lag is counted by (the working-day calendar and the limits per department and record
type) are the *basis*. The basis in force is kept in the store, so every hub process and every
row use the same one; the hub's configuration only proposes one. The first hub to start adopts
its configuration; after that a changed calendar or limit takes effect only through
`cx hub timeliness recompute`, which adopts the configured basis, rebuilds the table and says what
changed. A first version counts from its event date. A later version of the same record whose
event date is unchanged is a *correction*: kept, with its lag, but never a late delivery; a later
version whose event date changed counts from the new date.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import ARRAY, String, any_, bindparam, func, select
from sqlalchemy.engine import Connection

from ..config import ConfigError
from ..protocol import jsonutil
from ..protocol.envelope import parse_time, utc_now
from ..protocol.validation import CHINA, default_registry
from .projections import Accepted, Projector
from .store import Store, copy_rows, hub_settings, in_chunks, record_timeliness

log = structlog.get_logger("cx.hub.timeliness")

NAME = "timeliness"
BASIS_SETTING = "timeliness_basis"
DEFAULT_LIMIT = 20  # working days, for a record type that names none (Interim Regulations art. 6–7)
STATUSES = ("on_time", "late", "correction", "retraction", "no_date")


def shipped_calendar_file() -> Any:
    """The calendar file that ships with cx: what is known beyond chinesecalendar."""
    return resources.files("cx.hub").joinpath("calendar.toml")


def load_calendar(path: Path | None) -> Any:
    """The configured calendar: the hub's file, or the shipped one when none is configured."""
    from .workdays import WorkCalendar, load_overrides, parse_overrides

    if path is None:
        import tomllib

        raw = tomllib.loads(shipped_calendar_file().read_text("utf-8"))
        return WorkCalendar(parse_overrides(raw, "calendar.toml (shipped with cx)"))
    if not path.exists():
        raise ConfigError(f"calendar file not found 找不到日历文件: {path}")
    return WorkCalendar(load_overrides(path))


@dataclass(frozen=True)
class Limits:
    """Working days allowed from the event date to receipt: per department and type, per type ("*"), else the schema's."""

    overrides: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # dept or "*" -> type -> days

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str = "[compliance.limits]") -> Limits:
        problems = []
        known = set(default_registry().record_types())
        out: dict[str, dict[str, int]] = {}
        for dept, table in raw.items():
            if not isinstance(table, Mapping):
                problems.append(f"{where} {dept}: must be a table of record type = working days")
                continue
            for rtype, days in table.items():
                if rtype not in known:
                    problems.append(f"{where} {dept}.{rtype}: unknown record type 未知的记录类型")
                elif not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 366:
                    problems.append(f"{where} {dept}.{rtype}: {days!r} is not a number of working days (1–366) "
                                    "时限应为1至366个工作日")
                else:
                    out.setdefault(str(dept), {})[rtype] = days
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(out)

    def limit(self, dept: str, rtype: str) -> int:
        for scope in (dept, "*"):
            days = self.overrides.get(scope, {}).get(rtype)
            if days is not None:
                return days
        return default_limit(rtype)

    def to_json(self) -> dict[str, dict[str, int]]:
        return {d: dict(sorted(t.items())) for d, t in sorted(self.overrides.items())}


def default_limit(rtype: str) -> int:
    try:
        return default_registry().get(rtype).limit_days
    except Exception:  # noqa: BLE001 - a type this version does not know
        return DEFAULT_LIMIT


def event_field(rtype: str) -> str | None:
    try:
        return default_registry().get(rtype).event_date
    except Exception:  # noqa: BLE001
        return None


@dataclass(frozen=True)
class Basis:
    """The rules timeliness is counted by: a working-day calendar and the limits."""

    calendar: Any  # WorkCalendar
    limits: Limits

    def to_json(self) -> dict[str, Any]:
        return {"calendar": self.calendar.to_json(), "limits": self.limits.to_json()}

    @cached_property
    def text(self) -> str:
        return jsonutil.dumps(self.to_json()).decode()

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    @classmethod
    def from_text(cls, text: str) -> Basis:
        from .workdays import WorkCalendar

        obj = jsonutil.loads(text)
        return cls(WorkCalendar.from_json(obj["calendar"]), Limits(obj.get("limits", {})))

    @classmethod
    def from_config(cls, cfg: Any) -> Basis:
        section = cfg.compliance
        return cls(load_calendar(section.calendar), Limits.parse(section.limits))

    @classmethod
    def default(cls) -> Basis:
        return cls(load_calendar(None), Limits())


def stored_basis(conn: Connection) -> str | None:
    return conn.execute(select(hub_settings.c.value).where(hub_settings.c.name == BASIS_SETTING)).scalar()


def set_basis(conn: Connection, basis: Basis, by: str) -> None:
    values = {"value": basis.text, "updated": utc_now(), "updated_by": by[:100]}
    done = conn.execute(hub_settings.update().where(hub_settings.c.name == BASIS_SETTING).values(**values))
    if not done.rowcount:
        conn.execute(hub_settings.insert().values(name=BASIS_SETTING, **values))


def basis_in_force(store: Store) -> Basis | None:
    with store.reader.connect() as conn:
        text = stored_basis(conn)
    return Basis.from_text(text) if text else None


def china_date(stamp: str) -> date:
    return parse_time(stamp).astimezone(CHINA).date()


class TimelinessProjection:
    """Keeps `record_timeliness`: one row per accepted version, counted by the basis in the store."""

    name = NAME

    def __init__(self, configured: Basis):
        self.configured = configured
        self._text: str | None = None
        self._basis: Basis | None = None

    def basis(self, conn: Connection) -> Basis:
        """The basis in force; the configured one is adopted when the store has none yet."""
        text = stored_basis(conn)
        if text is None:
            set_basis(conn, self.configured, "hub (first start)")
            text = self.configured.text
        if text != self._text:
            self._basis = self.configured if text == self.configured.text else Basis.from_text(text)
            self._text = text
            if text != self.configured.text:
                log.warning("the configured calendar or limits differ from those in force; "
                            "run `cx hub timeliness recompute` to apply them")
        assert self._basis is not None
        return self._basis

    def apply(self, conn: Connection, versions: Sequence[Accepted]) -> None:
        counter = Counter(self.basis(conn))
        dept = versions[0].dept
        previous = _previous_event_dates(conn, dept, {v.record_id for v in versions if v.op == "upsert"})
        rows = []
        for v in versions:
            row = counter.row(v, previous.get(v.record_id))
            if row["event_date"] is not None:
                previous[v.record_id] = row["event_date"]
            rows.append(row)
        copy_rows(conn, record_timeliness, rows)

    def clear(self, conn: Connection) -> None:
        conn.execute(record_timeliness.delete())


class Counter:
    """Counts versions by one basis, remembering what repeats within a chunk (a batch shares its receipt
    time; its records share a few event dates)."""

    def __init__(self, basis: Basis):
        self.basis = basis
        self._days: dict[str, date] = {}
        self._rules: dict[tuple[str, str], tuple[str | None, int]] = {}
        self._counted: dict[tuple[str, int, date], tuple[str, str, int, str | None]] = {}

    def row(self, v: Accepted, previous_event: str | None) -> dict[str, Any]:
        """How timely one version was (`previous_event`: the record's event date before this version)."""
        received = self._days.get(v.received)
        if received is None:
            received = self._days[v.received] = china_date(v.received)
        row: dict[str, Any] = {
            "dept": v.dept, "ledger_index": v.ledger_index, "record_id": v.record_id, "type": v.type,
            "event_date": None, "limit_days": None, "deadline": None, "received": v.received,
            "received_date": received.isoformat(), "lag": None, "status": "retraction", "estimated": None,
        }
        if v.op != "upsert":
            return row
        rule = self._rules.get((v.dept, v.type))
        if rule is None:
            rule = self._rules[(v.dept, v.type)] = (event_field(v.type), self.basis.limits.limit(v.dept, v.type))
        name, limit = rule
        value = (v.data or {}).get(name) if name else None
        counted = self._counted.get((value, limit, received)) if isinstance(value, str) else None
        if counted is None:
            try:
                event = date.fromisoformat(value) if isinstance(value, str) else None
            except ValueError:
                event = None
            if event is None:
                row["status"] = "no_date"
                return row
            calendar = self.basis.calendar
            deadline = calendar.deadline(event, limit)
            estimated = calendar.estimated_years(event, max(received, deadline))
            counted = (event.isoformat(), deadline.isoformat(), calendar.lag(event, received),
                       ",".join(map(str, estimated)) or None)
            self._counted[(value, limit, received)] = counted
        event_text, deadline_text, lag, estimated_text = counted
        if previous_event == event_text:
            status = "correction"
        else:
            status = "on_time" if received.isoformat() <= deadline_text else "late"
        row.update(event_date=event_text, limit_days=limit, deadline=deadline_text, lag=lag, status=status,
                   estimated=estimated_text)
        return row


def timeliness_row(basis: Basis, v: Accepted, previous_event: str | None) -> dict[str, Any]:
    """How timely one version was, counted by `basis` (see Counter)."""
    return Counter(basis).row(v, previous_event)


def _previous_event_dates(conn: Connection, dept: str, record_ids: set[str]) -> dict[str, str]:
    """The latest event date already counted for each of these records."""
    c = record_timeliness.c
    query = select(c.record_id, c.ledger_index, c.event_date).where(c.dept == dept, c.event_date.is_not(None))
    if conn.dialect.name == "postgresql":  # one array parameter: a long IN list costs more to send than to run
        ids = bindparam("ids", sorted(record_ids), type_=ARRAY(String))
        found = conn.execute(query.where(c.record_id == any_(ids))).all() if record_ids else []
    else:
        found = in_chunks(conn, lambda chunk: query.where(c.record_id.in_(chunk)), sorted(record_ids))
    latest: dict[str, tuple[int, str]] = {}
    for record_id, index, event in found:
        if record_id not in latest or index > latest[record_id][0]:
            latest[record_id] = (index, event)
    return {r: e for r, (_, e) in latest.items()}


# -- recompute -------------------------------------------------------------------------------

@dataclass
class Recomputed:
    """What `cx hub timeliness recompute` changed."""

    versions: int
    basis_changes: list[str]
    transitions: dict[tuple[str, str], int]  # (before, after) status -> versions, for changed statuses only
    deadlines_changed: int
    estimated_changed: int
    by_dept: dict[str, int]  # versions whose status, deadline, lag or estimate changed
    examples: list[dict[str, Any]]

    @property
    def changed(self) -> int:
        return sum(self.by_dept.values())

    def to_json(self) -> dict[str, Any]:
        return {"versions": self.versions, "changed": self.changed, "basis_changes": self.basis_changes,
                "transitions": [{"from": a, "to": b, "versions": n} for (a, b), n in sorted(self.transitions.items())],
                "deadlines_changed": self.deadlines_changed, "estimated_changed": self.estimated_changed,
                "by_dept": self.by_dept, "examples": self.examples}


class _Snapshot:
    """A department's timeliness rows packed small (a million versions take about 13 MB)."""

    def __init__(self) -> None:
        self.status = bytearray()
        self.lag = array("i")
        self.deadline = array("i")
        self.estimated: dict[int, str] = {}
        self.present = bytearray()

    def put(self, index: int, status: str, lag: int | None, deadline: str | None, estimated: str | None) -> None:
        grow = index + 1 - len(self.status)
        if grow > 0:
            self.status.extend(b"\0" * grow)
            self.present.extend(b"\0" * grow)
            self.lag.extend([-1] * grow)
            self.deadline.extend([0] * grow)
        self.status[index] = STATUSES.index(status) if status in STATUSES else 255
        self.present[index] = 1
        self.lag[index] = -1 if lag is None else lag
        self.deadline[index] = date.fromisoformat(deadline).toordinal() if deadline else 0
        if estimated:
            self.estimated[index] = estimated

    def get(self, index: int) -> tuple[str, int | None, str | None, str | None] | None:
        if index >= len(self.present) or not self.present[index]:
            return None
        code = self.status[index]
        return (STATUSES[code] if code < len(STATUSES) else "?", None if self.lag[index] < 0 else self.lag[index],
                date.fromordinal(self.deadline[index]).isoformat() if self.deadline[index] else None,
                self.estimated.get(index))


def _snapshot(store: Store) -> dict[str, _Snapshot]:
    out: dict[str, _Snapshot] = {}
    for r in _rows_in_order(store):
        out.setdefault(r.dept, _Snapshot()).put(r.ledger_index, r.status, r.lag, r.deadline, r.estimated)
    return out


def _rows_in_order(store: Store) -> Iterator[Any]:
    with store.reader.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=5000).execute(
            select(record_timeliness.c.dept, record_timeliness.c.ledger_index, record_timeliness.c.record_id,
                   record_timeliness.c.type, record_timeliness.c.event_date, record_timeliness.c.received_date,
                   record_timeliness.c.status, record_timeliness.c.lag, record_timeliness.c.deadline,
                   record_timeliness.c.estimated)
            .order_by(record_timeliness.c.dept, record_timeliness.c.ledger_index))
        yield from result


def recompute(store: Store, configured: Basis, *, by: str, progress: Any = None) -> Recomputed:
    """Adopt the configured basis, rebuild the timeliness of every version, and compare before with after."""
    with store.reader.connect() as conn:
        old_text = stored_basis(conn)
    old = Basis.from_text(old_text) if old_text else None
    before = _snapshot(store)
    with store.writer.begin() as conn:
        set_basis(conn, configured, by)
    projection = TimelinessProjection(configured)
    projector = Projector(store, [projection])
    versions = projector.rebuild(NAME, progress=progress)
    transitions: dict[tuple[str, str], int] = {}
    by_dept: dict[str, int] = {}
    deadlines = estimated = 0
    examples: list[dict[str, Any]] = []
    for r in _rows_in_order(store):
        was = before.get(r.dept, _Snapshot()).get(r.ledger_index)
        now = (r.status, r.lag, r.deadline, r.estimated)
        if was == now:
            continue
        by_dept[r.dept] = by_dept.get(r.dept, 0) + 1
        if was is None or was[0] != r.status:
            key = (was[0] if was else "(none)", r.status)
            transitions[key] = transitions.get(key, 0) + 1
        if was is not None and was[2] != r.deadline:
            deadlines += 1
        if was is not None and was[3] != r.estimated:
            estimated += 1
        if len(examples) < 10:
            examples.append({"dept": r.dept, "record_id": r.record_id, "type": r.type, "event_date": r.event_date,
                             "received_date": r.received_date,
                             "before": dict(zip(("status", "lag", "deadline", "estimated"), was)) if was else None,
                             "after": dict(zip(("status", "lag", "deadline", "estimated"), now))})
    return Recomputed(versions, describe_basis_change(old, configured), transitions, deadlines, estimated, by_dept,
                      examples)


def describe_basis_change(old: Basis | None, new: Basis) -> list[str]:
    """The differences between two bases, in words (English and Chinese), one line each."""
    if old is None:
        return ["no basis was in force before; the configured calendar and limits are adopted 首次采用配置的日历和时限"]
    out: list[str] = []
    old_cal, new_cal = old.calendar.to_json(), new.calendar.to_json()
    if old_cal["package"] != new_cal["package"]:
        out.append(f"calendar package 日历软件包: {old_cal['package']} → {new_cal['package']}")
    empty = {"holidays": [], "workdays": [], "complete": False}
    for y in sorted(set(old_cal["overrides"]) | set(new_cal["overrides"])):
        a, b = old_cal["overrides"].get(y), new_cal["overrides"].get(y)
        if a == b:
            continue
        if a is None:
            out.append(f"calendar {y}: added to the calendar file 日历文件新增年度")
        elif b is None:
            out.append(f"calendar {y}: removed from the calendar file 已从日历文件删除")
        a, b = a or empty, b or empty
        for kind, zh in (("holidays", "假日"), ("workdays", "调休工作日")):
            added = sorted(set(b[kind]) - set(a[kind]))
            removed = sorted(set(a[kind]) - set(b[kind]))
            if added:
                out.append(f"calendar {y}: {kind} added 新增{zh}: {', '.join(added)}")
            if removed:
                out.append(f"calendar {y}: {kind} removed 删除{zh}: {', '.join(removed)}")
        if a["complete"] != b["complete"]:
            out.append(f"calendar {y}: " + ("now complete 年度安排已完整" if b["complete"]
                                            else "no longer complete 年度安排不再完整"))
    old_limits, new_limits = old.limits.to_json(), new.limits.to_json()
    for scope in sorted(set(old_limits) | set(new_limits)):
        a_types, b_types = old_limits.get(scope, {}), new_limits.get(scope, {})
        for rtype in sorted(set(a_types) | set(b_types)):
            a_days, b_days = a_types.get(rtype), b_types.get(rtype)
            if a_days != b_days:
                who = "every department 所有部门" if scope == "*" else scope
                out.append(f"limit {who} {rtype}: {a_days or f'default {default_limit(rtype)}'} → "
                           f"{b_days or f'default {default_limit(rtype)}'} working days 个工作日")
    return out or ["the calendar and limits are unchanged 日历和时限未变"]


# -- reading ---------------------------------------------------------------------------------

def status_counts(conn: Connection) -> dict[tuple[str, str], int]:
    return {(d, s): n for d, s, n in conn.execute(
        select(record_timeliness.c.dept, record_timeliness.c.status, func.count())
        .group_by(record_timeliness.c.dept, record_timeliness.c.status))}


def estimated_counts(conn: Connection) -> dict[str, int]:
    """Versions per estimated-year set (e.g. {"2027": 12}); only estimated rows are read (indexed)."""
    return dict(conn.execute(select(record_timeliness.c.estimated, func.count())
                             .where(record_timeliness.c.estimated.is_not(None))
                             .group_by(record_timeliness.c.estimated)).all())


def percentile(values: Sequence[int], share: float) -> float | None:
    """The nearest-rank percentile (the smallest value at or above `share` of the values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(share * 1000) * len(ordered) // 1000))  # ceil(share × n) without float rounding
    return float(ordered[min(rank, len(ordered)) - 1])


def median(values: Sequence[int]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
