"""Public credit information: publicity periods, credit repair, warning classes, labels and red/black lists.

What the public may see of an enterprise is decided once, when a version is accepted, not on each
page view: the credit projection gives every enterprise record a publicity period by the rules in
force (`credit_rules.toml`, shipped with the hub, or the hub's own file), marks repairs, and keeps
each enterprise's class, labels and list memberships current for the enterprises a chunk touched.
Time alone also changes what is public (a period ends, a label counted "within 3 years" lapses):
every standing row carries the day that happens (`next_change`), and a daily sweep recomputes only
the enterprises whose day has come.

Credit repair (信用修复) is a retraction whose reason starts with "信用修复": it ends the record's
publication at once and keeps its history; a plain retraction withdraws the record from the public
view entirely. A repair before the minimum time is recorded (`repair_early`), not refused: the
department's decision stands.

The portal reads these tables only through the functions at the end of this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.engine import Connection

from ..config import ConfigError
from ..protocol.envelope import utc_now
from ..protocol.validation import china_today
from .projections import Accepted
from .store import Store, chunks, copy_rows, in_chunks, list_entries, publicity, standing
from .timeliness import china_date, event_field

log = structlog.get_logger("cx.hub.credit")

NAME = "credit"
PERIOD = re.compile(r"^(?:(\d{1,3})([my])|0|none)$")
LISTED, DELISTED = "列入", "移出"
MAX_YEAR = 9999


def shipped_rules_file() -> Any:
    return resources.files("cx.hub").joinpath("credit_rules.toml")


# -- the rules ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Condition:
    """What a record must be for a rule to apply: its type, field values, patterns, a low fine."""

    types: frozenset[str] = frozenset()
    fields: Mapping[str, frozenset[str]] = field(default_factory=dict)  # any value in the set
    only: Mapping[str, frozenset[str]] = field(default_factory=dict)  # every value in the set
    matches: Mapping[str, re.Pattern[str]] = field(default_factory=dict)  # any field matches
    fine_below: bool = False

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str) -> Condition:
        def sets(key: str) -> dict[str, frozenset[str]]:
            table = raw.get(key, {})
            if not isinstance(table, Mapping) or not all(isinstance(v, list) for v in table.values()):
                raise ConfigError(f"{where}: {key} must be a table of field = [values] 应为 字段 = [取值]")
            return {k: frozenset(map(str, v)) for k, v in table.items()}

        patterns = {}
        for name, pattern in raw.get("matches", {}).items():
            try:
                patterns[name] = re.compile(str(pattern))
            except re.error as exc:
                raise ConfigError(f"{where}: matches.{name} = {pattern!r} is not a regular expression "
                                  f"正则表达式错误: {exc}") from None
        return cls(frozenset(raw.get("types", ())), sets("fields"), sets("only"), patterns,
                   bool(raw.get("fine_below", False)))

    def referenced(self) -> set[str]:
        return set(self.fields) | set(self.only) | set(self.matches)

    def holds(self, rtype: str, data: Mapping[str, Any], low_fine: Any = None) -> bool:
        if self.types and rtype not in self.types:
            return False
        for name, wanted in self.fields.items():
            if not wanted & set(_values(data.get(name))):
                return False
        for name, allowed in self.only.items():
            values = _values(data.get(name))
            if not values or not set(values) <= allowed:
                return False
        if self.matches and not any(p.search(" ".join(_values(data.get(n)))) for n, p in self.matches.items()):
            return False
        return not self.fine_below or (low_fine is not None and low_fine(data))


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


@dataclass(frozen=True)
class PublicityRule:
    id: str
    basis: str
    when: Condition
    period: str  # "3m", "1y", "0", "none"


@dataclass(frozen=True)
class RepairMinimum:
    id: str
    when: Condition
    months: int


@dataclass(frozen=True)
class LabelRule:
    id: str
    zh: str
    en: str
    when: Condition
    klass: str | None  # the class it gives; None for a favourable label
    list_id: str | None = None  # a label held while on this list
    within_years: int | None = None


@dataclass(frozen=True)
class ListRule:
    id: str
    zh: str
    en: str
    kind: str  # red | black
    public: bool
    ends_zh: str
    ends_en: str
    type: str | None = None  # kept by 列入/移出 records of this type
    labels: frozenset[str] = frozenset()  # or held with any of these labels …
    unless: frozenset[str] = frozenset()  # … and none of these
    years: int | None = None  # membership ends this long after entry

    def ends(self) -> str:
        return f"{self.ends_zh} / {self.ends_en}"


@dataclass(frozen=True)
class Rules:
    """The credit rules in force, parsed and checked; `version` names them in checks and notes."""

    version: str
    sha256: str
    fine_individual: Decimal  # yuan
    fine_organisation: Decimal
    individual_categories: frozenset[str]
    categories: Mapping[str, str]
    restriction_types: frozenset[str]
    restriction_until: str
    publicity: tuple[PublicityRule, ...]
    repair_prefix: str
    repair_months: int
    repair_minimums: tuple[RepairMinimum, ...]
    classes: tuple[tuple[str, str, str], ...]  # (id, zh, en), rising
    labels: tuple[LabelRule, ...]
    lists: tuple[ListRule, ...]

    @classmethod
    def parse(cls, text: str, where: str, *, fine_individual: int | None = None,
              fine_organisation: int | None = None) -> Rules:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML 规则文件格式错误: {exc}") from None
        try:
            return cls._parse(raw, text, where, fine_individual, fine_organisation)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc!r} is missing or wrong 规则文件缺项或有误") from None

    @classmethod
    def _parse(cls, raw: dict[str, Any], text: str, where: str, fine_individual: int | None,
               fine_organisation: int | None) -> Rules:
        amounts = raw.get("amounts", {})
        publicity_rules = tuple(
            PublicityRule(str(r["id"]), str(r.get("basis", "")), Condition.parse(r, f"{where} publicity {r['id']}"),
                          _period(str(r["period"]), f"{where} publicity {r['id']}"))
            for r in raw["publicity"])
        repair = raw.get("repair", {})
        classes = tuple((str(c["id"]), str(c["zh"]), str(c["en"])) for c in raw["classes"])
        class_ids = {c[0] for c in classes}
        lists = tuple(ListRule(str(r["id"]), str(r["zh"]), str(r["en"]), str(r.get("kind", "black")),
                               bool(r.get("public", False)), str(r["ends_zh"]), str(r["ends_en"]), r.get("type"),
                               frozenset(r.get("labels", ())), frozenset(r.get("unless", ())), r.get("years"))
                      for r in raw["lists"])
        list_ids = {r.id for r in lists}
        labels = []
        for r in raw["labels"]:
            label = LabelRule(str(r["id"]), str(r["zh"]), str(r["en"]), Condition.parse(r, f"{where} label {r['id']}"),
                              r.get("class"), r.get("list"), r.get("within_years"))
            if label.klass is not None and label.klass not in class_ids:
                raise ConfigError(f"{where} label {label.id}: class {label.klass!r} is not one of {sorted(class_ids)} "
                                  "未定义的警示类别")
            if label.list_id is not None and label.list_id not in list_ids:
                raise ConfigError(f"{where} label {label.id}: list {label.list_id!r} is not defined 未定义的名单")
            labels.append(label)
        label_ids = {label.id for label in labels}
        for r in lists:
            unknown = (r.labels | r.unless) - label_ids
            if unknown:
                raise ConfigError(f"{where} list {r.id}: unknown labels {sorted(unknown)} 未定义的标签")
            if (r.type is None) == (not r.labels):
                raise ConfigError(f"{where} list {r.id}: give either type or labels 应指定 type 或 labels 之一")
        return cls(
            version=str(raw.get("version", "")),
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            fine_individual=Decimal(fine_individual if fine_individual is not None else amounts.get("fine_individual", 5000)),
            fine_organisation=Decimal(fine_organisation if fine_organisation is not None
                                      else amounts.get("fine_organisation", 50000)),
            individual_categories=frozenset(amounts.get("individual_categories", ["natural_person"])),
            categories=dict(raw.get("categories", {})),
            restriction_types=frozenset(raw.get("restriction", {}).get("penalty_types", ())),
            restriction_until=str(raw.get("restriction", {}).get("until", "valid_until")),
            publicity=publicity_rules,
            repair_prefix=str(repair.get("reason_prefix", "信用修复")),
            repair_months=int(repair.get("months", 6)),
            repair_minimums=tuple(RepairMinimum(str(m["id"]), Condition.parse(m, f"{where} repair {m['id']}"),
                                                int(m["months"])) for m in repair.get("minimum", ())),
            classes=classes,
            labels=tuple(labels),
            lists=lists,
        )

    @classmethod
    def load(cls, path: Path | None = None, **amounts: int | None) -> Rules:
        """The hub's rules file, or the shipped one; the province's amounts from the config win."""
        if path is None:
            return cls.parse(shipped_rules_file().read_text("utf-8"), "credit_rules.toml (shipped with cx)", **amounts)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the credit rules {path}: {exc.strerror} 无法读取信用规则文件") from None
        return cls.parse(text, str(path), **amounts)

    @classmethod
    def from_config(cls, cfg: Any) -> Rules:
        portal = getattr(cfg, "portal", None)
        if portal is None:
            return cls.load()
        return cls.load(portal.rules, fine_individual=portal.fine_individual,
                        fine_organisation=portal.fine_organisation)

    # -- deciding --

    def fact_fields(self) -> set[str]:
        """The fields kept per record for the label rules (and the list actions)."""
        out = {"action"}
        for label in self.labels:
            out |= label.when.referenced()
        return out

    def low_fine(self, data: Mapping[str, Any]) -> bool:
        """A fine below the province's lower amount (较低数额罚款); no fine at all counts as low."""
        amount = data.get("fine_amount")
        if amount is None:
            return True
        try:
            yuan = Decimal(str(amount)) * 10000  # fine_amount is in 万元
        except InvalidOperation:
            return False
        individual = data.get("subject_category") in self.individual_categories
        return yuan < (self.fine_individual if individual else self.fine_organisation)

    def period(self, rtype: str, data: Mapping[str, Any], event: date | None) -> tuple[str, date | None]:
        """(rule id, last day shown or None for no end) of one record."""
        until = _parse_date(data.get("publish_until"))
        if until is not None:
            return "publish_until", until
        rule = self._choose(rtype, data)[0]
        if rule is None:
            return "none", None
        end = _period_end(event, rule.period)
        if end is not None and self.restriction_types & set(_values(data.get("penalty_types"))):
            restriction = _parse_date(data.get(self.restriction_until))
            if restriction is not None and restriction > end:
                return f"{rule.id}+restriction", restriction
        return rule.id, end

    def repair_after(self, rtype: str, data: Mapping[str, Any], event: date | None) -> date | None:
        if event is None:
            return None
        return add_months(event, self._choose(rtype, data)[1])

    def _choose(self, rtype: str, data: Mapping[str, Any]) -> tuple[PublicityRule | None, int]:
        """The record's publicity rule and minimum months before a repair, remembered by the values that
        decide them: records of a department mostly repeat a few combinations, and the conditions are slow."""
        key = (rtype, *[repr(data.get(name)) for name in self._decisive])
        choice = self._choices.get(key)
        if choice is None:
            choice = (next((r for r in self.publicity if r.when.holds(rtype, data, self.low_fine)), None),
                      next((m.months for m in self.repair_minimums if m.when.holds(rtype, data, self.low_fine)),
                           self.repair_months))
            if len(self._choices) >= 4096:
                self._choices.clear()
            self._choices[key] = choice
        return choice

    @cached_property
    def _decisive(self) -> tuple[str, ...]:
        """Every field a publicity or repair condition reads, and those `low_fine` reads."""
        names = {"fine_amount", "subject_category"}
        for rule in (*self.publicity, *self.repair_minimums):
            names |= rule.when.referenced()
        return tuple(sorted(names))

    @cached_property
    def _choices(self) -> dict[tuple[str, ...], tuple[PublicityRule | None, int]]:
        return {}

    def is_repair(self, reason: str | None) -> bool:
        return bool(reason) and reason.strip().startswith(self.repair_prefix)

    def class_rank(self, class_id: str | None) -> int:
        return self._ranks.get(class_id, 0) if class_id is not None else 0

    @cached_property
    def _ranks(self) -> dict[str, int]:
        return {c[0]: i for i, c in enumerate(self.classes)}

    @cached_property
    def label_classes(self) -> dict[str, str | None]:
        """Label id -> the class it gives (the first rule of that id with one), None for a favourable label."""
        out: dict[str, str | None] = {}
        for rule in self.labels:
            if out.get(rule.id) is None:
                out[rule.id] = rule.klass
        return out

    def title(self, kind: str, ident: str, lang: str) -> str:
        """The name of a class, label or list in a language (zh | en)."""
        pool: Iterable[Any] = {"class": [_Named(*c) for c in self.classes], "label": self.labels,
                               "list": self.lists}[kind]
        item = next((x for x in pool if x.id == ident), None)
        if item is None:
            return ident
        return item.en if lang == "en" else item.zh

    def list_rule(self, list_id: str) -> ListRule | None:
        return next((r for r in self.lists if r.id == list_id), None)


