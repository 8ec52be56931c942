"""Read-side queries the hub's API serves: records with provenance, proofs, checkpoints, batches."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select

from ..protocol import jsonutil
from ..protocol.bundle import ProofBundle
from ..protocol.envelope import CHINA, b64encode, format_time, parse_time
from ..protocol.errors import ProtocolError, shown_value
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


class PersonalData(PermissionError):
    """A proof of a record carrying personal data, asked for by someone not entitled to see it."""


def personal_fields(record_type: str) -> frozenset[str]:
    """The fields the data dictionary marks personal (x-personal: ID numbers)."""
    try:
        return default_registry().get(record_type).personal
    except Exception:  # noqa: BLE001 - an old or unknown type: nothing known to mask
        return frozenset()


def masked(record_type: str, data: dict[str, Any] | None, unmask: bool = False) -> dict[str, Any] | None:
    """A record's data as shown outside the hub: personal fields (ID numbers) masked unless `unmask`."""
    if data is None or unmask:
        return data
    personal = personal_fields(record_type)
    return {k: (shown_value(v, True) if k in personal else v) for k, v in data.items()}


def holds_personal(line: bytes) -> bool:
    """Whether a record line carries a personal field with a value (its exact bytes would reveal it)."""
    record = jsonutil.loads(line)
    data = record.get("data") or {}
    return any(data.get(f) not in (None, "") for f in personal_fields(record.get("type", "")))


def record_view(store: Store, dept: str, record_id: str, unmask: bool = False) -> dict[str, Any]:
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
            "data": masked(v["type"], line.get("data"), unmask), "reason": line.get("reason"),
            "leaf_hash": bytes(v["leaf_hash"]).hex(), "line_index": v["line_index"],
            "provenance": {**{k: v[k] for k in PROVENANCE}, "providing_dept": dept, "providing_dept_name": dept_name},
        })
    c = current._mapping
    return {"dept": dept, "record_id": record_id, "type": c["type"], "status": c["status"],
            "current_version": c["version"], "first_accepted": c["first_accepted"], "updated": c["updated"],
            "versions": out_versions}


def proof_bundle(store: Store, dept: str, record_id: str, version: str | None = None,
                 personal_allowed: bool = True) -> dict[str, Any]:
    """The proof bundle of a record's current (or given) version, checkable with `cx verify`.

    A bundle carries the exact signed line, personal fields included; for a caller not entitled to
    personal data (`personal_allowed` false) a line that holds any raises PersonalData.
    """
    with store.reader.connect() as conn:
        q = select(record_versions).where(record_versions.c.dept == dept, record_versions.c.record_id == record_id)
        q = q.where(record_versions.c.version == version) if version else q
        v = conn.execute(q.order_by(record_versions.c.ledger_index.desc()).limit(1)).first()
        if v is None:
            raise NotFound(f"no record {record_id!r} (version {version or 'current'}) in department {dept!r}")
        if not personal_allowed and holds_personal(bytes(v.line)):
            raise PersonalData(f"record {record_id!r} holds personal data; its proof is served only to the operator "
                               f"and to department {dept!r}")
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


HEADER_FIELDS = ("batch_id", "dept", "node", "seq", "created", "count", "key_id", "schemas", "format", "time",
                 "version", "outbox_depth")


def quarantine_view(store: Store, limit: int = 100, dept: str | None = None, raw: bool = True,
                    item: int | None = None) -> list[dict[str, Any]]:
    """Quarantined messages, newest first, with the header's fields parsed where it is readable JSON.

    `raw` adds the raw first line (operator only: it is whatever the sender sent); `dept` limits the
    list to messages claiming that department.
    """
    from .store import quarantine_actions

    query = select(quarantine).order_by(quarantine.c.id.desc()).limit(limit)
    if dept is not None:
        query = query.where(quarantine.c.dept == dept)
    if item is not None:
        query = query.where(quarantine.c.id == item)
    with store.reader.connect() as conn:
        found = rows(conn, query)
        ids = [q["id"] for q in found]
        actions = rows(conn, select(quarantine_actions).where(quarantine_actions.c.quarantine_id.in_(ids))
                       .order_by(quarantine_actions.c.id)) if ids else []
    for q in found:
        first = bytes(q.pop("header") or b"")
        q["fields"] = _header_fields(first)
        q["kind"] = "heartbeat" if (q["routing_key"] or "").endswith(".heartbeat") else "batch"
        q["actions"] = [a for a in actions if a["quarantine_id"] == q["id"]]
        q["state"] = {"release": "released", "discard": "discarded"}[q["actions"][-1]["action"]] if q["actions"] \
            else "held"
        q["refusal"] = q["refusal"] and bytes(q["refusal"]).decode("utf-8", "replace")  # the signed refusal sent
        if raw:
            q["header"] = first.decode("utf-8", "replace")
    return found


