"""The hub's HTTP API (aiohttp): health, metrics, departments, batches, records, proofs, checkpoints, the trail.

Every route is registered through `access.route` with the permission it needs; see access.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from functools import partial
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from ..protocol.errors import ProtocolError
from . import queries, trail
from .access import GRANTS, RULES, STORE, Permission, authorize, note, route
from .metrics import HubMetrics
from .store import Store

METRICS = web.AppKey("metrics", HubMetrics)
BROKER_READY = web.AppKey("broker_ready", Callable)  # () -> bool
HUB_NAME = web.AppKey("hub_name", str)
LIGHTS = web.AppKey("status_light_thresholds", dict)  # silent_after, late_pending (seconds)

__all__ = ["BROKER_READY", "HUB_NAME", "LIGHTS", "METRICS", "STORE", "add_routes", "json_response"]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=partial(json.dumps, ensure_ascii=False))


def _error(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": code, "message": message}, status)


async def off_loop(request: web.Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking store query in a worker thread (the event loop keeps serving)."""
    return await asyncio.to_thread(fn, request.app[STORE], *args, **kwargs)


async def _answer(request: web.Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> web.Response:
    """A store query's outcome as a JSON response."""
    try:
        return json_response(await off_loop(request, fn, *args, **kwargs))
    except queries.NotFound as exc:
        return _error(404, "not_found", str(exc))
    except queries.PersonalData as exc:
        note(request, outcome="denied", detail="personal_data")
        return _error(403, "personal_data", str(exc))
    except ProtocolError as exc:
        return _error(400, exc.reason.value, exc.detail)


def thresholds(request: web.Request) -> dict[str, float]:
    return request.app.get(LIGHTS, {})


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = {"store": False, "broker": False}
    try:
        def ping(store: Store) -> None:
            with store.reader.connect() as conn:
                conn.execute(text("SELECT 1"))
        await asyncio.to_thread(ping, request.app[STORE])
        checks["store"] = True
    except Exception:  # noqa: BLE001 - any failure means not ready
        pass
    ready = request.app.get(BROKER_READY)
    checks["broker"] = bool(ready and ready())
    return json_response({"ready": all(checks.values()), **checks}, 200 if all(checks.values()) else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document, with each path's roles taken from the permissions its route declares."""
    doc = json.loads(resources.files("cx.hub").joinpath("openapi.json").read_text("utf-8"))
    for r, rule in request.app[RULES].items():
        path = r.resource.canonical if r.resource is not None else None
        operation = doc["paths"].get(path, {}).get(r.method.lower())
        if operation is None:
            continue
        if rule.permission is Permission.PUBLIC:
            operation["security"] = []
            operation["x-roles"] = ["public"]
        else:
            operation["security"] = [{"bearerToken": []}, {"sessionCookie": []}]
            operation["x-roles"] = roles_for(rule.permission)
    return json_response(doc)


def roles_for(permission: Permission) -> list[str]:
    return [("department:<own>" if kind == "department" else kind)
            for kind, granted in GRANTS.items() if permission in granted]


async def list_departments(request: web.Request) -> web.Response:
    principal = authorize(request, Permission.DIRECTORY)
    depts = await off_loop(request, queries.departments_view)
    return json_response([d for d in depts if principal.scope in (None, d["dept"])])


async def get_batch(request: web.Request) -> web.Response:
    try:
        batch = await off_loop(request, queries.batch_view, request.match_info["batch_id"])
    except queries.NotFound as exc:
        return _error(404, "not_found", str(exc))
    authorize(request, Permission.BATCHES, batch["dept"])  # the department is known only now
    return json_response(batch)


async def get_record(request: web.Request) -> web.Response:
    dept = request.match_info["dept"]
    principal = authorize(request, Permission.RECORDS, dept)
    return await _answer(request, queries.record_view, dept, request.match_info["record_id"],
                         principal.sees_personal(dept))


async def get_proof(request: web.Request) -> web.Response:
    dept = request.match_info["dept"]
    principal = authorize(request, Permission.PROOFS, dept)
    response = await _answer(request, queries.proof_bundle, dept, request.match_info["record_id"],
                             request.query.get("version"), principal.sees_personal(dept))
    if request.query.get("download") and response.status == 200:
        name = f"{dept}-{request.match_info['record_id']}-proof.json".replace("/", "_")
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


async def get_checkpoint(request: web.Request) -> web.Response:
    return await _answer(request, queries.checkpoint_view, request.match_info["dept"])


def _sizes(request: web.Request) -> tuple[int, int | None]:
    """?old=<size>[&new=<size>] of a consistency request."""
    try:
        return int(request.query["old"]), (int(request.query["new"]) if "new" in request.query else None)
    except (KeyError, ValueError):
        raise web.HTTPBadRequest(text=json.dumps({"error": "bad_request", "message": "give ?old=<size>[&new=<size>] "
                                                  "as integers"}), content_type="application/json") from None


async def get_consistency(request: web.Request) -> web.Response:
    return await _answer(request, queries.consistency_view, request.match_info["dept"], *_sizes(request))


def _limit(request: web.Request, default: int = 100, most: int = 1000) -> int:
    try:
        return max(1, min(int(request.query.get("limit", str(default))), most))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be an integer") from None


async def list_quarantine(request: web.Request) -> web.Response:
    principal = authorize(request, Permission.QUARANTINE, request.query.get("dept") or None)
    dept = principal.scope or request.query.get("dept") or None
    return await _answer(request, queries.quarantine_view, _limit(request), dept,
                         principal.can(Permission.QUARANTINE_ACT))


async def dashboard_json(request: web.Request) -> web.Response:
    return await _answer(request, queries.dashboard_view, **thresholds(request))


async def trail_entries(request: web.Request) -> web.Response:
    filters = {k: request.query[k] for k in (*trail.FILTERS, "from", "to") if request.query.get(k)}
    before = int(request.query["before"]) if request.query.get("before", "").isdigit() else None
    return await _answer(request, trail.search, filters, _limit(request), before)


async def trail_segment(request: web.Request) -> web.Response:
    try:
        start = int(request.query.get("start", "0"))
        end = int(request.query["end"]) if "end" in request.query else None
    except ValueError:
        return _error(400, "bad_request", "give ?start=<index>[&end=<index>] as integers")
    response = await _answer(request, trail.segment, start, end)
    if response.status == 200:
        response.headers["Content-Disposition"] = f'attachment; filename="access-trail-{start}.json"'
    return response


async def trail_checkpoint(request: web.Request) -> web.Response:
    cp = await off_loop(request, trail.latest_checkpoint)
    return json_response(cp.to_json()) if cp else _error(404, "not_found", "the trail has no checkpoint yet")


async def trail_consistency(request: web.Request) -> web.Response:
    return await _answer(request, trail.consistency, *_sizes(request))


def add_routes(app: web.Application, *, metrics_here: bool = True) -> None:
    P = Permission
    route(app, "GET", "/healthz", healthz, P.PUBLIC)
    route(app, "GET", "/readyz", readyz, P.PUBLIC)
    if metrics_here:
        route(app, "GET", "/metrics", metrics, P.PUBLIC)
    route(app, "GET", "/api/v1/openapi.json", openapi, P.PUBLIC)
    route(app, "GET", "/api/v1/dashboard", dashboard_json, P.OVERVIEW)
    route(app, "GET", "/api/v1/departments", list_departments, P.DIRECTORY)
    route(app, "GET", "/api/v1/batches/{batch_id}", get_batch, P.BATCHES, trail="view")
    route(app, "GET", "/api/v1/departments/{dept}/records/{record_id}", get_record, P.RECORDS, trail="view")
    route(app, "GET", "/api/v1/departments/{dept}/records/{record_id}/proof", get_proof, P.PROOFS, trail="download")
    # hashes only, fetched by department nodes that hold no account ([delivery] hub_api)
    route(app, "GET", "/api/v1/departments/{dept}/checkpoint", get_checkpoint, P.PUBLIC)
    route(app, "GET", "/api/v1/departments/{dept}/consistency", get_consistency, P.PUBLIC)
    route(app, "GET", "/api/v1/quarantine", list_quarantine, P.QUARANTINE, trail="view")
    route(app, "GET", "/api/v1/trail", trail_entries, P.TRAIL, trail="view")
    route(app, "GET", "/api/v1/trail/segment", trail_segment, P.TRAIL, trail="export")
    route(app, "GET", "/api/v1/trail/checkpoint", trail_checkpoint, P.TRAIL)
    route(app, "GET", "/api/v1/trail/consistency", trail_consistency, P.TRAIL)


def metrics_app(metrics_of: web.Application) -> web.Application:
    """A separate app serving only /metrics, for `[api] metrics_listen` (nothing else is reachable there)."""
    app = web.Application()

    async def serve(request: web.Request) -> web.Response:
        body = generate_latest(metrics_of[METRICS].registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", serve)
    return app
