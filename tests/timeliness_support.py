"""A department fed through the real Ingestor, with the hub's receipt time set by the test (hand-computed fixtures)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from cx.hub import registry
from cx.hub.ingest import Inbound, Ingestor
from cx.hub.store import Store, batches, heartbeats, record_versions
from cx.protocol.envelope import RecordLine, build_batch
from cx.protocol.heartbeat import Heartbeat
from cx.protocol.keys import SigningKey
from cx.protocol.validation import default_registry
from cx.transport import Topology
from examples import example


def at(day: str, clock: str = "10:00") -> str:
    """A UTC timestamp for a wall-clock time in Asia/Shanghai (UTC+8) on `day`."""
    from datetime import datetime, timedelta, timezone

    local = datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=timezone(timedelta(hours=8)))
    return local.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Feeder:
    """One department: enrolled with a key, sending batches through the real Ingestor."""

    def __init__(self, store: Store, dept: str, name: str | None = None, hub_key: SigningKey | None = None):
        self.store, self.dept = store, dept
        self.key = SigningKey.generate()
        self.topology = Topology(vhost="unused", user_prefix="cx-")
        registry.add_department(store, dept, name or f"部门 {dept}", "410300", self.key.public)
        self.ingestor = Ingestor(store, hub_key or SigningKey.generate(), self.topology)
        self.seq, self.prev = 0, None

    def send(self, rtype: str, records: list[tuple[str, str | None]], received: str, *,
             invalid: int = 0, changes: dict[str, Any] | None = None, reason: str = "撤销") -> str:
        """records: (record_id, event date) pairs — an event date of None retracts the record. `invalid` adds
        that many records the hub rejects (a bad credit code). The batch is stamped as received at `received`."""
        field = default_registry().get(rtype).event_date
        lines = []
        for record_id, event in records:
            if event is None:
                lines.append(RecordLine(record_id, rtype, 1, "retract", None, {"adapter": "test"}, reason).to_bytes())
            else:
                data = {**example(rtype), field: event, **(changes or {})}
                data = {k: v for k, v in data.items() if v is not None}  # a change to None drops the field
                lines.append(RecordLine(record_id, rtype, 1, "upsert", data, {"adapter": "test"}).to_bytes())
        for i in range(invalid):
            data = {**example(rtype), "uscc": "91350100M000100Y4Z"}
            lines.append(RecordLine(f"bad-{self.seq}-{i}", rtype, 1, "upsert", data, {"adapter": "test"}).to_bytes())
        self.seq += 1
        batch = build_batch(self.key, dept=self.dept, node="n1", seq=self.seq, prev=self.prev, lines=lines,
                            schemas={rtype: 1})
        self.prev = batch.header_hash
        outcome = self.ingestor.process(Inbound(batch.to_bytes(), f"{self.dept}.{rtype}",
                                                self.topology.dept_user(self.dept)))
        assert outcome.result == "accepted" and outcome.accepted + outcome.duplicates == len(records), outcome
        with self.store.writer.begin() as conn:
            conn.execute(update(record_versions).where(record_versions.c.batch_id == outcome.batch_id)
                         .values(received=received))
            conn.execute(update(batches).where(batches.c.batch_id == outcome.batch_id).values(received=received))
        return outcome.batch_id

    def beat(self, inventory: dict[str, int], received: str, *, rejections: dict[str, dict[str, int]] | None = None,
             node: str = "n1") -> None:
        body = Heartbeat.sign(self.key, dept=self.dept, node=node, version="test", outbox_depth=0,
                              oldest_pending_seconds=None, last_error=None, inventory=inventory,
                              rejections=rejections or {})
        outcome = self.ingestor.process_heartbeat(Inbound(body, f"{self.dept}.heartbeat",
                                                          self.topology.dept_user(self.dept)))
        assert outcome.result == "heartbeat", outcome
        with self.store.writer.begin() as conn:
            conn.execute(update(heartbeats).where(heartbeats.c.dept == self.dept, heartbeats.c.node == node)
                         .values(received=received))