def _header_fields(first: bytes) -> dict[str, Any]:
    try:
        obj = jsonutil.loads(first)
    except Exception:  # noqa: BLE001 - not JSON at all: nothing to parse
        return {}
    if not isinstance(obj, dict):
        return {}
    return {k: obj[k] for k in HEADER_FIELDS if k in obj and isinstance(obj[k], (str, int, dict))}


def _require_dept(conn: Any, dept: str) -> int:
    size = conn.execute(select(departments.c.ledger_size).where(departments.c.dept == dept)).scalar()
    if size is None:
        raise NotFound(f"no department {dept!r}")
    return size


def dashboard_view(store: Store, dept: str | None = None, now: datetime | None = None,
                   silent_after: float = 300.0, late_pending: float = 900.0) -> dict[str, Any]:
    """Per-department delivery at a glance: what arrived, what was refused (at the hub and at the department),
    whether the nodes are alive, and a status light with its reason (see `status_light`)."""
    from .store import dept_keys, heartbeats

    now = now or datetime.now(timezone.utc)
    today = datetime.combine(now.astimezone(CHINA).date(), datetime.min.time(), CHINA)
    since_today, since_7d = format_time(today), format_time(today - timedelta(days=6))
    since_24h = format_time(now - timedelta(days=1))

    def only(query: Any, column: Any) -> Any:
        return query.where(column == dept) if dept is not None else query

    with store.reader.connect() as conn:
        depts = rows(conn, only(select(departments), departments.c.dept).order_by(departments.c.dept))
        batch_stats = {r.dept: r for r in conn.execute(only(
            select(batches.c.dept, func.count().label("batches"), func.sum(batches.c.accepted).label("accepted"),
                   func.sum(batches.c.rejected).label("rejected"), func.sum(batches.c.duplicates).label("duplicates"),
                   func.max(batches.c.received).label("last_batch")), batches.c.dept).group_by(batches.c.dept))}
        recent: dict[str, dict[str, int]] = {}
        for name, since in (("today", since_today), ("7d", since_7d)):
            for d, n in conn.execute(only(select(batches.c.dept, func.sum(batches.c.accepted))
                                          .where(batches.c.received >= since), batches.c.dept)
                                     .group_by(batches.c.dept)):
                recent.setdefault(d, {})[name] = int(n or 0)
        record_stats: dict[str, dict[str, int]] = {}
        for d, status, n in conn.execute(only(select(records.c.dept, records.c.status, func.count()), records.c.dept)
                                         .group_by(records.c.dept, records.c.status)):
            record_stats.setdefault(d, {})[status] = n
        by_type: dict[str, dict[str, int]] = {}
        for d, rtype, n in conn.execute(only(select(records.c.dept, records.c.type, func.count()), records.c.dept)
                                        .where(records.c.status == "active").group_by(records.c.dept, records.c.type)):
            by_type.setdefault(d, {})[rtype] = n
        beats: dict[str, list[dict[str, Any]]] = {}
        for hb in rows(conn, only(select(heartbeats), heartbeats.c.dept).order_by(heartbeats.c.node)):
            hb.pop("body", None)
            hb.pop("signature", None)
            for name in ("inventory", "rejections", "alerts"):
                hb[name] = jsonutil.loads(hb[name] or "{}")
            beats.setdefault(hb["dept"], []).append(hb)
        quarantined = dict(conn.execute(only(select(quarantine.c.dept, func.count()), quarantine.c.dept)
                                        .group_by(quarantine.c.dept)).all())
        quarantined_24h = dict(conn.execute(only(select(quarantine.c.dept, func.count()), quarantine.c.dept)
                                            .where(quarantine.c.received >= since_24h)
                                            .group_by(quarantine.c.dept)).all())
        refused_beats: dict[str, dict[str, Any]] = {}
        for q in rows(conn, only(select(quarantine.c.dept, quarantine.c.received, quarantine.c.reason,
                                        quarantine.c.detail, quarantine.c.routing_key), quarantine.c.dept)
                      .where(quarantine.c.routing_key.like("%.heartbeat"), quarantine.c.received >= since_24h)
                      .order_by(quarantine.c.id)):
            refused_beats[q["dept"]] = q  # the latest one per department
        keys = rows(conn, only(select(dept_keys), dept_keys.c.dept))
    stamp = format_time(now)
    out = []
    for d in depts:
        name = d["dept"]
        b = batch_stats.get(name)
        nodes = beats.get(name, [])
        inventory: dict[str, int] = {}
        dept_rejections: dict[str, dict[str, int]] = {}
        for hb in nodes:
            for rtype, n in hb["inventory"].items():
                inventory[rtype] = inventory.get(rtype, 0) + n
            for rtype, rules in hb["rejections"].items():
                for rule, n in rules.items():
                    dept_rejections.setdefault(rtype, {})[rule] = dept_rejections.get(rtype, {}).get(rule, 0) + n
        accepted = int(b.accepted or 0) if b else 0
        hub_rejected = int(b.rejected or 0) if b else 0
        dept_rejected = sum(n for rules in dept_rejections.values() for n in rules.values())
        offered = accepted + hub_rejected + dept_rejected
        last_beat = max((hb["received"] for hb in nodes), default=None)
        refused = refused_beats.get(name)
        if refused is not None and last_beat is not None and refused["received"] < last_beat:
            refused = None  # an accepted heartbeat came after it: the node is heard again
        active_keys = [k for k in keys if k["dept"] == name and not k["revoked_at"]
                       and (k["valid_to"] is None or k["valid_to"] > stamp)]
        expiry = [k["valid_to"] for k in active_keys if k["valid_to"]]
        row = {
            "dept": name, "name": d["name"], "region": d["region"], "ledger_size": d["ledger_size"],
            "batches": b.batches if b else 0, "accepted": accepted, "rejected": hub_rejected,
            "duplicates": int(b.duplicates or 0) if b else 0, "last_batch": b.last_batch if b else None,
            "records_today": recent.get(name, {}).get("today", 0), "records_7d": recent.get(name, {}).get("7d", 0),
            "records": record_stats.get(name, {}), "by_type": by_type.get(name, {}), "inventory": inventory,
            "dept_rejected": dept_rejected, "dept_rejections": dept_rejections,
            "rejection_rate": (hub_rejected + dept_rejected) / offered if offered else None,
            "nodes": nodes, "last_heartbeat": last_beat,
            "outbox_depth": sum(hb["outbox_depth"] or 0 for hb in nodes),
            "oldest_pending_seconds": max((hb["oldest_pending_seconds"] or 0 for hb in nodes), default=None),
            "versions": sorted({hb["version"] for hb in nodes if hb["version"]}),
            "alerts": {k: v for hb in nodes for k, v in hb["alerts"].items() if v},
            "active_keys": len(active_keys), "key_expiry": min(expiry) if expiry and len(expiry) == len(active_keys)
            else None,
            "heartbeat_refused": refused, "quarantined": quarantined.get(name, 0),
            "quarantined_24h": quarantined_24h.get(name, 0),
        }
        row["status"], row["status_reason"] = status_light(row, now, silent_after, late_pending)
        out.append(row)
    return {"departments": out, "quarantined_total": sum(quarantined.values()), "now": stamp,
            "rules": {"silent_after_seconds": silent_after, "late_pending_seconds": late_pending}}


