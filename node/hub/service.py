"""`cx hub run`: ingest from the broker and the HTTP API in one process, each resource owned by the app."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any
from concurrent.futures import ThreadPoolExecutor

import aiormq
import structlog
from aio_pika.abc import AbstractIncomingMessage
from aiohttp import web

from ..protocol.keys import SigningKey
from .. import transport
from .config import HubConfig
from .ingest import Inbound, Ingestor, Outcome, StoreUnavailable
from .figures import DeliveryFigures
from .metrics import HubMetrics
from .projections import Activity, Projector, hub_projections
from .reports import compliance_ctx
from .store import Store
from . import access, compliance_web, console, credit, credit_web, portal
from .web import BROKER_READY, HUB_NAME, LIGHTS, METRICS, STORE, add_routes, metrics_app

log = structlog.get_logger("cx.hub")

CONFIG = web.AppKey("config", HubConfig)
INGESTOR = web.AppKey("ingestor", Ingestor)
PROJECTOR = web.AppKey("projector", Projector)
ACTIVITY = web.AppKey("ingest_activity", Activity)  # batches arriving: the projector waits for a lull
# a store outage: the same message is tried again after 2, 4, 8, 16 s, then put back in the queue (the broker
# redelivers it, up to its delivery limit; the node resends it after its receipt timeout in any case)
STORE_ATTEMPTS = 5
STORE_RETRY_SECONDS = 2.0
PIPELINE_DEPTH = 2  # messages between the start of `prepare` and the end of `finish` at once
# fault injection for the crash-recovery test only (CX_FAULT_INJECT=crash-after-commit)
FAULT = os.environ.get("CX_FAULT_INJECT", "")


def build_app(cfg: HubConfig) -> web.Application:
    app = web.Application()
    app[CONFIG] = cfg
    app[METRICS] = HubMetrics()
    app[HUB_NAME] = cfg.hub.name
    app[ACTIVITY] = Activity()
    app[LIGHTS] = {"silent_after": cfg.console.silent_after_seconds, "late_pending": cfg.console.late_pending_seconds}
    access.setup(app, cfg)  # sessions and the one access check, before any route
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(console.context(cfg))  # the access trail: flushed after ingest stops, before the store
    app.cleanup_ctx.append(_ingest_ctx)
    app.cleanup_ctx.append(_projector_ctx)
    app.cleanup_ctx.append(_credit_sweep_ctx)
    app.cleanup_ctx.append(_figures_ctx)
    app.cleanup_ctx.append(compliance_ctx(CONFIG))
    add_routes(app, metrics_here=cfg.metrics_listen() is None)
    console.add_routes(app)
    compliance_web.add_routes(app, cfg)
    credit_web.add_routes(app, cfg)
    portal.add_routes(app, cfg)  # the public portal: after the console (templates) and credit_web (rules)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    store = Store(cfg.store_url, sqlite_synchronous=cfg.store.sqlite_synchronous)
    found = await asyncio.to_thread(store.migrate)
    log.info("store ready", url=str(store.url.render_as_string(hide_password=True)), schema_found=found)
    app[STORE] = store
    yield
    store.dispose()


async def _ingest_ctx(app: web.Application) -> AsyncIterator[None]:
    """Consume the ingest queue; one store thread keeps each department's ledger appends in order."""
    cfg = app[CONFIG]
    topology = cfg.topology
    ingestor = Ingestor(app[STORE], SigningKey.load(cfg.hub.signing_key), topology, metrics=app[METRICS])
    app[INGESTOR] = ingestor
    # a pipeline: while the store thread commits one batch, the prepare thread reads, verifies and validates
    # the next (SQLite and PostgreSQL release the GIL while they write and sync)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cx-store")
    preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cx-prepare")
    # one batch committing and one prepared behind it keep both threads busy; the rest of the prefetch waits
    # as bytes (a prepared batch of 1,000 records holds some 5 MB of parsed records while it waits)
    in_pipeline = asyncio.Semaphore(PIPELINE_DEPTH)
    broker: dict[str, Any] = {}  # connection and receipts exchange, once connected
    app[BROKER_READY] = lambda: "connection" in broker and not broker["connection"].is_closed
    loop = asyncio.get_running_loop()
    metrics = app[METRICS]
    activity = app[ACTIVITY]
    metrics.consumer_up.set_function(lambda: float(broker.get("consuming", False) and app[BROKER_READY]()))

    async def decide(inbound: Inbound) -> Outcome:
        """The message's outcome; a store outage is retried here, bounded and counted, then raised."""
        delay = STORE_RETRY_SECONDS
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                async with in_pipeline:
                    prepared = await loop.run_in_executor(preparer, ingestor.prepare, inbound)
                    return await loop.run_in_executor(executor, ingestor.finish, prepared)
            except StoreUnavailable as exc:
                metrics.ingest_errors.inc()
                log.warning("store unavailable; message kept", attempt=attempt, attempts=STORE_ATTEMPTS,
                            error=str(exc)[:300], routing_key=inbound.routing_key)
                if attempt == STORE_ATTEMPTS:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def answer(message: AbstractIncomingMessage, outcome: Outcome) -> None:
        bound = log.bind(batch_id=outcome.batch_id, dept=outcome.dept)
        if outcome.result == "quarantined":
            if outcome.refusal and outcome.refuse_to:
                try:
                    await transport.publish(broker["receipts"], topology.receipts_key(outcome.refuse_to, outcome.node),
                                            outcome.refusal, message_type=transport.REFUSAL,
                                            message_id=outcome.batch_id or "")
                    metrics.refusals.labels(outcome.refuse_to, outcome.reason.value if outcome.reason else "").inc()
                except Exception as exc:  # noqa: BLE001 - e.g. no receipts queue for that department
                    bound.warning("refusal not delivered", to=outcome.refuse_to, error=str(exc)[:300])
            await message.reject(requeue=False)  # dead-lettered to the quarantine queue, already recorded
            return
        if outcome.result == "heartbeat":
            await message.ack()
            return
        if FAULT == "crash-after-commit" and outcome.result == "accepted":
            os.kill(os.getpid(), signal.SIGKILL)  # test hook: committed, receipt not sent, message not acked
        start = time.perf_counter()
        try:
            await transport.publish(broker["receipts"], topology.receipts_key(outcome.dept or "", outcome.node),
                                    outcome.receipt or b"", message_type=transport.RECEIPT,
                                    message_id=outcome.batch_id or "")
        except aiormq.exceptions.PublishError:
            # no queue for that node: it was never enrolled (or its queue was deleted). The batch is stored;
            # once the operator enrols the node and provisions, its resend gets this receipt again.
            metrics.receipts_unroutable.labels(outcome.dept or "").inc()
            bound.warning("receipt not routable: the node is not enrolled; run `cx hub add-node` for it and "
                          "`cx hub provision` 回执无法投递：该前置机未登记", node=outcome.node)
        metrics.stage_seconds.labels("publish").observe(time.perf_counter() - start)
        start = time.perf_counter()
        await message.ack()
        metrics.stage_seconds.labels("ack").observe(time.perf_counter() - start)
        bound.info("batch " + outcome.result, accepted=outcome.accepted, rejected=outcome.rejected,
                   duplicates=outcome.duplicates)

    async def on_message(message: AbstractIncomingMessage) -> None:
        """One outcome per message: stored and receipted, quarantined (and refused), or put back."""
        inbound = Inbound(message.body, message.routing_key or "", message.user_id, message.message_id,
                          message.type, bool(message.redelivered))
        metrics.in_progress.inc()
        try:
            with activity.message():
                outcome = await decide(inbound)
            metrics.last_outcome.set_to_current_time()
            await answer(message, outcome)
        except Exception as exc:  # noqa: BLE001 - the store stayed away, or the broker lost the answer
            if not isinstance(exc, StoreUnavailable):
                log.exception("answer not sent; message returned to the queue", routing_key=inbound.routing_key)
                await asyncio.sleep(STORE_RETRY_SECONDS)
            with contextlib.suppress(Exception):  # on a closed channel the broker requeues it anyway
                await message.nack(requeue=True)
        finally:
            metrics.in_progress.dec()

    async def consume() -> None:
        """Connect (retrying while the broker is away: the dashboard and API serve meanwhile), then consume."""
        delay = 1.0
        while True:
            try:
                connection = await transport.connect(cfg.hub_amqp_url(), name="cx-hub")
                break
            except Exception as exc:  # noqa: BLE001 - unreachable, refused login …: say so, retry
                log.warning("broker unreachable; retrying", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
        broker["connection"] = connection
        channel = await transport.confirmed_channel(connection, prefetch=cfg.broker.prefetch)
        broker["receipts"] = await channel.get_exchange(topology.receipts_exchange, ensure=False)
        # declared (passively), not just named: only a declared queue's consumer is restored after a reconnect
        queue = await channel.get_queue(topology.ingest_queue)
        await queue.consume(on_message)
        broker["consuming"] = True
        log.info("consuming", queue=topology.ingest_queue, vhost=topology.vhost, prefetch=cfg.broker.prefetch)

    task = asyncio.create_task(consume())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if "connection" in broker:
        await broker["connection"].close()
    preparer.shutdown(wait=True)
    executor.shutdown(wait=True)


async def _figures_ctx(app: web.Application) -> AsyncIterator[None]:
    """What the nodes report about themselves and when keys expire, for /metrics and the alert rules."""
    figures = DeliveryFigures(app[STORE])
    app[METRICS].registry.register(figures)
    stop = asyncio.Event()
    task = asyncio.create_task(figures.run(stop))
    yield
    stop.set()
    await task


async def _projector_ctx(app: web.Application) -> AsyncIterator[None]:
    """Keep the derived views (timeliness, search, warnings) current behind ingest."""
    projector = Projector(app[STORE], hub_projections(app[CONFIG]))
    app[PROJECTOR] = projector
    app[METRICS].projection_lag.set_function(lambda: _projection_lag(projector))
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop, activity=app[ACTIVITY],
                                             max_lag_seconds=app[CONFIG].hub.projection_max_lag_seconds))
    yield
    stop.set()
    await task


