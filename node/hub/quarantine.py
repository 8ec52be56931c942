"""Quarantine actions from the console: release a message (process it again) or discard it, each recorded.

The quarantined message itself waits in the broker's quarantine queue, dead-lettered with the
properties RabbitMQ vouched for when the department published it (routing key, user id). Releasing
takes it from that queue and runs it through the same ingest as any batch, so a message released
after its key was enrolled is attributed and verified exactly as if it had just arrived; only then is
the queue's copy acknowledged. A message that fails again stays in the queue with a new
quarantine entry saying why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select

from .. import transport
from ..protocol.envelope import utc_now
from .config import HubConfig
from .ingest import Inbound, Ingestor
from .store import MAX_QUARANTINE_HEADER, Store, quarantine, quarantine_actions

log = structlog.get_logger("cx.hub.quarantine")
ACTIONS = ("release", "discard")


class ActionError(Exception):
    """A release or discard that cannot be carried out now, with the reason for the operator."""


@dataclass(frozen=True)
class Done:
    action: str
    result: str  # accepted | redelivered | heartbeat | quarantined | not_in_queue | discarded
    detail: str = ""


class Releaser:
    """Carries out quarantine actions for one hub process (its broker connection is opened per action)."""

    def __init__(self, cfg: HubConfig, store: Store, ingestor: Callable[[], Ingestor | None]):
        self.cfg, self.store, self.ingestor = cfg, store, ingestor
        self._lock = asyncio.Lock()  # one operator action on the queue at a time

    async def act(self, item_id: int, action: str, comment: str, actor: str) -> Done:
        if action not in ACTIONS:
            raise ActionError(f"unknown action {action!r}")
        if not comment.strip():
            raise ActionError("a comment is required 请填写说明")
        row = await asyncio.to_thread(self._row, item_id)
        if row is None:
            raise ActionError(f"no quarantined message {item_id}")
        async with self._lock:
            done = await (self._release(row) if action == "release" else self._discard(row))
        await asyncio.to_thread(self._record, item_id, done, comment.strip(), actor)
        log.info("quarantine action", item=item_id, action=action, result=done.result, actor=actor)
        return done

    def _row(self, item_id: int) -> dict[str, Any] | None:
        with self.store.reader.connect() as conn:
            row = conn.execute(select(quarantine).where(quarantine.c.id == item_id)).first()
        return dict(row._mapping) if row else None

    def _record(self, item_id: int, done: Done, comment: str, actor: str) -> None:
        with self.store.writer.begin() as conn:
            conn.execute(quarantine_actions.insert().values(
                quarantine_id=item_id, action=done.action, comment=comment[:2000], actor=actor, time=utc_now(),
                result=done.result, detail=done.detail[:2000] or None))

    async def _take(self, row: dict[str, Any], then: Callable[[Any], Any]) -> Any:
        """Find the row's message in the quarantine queue and hand it to `then` (which settles it);
        every other message taken on the way goes back. None when the message is not there."""
        connection = await transport.connect(self.cfg.hub_amqp_url(), name="cx-hub-quarantine")
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(self.cfg.topology.quarantine_queue, passive=True)
            others, result = [], None
            try:
                for _ in range(queue.declaration_result.message_count or 0):
                    message = await queue.get(no_ack=False, fail=False)
                    if message is None:
                        break
                    if _same(message, row):
                        result = await then(message)
                        break
                    others.append(message)
            finally:
                for message in others:
                    await message.nack(requeue=True)
            return result
        finally:
            await connection.close()

    async def _release(self, row: dict[str, Any]) -> Done:
        ingestor = self.ingestor()
        if ingestor is None:
            raise ActionError("the hub is not connected to the broker yet; try again shortly")

        async def process(message: Any) -> Done:
            inbound = Inbound(message.body, message.routing_key or "", message.user_id, message.message_id,
                              message.type)
            outcome = await asyncio.to_thread(ingestor.handle, inbound)
            if outcome.result == "quarantined":
                if outcome.refusal and outcome.refuse_to:  # told, as the consumer tells it
                    await self._answer(outcome.refuse_to, outcome.refusal, transport.REFUSAL, outcome.batch_id or "")
                await message.nack(requeue=True)  # kept, under the new quarantine entry
                return Done("release", "quarantined", f"{outcome.reason.value if outcome.reason else ''}: "
                                                      f"{outcome.detail}")
            if outcome.receipt:
                await self._answer(outcome.dept or "", outcome.receipt, transport.RECEIPT, outcome.batch_id or "")
            await message.ack()
            return Done("release", outcome.result, f"accepted {outcome.accepted}, rejected {outcome.rejected}, "
                                                   f"duplicates {outcome.duplicates}")

        done = await self._take(row, process)
        return done or Done("release", "not_in_queue", "the message is no longer in the quarantine queue; a node "
                                                       "without a receipt sends its batch again by itself")

    async def _answer(self, dept: str, body: bytes, message_type: str, batch_id: str) -> None:
        """A receipt or a refusal to the department, on the receipts exchange like the consumer's."""
        connection = await transport.connect(self.cfg.hub_amqp_url(), name="cx-hub-release")
        try:
            channel = await transport.confirmed_channel(connection)
            exchange = await channel.get_exchange(self.cfg.topology.receipts_exchange, ensure=False)
            await transport.publish(exchange, dept, body, message_type=message_type, message_id=batch_id)
        finally:
            await connection.close()

    async def _discard(self, row: dict[str, Any]) -> Done:
        async def drop(message: Any) -> Done:
            await message.ack()
            return Done("discard", "discarded", "removed from the quarantine queue")

        done = await self._take(row, drop)
        return done or Done("discard", "discarded", "the message was no longer in the quarantine queue")


def _same(message: Any, row: dict[str, Any]) -> bool:
    """The queued message a quarantine entry describes: same message id, routing key and first line."""
    first = message.body.split(b"\n", 1)[0][:MAX_QUARANTINE_HEADER]
    return ((message.message_id or None) == (row["message_id"] or None)
            and (message.routing_key or "")[:300] == (row["routing_key"] or "")
            and first == bytes(row["header"] or b""))
