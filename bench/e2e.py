"""End to end: department nodes draining SQLite sources into a running hub, against the raw broker in the same run.

    python bench/e2e.py [--quick] [--runs 3] [--rows 100000] [--million 1000000] [--depts 4] [--dept-rows 25000]
                        [--million-runs 3] [--stores sqlite,postgresql] [--million-stores sqlite] [--baseline 50000]
                        [--loads 1000,5000] [--load-seconds 60] [--out bench-results]

Everything is its own: a vhost and broker users per hub (and one for the baseline), the hub's store (SQLite
file or a PostgreSQL database of its own), the departments' keys, generated SQLite sources of
administrative_penalty rows; all of it is removed afterwards.

- baseline: one aio-pika process publishing one persistent message per record (the mean record line's size)
  to a durable queue with publisher confirms, and consuming it with a manual ack per message.
- pipeline: `cx node run --once` draining a source into a hub started afresh for every run, every receipt
  verified by the node; each pipeline run directly follows a baseline run (its pair) and is divided by it.
  Reported per scenario: records/s (node start to exit) as median, min and max; CPU seconds per record of
  the node, the hub and the broker (the beam.smp on 5672, shared with whatever else uses it); peak RSS of node
  and hub;
  the outbox's size on disk; the mean record line in bytes; how long after the node's exit the hub's derived
  views held every version (they wait for a lull in ingest), and the hub's CPU for that catch-up.
- latency: a writer inserts rows into the source at a steady rate while `cx node run` runs as a service;
  the outbox's own timestamps give commit -> verified receipt, the hub's `record_versions.accepted` and the
  row's insertion time give source -> hub (past --drain-seconds, of the records that arrived, counted).

Figures go to <out>/e2e.json and <out>/e2e.md with the machine and the issue's targets; progress to stderr.
The machine may be shared: pairs measured back to back are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import aio_pika  # noqa: E402
import psycopg  # noqa: E402
from sqlalchemy import select  # noqa: E402

from examples import EXAMPLES  # noqa: E402
from hub_ingest import cpu_seconds  # noqa: E402
from support import (  # noqa: E402
    AMQP, MANAGEMENT, PG_ADMIN, Hub, create_pg_database, delete_broker_state, drop_pg_database, make_hub, make_node,
    run_sync, unique,
)

from cx.hub.broker import ManagementAPI  # noqa: E402
from cx.protocol.codes import make_uscc  # noqa: E402
from cx.hub.store import record_versions  # noqa: E402

PENALTY = EXAMPLES["administrative_penalty"]
SUBJECT_ROWS = 5  # source rows per enterprise
SOURCE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy keeps a DateTime in SQLite: the sql adapter reads it back
STREAM = f"""
[sources.db]
adapter = "sql"
url = "sqlite:///{{source}}"

[[streams]]
name = "penalties"
source = "db"
type = "administrative_penalty"
table = "xzcf"
key = ["id"]
cursor = "updated_at"
record_id = "{{dept}}-penalty-{{{{id}}}}"
entered_by = "lrr"
[streams.fields]
subject_name = "dsr_mc"
subject_category = {{{{ const = "legal_person" }}}}
uscc = "tyshxydm"
legal_rep = "fddbr"
authority = {{{{ const = "{PENALTY['authority']}" }}}}
authority_uscc = {{{{ const = "{PENALTY['authority_uscc']}" }}}}
decision_no = "cfjdswh"
violation_type = "wflx"
facts = "wfss"
legal_basis = "cfyj"
penalty_types = {{{{ column = "cflb", map = "penalty_codes" }}}}
content = "cfnr"
fine_amount = "fkje"
decision_date = "cfjdrq"
[code_tables.penalty_codes]
"01" = "警告"
"02" = "罚款"
"""
XZCF = """CREATE TABLE xzcf(id INTEGER PRIMARY KEY, dsr_mc VARCHAR(200), tyshxydm VARCHAR(18), fddbr VARCHAR(50),
    cfjdswh VARCHAR(100), wflx VARCHAR(100), wfss TEXT, cfyj TEXT, cflb VARCHAR(50), cfnr TEXT, fkje NUMERIC(12, 2),
    cfjdrq VARCHAR(20), updated_at DATETIME, lrr VARCHAR(50))"""
FACTS = ("经查，当事人在其经营场所及网络平台发布的广告中，使用“国家级”“最佳”等用语，并对商品的性能、功能作虚假宣传，"
         "误导消费者，违反了相关规定。")
# what `cx node run` needs changed for a benchmark: no resend of a batch the hub is still working on
TUNED = {"receipt_timeout_seconds": 600, "heartbeat_seconds": 30}
KEYS = re.compile(r"^(\w+) = .*$", re.M)


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@functools.cache
def subject(n: int) -> str:
    """The credit code of the benchmark's enterprise number n (valid, distinct for each n)."""
    return make_uscc("9", "1", "410300", f"MA{n:06d}")


