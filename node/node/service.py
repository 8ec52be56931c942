"""`cx node run`: read sources, deliver, verify receipts, heartbeat; /healthz and /metrics on a local port."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..protocol.keys import PublicKey, SigningKey
from .collector import Collector
from .config import NodeConfig
from .delivery import Delivery, _sleep_or_stop
from .metrics import NodeMetrics
from .outbox import Outbox

log = structlog.get_logger("cx.node")


class NodeService:
    def __init__(self, cfg: NodeConfig, *, once: bool = False, timeout: float | None = None,
                 progress: bool = True, serve_http: bool = True):
        self.cfg = cfg
        self.once = once
        self.timeout = timeout
        self.progress = progress
        self.serve_http = serve_http
        self.metrics = NodeMetrics()
        self.stop = asyncio.Event()
        self.collected = asyncio.Event()  # one full pass over every source done
        self.key = SigningKey.load(cfg.node.signing_key)
        self.hub_key = PublicKey.load(cfg.node.hub_public_key)
        self.collector: Collector | None = None
        self.delivery: Delivery | None = None
        self.started = time.time()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        outbox = Outbox(self.cfg.node.outbox)
        self.collector = Collector(self.cfg, outbox, on_commit=lambda: loop.call_soon_threadsafe(self._wake))
        self.delivery = Delivery(self.cfg, self.key, self.hub_key, self.metrics, inventory=self.collector.inventory,
                                 last_error=lambda: self.collector.last_error if self.collector else None)
        await self.delivery.open()
        runner = await self._start_http() if self.serve_http else None
        tasks = [asyncio.create_task(self._collect_loop(), name="collect"),
                 asyncio.create_task(self._deliver(), name="deliver")]
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
        if not await self.delivery.connect(self.stop):
            return
        tasks = [asyncio.create_task(self.delivery.send_loop(self.stop, drain=self.once)),
                 asyncio.create_task(self.delivery.heartbeat_loop(self.stop))]
        await asyncio.gather(*tasks)

    async def _until_delivered(self) -> int:
        """--once: after one full read, wait for every record's receipt (or the hub's refusal), then report."""
        assert self.delivery is not None
        deadline = time.time() + self.timeout if self.timeout else None
        await self.collected.wait()
        while True:
            counts = await self.delivery.db(self.delivery.outbox.counts)
            waiting = counts.get("pending", 0) + counts.get("batched", 0)
            if waiting == 0 and counts["batches_unreceipted"] == 0:
                refused = await self.delivery.db(self.delivery.outbox.refused_batches)
                if refused:
                    print(_refused_report(refused, counts), file=sys.stderr)
                    return 1
                print(_summary(counts), file=sys.stderr)
                return 0
            rewritten = self.delivery.history_rewritten
            if self.stop.is_set() or rewritten or (deadline and time.time() > deadline):
                alerts = await self.delivery.db(self.delivery.outbox.alerts, 5)
                print(f"未送达 NOT DELIVERED: {waiting} record(s) in {counts['batches_unreceipted']} batch(es) have no "
                      f"verified receipt. {self.delivery.broker_error or ''}", file=sys.stderr)
                if rewritten:
                    print("the hub's ledger does not extend the checkpoint this node verified before: its receipt "
                          "was refused and the records stay in the outbox; tell the hub operator 交换中心账本与本节点"
                          f"已验证的检查点不一致，回执已拒收，请联系交换中心 ({rewritten})", file=sys.stderr)
                refused = await self.delivery.db(self.delivery.outbox.refused_batches)
                if refused:
                    print(_refused_report(refused, counts), file=sys.stderr)
                for a in alerts:
                    print(f"  alert {a['kind']}: {a['detail']}", file=sys.stderr)
                return 1
            await asyncio.sleep(0.2)

    async def _progress_loop(self) -> None:
        """A progress line on stderr while a backlog drains."""
        assert self.delivery is not None
        last_settled, last_time, shown = None, time.time(), False
        while not self.stop.is_set():
            await _sleep_or_stop(self.stop, 2.0)
            try:
                counts = await self.delivery.db(self.delivery.outbox.counts)
            except Exception:  # noqa: BLE001 - progress is best effort
                continue
            waiting = counts.get("pending", 0) + counts.get("batched", 0)
            self.metrics.outbox_depth.set(waiting)
            settled = sum(counts.get(k, 0) for k in ("delivered", "rejected", "duplicate"))
            now = time.time()
            rate = (settled - last_settled) / (now - last_time) if last_settled is not None else 0.0
            last_settled, last_time = settled, now
            if waiting or shown:
                eta = f", about {waiting / rate:.0f}s left" if rate > 0 and waiting else ""
                line = (f"outbox 待发送 {waiting:,} · in flight {counts['batches_unreceipted']} batches · "
                        f"{rate:,.0f} records/s · delivered 已送达 {counts.get('delivered', 0):,}{eta}")
                if self.delivery.broker_error:
                    line += f" · {self.delivery.broker_error}"
                print(line, file=sys.stderr, flush=True)
                shown = waiting > 0

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
        assert self.delivery is not None
        counts = await self.delivery.db(self.delivery.outbox.counts)
        refused = await self.delivery.db(self.delivery.outbox.refused_batches)
        body: dict[str, Any] = {
            "status": "degraded" if self.delivery.broker_error or refused else "ok",
            "dept": self.cfg.node.dept, "node": self.cfg.node.node_id,
            "broker": "connected" if not self.delivery.broker_error else self.delivery.broker_error,
            "outbox": counts, "last_source_error": self.collector.last_error if self.collector else None,
            # batches the hub refused whose records wait for people to fix the cause (then `cx node retry`)
            "refused": [{"batch_id": b["batch_id"], "records": b["records"], "reason": b["alert"]} for b in refused],
            "uptime_seconds": round(time.time() - self.started),
        }
        return web.json_response(body, status=200)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _refused_report(refused: list[dict[str, Any]], counts: dict[str, int]) -> str:
    """What --once says about refused batches: each batch and the hub's reason, and what to do."""
    lines = [f"拒收 REFUSED: the hub refused {len(refused)} batch(es) holding {counts.get('refused', 0):,} record(s); "
             "nothing of them was stored 交换中心拒收了以下批次，其中记录均未入库:"]
    lines += [f"  batch {b['batch_id']} ({b['records']} records): {b['alert']}" for b in refused]
    lines.append("fix the cause (see the reason; tell the hub operator if it is theirs), then run `cx node retry` "
                 "排除原因后运行 cx node retry 重新发送")
    return "\n".join(lines)


def _summary(counts: dict[str, int]) -> str:
    return (f"全部送达 all delivered: {counts.get('delivered', 0):,} delivered, {counts.get('duplicate', 0):,} already at "
            f"the hub, {counts.get('rejected', 0):,} rejected by the hub; {counts['rejections_open']:,} open "
            "rejection(s) — see `cx node rejections`")