STATUSES = ("quarantining", "silent", "failing", "late", "healthy")  # in order of precedence


def status_light(d: dict[str, Any], now: datetime, silent_after: float, late_pending: float) -> tuple[str, str]:
    """The department's light and the reason in a few words (the overview states these rules):

    quarantining (red): its node's heartbeats are refused and none was accepted since;
    silent (red): no heartbeat at all, or none for `silent_after` seconds;
    failing (red): a node reports an error or alerts (refused batches, an inconsistent checkpoint …);
    late (amber): records have waited in a node's outbox longer than `late_pending` seconds;
    healthy (green): none of these.
    """
    refused = d["heartbeat_refused"]
    if refused is not None:
        return "quarantining", f"{refused['reason']}: {refused['detail'] or ''}".strip(": ")
    if d["last_heartbeat"] is None:
        return "silent", "no heartbeat received"
    quiet = (now - parse_time(d["last_heartbeat"])).total_seconds()
    if quiet > silent_after:
        return "silent", f"no heartbeat for {int(quiet)} s"
    errors = [hb["last_error"] for hb in d["nodes"] if hb.get("last_error")]
    if d["alerts"] or errors:
        what = ", ".join(f"{k} {v}" for k, v in sorted(d["alerts"].items()))
        return "failing", "; ".join(x for x in (what, "node error" if errors else "") if x)
    if (d["oldest_pending_seconds"] or 0) > late_pending:
        return "late", f"records waiting {int(d['oldest_pending_seconds'])} s in the outbox"
    return "healthy", ""


