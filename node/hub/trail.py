"""The access trail (留痕): who saw or did what, kept as an append-only Merkle log with signed checkpoints.

Every entry is one JSON line; its leaf hash goes into the log named `ledger.TRAIL_LOG`, kept by the
same code as the departments' ledgers. Entries are buffered in memory and appended in one
transaction with one signed checkpoint per flush (every `trail_flush_seconds`, and at shutdown), so
a page view does not cost the store's single SQLite writer a transaction and a signature.

An exported segment (a run of entries, the range proof and a checkpoint) is checked offline with
the hub's public key: `cx verify-trail`. An entry removed or edited no longer leads to the signed root.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from sqlalchemy import func, select, text

from ..protocol import jsonutil, merkle
from ..protocol.envelope import utc_now
from ..protocol.errors import ProtocolError, Reason
from ..protocol.keys import PublicKey, SigningKey
from ..protocol.receipts import Checkpoint
from . import ledger
from .store import Store, access_trail, rows

log = structlog.get_logger("cx.hub.trail")

SEGMENT_FORMAT = "cx-trail-segment/1"
MAX_BUFFER = 200_000  # entries kept while the store is unreachable; beyond that the oldest are dropped, loudly
MAX_SEGMENT = 100_000
FILTERS = ("actor", "action", "dept", "outcome", "role")


@dataclass(frozen=True)
class Entry:
    """One line of the trail. `dept` is the department whose data it concerned, when one did."""

    time: str
    actor: str  # account name, "token:<id>", or "-"
    role: str
    action: str
    target: str
    client: str
    outcome: str
    dept: str | None = None
    detail: str | None = None

    def line(self) -> bytes:
        return jsonutil.dumps({k: v for k, v in asdict(self).items() if v is not None})


class Trail:
    """The trail of one hub process: `record` is cheap and never blocks; `flush` writes what is buffered."""

    def __init__(self, store: Store, key: SigningKey):
        self.store, self.key = store, key
        self._buffer: list[Entry] = []
        self._buffer_lock = threading.Lock()  # held only to append or swap, never during I/O
        self._flush_lock = threading.Lock()  # one flush at a time (the loop's and the shutdown's)

    def record(self, actor: str, role: str, action: str, target: str, client: str, outcome: str = "ok",
               dept: str | None = None, detail: str | None = None) -> None:
        entry = Entry(utc_now(), actor[:80], role[:48], action[:32], target[:500], client[:64], outcome[:16], dept,
                      detail[:500] if detail else None)
        with self._buffer_lock:
            self._buffer.append(entry)
            dropped = len(self._buffer) - MAX_BUFFER
            if dropped > 0:
                del self._buffer[:dropped]
        if dropped > 0:
            log.error("access trail buffer full; oldest entries dropped", dropped=dropped)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def flush(self) -> Checkpoint | None:
        """Append everything buffered in one transaction with one checkpoint (blocking: run it off the loop)."""
        with self._flush_lock:
            with self._buffer_lock:
                entries, self._buffer = self._buffer, []
            if not entries:
                return None
            try:
                return append(self.store, self.key, entries)
            except Exception:
                with self._buffer_lock:
                    self._buffer[:0] = entries  # keep them, in order, for the next flush
                raise

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.flush)
            except Exception:  # noqa: BLE001 - the store is away: keep buffering, say so, retry
                log.exception("access trail flush failed; entries kept for the next try", pending=self.pending)


@contextlib.asynccontextmanager
async def running(trail: Trail, interval: float) -> AsyncIterator[Trail]:
    """Flush periodically while the hub runs, and everything left at a clean stop."""
    task = asyncio.create_task(trail.run(interval))
    try:
        yield trail
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(trail.flush)


def append(store: Store, key: SigningKey, entries: Sequence[Entry]) -> Checkpoint:
    lines = [e.line() for e in entries]
    with store.writer.begin() as conn:
        if store.writer.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(804220)"))  # one appender across hub processes
        size = conn.execute(select(func.coalesce(func.max(access_trail.c.idx) + 1, 0))).scalar_one()
        appended = ledger.append_nodes(conn, ledger.TRAIL_LOG, size, [merkle.leaf_hash(line) for line in lines])
        conn.execute(access_trail.insert(), [
            {"idx": size + i, "time": e.time, "actor": e.actor, "role": e.role, "action": e.action, "dept": e.dept,
             "target": e.target, "client": e.client, "outcome": e.outcome, "line": line}
            for i, (e, line) in enumerate(zip(entries, lines))])
        return ledger.sign_checkpoint(conn, key, ledger.TRAIL_LOG, appended.size, appended.root, utc_now())


# -- reading -------------------------------------------------------------------------------


def _where(query: Any, filters: dict[str, str]) -> Any:
    for name in FILTERS:
        if filters.get(name):
            query = query.where(access_trail.c[name] == filters[name])
    if filters.get("from"):
        query = query.where(access_trail.c.time >= filters["from"])
    if filters.get("to"):
        query = query.where(access_trail.c.time < filters["to"])
    return query


def search(store: Store, filters: dict[str, str], limit: int = 100, before: int | None = None) -> list[dict]:
    """Entries matching the filters, newest first (`before`: only entries with a smaller index)."""
    query = _where(select(access_trail), filters)
    if before is not None:
        query = query.where(access_trail.c.idx < before)
    with store.reader.connect() as conn:
        found = rows(conn, query.order_by(access_trail.c.idx.desc()).limit(limit))
    for r in found:
        detail = jsonutil.loads(bytes(r.pop("line"))).get("detail")
        r["detail"] = detail
    return found


def to_csv(entries: Sequence[dict]) -> bytes:
    """UTF-8 with a BOM, so Excel opens the Chinese text as it is."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["idx", "time_utc", "actor", "role", "action", "dept", "target", "client", "outcome", "detail"])
    for e in entries:
        writer.writerow([e["idx"], e["time"], e["actor"], e["role"], e["action"], e["dept"] or "", e["target"],
                         e["client"], e["outcome"], e["detail"] or ""])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def latest_checkpoint(store: Store) -> Checkpoint | None:
    with store.reader.connect() as conn:
        return ledger.latest_checkpoint(conn, ledger.TRAIL_LOG)


