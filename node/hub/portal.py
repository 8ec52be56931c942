"""The public portal (公示查询): anyone looks an enterprise up and sees what departments have published about it.

No log-in: every route is `Permission.PUBLIC` behind the console's one access check. Pages are the
console's templates (templates/portal/), in Chinese and English. What is public is decided by the
credit rules (credit.py: publicity periods, repairs); this module only shows it:

- search by credit code (a wrong check character is "not a valid code", not "not found"), registration
  number or part of the name (search.py's index), filtered by region, status, record type, warning class;
- an enterprise page: registration, warning class and list memberships explained by their records, one
  section per record category (newest first, paged), each record with who provides and who is responsible
  for it, a proof check on the server and, for records without personal data, the proof to download;
- the public lists (经营异常名录, 严重违法失信名单).

Privacy: ID numbers are masked as on the console (queries.masked), and any ID-number-shaped text in free
fields too; a natural person's name shows the surname only (张**); who entered a record is not shown.
Abuse: per-address limits on searches and page views (a refused request gets a 429 page), a cap on the
result pages a search can be paged through, and no listing without a query.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlencode
from dataclasses import dataclass
from datetime import date
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy import and_, exists, select
from sqlalchemy.engine import Connection

from ..protocol import jsonutil
from ..protocol.errors import mask
from ..protocol.validation import china_today
from . import credit, credit_web, i18n, queries, search
from .access import PerMinute, Permission, client_of, route
from .config import HubConfig, PortalSection
from .console import HUB_PUBLIC, render
from .i18n import _
from .store import Store, departments, record_timeliness, record_versions, records, rows
from .web import off_loop

PORTAL = web.AppKey("portal", object)  # the Portal: settings, rules, rate limits

# the order of the record sections on an enterprise page, as the national publicity system has them
CATEGORIES = ("administrative_license", "administrative_penalty", "inspection", "abnormal_operation",
              "serious_violation", "judicial", "arbitration", "equity_pledge", "chattel_mortgage", "ip_registration",
              "consumer_warning", "support_policy", "honor", "self_disclosure", "other")
STATUSES = ("存续", "在业", "吊销", "注销", "迁出", "停业", "清算")
# the field that names a record in a list (its decision number, title …), first one present
HEADINGS = ("decision_no", "title", "honor_name", "policy_name", "case_no", "registration_no", "license_no",
            "decision_doc_name", "ip_name")
HIDDEN_FIELDS = frozenset({"entered_by"})  # the clerk who typed it in: a person, and nothing the public needs
# ID numbers that may sit in free text (facts, remarks): 18 characters (last may be X) or the old 15 digits
ID_IN_TEXT = re.compile(r"(?<![0-9A-Za-z])(\d{17}[\dXx]|\d{15})(?![0-9A-Za-z])")
PERSON = "natural_person"


@dataclass
class Portal:
    settings: PortalSection
    rules: credit.Rules  # the classes, labels and lists, with their names
    searches: PerMinute
    views: PerMinute

    @classmethod
    def of(cls, cfg: HubConfig, rules: credit.Rules) -> Portal:
        p = cfg.portal
        return cls(p, rules, PerMinute(p.searches_per_minute), PerMinute(p.views_per_minute))

    @property
    def lists(self) -> tuple[str, ...]:
        """The lists the rules make public: the portal's tabs beside the enterprises."""
        return tuple(r.id for r in self.rules.lists if r.public)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(c[0] for c in self.rules.classes)

    def title(self, kind: str, ident: str | None) -> str:
        return self.rules.title(kind, ident, i18n.current()) if ident else "—"

    def ends(self, list_id: str) -> str:
        """What ends membership of a list, in the reader's language."""
        rule = self.rules.list_rule(list_id)
        return "" if rule is None else rule.ends_en if i18n.current() == "en" else rule.ends_zh


# -- privacy ------------------------------------------------------------------------------------


def person_name(name: str) -> str:
    """A natural person's name as the portal shows it: the surname only (张**; 欧阳** for the common
    two-character surnames is not attempted: one character is kept whatever the name)."""
    return name[:1] + "*" * max(1, len(name) - 1) if name else name


