"""Credit pages and downloads: the agencies' credit check (信用审查), red and black list downloads, early repairs.

`/credit-check` (form, result page, `.json` and `.xlsx` of a check) and `/api/v1/credit-checks`
need `Permission.CREDIT_CHECK`: any department account or token, whichever department, and the
operator. A kept check is served again only to whoever ran it (and the operator). The lists the
rules make public download from `/portal/lists/{list_id}.xlsx|.csv` without an account.
`/compliance/repairs` shows repairs made before the minimum time to the office, the operator and each
department (its own).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select

from ..protocol.keys import SigningKey
from ..protocol.validation import CHINA
from . import creditcheck, i18n
from .access import TRAIL, Permission, Principal, authorize, client_of, is_api, note, route
from .console import render
from .credit import Rules, entry_out
from .creditcheck import CheckError, Parsed
from .i18n import _
from .reports import csv_sections, xlsx_bytes
from .store import list_entries, publicity
from .web import STORE, json_response

RULES = web.AppKey("credit_rules", Rules)
SIGNER = web.AppKey("credit_signer", SigningKey)
MOST = web.AppKey("credit_check_max", int)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


# -- credit check ----------------------------------------------------------------------------------

async def check_form(request: web.Request) -> web.Response:
    return await _form(request)


async def _form(request: web.Request, *, error: str | None = None, codes: str = "", purpose: str = "",
                status: int = 200) -> web.Response:
    return await render(request, "credit_check.html", {
        "purposes": creditcheck.PURPOSES, "most": request.app[MOST], "error": error, "codes": codes,
        "purpose": purpose}, status=status)


async def check_run(request: web.Request) -> web.Response:
    principal = authorize(request, Permission.CREDIT_CHECK)
    form = await request.post()  # a body over aiohttp's 1 MiB limit was refused by the access check already
    text = str(form.get("codes", ""))
    purpose = str(form.get("purpose", ""))
    upload = form.get("file")
    try:
        if isinstance(upload, web.FileField) and upload.filename:
            text += "\n" + _uploaded_text(upload)
        doc, _signed = await _run(request, principal, text, purpose)
    except CheckError as exc:
        return await _form(request, error=str(exc), codes=text[:200_000], purpose=purpose, status=400)
    return await render(request, "credit_check_result.html", {"doc": doc, "lang_key": i18n.current()})


def _uploaded_text(upload: web.FileField) -> str:
    data = upload.file.read()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise CheckError("文件应为文本或CSV（UTF-8或GB18030编码） the file must be text or CSV (UTF-8 or GB18030)")


async def _run(request: web.Request, principal: Principal, text: str, purpose: str) -> tuple[dict[str, Any], bytes]:
    purpose = creditcheck.check_purpose(purpose)
    parsed: Parsed = creditcheck.parse_codes(text, request.app[MOST])
    doc, signed = await asyncio.to_thread(creditcheck.run, request.app[STORE], request.app[RULES], request.app[SIGNER],
                                          parsed, purpose, principal.name, principal.label())
    trail = request.app[TRAIL]
    for target, detail in creditcheck.trail_entries(doc):
        trail.record(actor=principal.name, role=principal.label(), action="credit_check", target=target,
                     client=client_of(request), detail=detail)
    note(request, detail=f"purpose={purpose} check={doc['check_id']} checked={len(doc['results'])} "
                         f"invalid={len(doc['invalid'])}")
    return doc, signed


async def api_check(request: web.Request) -> web.Response:
    principal = authorize(request, Permission.CREDIT_CHECK)
    try:
        body = await request.json()
    except ValueError:
        return _bad(_("The request body must be JSON: {\"purpose\": …, \"codes\": [\"…\", …]}."))
    if not isinstance(body, dict) or not isinstance(body.get("codes"), list) \
            or not all(isinstance(c, str) for c in body["codes"]):
        return _bad(_("Give \"codes\" as a list of credit codes and \"purpose\"."))
    try:
        _doc, signed = await _run(request, principal, "\n".join(body["codes"]), str(body.get("purpose", "")))
    except CheckError as exc:
        return _bad(str(exc))
    return web.Response(body=signed, content_type="application/json", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


def _bad(message: str) -> web.Response:
    return json_response({"error": "bad_request", "message": message}, 400)


async def check_download(request: web.Request) -> web.Response:
    principal = authorize(request, Permission.CREDIT_CHECK)
    found = await asyncio.to_thread(creditcheck.kept, request.app[STORE], request.match_info["check_id"])
    # another agency's check is not there for this caller
    operator = principal.role is not None and principal.role.kind == "operator"
    if found is None or (found[0]["actor"] != principal.name and not operator):
        if is_api(request):
            return json_response({"error": "not_found", "message": _("No such credit check.")}, 404)
        raise web.HTTPNotFound(text=_("No such credit check."))
    row, signed = found
    note(request, detail=f"credit check {row['check_id']}")
    fmt = request.match_info.get("fmt") or request.query.get("format", "json")
    name = f"credit-check-{row['time'][:10]}-{row['check_id'][:8]}"
    if fmt == "json":
        return web.Response(body=signed, content_type="application/json", charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="{name}.json"', "Cache-Control": "no-store"})
    if fmt != "xlsx":
        return _bad(_("Unknown format: use json or xlsx."))
    lang = request.query.get("lang") or i18n.current()
    doc = creditcheck.verify(signed, request.app[SIGNER].public)
    body = await asyncio.to_thread(creditcheck.xlsx, doc, signed, lang)
    return web.Response(body=body, content_type=XLSX, headers={
        "Content-Disposition": f'attachment; filename="{name}.xlsx"', "Cache-Control": "no-store"})


# -- lists -----------------------------------------------------------------------------------------

async def list_download(request: web.Request) -> web.Response:
    rules: Rules = request.app[RULES]
    rule = rules.list_rule(request.match_info["list_id"])
    if rule is None or not rule.public:
        raise web.HTTPNotFound(text=_("No such list."))
    lang = request.query.get("lang") or i18n.current()
    rows = await asyncio.to_thread(_list_rows, request.app[STORE], rule.id)
    en = lang == "en"
    columns = list(zip(["Credit code", "Name", "Entered", "Basis (department/record)", "Ends"] if en
                       else ["统一社会信用代码", "名称", "列入日期", "依据（部门/记录）", "移出条件"],
                       ["text", "text", "date", "text", "text"]))
    table = [[r["uscc"], r["name"], r["entered"], " ".join(f"{d}/{rid}" for d, rid in r["basis"]),
              rule.ends_en if en else rule.ends_zh] for r in rows]
    title = rule.en if en else rule.zh
    stamp = datetime.now(CHINA).strftime("%Y%m%d")
    name = f"{rule.id}-{stamp}.{request.match_info['fmt']}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if request.match_info["fmt"] == "csv":
        return web.Response(body=csv_sections([(title, columns, table)]), content_type="text/csv", charset="utf-8",
                            headers=headers)
    body = await asyncio.to_thread(xlsx_bytes, [(title, columns, table)])
    return web.Response(body=body, content_type=XLSX, headers=headers)


def _list_rows(store: Any, list_id: str) -> list[dict[str, Any]]:
    with store.reader.connect() as conn:
        return [entry_out(r) for r in conn.execute(
            select(list_entries).where(list_entries.c.list_id == list_id, list_entries.c.ended.is_(None))
            .order_by(list_entries.c.entered.desc(), list_entries.c.uscc))]


# -- early repairs ---------------------------------------------------------------------------------

async def repairs_page(request: web.Request) -> web.Response:
    principal = authorize(request, Permission.COMPLIANCE)
    dept = principal.scope or request.query.get("dept") or None
    rows = await asyncio.to_thread(_repairs, request.app[STORE], dept)
    return await render(request, "credit_repairs.html", {"rows": rows, "dept": dept or ""})


def _repairs(store: Any, dept: str | None, limit: int = 500) -> list[dict[str, Any]]:
    query = select(publicity.c.dept, publicity.c.record_id, publicity.c.uscc, publicity.c.name, publicity.c.type,
                   publicity.c.event_date, publicity.c.repair_after, publicity.c.repaired_at,
                   publicity.c.repair_reason).where(publicity.c.repair_early.is_(True))
    if dept:
        query = query.where(publicity.c.dept == dept)
    with store.reader.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query.order_by(publicity.c.repaired_at.desc()).limit(limit))]


def add_routes(app: web.Application, cfg: Any) -> None:
    app[RULES] = Rules.from_config(cfg)
    app[SIGNER] = SigningKey.load(cfg.hub.signing_key)
    app[MOST] = cfg.portal.credit_check_max
    P = Permission
    route(app, "GET", "/credit-check", check_form, P.CREDIT_CHECK)
    route(app, "POST", "/credit-check", check_run, P.CREDIT_CHECK, trail="credit_check")
    route(app, "GET", r"/credit-check/{check_id:[0-9a-f-]{36}}.{fmt:json|xlsx}", check_download, P.CREDIT_CHECK,
          trail="download")
    route(app, "POST", "/api/v1/credit-checks", api_check, P.CREDIT_CHECK, trail="credit_check")
    route(app, "GET", r"/api/v1/credit-checks/{check_id:[0-9a-f-]{36}}", check_download, P.CREDIT_CHECK,
          trail="download")
    route(app, "GET", r"/portal/lists/{list_id:[a-z_]+}.{fmt:xlsx|csv}", list_download, P.PUBLIC)
    route(app, "GET", "/compliance/repairs", repairs_page, P.COMPLIANCE, trail="view")
