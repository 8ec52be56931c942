"""The hub's HTTP API (aiohttp): health, metrics, departments, batches, records, proofs, checkpoints."""

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
from . import queries
from .metrics import HubMetrics
from .store import Store

STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", HubMetrics)
BROKER_READY = web.AppKey("broker_ready", Callable)  # () -> bool
HUB_NAME = web.AppKey("hub_name", str)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=partial(json.dumps, ensure_ascii=False))


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": code, "message": message}, status)


async def _off_loop(request: web.Request, fn: Callable[..., Any], *args: Any) -> web.Response:
    """Run a blocking store query in a worker thread and turn its outcome into a response."""
    try:
        return _json(await asyncio.to_thread(fn, request.app[STORE], *args))
    except queries.NotFound as exc:
        return _error(404, "not_found", str(exc))
    except ProtocolError as exc:
        return _error(400, exc.reason.value, exc.detail)


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


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
    return _json({"ready": all(checks.values()), **checks}, 200 if all(checks.values()) else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    doc = json.loads(resources.files("cx.hub").joinpath("openapi.json").read_text("utf-8"))
    return _json(doc)


async def list_departments(request: web.Request) -> web.Response:
    return await _off_loop(request, queries.departments_view)


async def get_batch(request: web.Request) -> web.Response:
    return await _off_loop(request, queries.batch_view, request.match_info["batch_id"])


async def get_record(request: web.Request) -> web.Response:
    return await _off_loop(request, queries.record_view, request.match_info["dept"], request.match_info["record_id"])


async def get_proof(request: web.Request) -> web.Response:
    return await _off_loop(request, queries.proof_bundle, request.match_info["dept"], request.match_info["record_id"],
                           request.query.get("version"))


async def get_checkpoint(request: web.Request) -> web.Response:
    return await _off_loop(request, queries.checkpoint_view, request.match_info["dept"])


async def get_consistency(request: web.Request) -> web.Response:
    try:
        old = int(request.query["old"])
        new = int(request.query["new"]) if "new" in request.query else None
    except (KeyError, ValueError):
        return _error(400, "bad_request", "give ?old=<size>[&new=<size>] as integers")
    return await _off_loop(request, queries.consistency_view, request.match_info["dept"], old, new)


async def list_quarantine(request: web.Request) -> web.Response:
    try:
        limit = min(int(request.query.get("limit", "100")), 1000)
    except ValueError:
        return _error(400, "bad_request", "limit must be an integer")
    return await _off_loop(request, queries.quarantine_view, limit)


async def dashboard(request: web.Request) -> web.Response:
    from .dashboard import render

    view = await asyncio.to_thread(queries.dashboard_view, request.app[STORE])
    return web.Response(text=render(view, request.app.get(HUB_NAME, "Credit Exchange")), content_type="text/html")


async def dashboard_json(request: web.Request) -> web.Response:
    return await _off_loop(request, queries.dashboard_view)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", dashboard)
    app.router.add_get("/api/v1/dashboard", dashboard_json)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/departments", list_departments)
    app.router.add_get("/api/v1/batches/{batch_id}", get_batch)
    app.router.add_get("/api/v1/departments/{dept}/records/{record_id}", get_record)
    app.router.add_get("/api/v1/departments/{dept}/records/{record_id}/proof", get_proof)
    app.router.add_get("/api/v1/departments/{dept}/checkpoint", get_checkpoint)
    app.router.add_get("/api/v1/departments/{dept}/consistency", get_consistency)
    app.router.add_get("/api/v1/quarantine", list_quarantine)