def scrub(value: Any) -> Any:
    """ID-number-shaped runs in free text masked like an ID-number field."""
    if isinstance(value, str):
        return ID_IN_TEXT.sub(lambda m: mask(m.group(1)), value)
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    return value


def public_data(record_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """A record's fields as the public sees them: personal fields masked, a person's name shortened."""
    shown = queries.masked(record_type, data) or {}
    out = {k: scrub(v) for k, v in shown.items() if k not in HIDDEN_FIELDS and k not in ("uscc", "reg_no")}
    out.update({k: shown[k] for k in ("uscc", "reg_no") if k in shown})  # codes are published, never ID numbers
    if data.get("subject_category") == PERSON and isinstance(out.get("subject_name"), str):
        out["subject_name"] = person_name(out["subject_name"])
    return out


def carries_personal(line: bytes, data: dict[str, Any]) -> bool:
    """Whether the exact signed line would reveal personal data: an ID number, or a natural person as subject."""
    return queries.holds_personal(line) or data.get("subject_category") == PERSON


# -- what the pages show --------------------------------------------------------------------------


class NotFound(LookupError):
    pass


def _dept_names(conn: Connection) -> dict[str, str]:
    return dict(conn.execute(select(departments.c.dept, departments.c.name)).all())


def _public_rows(conn: Connection, code: str, day: date) -> list[dict[str, Any]]:
    """The enterprise's public records, newest event first (current versions)."""
    keys = set(map(tuple, credit.public_record_keys(conn, code, day)))
    if not keys:
        return []
    found = rows(conn, select(records.c.dept, records.c.record_id, records.c.type, records.c.ledger_index,
                              records.c.first_accepted, records.c.updated, records.c.subject_name,
                              record_timeliness.c.event_date)
                 .select_from(records.outerjoin(record_timeliness, and_(
                     record_timeliness.c.dept == records.c.dept,
                     record_timeliness.c.ledger_index == records.c.ledger_index)))
                 .where(records.c.uscc == code))
    found = [r for r in found if (r["dept"], r["record_id"]) in keys]
    found.sort(key=lambda r: (r["event_date"] or "", r["ledger_index"]), reverse=True)
    return found


def _item(conn: Connection, row: dict[str, Any], names: dict[str, str], settings: PortalSection) -> dict[str, Any]:
    """One record as shown: its fields, who provides it and who is responsible, its dates, where to object."""
    v = conn.execute(select(record_versions.c.line, record_versions.c.authority, record_versions.c.authority_uscc)
                     .where(record_versions.c.dept == row["dept"],
                            record_versions.c.ledger_index == row["ledger_index"])).one()
    line = bytes(v.line)
    data = jsonutil.loads(line).get("data") or {}
    shown = public_data(row["type"], data)
    return {**row, "dept_name": names.get(row["dept"], row["dept"]), "authority": v.authority,
            "authority_uscc": v.authority_uscc, "data": shown,
            "heading": next((shown[k] for k in HEADINGS if shown.get(k)), None),
            "corrected": row["updated"] != row["first_accepted"],
            "downloadable": not carries_personal(line, data),
            "contact": settings.contacts.get(row["dept"]) or settings.contact}


def enterprise_view(store: Store, code: str, pages: dict[str, int], settings: PortalSection,
                    day: date | None = None) -> dict[str, Any]:
    day = day or china_today()
    with store.reader.connect() as conn:
        entry = search.enterprise(conn, code)
        public = _public_rows(conn, code, day)
        if entry is None and not public:
            raise NotFound(code)
        names = _dept_names(conn)
        per = settings.records_per_page
        sections = []
        for rtype in CATEGORIES:
            of_type = [r for r in public if r["type"] == rtype]
            if not of_type:
                continue
            last = (len(of_type) - 1) // per + 1
            page = min(max(1, pages.get(rtype, 1)), last)
            sections.append({"type": rtype, "total": len(of_type), "page": page, "pages": last,
                             "items": [_item(conn, r, names, settings)
                                       for r in of_type[(page - 1) * per:page * per]]})
        standing = credit.standing_of(conn, code)
        memberships = credit.memberships(conn, code)
        cited = {tuple(k) for label in standing["labels"] for k in label["records"]}
        cited |= {tuple(k) for m in memberships for k in m["basis"]}
        shown = {(r["dept"], r["record_id"]): r for r in public}
        explained = {k: _cited(shown.get(k), names) for k in cited}
    if entry is None:
        # known only from its records (no registration reached the hub): the registration fields are empty
        entry = {**dict.fromkeys(search.COPIED), "code": code, "uscc": code, "name": public[0]["subject_name"],
                 "registered": False}
    region = search.region_of(entry.get("region"))
    depts = sorted({i["dept"] for s in sections for i in s["items"]})
    return {"e": entry, "code": code, "region": region, "sections": sections, "standing": standing, "memberships": memberships,
            "explained": explained, "objections": [{"dept": d, "name": names.get(d, d),
                                                    "contact": settings.contacts.get(d) or settings.contact}
                                                   for d in depts]}


def _cited(row: dict[str, Any] | None, names: dict[str, str]) -> dict[str, Any] | None:
    """A record a label or list entry names, if the public may see it (None: it is not public)."""
    if row is None:
        return None
    return {"dept": row["dept"], "record_id": row["record_id"], "type": row["type"], "event_date": row["event_date"],
            "dept_name": names.get(row["dept"], row["dept"])}


def record_item(store: Store, code: str, dept: str, record_id: str, settings: PortalSection) -> dict[str, Any]:
    """One public record of the enterprise (NotFound when it is not public or not the enterprise's)."""
    with store.reader.connect() as conn:
        row = next((r for r in _public_rows(conn, code, china_today())
                    if r["dept"] == dept and r["record_id"] == record_id), None)
        if row is None:
            raise NotFound(record_id)
        name = search.enterprise(conn, code)
        item = _item(conn, row, _dept_names(conn), settings)
    item["enterprise_name"] = name["name"] if name else row["subject_name"]
    return item


def _filters(f: search.Filters, day: date) -> list[Any]:
    """The record-type and warning-class filters: conditions on the credit tables, looked up per match
    (by their enterprise indexes), so a name search stays an index search."""
    from .store import publicity, standing

    code = search.enterprises.c.code
    out = []
    if f.type:
        out.append(exists().where(publicity.c.uscc == code, publicity.c.type == f.type, credit._public_clause(day)))
    if f.warning:
        out.append(exists().where(standing.c.uscc == code, standing.c["class"] == f.warning))
    return out


def search_view(store: Store, query: search.Query, filters: search.Filters, page: int,
                per_page: int) -> dict[str, Any]:
    with store.reader.connect() as conn:
        found = search.search(conn, query, filters, (page - 1) * per_page, per_page + 1,
                              _filters(filters, china_today()))
        classes = {e["code"]: credit.standing_of(conn, e["code"])["class"] for e in found[:per_page]}
        elsewhere = None
        if not found and query.kind == "uscc" and page == 1:  # no registration on file; records may still be public
            elsewhere = bool(credit.public_record_keys(conn, query.text, china_today()))
    for e in found:
        e["region_name"] = search.region_of(e["region"])
        e["class"] = classes.get(e["code"])
    return {"results": found[:per_page], "more": len(found) > per_page, "elsewhere": elsewhere}


def list_view(store: Store, list_id: str, page: int, per_page: int) -> dict[str, Any]:
    with store.reader.connect() as conn:
        members, total = credit.list_members(conn, list_id, page, per_page)
        names = search.by_codes(conn, [m["uscc"] for m in members])
    for m in members:
        m["region"] = search.region_of((names.get(m["uscc"]) or {}).get("region"))
    return {"members": members, "total": total, "more": page * per_page < total}


# -- handlers -----------------------------------------------------------------------------------


def _portal(request: web.Request) -> Portal:
    return request.app[PORTAL]  # type: ignore[return-value]


async def _limited(request: web.Request, limit: PerMinute) -> web.Response | None:
    """The 429 page when this address has used up its requests for the minute, else None."""
    client = client_of(request)
    if limit.allow(client):
        return None
    wait = limit.retry_after(client)
    response = await render(request, "portal/message.html", {
        "status": 429, "title": _("Too many requests"),
        "message": _("This address has made too many requests in the last minute. Wait %(n)d seconds and try "
                     "again. The limit keeps the portal open for everyone; bulk copies of the data are not "
                     "offered.") % {"n": wait}}, status=429)
    response.headers["Retry-After"] = str(wait)
    return response


async def _message(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return await render(request, "portal/message.html", {"status": status, "title": title, "message": message},
                        status=status)


def _form(request: web.Request) -> dict[str, str]:
    return {k: request.query.get(k, "").strip()[:100] for k in ("q", "region", "status", "type", "class", "tab")}


def _page(request: web.Request, key: str = "page") -> int:
    value = request.query.get(key, "1")
    return int(value) if value.isdigit() and 0 < len(value) < 6 else 0


async def index(request: web.Request) -> web.Response:
    return await _search_page(request, _form(request), None)


async def search_page(request: web.Request) -> web.Response:
    portal = _portal(request)
    form = _form(request)
    if form["tab"] in portal.lists:
        raise web.HTTPSeeOther(f"/portal/lists/{form['tab']}")
    refused = await _limited(request, portal.searches)
    if refused is not None:
        return refused
    page = _page(request)
    if not 1 <= page <= portal.settings.max_pages:
        return await _search_page(request, form, None, 400, _(
            "Only the first %(n)d pages of results are shown. Narrow the search: a longer part of the name, a "
            "region or a status.") % {"n": portal.settings.max_pages})
    if not form["q"]:
        return await _search_page(request, form, None, 400, _(
            "Type an enterprise's name (at least two characters), its unified social credit code or its "
            "registration number. The portal does not list enterprises without a query."))
    try:
        query = search.Query.parse(form["q"])
    except search.QueryProblem as problem:
        if problem.code == "invalid_code":
            message = _("%(code)s is not a valid unified social credit code: its check character does not match "
                        "(GB 32100). Check the code for a mistyped character.") % {"code": problem.value}
        else:
            message = _("Type at least two characters of the name.")
        return await _search_page(request, form, None, 400, message)
    region = search.region_codes(form["region"]) or () if form["region"] else ()
    filters = search.Filters(region, form["status"] if form["status"] in STATUSES else "",
                             form["type"] if form["type"] in CATEGORIES else "",
                             form["class"] if form["class"] in portal.classes else "")
    view = await off_loop(request, search_view, query, filters, page, portal.settings.per_page)
    kept = {k: v for k, v in form.items() if v and k != "tab"}
    view.update(page=page, query=query, previous=urlencode({**kept, "page": page - 1}),
                next=urlencode({**kept, "page": page + 1}))
    return await _search_page(request, form, view)


async def _search_page(request: web.Request, form: dict[str, str], result: dict[str, Any] | None,
                       status: int = 200, problem: str | None = None) -> web.Response:
    return await render(request, "portal/index.html", {
        "form": form, "result": result, "problem": problem, "regions": search.regions(), "statuses": STATUSES,
        "categories": CATEGORIES, "classes": _portal(request).classes, "max_pages": _portal(request).settings.max_pages},
        status=status)


async def enterprise_page(request: web.Request) -> web.Response:
    portal = _portal(request)
    refused = await _limited(request, portal.views)
    if refused is not None:
        return refused
    code = request.match_info["code"].upper()
    pages = {t: _page(request, f"p_{t}") or 1 for t in CATEGORIES if f"p_{t}" in request.query}
    try:
        view = await off_loop(request, enterprise_view, code, pages, portal.settings)
    except NotFound:
        return await _not_found(request, code)
    for section in view["sections"]:  # the other sections keep their pages
        here = {k: v for k, v in request.query.items() if k.startswith("p_")}
        section["newer"] = urlencode({**here, f"p_{section['type']}": section["page"] - 1})
        section["older"] = urlencode({**here, f"p_{section['type']}": section["page"] + 1})
    return await render(request, "portal/enterprise.html", view)


async def _not_found(request: web.Request, code: str) -> web.Response:
    try:
        search.Query.parse(code)
    except search.QueryProblem as problem:
        if problem.code == "invalid_code":
            return await _message(request, 404, _("Not a valid code"), _(
                "%(code)s is not a valid unified social credit code: its check character does not match "
                "(GB 32100). Check the code for a mistyped character.") % {"code": problem.value})
    return await _message(request, 404, _("Not found"), _(
        "No enterprise with this code has published information here."))


async def verify_page(request: web.Request) -> web.Response:
    portal = _portal(request)
    refused = await _limited(request, portal.views)
    if refused is not None:
        return refused
    code, dept, record_id = (request.match_info[k] for k in ("code", "dept", "record_id"))
    try:
        item = await off_loop(request, record_item, code, dept, record_id, portal.settings)
    except NotFound:
        return await _message(request, 404, _("Not found"), _("This record is not published for this enterprise."))
    check = await off_loop(request, queries.check_proof, dept, record_id, None, request.app[HUB_PUBLIC])
    return await render(request, "portal/verify.html", {"code": code, "r": item, "check": check})


async def proof_download(request: web.Request) -> web.Response:
    portal = _portal(request)
    refused = await _limited(request, portal.views)
    if refused is not None:
        return refused
    code, dept, record_id = (request.match_info[k] for k in ("code", "dept", "record_id"))
    try:
        item = await off_loop(request, record_item, code, dept, record_id, portal.settings)
    except NotFound:
        return await _message(request, 404, _("Not found"), _("This record is not published for this enterprise."))
    if not item["downloadable"]:
        return await _message(request, 403, _("Not offered"), _(
            "This record concerns personal data (an ID number or a natural person), so its signed original is not "
            "published. The proof check on the record's page still shows whether it is intact."))
    bundle = await off_loop(request, queries.proof_bundle, dept, record_id, None, False)
    return web.Response(body=json.dumps(bundle, ensure_ascii=False, indent=1).encode(), content_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="proof-{dept}-{_safe(record_id)}.json"',
                                 "Cache-Control": "no-store"})


def _safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]", "_", name)[:80]


