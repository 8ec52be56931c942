"""The public portal's enterprise index: a projection of accepted registrations, searched by code or name.

Every accepted `enterprise_registration` version updates the enterprise's row in `enterprises`
(keyed by its credit code, or its registration number when it has none); a retraction of the
record it came from removes it. When two departments register the same code, the registration
with the later approval date is the one shown.

Name search is a substring search done by the store's own text index, never a scan: SQLite FTS5
with the trigram tokenizer, PostgreSQL pg_trgm (see store.py). A trigram index cannot answer a
two-character query (某某), so the projection also keeps every two-character piece of each name in
`enterprise_bigrams`; one character is refused as too short (it would list half the city).
Results are paged by row id without counting the matches: the portal shows at most a few pages.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from sqlalchemy import Integer, and_, bindparam, column, delete, select, tuple_
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Connection

from ..protocol.codes import uscc_problem
from ..protocol.envelope import utc_now
from .projections import Accepted
from .store import chunks, enterprise_bigrams, enterprises, in_chunks, insert_many, rows

NAME = "enterprise_search"
REGISTRATION = "enterprise_registration"
MIN_QUERY = 2  # characters of a name query
COPIED = ("reg_no", "region", "status", "enterprise_type", "legal_rep", "registered_capital", "currency",
          "established_date", "approval_date", "address", "business_scope", "registration_authority")
REG_NO = re.compile(r"\d{15}")
CODE_SHAPE = re.compile(r"[0-9A-Z]{18}")


# -- regions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    code: str
    zh: str
    en: str
    retired: tuple[str, ...] = ()

    @property
    def codes(self) -> tuple[str, ...]:
        return (self.code, *self.retired)


@cache
def regions() -> tuple[Region, ...]:
    """Luoyang's districts and counties with the codes they absorbed (regions.toml)."""
    raw = tomllib.loads(resources.files("cx.hub").joinpath("regions.toml").read_text("utf-8"))
    return tuple(Region(r["code"], r["zh"], r["en"], tuple(r.get("retired", ()))) for r in raw["region"])


def region_codes(code: str) -> tuple[str, ...] | None:
    """Every code that belongs to the region named by `code` (a current or a retired one); None if unknown."""
    return next((r.codes for r in regions() if code in r.codes), None)


def region_of(code: str | None) -> Region | None:
    return next((r for r in regions() if code in r.codes), None) if code else None


# -- the projection ---------------------------------------------------------------------------


def bigrams(name: str) -> set[str]:
    return {name[i:i + 2] for i in range(len(name) - 1)}


ENTRY = ("code", "uscc", "name", *COPIED, "dept", "record_id")  # an index row's columns from its registration
HELD = (enterprises.c.id, enterprises.c.code, enterprises.c.name, enterprises.c.dept, enterprises.c.record_id,
        enterprises.c.approval_date)


def _entry(v: Accepted, data: Mapping[str, Any]) -> dict[str, Any]:
    uscc = data.get("uscc")
    region = data.get("region") or (uscc[2:8] if uscc else None)
    return {"code": uscc or data.get("reg_no"), "uscc": uscc, "name": data["subject_name"],
            **{k: data.get(k) for k in COPIED}, "region": region, "dept": v.dept, "record_id": v.record_id}


class EnterpriseIndex:
    """Keeps `enterprises` (and its name indexes) from accepted registration records.

    A chunk is decided in memory, in ledger order, from the rows it touches (read in two queries);
    then written in a few statements: millions of registrations are loaded at the pace of the ledger.
    """

    name = NAME

    def apply(self, conn: Connection, versions: Sequence[Accepted]) -> None:
        regs = [v for v in versions if v.type == REGISTRATION]
        if not regs:
            return
        decided = [(v, _entry(v, v.data) if v.op == "upsert" and v.data else None) for v in regs]
        codes = {e["code"] for _, e in decided if e and e["code"]}
        held = {r.code: r for r in in_chunks(conn, lambda chunk: select(*HELD).where(
            enterprises.c.code.in_(chunk)), codes)}
        held.update({r.code: r for r in in_chunks(conn, lambda chunk: select(*HELD).where(
            tuple_(enterprises.c.dept, enterprises.c.record_id).in_(chunk)), {(v.dept, v.record_id) for v in regs})})
        shown: dict[str, dict[str, Any] | None] = {code: dict(r._mapping) for code, r in held.items()}
        source = {(r.dept, r.record_id): code for code, r in held.items()}  # registration record -> its code
        touched: set[str] = set()
        for v, entry in decided:
            key = (v.dept, v.record_id)
            was = source.get(key)
            if was is not None and (entry is None or entry["code"] != was):  # withdrawn, or its code corrected
                shown[was] = None
                touched.add(was)
                del source[key]
            if entry is None or not entry["code"]:
                continue  # neither a credit code nor a registration number: nothing to look it up by
            other = shown.get(entry["code"])
            if other is not None and (other["dept"], other["record_id"]) != key:
                if (other["approval_date"] or "") > (entry["approval_date"] or ""):
                    continue  # another department's later registration stands
                source.pop((other["dept"], other["record_id"]), None)
            shown[entry["code"]] = entry
            touched.add(entry["code"])
            source[key] = entry["code"]
        self._write(conn, held, {code: shown[code] for code in touched})

    @staticmethod
    def _write(conn: Connection, held: dict[str, Any], shown: dict[str, dict[str, Any] | None]) -> None:
        now = utc_now()
        gone = [held[code].id for code, row in shown.items() if row is None and code in held]
        kept = {code: row for code, row in shown.items() if row is not None and code in held}
        new = [{**row, "updated": now} for code, row in shown.items() if row is not None and code not in held]
        renamed = [held[code].id for code, row in kept.items() if row["name"] != held[code].name]
        stale = gone + renamed
        for chunk in chunks(stale):
            conn.execute(delete(enterprise_bigrams).where(enterprise_bigrams.c.enterprise_id.in_(chunk)))
        for chunk in chunks(gone):
            conn.execute(delete(enterprises).where(enterprises.c.id.in_(chunk)))
        if kept:
            conn.execute(enterprises.update().where(enterprises.c.id == bindparam("_id"))
                         .values({c: bindparam(c) for c in (*ENTRY, "updated")}),
                         [{**row, "_id": held[code].id, "updated": now} for code, row in kept.items()])
        insert_many(conn, enterprises, new)
        ids = {r.code: r.id for r in in_chunks(conn, lambda chunk: select(enterprises.c.code, enterprises.c.id)
                                                .where(enterprises.c.code.in_(chunk)), [r["code"] for r in new])}
        names = {ids[r["code"]]: r["name"] for r in new}
        names.update({held[code].id: row["name"] for code, row in kept.items() if held[code].id in renamed})
        insert_many(conn, enterprise_bigrams, [{"gram": g, "enterprise_id": i}
                                               for i, name in names.items() for g in sorted(bigrams(name))])

    def clear(self, conn: Connection) -> None:
        conn.execute(delete(enterprise_bigrams))
        conn.execute(delete(enterprises))


