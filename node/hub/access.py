"""Who may do what in the console and the API: roles, permissions, routes, and the one check they all pass.

Every route is registered with `route(app, method, path, handler, permission)`; the permission is
a required argument, and the middleware denies any route that was registered without one (default
deny). Before a handler runs, the middleware identifies the caller (session cookie or bearer token),
enforces CSRF on state-changing requests, and calls `authorize` with the route's permission and the
department named in the URL or query (`{dept}`, `?dept=`). A handler that learns a department only
from what it looks up (a batch, a quarantined message) calls the same `authorize` with it. Requests
of routes that declare a `trail` action, every token use and every refusal go into the access trail.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from aiohttp_session import Session, get_session, new_session
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from . import i18n
from .accounts import Role, check_token, get_user
from .config import HubConfig
from .i18n import _
from .store import Store
from .trail import Trail

log = structlog.get_logger("cx.hub.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Permission(str, enum.Enum):
    """What a route needs. Grants per role are in GRANTS; a department role holds its grants only for itself."""

    PUBLIC = "public"  # anyone, no login: health, the login page, static files, hash-only ledger proofs
    SIGNED_IN = "signed_in"  # any account: its own password, logging out
    OVERVIEW = "overview"  # delivery of every department at a glance
    DEPARTMENT = "department"  # a department's delivery page: batches, rejections, nodes, keys
    DIRECTORY = "directory"  # the list of departments and their keys
    RECORDS = "records"  # record content with provenance (personal data masked unless entitled)
    PROOFS = "proofs"  # proof bundles (of records with personal data only for those entitled to it)
    BATCHES = "batches"  # batches with their signed receipts
    QUARANTINE = "quarantine"  # what the hub could not attribute or verify (a department: its own)
    QUARANTINE_ACT = "quarantine_act"  # release or discard a quarantined message
    KEYS_MANAGE = "keys_manage"  # enrol departments, rotate and revoke keys
    TRAIL = "trail"  # the access trail (留痕) and its export
    COMPLIANCE = "compliance"  # deadline compliance: the page, reports and their downloads (a department: its own)
    CREDIT_CHECK = "credit_check"  # credit checks (信用审查) of enterprises for procurement, support, honours


GRANTS: dict[str, frozenset[Permission]] = {
    "operator": frozenset(Permission),
    "office": frozenset({Permission.SIGNED_IN, Permission.OVERVIEW, Permission.DEPARTMENT, Permission.DIRECTORY,
                         Permission.COMPLIANCE}),
    "department": frozenset({Permission.SIGNED_IN, Permission.DEPARTMENT, Permission.DIRECTORY, Permission.RECORDS,
                             Permission.PROOFS, Permission.BATCHES, Permission.QUARANTINE, Permission.COMPLIANCE,
                             Permission.CREDIT_CHECK}),
    "auditor": frozenset({Permission.SIGNED_IN, Permission.DIRECTORY, Permission.RECORDS, Permission.PROOFS,
                          Permission.BATCHES, Permission.TRAIL}),
}
# where each role lands after logging in
HOME = {"operator": "/", "office": "/", "auditor": "/trail"}

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD, CSRF_HEADER = "csrf_token", "X-CSRF-Token"
REFRESH_HEADER = "X-CX-Refresh"  # the pages' own live refresh: does not count as activity for the idle timeout
LANG_COOKIE = "cx_lang"


@dataclass(frozen=True)
class Rule:
    permission: Permission
    trail: str | None = None  # the action recorded for every request, e.g. "view", "key_{action}" (from the URL)


@dataclass(frozen=True)
class Principal:
    """Who is asking: an account through its session, a machine client through a token, or nobody."""

    name: str  # account name, "token:<id>", or "-"
    role: Role | None
    via: str  # session | token | anonymous
    must_change: bool = False

    @property
    def signed_in(self) -> bool:
        return self.role is not None

    def can(self, permission: Permission, dept: str | None = None) -> bool:
        if permission is Permission.PUBLIC:
            return True
        if self.role is None or permission not in GRANTS[self.role.kind]:
            return False
        return self.role.kind != "department" or dept is None or dept == self.role.dept

    @property
    def scope(self) -> str | None:
        """The one department whose data a listing may show, or None for all."""
        return self.role.dept if self.role is not None and self.role.kind == "department" else None

    def sees_personal(self, dept: str) -> bool:
        """Personal data (ID numbers …) unmasked: the operator, and the department that provided the record."""
        return self.role is not None and (self.role.kind == "operator" or self.scope == dept)

    @property
    def home(self) -> str:
        if self.role is None:
            return "/login"
        return HOME.get(self.role.kind) or f"/departments/{self.role.dept}"

    def label(self) -> str:
        return str(self.role) if self.role else "-"


ANONYMOUS = Principal("-", None, "anonymous")


class Denied(Exception):
    """The caller may not do this: 401 when nobody is signed in, else 403."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# -- app state ------------------------------------------------------------------------------

