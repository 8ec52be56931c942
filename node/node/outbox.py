"""The node's outbox (SQLite, WAL): records waiting for delivery, batches waiting for receipts, state.

Nothing leaves the outbox until the hub's signed receipt for it has been verified: records move
pending → batched → delivered / rejected / duplicate, and every step is one transaction. A batch the
hub refuses (a signed refusal: nothing of it was stored) either is sealed again with the node's current
key (batch state `resealed`, its records in the new batch) or its records wait, `refused`, for people
to fix the cause and run `cx node retry` (batch state `retried` then).

Settled records and batches are pruned after `[node] keep_settled_days`, in bounded steps beside the
delivery (`prune`); what deduplication needs stays: each record id's latest content hash (`latest`),
the dropped files taken (`units`), snapshot row hashes and reading positions. New outboxes free the
pages pruning empties (SQLite incremental auto-vacuum), so the file shrinks as well.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..protocol.envelope import utc_now

SCHEMA = """
CREATE TABLE IF NOT EXISTS positions(stream TEXT PRIMARY KEY, position TEXT, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units(unit TEXT PRIMARY KEY, stream TEXT NOT NULL, committed TEXT NOT NULL,
                                 finished INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS snapshot(stream TEXT NOT NULL, row_key TEXT NOT NULL, row_hash TEXT NOT NULL,
                                    record_id TEXT, type TEXT NOT NULL, pass INTEGER NOT NULL,
                                    PRIMARY KEY(stream, row_key));
CREATE TABLE IF NOT EXISTS passes(stream TEXT PRIMARY KEY, pass INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL, record_id TEXT NOT NULL, type TEXT NOT NULL, schema_version INTEGER NOT NULL,
    op TEXT NOT NULL, version TEXT NOT NULL, line BLOB NOT NULL, locator TEXT,
    state TEXT NOT NULL,             -- pending, batched, delivered, rejected, duplicate, refused
    batch_id TEXT, created TEXT NOT NULL, settled TEXT);
CREATE INDEX IF NOT EXISTS records_state ON records(state, id);
CREATE INDEX IF NOT EXISTS records_state_type ON records(state, type, id);
CREATE INDEX IF NOT EXISTS records_batch ON records(batch_id);
-- each record id's latest content hash (32 bytes): all deduplication needs, kept when records are pruned
CREATE TABLE IF NOT EXISTS latest(record_id TEXT PRIMARY KEY, version BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches(
    batch_id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, body BLOB NOT NULL, header_hash TEXT NOT NULL,
    records INTEGER NOT NULL, created TEXT NOT NULL,
    state TEXT NOT NULL,             -- ready, sent, receipted, refused, resealed, retried
    attempts INTEGER NOT NULL DEFAULT 0, last_sent REAL, receipt BLOB, receipted TEXT, alert TEXT,
    refusal BLOB, resealed_as TEXT);
CREATE INDEX IF NOT EXISTS batches_state ON batches(state, seq);
-- each batch's signed bytes, written once when it is sealed (`batches.body` is left empty: it held them before):
-- SQLite rewrites a whole row on UPDATE, and a batch row changes state two or three times
CREATE TABLE IF NOT EXISTS batch_bodies(batch_id TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS batch_bodies_go_with_their_batch AFTER DELETE ON batches
    BEGIN DELETE FROM batch_bodies WHERE batch_id = old.batch_id; END;
CREATE TABLE IF NOT EXISTS chain(id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, header_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints(size INTEGER PRIMARY KEY, root TEXT NOT NULL, time TEXT NOT NULL,
                                       body TEXT NOT NULL, seen TEXT NOT NULL,
                                       verified INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS rejections(
    id INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, origin TEXT NOT NULL,  -- local or hub
    locator TEXT, row_key TEXT, record_id TEXT, type TEXT, errors TEXT NOT NULL, at TEXT NOT NULL,
    batch_id TEXT, resolved TEXT,
    ref TEXT);                       -- JSON: how the source adapter finds the row again (re-reading)
CREATE INDEX IF NOT EXISTS rejections_open ON rejections(resolved, stream, row_key);
CREATE TABLE IF NOT EXISTS alerts(id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, kind TEXT NOT NULL,
                                  batch_id TEXT, detail TEXT NOT NULL, detail_zh TEXT, resolved TEXT);
CREATE TABLE IF NOT EXISTS state(key TEXT PRIMARY KEY, value TEXT, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pruned(state TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""
# columns added to tables of outboxes made by earlier versions: (table, column, declaration)
ADDED_COLUMNS = (("batches", "refusal", "BLOB"), ("batches", "resealed_as", "TEXT"),
                 ("checkpoints", "verified", "INTEGER NOT NULL DEFAULT 1"), ("rejections", "ref", "TEXT"),
                 ("alerts", "detail_zh", "TEXT"), ("alerts", "resolved", "TEXT"))
UNSETTLED = ("ready", "sent")  # batch states still waiting for the hub's answer
SETTLED = ("delivered", "duplicate", "rejected")  # record states a receipt ended; pruned after a while
FINISHED_BATCHES = ("receipted", "resealed", "retried")  # batch states whose records are settled or elsewhere
# alerts that stay open until a person resolves them (`cx node alerts --resolve`): something to look into
STANDING_ALERTS = ("receipt_invalid", "refusal_invalid", "inconsistent_checkpoint")


@dataclass(frozen=True)
class Queued:
    """A valid record ready for the outbox."""

    stream: str
    record_id: str
    type: str
    schema_version: int
    op: str
    version: str
    line: bytes
    locator: str | None


@dataclass(frozen=True)
class Rejected:
    """A row that could not become a valid record, and why."""

    stream: str
    locator: str | None
    row_key: str | None
    record_id: str | None
    type: str
    errors: list[dict[str, Any]]
    ref: Any = None  # how the source adapter finds the row again (None: it cannot)


@dataclass
class ChunkResult:
    queued: int = 0
    unchanged: int = 0
    rejected: int = 0
    retracted: int = 0


_WRITE_TURNS: dict[str, threading.Lock] = {}
_WRITE_TURNS_GUARD = threading.Lock()


def _write_turn(path: Path) -> threading.Lock:
    """The lock this process's connections to one outbox file take around their transactions.

    SQLite lets one writer in and makes the others poll (its busy handler sleeps up to 100 ms a try): the
    collector's chunk and the sender's seal or receipt, each on its own connection, left the node idle between
    them. Threads of one process hand the turn over at once; other processes still meet SQLite's lock.
    """
    with _WRITE_TURNS_GUARD:
        return _WRITE_TURNS.setdefault(os.path.realpath(path), threading.Lock())


class Outbox:
    """One connection to the outbox; open one per thread."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.turn = _write_turn(self.path)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        if self.db.execute("PRAGMA page_count").fetchone()[0] == 0:
            self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only a new file: pruned pages go back to the disk
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # an outbox commit must survive power loss
        self.db.execute("PRAGMA busy_timeout=30000")
        if self._latest_from_before():
            self._convert_latest()
        self.db.executescript(SCHEMA)
        if self._missing_columns():
            with self.tx():  # under the write lock (and looked at again): several processes may open it at once
                for table, column, declaration in self._missing_columns():
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        if self._bodies_in_batches():
            with self.tx():  # an outbox of an earlier version: its batches' bytes move to batch_bodies
                self.db.execute("INSERT OR IGNORE INTO batch_bodies(batch_id, body) "
                                "SELECT batch_id, body FROM batches WHERE length(body) > 0")
                self.db.execute("UPDATE batches SET body = x'' WHERE length(body) > 0")

    def _bodies_in_batches(self) -> bool:
        return self.db.execute("SELECT 1 FROM batches WHERE length(body) > 0 LIMIT 1").fetchone() is not None

    def _latest_from_before(self) -> bool:
        """An outbox of an earlier version: `latest` kept hex versions and the type, with a second index."""
        return "type" in {row[1] for row in self.db.execute("PRAGMA table_info(latest)")}

    def _convert_latest(self) -> None:
        """Into the compact form (32-byte versions, no rowid): about 60 bytes per record id instead of 145."""
        with self.tx() as db:
            if not self._latest_from_before():
                return  # another process converted it meanwhile
            db.execute("ALTER TABLE latest RENAME TO latest_before")
            db.execute("CREATE TABLE latest(record_id TEXT PRIMARY KEY, version BLOB NOT NULL) WITHOUT ROWID")
            rows = db.execute("SELECT record_id, version FROM latest_before")
            while part := rows.fetchmany(10000):
                db.executemany("INSERT INTO latest(record_id, version) VALUES (?, ?)",
                               [(rid, bytes.fromhex(version)) for rid, version in part])
            db.execute("DROP TABLE latest_before")

    def _missing_columns(self) -> list[tuple[str, str, str]]:
        return [(table, column, declaration) for table, column, declaration in ADDED_COLUMNS
                if column not in {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}]

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self.turn:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # -- reading side ---------------------------------------------------------------------

    def position(self, stream: str) -> Any:
        row = self.db.execute("SELECT position FROM positions WHERE stream = ?", (stream,)).fetchone()
        return json.loads(row[0]) if row and row[0] is not None else None

    def unit_state(self, unit: str) -> int | None:
        """None: never committed; 0: committed, not finished (moved); 1: finished."""
        row = self.db.execute("SELECT finished FROM units WHERE unit = ?", (unit,)).fetchone()
        return row[0] if row else None

    def finish_unit(self, unit: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE units SET finished = 1 WHERE unit = ?", (unit,))

    def snapshot_pass(self, stream: str) -> int:
        row = self.db.execute("SELECT pass FROM passes WHERE stream = ?", (stream,)).fetchone()
        return row[0] if row else 0

    def snapshot_hashes(self, stream: str, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            part = keys[start:start + 500]
            q = f"SELECT row_key, row_hash FROM snapshot WHERE stream = ? AND row_key IN ({','.join('?' * len(part))})"
            found.update(self.db.execute(q, (stream, *part)).fetchall())
        return found

    def latest_versions(self, record_ids: Sequence[str]) -> dict[str, str]:
        """record id -> its latest content hash (hex), for those this outbox has seen."""
        found: dict[str, str] = {}
        for start in range(0, len(record_ids), 500):
            part = record_ids[start:start + 500]
            q = f"SELECT record_id, version FROM latest WHERE record_id IN ({','.join('?' * len(part))})"
            found.update((rid, version.hex()) for rid, version in self.db.execute(q, part))
        return found

    def commit_chunk(
        self,
        stream: str,
        queued: Sequence[Queued],
        rejected: Sequence[Rejected],
        *,
        valid_keys: Iterable[str] = (),
        position: Any = None,
        set_position: bool = False,
        unit: str | None = None,
        snapshot: Sequence[tuple[str, str, str | None, str]] = (),  # (row_key, row_hash, record_id, type)
        snapshot_pass: int | None = None,
        deletions: Sequence[Queued] = (),
    ) -> ChunkResult:
        """Store one chunk's outcome and the reading position, atomically."""
        now = utc_now()
        result = ChunkResult(rejected=len(rejected))
        with self.tx() as db:
            known = self.latest_versions([q.record_id for q in queued])
            fresh = []
            for q in queued:
                if known.get(q.record_id) == q.version:
                    result.unchanged += 1
                    continue
                known[q.record_id] = q.version
                fresh.append(q)
            queued_now = (*fresh, *deletions)
            db.executemany("INSERT INTO records(stream, record_id, type, schema_version, op, version, line, locator, "
                           "state, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                           [(q.stream, q.record_id, q.type, q.schema_version, q.op, q.version, q.line, q.locator, now)
                            for q in queued_now])
            db.executemany("INSERT INTO latest(record_id, version) VALUES (?, ?) ON CONFLICT(record_id) "
                           "DO UPDATE SET version = excluded.version",
                           [(q.record_id, bytes.fromhex(q.version)) for q in queued_now])
            result.queued = len(fresh)
            result.retracted = len(deletions)
            keys = list(valid_keys)
            # rows valid now resolve what was said about them before; with nothing open (the usual case) there is
            # nothing to look up, row by row
            if keys and db.execute("SELECT 1 FROM rejections WHERE resolved IS NULL AND origin = 'local' AND "
                                   "stream = ? LIMIT 1", (stream,)).fetchone():
                db.executemany("UPDATE rejections SET resolved = ? WHERE resolved IS NULL AND origin = 'local' "
                               "AND stream = ? AND row_key = ?", [(now, stream, k) for k in keys])
            for r in rejected:
                db.execute("UPDATE rejections SET resolved = ? WHERE resolved IS NULL AND origin = 'local' "
                           "AND stream = ? AND row_key = ?", (now, stream, r.row_key))
                db.execute("INSERT INTO rejections(stream, origin, locator, row_key, record_id, type, errors, at, ref) "
                           "VALUES (?, 'local', ?, ?, ?, ?, ?, ?, ?)",
                           (stream, r.locator, r.row_key, r.record_id, r.type,
                            json.dumps(r.errors, ensure_ascii=False), now,
                            None if r.ref is None else json.dumps(r.ref, ensure_ascii=False)))
            if snapshot:
                db.executemany("INSERT INTO snapshot(stream, row_key, row_hash, record_id, type, pass) "
                               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(stream, row_key) DO UPDATE SET "
                               "row_hash = excluded.row_hash, record_id = COALESCE(excluded.record_id, snapshot.record_id), "
                               "pass = excluded.pass",
                               [(stream, k, h, rid, t, snapshot_pass) for k, h, rid, t in snapshot])
            if set_position:
                db.execute("INSERT INTO positions(stream, position, updated) VALUES (?, ?, ?) ON CONFLICT(stream) "
                           "DO UPDATE SET position = excluded.position, updated = excluded.updated",
                           (stream, json.dumps(position), now))
            if unit is not None:
                db.execute("INSERT OR IGNORE INTO units(unit, stream, committed) VALUES (?, ?, ?)", (unit, stream, now))
        return result

    def open_local_rejections(self, stream: str) -> list[tuple[str | None, Any]]:
        """Rows of a stream rejected here and not resolved: (row_key, the adapter's reference or None)."""
        return [(key, None if ref is None else json.loads(ref)) for key, ref in self.db.execute(
            "SELECT row_key, ref FROM rejections WHERE resolved IS NULL AND origin = 'local' AND stream = ? "
            "ORDER BY id", (stream,))]

    def resolve_rejections(self, stream: str, keys: Sequence[str | None]) -> int:
        """Rows no longer at the source: nothing is left to fix. Returns how many were open."""
        now = utc_now()
        with self.tx() as db:
            return sum(db.execute("UPDATE rejections SET resolved = ? WHERE resolved IS NULL AND origin = 'local' "
                                  "AND stream = ? AND row_key = ?", (now, stream, k)).rowcount for k in keys)

    def touch_snapshot(self, stream: str, keys: Sequence[str], snapshot_pass: int) -> None:
        """Mark unchanged rows as seen in this pass (they are not deleted)."""
        with self.tx() as db:
            db.executemany("UPDATE snapshot SET pass = ? WHERE stream = ? AND row_key = ?",
                           [(snapshot_pass, stream, k) for k in keys])

    def snapshot_deleted(self, stream: str, snapshot_pass: int) -> list[tuple[str, str | None, str]]:
        """Rows not seen in the pass that just completed: (row_key, record_id, type)."""
        return self.db.execute("SELECT row_key, record_id, type FROM snapshot WHERE stream = ? AND pass < ?",
                               (stream, snapshot_pass)).fetchall()

    def end_snapshot_pass(self, stream: str, snapshot_pass: int, deleted_keys: Sequence[str]) -> None:
        with self.tx() as db:
            db.executemany("DELETE FROM snapshot WHERE stream = ? AND row_key = ?", [(stream, k) for k in deleted_keys])
            db.execute("INSERT INTO passes(stream, pass) VALUES (?, ?) ON CONFLICT(stream) DO UPDATE SET pass = "
                       "excluded.pass", (stream, snapshot_pass))

    def latest_version(self, record_id: str) -> str | None:
        """The record id's latest content hash (hex), if this outbox ever queued the record."""
        row = self.db.execute("SELECT version FROM latest WHERE record_id = ?", (record_id,)).fetchone()
        return row[0].hex() if row else None

    # -- sending side ---------------------------------------------------------------------

    def pending(self, max_records: int, max_bytes: int) -> list[tuple[int, str, int, bytes]]:
        """The oldest pending records of one record type that fit one batch: (id, type, schema_version, line).

        A batch holds one record type, so it travels under the routing key <dept>.<record type>.
        """
        first = self.db.execute("SELECT type FROM records WHERE state = 'pending' ORDER BY id LIMIT 1").fetchone()
        if first is None:
            return []
        out, size = [], 0
        for rid, type_, version, line in self.db.execute(
                "SELECT id, type, schema_version, line FROM records WHERE state = 'pending' AND type = ? "
                "ORDER BY id LIMIT ?", (first[0], max_records)):
            if out and size + len(line) + 1 > max_bytes:
                break
            out.append((rid, type_, version, line))
            size += len(line) + 1
        return out

    def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest pending record was committed (None: nothing pending).

        The oldest is the lowest id: ids and commit times rise together. One index step, where MIN(created)
        read every pending row (a scan as long as the backlog, at every sealing).
        """
        row = self.db.execute("SELECT created FROM records WHERE state = 'pending' ORDER BY id LIMIT 1").fetchone()
        return _age(row[0]) if row else None

    def chain(self) -> tuple[int, str | None]:
        row = self.db.execute("SELECT seq, header_hash FROM chain WHERE id = 1").fetchone()
        return (row[0], row[1]) if row else (0, None)

    def seal(self, record_ids: Sequence[int], build: Any) -> tuple[str, bytes]:
        """Build (sign) the next batch of the node's chain from these pending records and store it, atomically.

        `build(seq, prev)` returns a protocol Batch. Returns (batch_id, bytes).
        """
        with self.tx() as db:
            return self._seal(db, record_ids, build, "pending")

    def _seal(self, db: sqlite3.Connection, record_ids: Sequence[int], build: Any, from_state: str) -> tuple[str, bytes]:
        row = db.execute("SELECT seq, header_hash FROM chain WHERE id = 1").fetchone()
        seq, prev = (row[0], row[1]) if row else (0, None)
        batch = build(seq + 1, prev)
        body = batch.to_bytes()
        db.execute("INSERT INTO batches(batch_id, seq, body, header_hash, records, created, state) "
                   "VALUES (?, ?, x'', ?, ?, ?, 'ready')",
                   (batch.header.batch_id, seq + 1, batch.header_hash, len(record_ids), utc_now()))
        db.execute("INSERT INTO batch_bodies(batch_id, body) VALUES (?, ?)", (batch.header.batch_id, body))
        db.executemany("UPDATE records SET state = 'batched', batch_id = ?, settled = NULL WHERE id = ? AND state = ?",
                       [(batch.header.batch_id, i, from_state) for i in record_ids])
        db.execute("INSERT INTO chain(id, seq, header_hash) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                   "seq = excluded.seq, header_hash = excluded.header_hash", (seq + 1, batch.header_hash))
        return batch.header.batch_id, body

    # -- refusals -------------------------------------------------------------------------

    def refused_batch(self, batch_id: str | None, body_hash: str) -> dict[str, Any] | None:
        """The batch a refusal answers: by its id, or (when the hub could not read the header) by its bytes."""
        if batch_id is not None:
            return self.batch(batch_id)
        for found_id, body in self.db.execute(
                f"SELECT b.batch_id, bb.body FROM batches b JOIN batch_bodies bb ON bb.batch_id = b.batch_id "
                f"WHERE b.state IN {UNSETTLED} ORDER BY b.seq").fetchall():
            if hashlib.sha256(body).hexdigest() == body_hash:
                return self.batch(found_id)
        return None

    def batch_lines(self, batch_id: str) -> list[tuple[int, str, int, bytes]]:
        """A batch's records as `pending` gives them: (id, type, schema_version, line)."""
        return self.db.execute("SELECT id, type, schema_version, line FROM records WHERE batch_id = ? ORDER BY id",
                               (batch_id,)).fetchall()

    def reseal(self, batch_id: str, refusal: bytes, detail: str, build: Any) -> tuple[str, bytes]:
        """Seal a refused batch's records again as a new batch (`build(seq, prev)` signs it with the current key)."""
        with self.tx() as db:
            state = db.execute("SELECT state FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()[0]
            members = [r[0] for r in self.batch_lines(batch_id)]
            new_id, body = self._seal(db, members, build, "refused" if state == "refused" else "batched")
            db.execute("UPDATE batches SET state = 'resealed', refusal = ?, resealed_as = ?, alert = ? "
                       "WHERE batch_id = ?", (refusal, new_id, detail, batch_id))
            db.execute("UPDATE rejections SET resolved = ? WHERE resolved IS NULL AND batch_id = ?",
                       (utc_now(), batch_id))
            _resolve_batch_alerts(db, [batch_id])
        return new_id, body

    def refuse(self, batch_id: str, refusal: bytes, reason: str, message_zh: str, message_en: str) -> int:
        """The hub will never accept this batch as it is: its records wait, visibly, with the hub's reason."""
        now = utc_now()
        error = json.dumps([{"path": "", "rule": reason, "message_zh": f"批次被交换中心拒收：{message_zh}",
                             "message_en": f"batch refused by the hub: {message_en}", "value": None}],
                           ensure_ascii=False)
        members = self.batch_records(batch_id)
        with self.tx() as db:
            db.execute("UPDATE batches SET state = 'refused', refusal = ?, alert = ? WHERE batch_id = ?",
                       (refusal, f"{reason}: {message_en}", batch_id))
            db.execute("UPDATE records SET state = 'refused', settled = ? WHERE batch_id = ?", (now, batch_id))
            db.executemany("INSERT INTO rejections(stream, origin, locator, record_id, type, errors, at, batch_id) "
                           "VALUES (?, 'hub', ?, ?, NULL, ?, ?, ?)",
                           [(stream, locator, record_id, error, now, batch_id)
                            for _, record_id, stream, locator in members])
            db.execute("INSERT INTO alerts(at, kind, batch_id, detail, detail_zh) VALUES (?, 'batch_refused', ?, ?, ?)",
                       (now, batch_id, f"{reason}: {message_en}", f"批次被交换中心拒收（{reason}）：{message_zh}"))
        return len(members)

    def refused_batches(self) -> list[dict[str, Any]]:
        """Batches the hub refused whose records still wait: batch_id, seq, records, alert, body, refusal."""
        cur = self.db.execute("SELECT b.batch_id, b.seq, b.records, b.alert, bb.body, b.refusal FROM batches b "
                              "JOIN batch_bodies bb ON bb.batch_id = b.batch_id WHERE b.state = 'refused' ORDER BY b.seq")
        names = [d[0] for d in cur.description]
        out = [dict(zip(names, row)) for row in cur.fetchall()]
        for batch in out:  # the hub's reason in Chinese, from the refusal it signed
            batch["alert_zh"] = json.loads(batch["refusal"].split(b"\n", 1)[0]).get("detail_zh") if batch["refusal"] else None
        return out

    def retry_refused(self) -> tuple[int, int]:
        """People fixed the cause: refused records go back to pending (sealed anew). Returns (batches, records)."""
        now = utc_now()
        with self.tx() as db:
            ids = [r[0] for r in db.execute("SELECT batch_id FROM batches WHERE state = 'refused'").fetchall()]
            moved = 0
            for batch_id in ids:
                moved += db.execute("UPDATE records SET state = 'pending', batch_id = NULL, settled = NULL "
                                    "WHERE batch_id = ? AND state = 'refused'", (batch_id,)).rowcount
                db.execute("UPDATE rejections SET resolved = ? WHERE resolved IS NULL AND batch_id = ?", (now, batch_id))
            db.executemany("UPDATE batches SET state = 'retried' WHERE batch_id = ?", [(b,) for b in ids])
            _resolve_batch_alerts(db, ids)
        return len(ids), moved

    def due(self, receipt_timeout: float, limit: int) -> list[tuple[str, bytes, int]]:
        """Batches to publish now: never sent, or sent and unreceipted past the timeout. (id, body, attempts)"""
        cutoff = time.time() - receipt_timeout
        return self.db.execute(
            "SELECT b.batch_id, bb.body, b.attempts FROM batches b JOIN batch_bodies bb ON bb.batch_id = b.batch_id "
            "WHERE b.state = 'ready' OR (b.state = 'sent' AND b.last_sent < ?) ORDER BY b.seq LIMIT ?",
            (cutoff, limit)).fetchall()

    def in_flight(self, receipt_timeout: float) -> int:
        cutoff = time.time() - receipt_timeout
        return self.db.execute("SELECT COUNT(*) FROM batches WHERE state = 'sent' AND last_sent >= ?",
                               (cutoff,)).fetchone()[0]

    def mark_sent(self, batch_id: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE batches SET state = 'sent', attempts = attempts + 1, last_sent = ? "
                       f"WHERE batch_id = ? AND state IN {UNSETTLED}", (time.time(), batch_id))

    def batch(self, batch_id: str, *, body: bool = True) -> dict[str, Any] | None:
        """A batch's row; with its signed bytes under "body" unless `body` is false (a receipt needs none)."""
        cur = self.db.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,))
        row = cur.fetchone()
        if row is None:
            return None
        found = dict(zip([d[0] for d in cur.description], row))
        del found["body"]  # empty: the bytes are in batch_bodies
        if body:
            stored = self.db.execute("SELECT body FROM batch_bodies WHERE batch_id = ?", (batch_id,)).fetchone()
            found["body"] = stored[0] if stored else b""
        return found

    def batch_records(self, batch_id: str) -> list[tuple[int, str, str, str | None]]:
        return self.db.execute("SELECT id, record_id, stream, locator FROM records WHERE batch_id = ? ORDER BY id",
                               (batch_id,)).fetchall()

    def apply_receipt(self, batch_id: str, receipt_bytes: bytes, accepted: Iterable[str],
                      rejected: Sequence[tuple[int, str | None, list[dict[str, Any]]]],
                      checkpoint: tuple[int, str, str, str] | None, verified: bool = True) -> dict[str, int]:
        """Settle a batch's records from a verified receipt; store the checkpoint it carried.

        `verified` says whether the checkpoint was shown to extend the ledger this node saw before; one that
        could not be checked yet (no consistency proof to be had) is kept and checked later (`verify_pending`).
        """
        now = utc_now()
        members = self.batch_records(batch_id)
        by_line = {i: m for i, m in enumerate(members)}
        rejected_ids = {by_line[line][0] for line, _, _ in rejected if line in by_line}
        accepted_set = set(accepted)
        counts = {"delivered": 0, "rejected": 0, "duplicate": 0}
        settled = []
        for row_id, record_id, _, _ in members:
            state = "rejected" if row_id in rejected_ids else "delivered" if record_id in accepted_set else "duplicate"
            counts[state] += 1
            settled.append((state, now, row_id))
        with self.tx() as db:
            db.executemany("UPDATE records SET state = ?, settled = ? WHERE id = ?", settled)
            # a batch refused before and receipted now (the hub's cause was fixed): its refusal is history
            db.execute("UPDATE rejections SET resolved = ? WHERE resolved IS NULL AND batch_id = ?", (now, batch_id))
            for line, record_id, errors in rejected:
                member = by_line.get(line)
                db.execute("INSERT INTO rejections(stream, origin, locator, record_id, type, errors, at, batch_id) "
                           "VALUES (?, 'hub', ?, ?, NULL, ?, ?, ?)",
                           (member[2] if member else "", member[3] if member else None, record_id,
                            json.dumps(errors, ensure_ascii=False), now, batch_id))
            db.execute("UPDATE batches SET state = 'receipted', receipt = ?, receipted = ?, alert = NULL "
                       "WHERE batch_id = ?", (receipt_bytes, now, batch_id))
            _resolve_batch_alerts(db, [batch_id])
            if checkpoint is not None:
                size, root, cp_time, body = checkpoint
                db.execute("INSERT OR IGNORE INTO checkpoints(size, root, time, body, seen, verified) "
                           "VALUES (?, ?, ?, ?, ?, ?)", (size, root, cp_time, body, now, int(verified)))
        return counts

    def checkpoint_at(self, size: int) -> tuple[str, bool] | None:
        """(root, verified) of the checkpoint of this ledger size, if this node has seen it."""
        row = self.db.execute("SELECT root, verified FROM checkpoints WHERE size = ?", (size,)).fetchone()
        return (row[0], bool(row[1])) if row else None

    def last_checkpoint(self) -> tuple[int, str] | None:
        """The largest checkpoint this node verified (or trusted first): what the hub must extend."""
        row = self.db.execute("SELECT size, root FROM checkpoints WHERE verified = 1 ORDER BY size DESC "
                              "LIMIT 1").fetchone()
        return (row[0], row[1]) if row else None

    def verified_around(self, size: int) -> tuple[tuple[int, str] | None, tuple[int, str] | None]:
        """The nearest verified checkpoints below and above a ledger size: (size, root) or None each."""
        below = self.db.execute("SELECT size, root FROM checkpoints WHERE verified = 1 AND size < ? ORDER BY size "
                                "DESC LIMIT 1", (size,)).fetchone()
        above = self.db.execute("SELECT size, root FROM checkpoints WHERE verified = 1 AND size > ? ORDER BY size "
                                "LIMIT 1", (size,)).fetchone()
        return (tuple(below) if below else None), (tuple(above) if above else None)

    def unverified_checkpoints(self) -> list[tuple[int, str, str]]:
        """Checkpoints not yet shown to extend what this node saw: (size, root, seen), oldest first."""
        return [tuple(r) for r in self.db.execute(
            "SELECT size, root, seen FROM checkpoints WHERE verified = 0 ORDER BY size")]

    def mark_verified(self, size: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE checkpoints SET verified = 1 WHERE size = ?", (size,))

    def alert(self, kind: str, detail: str, batch_id: str | None = None, detail_zh: str | None = None) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO alerts(at, kind, batch_id, detail, detail_zh) VALUES (?, ?, ?, ?, ?)",
                       (utc_now(), kind, batch_id, detail, detail_zh))
            if batch_id:
                db.execute("UPDATE batches SET alert = ? WHERE batch_id = ?", (f"{kind}: {detail}", batch_id))

    def resolve_alerts(self, ids: Sequence[int] | None = None) -> int:
        """People looked into these open alerts (all when `ids` is None); returns how many were open."""
        now = utc_now()
        with self.tx() as db:
            if ids is None:
                return db.execute("UPDATE alerts SET resolved = ? WHERE resolved IS NULL", (now,)).rowcount
            return sum(db.execute("UPDATE alerts SET resolved = ? WHERE resolved IS NULL AND id = ?",
                                  (now, i)).rowcount for i in ids)

    # -- state: what the node last met, for `cx node status` in another process -------------

    def set_state(self, key: str, value: Any) -> None:
        """Remember a JSON value under `key` (None forgets it)."""
        with self.tx() as db:
            if value is None:
                db.execute("DELETE FROM state WHERE key = ?", (key,))
            else:
                db.execute("INSERT INTO state(key, value, at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                           "value = excluded.value, at = excluded.at",
                           (key, json.dumps(value, ensure_ascii=False), utc_now()))

    def state_value(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    # -- pruning --------------------------------------------------------------------------

    def prune(self, before: str, limit: int = 2000) -> int:
        """Delete at most about `limit` rows settled before `before` (a UTC timestamp); returns how many.

        Only what a receipt settled goes: delivered, duplicate and hub-rejected records, batches whose
        records are all gone, checkpoints older than the newest verified one, resolved rejections and
        resolved alerts. Pending, batched and refused records, unsettled batches and the `latest` versions
        (deduplication) are never touched. Each call is one short transaction: call it again until it
        returns less than `limit`.
        """
        deleted = 0
        with self.tx() as db:
            for state in SETTLED:
                ids = [r[0] for r in db.execute(
                    "SELECT id FROM records WHERE state = ? AND settled < ? ORDER BY id LIMIT ?",
                    (state, before, limit - deleted))]
                if ids:
                    db.executemany("DELETE FROM records WHERE id = ?", [(i,) for i in ids])
                    db.execute("INSERT INTO pruned(state, n) VALUES (?, ?) ON CONFLICT(state) DO UPDATE SET "
                               "n = n + excluded.n", (state, len(ids)))
                    deleted += len(ids)
                if deleted >= limit:
                    return deleted
            small = max(1, limit // 10)
            deleted += db.execute(
                f"DELETE FROM batches WHERE batch_id IN (SELECT b.batch_id FROM batches b WHERE b.state IN "
                f"{FINISHED_BATCHES} AND COALESCE(b.receipted, b.created) < ? AND NOT EXISTS (SELECT 1 FROM records r "
                f"WHERE r.batch_id = b.batch_id) LIMIT ?)", (before, small)).rowcount
            deleted += db.execute(
                "DELETE FROM checkpoints WHERE size IN (SELECT size FROM checkpoints WHERE verified = 1 AND seen < ? "
                "AND size < (SELECT MAX(size) FROM checkpoints WHERE verified = 1) LIMIT ?)", (before, small)).rowcount
            for table in ("rejections", "alerts"):
                deleted += db.execute(
                    f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE resolved IS NOT NULL AND "
                    f"resolved < ? LIMIT ?)", (before, small)).rowcount
        return deleted

    def release_space(self, pages: int = 2048) -> int:
        """Give up to `pages` free pages back to the file system (incremental auto-vacuum outboxes only)."""
        if self.db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            return 0
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        if free:  # run to completion: stepped once, as execute() would, it frees a single page
            self.db.executescript(f"PRAGMA incremental_vacuum({min(free, int(pages))});")
        return free - self.db.execute("PRAGMA freelist_count").fetchone()[0]

    def size(self) -> dict[str, int]:
        """The outbox file's size in bytes and how much of it is free pages (reused before the file grows)."""
        page = self.db.execute("PRAGMA page_size").fetchone()[0]
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        wal = self.path.with_name(self.path.name + "-wal")
        return {"bytes": page * pages, "free_bytes": page * free, "wal_bytes": wal.stat().st_size if wal.exists() else 0}

    # -- status ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        out = dict(self.db.execute("SELECT state, COUNT(*) FROM records GROUP BY state").fetchall())
        for state, n in self.db.execute("SELECT state, n FROM pruned"):  # settled and pruned since
            out[state] = out.get(state, 0) + n
        out["batches_unreceipted"] = self.db.execute(
            f"SELECT COUNT(*) FROM batches WHERE state IN {UNSETTLED}").fetchone()[0]
        out["batches_refused"] = self.db.execute(
            "SELECT COUNT(*) FROM batches WHERE state = 'refused'").fetchone()[0]
        out["rejections_open"] = self.db.execute(
            "SELECT COUNT(*) FROM rejections WHERE resolved IS NULL").fetchone()[0]
        out["rejections_open_local"] = self.db.execute(
            "SELECT COUNT(*) FROM rejections WHERE resolved IS NULL AND origin = 'local'").fetchone()[0]
        out["alerts"] = self.db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
        out["alerts_open"] = self.db.execute("SELECT COUNT(*) FROM alerts WHERE resolved IS NULL").fetchone()[0]
        out["checkpoints_unverified"] = self.db.execute(
            "SELECT COUNT(*) FROM checkpoints WHERE verified = 0").fetchone()[0]
        return out

    def health(self) -> dict[str, Any]:
        """What /healthz reports, read in one go: counts, refused batches, open alerts, unanswered batches."""
        counts = self.counts()
        return {"counts": counts, "refused": self.refused_batches(), "alerts": self.alerts(20, open_only=True),
                "checkpoints_unverified": counts["checkpoints_unverified"], "batches_unanswered": self.unanswered()}

    def unanswered(self) -> int:
        """Batches sent more than once without a receipt: a whole receipt timeout passed in silence."""
        return self.db.execute("SELECT COUNT(*) FROM batches WHERE state = 'sent' AND attempts >= 2").fetchone()[0]

    def waiting(self) -> tuple[int, int]:
        """(records not yet settled, batches sent or ready without a receipt): index lookups, no scan of the
        settled records that `counts` walks (what `cx node run --once` polls while it drains)."""
        return self.depth(), self.db.execute(f"SELECT COUNT(*) FROM batches WHERE state IN {UNSETTLED}").fetchone()[0]

    def depth(self) -> int:
        """Records not yet settled by a receipt."""
        return self.db.execute("SELECT COUNT(*) FROM records WHERE state IN ('pending', 'batched')").fetchone()[0]

    def last_receipt(self) -> tuple[str, str] | None:
        row = self.db.execute("SELECT batch_id, receipted FROM batches WHERE state = 'receipted' "
                              "ORDER BY receipted DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else None

    def rejections(self, open_only: bool = True, limit: int = 1000) -> list[dict[str, Any]]:
        q = "SELECT * FROM rejections" + (" WHERE resolved IS NULL" if open_only else "") + " ORDER BY id DESC LIMIT ?"
        cur = self.db.execute(q, (limit,))
        names = [d[0] for d in cur.description]
        out = []
        for row in cur.fetchall():
            item = dict(zip(names, row))
            item["errors"] = json.loads(item["errors"])
            out.append(item)
        return out

    def rejection_summary(self) -> dict[str, dict[str, int]]:
        """Open rejections made here at the department: record type -> rule -> rows (for the heartbeat)."""
        out: dict[str, dict[str, int]] = {}
        for rtype, errors in self.db.execute(
                "SELECT type, errors FROM rejections WHERE resolved IS NULL AND origin = 'local'"):
            rules = out.setdefault(rtype or "unknown", {})
            for rule in {e.get("rule") or "unknown" for e in json.loads(errors)}:
                rules[rule] = rules.get(rule, 0) + 1
        return out

    def alert_summary(self) -> dict[str, int]:
        """Open alerts: kind -> count (for the heartbeat)."""
        return dict(self.db.execute("SELECT kind, COUNT(*) FROM alerts WHERE resolved IS NULL GROUP BY kind"))

    def alerts(self, limit: int = 50, open_only: bool = False) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM alerts" + (" WHERE resolved IS NULL" if open_only else "")
                              + " ORDER BY id DESC LIMIT ?", (limit,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def _resolve_batch_alerts(db: sqlite3.Connection, batch_ids: Sequence[str]) -> None:
    """A batch settled (receipted, sealed again, sent again): what was alarming about it is over."""
    db.executemany(f"UPDATE alerts SET resolved = ? WHERE resolved IS NULL AND batch_id = ? AND kind NOT IN "
                   f"{STANDING_ALERTS}", [(utc_now(), b) for b in batch_ids])


def _age(stamp: str) -> float:
    from ..protocol.envelope import parse_time

    return max(0.0, time.time() - parse_time(stamp).timestamp())