@dataclass(frozen=True)
class _Named:
    id: str
    zh: str
    en: str


def _period(text: str, where: str) -> str:
    if not PERIOD.match(text):
        raise ConfigError(f"{where}: period {text!r} — give e.g. \"3m\", \"1y\", \"0\" or \"none\" 公示期限格式错误")
    return text


def _period_end(event: date | None, period: str) -> date | None:
    if period == "none":
        return None
    if event is None:
        return None
    if period == "0":
        return event - timedelta(days=1)  # never public
    count, unit = int(period[:-1]), period[-1]
    return add_months(event, count * (12 if unit == "y" else 1)) - timedelta(days=1)


def add_months(day: date, months: int) -> date:
    """The same day `months` later (the month's last day where it is shorter)."""
    month = day.month - 1 + months
    year = min(MAX_YEAR, day.year + month // 12)
    month = month % 12 + 1
    for last in (31, 30, 29, 28):
        try:
            return day.replace(year=year, month=month, day=min(day.day, last))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _parse_date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None


# -- the projection ----------------------------------------------------------------------------------

class CreditProjection:
    """Keeps `publicity`, `standing` and `list_entries` from accepted versions, per enterprise touched."""

    name = NAME

    def __init__(self, rules: Rules, today: Any = china_today):
        self.rules = rules
        self.today = today  # a function: tests pin the day
        self._facts = sorted(rules.fact_fields())

    def apply(self, conn: Connection, versions: Sequence[Accepted]) -> None:
        dept = versions[0].dept
        ids = {v.record_id for v in versions}
        current: dict[str, dict[str, Any] | None] = {
            r.record_id: dict(r._mapping) for r in in_chunks(
                conn, lambda chunk: select(publicity).where(publicity.c.dept == dept,
                                                             publicity.c.record_id.in_(chunk)), ids)}
        touched = {row["uscc"] for row in current.values() if row}
        for v in versions:
            row = self._row(v) if v.op == "upsert" else self._retracted(current.get(v.record_id), v)
            current[v.record_id] = row
            if row:
                touched.add(row["uscc"])
        for chunk in chunks(sorted(ids)):
            conn.execute(publicity.delete().where(publicity.c.dept == dept, publicity.c.record_id.in_(chunk)))
        copy_rows(conn, publicity, [row for row in current.values() if row])
        recompute(conn, self.rules, touched, self.today())

    def _row(self, v: Accepted) -> dict[str, Any] | None:
        data = v.data or {}
        uscc = data.get("uscc")
        if not uscc:
            return None  # a natural person's record: not enterprise information
        event_name = event_field(v.type)
        event = _parse_date(data.get(event_name)) if event_name else None
        rule, until = self.rules.period(v.type, data, event)
        return {
            "dept": v.dept, "record_id": v.record_id, "uscc": uscc, "name": data.get("subject_name"),
            "type": v.type, "category": self.rules.categories.get(v.type, "other"), "event_date": _iso(event),
            "public_until": _iso(until), "rule": rule,
            "repair_after": _iso(self.rules.repair_after(v.type, data, event)),
            "repaired_at": None, "repair_reason": None, "repair_early": False,
            "facts": json.dumps({k: data[k] for k in self._facts if k in data}, ensure_ascii=False, sort_keys=True),
            "ledger_index": v.ledger_index,
        }

    def _retracted(self, row: dict[str, Any] | None, v: Accepted) -> dict[str, Any] | None:
        if row is None or not self.rules.is_repair(v.reason):
            return None  # withdrawn: not public anywhere
        if row["repaired_at"] is not None:
            return row  # repaired once already; the first repair stands
        repaired_on = china_date(v.accepted).isoformat()
        return {**row, "repaired_at": v.accepted, "repair_reason": v.reason,
                "repair_early": row["repair_after"] is not None and repaired_on < row["repair_after"],
                "ledger_index": v.ledger_index}

    def clear(self, conn: Connection) -> None:
        for table in (publicity, standing, list_entries):
            conn.execute(table.delete())


def recompute(conn: Connection, rules: Rules, usccs: Iterable[str], today: date) -> int:
    """Bring the standing and list memberships of these enterprises up to date; returns how many."""
    usccs = sorted(set(usccs))
    if not usccs:
        return 0
    if conn.dialect.name == "postgresql":  # the projector (any hub process) and the sweep: one at a time
        conn.execute(text("SELECT pg_advisory_xact_lock(804220)"))
    records: dict[str, list[dict[str, Any]]] = {u: [] for u in usccs}
    for r in in_chunks(conn, lambda chunk: select(publicity).where(publicity.c.uscc.in_(chunk)), usccs):
        row = dict(r._mapping)
        row["facts"] = json.loads(row["facts"])
        records[row["uscc"]].append(row)
    old: dict[str, dict[str, dict[str, Any]]] = {u: {} for u in usccs}
    for r in in_chunks(conn, lambda chunk: select(list_entries).where(list_entries.c.uscc.in_(chunk)), usccs):
        old[r.uscc][r.list_id] = dict(r._mapping)
    now = utc_now()
    standing_rows, entry_rows = [], []
    for uscc in usccs:
        rows = records[uscc]
        entries, labels, next_change = _standing(rules, rows, old[uscc], today)
        name = max(rows, key=lambda r: (r["type"] == "enterprise_registration", r["ledger_index"]))["name"] \
            if rows else None
        entry_rows.extend({**e, "uscc": uscc, "name": name or e.get("name")} for e in entries.values())
        if rows:
            top = max((rules.class_rank(rules.label_classes.get(label["id"])) for label in labels), default=0)
            standing_rows.append({"uscc": uscc, "name": name, "class": rules.classes[top][0],
                                  "labels": json.dumps(labels, ensure_ascii=False), "updated": now,
                                  "next_change": _iso(next_change)})
    for chunk in chunks(usccs):
        conn.execute(standing.delete().where(standing.c.uscc.in_(chunk)))
        conn.execute(list_entries.delete().where(list_entries.c.uscc.in_(chunk)))
    copy_rows(conn, standing, standing_rows)
    copy_rows(conn, list_entries, entry_rows)
    return len(usccs)


def _standing(rules: Rules, rows: list[dict[str, Any]], old: Mapping[str, dict[str, Any]],
              today: date) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], date | None]:
    """One enterprise's list entries, labels and the next day time alone changes them."""
    day = today.isoformat()
    changes: list[date] = []
    entries: dict[str, dict[str, Any]] = {}
    for rule in rules.lists:
        if rule.type is None:
            continue
        entry = _record_list(rule, [r for r in rows if r["type"] == rule.type], old.get(rule.id), today)
        if entry:
            entries[rule.id] = entry
            if entry["ended"] is None and rule.years:
                changes.append(add_months(date.fromisoformat(entry["entered"]), 12 * rule.years))
    labels: dict[str, dict[str, Any]] = {}
    seen: dict[str, set[tuple[str, ...]]] = {}  # each label's records as a set: an enterprise may have thousands

    def add(label_id: str, since: str | None, keys: Iterable[list[str]]) -> None:
        label = labels.setdefault(label_id, {"id": label_id, "since": since, "records": []})
        if since and (label["since"] is None or since < label["since"]):
            label["since"] = since
        known = seen.setdefault(label_id, set())
        for k in keys:
            if tuple(k) not in known:
                known.add(tuple(k))
                label["records"].append(k)

    public = [r for r in rows if is_public(r, day)]
    for r in public:
        if r["public_until"]:
            changes.append(date.fromisoformat(r["public_until"]) + timedelta(days=1))
    for rule in rules.labels:
        if rule.list_id is not None:
            entry = entries.get(rule.list_id)
            if entry and entry["ended"] is None:
                add(rule.id, entry["entered"], json.loads(entry["basis"]))
            continue
        for r in public:
            if not rule.when.holds(r["type"], r["facts"]):
                continue
            if rule.within_years is not None:
                if r["event_date"] is None:
                    continue
                lapses = add_months(date.fromisoformat(r["event_date"]), 12 * rule.within_years)
                if lapses <= today:
                    continue
                changes.append(lapses)
            add(rule.id, r["event_date"], [[r["dept"], r["record_id"]]])
    for rule in rules.lists:
        if rule.type is not None:
            continue
        held = [labels[i] for i in sorted(rule.labels) if i in labels]
        previous = old.get(rule.id)
        if held and not rule.unless & set(labels):
            since = min((label["since"] for label in held if label["since"]), default=day)
            if previous and previous["ended"] is None:
                since = previous["entered"]
            basis: list[list[str]] = []
            basis.extend(k for label in held for k in label["records"] if k not in basis)
            entries[rule.id] = _entry(rule, since, basis, None)
        elif previous:
            entries[rule.id] = {**_without_uscc(previous), "ended": previous["ended"] or day}
    ordered = sorted(labels.values(), key=lambda label: -rules.class_rank(rules.label_classes.get(label["id"])))
    future = [c for c in changes if c > today]
    return entries, ordered, min(future) if future else None