def segment(store: Store, start: int, end: int | None = None) -> dict[str, Any]:
    """Entries [start, end) with the proof that they sit there under the latest signed checkpoint."""
    with store.reader.connect() as conn:
        cp = ledger.latest_checkpoint(conn, ledger.TRAIL_LOG)
        if cp is None:
            raise ProtocolError(Reason.BAD_PROOF, "the trail has no checkpoint yet")
        end = cp.size if end is None else min(end, cp.size)
        if not 0 <= start < end or end - start > MAX_SEGMENT:
            raise ProtocolError(Reason.BAD_PROOF, f"give 0 <= start < end <= {cp.size}, at most {MAX_SEGMENT} entries")
        lines = [bytes(r.line) for r in conn.execute(
            select(access_trail.c.line).where(access_trail.c.idx >= start, access_trail.c.idx < end)
            .order_by(access_trail.c.idx))]
        proof = ledger.range_proof(conn, ledger.TRAIL_LOG, start, end, cp.size)
    return {"format": SEGMENT_FORMAT, "start": start, "entries": [line.decode() for line in lines],
            "proof": [h.hex() for h in proof], "checkpoint": cp.to_json()}


def consistency(store: Store, old: int, new: int | None = None) -> dict[str, Any]:
    """A consistency proof between two trail sizes, so a checkpoint kept earlier can be tied to a newer one."""
    with store.reader.connect() as conn:
        cp = ledger.latest_checkpoint(conn, ledger.TRAIL_LOG)
        size = cp.size if cp else 0
        new = size if new is None else new
        ledger.check_sizes(old, new, size)
        proof = ledger.consistency_proof(conn, ledger.TRAIL_LOG, old, new)
        cps = {n: ledger.checkpoint_at(conn, ledger.TRAIL_LOG, n) for n in (old, new)}
    return {"old_size": old, "new_size": new, "proof": [h.hex() for h in proof],
            "checkpoints": {str(n): c.to_json() for n, c in cps.items() if c is not None}}


def verify_segment(doc: Any, hub_key: PublicKey) -> tuple[Checkpoint, list[dict]]:
    """Check an exported segment offline: the checkpoint's signature, then every entry under its root."""
    if not isinstance(doc, dict) or doc.get("format") != SEGMENT_FORMAT:
        raise ProtocolError(Reason.BAD_PROOF, f"not a {SEGMENT_FORMAT} document")
    cp = Checkpoint.from_json(doc.get("checkpoint"))
    if cp.dept != ledger.TRAIL_LOG:
        raise ProtocolError(Reason.BAD_CHECKPOINT, f"the checkpoint is of {cp.dept!r}, not the access trail")
    cp.verify(hub_key)
    entries, proof, start = doc.get("entries"), doc.get("proof"), doc.get("start")
    if (not isinstance(entries, list) or not entries or not all(isinstance(e, str) for e in entries)
            or not isinstance(proof, list) or not all(isinstance(h, str) and len(h) == 64 for h in proof)
            or not isinstance(start, int) or isinstance(start, bool)):
        raise ProtocolError(Reason.BAD_PROOF, "entries, proof or start are missing or malformed")
    try:
        hashes = [bytes.fromhex(h) for h in proof]
    except ValueError:
        raise ProtocolError(Reason.BAD_PROOF, "a proof hash is not hex") from None
    lines = [e.encode("utf-8") for e in entries]
    merkle.verify_range(start, cp.size, [merkle.leaf_hash(line) for line in lines], hashes, cp.root_bytes)
    return cp, [jsonutil.loads(line) for line in lines]
