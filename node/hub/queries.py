"""Read-side queries the hub's API serves: records with provenance, proofs, checkpoints, batches."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ..protocol import jsonutil
from ..protocol.bundle import ProofBundle
from ..protocol.envelope import b64encode
from ..protocol.errors import shown_value
from ..protocol.merkle import MerkleTree
from ..protocol.validation import default_registry
from . import ledger
from .registry import list_departments
from .store import Store, batches, departments, quarantine, record_versions, records, rows

PROVENANCE = ("authority", "authority_uscc", "entered_by", "node", "key_id", "batch_id", "source_adapter",
              "source_locator", "extracted", "sent", "received", "accepted", "ledger_index")


class NotFound(LookupError):
    pass


def departments_view(store: Store) -> list[dict[str, Any]]:
    return list_departments(store)


def masked(record_type: str, data: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record's data as shown outside the hub: personal fields (ID numbers) masked."""
    if data is None:
        return None
    try:
        personal = default_registry().get(record_type).personal
    except Exception:  # an old or unknown type still shows, unmasked fields only
        personal = frozenset()
    return {k: (shown_value(v, True) if k in personal else v) for k, v in data.items()}


def record_view(store: Store, dept: str, record_id: str) -> dict[str, Any]:
    with store.reader.connect() as conn:
        current = conn.execute(select(records).where(records.c.dept == dept, records.c.record_id == record_id)).first()
        if current is None:
            raise NotFound(f"no record {record_id!r} in department {dept!r}")
        versions = rows(conn, select(record_versions).where(record_versions.c.dept == dept,
                                                            record_versions.c.record_id == record_id)
                        .order_by(record_versions.c.ledger_index))
        dept_name = conn.execute(select(departments.c.name).where(departments.c.dept == dept)).scalar()
    out_versions = []
    for v in versions:
        line = jsonutil.loads(bytes(v["line"]))
        out_versions.append({
            "version": v["version"], "op": v["op"], "type": v["type"], "schema_version": v["schema_version"],
            "data": masked(v["type"], line.get("data")), "reason": line.get("reason"),
            "leaf_hash": bytes(v["leaf_hash"]).hex(), "line_index": v["line_index"],
            "provenance": {**{k: v[k] for k in PROVENANCE}, "providing_dept": dept, "providing_dept_name": dept_name},
        })
    c = current._mapping
    return {"dept": dept, "record_id": record_id, "type": c["type"], "status": c["status"],
            "current_version": c["version"], "first_accepted": c["first_accepted"], "updated": c["updated"],
            "versions": out_versions}


def proof_bundle(store: Store, dept: str, record_id: str, version: str | None = None) -> dict[str, Any]:
    """The proof bundle of a record's current (or given) version, checkable with `cx verify`."""
    with store.reader.connect() as conn:
        q = select(record_versions).where(record_versions.c.dept == dept, record_versions.c.record_id == record_id)
        q = q.where(record_versions.c.version == version) if version else q
        v = conn.execute(q.order_by(record_versions.c.ledger_index.desc()).limit(1)).first()
        if v is None:
            raise NotFound(f"no record {record_id!r} (version {version or 'current'}) in department {dept!r}")
        b = conn.execute(select(batches.c.header, batches.c.signature, batches.c.leaf_hashes, batches.c.key_id)
                         .where(batches.c.batch_id == v.batch_id)).one()
        ledger_size = conn.execute(select(departments.c.ledger_size).where(departments.c.dept == dept)).scalar_one()
        checkpoint = ledger.latest_checkpoint(conn, dept)
        ledger_path = ledger.inclusion_proof(conn, dept, v.ledger_index, checkpoint.size) if checkpoint else []
    leaves = bytes(b.leaf_hashes)
    tree = MerkleTree([leaves[i:i + 32] for i in range(0, len(leaves), 32)])
    bundle = ProofBundle(bytes(v.line), v.line_index, tree.inclusion_proof(v.line_index), bytes(b.header),
                         bytes(b.signature), b.key_id)
    out = bundle.to_json()
    # beyond the offline proof: where the record sits in the hub's ledger, under a checkpoint the hub signed
    out["ledger"] = {"dept": dept, "leaf_index": v.ledger_index, "ledger_size": ledger_size,
                     "checkpoint": checkpoint.to_json() if checkpoint else None,
                     "path": [h.hex() for h in ledger_path]}
    return out


def batch_view(store: Store, batch_id: str) -> dict[str, Any]:
    with store.reader.connect() as conn:
        row = conn.execute(select(batches).where(batches.c.batch_id == batch_id)).first()
    if row is None:
        raise NotFound(f"no batch {batch_id!r}")
    r = row._mapping
    body, sig_line = bytes(r["receipt"]).split(b"\n")[:2]
    return {
        "batch_id": r["batch_id"], "dept": r["dept"], "node": r["node"], "seq": r["seq"], "key_id": r["key_id"],
        "header": jsonutil.loads(bytes(r["header"])), "signature": b64encode(bytes(r["signature"])),
        "header_hash": r["header_hash"], "created": r["created"], "received": r["received"],
        "accepted_at": r["accepted_at"], "record_count": r["record_count"], "accepted": r["accepted"],
        "rejected": r["rejected"], "duplicates": r["duplicates"], "ledger_size": r["ledger_size"],
        "receipt": jsonutil.loads(body), "receipt_signature": jsonutil.loads(sig_line)["sig"],
    }


