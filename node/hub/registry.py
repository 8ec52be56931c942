"""Department registry: departments and their signing keys, rotation and revocation."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..config import UsageError
from ..protocol.envelope import DEPT_ID, NODE_ID, BatchHeader, parse_time, utc_now
from ..protocol.errors import ProtocolError, Reason
from ..protocol.keys import PublicKey
from .ledger import TRAIL_LOG
from .store import Store, dept_keys, departments, enrolled_nodes, nodes, rows

REGION = re.compile(r"^[1-8][0-9]{5}$")


class RegistryError(UsageError):
    """An operator request the registry cannot carry out, said plainly (the command exits 2)."""


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    dept: str
    valid_from: str | None
    valid_to: str | None
    revoked_at: str | None
    added: str

    def state(self, at: str) -> str:
        """The key's state at a signer's stated time (compared as times: "…00Z" and "…00.500Z" differ in length)."""
        moment = parse_time(at)
        if self.revoked_at and moment >= parse_time(self.revoked_at):
            return "revoked"
        if self.valid_from and moment < parse_time(self.valid_from):
            return "not_yet_valid"
        if self.valid_to and moment > parse_time(self.valid_to):
            return "expired"
        return "active"


def default_node(dept: str) -> str:
    """The node id `cx node init` gives a department's first node."""
    return f"{dept}-1"


def add_department(store: Store, dept: str, name: str, region: str, key: PublicKey | None = None,
                   valid_from: str | None = None, valid_to: str | None = None,
                   node_ids: tuple[str, ...] = ()) -> None:
    """Enrol a department (and its first key and nodes, in the same transaction)."""
    if not DEPT_ID.match(dept):
        raise RegistryError(f"部门标识无效 invalid department id {dept!r}: 1-32 lower-case letters, digits, - or _")
    if dept == TRAIL_LOG:
        raise RegistryError(f"部门标识已保留 {dept!r} is reserved: it names the hub's access trail")
    if not REGION.match(region):
        raise RegistryError(f"行政区划代码无效 invalid region code {region!r}: 6 digits (GB/T 2260)")
    for node in node_ids:
        _check_node_id(node)
    try:
        with store.writer.begin() as conn:
            conn.execute(departments.insert().values(dept=dept, name=name, region=region, created=utc_now(),
                                                     ledger_size=0))
            if key is not None:
                _insert_key(conn, dept, key, valid_from, valid_to)
            for node in dict.fromkeys(node_ids):
                conn.execute(enrolled_nodes.insert().values(dept=dept, node=node, added=utc_now()))
    except IntegrityError:
        raise RegistryError(f"部门已存在 department {dept!r} already exists") from None


def add_node(store: Store, dept: str, node: str) -> bool:
    """Enrol one more node of a department (its own receipts queue after `cx hub provision`); False if it was."""
    _check_node_id(node)
    with store.writer.begin() as conn:
        _require_dept(conn, dept)
        if conn.execute(select(enrolled_nodes.c.node).where(enrolled_nodes.c.dept == dept,
                                                            enrolled_nodes.c.node == node)).first():
            return False
        conn.execute(enrolled_nodes.insert().values(dept=dept, node=node, added=utc_now()))
    return True


def department_nodes(store: Store) -> dict[str, list[str]]:
    """Every department with the nodes the hub knows of: enrolled ones and any that has sent a batch."""
    with store.reader.connect() as conn:
        out: dict[str, list[str]] = {d: [] for d in conn.execute(
            select(departments.c.dept).order_by(departments.c.dept)).scalars()}
        for dept, node in [*conn.execute(select(enrolled_nodes.c.dept, enrolled_nodes.c.node)),
                           *conn.execute(select(nodes.c.dept, nodes.c.node))]:
            if dept in out and node not in out[dept]:
                out[dept].append(node)
    return {d: sorted(found) for d, found in out.items()}


def _check_node_id(node: str) -> None:
    if not NODE_ID.match(node):
        raise RegistryError(f"节点标识无效 invalid node id {node!r}: 1-64 letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit")


def add_key(store: Store, dept: str, key: PublicKey, valid_from: str | None = None,
            valid_to: str | None = None) -> KeyInfo:
    with store.writer.begin() as conn:
        _require_dept(conn, dept)
        return _insert_key(conn, dept, key, valid_from, valid_to)