def _record_list(rule: ListRule, rows: list[dict[str, Any]], previous: dict[str, Any] | None,
                 today: date) -> dict[str, Any] | None:
    """Membership of a list kept by 列入/移出 records: the last continuous stay, open or ended."""
    stay: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    live = sorted((r for r in rows if r["repaired_at"] is None and r["event_date"]),
                  key=lambda r: (r["event_date"], r["ledger_index"]))
    for r in live:
        action = r["facts"].get("action")
        key = [r["dept"], r["record_id"]]
        if action == LISTED:
            if stay is None:
                stay = {"entered": r["event_date"], "basis": [key], "ended": None}
            else:
                stay["basis"].append(key)
        elif action == DELISTED and stay is not None:
            stay["ended"] = r["event_date"]
            stay["basis"].append(key)
            last, stay = stay, None
    result = stay or last
    if result is None:
        repaired = [r for r in rows if r["repaired_at"] is not None and r["facts"].get("action") == LISTED]
        if previous and repaired:  # the listing was repaired away: the stay ended on the repair
            ended = previous["ended"] or china_date(max(r["repaired_at"] for r in repaired)).isoformat()
            return {**_without_uscc(previous), "ended": ended}
        return None
    if result["ended"] is None and rule.years:
        expiry = add_months(date.fromisoformat(result["entered"]), 12 * rule.years)
        if expiry <= today:
            result["ended"] = expiry.isoformat()
    return _entry(rule, result["entered"], result["basis"], result["ended"])