def _projection_lag(projector: Projector) -> float:
    """Versions accepted and not yet in the slowest projection (for /metrics; NaN if the store is away)."""
    try:
        return float(max(projector.lag().values(), default=0))
    except Exception:  # noqa: BLE001 - a scrape must not fail because the store is briefly unavailable
        return float("nan")


async def _credit_sweep_ctx(app: web.Application) -> AsyncIterator[None]:
    """Publicity periods end with time: once a day, the enterprises whose standing that changes are recomputed."""
    stop = asyncio.Event()
    task = asyncio.create_task(credit.run_sweeps(app[STORE], app[credit_web.RULES], stop))
    yield
    stop.set()
    await task


async def run(cfg: HubConfig) -> None:
    app = build_app(cfg)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = cfg.listen()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("hub API listening", url=f"http://{host}:{port}/")
    metrics_runner = None
    if cfg.metrics_listen() is not None:
        metrics_runner = web.AppRunner(metrics_app(app), access_log=None)
        await metrics_runner.setup()
        m_host, m_port = cfg.metrics_listen()
        await web.TCPSite(metrics_runner, m_host, m_port).start()
        log.info("metrics listening", url=f"http://{m_host}:{m_port}/metrics")
    stop = asyncio.Event()
    # SIGTERM (systemctl stop, docker stop) is a clean stop: contexts close, the access trail is flushed
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()