def department_view(store: Store, dept: str, now: datetime | None = None, days: int = 30,
                    **thresholds: float) -> dict[str, Any]:
    """Everything the department page shows: the overview row, records per day, rejections by rule with
    examples (hub side from the receipts, department side from the heartbeats), recent batches, sequence
    gaps and late fills, inventory against accepted per record type, nodes, keys, refused messages."""
    from .store import dept_keys, nodes, sequence_events

    now = now or datetime.now(timezone.utc)
    overview = dashboard_view(store, dept, now, **thresholds)["departments"]
    if not overview:
        raise NotFound(f"no department {dept!r}")
    row = overview[0]
    first_day = now.astimezone(CHINA).date() - timedelta(days=days - 1)
    since = format_time(datetime.combine(first_day, datetime.min.time(), CHINA))
    with store.reader.connect() as conn:
        per_batch = conn.execute(select(batches.c.received, batches.c.accepted, batches.c.rejected)
                                 .where(batches.c.dept == dept, batches.c.received >= since)).all()
        recent = rows(conn, select(batches.c.batch_id, batches.c.node, batches.c.seq, batches.c.received,
                                   batches.c.record_count, batches.c.accepted, batches.c.rejected,
                                   batches.c.duplicates, batches.c.ledger_size, batches.c.header)
                      .where(batches.c.dept == dept).order_by(batches.c.received.desc()).limit(20))
        rejecting = conn.execute(select(batches.c.batch_id, batches.c.header, batches.c.receipt, batches.c.received)
                                 .where(batches.c.dept == dept, batches.c.rejected > 0)
                                 .order_by(batches.c.received.desc()).limit(200)).all()
        latest = rows(conn, select(records.c.record_id, records.c.type, records.c.status, records.c.subject_name,
                                   records.c.updated).where(records.c.dept == dept)
                      .order_by(records.c.updated.desc(), records.c.record_id).limit(20))
        events = rows(conn, select(sequence_events).where(sequence_events.c.dept == dept)
                      .order_by(sequence_events.c.id.desc()).limit(50))
        chains = rows(conn, select(nodes).where(nodes.c.dept == dept).order_by(nodes.c.node))
        keys = rows(conn, select(dept_keys.c.key_id, dept_keys.c.valid_from, dept_keys.c.valid_to,
                                 dept_keys.c.revoked_at, dept_keys.c.added)
                    .where(dept_keys.c.dept == dept).order_by(dept_keys.c.added))
    daily = {first_day + timedelta(days=i): [0, 0] for i in range(days)}
    for received, accepted, rejected in per_batch:
        day = parse_time(received).astimezone(CHINA).date()
        if day in daily:
            daily[day][0] += accepted
            daily[day][1] += rejected
    for b in recent:
        b["type"] = ", ".join(sorted((jsonutil.loads(bytes(b.pop("header"))).get("schemas") or {})))
    for c in chains:
        c["missing"] = jsonutil.loads(c["missing"])
    stamp = format_time(now)
    for k in keys:
        k["state"] = ("revoked" if k["revoked_at"] and k["revoked_at"] <= stamp else
                      "expired" if k["valid_to"] and k["valid_to"] < stamp else
                      "not_yet_valid" if k["valid_from"] and k["valid_from"] > stamp else "active")
    return {**row, "daily": [(day.isoformat(), n[0], n[1]) for day, n in daily.items()],
            "hub_rejections": _hub_rejections(rejecting), "recent_batches": recent, "latest_records": latest, "sequence_events": events,
            "chains": chains, "keys": keys, "completeness": _completeness(row),
            "refused": quarantine_view(store, 20, dept, raw=False)}


