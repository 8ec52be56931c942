"""Delivery: seal outbox records into signed batches, publish with confirms, verify receipts and refusals, heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import functools
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
from ..config import ConfigError
from ..protocol import jsonutil
from ..protocol.envelope import Batch, build_batch
from ..protocol.errors import ProtocolError, Reason, explain
from ..protocol.heartbeat import Heartbeat
from ..protocol.keys import PublicKey, SigningKey
from ..protocol.merkle import verify_consistency
from ..protocol.receipts import Receipt, Refusal
from ..transport import Topology
from .config import NodeConfig
from .health import BROKER_ERROR, HUB_ERROR, Trouble, broker_trouble, hub_trouble, trouble
from .metrics import NodeMetrics
from .outbox import UNSETTLED, Outbox

log = structlog.get_logger("cx.node.delivery")
# refusals the node fixes itself when the batch was signed with another key than its current one (a rotation)
KEY_REASONS = frozenset({Reason.KEY_REVOKED.value, Reason.KEY_NOT_ACTIVE.value, Reason.UNKNOWN_KEY.value})


@dataclass
class ReceiptVerdict:
    ok: bool
    detail: str = ""


class ProofUnavailable(Exception):
    """No consistency proof could be had now (hub API unreachable or not configured): check again later."""

    def __init__(self, trouble: Trouble):
        super().__init__(str(trouble))
        self.trouble = trouble


class Delivery:
    """Owns the broker connection and the async side's outbox connection (used from one thread)."""

    def __init__(self, cfg: NodeConfig, key: SigningKey, metrics: NodeMetrics,
                 inventory: Callable[[], dict[str, int]] = dict, last_error: Callable[[], str | None] = lambda: None):
        self.cfg = cfg
        self.key = key
        self.hub_key: PublicKey = cfg.pinned_hub_key()
        self.link = cfg.handover()  # broker URL and user, vhost, receipts queue, hub API, hub key
        assert self.link is not None
        self.metrics = metrics
        self.inventory = inventory
        self.last_error = last_error
        self.records_exchange = Topology().records_exchange
        self.dept = cfg.node.dept
        self.user = self.link.broker_user
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cx-outbox")
        self.outbox: Outbox | None = None
        self.wake = asyncio.Event()
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.exchange: AbstractExchange | None = None
        self.broker_trouble: Trouble | None = None  # the last broker error, until the next success
        self.hub_trouble: Trouble | None = None  # the last hub API error, until a proof is had
        self._hub_error_recorded = False
        self._receipt_lock = asyncio.Lock()
        # set when the hub's ledger does not extend what this node saw: waiting cannot fix that, people must
        self.history_rewritten: str | None = None
        self._consumer_tag: str | None = None

    async def db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run an outbox call on the delivery's own outbox thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(*args))

    async def open(self) -> None:
        self.outbox = await self.db(Outbox, self.cfg.node.outbox)
        await self.db(self.outbox.set_state, BROKER_ERROR, None)  # what an earlier run met is history
        # a hub API error recorded by an earlier run stands until a proof is had (checkpoints may wait for it)
        self._hub_error_recorded = await self.db(self.outbox.state_value, HUB_ERROR) is not None

    @property
    def broker_error(self) -> str | None:
        """The last broker error as one line, or None while all is well."""
        return str(self.broker_trouble) if self.broker_trouble else None

    async def _broker_failed(self, exc: BaseException, doing: str) -> Trouble:
        found = broker_trouble(exc)
        if self.broker_trouble is None or self.broker_trouble.kind != found.kind or \
                self.broker_trouble.detail != found.detail:
            await self.db(self.outbox.set_state, BROKER_ERROR, {**found.to_json(), "doing": doing})
        self.broker_trouble = found
        self.metrics.broker_up.set(0)
        return found

    async def _broker_fine(self) -> None:
        if self.broker_trouble is not None:
            self.broker_trouble = None
            await self.db(self.outbox.set_state, BROKER_ERROR, None)

    async def _hub_failed(self, found: Trouble) -> None:
        if self.hub_trouble is None or self.hub_trouble.detail != found.detail:
            await self.db(self.outbox.set_state, HUB_ERROR, found.to_json())
        self.hub_trouble, self._hub_error_recorded = found, True

    async def _hub_fine(self) -> None:
        if self._hub_error_recorded:
            self.hub_trouble, self._hub_error_recorded = None, False
            await self.db(self.outbox.set_state, HUB_ERROR, None)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        if self.outbox is not None:
            await self.db(self.outbox.close)
        self._pool.shutdown(wait=True)

    # -- broker ---------------------------------------------------------------------------

    async def connect(self, stop: asyncio.Event, give_up: frozenset[str] = frozenset()) -> bool:
        """Connect (retrying with backoff while `stop` is not set); True once connected.

        A failure of a kind in `give_up` (e.g. a refused login, for `--once`) ends the attempts: False.
        """
        delay = self.cfg.delivery.retry_min_seconds
        ssl_context = transport_ssl(self.cfg)
        while not stop.is_set():
            url = self.link.broker_url
            try:
                self._reload_handover()  # a corrected handover file works without a restart
                url = self.link.broker_url
                self.connection = await transport.connect(url, ssl_context=ssl_context, name=f"cx-node-{self.dept}")
                await self._open_channel()
                # declared (passively), not just named: only a declared queue's consumer is restored on reconnect
                queue = await self.channel.get_queue(self.link.receipts_queue)
                self._consumer_tag = await queue.consume(self._on_receipt)
                await self._broker_fine()
                log.info("connected to broker", url=transport.redact(url), queue=self.link.receipts_queue)
                return True
            except Exception as exc:  # noqa: BLE001 - any connection failure: retry
                if self.connection is not None:  # opened, then the channel or queue failed: do not leave it open
                    connection, self.connection = self.connection, None
                    with contextlib.suppress(Exception):
                        await connection.close()
                found = await self._broker_failed(exc, "connect")
                log.warning("broker not usable; retrying", kind=found.kind, error=str(exc), retry_in=round(delay, 1))
                if found.kind in give_up:
                    return False
                await _sleep_or_stop(stop, delay)
                delay = _backoff(delay, self.cfg.delivery.retry_max_seconds)
        return False

    def _reload_handover(self) -> None:
        """Read the handover file again (the operator may have sent a new one); keep the last good one."""
        try:
            link = self.cfg.handover()
        except ConfigError as exc:
            log.warning("handover file not usable; using the one read before", error=str(exc))
            return
        if link is not None and link.hub_key is not None and link.hub_key.key_id == self.hub_key.key_id:
            self.link, self.user = link, link.broker_user

    async def _open_channel(self) -> None:
        assert self.connection is not None
        self.channel = await transport.confirmed_channel(self.connection, prefetch=32)
        self.exchange = await self.channel.get_exchange(self.records_exchange, ensure=False)
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
            if not (full or force or (self.outbox.oldest_pending_age() or 0.0) >= d.linger_seconds):
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
                if due:
                    await self._broker_fine()
            except Exception as exc:  # noqa: BLE001 - broker down, publish refused, …: back off and retry
                found = await self._broker_failed(exc, "publish")
                self.metrics.publish_failures.inc()
                log.warning("publish failed; retrying", kind=found.kind, error=str(exc), retry_in=round(delay, 1))
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
            return await self._alert("receipt_invalid", exc, None)
        batch = await self.db(functools.partial(self.outbox.batch, receipt.batch_id, body=False))
        if batch is None:
            # another node of the department would not get it (a queue per node); a batch pruned long ago might
            log.warning("receipt for a batch this outbox does not hold", batch_id=receipt.batch_id)
            return ReceiptVerdict(False, "unknown batch")
        if receipt.dept != self.dept or receipt.header_hash != batch["header_hash"]:
            return await self._alert("receipt_mismatch", ProtocolError(
                Reason.BAD_RECEIPT, "the receipt is for another department or another batch header"), receipt.batch_id)
        if batch["state"] == "receipted":
            return ReceiptVerdict(True, "already settled")
        try:
            verified = await self.check_checkpoint(receipt)
        except ProtocolError as exc:
            self.history_rewritten = exc.detail
            return await self._alert("inconsistent_checkpoint", exc, receipt.batch_id)
        cp = receipt.checkpoint
        counts = await self.db(self.outbox.apply_receipt, receipt.batch_id, body, receipt.accepted,
                               [(r.line, r.record_id, list(r.errors)) for r in receipt.rejected],
                               (cp.size, cp.root, cp.time, json.dumps(cp.to_json())), verified)
        for state, n in counts.items():
            if n:
                self.metrics.records_settled.labels(state).inc(n)
        self.metrics.receipts.labels("verified" if verified else "checkpoint_unverified").inc()
        self.metrics.last_receipt.set(time.time())
        log.info("receipt verified", batch_id=receipt.batch_id, **counts, ledger_size=cp.size,
                 checkpoint="verified" if verified else "not yet verified")
        return ReceiptVerdict(True)

    async def handle_refusal(self, body: bytes) -> ReceiptVerdict:
        """Verify a refusal (hub signature, this department, exactly the bytes this node sent) and act on it:
        seal the records again with the current key when the batch's key was the cause and the key has
        changed since; otherwise let them wait, refused, with an alert."""
        assert self.outbox is not None
        try:
            refusal = Refusal.parse(body, self.hub_key)
        except ProtocolError as exc:
            return await self._alert("refusal_invalid", exc, None)
        if refusal.dept != self.dept:
            return await self._alert("refusal_mismatch", ProtocolError(
                Reason.BAD_RECEIPT, f"the refusal is for department {refusal.dept}"), refusal.batch_id)
        batch = await self.db(self.outbox.refused_batch, refusal.batch_id, refusal.body_hash)
        if batch is None:
            log.info("refusal for a batch this outbox does not hold", batch_id=refusal.batch_id,
                     reason=refusal.reason)
            return ReceiptVerdict(False, "unknown batch")
        if hashlib.sha256(batch["body"]).hexdigest() != refusal.body_hash:
            # another message under this batch's id (or altered on the way) was refused, not what this node sent
            return await self._alert("refusal_mismatch", ProtocolError(
                Reason.BAD_RECEIPT, f"the hub refused other bytes than this batch's ({refusal.reason}: "
                                    f"{refusal.detail_en})"), batch["batch_id"])
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

    async def check_checkpoint(self, receipt: Receipt) -> bool:
        """The hub may only ever extend this department's ledger: check a receipt's checkpoint against what
        this node verified before. True: verified (or the first one, trusted on first use). False: not yet
        verified, because no consistency proof could be had (kept, checked again later). Raises ProtocolError
        (inconsistent_checkpoint) when a proof shows the hub's ledger does not extend what this node saw."""
        cp = receipt.checkpoint
        known = await self.db(self.outbox.checkpoint_at, cp.size)
        if known is not None and known[0] != cp.root:
            raise ProtocolError(Reason.INCONSISTENT_CHECKPOINT,
                                f"ledger size {cp.size} has root {cp.root[:16]}…, earlier {known[0][:16]}…")
        if known is not None and known[1]:
            return True
        return await self._extends(cp.size, cp.root, receipt)

    async def _extends(self, size: int, root: str, receipt: Receipt | None = None) -> bool:
        """Whether a checkpoint (size, root) is consistent with the verified ones around it (see above)."""
        below, above = await self.db(self.outbox.verified_around, size)
        if below is None and above is None:
            return True  # the first checkpoint this node sees is trusted on first use
        carried = receipt.consistency if receipt is not None and above is None else None
        if carried is not None and below is not None and carried.old_size == below[0]:
            carried.verify(bytes.fromhex(below[1]), receipt.checkpoint)  # the receipt's own proof suffices
            return True
        try:
            if above is not None:  # a late receipt: it must be a prefix of what this node verified since
                _verify(size, above[0], bytes.fromhex(root), bytes.fromhex(above[1]),
                        await self._fetch_consistency(size, above[0]))
            if below is not None:
                _verify(below[0], size, bytes.fromhex(below[1]), bytes.fromhex(root),
                        await self._fetch_consistency(below[0], size))
        except ProofUnavailable as exc:
            await self._hub_failed(exc.trouble)
            log.warning("checkpoint not yet verified; checked again later", size=size, why=exc.trouble.detail)
            return False
        await self._hub_fine()
        return True

    async def verify_pending(self) -> int:
        """Check the checkpoints kept unverified; returns how many are still unverified (raises nothing)."""
        assert self.outbox is not None
        pending = await self.db(self.outbox.unverified_checkpoints)
        for size, root, _ in pending:
            try:
                if not await self._extends(size, root):
                    break  # the hub API is still away: try again later
            except ProtocolError as exc:
                self.history_rewritten = exc.detail
                await self._alert("inconsistent_checkpoint", exc, None)
                return len(pending)
            await self.db(self.outbox.mark_verified, size)
            log.info("checkpoint verified", size=size)
        return len(await self.db(self.outbox.unverified_checkpoints))

    async def verify_loop(self, stop: asyncio.Event) -> None:
        """Retry unverified checkpoints every few seconds at first, then at most every retry_max_seconds."""
        delay = self.cfg.delivery.retry_min_seconds
        while not stop.is_set():
            await _sleep_or_stop(stop, delay)
            try:
                left = await self.verify_pending()
            except Exception as exc:  # noqa: BLE001 - checked again next time
                log.warning("checkpoint verification failed", error=str(exc))
                left = 1
            delay = _backoff(delay, self.cfg.delivery.retry_max_seconds) if left else self.cfg.delivery.retry_min_seconds

    async def _fetch_consistency(self, old: int, new: int) -> list[bytes]:
        """A consistency proof from the hub's API (served without a login: it holds only hashes)."""
        api = self.link.hub_api
        if not api:
            raise ProofUnavailable(hub_trouble(api=""))
        url = f"{api}/api/v1/departments/{self.dept}/consistency"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
                async with session.get(url, params={"old": str(old), "new": str(new)}) as resp:
                    if resp.status != 200:
                        raise ProofUnavailable(hub_trouble(status=resp.status, api=api))
                    doc = await resp.json()
            return [bytes.fromhex(h) for h in doc["proof"]]
        except ProofUnavailable:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise ProofUnavailable(hub_trouble(exc, api=api)) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ProofUnavailable(trouble("hub_api_error", f"{api}: not a consistency proof ({exc})")) from None

    async def _alert(self, kind: str, error: ProtocolError, batch_id: str | None) -> ReceiptVerdict:
        """A receipt that fails a check is an alert; its batch stays in the outbox (and is sent again)."""
        assert self.outbox is not None
        zh, en = explain(error)
        detail = f"{error.reason.value}: {en}"
        await self.db(self.outbox.alert, kind, detail, batch_id, ALERT_ZH.get(kind, "") + zh)
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
        problem = self.broker_trouble or self.hub_trouble
        body = Heartbeat.sign(self.key, dept=self.dept, node=self.cfg.node.node_id, version=__version__,
                              outbox_depth=depth, oldest_pending_seconds=age,
                              last_error=(f"{problem.kind}: {problem.detail}" if problem else None) or self.last_error(),
                              inventory=inventory, rejections=rejections, alerts=alerts)
        await self._publish(Topology.routing_key(self.dept, "heartbeat"), body, transport.HEARTBEAT,
                            f"hb-{time.time_ns()}")
        self.metrics.heartbeats.inc()


# what each alert means, in Chinese, before the protocol's explanation of the reason
ALERT_ZH = {
    "receipt_invalid": "收到的回执未通过核验（不是交换中心公钥签名的，或已被篡改）：",
    "receipt_mismatch": "回执与本前置机发送的批次不符：",
    "refusal_invalid": "收到的拒收通知未通过核验：",
    "refusal_mismatch": "拒收通知与本前置机发送的批次不符：",
    "inconsistent_checkpoint": "交换中心账本与本前置机此前核验的检查点不一致（可能被篡改），请立即联系交换中心：",
}


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
        raise ProtocolError(Reason.INCONSISTENT_CHECKPOINT, f"ledger size {new} does not extend {old}: "
                                                            f"{exc.detail}") from None


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