def _insert_key(conn: Connection, dept: str, key: PublicKey, valid_from: str | None, valid_to: str | None) -> KeyInfo:
    existing = conn.execute(select(dept_keys.c.dept).where(dept_keys.c.key_id == key.key_id)).scalar()
    if existing is not None:
        raise RegistryError(f"密钥已登记 key {key.key_id} is already enrolled (department {existing})")
    info = KeyInfo(key.key_id, dept, valid_from, valid_to, None, utc_now())
    conn.execute(dept_keys.insert().values(public_key=key.raw, **info.__dict__))
    return info


def rotate_key(store: Store, dept: str, new_key: PublicKey, overlap_until: str) -> tuple[KeyInfo, list[str]]:
    """Enrol a new key now; the department's other active keys stay valid until `overlap_until`."""
    info = add_key(store, dept, new_key)
    now = utc_now()
    ended = []
    with store.writer.begin() as conn:
        for row in rows(conn, select(dept_keys).where(dept_keys.c.dept == dept, dept_keys.c.key_id != new_key.key_id)):
            old = _info(row)
            if old.state(now) == "active" and (old.valid_to is None or old.valid_to > overlap_until):
                conn.execute(dept_keys.update().where(dept_keys.c.key_id == old.key_id).values(valid_to=overlap_until))
                ended.append(old.key_id)
    return info, ended


def revoke_key(store: Store, key_id: str, at: str | None = None) -> KeyInfo:
    """Batches created at or after `at` (default now) with this key are refused; earlier ones stay valid."""
    at = at or utc_now()
    with store.writer.begin() as conn:
        row = conn.execute(select(dept_keys).where(dept_keys.c.key_id == key_id)).first()
        if row is None:
            raise RegistryError(f"未知密钥 unknown key id {key_id}")
        conn.execute(dept_keys.update().where(dept_keys.c.key_id == key_id).values(revoked_at=at))
        return _info({**row._mapping, "revoked_at": at})


def list_departments(store: Store) -> list[dict]:
    with store.reader.connect() as conn:
        depts = rows(conn, select(departments).order_by(departments.c.dept))
        keys = rows(conn, select(dept_keys).order_by(dept_keys.c.added))
    now = utc_now()
    infos = [_info(k) for k in keys]
    known = department_nodes(store)
    for d in depts:
        d["keys"] = [{**i.__dict__, "state": i.state(now)} for i in infos if i.dept == d["dept"]]
        d["nodes"] = known.get(d["dept"], [])
    return depts


def key_for_batch(conn: Connection, header: BatchHeader) -> PublicKey:
    """The department key that may have signed this header, or the reason it may not."""
    return key_for(conn, header.dept, header.key_id, header.created)


def key_for(conn: Connection, dept: str, key_id: str, at: str) -> PublicKey:
    """The enrolled key `key_id` of `dept` if it was valid at `at` (the signer's stated time)."""
    if conn.execute(select(departments.c.dept).where(departments.c.dept == dept)).first() is None:
        raise ProtocolError(Reason.UNKNOWN_DEPT, f"department {dept!r} is not enrolled")
    row = conn.execute(select(dept_keys).where(dept_keys.c.key_id == key_id)).first()
    if row is None or row.dept != dept:
        raise ProtocolError(Reason.UNKNOWN_KEY, f"key {key_id} is not enrolled for {dept!r}")
    state = _info(row._mapping).state(at)
    if state == "revoked":
        raise ProtocolError(Reason.KEY_REVOKED, f"key {key_id} was revoked at {row.revoked_at}; signed at {at}")
    if state != "active":
        raise ProtocolError(Reason.KEY_NOT_ACTIVE, f"key {key_id} is {state} at {at}")
    return PublicKey.from_raw(bytes(row.public_key))


def _require_dept(conn: Connection, dept: str) -> None:
    if conn.execute(select(departments.c.dept).where(departments.c.dept == dept)).first() is None:
        raise RegistryError(f"未登记的部门 unknown department {dept!r}; add it with `cx hub add-dept`")


def _info(row: dict) -> KeyInfo:
    return KeyInfo(row["key_id"], row["dept"], row["valid_from"], row["valid_to"], row["revoked_at"], row["added"])