def _hub_rejections(rejecting: list[Any], examples: int = 3) -> list[dict[str, Any]]:
    """Rejections in the hub's receipts, grouped by record type and rule, with a few examples each
    (values as the receipt carries them: already masked when personal)."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for batch_id, header, receipt, received in rejecting:
        rtype = ", ".join(sorted(jsonutil.loads(bytes(header)).get("schemas") or {})) or "?"
        body = jsonutil.loads(bytes(receipt).split(b"\n", 1)[0])
        for rejection in body.get("rejected", []):
            for error in rejection.get("errors", []):
                g = groups.setdefault((rtype, error.get("rule", "?")), {"type": rtype, "rule": error.get("rule", "?"),
                                                                       "count": 0, "examples": []})
                g["count"] += 1
                if len(g["examples"]) < examples:
                    g["examples"].append({"record_id": rejection.get("record_id"), "batch_id": batch_id,
                                          "received": received, "path": error.get("path"),
                                          "message_zh": error.get("message_zh"), "message_en": error.get("message_en"),
                                          "value": error.get("value")})
    return sorted(groups.values(), key=lambda g: -g["count"])


def _completeness(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Per record type: what the node says its source holds, what the hub holds, and why a figure is missing."""
    out = []
    for rtype in sorted(set(row["inventory"]) | set(row["by_type"])):
        at_source, held = row["inventory"].get(rtype), row["by_type"].get(rtype, 0)
        if not row["nodes"]:
            reason = "no_heartbeat"
        elif at_source is None:
            reason = "not_in_inventory"
        else:
            reason = None
        out.append({"type": rtype, "at_source": at_source, "held": held,
                    "missing": None if at_source is None else at_source - held,
                    "share": (held / at_source) if at_source else None, "reason": reason,
                    "rejected_at_department": sum(row["dept_rejections"].get(rtype, {}).values())})
    return out


def check_proof(store: Store, dept: str, record_id: str, version: str | None, hub_key: Any) -> dict[str, Any]:
    """Check a record's proof the way `cx verify` does, plus its place in the hub's signed ledger; each step
    with its outcome, so the page can explain what a valid (or invalid) result means."""
    from ..protocol.bundle import ProofBundle
    from ..protocol.keys import PublicKey
    from ..protocol.merkle import leaf_hash, verify_inclusion
    from ..protocol.receipts import Checkpoint
    from .store import dept_keys

    bundle = proof_bundle(store, dept, record_id, version)
    steps: list[dict[str, Any]] = []

    def step(name: str, fn: Any) -> bool:
        try:
            detail = fn()
            steps.append({"step": name, "ok": True, "detail": detail or "", "reason": None})
            return True
        except (ProtocolError, LookupError, ValueError) as exc:
            steps.append({"step": name, "ok": False, "detail": getattr(exc, "detail", None) or str(exc),
                          "reason": getattr(getattr(exc, "reason", None), "value", None)})
            return False

    parsed = ProofBundle.from_json(bundle)
    with store.reader.connect() as conn:
        raw = conn.execute(select(dept_keys.c.public_key).where(dept_keys.c.key_id == parsed.key_id,
                                                               dept_keys.c.dept == dept)).scalar()

    def key() -> str:
        if raw is None:
            raise LookupError(f"key {parsed.key_id} is not enrolled for {dept}")
        return parsed.key_id

    def signed() -> str:
        header = parsed.verify(PublicKey.from_raw(bytes(raw)))
        return f"batch {header.batch_id}, seq {header.seq}, created {header.created}"

    def in_ledger() -> str:
        led = bundle["ledger"]
        cp = Checkpoint.from_json(led["checkpoint"])
        verify_inclusion(led["leaf_index"], cp.size, leaf_hash(parsed.record_line),
                         [bytes.fromhex(h) for h in led["path"]], cp.root_bytes)
        return f"leaf {led['leaf_index']} of {cp.size}"

    def checkpoint_signed() -> str:
        cp = Checkpoint.from_json(bundle["ledger"]["checkpoint"])
        cp.verify(hub_key)
        return f"size {cp.size}, {cp.time}"

    ok = step("key", key) and step("signature", signed)
    ok = step("ledger", in_ledger) and ok
    ok = step("checkpoint", checkpoint_signed) and ok
    return {"ok": ok, "steps": steps, "key_id": parsed.key_id, "version": version}
