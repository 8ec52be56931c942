"""Verified ingest: attribute, verify, validate, deduplicate, store, append, receipt — one transaction per batch.

Every message taken from the ingest queue ends as exactly one of: stored with its receipt; quarantined
with a row (and, when the broker vouches for the department that sent it, a signed refusal); or put back
because the store itself did not answer (`StoreUnavailable`). An exception nobody foresaw is quarantined
as `internal_error` for the one message that raised it, never retried as if the store were away.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import structlog
from sqlalchemy import bindparam, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..protocol.envelope import (
    DEFAULT_LIMITS, DEPT_ID, Batch, BatchHeader, Limits, RecordLine, content_hash, parse_batch, parse_record_line,
    sha256_hex, utc_now,
)
from ..protocol.errors import FieldError, ProtocolError, Reason, explain
from ..protocol.heartbeat import Heartbeat
from ..protocol.jsonutil import escape_bad_characters
from ..protocol.keys import SigningKey
from ..protocol.merkle import MerkleTree
from ..protocol.receipts import Consistency, Receipt, Refusal, Rejection
from ..protocol.validation import AUTHORITY_FIELDS, SchemaRegistry, china_today, default_registry
from ..transport import HEARTBEAT, Topology
from . import ledger
from .metrics import HubMetrics
from .registry import key_for, key_for_batch
from .store import (
    MAX_QUARANTINE_HEADER, Store, batches, departments, heartbeats, in_chunks, insert_rows, nodes, quarantine, record_versions, records,
    sequence_events,
)

log = structlog.get_logger("cx.hub.ingest")


@dataclass(frozen=True)
class Inbound:
    """One message from the ingest queue, with what the broker vouches for."""

    body: bytes
    routing_key: str
    user_id: str | None  # validated by RabbitMQ against the connection's user
    message_id: str | None = None
    type: str | None = None  # the AMQP type: cx.heartbeat/1, anything else is read as a batch
    redelivered: bool = False  # the broker delivered it before (the hub may have recorded it then)


@dataclass(frozen=True)
class Outcome:
    result: str  # accepted | redelivered | quarantined | heartbeat
    dept: str | None
    batch_id: str | None = None
    receipt: bytes | None = None
    reason: Reason | None = None
    detail: str = ""
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    refusal: bytes | None = None  # quarantined: the signed refusal to publish, and the department it goes to
    refuse_to: str | None = None
    node: str | None = None  # the node the answer goes to (None: every node of the department)


class StoreUnavailable(Exception):
    """The store did not answer (connection lost, disk full, database locked): keep the message, try again later."""


def store_outage(exc: BaseException) -> bool:
    """Whether an exception says the store itself is unavailable, rather than something about one message."""
    if isinstance(exc, (StoreUnavailable, sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            # PostgreSQL class 54 (program limit exceeded) is an OperationalError caused by the statement
            return not (getattr(exc.orig, "sqlstate", None) or "").startswith("54")
    return False


@dataclass
class Checked:
    """One record line after reading and validation."""

    index: int
    record: RecordLine | None
    version: str | None  # content hash, when valid
    errors: list[FieldError] = field(default_factory=list)


@dataclass
class Prepared:
    """One message after the work that needs no transaction (`Ingestor.prepare`), ready for `finish`."""

    msg: Inbound
    received: str
    batch: Batch | None = None
    tree: MerkleTree | None = None
    checked: list[Checked] | None = None
    stored: Outcome | None = None  # the batch was stored before: its receipt
    error: ProtocolError | None = None  # to be quarantined
    unforeseen: Exception | None = None  # quarantined as internal_error


class Quarantine(Exception):
    def __init__(self, error: ProtocolError, batch: Batch | None = None):
        self.error, self.batch = error, batch


class Ingestor:
    """The synchronous core of ingest; the broker consumer runs `process` in the store's thread."""

    def __init__(self, store: Store, hub_key: SigningKey, topology: Topology, *,
                 schemas: SchemaRegistry | None = None, limits: Limits = DEFAULT_LIMITS,
                 metrics: HubMetrics | None = None, today: Callable[[], Any] = china_today):
        self.store = store
        self.hub_key = hub_key
        self.topology = topology
        self.schemas = schemas or default_registry()
        self.limits = limits
        self.metrics = metrics or HubMetrics()
        self.today = today

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.metrics.stage_seconds.labels(name).observe(time.perf_counter() - start)

    def handle(self, msg: Inbound) -> Outcome:
        """Exactly one outcome for one message; raises StoreUnavailable only when the store itself is away."""
        return self.finish(self.prepare(msg))

    def prepare(self, msg: Inbound) -> Prepared:
        """The work before the transaction: read, attribute, verify, validate (writes nothing).

        The hub runs it for the next message while the store thread commits the one before; raises
        StoreUnavailable only when the store does not answer a read.
        """
        prepared = Prepared(msg, utc_now())
        if msg.type == HEARTBEAT:
            return prepared  # small and signed on its own: checked and stored whole by `finish`
        try:
            with self._stage("parse"):
                prepared.batch = parse_batch(msg.body, self.limits)
                self._attribute(prepared.batch.header, msg)
            prepared.stored = self._find_stored(prepared.batch)
            if prepared.stored is not None:
                return prepared
            with self._stage("verify"):
                with self.store.reader.connect() as conn:
                    key = key_for_batch(conn, prepared.batch.header)
                prepared.tree = prepared.batch.verify(key)
            with self._stage("validate"):
                prepared.checked = self.check_records(prepared.batch)
        except ProtocolError as exc:
            prepared.error = exc
        except Quarantine as q:
            prepared.error = q.error
        except Exception as exc:  # noqa: BLE001 - unforeseen: this message only
            if store_outage(exc):
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            prepared.unforeseen = exc
        return prepared

    def finish(self, prepared: Prepared) -> Outcome:
        """Store what `prepare` found (or quarantine it): exactly one outcome; raises only StoreUnavailable."""
        msg = prepared.msg
        decide = self.process_heartbeat if msg.type == HEARTBEAT else self._decide
        try:
            try:
                with self.store.turn.first():  # before the projector's next chunk
                    return decide(prepared)
            except Exception as exc:  # noqa: BLE001 - one message's trouble must not become the queue's
                if store_outage(exc):
                    raise
                return self._internal_error(msg, exc, prepared.batch, prepared.received)
        except Exception as exc:  # noqa: BLE001 - not even the quarantine could take it
            if store_outage(exc):
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            log.exception("message could not be quarantined; it ends unrecorded", routing_key=msg.routing_key,
                          size=len(msg.body))
            return Outcome("quarantined", None, reason=Reason.INTERNAL_ERROR, detail=f"{type(exc).__name__}: {exc}")

    def process(self, msg: Inbound) -> Outcome:
        """Decide what one inbound batch becomes. Never raises for bad input; store outages propagate."""
        return self._decide(self.prepare(msg))

    def _decide(self, prepared: Prepared) -> Outcome:
        msg, batch, received = prepared.msg, prepared.batch, prepared.received
        if prepared.unforeseen is not None:
            return self._internal_error(msg, prepared.unforeseen, batch, received)
        try:
            if prepared.error is not None:
                raise prepared.error
            if prepared.stored is not None:
                outcome = self._redelivered(batch, prepared.stored)
            else:
                with self._stage("store"):
                    outcome = self._commit(batch, prepared.tree, prepared.checked, received)
        except ProtocolError as exc:
            return self._quarantine(msg, exc, batch, received)
        except Quarantine as q:
            return self._quarantine(msg, q.error, q.batch, received)
        except Exception as exc:  # noqa: BLE001 - unforeseen: this message only
            if store_outage(exc):
                raise
            return self._internal_error(msg, exc, batch, received)
        self._count(outcome)
        return outcome

    def process_heartbeat(self, prepared: Prepared | Inbound) -> Outcome:
        """Verify a node's signed heartbeat and keep the latest one per node."""
        if isinstance(prepared, Inbound):
            prepared = Prepared(prepared, utc_now())
        msg, received = prepared.msg, prepared.received
        try:
            beat, body, sig = Heartbeat.read(msg.body)
            self._attribute_dept(beat.dept, msg)
            with self.store.reader.connect() as conn:
                key = key_for(conn, beat.dept, beat.key_id, beat.time)
            Heartbeat.verify(body, sig, key)
            values = dict(time=beat.time, received=received, key_id=beat.key_id, version=beat.version,
                          outbox_depth=beat.outbox_depth,
                          oldest_pending_seconds=None if beat.oldest_pending_seconds is None
                          else int(beat.oldest_pending_seconds),
                          last_error=(beat.last_error or None) and str(beat.last_error)[:2000],
                          inventory=json.dumps(beat.inventory, ensure_ascii=False),
                          rejections=json.dumps(beat.rejections, ensure_ascii=False),
                          alerts=json.dumps(beat.alerts, ensure_ascii=False), body=body, signature=sig)
            with self.store.writer.begin() as conn:
                updated = conn.execute(heartbeats.update().where(heartbeats.c.dept == beat.dept,
                                                                 heartbeats.c.node == beat.node).values(**values))
                if updated.rowcount == 0:
                    conn.execute(heartbeats.insert().values(dept=beat.dept, node=beat.node, **values))
        except ProtocolError as exc:
            return self._quarantine(msg, exc, None, received)
        except Exception as exc:  # noqa: BLE001 - unforeseen: this message only
            if store_outage(exc):
                raise
            return self._internal_error(msg, exc, None, received)
        self.metrics.heartbeats.labels(beat.dept).inc()
        return Outcome("heartbeat", beat.dept)

    # -- checks before the transaction ----------------------------------------------------

    def _attribute(self, header: BatchHeader, msg: Inbound) -> None:
        self._attribute_dept(header.dept, msg)

    def _attribute_dept(self, dept: str, msg: Inbound) -> None:
        """The routing key and the broker-validated user must both belong to the signer's department."""
        routed = msg.routing_key.split(".", 1)[0]
        if routed != dept:
            raise ProtocolError(Reason.DEPT_MISMATCH, f"routing key {msg.routing_key!r} is not department {dept!r}")
        if msg.user_id != self.topology.dept_user(dept):
            raise ProtocolError(Reason.USER_MISMATCH, f"published by broker user {msg.user_id!r}, "
                                                      f"not {self.topology.dept_user(dept)!r}")

    def _find_stored(self, batch: Batch) -> Outcome | None:
        """A batch already committed gets its stored receipt again (hub crashed before ack, or a resend)."""
        with self.store.reader.connect() as conn:
            row = conn.execute(select(batches.c.header_hash, batches.c.receipt, batches.c.dept, batches.c.node)
                               .where(batches.c.batch_id == batch.header.batch_id)).first()
        if row is None:
            return None
        if row.header_hash != batch.header_hash:
            raise Quarantine(ProtocolError(Reason.BATCH_ID_REUSED,
                                           f"batch id {batch.header.batch_id} was stored with another header"), batch)
        return Outcome("redelivered", row.dept, batch.header.batch_id, bytes(row.receipt), node=row.node)

    def _redelivered(self, batch: Batch, stored: Outcome) -> Outcome:
        self._event(batch.header, "redelivery", "the batch was already stored; receipt sent again")
        return stored

    def check_records(self, batch: Batch) -> list[Checked]:
        today = self.today()
        declared = batch.header.schemas
        out = []
        for index, line in enumerate(batch.lines):
            try:
                record = parse_record_line(line, self.limits)
            except ProtocolError as exc:
                out.append(Checked(index, None, None, [FieldError.from_protocol(exc)]))
                continue
            errors = self.schemas.check_record(record, today)
            if not errors and declared.get(record.type) != record.schema_version:
                errors = [FieldError("", "schema_not_declared",
                                     f"批次头未声明该记录的数据规范版本 {record.type} v{record.schema_version}",
                                     f"the batch header does not declare {record.type} v{record.schema_version}")]
            out.append(Checked(index, record, None if errors else content_hash(record), errors))
        return out

    # -- the transaction ------------------------------------------------------------------

    def _commit(self, batch: Batch, tree: MerkleTree, checked: list[Checked], received: str) -> Outcome:
        h = batch.header
        try:
            with self.store.writer.begin() as conn:
                size = conn.execute(select(departments.c.ledger_size).where(departments.c.dept == h.dept)
                                    .with_for_update()).scalar_one()
                if conn.execute(select(batches.c.batch_id).where(batches.c.batch_id == h.batch_id)).first():
                    raise _AlreadyStored()
                self._advance_chain(conn, batch, received)
                return self._store(conn, batch, tree, checked, size, received)
        except (_AlreadyStored, IntegrityError):
            # another hub worker committed the same batch between our check and our insert
            stored = self._find_stored(batch)
            if stored is None:
                raise
            return self._redelivered(batch, stored)

    def _advance_chain(self, conn: Connection, batch: Batch, received: str) -> None:
        """Check the node's sequence chain; record gaps and late fills, refuse replays and forks."""
        h = batch.header
        row = conn.execute(select(nodes).where(nodes.c.dept == h.dept, nodes.c.node == h.node)
                           .with_for_update()).first()
        if row is None:
            missing = [[1, h.seq - 1]] if h.seq > 1 else []
            if missing:
                self._event(h, "gap", f"first batch seen from this node has seq {h.seq}", conn)
            conn.execute(nodes.insert().values(dept=h.dept, node=h.node, last_seq=h.seq, last_header_hash=batch.header_hash,
                                               missing=json.dumps(missing), last_batch_at=received))
            return
        missing = json.loads(row.missing)
        last_seq, last_hash = row.last_seq, row.last_header_hash
        if h.seq == last_seq + 1:
            if h.prev != row.last_header_hash:
                raise Quarantine(ProtocolError(Reason.CHAIN_BROKEN, f"seq {h.seq} does not link to the previous header "
                                                                    f"of node {h.node}"), batch)
            last_seq, last_hash = h.seq, batch.header_hash
        elif h.seq > last_seq + 1:
            missing.append([last_seq + 1, h.seq - 1])
            self._event(h, "gap", f"sequence {last_seq + 1}..{h.seq - 1} not received", conn)
            last_seq, last_hash = h.seq, batch.header_hash
        else:
            hole = next((r for r in missing if r[0] <= h.seq <= r[1]), None)
            if hole is None:
                raise Quarantine(ProtocolError(Reason.SEQUENCE_REPLAY, f"node {h.node} already used seq {h.seq} "
                                                                       f"(last {last_seq}) for another batch"), batch)
            missing.remove(hole)
            missing.extend(r for r in ([hole[0], h.seq - 1], [h.seq + 1, hole[1]]) if r[0] <= r[1])
            self._event(h, "late", f"seq {h.seq} arrived after {last_seq}", conn)
        conn.execute(nodes.update().where(nodes.c.dept == h.dept, nodes.c.node == h.node).values(
            last_seq=last_seq, last_header_hash=last_hash, missing=json.dumps(sorted(missing)), last_batch_at=received))

    def _store(self, conn: Connection, batch: Batch, tree: MerkleTree, checked: list[Checked], size: int,
               received: str) -> Outcome:
        h = batch.header
        ids = {c.record.record_id for c in checked if c.record is not None and not c.errors}
        current = {r.record_id: r for r in in_chunks(
            conn, lambda chunk: select(records.c.record_id, records.c.version, records.c.type, records.c.status)
            .where(records.c.dept == h.dept, records.c.record_id.in_(chunk)), sorted(ids))}
        known = set(current)
        state = {rid: (r.version, r.type, r.status) for rid, r in current.items()}
        leaves = tree.levels[0]
        accepted_at = utc_now()
        accepted, rejected, duplicates = [], [], 0
        versions, new_leaves, latest = [], [], {}
        for c in checked:
            rec = c.record
            if c.errors or rec is None:
                rejected.append(Rejection(c.index, rec.record_id if rec else None, [e.to_json() for e in c.errors]))
                continue
            now = state.get(rec.record_id)
            if now is not None and now[0] == c.version:
                duplicates += 1
                continue
            problem = _conflict(rec, now)
            if problem is not None:
                rejected.append(Rejection(c.index, rec.record_id, [problem.to_json()]))
                continue
            index = size + len(new_leaves)
            new_leaves.append(leaves[c.index])
            status = "retracted" if rec.op == "retract" else "active"
            state[rec.record_id] = (c.version, rec.type, status)
            data = rec.data or {}
            source = rec.source
            versions.append((  # in _VERSION_COLUMNS order
                h.dept, rec.record_id, c.version, rec.op, rec.type, rec.schema_version, batch.lines[c.index],
                leaves[c.index], h.batch_id, c.index, index,
                next((data[f] for f in AUTHORITY_FIELDS if isinstance(data.get(f), str)), None),
                data.get("authority_uscc"), data.get("entered_by") or source.get("entered_by"), h.node, h.key_id,
                source.get("adapter"), source.get("locator"), source.get("extracted"), h.created, received,
                accepted_at,
            ))
            # in _RECORD_COLUMNS order; the last version of a record in the batch is its current one
            latest[rec.record_id] = (h.dept, rec.record_id, rec.type, c.version, status, index,
                                     data.get("subject_name"), data.get("uscc"), accepted_at)
            accepted.append(rec.record_id)

        appended = ledger.append(conn, h.dept, size, new_leaves)
        if versions:
            insert_rows(conn, record_versions, _VERSION_COLUMNS, versions)
            insert_rows(conn, records, (*_RECORD_COLUMNS, "first_accepted"),
                        [(*row, accepted_at) for rid, row in latest.items() if rid not in known])
            updates = [{"b_dept": row[0], "b_record_id": row[1], **dict(zip(_UPDATED, row[2:]))}
                       for rid, row in latest.items() if rid in known]
            if updates:
                conn.execute(_UPDATE_RECORD, updates)
        checkpoint = ledger.sign_checkpoint(conn, self.hub_key, h.dept, appended.size, appended.root, accepted_at)
        consistency = (Consistency(size, ledger.consistency_proof(conn, h.dept, size, appended.size))
                       if appended.size > size else None)
        receipt = Receipt.issue(self.hub_key, batch_id=h.batch_id, dept=h.dept, header_hash=batch.header_hash,
                                accepted=accepted, rejected=rejected, duplicates=duplicates, checkpoint=checkpoint,
                                received=received, consistency=consistency)
        receipt_bytes = receipt.to_bytes()
        conn.execute(batches.insert().values(
            batch_id=h.batch_id, dept=h.dept, node=h.node, seq=h.seq, key_id=h.key_id, header=batch.header_bytes,
            signature=batch.signature, header_hash=batch.header_hash, leaf_hashes=b"".join(leaves),
            created=h.created, received=received, accepted_at=accepted_at, record_count=h.count,
            accepted=len(accepted), rejected=len(rejected), duplicates=duplicates, ledger_size=appended.size,
            receipt=receipt_bytes,
        ))
        self.metrics.ledger_size.labels(h.dept).set(appended.size)
        return Outcome("accepted", h.dept, h.batch_id, receipt_bytes, accepted=len(accepted),
                       rejected=len(rejected), duplicates=duplicates, node=h.node)

    # -- bookkeeping ----------------------------------------------------------------------

    def _event(self, h: BatchHeader, kind: str, detail: str, conn: Connection | None = None) -> None:
        values = dict(dept=h.dept, node=h.node, seq=h.seq, kind=kind, batch_id=h.batch_id, detail=detail, at=utc_now())
        if conn is not None:
            conn.execute(sequence_events.insert().values(**values))
        else:
            with self.store.writer.begin() as own:
                own.execute(sequence_events.insert().values(**values))
        self.metrics.sequence_events.labels(h.dept, kind).inc()
        log.info("sequence event", dept=h.dept, node=h.node, seq=h.seq, kind=kind, batch_id=h.batch_id)

    def _internal_error(self, msg: Inbound, exc: BaseException, batch: Batch | None, received: str) -> Outcome:
        log.error("unforeseen error; message quarantined as internal_error", exc_info=exc,
                  batch_id=batch.header.batch_id if batch else None, routing_key=msg.routing_key, size=len(msg.body))
        return self._quarantine(msg, ProtocolError(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"[:1000]),
                                batch, received)

    def _quarantine(self, msg: Inbound, error: ProtocolError, batch: Batch | None, received: str) -> Outcome:
        """Record why a message is not stored, sign a refusal for the department that sent it, end the message.

        Never raises except for a store outage: a row the store will not take is stored reduced, and a
        reduced row it will not take either is logged, so the message still ends.
        """
        body_hash = sha256_hex(msg.body)
        dept = batch.header.dept if batch else (_safe(msg.routing_key.split(".", 1)[0], 32) or None)
        batch_id = batch.header.batch_id if batch else None
        refuse_to = self._refusal_dept(msg)
        # the node that sent it, when its header says so and is the publisher's; else every node of the department
        node = batch.header.node if batch and batch.header.dept == refuse_to else None
        if msg.redelivered:  # recorded before the hub could end it (crash, lost connection): the same outcome
            with self.store.reader.connect() as conn:
                earlier = conn.execute(select(quarantine.c.reason, quarantine.c.refusal)
                                       .where(quarantine.c.body_hash == body_hash)
                                       .order_by(quarantine.c.id.desc()).limit(1)).first()
            if earlier is not None:
                log.info("redelivered message was quarantined before", reason=earlier.reason, batch_id=batch_id)
                return Outcome("quarantined", dept, batch_id, reason=error.reason, detail=error.detail,
                               refusal=earlier.refusal and bytes(earlier.refusal), refuse_to=refuse_to, node=node)
        zh, en = explain(error)
        refusal = None
        if refuse_to is not None:
            try:
                refusal = Refusal.issue(self.hub_key, dept=refuse_to, batch_id=batch_id,
                                        header_hash=batch.header_hash if batch else None, body_hash=body_hash,
                                        reason=error.reason.value, detail_zh=zh, detail_en=en,
                                        received=received).to_bytes()
            except Exception:  # noqa: BLE001 - the row matters more than the answer
                log.exception("refusal could not be signed", batch_id=batch_id)
        row = dict(received=received, reason=error.reason.value, detail=_safe(en, 2000), detail_zh=_safe(zh, 2000),
                   routing_key=_safe(msg.routing_key, 300), user_id=_safe(msg.user_id or "", 100) or None,
                   message_id=_safe(msg.message_id or "", 100) or None, dept=dept, batch_id=batch_id,
                   header=msg.body.split(b"\n", 1)[0][:MAX_QUARANTINE_HEADER], size=len(msg.body),
                   body_hash=body_hash, refusal=refusal)
        chain_event = batch is not None and error.reason in (Reason.SEQUENCE_REPLAY, Reason.CHAIN_BROKEN,
                                                             Reason.BATCH_ID_REUSED)
        try:
            with self.store.writer.begin() as conn:
                conn.execute(quarantine.insert().values(**row))
                if chain_event:
                    self._event(batch.header, error.reason.value, error.detail, conn)
        except Exception as exc:  # noqa: BLE001
            if store_outage(exc):
                raise
            self._reduced_quarantine(row, exc)
        # labelled with the department whose broker user sent it (a claimed one could be anything)
        self.metrics.quarantined.labels(self._vouched_dept(msg) or "", error.reason.value).inc()
        self.metrics.batches.labels(dept or "", "quarantined").inc()
        log.warning("message quarantined", reason=error.reason.value, detail=row["detail"], dept=dept,
                    batch_id=batch_id, routing_key=row["routing_key"], user_id=row["user_id"],
                    refused_to=refuse_to if refusal else None)
        return Outcome("quarantined", dept, batch_id, reason=error.reason, detail=error.detail, refusal=refusal,
                       refuse_to=refuse_to, node=node)

    def _reduced_quarantine(self, row: dict[str, Any], exc: BaseException) -> None:
        """The store refused the quarantine row: keep what cannot break it, or at least say so in the log."""
        log.error("quarantine row refused by the store; storing a reduced one", error=f"{type(exc).__name__}: {exc}")
        reduced = dict(received=row["received"], reason=row["reason"], size=row["size"], body_hash=row["body_hash"],
                       detail=_safe(ascii(f"quarantine row refused by the store ({type(exc).__name__}); "
                                          f"detail: {row['detail']}"), 2000))
        try:
            with self.store.writer.begin() as conn:
                conn.execute(quarantine.insert().values(**reduced))
        except Exception as again:  # noqa: BLE001
            if store_outage(again):
                raise
            log.error("quarantine row not stored; the message ends unrecorded", error=repr(again)[:500], **{
                k: row[k] for k in ("reason", "body_hash", "size")})

    def _refusal_dept(self, msg: Inbound) -> str | None:
        """The department a refusal goes to: the one whose broker user published the batch (heartbeats get none)."""
        return None if msg.type == HEARTBEAT else self._vouched_dept(msg)

    def _vouched_dept(self, msg: Inbound) -> str | None:
        """The department whose broker user published the message, as RabbitMQ validated it."""
        dept = self.topology.dept_of_user(msg.user_id)
        return dept if dept and DEPT_ID.match(dept) else None

    def _count(self, outcome: Outcome) -> None:
        dept = outcome.dept or ""
        self.metrics.batches.labels(dept, outcome.result).inc()
        for result, n in (("accepted", outcome.accepted), ("rejected", outcome.rejected),
                          ("duplicate", outcome.duplicates)):
            if n:
                self.metrics.records.labels(dept, result).inc(n)


class _AlreadyStored(Exception):
    pass


def _safe(text: str, limit: int) -> str:
    """Text any store keeps: no U+0000 or lone surrogate (written as escapes), at most `limit` characters."""
    return escape_bad_characters(text)[:limit]


def _conflict(rec: RecordLine, now: tuple[str, str, str] | None) -> FieldError | None:
    """Why a valid record cannot become a new version of what the hub holds, if it cannot."""
    if rec.op == "retract" and now is None:
        return FieldError("", "retract_unknown", f"撤销的记录 {rec.record_id} 不存在",
                          f"cannot retract {rec.record_id}: the hub has no such record")
    if now is not None and now[1] != rec.type:
        return FieldError("", "record_type_changed", f"记录 {rec.record_id} 的类型不能从 {now[1]} 改为 {rec.type}",
                          f"record {rec.record_id} has type {now[1]}, not {rec.type}")
    return None


_VERSION_COLUMNS = (
    "dept", "record_id", "version", "op", "type", "schema_version", "line", "leaf_hash", "batch_id", "line_index",
    "ledger_index", "authority", "authority_uscc", "entered_by", "node", "key_id", "source_adapter", "source_locator",
    "extracted", "sent", "received", "accepted",
)
_RECORD_COLUMNS = ("dept", "record_id", "type", "version", "status", "ledger_index", "subject_name", "uscc", "updated")
_UPDATED = _RECORD_COLUMNS[2:]
_UPDATE_RECORD = records.update().where(
    records.c.dept == bindparam("b_dept"), records.c.record_id == bindparam("b_record_id")
).values({name: bindparam(name) for name in _UPDATED})
