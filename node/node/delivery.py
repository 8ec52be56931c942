"""Delivery: seal outbox records into signed batches, publish with confirms, verify receipts and refusals, heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from .. import __version__, transport
from ..protocol import jsonutil
from ..protocol.envelope import Batch, build_batch
from ..protocol.errors import ProtocolError, Reason
from ..protocol.heartbeat import Heartbeat
from ..protocol.keys import PublicKey, SigningKey
from ..protocol.merkle import verify_consistency
from ..protocol.receipts import Receipt, Refusal
from .config import NodeConfig
from .metrics import NodeMetrics
from .outbox import UNSETTLED, Outbox

log = structlog.get_logger("cx.node.delivery")
# refusals the node fixes itself when the batch was signed with another key than its current one (a rotation)
KEY_REASONS = frozenset({Reason.KEY_REVOKED.value, Reason.KEY_NOT_ACTIVE.value, Reason.UNKNOWN_KEY.value})


@dataclass
class ReceiptVerdict:
    ok: bool
    detail: str = ""


class Delivery:
    """Owns the broker connection and the async side's outbox connection (used from one thread)."""

    def __init__(self, cfg: NodeConfig, key: SigningKey, hub_key: PublicKey, metrics: NodeMetrics,
                 inventory: Callable[[], dict[str, int]] = dict, last_error: Callable[[], str | None] = lambda: None):
        self.cfg = cfg
        self.key = key
        self.hub_key = hub_key
        self.metrics = metrics
        self.inventory = inventory
        self.last_error = last_error
        self.topology = cfg.topology
        self.dept = cfg.node.dept
        self.user = self.topology.dept_user(self.dept)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cx-outbox")
        self.outbox: Outbox | None = None
        self.wake = asyncio.Event()
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.exchange: AbstractExchange | None = None
        self.broker_error: str | None = None
        self._receipt_lock = asyncio.Lock()
        # set when the hub's ledger does not extend what this node saw: waiting cannot fix that, people must
        self.history_rewritten: str | None = None
        self._consumer_tag: str | None = None

    async def db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run an outbox call on the delivery's own outbox thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(*args))

    async def open(self) -> None:
        self.outbox = await self.db(Outbox, self.cfg.node.outbox)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        if self.outbox is not None:
            await self.db(self.outbox.close)
        self._pool.shutdown(wait=True)

    # -- broker ---------------------------------------------------------------------------

    async def connect(self, stop: asyncio.Event) -> bool:
        """Connect (retrying with backoff while `stop` is not set); True once connected."""
        delay = self.cfg.delivery.retry_min_seconds
        url = self.cfg.amqp_url()
        ssl_context = transport_ssl(self.cfg)
        while not stop.is_set():
            try:
                self.connection = await transport.connect(url, ssl_context=ssl_context, name=f"cx-node-{self.dept}")
                await self._open_channel()
                # declared (passively), not just named: only a declared queue's consumer is restored on reconnect
                queue = await self.channel.get_queue(self.topology.receipts_queue(self.dept))
                self._consumer_tag = await queue.consume(self._on_receipt)
                self.broker_error = None
                log.info("connected to broker", url=transport.redact(url))
                return True
            except Exception as exc:  # noqa: BLE001 - any connection failure: retry
                if self.connection is not None:  # opened, then the channel or queue failed: do not leave it open
                    connection, self.connection = self.connection, None
                    with contextlib.suppress(Exception):
                        await connection.close()
                self.broker_error = f"cannot reach the broker 无法连接消息代理: {exc}"
                self.metrics.broker_up.set(0)
                log.warning("broker unreachable; retrying", error=str(exc), retry_in=round(delay, 1))
                await _sleep_or_stop(stop, delay)
                delay = _backoff(delay, self.cfg.delivery.retry_max_seconds)
        return False

    async def _open_channel(self) -> None:
        assert self.connection is not None
        self.channel = await transport.confirmed_channel(self.connection, prefetch=32)
        self.exchange = await self.channel.get_exchange(self.topology.records_exchange, ensure=False)
        self.metrics.broker_up.set(1)

    async def _publish(self, routing_key: str, body: bytes, message_type: str, message_id: str) -> None:
        if self.channel is None or self.channel.is_closed:
            await self._open_channel()  # a refused publish closes the channel
        assert self.exchange is not None
        await transport.publish(self.exchange, routing_key, body, message_type=message_type, message_id=message_id,
                                user_id=self.user, timeout=30)

    # -- sending --------------------------------------------------------------------------

    def _seal_ready(self, force: bool) -> int:
        """Seal as many full batches as the outbox holds (and a partial one when it has lingered)."""
        assert self.outbox is not None
        d = self.cfg.delivery
        sealed = self._reseal_after_rotation()
        while self.outbox.in_flight(d.receipt_timeout_seconds) + sealed < d.max_in_flight * 2:
            rows = self.outbox.pending(d.batch_max_records, d.batch_max_bytes)
            if not rows:
                break
            full = len(rows) >= d.batch_max_records or sum(len(r[3]) + 1 for r in rows) >= d.batch_max_bytes * 0.9
            age = self.outbox.oldest_pending_age() or 0.0
            if not (full or force or age >= d.linger_seconds):
                break
            self.outbox.seal([r[0] for r in rows], self._builder(rows))
            sealed += 1
        return sealed

    def _builder(self, rows: list[tuple[int, str, int, bytes]]) -> Callable[[int, str | None], Batch]:
        """build(seq, prev): the records (id, type, schema_version, line) signed with the current key."""
        schemas = {type_: version for _, type_, version, _ in rows}
        lines = [r[3] for r in rows]

        def build(seq: int, prev: str | None) -> Batch:
            return build_batch(self.key, dept=self.dept, node=self.cfg.node.node_id, seq=seq, prev=prev,
                               lines=lines, schemas=schemas)
        return build

    def _reseal(self, batch_id: str, refusal: bytes, reason: str, detail: str) -> str:
        """Seal a refused batch's records again with the current key, as a new batch; returns its id."""
        assert self.outbox is not None
        rows = self.outbox.batch_lines(batch_id)
        new_id, _ = self.outbox.reseal(batch_id, refusal, f"resealed: {reason}: {detail}", self._builder(rows))
        self.metrics.batches_refused.labels(reason, "resealed").inc()
        log.warning("batch refused by the hub for its key; its records were sealed again with the current key",
                    batch_id=batch_id, new_batch_id=new_id, reason=reason, records=len(rows), key_id=self.key.key_id)
        return new_id

    def _reseal_after_rotation(self) -> int:
        """Refused batches the node can fix now that its key changed (refused for their key, signed with another)."""
        assert self.outbox is not None
        resealed = 0
        for batch in self.outbox.refused_batches():
            reason, detail = _refusal_reason(batch["refusal"])
            if reason in KEY_REASONS and _key_id(batch["body"]) != self.key.key_id:
                self._reseal(batch["batch_id"], batch["refusal"], reason, detail)
                resealed += 1
        return resealed

    async def send_loop(self, stop: asyncio.Event, drain: bool = False) -> None:
        """Seal and publish batches until stopped; never more than max_in_flight unreceipted at once."""
        d = self.cfg.delivery
        delay = d.retry_min_seconds
        while not stop.is_set():
            self.wake.clear()
            try:
                await self.db(self._seal_ready, drain)
                in_flight = await self.db(self.outbox.in_flight, d.receipt_timeout_seconds)
                room = max(0, d.max_in_flight - in_flight)
                due = await self.db(self.outbox.due, d.receipt_timeout_seconds, room) if room else []
                for batch_id, body, attempts in due:
                    await self._publish(batch_routing_key(self.dept, body), body, transport.BATCH, batch_id)
                    await self.db(self.outbox.mark_sent, batch_id)
                    self.metrics.batches_sent.labels("resend" if attempts else "first").inc()
                    if attempts:
                        log.info("batch sent again (no receipt yet)", batch_id=batch_id, attempt=attempts + 1)
                delay = d.retry_min_seconds
                self.broker_error = None
            except Exception as exc:  # noqa: BLE001 - broker down, publish refused, …: back off and retry
                self.broker_error = f"delivery failed 发送失败: {exc}"
                self.metrics.publish_failures.inc()
                log.warning("publish failed; retrying", error=str(exc), retry_in=round(delay, 1))
                await _sleep_or_stop(stop, delay)
                delay = _backoff(delay, d.retry_max_seconds)
                continue
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=min(0.5, d.linger_seconds))
            except asyncio.TimeoutError:
                pass

    # -- receipts -------------------------------------------------------------------------

    async def _on_receipt(self, message: AbstractIncomingMessage) -> None:
        handle = self.handle_refusal if message.type == transport.REFUSAL else self.handle_receipt
        async with self._receipt_lock:  # checkpoints are checked in arrival order
            try:
                verdict = await handle(message.body)
            except Exception:  # noqa: BLE001 - keep the receipt in the queue for a later try
                log.exception("receipt handling failed")
                await asyncio.sleep(1)
                await message.nack(requeue=True)
                return
            await message.ack()
            if verdict.ok:
                self.wake.set()

    async def handle_receipt(self, body: bytes) -> ReceiptVerdict:
        """Verify a receipt (hub signature, batch, ledger consistency) and settle its batch."""
        assert self.outbox is not None
        try:
            receipt = Receipt.parse(body, self.hub_key)
        except ProtocolError as exc:
            return await self._alert("receipt_invalid", f"{exc.reason.value}: {exc.detail}", None)
        batch = await self.db(self.outbox.batch, receipt.batch_id)
        if batch is None:
            log.info("receipt for a batch this outbox does not hold", batch_id=receipt.batch_id)
            return ReceiptVerdict(False, "unknown batch")
        if receipt.dept != self.dept or receipt.header_hash != batch["header_hash"]:
            return await self._alert("receipt_mismatch", "the receipt is for another department or another batch "
                                     "header", receipt.batch_id)
        if batch["state"] == "receipted":
            return ReceiptVerdict(True, "already settled")
        try:
            await self.check_checkpoint(receipt)
        except ProtocolError as exc:
            self.history_rewritten = exc.detail
            return await self._alert("inconsistent_checkpoint", exc.detail, receipt.batch_id)
        cp = receipt.checkpoint
        counts = await self.db(self.outbox.apply_receipt, receipt.batch_id, body, receipt.accepted,
                               [(r.line, r.record_id, list(r.errors)) for r in receipt.rejected],
                               (cp.size, cp.root, cp.time, json.dumps(cp.to_json())))
        for state, n in counts.items():
            if n:
                self.metrics.records_settled.labels(state).inc(n)
        self.metrics.receipts.labels("verified").inc()
        self.metrics.last_receipt.set(time.time())
        log.info("receipt verified", batch_id=receipt.batch_id, **counts, ledger_size=cp.size)
        return ReceiptVerdict(True)

    async def handle_refusal(self, body: bytes) -> ReceiptVerdict:
        """Verify a refusal (hub signature, this department, exactly the bytes this node sent) and act on it:
        seal the records again with the current key when the batch's key was the cause and the key has
        changed since; otherwise let them wait, refused, with an alert."""
        assert self.outbox is not None
        try:
            refusal = Refusal.parse(body, self.hub_key)
        except ProtocolError as exc:
            return await self._alert("refusal_invalid", f"{exc.reason.value}: {exc.detail}", None)
        if refusal.dept != self.dept:
            return await self._alert("refusal_mismatch", f"the refusal is for department {refusal.dept}",
                                     refusal.batch_id)
        batch = await self.db(self.outbox.refused_batch, refusal.batch_id, refusal.body_hash)
        if batch is None:
            log.info("refusal for a batch this outbox does not hold", batch_id=refusal.batch_id,
                     reason=refusal.reason)
            return ReceiptVerdict(False, "unknown batch")
        if hashlib.sha256(batch["body"]).hexdigest() != refusal.body_hash:
            # another message under this batch's id (or altered on the way) was refused, not what this node sent
            return await self._alert("refusal_mismatch", f"the hub refused other bytes than this batch's "
                                     f"({refusal.reason}: {refusal.detail_en})", batch["batch_id"])
        if batch["state"] not in UNSETTLED:
            return ReceiptVerdict(True, "already settled")
        batch_id = batch["batch_id"]
        if refusal.reason in KEY_REASONS and _key_id(batch["body"]) != self.key.key_id:
            await self.db(self._reseal, batch_id, body, refusal.reason, refusal.detail_en)
        else:
            records = await self.db(self.outbox.refuse, batch_id, body, refusal.reason, refusal.detail_zh,
                                    refusal.detail_en)
            self.metrics.batches_refused.labels(refusal.reason, "waiting").inc()
            log.error("batch refused by the hub; its records wait until the cause is fixed (then cx node retry)",
                      batch_id=batch_id, reason=refusal.reason, detail=refusal.detail_en, records=records)
        return ReceiptVerdict(True)

    async def check_checkpoint(self, receipt: Receipt) -> None:
        """The hub may only ever extend this department's ledger: check against what this node saw."""
        cp = receipt.checkpoint
        last = await self.db(self.outbox.last_checkpoint)
        if last is None:
            return  # the first checkpoint this node sees is trusted on first use
        last_size, last_root = last
        if cp.size == last_size:
            if cp.root != last_root:
                raise ProtocolError(Reason.INCONSISTENT_CHECKPOINT,
                                    f"ledger size {cp.size} has root {cp.root[:16]}…, earlier {last_root[:16]}…")
            return
        if cp.size < last_size:  # a late or repeated receipt
            known = await self.db(self.outbox.checkpoint_at, cp.size)
            if known is not None:
                if known != cp.root:
                    raise ProtocolError(Reason.INCONSISTENT_CHECKPOINT, f"ledger size {cp.size} changed its root")
                return
            proof = await self._fetch_consistency(cp.size, last_size)
            if proof is None:
                log.warning("older checkpoint could not be checked (no hub_api configured)", size=cp.size)
                return
            _verify(cp.size, last_size, cp.root_bytes, bytes.fromhex(last_root), proof)
            return
        if receipt.consistency is not None and receipt.consistency.old_size == last_size:
            receipt.consistency.verify(bytes.fromhex(last_root), cp)
            return
        proof = await self._fetch_consistency(last_size, cp.size)
        if proof is None:
            raise ProtocolError(Reason.INCONSISTENT_CHECKPOINT,
                                f"no proof that ledger size {cp.size} extends {last_size} (the receipt proves from "
                                f"{receipt.consistency.old_size if receipt.consistency else 'nothing'}; set "
                                "[delivery] hub_api to fetch proofs)")
        _verify(last_size, cp.size, bytes.fromhex(last_root), cp.root_bytes, proof)

    async def _fetch_consistency(self, old: int, new: int) -> list[bytes] | None:
        api = self.cfg.delivery.hub_api.rstrip("/")
        if not api:
            return None
        url = f"{api}/api/v1/departments/{self.dept}/consistency"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            async with session.get(url, params={"old": str(old), "new": str(new)}) as resp:
                if resp.status != 200:
                    raise ProtocolError(Reason.INCONSISTENT_CHECKPOINT, f"hub API answered {resp.status} for a "
                                        f"consistency proof {old}→{new}")
                doc = await resp.json()
        return [bytes.fromhex(h) for h in doc["proof"]]

    async def _alert(self, kind: str, detail: str, batch_id: str | None) -> ReceiptVerdict:
        """A receipt that fails a check is an alert; its batch stays in the outbox (and is sent again)."""
        assert self.outbox is not None
        await self.db(self.outbox.alert, kind, detail, batch_id)
        self.metrics.receipts.labels(kind).inc()
        log.error("receipt refused", kind=kind, detail=detail, batch_id=batch_id)
        return ReceiptVerdict(False, f"{kind}: {detail}")

    # -- heartbeats -----------------------------------------------------------------------

    async def heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.send_heartbeat()
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat is retried next period
                log.warning("heartbeat not sent", error=str(exc))
            await _sleep_or_stop(stop, self.cfg.delivery.heartbeat_seconds)

    async def send_heartbeat(self) -> None:
        assert self.outbox is not None
        depth = await self.db(self.outbox.depth)
        age = await self.db(self.outbox.oldest_pending_age)
        rejections = await self.db(self.outbox.rejection_summary)
        alerts = await self.db(self.outbox.alert_summary)
        inventory = await asyncio.get_running_loop().run_in_executor(None, self.inventory)
        body = Heartbeat.sign(self.key, dept=self.dept, node=self.cfg.node.node_id, version=__version__,
                              outbox_depth=depth, oldest_pending_seconds=age,
                              last_error=self.broker_error or self.last_error(), inventory=inventory,
                              rejections=rejections, alerts=alerts)
        await self._publish(self.topology.routing_key(self.dept, "heartbeat"), body, transport.HEARTBEAT,
                            f"hb-{time.time_ns()}")
        self.metrics.heartbeats.inc()