def _entry(rule: ListRule, entered: str, basis: list[list[str]], ended: str | None) -> dict[str, Any]:
    return {"list_id": rule.id, "entered": entered, "basis": json.dumps(basis, ensure_ascii=False),
            "ends": rule.ends(), "ended": ended, "public": rule.public}


def _without_uscc(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "uscc"}


def sweep(store: Store, rules: Rules, today: date | None = None) -> int:
    """Recompute the enterprises whose standing time has changed (a period or label ended); returns how many."""
    today = today or china_today()
    done = 0
    while True:
        with store.writer.begin() as conn:
            due = conn.execute(select(standing.c.uscc).where(standing.c.next_change <= today.isoformat())
                               .order_by(standing.c.next_change).limit(2000)).scalars().all()
            if not due:
                return done
            done += recompute(conn, rules, due, today)


async def run_sweeps(store: Store, rules: Rules, stop: asyncio.Event, interval: float = 60.0) -> None:
    """`cx hub run`: sweep once a day (Asia/Shanghai), and at start, until `stop` is set."""
    swept: date | None = None
    while not stop.is_set():
        today = china_today()
        if today != swept:
            try:
                count = await asyncio.to_thread(sweep, store, rules, today)
                log.info("credit sweep", day=today.isoformat(), enterprises=count)
                swept = today
            except Exception:  # noqa: BLE001 - the store is away: tried again next round
                log.exception("credit sweep failed; retrying")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


