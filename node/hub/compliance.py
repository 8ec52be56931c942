"""Deadline compliance per department and obligation: the data section every compliance report renders.

`build_report` reads the store once, in one snapshot, and returns plain JSON data: per
department its ledger checkpoint, liveness, what arrived in the period and how timely
(on-time share, lag median and 95th percentile in working days, the late records), completeness
against the node's signed inventory, rejections at the hub and at the department, and the status
of every obligation; then a ranking and a trend. Records count in the period of their receipt
date (Asia/Shanghai). The same store, period, scope and `as_of` give byte-identical data
(`data_bytes`): given `as_of`, no clock is read, and everything is sorted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from ..protocol import jsonutil
from ..protocol.envelope import format_time, parse_time, utc_now
from ..protocol.validation import CHINA, default_registry
from . import obligations as obl
from .store import (
    Store, batches, checkpoints, departments, heartbeats, projection_positions, record_timeliness, records,
)
from .figures import StoreFigures
from .timeliness import NAME as TIMELINESS, Basis, median, percentile

FORMAT = "cx-compliance/1"
LATE_RECORDS_SHOWN = 2000  # per department; the count of all of them is always given
COUNTED = ("on_time", "late")  # statuses of a delivery that counts towards the on-time share


class ReportError(ValueError):
    """A report that cannot be made as asked (a bad period, an unknown department)."""


@dataclass(frozen=True)
class Request:
    period_from: date
    period_to: date
    depts: tuple[str, ...] | None = None  # None: every department
    as_of: str | None = None  # UTC; default: the end of the period, or now while the period runs

    def checked(self, now: str | None = None) -> Request:
        if self.period_to < self.period_from:
            raise ReportError(f"the period ends ({self.period_to}) before it starts ({self.period_from}) "
                              "报告期结束日期早于开始日期")
        end = format_time(datetime.combine(self.period_to + timedelta(days=1), time(), CHINA)
                          - timedelta(milliseconds=1))
        now = now or utc_now()
        as_of = self.as_of or min(end, now)
        try:
            parse_time(as_of)
        except ValueError as exc:
            raise ReportError(f"as_of: {exc}") from None
        return Request(self.period_from, self.period_to, self.depts, as_of)


@dataclass(frozen=True)
class Settings:
    hub_name: str = "Credit Exchange hub"
    silent_after_seconds: float = 300.0  # the console's threshold ([console] silent_after_seconds): one meaning of silent
    trend_periods: int = 6

    @classmethod
    def from_config(cls, cfg: Any) -> Settings:
        return cls(cfg.hub.name, cfg.console.silent_after_seconds, cfg.compliance.trend_periods)


def data_bytes(report: dict[str, Any]) -> bytes:
    """The data section as signed: canonical JSON (sorted keys, no spaces, UTF-8)."""
    return jsonutil.dumps(report)


def local_date(stamp: str) -> date:
    return parse_time(stamp).astimezone(CHINA).date()


def build_report(store: Store, request: Request, *, settings: Settings, basis: Basis,
                 obligation_set: obl.ObligationSet | None) -> dict[str, Any]:
    req = request.checked()
    with _snapshot(store) as conn:
        depts = _departments(conn, req.depts)
        names = [d["dept"] for d in depts]
        rows = _period_rows(conn, req, names)
        late = _late_records(conn, req, names)
        held = _held(conn, names)
        beats = _heartbeats(conn, names)
        hub_rejections = _hub_rejections(conn, req, names)
        last_batches = _last_batches(conn, req, names)
        cps = _checkpoints(conn, names)
        trend = _trend(conn, req, names, settings.trend_periods)
        obligation_rows = _obligations(conn, req, depts, obligation_set, basis, held, beats)
    as_of = req.as_of
    assert as_of is not None
    years: set[int] = set()
    for r in rows:
        if r.estimated:
            years.update(int(y) for y in r.estimated.split(","))
    years.update(basis.calendar.estimated_years(req.period_from, req.period_to))
    dept_out = []
    for d in depts:
        name = d["dept"]
        dept_out.append(_department(d, [r for r in rows if r.dept == name], late.get(name, ([], 0)),
                                    held.get(name, {}), beats.get(name, []), hub_rejections.get(name, {}),
                                    last_batches.get(name, {}), cps.get(name), basis, as_of, settings))
    return {
        "format": FORMAT,
        "hub": settings.hub_name,
        "period": {"from": req.period_from.isoformat(), "to": req.period_to.isoformat(), "as_of": as_of},
        "scope": list(req.depts) if req.depts else "all",
        "basis": {"fingerprint": basis.fingerprint, "limits": basis.limits.to_json(),
                  "calendar": [basis.calendar.coverage(y).to_json() for y in _calendar_years(req, years)]},
        "estimated_years": sorted(years),
        "obligation_set": obligation_set.info() if obligation_set else None,
        "departments": dept_out,
        "obligations": obligation_rows,
        "ranking": _ranking(dept_out),
        "trend": trend,
    }


# -- reading ---------------------------------------------------------------------------------

class _snapshot:
    """One read transaction, so every figure comes from the same state of the store."""

    def __init__(self, store: Store):
        self.store = store

    def __enter__(self) -> Connection:
        conn = self.store.reader.connect()
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        self.conn = conn
        self.tx = conn.begin()
        return conn

    def __exit__(self, *exc: Any) -> None:
        self.tx.rollback()
        self.conn.close()


def _departments(conn: Connection, wanted: Sequence[str] | None) -> list[dict[str, Any]]:
    found = [dict(r._mapping) for r in conn.execute(
        select(departments.c.dept, departments.c.name, departments.c.region).order_by(departments.c.dept))]
    if wanted is None:
        return found
    known = {d["dept"] for d in found}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise ReportError(f"no department {', '.join(unknown)} 没有该部门; known: {', '.join(sorted(known)) or 'none'}")
    return [d for d in found if d["dept"] in set(wanted)]


def _in_period(req: Request, names: Sequence[str]) -> Any:
    c = record_timeliness.c
    return and_(c.received_date >= req.period_from.isoformat(), c.received_date <= req.period_to.isoformat(),
                c.received <= req.as_of, c.dept.in_(names))


def _period_rows(conn: Connection, req: Request, names: Sequence[str]) -> list[Any]:
    c = record_timeliness.c
    if not names:
        return []
    return conn.execute(select(c.dept, c.type, c.status, c.lag, c.estimated).where(_in_period(req, names))).all()


def _late_records(conn: Connection, req: Request, names: Sequence[str]) -> dict[str, tuple[list[dict], int]]:
    c = record_timeliness.c
    if not names:
        return {}
    totals = dict(conn.execute(select(c.dept, func.count()).where(_in_period(req, names), c.status == "late")
                               .group_by(c.dept)).all())
    out: dict[str, tuple[list[dict], int]] = {}
    for dept, total in totals.items():
        shown = conn.execute(select(c.record_id, c.type, c.event_date, c.deadline, c.received, c.received_date,
                                    c.lag, c.limit_days, c.estimated)
                             .where(_in_period(req, [dept]), c.status == "late")
                             .order_by(c.lag.desc(), c.received_date, c.record_id).limit(LATE_RECORDS_SHOWN)).all()
        out[dept] = ([{"record_id": r.record_id, "type": r.type, "event_date": r.event_date, "deadline": r.deadline,
                       "received": r.received, "received_date": r.received_date, "lag": r.lag,
                       "limit": r.limit_days, "estimated": r.estimated} for r in shown], total)
    return out


def _held(conn: Connection, names: Sequence[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for dept, rtype, n in conn.execute(select(records.c.dept, records.c.type, func.count())
                                       .where(records.c.status == "active", records.c.dept.in_(names))
                                       .group_by(records.c.dept, records.c.type)):
        out.setdefault(dept, {})[rtype] = n
    return out


def _heartbeats(conn: Connection, names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in conn.execute(select(heartbeats.c.dept, heartbeats.c.node, heartbeats.c.time, heartbeats.c.received,
                                 heartbeats.c.version, heartbeats.c.inventory, heartbeats.c.rejections)
                          .where(heartbeats.c.dept.in_(names)).order_by(heartbeats.c.dept, heartbeats.c.node)):
        out.setdefault(r.dept, []).append({
            "node": r.node, "time": r.time, "received": r.received, "version": r.version,
            "inventory": jsonutil.loads(r.inventory or "{}"), "rejections": jsonutil.loads(r.rejections or "{}")})
    return out


def _hub_rejections(conn: Connection, req: Request, names: Sequence[str]) -> dict[str, dict[tuple[str, str], int]]:
    """Records the hub refused in batches received in the period: (type, rule) -> records."""
    start = format_time(datetime.combine(req.period_from, time(), CHINA))
    out: dict[str, dict[tuple[str, str], int]] = {}
    found = conn.execute(select(batches.c.dept, batches.c.header, batches.c.receipt)
                         .where(batches.c.dept.in_(names), batches.c.received >= start,
                                batches.c.received <= req.as_of, batches.c.rejected > 0)
                         .order_by(batches.c.batch_id))
    for dept, header, receipt in found:
        schemas = jsonutil.loads(bytes(header)).get("schemas", {})
        rtype = sorted(schemas)[0] if schemas else "?"
        body = jsonutil.loads(bytes(receipt).split(b"\n", 1)[0])
        counts = out.setdefault(dept, {})
        for rejection in body.get("rejected", []):
            # a record counts once, under the first rule it broke; the others are not counted again
            errors = rejection.get("errors") or [{}]
            rule = str(errors[0].get("rule", "?"))
            counts[(rtype, rule)] = counts.get((rtype, rule), 0) + 1
    return out


def _last_batches(conn: Connection, req: Request, names: Sequence[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for dept, node, last in conn.execute(select(batches.c.dept, batches.c.node, func.max(batches.c.received))
                                         .where(batches.c.dept.in_(names), batches.c.received <= req.as_of)
                                         .group_by(batches.c.dept, batches.c.node)):
        out.setdefault(dept, {})[node] = last
    return out


def _checkpoints(conn: Connection, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The signed checkpoint of the ledger prefix the timeliness figures were computed from."""
    positions = dict(conn.execute(select(projection_positions.c.dept, projection_positions.c.position)
                                  .where(projection_positions.c.projection == TIMELINESS)).all())
    out = {}
    for dept in names:
        size = positions.get(dept, 0)
        row = conn.execute(select(checkpoints).where(checkpoints.c.dept == dept, checkpoints.c.size <= size)
                           .order_by(checkpoints.c.size.desc()).limit(1)).first()
        if row is not None:
            out[dept] = {"size": row.size, "root": row.root, "time": row.time, "key_id": row.key_id,
                         "sig": row.signature, "projected": size}
    return out