# -- searching --------------------------------------------------------------------------------


class QueryProblem(ValueError):
    """A query the portal answers with an explanation instead of results (not a valid code, too short)."""

    def __init__(self, code: str, value: str):
        super().__init__(code)
        self.code, self.value = code, value


@dataclass(frozen=True)
class Query:
    """What was typed, understood: a credit code, a registration number, or part of a name."""

    kind: str  # uscc | reg_no | name
    text: str

    @classmethod
    def parse(cls, raw: str) -> Query:
        text = " ".join(raw.split())
        upper = text.upper().replace(" ", "")
        if CODE_SHAPE.fullmatch(upper):
            if uscc_problem(upper) is not None:
                raise QueryProblem("invalid_code", upper)
            return cls("uscc", upper)
        if REG_NO.fullmatch(upper):
            return cls("reg_no", upper)
        if len(text) < MIN_QUERY:
            raise QueryProblem("too_short", text)
        return cls("name", text)


@dataclass(frozen=True)
class Filters:
    region: tuple[str, ...] = ()  # every code of the chosen region
    status: str = ""
    type: str = ""  # enterprises with a public record of this type
    warning: str = ""  # warning class


def _name_condition(conn: Connection, text: str) -> Any:
    if len(text) == 2:
        return enterprises.c.id.in_(select(enterprise_bigrams.c.enterprise_id)
                                    .where(enterprise_bigrams.c.gram == text))
    if conn.dialect.name == "postgresql":
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return enterprises.c.name.ilike(f"%{escaped}%", escape="\\")
    phrase = '"' + text.replace('"', '""') + '"'  # an FTS5 string: the trigram tokenizer matches it anywhere
    return enterprises.c.id.in_(sql_text("SELECT rowid FROM enterprises_fts WHERE enterprises_fts MATCH :phrase")
                                .bindparams(phrase=phrase).columns(column("rowid", Integer)))


def search(conn: Connection, query: Query, filters: Filters, offset: int, limit: int,
           extra: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Enterprises matching the query and filters, by row id, `limit` from `offset`.

    `extra` are further conditions on `enterprises` (the warning class and record type filters,
    which read the credit tables).
    """
    if query.kind == "uscc":
        cond = enterprises.c.code == query.text  # an enterprise's code is its credit code when it has one (indexed)
    elif query.kind == "reg_no":
        cond = enterprises.c.reg_no == query.text
    else:
        cond = _name_condition(conn, query.text)
    conds = [cond, *extra]
    if filters.region:
        conds.append(enterprises.c.region.in_(filters.region))
    if filters.status:
        conds.append(enterprises.c.status == filters.status)
    return rows(conn, select(enterprises).where(and_(*conds)).order_by(enterprises.c.id).offset(offset).limit(limit))


def enterprise(conn: Connection, code: str) -> dict[str, Any] | None:
    found = conn.execute(select(enterprises).where(enterprises.c.code == code)).first()
    return dict(found._mapping) if found is not None else None


def by_codes(conn: Connection, codes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Index entries of many enterprises (the list tabs show names and regions beside the codes)."""
    found = in_chunks(conn, lambda chunk: select(enterprises).where(enterprises.c.code.in_(chunk)), codes)
    return {r.code: dict(r._mapping) for r in found}
