"""Chaos run: departments keep writing while the broker, the hub and the nodes are broken under them.

Three departments' sources change all the time (new rows, changed rows, deleted rows, rows the node must
refuse) while every broker connection is force-closed at a fixed interval, the broker application is stopped
and started once, the hub is SIGKILLed three times (once for longer than the nodes' receipt timeout, so
batches are sent again) and every node three times. Afterwards the hub must hold exactly what the sources
hold: every valid row's latest content as its current version once, deleted rows retracted, no version or
ledger leaf twice, a ledger as long as the versions accepted whose every checkpoint is a prefix of it (and
the hub's consistency proofs between them verify), empty outboxes, no alerts, nothing quarantined.

The broker is a private RabbitMQ node started for the run (its own node name, ports and data folder), so
stopping it does not disturb anyone else's use of the shared one; where rabbitmq-server cannot be started
that way the run reaches the shared broker through a relay of its own, and "stopping the broker" cuts that
relay: only this run's connections are cut or closed.

`make chaos` runs it at full size on SQLite and PostgreSQL hub stores (python tests/chaos.py --help);
tests/test_chaos.py runs a short one in `make test`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: support and test_node sit beside it

from cx.hub.store import checkpoints, departments, heartbeats, quarantine, record_versions, records  # noqa: E402
from cx.protocol.merkle import MerkleTree, leaf_hash, verify_consistency  # noqa: E402
from support import (  # noqa: E402
    AMQP, MANAGEMENT, BrokerRelay, Hub, Node, create_pg_database, drop_pg_database, free_port, get_json, make_hub,
    make_node, run_sync, unique,
)
from test_node import PENALTY_STREAM, penalty_row, sources, xzcf  # noqa: E402

DEPTS = ("amr", "tax", "hrss")
RECEIPT_TIMEOUT = 10.0  # the nodes' receipt_timeout_seconds (tests/support.py make_node)
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
snapshot_table = xzcf.to_metadata(sa.MetaData(), name="xzcf_snap")
SNAPSHOT_STREAM = (PENALTY_STREAM.split("[code_tables")[0].replace('name = "penalties"', 'name = "snapshot"')
                   .replace('table = "xzcf"', 'table = "xzcf_snap"').replace("-penalty-", "-snap-"))


@dataclass
class Plan:
    """How big and how hostile a run is."""

    rows: int = 200_000  # rows inserted in all, over all departments (changes and deletions come on top)
    store: str = "sqlite"
    close_every: float = 10.0  # seconds between force-closing every broker connection
    gap: float = 8.0  # seconds between two disruptions (kills, broker stop)
    settle_timeout: float = 900.0
    seed: int = 12

    @property
    def write_seconds(self) -> float:
        """Sources change for as long as the disruptions last: 13 events, one outage past the receipt timeout."""
        return 14 * self.gap + RECEIPT_TIMEOUT + 5


# -- the broker ------------------------------------------------------------------------------------------

class Broker:
    """A RabbitMQ broker the run may stop: private when it can be, the shared one through a relay otherwise."""

    def __init__(self, base: Path):
        self.base = base
        self.private = False
        self.amqp, self.management, self.node = AMQP, MANAGEMENT, ""
        self.env = dict(os.environ)
        self.process: subprocess.Popen | None = None
        self.relay: BrokerRelay | None = None  # the shared broker's: cut where a private node would be stopped

    def start(self) -> None:
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            print("chaos: rabbitmq-server not found, using the shared broker through a relay", flush=True)
            self.share()
            return
        amqp, dist, mgmt = free_port(), free_port(), free_port()
        self.node = f"{unique('cxchaos')}@localhost"
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{amqp}\nmanagement.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {mgmt}\n")
        self.env.update(HOME=str(self.base), RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_PORT=str(amqp),
                        RABBITMQ_DIST_PORT=str(dist), RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
                        RABBITMQ_LOG_BASE=str(self.base / "log"), RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq"),
                        RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
                        RABBITMQ_PID_FILE=str(self.base / "pid"))
        log = open(self.base / "server.log", "ab")
        self.process = subprocess.Popen([str(RABBITMQ_BIN / "rabbitmq-server")], env=self.env, stdout=log,
                                        stderr=log, start_new_session=True)
        try:
            self.await_startup()
        except RuntimeError as exc:
            self.shutdown()
            print(f"chaos: a private RabbitMQ node did not start ({exc}); using the shared broker through a relay",
                  flush=True)
            self.env, self.node = dict(os.environ), ""
            self.share()
            return
        self.private = True
        self.amqp, self.management = f"amqp://127.0.0.1:{amqp}/", f"http://127.0.0.1:{mgmt}"
        self.wait_management()

    def share(self) -> None:
        """Reach the shared broker through a relay of the run's own, whose cut no one else sees."""
        self.relay = BrokerRelay()
        self.amqp = self.relay.url

    def ctl(self, *args: str) -> None:
        cmd = [str(RABBITMQ_BIN / "rabbitmqctl") if self.node else "rabbitmqctl", *args]
        if self.node:
            cmd[1:1] = ["-n", self.node]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)}: {done.stdout[-500:]}{done.stderr[-500:]}")

    def await_startup(self, timeout: float = 120) -> None:
        """Until the node answers: await_startup fails at once while the node is not yet registered."""
        deadline = time.time() + timeout
        while True:
            try:
                self.ctl("await_startup", "--timeout", "30")
                return
            except RuntimeError:
                if time.time() > deadline or (self.process is not None and self.process.poll() is not None):
                    raise
                time.sleep(1)

    def api(self, method: str, *segments: str) -> Any:
        path = "/".join(urllib.parse.quote(s, safe="") for s in segments)
        request = urllib.request.Request(f"{self.management}/api/{path}", method=method, headers={
            "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(), "X-Reason": "chaos"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body.strip() else None

    def wait_management(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while True:
            try:
                self.api("GET", "overview")
                return
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)

    def close_connections(self, vhost: str) -> int:
        """Force-close every connection into the run's vhost; how many were closed."""
        closed = 0
        try:
            for conn in self.api("GET", "connections"):
                if conn.get("vhost") == vhost:
                    try:
                        self.api("DELETE", "connections", conn["name"])
                        closed += 1
                    except OSError:
                        pass  # gone by itself meanwhile
        except OSError:
            pass  # the broker is being restarted: nothing to close
        return closed

    def restart_app(self, down_seconds: float) -> None:
        """Stop the broker application, keep it down a while, start it again (the listener may need a moment).
        The shared broker keeps running: the run's relay to it is cut instead."""
        if self.relay is not None:
            self.relay.cut()
            time.sleep(down_seconds)
            self.relay.restore()
            return
        self.ctl("stop_app")
        try:
            time.sleep(down_seconds)
        finally:
            deadline = time.time() + 120
            while True:
                try:
                    self.ctl("start_app")
                    break
                except RuntimeError:
                    if time.time() > deadline:
                        raise
                    time.sleep(1)
            self.await_startup()
            self.wait_management()

    def shutdown(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        if self.process is None:
            return
        try:
            self.ctl("shutdown")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None


# -- the departments' sources --------------------------------------------------------------------------

@dataclass
class Source:
    """One department's source database: a cursor-read table that grows and changes, a snapshot-read
    table that also loses rows. Remembers what it did, so the run can say what the hub must hold."""

    dept: str
    url: str
    engine: sa.Engine = field(init=False)
    next_id: int = 1
    next_snap: int = 1
    tick: int = 0
    inserted: int = 0
    invalid: int = 0
    changed: int = 0
    deleted: set[int] = field(default_factory=set)
    checkpoints: dict[int, str] = field(default_factory=dict)  # the hub's checkpoints (size -> root), once checked

    def __post_init__(self) -> None:
        Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(self.url)
        xzcf.metadata.create_all(self.engine)
        snapshot_table.metadata.create_all(self.engine)
        self.stamp = datetime(2026, 3, 1, 8, 0, 0)

    def _row(self, i: int, rng: random.Random) -> dict:
        self.stamp += timedelta(milliseconds=1)
        invalid = rng.random() < 0.01
        self.invalid += invalid
        return {**penalty_row(i, invalid=invalid, stamp=str(self.stamp)), "wfss": f"发布虚假广告 {self.tick}"}

    def write(self, n: int, rng: random.Random) -> None:
        """n new rows, a few changed rows, and in the snapshot table rows added, changed and deleted."""
        self.tick += 1
        rows = [self._row(i, rng) for i in range(self.next_id, self.next_id + n)]
        self.next_id += n
        snap = [self._row(i, rng) for i in range(self.next_snap, self.next_snap + max(1, n // 50))]
        self.next_snap += len(snap)
        with self.engine.begin() as conn:
            if rows:
                conn.execute(xzcf.insert(), rows)
            conn.execute(snapshot_table.insert(), snap)
            for table, top in ((xzcf, self.next_id), (snapshot_table, self.next_snap)):
                for i in rng.sample(range(1, top), min(3, top - 1)):
                    self.stamp += timedelta(milliseconds=1)
                    self.changed += conn.execute(table.update().where(table.c.id == i).values(
                        wfss=f"经复核 {self.tick}", updated_at=self.stamp)).rowcount
            gone = rng.randrange(1, self.next_snap)
            if conn.execute(snapshot_table.delete().where(snapshot_table.c.id == gone)).rowcount:
                self.deleted.add(gone)
        self.inserted += len(rows) + len(snap)

    def expected(self) -> dict[str, str]:
        """record id -> the facts its latest valid content says, as the source holds it now."""
        out = {}
        with self.engine.connect() as conn:
            for table, kind in ((xzcf, "penalty"), (snapshot_table, "snap")):
                for i, facts, code in conn.execute(select(table.c.id, table.c.wfss, table.c.cflb)):
                    if code != "99":
                        out[f"{self.dept}-{kind}-{i}"] = facts
        return out


def node_body(source: Source) -> str:
    return (sources(source.url) + PENALTY_STREAM.format(mode='cursor = "updated_at"', dept=source.dept)
            + SNAPSHOT_STREAM.format(mode="", dept=source.dept))


# -- checks ----------------------------------------------------------------------------------------------

def outbox_state(node: Node) -> dict[str, int]:
    """What a node's outbox holds unsettled, refused and alarmed about; resends so far."""
    try:
        db = sqlite3.connect(f"file:{node.dir / 'outbox.db'}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:
        return {"missing": 1}
    try:
        one = lambda q: db.execute(q).fetchone()[0]  # noqa: E731
        return {
            "records_unsettled": one("SELECT COUNT(*) FROM records WHERE state IN ('pending', 'batched')"),
            "records_refused": one("SELECT COUNT(*) FROM records WHERE state = 'refused'"),
            "batches_unreceipted": one("SELECT COUNT(*) FROM batches WHERE state IN ('ready', 'sent')"),
            "batches_refused": one("SELECT COUNT(*) FROM batches WHERE state = 'refused'"),
            "alerts_open": one("SELECT COUNT(*) FROM alerts WHERE resolved IS NULL"),
            "rejections_hub": one("SELECT COUNT(*) FROM rejections WHERE origin = 'hub'"),
            "checkpoints_unverified": one("SELECT COUNT(*) FROM checkpoints WHERE verified = 0"),
            "batches": one("SELECT COUNT(*) FROM batches"),
            "batches_resent": one("SELECT COUNT(*) FROM batches WHERE attempts >= 2"),
        }
    except sqlite3.OperationalError:
        return {"missing": 1}
    finally:
        db.close()


UNSETTLED = ("missing", "records_unsettled", "batches_unreceipted")


def hub_problems(hub: Hub, sources_: list[Source]) -> tuple[list[str], dict[str, Any]]:
    """Everything in the hub's store that disagrees with the sources; and the store's figures."""
    problems: list[str] = []
    figures: dict[str, Any] = {"versions": 0, "retracted": 0, "checkpoints": 0}
    store = hub.store()
    try:
        with store.reader.connect() as conn:
            n = conn.execute(select(func.count()).select_from(quarantine)).scalar()
            if n:
                problems.append(f"{n} messages quarantined")
            for dept, alerts in conn.execute(select(heartbeats.c.dept, heartbeats.c.alerts)):
                if json.loads(alerts or "{}"):
                    problems.append(f"{dept}: the node's heartbeat reports alerts {alerts}")
            for source in sources_:
                problems += dept_problems(conn, source, figures)
    finally:
        store.dispose()
    return problems, figures


def dept_problems(conn: sa.Connection, source: Source, figures: dict[str, Any]) -> list[str]:
    dept, problems = source.dept, []
    versions = conn.execute(
        select(record_versions.c.record_id, record_versions.c.version, record_versions.c.op, record_versions.c.line,
               record_versions.c.leaf_hash, record_versions.c.ledger_index)
        .where(record_versions.c.dept == dept).order_by(record_versions.c.ledger_index)).all()
    figures["versions"] += len(versions)
    if [v.ledger_index for v in versions] != list(range(len(versions))):
        problems.append(f"{dept}: ledger indexes are not 0..{len(versions) - 1}")
    if len({(v.record_id, v.version) for v in versions}) != len(versions):
        problems.append(f"{dept}: a version is stored twice")
    leaves = [bytes(v.leaf_hash) for v in versions]
    if len(set(leaves)) != len(leaves):
        problems.append(f"{dept}: a ledger leaf appears twice")
    if any(leaf_hash(bytes(v.line)) != bytes(v.leaf_hash) for v in versions):
        problems.append(f"{dept}: a leaf hash does not match its line")
    size = conn.execute(select(departments.c.ledger_size).where(departments.c.dept == dept)).scalar()
    if size != len(versions):
        problems.append(f"{dept}: ledger size {size} but {len(versions)} versions accepted")

    lines = {v.version: bytes(v.line) for v in versions}
    current = {r.record_id: r for r in conn.execute(
        select(records.c.record_id, records.c.version, records.c.status).where(records.c.dept == dept))}
    expected = source.expected()
    for rid, facts in expected.items():
        held = current.get(rid)
        if held is None or held.status != "active":
            problems.append(f"{dept}: {rid} is {held.status if held else 'missing'} at the hub")
        elif held.version not in lines or json.loads(lines[held.version])["data"]["facts"] != facts:
            problems.append(f"{dept}: {rid}'s current version is not the source's latest content")
    for rid, held in current.items():
        if rid not in expected:
            kind, i = rid.split("-")[1], int(rid.rsplit("-", 1)[1])
            if kind != "snap" or i not in source.deleted or held.status != "retracted":
                problems.append(f"{dept}: {rid} ({held.status}) is not in the source")
            else:
                figures["retracted"] += 1

    tree = MerkleTree(leaves)
    source.checkpoints = dict(conn.execute(select(checkpoints.c.size, checkpoints.c.root).where(
        checkpoints.c.dept == dept)).all())
    for cp_size, root in source.checkpoints.items():
        if cp_size > len(leaves) or tree.root(cp_size).hex() != root:
            problems.append(f"{dept}: checkpoint {cp_size} is not a prefix of the ledger")
    figures["checkpoints"] += len(source.checkpoints)
    if max(source.checkpoints, default=0) != len(leaves):
        problems.append(f"{dept}: the latest checkpoint covers {max(source.checkpoints, default=0)} of "
                        f"{len(leaves)} leaves")
    return problems


async def proofs_verify(hub: Hub, source: Source, rng: random.Random, pairs: int) -> int:
    """Ask the hub for consistency proofs between random pairs of its checkpoints; verify each."""
    roots, checked = source.checkpoints, 0
    for _ in range(pairs if len(roots) > 1 else 0):
        old, new = sorted(rng.sample(sorted(roots), 2))
        status, doc = await get_json(f"{hub.api}/api/v1/departments/{source.dept}/consistency", old=old, new=new)
        assert status == 200, doc
        verify_consistency(old, new, bytes.fromhex(roots[old]), bytes.fromhex(roots[new]),
                           [bytes.fromhex(h) for h in doc["proof"]])
        checked += 1
    return checked


# -- the run ---------------------------------------------------------------------------------------------

@contextmanager
def hub_store(kind: str, base: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{base / 'hub' / 'hub.db'}"
        return
    db = create_pg_database()
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
    finally:
        drop_pg_database(db)


class Run:
    """One chaos run: set up, disrupt while the sources change, settle, check. `figures` says what happened."""

    def __init__(self, plan: Plan, base: Path):
        self.plan, self.base = plan, base
        self.rng = random.Random(plan.seed)
        self.figures: dict[str, Any] = {"store": plan.store, "connections_closed": 0, "close_rounds": 0,
                                        "hub_kills": 0, "node_kills": 0, "broker_restarts": 0}
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def execute(self) -> dict[str, Any]:
        broker = Broker(self.base / "rabbitmq")
        broker.start()
        self.figures["broker"] = "private" if broker.private else "shared"
        try:
            with hub_store(self.plan.store, self.base) as url:
                hub = make_hub(self.base / "hub", DEPTS, store_url=url, amqp=broker.amqp,
                               management=broker.management)
                try:
                    self.with_hub(broker, hub)
                finally:
                    hub.kill()
                    if not broker.private:
                        from support import delete_broker_state
                        run_sync(delete_broker_state(hub.topology))
        finally:
            broker.shutdown()
        return self.figures

    def with_hub(self, broker: Broker, hub: Hub) -> None:
        self.sources = [Source(d, f"sqlite:///{self.base / d / 'source.db'}") for d in DEPTS]
        self.nodes = [make_node(hub, s.dept, self.base / s.dept, node_body(s), delivery="retry_max_seconds = 2")
                      for s in self.sources]
        hub.start()
        for node in self.nodes:
            node.start()
        threads = [threading.Thread(target=self.guard(self.write), name="writer"),
                   threading.Thread(target=self.guard(self.close_connections, broker, hub), name="closer")]
        started = time.monotonic()
        for t in threads:
            t.start()
        try:
            self.disrupt(broker, hub)
            threads[0].join()
        finally:
            self.stop.set()
            for t in threads:
                t.join()
        if self.errors:
            raise self.errors[0]
        self.figures["disrupted_seconds"] = round(time.monotonic() - started, 1)
        try:
            self.settle(hub)
        finally:
            for node in self.nodes:
                node.kill(signal.SIGTERM)
        self.figures["total_seconds"] = round(time.monotonic() - started, 1)

    def guard(self, fn, *args):
        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                self.errors.append(exc)
                self.stop.set()
        return run

    def write(self) -> None:
        """Spread the rows over the disruptions: a write to each source every half second."""
        rng = random.Random(self.plan.seed + 1)
        ticks = max(1, int(self.plan.write_seconds / 0.5))
        per_tick = -(-self.plan.rows // (ticks * len(self.sources)))
        left = self.plan.rows
        start = time.monotonic()
        for tick in range(ticks):
            if self.stop.is_set():
                return
            for source in self.sources:
                n = min(per_tick, left)
                source.write(n, rng)
                left -= n
            time.sleep(max(0.0, start + (tick + 1) * 0.5 - time.monotonic()))
        self.figures["rows_inserted"] = sum(s.inserted for s in self.sources)
        self.figures["rows_invalid"] = sum(s.invalid for s in self.sources)
        self.figures["rows_changed"] = sum(s.changed for s in self.sources)
        self.figures["rows_deleted"] = sum(len(s.deleted) for s in self.sources)

    def close_connections(self, broker: Broker, hub: Hub) -> None:
        while not self.stop.wait(self.plan.close_every):
            self.figures["connections_closed"] += broker.close_connections(hub.topology.vhost)
            self.figures["close_rounds"] += 1

    def disrupt(self, broker: Broker, hub: Hub) -> None:
        """13 disruptions a gap apart in a shuffled order: hub kills (one a long outage), node kills, broker."""
        events: list[tuple[str, Any]] = [("hub", False), ("hub", False), ("hub", True), ("broker", None)]
        events += [("node", node) for node in self.nodes for _ in range(3)]
        self.rng.shuffle(events)
        for kind, what in events:
            if self.stop.wait(self.plan.gap):
                return
            self.alive(hub)
            if kind == "hub":
                hub.kill()
                self.figures["hub_kills"] += 1
                time.sleep(RECEIPT_TIMEOUT + 5 if what else 1)
                hub.start(f"hub-{self.figures['hub_kills']}.log")
            elif kind == "node":
                what.kill()
                self.figures["node_kills"] += 1
                time.sleep(0.5)
                what.start(f"node-{self.figures['node_kills']}.log")
            else:
                broker.restart_app(down_seconds=3)
                self.figures["broker_restarts"] += 1

    def alive(self, hub: Hub) -> None:
        """The hub and every node still run (the disruptions restart them; nothing may stop by itself)."""
        for what, process, folder in [("hub", hub.process, hub.dir)] + [
                (f"{n.dept}'s node", n.process, n.dir) for n in self.nodes]:
            assert process is not None and process.poll() is None, f"the {what} stopped by itself: see {folder}"

    def settle(self, hub: Hub) -> None:
        """Wait until the outboxes are empty and the hub agrees with the sources, then check everything."""
        started = time.monotonic()
        deadline = started + self.plan.settle_timeout
        problems: list[str] = ["not checked yet"]
        while time.monotonic() < deadline:
            self.alive(hub)
            states = [outbox_state(n) for n in self.nodes]
            if not any(s.get(k) for s in states for k in UNSETTLED):
                time.sleep(3)  # a snapshot pass over the source after its last change
                problems, store_figures = hub_problems(hub, self.sources)
                if not problems:
                    break
            time.sleep(2)
        self.figures["settle_seconds"] = round(time.monotonic() - started, 1)
        self.alive(hub)
        assert not problems, f"after {self.figures['settle_seconds']} s: " + "; ".join(problems[:20])
        states = [outbox_state(n) for n in self.nodes]
        for node, state in zip(self.nodes, states):
            for key in ("records_unsettled", "records_refused", "batches_unreceipted", "batches_refused",
                        "alerts_open", "rejections_hub", "checkpoints_unverified"):
                assert not state[key], f"{node.dept}'s outbox: {state}"
        self.figures.update(store_figures)
        self.figures["batches"] = sum(s["batches"] for s in states)
        self.figures["batches_resent"] = sum(s["batches_resent"] for s in states)
        assert self.figures["batches_resent"] > 0, "no batch was sent again: the resend path did not run"
        self.figures["proofs_verified"] = sum(
            run_sync(proofs_verify(hub, s, self.rng, 40)) for s in self.sources)


def run(plan: Plan, keep: bool = False) -> dict[str, Any]:
    """One chaos run in a fresh folder (removed afterwards unless it failed or `keep`); its figures."""
    base = Path(tempfile.mkdtemp(prefix=f"cx-chaos-{plan.store}-"))
    try:
        figures = Run(plan, base).execute()
    except BaseException:
        print(f"chaos: the run's folder (logs, sources, outboxes) is kept in {base}", file=sys.stderr, flush=True)
        raise
    if keep:
        print(f"chaos: kept {base}", flush=True)
    else:
        shutil.rmtree(base, ignore_errors=True)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=Plan.rows, help="rows inserted over all departments")
    ap.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--close-every", type=float, default=Plan.close_every, help="seconds between forced closes")
    ap.add_argument("--gap", type=float, default=Plan.gap, help="seconds between disruptions")
    ap.add_argument("--seed", type=int, default=Plan.seed)
    ap.add_argument("--keep", action="store_true", help="keep the run's folder (logs, sources, outboxes)")
    args = ap.parse_args()
    stores = ("sqlite", "postgresql") if args.store == "both" else (args.store,)
    for store in stores:
        plan = Plan(rows=args.rows, store=store, close_every=args.close_every, gap=args.gap, seed=args.seed)
        figures = run(plan, keep=args.keep)
        print(json.dumps(figures, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