def _trend(conn: Connection, req: Request, names: Sequence[str], periods: int) -> dict[str, Any]:
    """Per department and month, for the `periods` months ending with the report's: arrivals and timeliness."""
    months = []
    year, month = req.period_to.year, req.period_to.month
    for _ in range(periods):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    months.reverse()
    c = record_timeliness.c
    first = f"{months[0]}-01"
    counts: dict[tuple[str, str, str], int] = {}
    if names:
        month_of = func.substr(c.received_date, 1, 7)
        for dept, m, status, n in conn.execute(
                select(c.dept, month_of, c.status, func.count())
                .where(c.dept.in_(names), c.received_date >= first, c.received_date <= req.period_to.isoformat(),
                       c.received <= req.as_of)
                .group_by(c.dept, month_of, c.status)):
            counts[(dept, m, status)] = n
    out = []
    for dept in names:
        points = []
        for m in months:
            on_time, late = counts.get((dept, m, "on_time"), 0), counts.get((dept, m, "late"), 0)
            total = sum(n for (d, mm, _), n in counts.items() if d == dept and mm == m)
            points.append({"period": m, "versions": total, "on_time": on_time, "late": late,
                           "on_time_share": _share(on_time, on_time + late)})
        out.append({"dept": dept, "points": points})
    return {"periods": months, "departments": out}