RULES = web.AppKey("access_rules", dict)  # route -> Rule
STORE = web.AppKey("store", Store)
TRAIL = web.AppKey("trail", Trail)
SETTINGS = web.AppKey("access_settings", object)

PRINCIPAL = web.RequestKey("cx_principal", Principal)
NOTE = web.RequestKey("cx_trail_note", dict)  # what the handler adds to the request's trail entry
EXPIRED = web.RequestKey("cx_session_expired", bool)


def route(app: web.Application, method: str, path: str, handler: Handler, permission: Permission, *,
          trail: str | None = None, name: str | None = None) -> web.AbstractRoute:
    """Register a route together with the permission it needs (and the trail action it records, if any)."""
    if not isinstance(permission, Permission):
        raise TypeError(f"route {method} {path} must declare a Permission, not {permission!r}")
    registered = app.router.add_route(method, path, handler, name=name)
    app.setdefault(RULES, {})[registered] = Rule(permission, trail)
    return registered


def note(request: web.Request, **fields: str | None) -> None:
    """What a handler adds to its trail entry: dept, detail, outcome, actor (e.g. the name tried at log-in)."""
    request.setdefault(NOTE, {}).update(fields)


def authorize(request: web.Request, permission: Permission, dept: str | None = None) -> Principal:
    """THE check: the caller holds `permission` (for `dept`, when it concerns one) or Denied is raised."""
    principal: Principal = request.get(PRINCIPAL, ANONYMOUS)
    if dept is not None:
        note(request, dept=dept)
    if principal.can(permission, dept):
        return principal
    if not principal.signed_in:
        raise Denied(401, "login_required", _("Please log in."))
    if dept is not None and principal.scope is not None and permission in GRANTS["department"]:
        raise Denied(403, "other_department", _("This account may see only its own department's data."))
    raise Denied(403, "forbidden", _("Your role may not do this."))


def is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


# -- sessions -------------------------------------------------------------------------------


class SessionCookies(EncryptedCookieStorage):
    """Encrypted session cookies (Fernet), HttpOnly, SameSite=Lax, Secure whenever the request came over TLS."""

    def __init__(self, key: bytes, mode: str):
        super().__init__(key, cookie_name="cx_session", httponly=True, samesite="Lax")
        self.mode = mode

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        if session.empty:
            response.del_cookie(self.cookie_name, path="/")
            return
        secure = self.mode == "always" or (self.mode == "auto" and _over_tls(request))
        data = self._encoder(self._get_session_data(session)).encode("utf-8")
        response.set_cookie(self.cookie_name, self._fernet.encrypt(data).decode("utf-8"), path="/", httponly=True,
                            samesite="Lax", secure=secure or None)


def _over_tls(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def csrf_token(session: Session) -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


async def start_session(request: web.Request, name: str, password_changed: str) -> Session:
    """A fresh session for a successful log-in (a new cookie and CSRF token: no session fixation)."""
    session = await new_session(request)
    now = time.time()
    session.update({"user": name, "pw": password_changed, "seen": now, "started": now,
                    "csrf": secrets.token_urlsafe(24)})
    return session


@dataclass
class PerMinute:
    """At most `limit` requests a minute from one client address (a sliding window per address)."""

    limit: int
    seen: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))  # client -> recent request times

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        if len(self.seen) > 10000:  # forget addresses that have been quiet for a minute
            for quiet in [c for c, times in self.seen.items() if not times or now - times[-1] > 60]:
                del self.seen[quiet]
        recent = self.seen[client]
        while recent and now - recent[0] > 60:
            recent.popleft()
        if len(recent) >= self.limit:
            return False
        recent.append(now)
        return True

    def retry_after(self, client: str) -> int:
        """Seconds until the client's oldest counted request leaves the window."""
        recent = self.seen.get(client)
        return max(1, int(60 - (time.monotonic() - recent[0])) + 1) if recent else 1


@dataclass
class Settings:
    idle_seconds: float
    max_seconds: float
    logins: PerMinute  # attempts from one address, whatever the account
    language: str

    @classmethod
    def of(cls, cfg: HubConfig) -> Settings:
        c = cfg.console
        return cls(c.idle_timeout_minutes * 60, c.session_max_hours * 3600, PerMinute(c.login_attempts_per_minute),
                   c.language)

    def login_allowed(self, client: str) -> bool:
        return self.logins.allow(client)