def batch_routing_key(dept: str, body: bytes) -> str:
    """<dept>.<record type> for a batch of one type (what this node seals), <dept>.mixed otherwise."""
    schemas = jsonutil.loads(body.split(b"\n", 1)[0])["schemas"]
    return transport.Topology.routing_key(dept, next(iter(schemas)) if len(schemas) == 1 else "mixed")


def _key_id(body: bytes) -> str:
    """The key id a batch this node sealed was signed with (its header's)."""
    return jsonutil.loads(body.split(b"\n", 1)[0])["key_id"]


def _refusal_reason(refusal: bytes) -> tuple[str, str]:
    """(reason code, English detail) of a refusal this outbox stored after verifying it."""
    obj = jsonutil.loads(refusal.split(b"\n", 1)[0])
    return obj["reason"], obj["detail_en"]


def _verify(old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> None:
    try:
        verify_consistency(old, new, old_root, new_root, proof)
    except ProtocolError as exc:
        raise ProtocolError(Reason.INCONSISTENT_CHECKPOINT, f"ledger {old}→{new}: {exc.detail}") from None


def _backoff(delay: float, ceiling: float) -> float:
    """Exponential backoff with full jitter, so many nodes do not retry in step."""
    return min(ceiling, delay * 2) * (0.5 + random.random() / 2)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass


def transport_ssl(cfg: NodeConfig) -> Any:
    b = cfg.broker
    return transport.tls_context(b.tls_ca, b.tls_cert, b.tls_key)