# -- per department --------------------------------------------------------------------------

def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _department(d: dict[str, Any], rows: list[Any], late: tuple[list[dict], int], held: dict[str, int],
                beats: list[dict[str, Any]], hub_rejections: dict[tuple[str, str], int], last_batches: dict[str, str],
                checkpoint: dict[str, Any] | None, basis: Basis, as_of: str, settings: Settings) -> dict[str, Any]:
    dept = d["dept"]
    statuses: dict[str, dict[str, int]] = {}
    lags: dict[str, list[int]] = {}
    estimated_versions = 0
    for r in rows:
        by = statuses.setdefault(r.type, {})
        by[r.status] = by.get(r.status, 0) + 1
        if r.status in COUNTED and r.lag is not None:
            lags.setdefault(r.type, []).append(r.lag)
        if r.estimated:
            estimated_versions += 1
    inventory: dict[str, int] = {}
    dept_rejections: dict[tuple[str, str], int] = {}
    for beat in beats:
        if beat["received"] <= as_of:
            for rtype, n in beat["inventory"].items():
                inventory[rtype] = inventory.get(rtype, 0) + n
            for rtype, rules in beat["rejections"].items():
                for rule, n in rules.items():
                    dept_rejections[(rtype, rule)] = dept_rejections.get((rtype, rule), 0) + n
    types = sorted(set(statuses) | set(held) | set(inventory) | {t for t, _ in hub_rejections}
                   | {t for t, _ in dept_rejections})
    by_type = []
    for rtype in types:
        s = statuses.get(rtype, {})
        on_time, late_n = s.get("on_time", 0), s.get("late", 0)
        inv = inventory.get(rtype)
        have = held.get(rtype, 0)
        by_type.append({
            "type": rtype, "title": _title(rtype), "limit": basis.limits.limit(dept, rtype),
            "versions": sum(s.values()), "on_time": on_time, "late": late_n, "corrections": s.get("correction", 0),
            "retractions": s.get("retraction", 0), "no_date": s.get("no_date", 0),
            "on_time_share": _share(on_time, on_time + late_n),
            "lag_median": median(lags.get(rtype, [])), "lag_p95": percentile(lags.get(rtype, []), 0.95),
            "inventory": inv, "held": have,
            "missing": max(0, inv - have) if inv is not None else None,
            "surplus": max(0, have - inv) if inv is not None else None,
            "rejected_hub": sum(n for (t, _), n in hub_rejections.items() if t == rtype),
            "rejected_dept": sum(n for (t, _), n in dept_rejections.items() if t == rtype),
        })
    all_lags = [x for values in lags.values() for x in values]
    totals = {k: sum(t[k] for t in by_type) for k in ("versions", "on_time", "late", "corrections", "retractions",
                                                       "no_date", "held", "rejected_hub", "rejected_dept")}
    measured = [t for t in by_type if t["inventory"] is not None]
    late_shown, late_total = late
    return {
        "dept": dept, "name": d["name"], "region": d["region"],
        "checkpoint": checkpoint,
        "liveness": _liveness(beats, last_batches, as_of, settings.silent_after_seconds),
        **totals,
        "on_time_share": _share(totals["on_time"], totals["on_time"] + totals["late"]),
        "lag_median": median(all_lags), "lag_p95": percentile(all_lags, 0.95),
        "inventory": sum(t["inventory"] for t in measured) if measured else None,
        "missing": sum(t["missing"] for t in measured) if measured else None,
        "surplus": sum(t["surplus"] for t in measured) if measured else None,
        "estimated_versions": estimated_versions,
        "by_type": by_type,
        "rejections": {
            "hub": [{"type": t, "rule": r, "records": n} for (t, r), n in sorted(hub_rejections.items())],
            "department": [{"type": t, "rule": r, "rows": n} for (t, r), n in sorted(dept_rejections.items())],
        },
        "late_records": late_shown, "late_records_total": late_total,
    }