# -- what the portal and the credit check read ----------------------------------------------------

def is_public(row: Mapping[str, Any], today: date | str) -> bool:
    """A record is public while not repaired and within its publicity period (days in Asia/Shanghai)."""
    day = today if isinstance(today, str) else today.isoformat()
    return row["repaired_at"] is None and (row["public_until"] is None or row["public_until"] >= day)


def _public_clause(today: date | str) -> Any:
    day = today if isinstance(today, str) else today.isoformat()
    return and_(publicity.c.repaired_at.is_(None),
                or_(publicity.c.public_until.is_(None), publicity.c.public_until >= day))


def public_record_keys(conn: Connection, uscc: str, today: date | str) -> list[tuple[str, str]]:
    """(dept, record_id) of the enterprise's public records, newest event first."""
    rows = conn.execute(select(publicity.c.dept, publicity.c.record_id)
                        .where(publicity.c.uscc == uscc, _public_clause(today))
                        .order_by(publicity.c.event_date.desc(), publicity.c.dept, publicity.c.record_id)).all()
    return [(r.dept, r.record_id) for r in rows]


def standing_of(conn: Connection, uscc: str) -> dict[str, Any]:
    """The enterprise's class and labels ({"id", "since", "records"}); "normal" with no labels if unknown."""
    row = conn.execute(select(standing).where(standing.c.uscc == uscc)).first()
    if row is None:
        return {"uscc": uscc, "name": None, "class": "normal", "labels": [], "updated": None}
    return {"uscc": row.uscc, "name": row.name, "class": row._mapping["class"],
            "labels": json.loads(row.labels), "updated": row.updated}