async def identify(request: web.Request) -> Principal:
    store = request.app[STORE]
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _sp, presented = auth.partition(" ")
        token = await asyncio.to_thread(check_token, store, presented.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise Denied(401, "invalid_token", _("The API token is not valid (unknown, revoked or mistyped)."))
        return Principal(f"token:{token.token_id}", token.role, "token")
    if "cx_session" not in request.cookies:
        return ANONYMOUS
    session = await get_session(request)
    name = session.get("user")
    if not name:
        return ANONYMOUS
    settings: Settings = request.app[SETTINGS]
    now = time.time()
    seen, started = session.get("seen", 0), session.get("started", 0)
    if now - seen > settings.idle_seconds or now - started > settings.max_seconds:
        session.invalidate()
        note(request, detail="session expired")
        request[EXPIRED] = True
        return ANONYMOUS
    account = await asyncio.to_thread(get_user, store, name)
    if account is None or account.disabled_at or account.password_changed != session.get("pw"):
        session.invalidate()
        return ANONYMOUS
    if not request.headers.get(REFRESH_HEADER) and now - seen > min(30.0, settings.idle_seconds / 4):
        session["seen"] = now
    return Principal(name, account.role, "session", account.must_change)


async def _check_csrf(request: web.Request, principal: Principal) -> None:
    if request.method in SAFE_METHODS or principal.via == "token":
        return
    session = await get_session(request)
    expected = session.get("csrf")
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            given = (await request.post()).get(CSRF_FIELD)
        except web.HTTPRequestEntityTooLarge:
            raise Denied(413, "too_large", _("The form is too large (at most 1 MB, files included).")) from None
    if not expected or not isinstance(given, str) or not hmac.compare_digest(expected, given):
        raise Denied(403, "csrf", _("The form has expired or did not come from this console. Reload the page "
                                    "and try again."))


def client_of(request: web.Request) -> str:
    return request.remote or "-"


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = request.match_info
    if match.http_exception is not None:  # no such route (404) or method (405): nothing to authorize
        raise match.http_exception
    rule: Rule | None = request.app[RULES].get(match.route)
    settings: Settings = request.app[SETTINGS]
    i18n.use(request.cookies.get(LANG_COOKIE, settings.language))
    principal = ANONYMOUS
    status = 500
    try:
        if rule is None:  # registered without `route(...)`: refused, whatever it is
            log.error("route without a declared permission refused", path=request.path)
            raise Denied(403, "no_permission_declared", _("This address is not open to anyone."))
        principal = await identify(request)
        request[PRINCIPAL] = principal
        await _check_csrf(request, principal)
        if rule.permission is not Permission.PUBLIC:
            if principal.signed_in and principal.must_change and not is_api(request) \
                    and rule.permission is not Permission.SIGNED_IN:
                raise web.HTTPSeeOther("/account/password")
            authorize(request, rule.permission, match.get("dept") or request.query.get("dept") or None)
        response = await handler(request)
        status = response.status
        return response
    except Denied as denied:
        status = denied.status
        note(request, outcome="denied", detail=denied.code)
        return await _refusal(request, denied)
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        _trail(request, rule, principal, status)


def _trail(request: web.Request, rule: Rule | None, principal: Principal, status: int) -> None:
    """One trail entry for a request whose route records an action, a token's use, or a refusal."""
    extra: dict[str, Any] = request.get(NOTE, {})
    # refusals: every 403, and a 401 for a token that did not check out (a page merely asking to log in is not one)
    refused = status == 403 or (status == 401 and "Authorization" in request.headers)
    if not (rule and rule.trail) and principal.via != "token" and not refused and "action" not in extra:
        return
    if request.headers.get(REFRESH_HEADER) and not refused and principal.via != "token":
        return  # an open page refreshing its figures: its first view was recorded
    outcome = extra.get("outcome") or ("ok" if status < 400 else "denied" if status in (401, 403)
                                       else "not_found" if status == 404 else "error")
    principal = request.get(PRINCIPAL, principal)  # a log-in changes who it is
    trail: Trail = request.app[TRAIL]
    trail.record(actor=extra.get("actor") or principal.name, role=principal.label(),
                 action=extra.get("action") or (rule.trail.format_map(request.match_info) if rule and rule.trail
                                                else "api"),
                 target=f"{request.method} {request.path_qs}", client=client_of(request), outcome=outcome,
                 dept=extra.get("dept") or request.match_info.get("dept"), detail=extra.get("detail"))


async def _refusal(request: web.Request, denied: Denied) -> web.StreamResponse:
    if is_api(request):
        response = web.json_response({"error": denied.code, "message": denied.message}, status=denied.status)
        if denied.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="cx-hub"'
        return response
    if denied.status == 401:
        target = "/login" + ("?expired=1&" if request.get(EXPIRED) else "?") + "next=" + _quote(request.path_qs)
        raise web.HTTPSeeOther(target)
    from .console import render  # pages are the console's; this module only decides

    return await render(request, "error.html", {"status": denied.status, "code": denied.code,
                                                "message": denied.message}, status=denied.status)


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")


def setup(app: web.Application, cfg: HubConfig) -> None:
    """Sessions and the access middleware; call before the routes are added."""
    from aiohttp_session import session_middleware

    app[SETTINGS] = Settings.of(cfg)
    app.setdefault(RULES, {})
    app.middlewares.append(session_middleware(SessionCookies(cfg.session_key(), cfg.console.secure_cookies)))
    app.middlewares.append(access_middleware)