def penalty_row(i: int, stamp: datetime) -> tuple:
    """One source row; its record line is 780-900 bytes (the mean about 840, as the departments' are).

    Rows name enterprises the way a department's penalties do: about five per enterprise, so the hub's
    per-enterprise views (credit standing, search) do the work they do on real data, not one enterprise's
    100,000 records recomputed on every batch.
    """
    return (i, f"洛阳市测试{i // SUBJECT_ROWS}商贸有限公司", subject(i // SUBJECT_ROWS), "张三", f"洛市监罚〔2026〕{i}号", "虚假宣传",
            FACTS[: 25 + i % 21], "《中华人民共和国广告法》第五十五条", "01、02", "警告，罚款人民币贰万元", "20000.00",
            "2026/3/1", stamp.strftime(SOURCE_TIME), "张三")


def make_source(path: Path, rows: int) -> Path:
    """A SQLite source of `rows` penalty rows (WAL, so a writer and the node's reader do not block each other)."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(XZCF)
    db.execute("CREATE INDEX xzcf_cursor ON xzcf(updated_at, id)")
    base = datetime(2026, 3, 1, 8, 0, 0)
    for start in range(1, rows + 1, 10000):
        db.executemany(f"INSERT INTO xzcf VALUES ({', '.join('?' * 14)})",
                       [penalty_row(i, base + timedelta(milliseconds=i)) for i in range(start, min(start + 10000, rows + 1))])
    db.commit()
    db.close()
    return path


def tune(node_toml: Path, keys: dict) -> None:
    """Set [delivery] keys in a node.toml `make_node` wrote (replacing the test defaults it has)."""
    text = node_toml.read_text()
    present = set(KEYS.findall(text))
    for key, value in keys.items():
        if key in present:
            text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
        else:
            text = text.replace("[delivery]\n", f"[delivery]\n{key} = {value}\n", 1)
    node_toml.write_text(text)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def broker_pid(port: int = 5672) -> int | None:
    """The RabbitMQ VM (beam.smp) listening on the AMQP port, for its CPU time (another may run beside it)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].rsplit(":", 1)[1] == f"{port:04X}" and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == "beam.smp" and any(
                    os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


def outbox_bytes(node_dir: Path) -> int:
    return sum(p.stat().st_size for p in node_dir.glob("outbox.db*"))


def mean_line_bytes(node_dir: Path) -> float:
    db = sqlite3.connect(f"file:{node_dir / 'outbox.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT AVG(LENGTH(line)) FROM records").fetchone()[0] or 0.0
    finally:
        db.close()


@dataclass
class Spawned:
    """A process started by the benchmark: CPU time from wait4 when it ends, peak RSS sampled while it runs.

    Not ru_maxrss: a child spawned with vfork (posix_spawn, Popen) inherits its parent's high-water mark at
    exec, so it would report the benchmark's own RSS. VmHWM only grows, so the last sample is the peak to
    within the sampling interval.
    """

    name: str
    argv: list[str]
    log: Path
    pid: int = 0
    cpu: float = 0.0
    peak_mib: float = 0.0
    status: int | None = None  # the exit status, once waited for

    def start(self) -> None:
        # posix_spawn, not Popen: nothing but `poll` may reap the process, or its rusage is lost
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.pid = os.posix_spawn(self.argv[0], self.argv, os.environ, setsid=True, file_actions=[
                (os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)])
        finally:
            os.close(fd)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process's session, if it still runs, and wait for it."""
        if self.pid and self.status is None:
            os.killpg(self.pid, sig)
            while self.poll() is None:
                time.sleep(0.05)

    def poll(self) -> int | None:
        """The exit status once the process has ended (reaped here), else None after sampling its RSS."""
        if self.status is None:
            try:
                self.peak_mib = max(self.peak_mib, peak_rss_mib(self.pid))
            except (OSError, RuntimeError):
                pass  # ending: its last sample stands
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.cpu = usage.ru_utime + usage.ru_stime
                self.status = os.waitstatus_to_exitcode(status)
        return self.status


def wait_all(procs: list[Spawned]) -> None:
    while None in [p.poll() for p in procs]:  # every one sampled each time
        time.sleep(0.05)


@dataclass
class Setup:
    """A hub of its own with its departments, their nodes and sources, torn down by `close`."""

    tmp: Path
    store: str
    depts: list[str]
    hub: Hub = field(init=False)
    database: str | None = None

    def __post_init__(self) -> None:
        if self.store == "postgresql":
            self.database = create_pg_database()
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.database}"
        else:
            url = "sqlite:///hub.db"
        self.hub = make_hub(self.tmp / "hub", self.depts, store_url=url)

    def node(self, dept: str, source: Path, delivery: dict) -> Path:
        node = make_node(self.hub, dept, self.tmp / f"node-{dept}", STREAM.format(source=source, dept=dept))
        tune(node.config, {**TUNED, **delivery})
        return node.dir

    def close(self) -> None:
        self.hub.kill()
        run_sync(delete_broker_state(self.hub.topology))
        if self.database:
            drop_pg_database(self.database)