async def list_page(request: web.Request) -> web.Response:
    portal = _portal(request)
    list_id = request.match_info["list_id"]
    if list_id not in portal.lists:
        return await _message(request, 404, _("Not found"), _("The portal publishes no such list."))
    refused = await _limited(request, portal.searches)
    if refused is not None:
        return refused
    page = _page(request)
    if not 1 <= page <= portal.settings.max_pages:
        return await _message(request, 400, _("Too far"), _(
            "Only the first %(n)d pages of a list are shown here; search for an enterprise to see whether it is "
            "on the list.") % {"n": portal.settings.max_pages})
    view = await off_loop(request, list_view, list_id, page, portal.settings.per_page)
    return await render(request, "portal/list.html", {**view, "list_id": list_id, "page": page,
                                                      "max_pages": portal.settings.max_pages})


def add_routes(app: web.Application, cfg: HubConfig) -> None:
    """The portal's routes; call after the console's (its templates) and credit_web's (the rules in force)."""
    portal = app[PORTAL] = Portal.of(cfg, app[credit_web.RULES])
    aiohttp_jinja2.get_env(app).globals.update(credit_title=portal.title, list_ends=portal.ends,
                                               portal_lists=portal.lists)
    P = Permission.PUBLIC
    route(app, "GET", "/portal", index, P)
    route(app, "GET", "/portal/search", search_page, P)
    route(app, "GET", "/portal/enterprises/{code}", enterprise_page, P)
    for method in ("GET", "POST"):
        route(app, method, "/portal/enterprises/{code}/records/{dept}/{record_id}/verify", verify_page, P)
    route(app, "GET", "/portal/enterprises/{code}/records/{dept}/{record_id}/proof", proof_download, P)
    route(app, "GET", "/portal/lists/{list_id:[a-z_]+}", list_page, P)