def _liveness(beats: list[dict[str, Any]], last_batches: dict[str, str], as_of: str,
              silent_after: float) -> dict[str, Any]:
    limit = parse_time(as_of) - timedelta(seconds=silent_after)
    nodes = []
    for node in sorted({b["node"] for b in beats} | set(last_batches)):
        beat = next((b for b in beats if b["node"] == node), None)
        heard = beat["received"] if beat and beat["received"] <= as_of else None
        batch = last_batches.get(node)
        latest = max(filter(None, (heard, batch)), default=None)
        nodes.append({"node": node, "last_heartbeat": heard, "last_batch": batch,
                      "version": beat["version"] if beat else None,
                      "silent": latest is None or parse_time(latest) < limit})
    heard = max((n["last_heartbeat"] for n in nodes if n["last_heartbeat"]), default=None)
    batch = max((n["last_batch"] for n in nodes if n["last_batch"]), default=None)
    return {"nodes": nodes, "last_heartbeat": heard, "last_batch": batch, "silent_after_seconds": silent_after,
            "silent": not nodes or all(n["silent"] for n in nodes)}


def _title(rtype: str) -> str:
    try:
        return default_registry().get(rtype).title
    except Exception:  # noqa: BLE001 - a type this version does not know keeps its code
        return rtype


