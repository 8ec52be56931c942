"""`cx node run`: read sources, deliver, verify receipts, heartbeat; /healthz and /metrics on a local port."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..protocol.envelope import format_time
from ..protocol.keys import SigningKey
from .collector import Collector, OpenSources
from .config import NodeConfig
from .delivery import Delivery, _sleep_or_stop
from .health import trouble
from .metrics import NodeMetrics
from .outbox import Outbox

log = structlog.get_logger("cx.node")


# --once: these broker problems do not go away by waiting; say so and stop instead of retrying
GIVE_UP = frozenset({"login_refused", "permission_refused", "not_enrolled"})
# `cx node run --once` exit statuses besides 0 (all delivered) and 3 (configuration problem, nothing read)
EXIT_UNDELIVERED = 1  # records without a receipt, or batches the hub refused
EXIT_REJECTED_HERE = 4  # everything valid was delivered, but rows were rejected (here or by the hub)
PRUNE_STEP = 2000  # rows per pruning transaction: short enough never to hold up delivery noticeably


class NodeService:
    def __init__(self, cfg: NodeConfig, *, once: bool = False, timeout: float | None = None,
                 progress: bool = True, serve_http: bool = True, opened: OpenSources | None = None):
        self.cfg = cfg
        self.once = once
        self.timeout = timeout
        self.progress = progress
        self.serve_http = serve_http
        self.metrics = NodeMetrics()
        self.stop = asyncio.Event()
        self.collected = asyncio.Event()  # one full pass over every source done
        self.key = SigningKey.load(cfg.node.signing_key)
        self.opened = opened
        self.collector: Collector | None = None
        self.delivery: Delivery | None = None
        self.gave_up = False  # --once: the broker refused in a way waiting cannot fix
        self.started = time.time()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        outbox = Outbox(self.cfg.node.outbox)
        self.collector = Collector(self.cfg, outbox, on_commit=lambda: loop.call_soon_threadsafe(self._wake),
                                   opened=self.opened)
        self.delivery = Delivery(self.cfg, self.key, self.metrics, inventory=self.collector.inventory,
                                 last_error=lambda: self.collector.last_error if self.collector else None)
        await self.delivery.open()
        runner = await self._start_http() if self.serve_http else None
        tasks = [asyncio.create_task(self._collect_loop(), name="collect"),
                 asyncio.create_task(self._deliver(), name="deliver"),
                 asyncio.create_task(self._prune_loop(), name="prune")]
        if self.progress:
            tasks.append(asyncio.create_task(self._progress_loop(), name="progress"))
        status = 0
        try:
            if self.once:
                status = await self._until_delivered()
                self.stop.set()
            else:
                await self.stop.wait()
        finally:
            self.stop.set()
            self.delivery.wake.set()
            for task in tasks:
                try:
                    await asyncio.wait_for(task, timeout=10)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    task.cancel()
                except Exception:  # noqa: BLE001 - report, keep shutting down
                    log.exception("task failed during shutdown", task=task.get_name())
            await self.delivery.close()
            await asyncio.to_thread(self.collector.close)
            await asyncio.to_thread(outbox.close)
            if runner is not None:
                await runner.cleanup()
        return status

    def _wake(self) -> None:
        if self.delivery is not None:
            self.delivery.wake.set()

    async def _collect_loop(self) -> None:
        assert self.collector is not None
        while not self.stop.is_set():
            stats = await asyncio.to_thread(self.collector.collect_all)
            for name, s in stats.items():
                self.metrics.rows_read.labels(name).inc(s.read)
                self.metrics.records_queued.labels(name).inc(s.queued + s.retracted)
                self.metrics.rows_rejected.labels(name).inc(s.rejected)
                for error in s.errors:
                    self.metrics.source_errors.labels(name).inc()
                    log.warning("source problem", stream=name, error=error)
                if s.read or s.rejected or s.retracted:
                    log.info("source read", stream=name, read=s.read, queued=s.queued, unchanged=s.unchanged,
                             rejected=s.rejected, retracted=s.retracted)
            self.collected.set()
            self._wake()
            if self.once:
                return
            await _sleep_or_stop(self.stop, self.cfg.delivery.poll_seconds)

    async def _deliver(self) -> None:
        assert self.delivery is not None
        if not await self.delivery.connect(self.stop, GIVE_UP if self.once else frozenset()):
            self.gave_up = True
            return
        tasks = [asyncio.create_task(self.delivery.send_loop(self.stop, drain=self.once)),
                 asyncio.create_task(self.delivery.heartbeat_loop(self.stop)),
                 asyncio.create_task(self.delivery.verify_loop(self.stop))]
        await asyncio.gather(*tasks)

    async def _prune_loop(self) -> None:
        """Settled records and batches older than [node] keep_settled_days go, in short steps, off the hot path."""
        keep = timedelta(days=self.cfg.node.keep_settled_days)
        pruner = await asyncio.to_thread(Outbox, self.cfg.node.outbox)
        try:
            while not self.stop.is_set():
                before = format_time(datetime.now(timezone.utc) - keep)
                removed = 0
                while not self.stop.is_set():
                    step = await asyncio.to_thread(pruner.prune, before, PRUNE_STEP)
                    removed += step
                    if step < PRUNE_STEP:
                        break
                    await asyncio.sleep(0.05)  # let sealing and receipts take the write lock in between
                if removed:
                    released = await asyncio.to_thread(pruner.release_space)
                    log.info("outbox pruned", rows=removed, pages_released=released)
                await _sleep_or_stop(self.stop, self.cfg.node.prune_seconds)
        except Exception:  # noqa: BLE001 - pruning is housekeeping: say so, never stop the node
            log.exception("outbox pruning failed; it is tried again at the next start")
        finally:
            await asyncio.to_thread(pruner.close)

    async def _until_delivered(self) -> int:
        """--once: after one full read, wait for every record's receipt (or the hub's refusal), then report."""
        assert self.delivery is not None
        deadline = time.time() + self.timeout if self.timeout else None
        await self.collected.wait()
        while True:
            waiting, unreceipted = await self.delivery.db(self.delivery.outbox.waiting)
            rewritten = self.delivery.history_rewritten
            stuck = self.delivery.broker_trouble is not None and self.delivery.broker_trouble.kind in GIVE_UP
            done = waiting == 0 and unreceipted == 0
            ending = self.stop.is_set() or rewritten or self.gave_up or stuck or (deadline and time.time() > deadline)
            if not (done or ending):
                await asyncio.sleep(0.2)
                continue
            # the whole picture only at the end: counts() walks every record the outbox keeps
            counts = await self.delivery.db(self.delivery.outbox.counts)
            waiting = counts.get("pending", 0) + counts.get("batched", 0)
            if waiting == 0 and counts["batches_unreceipted"] == 0:
                refused = await self.delivery.db(self.delivery.outbox.refused_batches)
                if refused:
                    print(_refused_report(refused, counts), file=sys.stderr)
                    return EXIT_UNDELIVERED
                unverified = await self.delivery.verify_pending()
                print(_summary(counts, unverified, self.delivery.hub_trouble), file=sys.stderr)
                return EXIT_REJECTED_HERE if counts["rejections_open"] else 0
            if ending:
                alerts = await self.delivery.db(self.delivery.outbox.alerts, 5, True)
                print(f"未送达 NOT DELIVERED: {waiting} record(s) in {counts['batches_unreceipted']} batch(es) have no "
                      "verified receipt.", file=sys.stderr)
                problem = self.delivery.broker_trouble
                if problem is None and counts["batches_unreceipted"]:
                    problem = trouble("no_receipt", f"{counts['batches_unreceipted']} batch(es) sent")
                if problem is not None:
                    print(f"  {problem.zh}\n  {problem.en}\n  ({problem.kind}: {problem.detail})", file=sys.stderr)
                if rewritten:
                    print("the hub's ledger does not extend the checkpoint this node verified before: its receipt "
                          "was refused and the records stay in the outbox; tell the hub operator 交换中心账本与本节点"
                          f"已验证的检查点不一致，回执已拒收，请联系交换中心 ({rewritten})", file=sys.stderr)
                refused = await self.delivery.db(self.delivery.outbox.refused_batches)
                if refused:
                    print(_refused_report(refused, counts), file=sys.stderr)
                for a in alerts:
                    print(f"  alert 告警 {a['kind']}: {a['detail_zh'] or ''} / {a['detail']}", file=sys.stderr)
                return EXIT_UNDELIVERED
            await asyncio.sleep(0.2)

    async def _progress_loop(self) -> None:
        """A progress line on stderr while a backlog drains."""
        assert self.delivery is not None
        last_settled, last_time, shown = None, time.time(), False
        delivered_before: int | None = None  # delivered in earlier runs: read once (counts() walks every record)
        while not self.stop.is_set():
            await _sleep_or_stop(self.stop, 2.0)
            try:
                if delivered_before is None:
                    delivered_before = (await self.delivery.db(self.delivery.outbox.counts)).get("delivered", 0) \
                        - int(self._settled().get("delivered", 0))
                waiting, in_flight = await self.delivery.db(self.delivery.outbox.waiting)
            except Exception:  # noqa: BLE001 - progress is best effort
                continue
            self.metrics.outbox_depth.set(waiting)
            settled_now = self._settled()
            settled = sum(settled_now.values())
            now = time.time()
            rate = (settled - last_settled) / (now - last_time) if last_settled is not None else 0.0
            last_settled, last_time = settled, now
            if waiting or shown:
                eta = f", about {waiting / rate:.0f}s left" if rate > 0 and waiting else ""
                delivered = delivered_before + int(settled_now.get("delivered", 0))
                line = (f"outbox 待发送 {waiting:,} · in flight {in_flight} batches · "
                        f"{rate:,.0f} records/s · delivered 已送达 {delivered:,}{eta}")
                if self.delivery.broker_error:
                    line += f" · {self.delivery.broker_error}"
                print(line, file=sys.stderr, flush=True)
                shown = waiting > 0

    def _settled(self) -> dict[str, float]:
        """Records settled by receipts since this run started, by outcome (the node's own counter: no scan)."""
        return {sample.labels["state"]: sample.value for family in self.metrics.records_settled.collect()
                for sample in family.samples if sample.name.endswith("_total")}

    async def _start_http(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = self.cfg.listen()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            log.warning("node HTTP port not available; continuing without it", listen=self.cfg.http.listen,
                        error=str(exc))
        return runner

    async def _healthz(self, request: web.Request) -> web.Response:
        """200 "ok", or 503 "degraded" with every problem (classified, in Chinese and English) and open alerts."""
        assert self.delivery is not None
        health = await self.delivery.db(self.delivery.outbox.health)
        problems: list[dict[str, Any]] = []
        for found in (self.delivery.broker_trouble, self.delivery.hub_trouble if health["checkpoints_unverified"]
                      else None):
            if found is not None:
                problems.append({"kind": found.kind, "zh": found.zh, "en": found.en, "detail": found.detail})
        if health["batches_unanswered"] and self.delivery.broker_trouble is None:
            found = trouble("no_receipt", f"{health['batches_unanswered']} batch(es) sent more than once")
            problems.append({"kind": found.kind, "zh": found.zh, "en": found.en, "detail": found.detail})
        for b in health["refused"]:
            problems.append({"kind": "batch_refused",
                             "zh": f"批次 {b['batch_id']}（{b['records']} 条）被交换中心拒收：{b['alert_zh'] or ''}",
                             "en": f"batch {b['batch_id']} ({b['records']} records) refused by the hub: {b['alert']}",
                             "detail": b["alert"]})
        for a in health["alerts"]:
            problems.append({"kind": a["kind"], "zh": a["detail_zh"] or "", "en": a["detail"], "detail": a["detail"],
                             "alert_id": a["id"], "at": a["at"]})
        if self.collector is not None and self.collector.last_error:
            problems.append({"kind": "source_error", "zh": "读取数据源出错", "en": "reading a source failed",
                             "detail": self.collector.last_error})
        body: dict[str, Any] = {
            "status": "degraded" if problems else "ok",
            "dept": self.cfg.node.dept, "node": self.cfg.node.node_id,
            "broker": "connected" if self.delivery.broker_trouble is None else self.delivery.broker_trouble.kind,
            "problems": problems, "outbox": health["counts"],
            "last_source_error": self.collector.last_error if self.collector else None,
            # batches the hub refused whose records wait for people to fix the cause (then `cx node retry`)
            "refused": [{"batch_id": b["batch_id"], "records": b["records"], "reason": b["alert"]}
                        for b in health["refused"]],
            "uptime_seconds": round(time.time() - self.started),
        }
        return web.json_response(body, status=503 if problems else 200, dumps=_dumps)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _refused_report(refused: list[dict[str, Any]], counts: dict[str, int]) -> str:
    """What --once says about refused batches: each batch and the hub's reason, and what to do."""
    lines = [f"拒收 REFUSED: the hub refused {len(refused)} batch(es) holding {counts.get('refused', 0):,} record(s); "
             "nothing of them was stored 交换中心拒收了以下批次，其中记录均未入库:"]
    lines += [f"  batch {b['batch_id']} ({b['records']} records): {b['alert_zh'] or ''}\n      {b['alert']}"
              for b in refused]
    lines.append("fix the cause (see the reason; tell the hub operator if it is theirs), then run `cx node retry` "
                 "排除原因后运行 cx node retry 重新发送")
    return "\n".join(lines)


def _summary(counts: dict[str, int], unverified: int = 0, hub_problem: Any = None) -> str:
    """What --once says when nothing waits any more: all delivered, or delivered but rows rejected."""
    delivered = (f"{counts.get('delivered', 0):,} delivered 已送达, {counts.get('duplicate', 0):,} already at the hub "
                 f"中心已有, {counts.get('rejected', 0):,} rejected by the hub 中心退回")
    open_here, open_hub = counts["rejections_open_local"], counts["rejections_open"] - counts["rejections_open_local"]
    if counts["rejections_open"]:
        text = (f"已送达，但有 {open_here:,} 行在本地被退回、{open_hub:,} 条被交换中心退回，均未入库 "
                f"DELIVERED, BUT {open_here:,} row(s) were rejected here and {open_hub:,} by the hub: {delivered}. "
                "See `cx node rejections`; fix the mapping or the data, then `cx node retry` reads them again "
                "请查看 cx node rejections，修正映射或数据后运行 cx node retry")
    else:
        text = f"全部送达 all delivered: {delivered}"
    if unverified:
        text += (f"\n{unverified} ledger checkpoint(s) not yet verified 账本检查点尚未核验"
                 + (f" ({hub_problem.zh} / {hub_problem.en})" if hub_problem else "")
                 + ": checked again while the node runs 节点运行时会自动重试")
    return text


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
