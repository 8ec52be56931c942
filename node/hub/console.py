"""The hub's web console: server-rendered pages (Jinja2), Chinese and English, each behind its permission.

Pages: log-in and password, overview (status lights), department, record (with the server's proof
check), quarantine (release, discard), keys and departments (enrol, rotate, revoke), the access trail.
Templates are in `templates/`, static files in `static/` (served under a content hash, cached for
good), translations in `locale/` (see i18n.py). Routes are registered with `access.route`.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp_jinja2
import jinja2
import pygal
from pygal.etree import etree  # lxml or xml.etree, whichever pygal renders with
import structlog
from aiohttp import web
from aiohttp_session import get_session
from markupsafe import Markup
from pygal.style import Style

from ..config import UsageError
from ..protocol.envelope import CHINA, china_time, format_time, parse_time
from ..protocol.errors import ProtocolError
from ..protocol.keys import PublicKey
from . import accounts, i18n, queries, registry, trail
from .access import (
    LANG_COOKIE, PRINCIPAL, SETTINGS, STORE, TRAIL, Denied, Permission, Principal, authorize, client_of,
    csrf_token, note, route, start_session,
)
from .i18n import N_, _
from .quarantine import ActionError, Releaser
from .web import HUB_NAME, off_loop, thresholds

log = structlog.get_logger("cx.hub.console")
RELEASER = web.AppKey("releaser", Releaser)
HUB_PUBLIC = web.AppKey("hub_public_key", PublicKey)
STATIC = web.AppKey("static_versions", dict)  # file name -> content hash
ACCOUNT_LOCKOUT = web.AppKey("lockout", tuple)  # (attempts, timedelta)
REFRESH_SECONDS = 10


# -- template helpers -----------------------------------------------------------------------


local_time = china_time  # UTC on the wire, Asia/Shanghai on screen


def age(stamp: str | None, now: str | None = None) -> str:
    """"3 min ago" in the reader's language."""
    if not stamp:
        return "—"
    try:
        then = parse_time(stamp)
    except ValueError:
        return stamp
    current = parse_time(now) if now else datetime.now(timezone.utc)
    return span((current - then).total_seconds()) + _(" ago")