def _ranking(depts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Departments best first: on-time share, then fewest missing, then smallest 95th percentile lag."""
    def key(d: dict[str, Any]) -> tuple:
        share, missing, p95 = d["on_time_share"], d["missing"], d["lag_p95"]
        # unknown figures (nothing received, no inventory) rank after known ones
        return (share is None, -(share or 0.0), missing is None, missing or 0, p95 is None, p95 or 0, d["dept"])

    return [{"rank": i, "dept": d["dept"], "name": d["name"], "on_time_share": d["on_time_share"],
             "late": d["late"], "missing": d["missing"], "lag_p95": d["lag_p95"], "silent": d["liveness"]["silent"]}
            for i, d in enumerate(sorted(depts, key=key), start=1)]


def _calendar_years(req: Request, estimated: Iterable[int]) -> list[int]:
    return sorted(set(range(req.period_from.year, req.period_to.year + 1)) | set(estimated))


# -- obligations -----------------------------------------------------------------------------

def _obligations(conn: Connection, req: Request, depts: list[dict[str, Any]], found: obl.ObligationSet | None,
                 basis: Basis, held: dict[str, dict[str, int]],
                 beats: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    if found is None:
        return []
    in_scope = {d["dept"] for d in depts}
    as_of = local_date(req.as_of or utc_now())
    out = []
    for o in sorted(found.obligations, key=lambda o: o.id):
        for dept in o.departments:
            if dept not in in_scope and (req.depts is not None or _enrolled(conn, dept)):
                continue  # another department's obligation, or one named by a department not in this report
            for instance in o.instances(req.period_from, req.period_to, basis.calendar):
                if instance.first is None and instance.due > req.period_to:
                    continue  # a one-off deadline after the period
                facts = _facts(conn, req, dept, o, instance, held, beats) if o.measured else None
                status = obl.evaluate(o, instance, facts, as_of)
                if instance.first is None and instance.due < req.period_from and status.status in ("met", "met_late"):
                    continue  # settled before this period
                out.append({"id": o.id, "title": o.title, "unit": o.unit, "dept": dept,
                            "enrolled": dept in in_scope, "record_types": list(o.record_types),
                            "period": o.period, **instance.to_json(), **status.to_json()})
    return out


def _enrolled(conn: Connection, dept: str) -> bool:
    return conn.execute(select(departments.c.dept).where(departments.c.dept == dept)).first() is not None


def _facts(conn: Connection, req: Request, dept: str, o: obl.Obligation, instance: obl.Instance,
           held: dict[str, dict[str, int]], beats: dict[str, list[dict[str, Any]]]) -> obl.Facts:
    c = record_timeliness.c
    window = [c.dept == dept, c.type.in_(o.record_types), c.status.in_(COUNTED), c.received <= req.as_of]
    if instance.first is not None:
        window += [c.event_date >= instance.first.isoformat(), c.event_date <= instance.last.isoformat()]
    else:
        window += [c.event_date <= instance.due.isoformat()]
    arrivals = sorted(date.fromisoformat(first) for _, first in conn.execute(
        select(c.record_id, func.min(c.received_date)).where(*window).group_by(c.record_id)))
    inventory = None
    for beat in beats.get(dept, []):
        if beat["received"] <= (req.as_of or ""):
            for t in o.record_types:
                if t in beat["inventory"]:
                    inventory = (inventory or 0) + beat["inventory"][t]
    return obl.Facts(arrivals, sum(held.get(dept, {}).get(t, 0) for t in o.record_types), inventory)


# -- metrics ---------------------------------------------------------------------------------

class ComplianceFigures(StoreFigures):
    """Prometheus figures about timeliness and liveness, read from the store in the background."""

    def read(self) -> dict[str, Any]:
        from .timeliness import basis_in_force, estimated_counts, status_counts

        assert self.store is not None
        with self.store.reader.connect() as conn:
            statuses = status_counts(conn)
            estimated = estimated_counts(conn)
            beats = conn.execute(select(heartbeats.c.dept, heartbeats.c.node, heartbeats.c.received)).all()
            lasts = conn.execute(select(batches.c.dept, batches.c.node, func.max(batches.c.received))
                                 .group_by(batches.c.dept, batches.c.node)).all()
        contact: dict[tuple[str, str], str] = {}
        for dept, node, stamp in [*beats, *lasts]:
            contact[(dept, node)] = max(stamp, contact.get((dept, node), stamp))
        basis = basis_in_force(self.store)
        this_year = datetime.now(CHINA).year
        years = {y: basis.calendar.estimated(y) for y in (this_year, this_year + 1)} if basis else {}
        return {"statuses": statuses, "estimated": estimated, "contact": contact, "years": years}

    def families(self, found: dict[str, Any]) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        versions = GaugeMetricFamily("cx_timeliness_versions", "Accepted record versions by department and "
                                     "timeliness (on_time, late, correction, retraction, no_date)", labels=["dept", "status"])
        for (dept, status), n in sorted(found.get("statuses", {}).items()):
            versions.add_metric([dept, status], n)
        estimated = GaugeMetricFamily("cx_timeliness_estimated_versions", "Record versions whose lag or deadline "
                                      "was counted across a calendar year estimated Monday to Friday", labels=["years"])
        for years, n in sorted(found.get("estimated", {}).items()):
            estimated.add_metric([years], n)
        year = GaugeMetricFamily("cx_calendar_year_estimated", "1 while the working days of this or next year are "
                                 "estimated (neither chinesecalendar nor a complete calendar-file entry)", labels=["year"])
        for y, flag in sorted(found.get("years", {}).items()):
            year.add_metric([str(y)], 1 if flag else 0)
        contact = GaugeMetricFamily("cx_node_last_contact_timestamp_seconds", "When the hub last heard from a node "
                                    "(signed heartbeat or batch), Unix time", labels=["dept", "node"])
        for (dept, node), stamp in sorted(found.get("contact", {}).items()):
            contact.add_metric([dept, node], parse_time(stamp).timestamp())
        return [versions, estimated, year, contact]
