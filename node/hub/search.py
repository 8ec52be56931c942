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

from sqlalchemy import Integer, and_, column, delete, select
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Connection

from ..protocol.codes import uscc_problem
from ..protocol.envelope import utc_now
from .projections import Accepted
from .store import enterprise_bigrams, enterprises, in_chunks, rows

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


def _entry(v: Accepted, data: Mapping[str, Any]) -> dict[str, Any]:
    uscc = data.get("uscc")
    region = data.get("region") or (uscc[2:8] if uscc else None)
    return {"code": uscc or data.get("reg_no"), "uscc": uscc, "name": data["subject_name"],
            **{k: data.get(k) for k in COPIED}, "region": region, "dept": v.dept, "record_id": v.record_id}


class EnterpriseIndex:
    """Keeps `enterprises` (and its name indexes) from accepted registration records."""

    name = NAME

    def apply(self, conn: Connection, versions: Sequence[Accepted]) -> None:
        now = utc_now()
        for v in versions:
            if v.type != REGISTRATION:
                continue
            if v.op != "upsert" or not v.data:
                self._remove(conn, v.dept, v.record_id)
                continue
            entry = _entry(v, v.data)
            if not entry["code"]:
                continue  # neither a credit code nor a registration number: nothing to look it up by
            same = conn.execute(select(enterprises.c.id, enterprises.c.code).where(
                enterprises.c.dept == v.dept, enterprises.c.record_id == v.record_id)).first()
            if same is not None and same.code != entry["code"]:  # a correction changed the code
                self._remove(conn, v.dept, v.record_id)
            held = conn.execute(select(enterprises.c.id, enterprises.c.name, enterprises.c.dept,
                                       enterprises.c.record_id, enterprises.c.approval_date)
                                .where(enterprises.c.code == entry["code"])).first()
            if held is None:
                new_id = conn.execute(enterprises.insert().values(**entry, updated=now)).inserted_primary_key[0]
                conn.execute(enterprise_bigrams.insert(), [{"gram": g, "enterprise_id": new_id}
                                                           for g in bigrams(entry["name"])])
                continue
            other = (held.dept, held.record_id) != (v.dept, v.record_id)
            if other and (held.approval_date or "") > (entry["approval_date"] or ""):
                continue  # another department's later registration stands
            conn.execute(enterprises.update().where(enterprises.c.id == held.id).values(**entry, updated=now))
            if held.name != entry["name"]:
                conn.execute(delete(enterprise_bigrams).where(enterprise_bigrams.c.enterprise_id == held.id))
                conn.execute(enterprise_bigrams.insert(), [{"gram": g, "enterprise_id": held.id}
                                                           for g in bigrams(entry["name"])])

    @staticmethod
    def _remove(conn: Connection, dept: str, record_id: str) -> None:
        found = conn.execute(select(enterprises.c.id).where(enterprises.c.dept == dept,
                                                            enterprises.c.record_id == record_id)).scalar()
        if found is not None:
            conn.execute(delete(enterprise_bigrams).where(enterprise_bigrams.c.enterprise_id == found))
            conn.execute(delete(enterprises).where(enterprises.c.id == found))

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