def node_argv(node_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cx.cli", "node", "run", "--config", str(node_dir / "node.toml"), *extra]


def pipeline(tmp: Path, store: str, sources: dict[str, Path], rows: int, args: argparse.Namespace) -> dict:
    """One `--once` drain of every source at once into a fresh hub: the run's figures."""
    setup = Setup(tmp, store, list(sources))
    procs: list[Spawned] = []
    try:
        nodes = {dept: setup.node(dept, source, {"batch_max_records": args.batch}) for dept, source in sources.items()}
        setup.hub.start()
        hub_pid, beam = setup.hub.process.pid, broker_pid()
        hub_cpu, beam_cpu = cpu_seconds(hub_pid), cpu_seconds(beam) if beam else 0.0
        procs += [Spawned(dept, node_argv(d, "--once", "--timeout", str(args.node_timeout)), d / "run.log")
                  for dept, d in nodes.items()]
        started = time.perf_counter()
        for proc in procs:
            proc.start()
        wait_all(procs)
        failed = [p for p in procs if p.status != 0]
        elapsed = time.perf_counter() - started
        ingest_cpu = cpu_seconds(hub_pid)
        hub_cpu, beam_cpu = ingest_cpu - hub_cpu, (cpu_seconds(beam) - beam_cpu) if beam else None
        views = wait_views_current(setup.hub) if not failed else None  # the projections catch up after the burst
        views_cpu = cpu_seconds(hub_pid) - ingest_cpu
        hub_peak = peak_rss_mib(hub_pid)
        if failed:
            raise RuntimeError(f"node {failed[0].name} exited with {failed[0].status}: "
                               f"{failed[0].log.read_text()[-2000:]}")
        total = rows * len(sources)
        held = hub_versions(setup.hub)
        if held != total:
            raise RuntimeError(f"the hub holds {held} record versions, {total} were sent")
        return {
            "records": total, "seconds": round(elapsed, 2), "records_per_second": round(total / elapsed),
            # the same, counted until the hub's derived views (timeliness, credit, search) held every version too
            "records_per_second_views_current": round(total / (elapsed + (views or 0))),
            "cpu_us_per_record": {"node": round(sum(p.cpu for p in procs) / total * 1e6, 1),
                                  "hub": round(hub_cpu / total * 1e6, 1),
                                  "broker": round(beam_cpu / total * 1e6, 1) if beam_cpu is not None else None},
            "views_current_after_seconds": round(views, 2) if views is not None else None,
            "views_cpu_us_per_record": round(views_cpu / total * 1e6, 1),
            "peak_rss_mib": {"node": round(max(p.peak_mib for p in procs), 1), "hub": round(hub_peak, 1)},
            "outbox_mib": round(sum(outbox_bytes(d) for d in nodes.values()) / len(nodes) / 2**20, 1),
            "mean_line_bytes": round(statistics.mean(mean_line_bytes(d) for d in nodes.values())),
        }
    finally:
        for proc in procs:
            proc.stop()
        setup.close()


def projection_lag(hub: Hub) -> float:
    with urllib.request.urlopen(f"{hub.api}/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("cx_projection_lag_versions "):
                return float(line.split()[1])
    raise RuntimeError("the hub's /metrics has no cx_projection_lag_versions")


def wait_views_current(hub: Hub, limit: float = 900.0) -> float:
    """Seconds until the hub's derived views (timeliness, credit, search) hold every accepted version."""
    started = time.perf_counter()
    while projection_lag(hub) != 0:
        if time.perf_counter() - started > limit:
            raise RuntimeError(f"the hub's views were still behind after {limit:.0f} s")
        time.sleep(0.1)
    return time.perf_counter() - started


def hub_versions(hub: Hub) -> int:
    from sqlalchemy import func

    store = hub.store()
    try:
        with store.reader.connect() as conn:
            return conn.execute(select(func.count()).select_from(record_versions)).scalar_one()
    finally:
        store.dispose()


async def baseline(messages: int, size: int, window: int) -> dict:
    """The raw broker: persistent messages to a durable queue, each confirmed, each consumed and acked."""
    vhost = unique("cxbench-")
    async with ManagementAPI(MANAGEMENT, "guest", "guest") as api:
        await api.put_vhost(vhost, "benchmark baseline")
        await api.put_permissions(vhost, "guest", configure=".*", write=".*", read=".*")
        try:
            conn = await aio_pika.connect(f"{AMQP}{vhost}")
            async with conn:
                publish_channel = await conn.channel(publisher_confirms=True)
                consume_channel = await conn.channel()
                await consume_channel.set_qos(prefetch_count=window)
                queue = await consume_channel.declare_queue("baseline", durable=True)
                done = asyncio.Event()
                consumed = 0

                async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                    nonlocal consumed
                    await message.ack()
                    consumed += 1
                    if consumed == messages:
                        done.set()

                await queue.consume(on_message)
                body = b"x" * size
                shares = [messages // window + (n < messages % window) for n in range(window)]

                async def publisher(count: int) -> None:  # one of `window` publishes awaiting their confirm
                    for _ in range(count):
                        await publish_channel.default_exchange.publish(
                            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), "baseline")

                started = time.perf_counter()
                async with asyncio.TaskGroup() as group:  # the first failure cancels the rest
                    for count in shares:
                        group.create_task(publisher(count))
                await asyncio.wait_for(done.wait(), timeout=60 + messages / 100)
                elapsed = time.perf_counter() - started
        finally:
            await api.delete_vhost(vhost)
    return {"messages": messages, "seconds": round(elapsed, 2), "records_per_second": round(messages / elapsed)}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def percentiles(values_ms: list[float]) -> dict:
    values = sorted(values_ms)
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 1)

    return {"n": len(values), "p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(values[-1], 1)}


def latency(tmp: Path, rate: int, seconds: float, args: argparse.Namespace) -> dict:
    """A writer inserts `rate` rows/s for `seconds` while the node runs as a service; both latencies."""
    tmp.mkdir()
    source = make_source(tmp / "source.db", 0)
    setup = Setup(tmp, "sqlite", ["amr"])
    node = None
    try:
        node_dir = setup.node("amr", source, {"poll_seconds": args.poll, "linger_seconds": args.linger,
                                              "batch_max_records": args.batch})
        setup.hub.start()
        node = Spawned("amr", node_argv(node_dir), node_dir / "service.log")
        node.start()
        time.sleep(3)  # connected and idle
        inserted: dict[int, datetime] = {}
        writer = threading.Thread(target=write_steadily, args=(source, rate, seconds, inserted))
        writer.start()
        writer.join()
        total = len(inserted)
        deadline = time.time() + args.drain_seconds
        while (hub_versions(setup.hub) < total or unreceipted(node_dir)) and time.time() < deadline:
            time.sleep(0.5)  # past the deadline, the figures are of what arrived (the records count says how many)
        node.stop(signal.SIGTERM)
        db = sqlite3.connect(f"file:{node_dir / 'outbox.db'}?mode=ro", uri=True)
        commit_to_receipt = [(parse_time(b) - parse_time(c)).total_seconds() * 1000 for c, b in db.execute(
            "SELECT r.created, b.receipted FROM records r JOIN batches b ON b.batch_id = r.batch_id "
            "WHERE b.receipted IS NOT NULL")]  # past the drain deadline some may still wait
        db.close()
        store = setup.hub.store()
        with store.reader.connect() as conn:
            accepted = conn.execute(select(record_versions.c.record_id, record_versions.c.accepted)).all()
        store.dispose()
        source_to_hub = [(parse_time(at) - inserted[int(rid.rsplit("-", 1)[1])]).total_seconds() * 1000
                         for rid, at in accepted]
        return {"offered_per_second": rate, "seconds": seconds, "records": total,
                "arrived": len(accepted),  # percentiles are of these when the drain timed out
                "outbox_commit_to_verified_receipt_ms": percentiles(commit_to_receipt),
                "source_insert_to_hub_accepted_ms": percentiles(source_to_hub)}
    finally:
        if node is not None:
            node.stop()
        setup.close()


def unreceipted(node_dir: Path) -> int:
    db = sqlite3.connect(f"file:{node_dir / 'outbox.db'}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT COUNT(*) FROM records WHERE state IN ('pending', 'batched')").fetchone()[0]
    finally:
        db.close()


def write_steadily(source: Path, rate: int, seconds: float, inserted: dict[int, datetime]) -> None:
    """Insert rows at `rate` per second (a transaction every 10 ms), each stamped with its insertion time."""
    db = sqlite3.connect(source, isolation_level=None)
    started = time.perf_counter()
    i = 0
    while (now := time.perf_counter() - started) < seconds:
        due = int(now * rate)
        if due > i:
            stamp = datetime.now(timezone.utc)
            db.execute("BEGIN")
            db.executemany(f"INSERT INTO xzcf VALUES ({', '.join('?' * 14)})",
                           [penalty_row(n, stamp.replace(tzinfo=None)) for n in range(i + 1, due + 1)])
            db.execute("COMMIT")
            for n in range(i + 1, due + 1):
                inserted[n] = stamp
            i = due
        time.sleep(0.01)
    db.close()


def summary(runs: list[dict], baselines: list[dict]) -> dict:
    rates = [r["records_per_second"] for r in runs]
    ratios = [r["records_per_second"] / b["records_per_second"] for r, b in zip(runs, baselines)]

    def med(path: tuple[str, str]) -> float | None:
        values = [r[path[0]][path[1]] for r in runs if r[path[0]][path[1]] is not None]
        return round(statistics.median(values), 1) if values else None

    return {
        "records_per_second": {"median": round(statistics.median(rates)), "min": min(rates), "max": max(rates)},
        "ratio_to_baseline": {"median": round(statistics.median(ratios), 2), "min": round(min(ratios), 2),
                              "max": round(max(ratios), 2)},
        "cpu_us_per_record": {p: med(("cpu_us_per_record", p)) for p in ("node", "hub", "broker")},
        "records_per_second_views_current": round(statistics.median(
            r["records_per_second_views_current"] for r in runs)),
        "views_current_after_seconds": statistics.median(
            [r["views_current_after_seconds"] for r in runs if r["views_current_after_seconds"] is not None] or [0]),
        "views_cpu_us_per_record": statistics.median(r["views_cpu_us_per_record"] for r in runs),
        "peak_rss_mib": {p: max(r["peak_rss_mib"][p] for r in runs) for p in ("node", "hub")},
        "outbox_mib": max(r["outbox_mib"] for r in runs),
        "mean_line_bytes": runs[0]["mean_line_bytes"],
        "runs": runs, "baselines": baselines,
    }


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")))

    async def rabbitmq() -> str:
        async with ManagementAPI(MANAGEMENT, "guest", "guest") as api:
            return (await api.overview())["rabbitmq_version"]

    with psycopg.connect(PG_ADMIN) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    return {"cores": os.cpu_count(), "memory_gib": round(mem / 2**20, 1), "cpu": cpu, "os": platform.platform(),
            "python": platform.python_version(), "rabbitmq": run_sync(rabbitmq()), "postgresql": pg,
            "sqlite": sqlite3.sqlite_version, "commit": commit or "unknown"}


def targets(results: dict) -> list[dict]:
    """The issue's targets against this run's figures (MB = 10^6 bytes), labelled with the sizes really run."""
    s, p = results["scenarios"], results["parameters"]
    out = []

    def target(what: str, goal: str, figure: str, met: bool | None) -> None:
        out.append({"target": what, "goal": goal, "measured": figure, "met": met})

    if one := s.get("100k-sqlite"):
        rate, ratio = one["records_per_second"]["median"], one["ratio_to_baseline"]["median"]
        target(f"one node, {p['rows']:,} rows, hub on SQLite", "≥ 12,000 rec/s and ≥ 2.5× baseline",
               f"{rate:,} rec/s, {ratio}×", rate >= 12000 and ratio >= 2.5)
    if pg := s.get("100k-postgresql"):
        rate = pg["records_per_second"]["median"]
        target(f"one node, {p['rows']:,} rows, hub on PostgreSQL", "≥ 10,000 rec/s", f"{rate:,} rec/s", rate >= 10000)
    if one and (big := s.get("1m-sqlite")):
        share = big["records_per_second"]["median"] / one["records_per_second"]["median"]
        target(f"flat cost: {p['million']:,} rows vs {p['rows']:,} (SQLite)", "within 10 %",
               f"{share:.0%} of the {p['rows']:,}-row rate", share >= 0.9)
    if many := s.get("depts"):
        rate = many["records_per_second"]["median"]
        target(f"{p['depts']} departments at once", "≥ 15,000 rec/s", f"{rate:,} rec/s", rate >= 15000)
    if low := next((x for x in results["latency"] if x["offered_per_second"] == 1000), None):
        p99 = low["outbox_commit_to_verified_receipt_ms"]["p99"]
        complete = low["arrived"] == low["records"]
        target("p99 outbox commit → verified receipt at 1,000 rec/s", "≤ 250 ms",
               f"{p99} ms" + ("" if complete else " (of the records that arrived)"),
               complete and p99 is not None and p99 <= 250)
    if big := s.get("1m-sqlite"):
        node, hub = big["peak_rss_mib"]["node"] * 2**20 / 1e6, big["peak_rss_mib"]["hub"] * 2**20 / 1e6
        target(f"peak RSS draining {p['million']:,} rows", "node ≤ 120 MB, hub ≤ 150 MB",
               f"node {node:.0f} MB, hub {hub:.0f} MB", node <= 120 and hub <= 150)
    return out


def markdown(results: dict) -> str:
    m, p = results["machine"], results["parameters"]
    lines = [f"# End-to-end benchmark ({results['measured']})", "",
             f"{m['cores']} cores, {m['memory_gib']} GiB, {m['cpu']}; Python {m['python']}, RabbitMQ {m['rabbitmq']}, "
             f"PostgreSQL {m['postgresql']}, SQLite {m['sqlite']}; commit {m['commit']}.", "",
             f"{p['runs']} runs per scenario ({p['million_runs']} of the {p['million']:,}-row one), each after a baseline run of {p['baseline']:,} messages "
             f"({p['message_bytes']} bytes, {p['window']} in flight); batches of {p['batch']:,} records. "
             "Rates are records/s from the node's start to its exit; CPU µs per record; RSS in MiB. The hub's "
             "derived views (timeliness, credit, search) catch up after the burst: the seconds from the node's exit "
             "until they hold every version, and the hub's CPU for that, are shown apart, with the rate counted "
             "until then.", "",
             "| scenario | records/s median (min–max) | × baseline median (min–max) | baseline msg/s median "
             "| CPU µs/rec node / hub / broker | views current after s (hub CPU µs/rec) | records/s views "
             "current | peak RSS node / hub | outbox MiB | line bytes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in results["scenarios"].items():
        r, x, c, rss = s["records_per_second"], s["ratio_to_baseline"], s["cpu_us_per_record"], s["peak_rss_mib"]
        base = round(statistics.median(b["records_per_second"] for b in s["baselines"]))
        lines.append(f"| {s['title']} | {r['median']:,} ({r['min']:,}–{r['max']:,}) | {x['median']} ({x['min']}–"
                     f"{x['max']}) | {base:,} | {c['node']} / {c['hub']} / {c['broker']} "
                     f"| {s['views_current_after_seconds']:.1f} ({s['views_cpu_us_per_record']}) "
                     f"| {s['records_per_second_views_current']:,} | {rss['node']} / {rss['hub']} "
                     f"| {s['outbox_mib']} | {s['mean_line_bytes']} |")
    if results["latency"]:
        lines += ["", f"Latency, ms (node as a service, poll {p['poll']} s, linger {p['linger']} s):", "",
                  "| offered rec/s | records (at the hub within the drain time) | commit → verified receipt p50 / p95 / p99 / max "
                  "| source insert → hub accepted p50 / p95 / p99 / max |", "| --- | --- | --- | --- |"]
        for x in results["latency"]:
            a, b = x["outbox_commit_to_verified_receipt_ms"], x["source_insert_to_hub_accepted_ms"]
            lines.append(f"| {x['offered_per_second']:,} | {x['records']:,} ({x['arrived']:,}) "
                         f"| {a['p50']} / {a['p95']} / {a['p99']} / "
                         f"{a['max']} | {b['p50']} / {b['p95']} / {b['p99']} / {b['max']} |")
    lines += [f"\nFailed: {e}" for e in results["errors"]]
    lines += ["", "| target | goal | measured | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {t['target']} | {t['goal']} | {t['measured']} | {'met' if t['met'] else 'not met'} |"
              for t in results["targets"]]
    return "\n".join(lines) + "\n"


PARAMETERS = ("runs", "million_runs", "rows", "million", "depts", "dept_rows", "baseline", "window", "batch", "poll",
              "linger", "load_seconds")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a scaled-down run: sizes / 20, one latency minute "
                        "shortened to 15 s, 1 run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100_000, help="rows through one node (0: none)")
    parser.add_argument("--million", type=int, default=1_000_000, help="rows of the long run (0: none)")
    parser.add_argument("--depts", type=int, default=4)
    parser.add_argument("--dept-rows", type=int, default=25_000)
    parser.add_argument("--million-runs", type=int, default=3, help="runs of the --million scenario (at most --runs)")
    parser.add_argument("--attempts", type=int, default=3, help="tries of a pair whose baseline or pipeline fails")
    parser.add_argument("--stores", default="sqlite,postgresql", help="hub stores of the --rows scenario")
    parser.add_argument("--million-stores", default="sqlite", help="hub stores of the --million scenario")
    parser.add_argument("--baseline", type=int, default=50_000, help="messages per baseline run")
    parser.add_argument("--window", type=int, default=100, help="baseline: publishes awaiting confirms, prefetch")
    parser.add_argument("--batch", type=int, default=1000, help="the node's batch_max_records")
    parser.add_argument("--loads", default="1000,5000", help="offered loads of the latency runs, rec/s ('' for none)")
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--poll", type=float, default=0.1, help="latency runs: the node's poll_seconds")
    parser.add_argument("--linger", type=float, default=0.05, help="latency runs: the node's linger_seconds")
    parser.add_argument("--drain-seconds", type=float, default=300, help="latency runs: wait this long for the last")
    parser.add_argument("--node-timeout", type=float, default=3600, help="--timeout of `cx node run --once`")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    if args.quick:
        args.runs = args.million_runs = 1
        args.rows, args.million, args.dept_rows = args.rows // 20, args.million // 20, args.dept_rows // 20
        args.baseline, args.load_seconds = args.baseline // 20, 15

    # stopped by a signal, it still removes its hubs, vhosts, databases and files (nohup'd, SIGINT may be ignored)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="cx-bench-") as tmp_name:
        tmp = Path(tmp_name)
        say("generating sources")
        plan = []
        if args.rows:
            one = make_source(tmp / "source-one.db", args.rows)
            plan += [(f"100k-{store}", f"one node, {args.rows:,} rows, hub on {store}", store, {"amr": one},
                      args.rows) for store in args.stores.split(",") if store]
        if args.million:
            big = make_source(tmp / "source-million.db", args.million)
            plan += [(f"1m-{store}", f"one node, {args.million:,} rows, hub on {store}", store, {"amr": big},
                      args.million) for store in args.million_stores.split(",") if store]
        if args.depts:
            names = [f"d{n}" for n in range(args.depts)]
            part = make_source(tmp / "source-part.db", args.dept_rows)
            plan.append(("depts", f"{args.depts} departments × {args.dept_rows:,} rows at once, hub on sqlite",
                         "sqlite", dict.fromkeys(names, part), args.dept_rows))
        runs: dict[str, list[dict]] = {name: [] for name, *_ in plan}
        pairs: dict[str, list[dict]] = {name: [] for name, *_ in plan}
        results = {"measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
                   "parameters": {k: getattr(args, k) for k in PARAMETERS} | {"message_bytes": 842},
                   "scenarios": {}, "latency": [], "errors": []}
        loads = [int(x) for x in args.loads.split(",") if x]
        for rate in loads:
            say(f"latency at {rate:,} rec/s for {args.load_seconds:.0f} s")
            try:
                results["latency"].append(latency(tmp / f"latency-{rate}", rate, args.load_seconds, args))
            except Exception as exc:  # noqa: BLE001 - reported with the figures
                results["errors"].append(f"latency at {rate}/s: {exc}")
                say(f"latency at {rate}/s FAILED: {exc}")
                continue
            save(args.out, results, started)
            a, b = (results["latency"][-1][k] for k in ("outbox_commit_to_verified_receipt_ms",
                                                        "source_insert_to_hub_accepted_ms"))
            say(f"  commit → receipt p99 {a['p99']} ms, source → hub p99 {b['p99']} ms")
        for run in range(1, args.runs + 1):
            for name, title, store, sources, rows in plan:
                if name.startswith("1m-") and run > args.million_runs:
                    continue
                for attempt in range(1, args.attempts + 1):
                    try:
                        base = run_sync(baseline(args.baseline, results["parameters"]["message_bytes"], args.window))
                        say(f"run {run}/{args.runs} baseline: {base['records_per_second']:,} msg/s")
                        figures = pipeline(tmp / f"{name}-{run}", store, sources, rows, args)
                        break
                    except Exception as exc:  # noqa: BLE001 - the broker may be restarted under us: the pair again
                        results["errors"].append(f"{title}, run {run}, attempt {attempt}: {type(exc).__name__}: {exc}")
                        say(f"run {run}/{args.runs} {title} attempt {attempt} FAILED: {type(exc).__name__}: {exc}")
                        time.sleep(10)
                    finally:
                        shutil.rmtree(tmp / f"{name}-{run}", ignore_errors=True)
                else:
                    continue
                results["parameters"]["message_bytes"] = figures["mean_line_bytes"]
                runs[name].append(figures)
                pairs[name].append(base)
                results["scenarios"][name] = {"title": title, **summary(runs[name], pairs[name])}
                save(args.out, results, started)
                say(f"run {run}/{args.runs} {title}: {figures['records_per_second']:,} rec/s "
                    f"({figures['records_per_second'] / base['records_per_second']:.2f}× baseline), "
                    f"RSS node {figures['peak_rss_mib']['node']} hub {figures['peak_rss_mib']['hub']} MiB")
    save(args.out, results, started)
    print(markdown(results))
    say(f"figures in {args.out / 'e2e.json'} and {args.out / 'e2e.md'} ({results['wall_seconds']} s)")
    return 0 if len(results["scenarios"]) == len(plan) and len(results["latency"]) == len(loads) else 1


def save(out: Path, results: dict, started: float) -> None:
    """Write the figures so far (a long run that fails late keeps what it measured)."""
    results["wall_seconds"] = round(time.time() - started)
    results["targets"] = targets(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    (out / "e2e.md").write_text(markdown(results))


if __name__ == "__main__":
    sys.exit(main())