def memberships(conn: Connection, uscc: str, *, public_only: bool = True,
                include_ended: bool = False) -> list[dict[str, Any]]:
    """The enterprise's list entries: current ones on public lists unless asked for more."""
    query = select(list_entries).where(list_entries.c.uscc == uscc)
    if public_only:
        query = query.where(list_entries.c.public.is_(True))
    if not include_ended:
        query = query.where(list_entries.c.ended.is_(None))
    return [entry_out(r) for r in conn.execute(query.order_by(list_entries.c.entered.desc()))]


def list_members(conn: Connection, list_id: str, page: int = 1, per_page: int = 50,
                 ) -> tuple[list[dict[str, Any]], int]:
    """One page of a list's current members, latest entry first, and how many there are."""
    where = and_(list_entries.c.list_id == list_id, list_entries.c.ended.is_(None))
    total = conn.execute(select(func.count()).select_from(list_entries).where(where)).scalar_one()
    query = (select(list_entries).where(where)
             .order_by(list_entries.c.entered.desc(), list_entries.c.uscc)
             .offset(max(0, page - 1) * per_page).limit(per_page))
    return [entry_out(r) for r in conn.execute(query)], total


def entry_out(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    out["basis"] = json.loads(out["basis"])
    out["public"] = bool(out["public"])
    return out