def span(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return _("%(n)d s") % {"n": seconds}
    if seconds < 3600:
        return _("%(n)d min") % {"n": seconds // 60}
    if seconds < 86400 * 2:
        return _("%(h)d h %(m)d min") % {"h": seconds // 3600, "m": seconds % 3600 // 60}
    return _("%(n)d days") % {"n": seconds // 86400}


def type_title(record_type: str) -> str:
    """行政处罚 for administrative_penalty in Chinese; the code in English."""
    if i18n.current() != "zh":
        return record_type
    from ..protocol.validation import default_registry

    try:
        return default_registry().get(record_type).title
    except Exception:  # noqa: BLE001 - a type this version does not know keeps its code
        return record_type


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def number(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def field_title(record_type: str, name: str) -> str:
    if i18n.current() != "zh":
        return name
    from ..protocol.validation import default_registry

    try:
        return default_registry().get(record_type).titles.get(name, name)
    except Exception:  # noqa: BLE001
        return name


def _static_versions() -> dict[str, str]:
    folder = resources.files("cx.hub").joinpath("static")
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:12] for f in folder.iterdir() if f.is_file()}


def records_chart(daily: list[tuple[str, int, int]]) -> Markup:
    """Records per day as an SVG bar chart (pygal), accepted and rejected stacked, no scripts."""
    style = Style(background="transparent", plot_background="transparent", foreground="#3b4252",
                  foreground_strong="#1d2433", foreground_subtle="#dde2ea", colors=("#2f6fb2", "#c62828"),
                  font_family='"Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", sans-serif',
                  label_font_size=11, major_label_font_size=11, legend_font_size=12)
    chart = pygal.StackedBar(style=style, width=900, height=260, show_legend=True, legend_at_bottom=True,
                             x_label_rotation=0, show_minor_x_labels=False, js=[], disable_xml_declaration=True,
                             margin=8, spacing=6, print_values=False, explicit_size=False, truncate_label=-1,
                             value_formatter=lambda v: f"{v:,.0f}", show_y_guides=True, y_labels_major_every=None)
    if not any(a or r for _, a, r in daily):
        chart.range = (0, 10)  # an empty month: whole numbers, not 0.1 … 1
    chart.x_labels = [day[5:] for day, _, _ in daily]
    chart.x_labels_major = [day[5:] for i, (day, _, _) in enumerate(daily) if i % 5 == 4 or i == len(daily) - 1]
    chart.add(_("accepted"), [a for _, a, _ in daily])
    chart.add(_("rejected at the hub"), [r for _, _, r in daily])
    tree = chart.render_tree()
    for parent in list(tree.iter()):  # pygal always adds its tooltip script's config; the console runs no inline script
        for child in [c for c in parent if str(c.tag).endswith("script")]:
            parent.remove(child)
    return Markup(etree.tostring(tree, encoding="unicode"))


async def _context(request: web.Request) -> dict[str, Any]:
    """What every template sees: who is signed in, the CSRF token, language, helpers."""
    principal: Principal = request.get(PRINCIPAL)
    session = await get_session(request)
    flash = session.pop("flash", None)
    return {
        "principal": principal, "P": Permission, "csrf": csrf_token(session), "lang": i18n.current(),
        "languages": i18n.LANGUAGES, "hub_name": request.app.get(HUB_NAME, "Credit Exchange"), "path": request.path_qs,
        "flash": flash, "refresh_seconds": REFRESH_SECONDS,
    }


def setup_templates(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.PackageLoader("cx.hub", "templates"), autoescape=jinja2.select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"], undefined=jinja2.StrictUndefined)
    env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)
    versions = _static_versions()
    app[STATIC] = versions
    env.globals.update(static=lambda name: f"/static/{versions[name]}/{name}", local_time=local_time, age=age,
                       span=span, type_title=type_title, percent=percent, number=number, field_title=field_title,
                       query=lambda **kw: urlencode({k: v for k, v in kw.items() if v not in (None, "")}))
    env.filters["number"] = number


async def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    """A page: the template with what every page sees (`_context`) and the handler's own context."""
    response = aiohttp_jinja2.render_template(template, request, {**await _context(request), **context},
                                              status=status)
    response.headers.update(PAGE_HEADERS)
    return response


# pages are never cached (they hold record data), framed, or allowed scripts from elsewhere; charts are inline SVG
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


async def flash(request: web.Request, message: str, kind: str = "ok") -> None:
    (await get_session(request))["flash"] = {"message": message, "kind": kind}


def _local_path(target: str | None, default: str = "/") -> str:
    """Only paths on this console are followed after log-in or a language switch (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    return default if parts.scheme or parts.netloc else target


# -- log-in, log-out, password, language ---------------------------------------------------


async def login_page(request: web.Request) -> web.Response:
    principal: Principal = request[PRINCIPAL]
    if principal.signed_in:
        raise web.HTTPSeeOther(_local_path(request.query.get("next"), principal.home))
    return await _login_form(request, request.query.get("next", ""), expired=bool(request.query.get("expired")))


async def _login_form(request: web.Request, target: str, name: str = "", error: str | None = None, status: int = 200,
                expired: bool = False) -> web.Response:
    return await render(request, "login.html", {"next": target, "error": error, "name": name, "expired": expired,
                                          "attempts": request.app[ACCOUNT_LOCKOUT][0]}, status=status)


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    name, password = str(form.get("name", "")).strip(), str(form.get("password", ""))
    target = str(form.get("next", ""))
    note(request, actor=name[:80] or "-")
    settings = request.app[ACCOUNT_LOCKOUT]
    error = None
    if not request.app[SETTINGS].login_allowed(client_of(request)):
        note(request, outcome="throttled")
        error = _("Too many log-in attempts from your address. Wait a minute and try again.")
        return await _login_form(request, target, name, error, 429)
    try:
        account = await asyncio.to_thread(accounts.login, request.app[STORE], name, password,
                                          attempts=settings[0], lockout=settings[1])
    except accounts.LoginRefused as refused:
        note(request, outcome={"bad_credentials": "failed"}.get(refused.reason, refused.reason))
        if refused.reason == "locked":
            error = _("This account is locked after repeated failed log-ins until %(time)s.") % {
                "time": local_time(refused.until)}
        elif refused.reason == "disabled":
            error = _("This account is disabled. Ask the hub operator.")
        else:
            error = _("Wrong account name or password.")
        return await _login_form(request, target, name, error, 401 if refused.reason == "bad_credentials" else 403)
    await start_session(request, account.name, account.password_changed)
    principal = Principal(account.name, account.role, "session", account.must_change)
    request[PRINCIPAL] = principal
    if account.must_change:
        raise web.HTTPSeeOther("/account/password")
    raise web.HTTPSeeOther(_local_path(target, principal.home))


async def logout(request: web.Request) -> web.Response:
    session = await get_session(request)
    session.invalidate()
    raise web.HTTPSeeOther("/login")


async def password_page(request: web.Request) -> web.Response:
    return await render(request, "password.html", {"error": None})


async def change_password(request: web.Request) -> web.Response:
    principal: Principal = request[PRINCIPAL]
    if principal.via != "session":
        raise Denied(403, "forbidden", _("Only a signed-in person can change a password."))
    form = await request.post()
    current, new, again = (str(form.get(k, "")) for k in ("current", "new", "again"))
    store = request.app[STORE]
    error = None
    try:
        await asyncio.to_thread(accounts.login, store, principal.name, current, attempts=10 ** 6,
                                lockout=timedelta(0))
    except accounts.LoginRefused:
        error = _("The current password is not right.")
    if error is None and new != again:
        error = _("The two new passwords differ.")
    if error is None and new == current:
        error = _("Choose a password different from the current one.")
    if error is None and len(new) < accounts.MIN_PASSWORD:
        error = _("The new password must have at least %(n)d characters.") % {"n": accounts.MIN_PASSWORD}
    if error is not None:
        note(request, outcome="failed")
        return await render(request, "password.html", {"error": error}, status=400)
    await asyncio.to_thread(accounts.set_password, store, principal.name, new, one_time=False)
    account = await asyncio.to_thread(accounts.get_user, store, principal.name)
    await start_session(request, principal.name, account.password_changed)
    await flash(request, _("Your password has been changed."))
    raise web.HTTPSeeOther(principal.home)


async def switch_language(request: web.Request) -> web.Response:
    lang = request.match_info["lang"]
    response = web.HTTPSeeOther(_local_path(request.query.get("next")))
    if lang in i18n.LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, httponly=True, samesite="Lax", path="/")
    raise response


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    versions = request.app[STATIC]
    if name not in versions:
        raise web.HTTPNotFound()
    body = resources.files("cx.hub").joinpath("static", name).read_bytes()
    content_type = {"css": "text/css", "js": "text/javascript", "svg": "image/svg+xml"}.get(name.rsplit(".", 1)[-1],
                                                                                         "application/octet-stream")
    immutable = request.match_info["version"] == versions[name]
    return web.Response(body=body, content_type=content_type, charset="utf-8" if content_type.startswith("text") else None,
                        headers={"Cache-Control": "public, max-age=31536000, immutable" if immutable else "no-cache"})


# -- overview and department ---------------------------------------------------------------


async def home(request: web.Request) -> web.Response:
    principal: Principal = request[PRINCIPAL]
    if not principal.can(Permission.OVERVIEW):
        raise web.HTTPSeeOther(principal.home)
    authorize(request, Permission.OVERVIEW)
    view = await off_loop(request, queries.dashboard_view, **thresholds(request))
    context = {"view": view, "rules": view["rules"]}
    if request.query.get("partial"):
        return await render(request, "_overview_table.html", context)
    return await render(request, "overview.html", context)


async def department(request: web.Request) -> web.Response:
    dept = request.match_info["dept"]
    principal = authorize(request, Permission.DEPARTMENT, dept)
    try:
        view = await off_loop(request, queries.department_view, dept, **thresholds(request))
    except queries.NotFound:
        raise web.HTTPNotFound(text=_("No such department.")) from None
    chart = records_chart(view["daily"])
    context = {"d": view, "chart": chart, "private": principal.can(Permission.RECORDS, dept),
               "raw_errors": principal.can(Permission.QUARANTINE, dept)}
    if request.query.get("partial"):
        return await render(request, "_department_live.html", context)
    return await render(request, "department.html", context)


# -- records ---------------------------------------------------------------------------------


async def record(request: web.Request) -> web.Response:
    dept, record_id = request.match_info["dept"], request.match_info["record_id"]
    principal = authorize(request, Permission.RECORDS, dept)
    try:
        view = await off_loop(request, queries.record_view, dept, record_id, principal.sees_personal(dept))
    except queries.NotFound:
        raise web.HTTPNotFound(text=_("No such record.")) from None
    check = None
    if request.query.get("check") is not None:
        note(request, action="verify")
        check = await off_loop(request, queries.check_proof, dept, record_id, request.query.get("check") or None,
                               request.app[HUB_PUBLIC])
    downloadable = principal.can(Permission.PROOFS, dept)
    personal = principal.sees_personal(dept)
    return await render(request, "record.html", {"r": view, "check": check, "downloadable": downloadable,
                                           "personal": personal})


# -- quarantine -----------------------------------------------------------------------------


async def quarantine_list(request: web.Request) -> web.Response:
    principal = authorize(request, Permission.QUARANTINE)
    items = await off_loop(request, queries.quarantine_view, 200, principal.scope,
                           principal.can(Permission.QUARANTINE_ACT))
    return await render(request, "quarantine.html", {"items": items, "acts": principal.can(Permission.QUARANTINE_ACT)})


async def quarantine_item(request: web.Request) -> web.Response:
    item_id = int(request.match_info["item"])
    principal = request[PRINCIPAL]
    found = await off_loop(request, queries.quarantine_view, 1, None, principal.can(Permission.QUARANTINE_ACT),
                           item_id)
    if not found:
        raise web.HTTPNotFound(text=_("No such quarantined message."))
    item = found[0]
    authorize(request, Permission.QUARANTINE, item["dept"] or "?")
    return await render(request, "quarantine_item.html", {"q": item, "acts": principal.can(Permission.QUARANTINE_ACT),
                                                    "error": None})


async def quarantine_act(request: web.Request) -> web.Response:
    item_id = int(request.match_info["item"])
    action = request.match_info["action"]
    principal = authorize(request, Permission.QUARANTINE_ACT)
    form = await request.post()
    comment = str(form.get("comment", "")).strip()
    found = await off_loop(request, queries.quarantine_view, 1, None, True, item_id)
    if not found:
        raise web.HTTPNotFound()
    note(request, detail=comment[:200], dept=found[0]["dept"])
    if not comment:
        note(request, outcome="failed", detail="no comment")
        return await render(request, "quarantine_item.html", {"q": found[0], "acts": True,
                                                              "error": _("A comment is required: say why.")},
                            status=400)
    try:
        done = await request.app[RELEASER].act(item_id, action, comment, principal.name)
    except ActionError as exc:
        note(request, outcome="failed")
        await flash(request, str(exc), "bad")
        raise web.HTTPSeeOther(f"/quarantine/{item_id}") from None
    note(request, detail=f"{done.result}: {comment}"[:500], outcome="ok" if done.result != "quarantined" else "failed")
    await flash(request, _("%(action)s: %(result)s. %(detail)s") % {
        "action": _(action), "result": _(done.result), "detail": done.detail}, "ok" if done.result != "quarantined"
        else "bad")
    raise web.HTTPSeeOther(f"/quarantine/{item_id}")


# -- keys and departments -------------------------------------------------------------------


async def keys_page(request: web.Request) -> web.Response:
    principal = authorize(request, Permission.DIRECTORY)
    depts = await off_loop(request, registry.list_departments)
    depts = [d for d in depts if principal.scope in (None, d["dept"])]
    return await render(request, "keys.html", {"depts": depts, "manage": principal.can(Permission.KEYS_MANAGE),
                                         "form": {}, "error": None})


KEY_ACTIONS = ("enrol", "rotate", "revoke")


async def keys_act(request: web.Request) -> web.Response:
    """Enrol, rotate or revoke: the first post shows what will happen; the confirmed one does it."""
    action = request.match_info["action"]
    authorize(request, Permission.KEYS_MANAGE)
    form = {k: str(v).strip() for k, v in (await request.post()).items() if k != "csrf_token"}
    note(request, dept=form.get("dept") or None)
    try:
        plan = await off_loop(request, _key_plan, action, form)
    except (UsageError, ProtocolError, ValueError) as exc:
        note(request, outcome="failed", detail=str(exc)[:300])
        depts = await off_loop(request, registry.list_departments)
        return await render(request, "keys.html", {"depts": depts, "manage": True, "form": {**form, "action": action},
                                             "error": getattr(exc, "detail", None) or str(exc)}, status=400)
    note(request, dept=plan.get("dept") or None)
    if form.get("confirm") != "1":
        note(request, outcome="asked")
        return await render(request, "keys_confirm.html", {"action": action, "form": form, "plan": plan})
    try:
        done = await off_loop(request, _key_do, action, form, plan)
    except (UsageError, ProtocolError) as exc:
        note(request, outcome="failed", detail=str(exc)[:300])
        await flash(request, getattr(exc, "detail", None) or str(exc), "bad")
        raise web.HTTPSeeOther("/keys") from None
    note(request, detail=done[:500])
    await flash(request, done)
    raise web.HTTPSeeOther("/keys")


def _key_plan(store: Any, action: str, form: dict[str, str]) -> dict[str, Any]:
    """Check a key action's input and say what it will do (nothing is changed yet)."""
    if action not in KEY_ACTIONS:
        raise ValueError(f"unknown action {action}")
    if action == "revoke":
        key_id = form.get("key_id", "")
        known = {k["key_id"]: d["dept"] for d in registry.list_departments(store) for k in d["keys"]}
        if key_id not in known:
            raise ValueError(_("Unknown key id %(key)s.") % {"key": key_id})
        at = form.get("at") or None
        if at:
            at = format_time(parse_time(at))
        return {"key_id": key_id, "dept": known[key_id], "at": at}
    pem = form.get("public_key", "").encode()
    key = PublicKey.from_pem(pem)
    plan: dict[str, Any] = {"key_id": key.key_id, "dept": form.get("dept", "")}
    if action == "enrol":
        if not form.get("name") or not form.get("region"):
            raise ValueError(_("Give the department's id, name and region code."))
        plan.update(name=form["name"], region=form["region"])
    else:
        days = float(form.get("overlap_days") or 7)
        if not 0 <= days <= 365:
            raise ValueError(_("The overlap must be between 0 and 365 days."))
        plan["overlap_until"] = format_time(datetime.now(timezone.utc) + timedelta(days=days))
    return plan


def _key_do(store: Any, action: str, form: dict[str, str], plan: dict[str, Any]) -> str:
    if action == "revoke":
        info = registry.revoke_key(store, plan["key_id"], plan["at"])
        return _("Key %(key)s of %(dept)s revoked at %(at)s.") % {"key": info.key_id, "dept": info.dept,
                                                                  "at": local_time(info.revoked_at)}
    key = PublicKey.from_pem(form["public_key"].encode())
    if action == "enrol":
        registry.add_department(store, plan["dept"], plan["name"], plan["region"], key)
        return _("Department %(dept)s enrolled with key %(key)s. Run `cx hub provision` to create its broker "
                 "user.") % {"dept": plan["dept"], "key": key.key_id}
    info, ended = registry.rotate_key(store, plan["dept"], key, plan["overlap_until"])
    return _("Key %(key)s enrolled for %(dept)s; the previous keys stay valid until %(until)s.") % {
        "key": info.key_id, "dept": plan["dept"], "until": local_time(plan["overlap_until"])}


# -- the access trail -----------------------------------------------------------------------


def _trail_filters(request: web.Request) -> dict[str, str]:
    filters = {k: request.query[k].strip() for k in trail.FILTERS if request.query.get(k, "").strip()}
    for name in ("from", "to"):
        value = request.query.get(name, "").strip()
        if value:
            try:  # a local date (Asia/Shanghai) from the form's date field
                day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=CHINA)
                filters[name] = format_time(day + (timedelta(days=1) if name == "to" else timedelta(0)))
            except ValueError:
                pass
    return filters


async def trail_page(request: web.Request) -> web.Response:
    authorize(request, Permission.TRAIL)
    filters = _trail_filters(request)
    before = int(request.query["before"]) if request.query.get("before", "").isdigit() else None
    entries = await off_loop(request, trail.search, filters, 100, before)
    checkpoint = await off_loop(request, trail.latest_checkpoint)
    form = {k: request.query.get(k, "") for k in (*trail.FILTERS, "from", "to")}
    return await render(request, "trail.html", {"entries": entries, "checkpoint": checkpoint, "form": form,
                                          "pending": request.app[TRAIL].pending,
                                          "older": entries[-1]["idx"] if len(entries) == 100 else None})


async def trail_csv(request: web.Request) -> web.Response:
    authorize(request, Permission.TRAIL)
    entries = await off_loop(request, trail.search, _trail_filters(request), trail.MAX_SEGMENT)
    stamp = datetime.now(CHINA).strftime("%Y%m%d-%H%M%S")
    return web.Response(body=trail.to_csv(entries), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="access-trail-{stamp}.csv"'})


# -- registration ---------------------------------------------------------------------------


def add_routes(app: web.Application) -> None:
    P = Permission
    setup_templates(app)
    route(app, "GET", "/static/{version}/{name}", static, P.PUBLIC)
    route(app, "GET", "/lang/{lang}", switch_language, P.PUBLIC)
    route(app, "GET", "/login", login_page, P.PUBLIC)
    route(app, "POST", "/login", login, P.PUBLIC, trail="login")
    route(app, "POST", "/logout", logout, P.SIGNED_IN, trail="logout")
    route(app, "GET", "/account/password", password_page, P.SIGNED_IN)
    route(app, "POST", "/account/password", change_password, P.SIGNED_IN, trail="password")
    route(app, "GET", "/", home, P.SIGNED_IN)
    route(app, "GET", "/departments/{dept}", department, P.DEPARTMENT, trail="view")
    route(app, "GET", "/departments/{dept}/records/{record_id}", record, P.RECORDS, trail="view")
    route(app, "GET", "/quarantine", quarantine_list, P.QUARANTINE, trail="view")
    route(app, "GET", r"/quarantine/{item:\d+}", quarantine_item, P.QUARANTINE, trail="view")
    route(app, "POST", r"/quarantine/{item:\d+}/{action:release|discard}", quarantine_act, P.QUARANTINE_ACT,
          trail="{action}")
    route(app, "GET", "/keys", keys_page, P.DIRECTORY)
    route(app, "POST", "/keys/{action:enrol|rotate|revoke}", keys_act, P.KEYS_MANAGE, trail="key_{action}")
    route(app, "GET", "/trail", trail_page, P.TRAIL, trail="view")
    route(app, "GET", "/trail.csv", trail_csv, P.TRAIL, trail="export")


# words shown from data (statuses, actions, results), marked so the catalogs carry them; templates say _(word)
WORDS = (N_("healthy"), N_("late"), N_("silent"), N_("failing"), N_("quarantining"), N_("release"), N_("discard"),
         N_("released"), N_("discarded"), N_("held"), N_("accepted"), N_("redelivered"), N_("heartbeat"),
         N_("quarantined"), N_("not_in_queue"), N_("batch"), N_("active"), N_("revoked"), N_("expired"),
         N_("not_yet_valid"), N_("retracted"), N_("upsert"), N_("retract"), N_("operator"), N_("office"),
         N_("department"), N_("auditor"), N_("gap"), N_("late_fill"), N_("redelivery"), N_("replay"),
         N_("ok"), N_("denied"), N_("failed"), N_("locked"), N_("throttled"), N_("not_found"), N_("error"),
         N_("asked"), N_("key"), N_("signature"), N_("ledger"), N_("checkpoint"))


def context(cfg: Any) -> Any:
    """The console's resources for the app's life: the access trail (flushed at a clean stop), the
    quarantine actions, the hub's public key, and a first operator account on a hub that has none."""
    from ..protocol.keys import SigningKey
    from .service import INGESTOR  # set by the hub's ingest context once it runs
    from .trail import Trail, running

    async def ctx(app: web.Application) -> Any:
        key = SigningKey.load(cfg.hub.signing_key)
        app[HUB_PUBLIC] = key.public
        app[ACCOUNT_LOCKOUT] = (cfg.console.lockout_attempts, timedelta(minutes=cfg.console.lockout_minutes))
        app[RELEASER] = Releaser(cfg, app[STORE], lambda: app.get(INGESTOR))
        password = await asyncio.to_thread(accounts.bootstrap_operator, app[STORE])
        if password is not None:
            path = cfg.console.session_key_file.parent / "initial-operator.password"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(f"{accounts.FIRST_OPERATOR}\n{password}\n")
            log.warning("no console accounts: first operator created; its one-time password is in a file",
                        account=accounts.FIRST_OPERATOR, file=str(path))
        async with running(Trail(app[STORE], key), cfg.console.trail_flush_seconds) as kept:
            app[TRAIL] = kept
            yield

    return ctx
