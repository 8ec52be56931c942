"""Append-only Merkle logs kept as perfect-subtree hashes; proofs read only the nodes they need.

Each department's ledger is one log, named by the department id; the hub's access trail (留痕) is
another, named `TRAIL_LOG`, a name no department may take. Checkpoints of every log are signed by the
hub key in the same form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from ..protocol import merkle
from ..protocol.errors import ProtocolError, Reason
from ..protocol.keys import SigningKey
from ..protocol.receipts import Checkpoint
from .store import checkpoints, departments, in_chunks, insert_many, ledger_nodes


TRAIL_LOG = "access-trail"  # the access trail's log; registry.add_department refuses it as a department id


def fetch_nodes(conn: Connection, log: str, wanted: set[merkle.Node]) -> dict[merkle.Node, bytes]:
    found = in_chunks(conn, lambda chunk: _nodes_query(log, chunk), sorted(wanted))
    nodes = {(level, idx): bytes(h) for level, idx, h in found}
    if len(nodes) != len(wanted):
        raise LookupError(f"ledger of {log} is missing nodes {sorted(wanted - set(nodes))[:5]}")
    return nodes


def _nodes_query(log: str, nodes: Sequence[merkle.Node]) -> Any:
    """The hashes of some nodes of a log, each found through the primary key.

    One `dept = ? AND level = ? AND idx IN (…)` term per level, each a key lookup (SQLite uses an index
    for each term of an OR only when every term names the key's columns itself). SQLite reads a row-value IN list, `(level, idx) IN
    (VALUES …)`, through the key's first column only, a scan of the whole log that grew with it.
    """
    by_level: dict[int, list[int]] = {}
    for level, idx in nodes:
        by_level.setdefault(level, []).append(idx)
    c = ledger_nodes.c
    return select(c.level, c.idx, c.hash).where(
        or_(*(and_(c.dept == log, c.level == level, c.idx.in_(idxs)) for level, idxs in by_level.items())))


def append_nodes(conn: Connection, log: str, size: int, leaves: Sequence[bytes]) -> merkle.Appended:
    """Append leaf hashes to a log of `size` leaves (the caller holds the log's write lock)."""
    frontier_ids = merkle.frontier_nodes(size)
    known = fetch_nodes(conn, log, set(frontier_ids)) if frontier_ids else {}
    frontier = [(level, idx, known[(level, idx)]) for level, idx in frontier_ids]
    appended = merkle.append_leaves(size, frontier, leaves)
    if appended.nodes:
        insert_many(conn, ledger_nodes, [
            {"dept": log, "level": level, "idx": idx, "hash": h} for level, idx, h in appended.nodes
        ])
    return appended


def append(conn: Connection, dept: str, size: int, leaves: Sequence[bytes]) -> merkle.Appended:
    """Append leaf hashes to a department's ledger (the caller holds the department row lock)."""
    appended = append_nodes(conn, dept, size, leaves)
    if appended.nodes:
        conn.execute(departments.update().where(departments.c.dept == dept).values(ledger_size=appended.size))
    return appended


def root(conn: Connection, dept: str, size: int) -> bytes:
    return merkle.get_nodes_then(lambda w: fetch_nodes(conn, dept, w), [(0, size)])[0] if size else merkle.EMPTY_ROOT


def inclusion_proof(conn: Connection, dept: str, index: int, size: int) -> list[bytes]:
    return merkle.get_nodes_then(lambda w: fetch_nodes(conn, dept, w), merkle.inclusion_ranges(index, size))


def consistency_proof(conn: Connection, dept: str, old: int, new: int) -> list[bytes]:
    return merkle.get_nodes_then(lambda w: fetch_nodes(conn, dept, w), merkle.consistency_ranges(old, new))


def range_proof(conn: Connection, log: str, start: int, end: int, size: int) -> list[bytes]:
    """The hashes that prove leaves [start, end) sit at those positions under the root of `size` leaves."""
    return merkle.get_nodes_then(lambda w: fetch_nodes(conn, log, w), merkle.range_proof_ranges(start, end, size))


def latest_checkpoint(conn: Connection, dept: str) -> Checkpoint | None:
    row = conn.execute(
        select(checkpoints).where(checkpoints.c.dept == dept).order_by(checkpoints.c.size.desc()).limit(1)
    ).first()
    return checkpoint_from_row(row._mapping) if row else None


def checkpoint_at(conn: Connection, dept: str, size: int) -> Checkpoint | None:
    row = conn.execute(select(checkpoints).where(checkpoints.c.dept == dept, checkpoints.c.size == size)).first()
    return checkpoint_from_row(row._mapping) if row else None


def checkpoint_from_row(row: dict) -> Checkpoint:
    return Checkpoint(row["dept"], row["size"], row["root"], row["time"], row["key_id"], row["signature"])


def sign_checkpoint(conn: Connection, key: SigningKey, dept: str, size: int, root_hash: bytes, time: str) -> Checkpoint:
    """A checkpoint for a new size; a batch that added nothing gets the latest one again."""
    existing = checkpoint_at(conn, dept, size)
    if existing is not None:
        return existing
    cp = Checkpoint.sign(key, dept, size, root_hash, time)
    conn.execute(checkpoints.insert().values(dept=dept, size=size, root=cp.root, time=cp.time,
                                             key_id=cp.key_id, signature=cp.signature))
    return cp


def check_sizes(old: int, new: int, size: int) -> None:
    if not 0 <= old <= new <= size:
        raise ProtocolError(Reason.BAD_PROOF, f"sizes must satisfy 0 <= {old} <= {new} <= ledger size {size}")