def checkpoint_view(store: Store, dept: str) -> dict[str, Any]:
    with store.reader.connect() as conn:
        _require_dept(conn, dept)
        cp = ledger.latest_checkpoint(conn, dept)
    if cp is None:
        raise NotFound(f"department {dept!r} has no checkpoint yet")
    return cp.to_json()


def consistency_view(store: Store, dept: str, old: int, new: int | None) -> dict[str, Any]:
    with store.reader.connect() as conn:
        size = _require_dept(conn, dept)
        new = size if new is None else new
        ledger.check_sizes(old, new, size)
        proof = ledger.consistency_proof(conn, dept, old, new)
        roots = {n: (ledger.root(conn, dept, n).hex()) for n in (old, new)}
        cps = {n: ledger.checkpoint_at(conn, dept, n) for n in (old, new)}
    return {"dept": dept, "old_size": old, "new_size": new, "old_root": roots[old], "new_root": roots[new],
            "proof": [h.hex() for h in proof],
            "checkpoints": {str(n): cp.to_json() for n, cp in cps.items() if cp is not None}}


def quarantine_view(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    with store.reader.connect() as conn:
        found = rows(conn, select(quarantine).order_by(quarantine.c.id.desc()).limit(limit))
    for q in found:
        q["header"] = bytes(q["header"] or b"").decode("utf-8", "replace")
        q["refusal"] = q["refusal"] and bytes(q["refusal"]).decode("utf-8", "replace")  # the signed refusal sent
    return found


def _require_dept(conn: Any, dept: str) -> int:
    size = conn.execute(select(departments.c.ledger_size).where(departments.c.dept == dept)).scalar()
    if size is None:
        raise NotFound(f"no department {dept!r}")
    return size


def dashboard_view(store: Store) -> dict[str, Any]:
    """Per-department delivery at a glance: what arrived, what was refused, whether the node is alive."""
    from sqlalchemy import func

    from .store import heartbeats

    with store.reader.connect() as conn:
        depts = rows(conn, select(departments).order_by(departments.c.dept))
        batch_stats = {r.dept: r for r in conn.execute(
            select(batches.c.dept, func.count().label("batches"), func.sum(batches.c.accepted).label("accepted"),
                   func.sum(batches.c.rejected).label("rejected"), func.sum(batches.c.duplicates).label("duplicates"),
                   func.max(batches.c.received).label("last_batch")).group_by(batches.c.dept))}
        record_stats: dict[str, dict[str, int]] = {}
        for dept, status, n in conn.execute(select(records.c.dept, records.c.status, func.count())
                                            .group_by(records.c.dept, records.c.status)):
            record_stats.setdefault(dept, {})[status] = n
        by_type: dict[str, dict[str, int]] = {}
        for dept, rtype, n in conn.execute(select(records.c.dept, records.c.type, func.count())
                                           .where(records.c.status == "active")
                                           .group_by(records.c.dept, records.c.type)):
            by_type.setdefault(dept, {})[rtype] = n
        beats: dict[str, list[dict[str, Any]]] = {}
        for hb in rows(conn, select(heartbeats).order_by(heartbeats.c.node)):
            hb.pop("body", None)
            hb.pop("signature", None)
            for name in ("inventory", "rejections", "alerts"):
                hb[name] = jsonutil.loads(hb[name] or "{}")
            beats.setdefault(hb["dept"], []).append(hb)
        quarantined = dict(conn.execute(select(quarantine.c.dept, func.count()).group_by(quarantine.c.dept)).all())
    out = []
    for d in depts:
        b = batch_stats.get(d["dept"])
        inventory: dict[str, int] = {}
        for hb in beats.get(d["dept"], []):
            for rtype, n in hb["inventory"].items():
                inventory[rtype] = inventory.get(rtype, 0) + n
        out.append({
            "dept": d["dept"], "name": d["name"], "region": d["region"], "ledger_size": d["ledger_size"],
            "batches": b.batches if b else 0, "accepted": int(b.accepted or 0) if b else 0,
            "rejected": int(b.rejected or 0) if b else 0, "duplicates": int(b.duplicates or 0) if b else 0,
            "last_batch": b.last_batch if b else None, "records": record_stats.get(d["dept"], {}),
            "by_type": by_type.get(d["dept"], {}), "inventory": inventory, "nodes": beats.get(d["dept"], []),
            "quarantined": quarantined.get(d["dept"], 0),
        })
    return {"departments": out, "quarantined_total": sum(quarantined.values())}
