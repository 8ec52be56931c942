"""The compliance page and API: deadline compliance for the office (every department), each department its own.

`/compliance` shows a period's report (this month by default); `/api/v1/reports/compliance` answers
the same as JSON (the data section, its signature, the statuses in words) or as a signed download
(`?format=html|pdf|xlsx|csv|json`, its detached signature with `&signature=1`); `/api/v1/reports`
lists the monthly reports the hub keeps and `/api/v1/reports/{id}` serves one. Everything passes
the one access check with `Permission.COMPLIANCE`: a department account is held to its own
department (`?dept=` is checked by the middleware; without one, its scope is applied here).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import OrderedDict
from datetime import date, datetime
from typing import Any

from aiohttp import web

from ..protocol.keys import SigningKey
from ..protocol.validation import CHINA
from . import i18n, reports
from .access import Permission, Principal, authorize, note, route
from .compliance import ReportError
from .console import render
from .i18n import _
from .web import STORE, json_response

CONFIG = web.AppKey("compliance_config", object)
SIGNER = web.AppKey("compliance_signer", SigningKey)
RENDERS = web.AppKey("compliance_renders", OrderedDict)  # (data sha, format, lang) -> (Report, made at)
RENDERS_KEPT, RENDERS_SECONDS = 32, 1800.0  # a download's signature link finds the same rendering for 30 minutes
LATE_ON_PAGE = 20


class BadRequest(ValueError):
    pass


def _period(request: web.Request) -> tuple[date, date]:
    today = datetime.now(CHINA).date()
    try:
        first = date.fromisoformat(request.query["from"]) if request.query.get("from") else today.replace(day=1)
        last = date.fromisoformat(request.query["to"]) if request.query.get("to") else today
    except ValueError:
        raise BadRequest(_("Give the period as dates like 2026-11-01.")) from None
    if last < first:
        raise BadRequest(_("The period ends before it starts."))
    if (last - first).days > 366:
        raise BadRequest(_("A period of at most a year, please."))
    return first, last


def _departments(request: web.Request, principal: Principal) -> list[str] | None:
    """The departments asked for; a department account gets its own (and only its own)."""
    wanted = [d for d in request.query.getall("dept", []) if d]
    for dept in wanted:
        authorize(request, Permission.COMPLIANCE, dept)
    if principal.scope is not None:
        return [principal.scope]
    return wanted or None


async def _data(request: web.Request, principal: Principal) -> dict[str, Any]:
    first, last = _period(request)
    depts = _departments(request, principal)
    as_of = request.query.get("as_of") or None
    try:
        return await asyncio.to_thread(reports.report_data, request.app[STORE], request.app[CONFIG], first, last, depts,
                                       as_of, catch_up=False)  # the hub's projector keeps timeliness current
    except ReportError as exc:
        raise BadRequest(str(exc)) from None


async def _render(request: web.Request, data: dict[str, Any], fmt: str, lang: str) -> reports.Report:
    """A signed rendering, kept for a while so that a file and its signature link match."""
    cache: OrderedDict = request.app[RENDERS]
    key = (reports.sha256(reports.compliance.data_bytes(data)), fmt, lang)
    found = cache.get(key)
    if found is not None and time.monotonic() - found[1] < RENDERS_SECONDS:
        return found[0]
    report = await asyncio.to_thread(reports.render, data, fmt, lang=lang, key=request.app[SIGNER])
    cache[key] = (report, time.monotonic())
    while len(cache) > RENDERS_KEPT:
        cache.popitem(last=False)
    return report


def _download(report: reports.Report, name: str, signature: bool) -> web.Response:
    if signature:
        return web.Response(body=report.signature.to_bytes(), content_type="text/plain", charset="ascii",
                            headers={"Content-Disposition": f'attachment; filename="{name}.sig"'})
    content_type, _sep, charset = report.media_type.partition("; charset=")
    return web.Response(body=report.body, content_type=content_type, charset=charset or None, headers={
        "Content-Disposition": f'attachment; filename="{name}"',
        "X-CX-Report-Signature": base64.b64encode(report.signature.to_bytes()).decode("ascii"),
        "Cache-Control": "no-store"})


def _lang(request: web.Request) -> str:
    lang = request.query.get("lang") or i18n.current()
    if lang not in i18n.LANGUAGES:
        raise BadRequest(_("Unknown language."))
    return lang


# -- handlers --------------------------------------------------------------------------------

async def page(request: web.Request) -> web.Response:
    principal = authorize(request, Permission.COMPLIANCE)
    try:
        data = await _data(request, principal)
        error = None
    except BadRequest as exc:
        data, error = None, str(exc)
    scopes = None if principal.scope is None else {principal.scope}
    kept = await asyncio.to_thread(reports.kept, request.app[STORE], scopes)
    choices = [] if principal.scope else await asyncio.to_thread(_choices, request.app[STORE])
    words = reports.Words(i18n.current())
    if data is not None:
        note(request, detail=f"compliance {data['period']['from']}..{data['period']['to']}")
    first, last = (data["period"]["from"], data["period"]["to"]) if data else (
        request.query.get("from", ""), request.query.get("to", ""))
    return await render(request, "compliance.html", {
        "r": data, "error": error, "kept": kept, "choices": choices, "words": words, "late_on_page": LATE_ON_PAGE,
        "chosen": request.query.getall("dept", []), "period_from": first, "period_to": last,
        "dept_names": {d["dept"]: d["name"] for d in data["departments"]} if data else {},
        "formats": reports.FORMATS, "words_days": reports.days,
        "report_day": request.app[CONFIG].compliance.report_day}, status=200 if error is None else 400)


def _choices(store: Any) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from .store import departments

    with store.reader.connect() as conn:
        return [(d, n) for d, n in conn.execute(select(departments.c.dept, departments.c.name)
                                                .order_by(departments.c.dept))]


async def api_report(request: web.Request) -> web.Response:
    principal = authorize(request, Permission.COMPLIANCE)
    fmt = request.query.get("format", "")
    try:
        lang = _lang(request)
        if fmt and fmt not in reports.FORMATS:
            raise BadRequest(_("Unknown format: use html, pdf, xlsx, csv or json."))
        data = await _data(request, principal)
    except BadRequest as exc:
        return json_response({"error": "bad_request", "message": str(exc)}, 400)
    if not fmt:
        answer = await asyncio.to_thread(reports.api_answer, data, lang=lang, key=request.app[SIGNER])
        return json_response(answer)
    report = await _render(request, data, fmt, lang)
    signature = request.query.get("signature") in ("1", "true", "yes")
    note(request, action="download", detail=f"compliance {fmt} {data['period']['from']}..{data['period']['to']}")
    return _download(report, report.filename(data), signature)


async def api_kept(request: web.Request) -> web.Response:
    principal = authorize(request, Permission.COMPLIANCE)
    scopes = None if principal.scope is None else {principal.scope}
    return json_response(await asyncio.to_thread(reports.kept, request.app[STORE], scopes))


async def api_kept_one(request: web.Request) -> web.Response:
    authorize(request, Permission.COMPLIANCE)
    found = await asyncio.to_thread(reports.kept_report, request.app[STORE], int(request.match_info["report_id"]))
    if found is None:
        return json_response({"error": "not_found", "message": _("No such report.")}, 404)
    # the report of every department is the office's: a department account may have only its own
    authorize(request, Permission.COMPLIANCE, found["scope"])
    note(request, action="download", detail=f"kept compliance report {found['id']}")
    name = (f"compliance-{found['period_from']}-{found['period_to']}-"
            f"{'all' if found['scope'] == '*' else found['scope']}-{found['lang']}.{found['format']}")
    if request.query.get("signature") in ("1", "true", "yes"):
        return web.Response(body=bytes(found["signature"]), content_type="text/plain", charset="ascii",
                            headers={"Content-Disposition": f'attachment; filename="{name}.sig"'})
    content_type, _sep, charset = reports.MEDIA_TYPES[found["format"]].partition("; charset=")
    return web.Response(body=bytes(found["body"]), content_type=content_type, charset=charset or None,
                        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


def add_routes(app: web.Application, cfg: Any) -> None:
    app[CONFIG] = cfg
    app[SIGNER] = SigningKey.load(cfg.hub.signing_key)
    app[RENDERS] = OrderedDict()
    route(app, "GET", "/compliance", page, Permission.COMPLIANCE, trail="view")
    route(app, "GET", "/api/v1/reports/compliance", api_report, Permission.COMPLIANCE, trail="view")
    route(app, "GET", "/api/v1/reports", api_kept, Permission.COMPLIANCE)
    route(app, "GET", r"/api/v1/reports/{report_id:\d+}", api_kept_one, Permission.COMPLIANCE, trail="download")

