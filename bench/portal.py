"""Portal at scale: search by name and enterprise pages of a running hub over 1,000,000 generated enterprises.

    python bench/portal.py [--store sqlite|postgresql|both] [--enterprises 1000000] [--records 5000000]
                           [--requests 2000] [--concurrency 4] [--out bench-results]

For each store: makes the corpus once (bench/portal_data.py: through the hub's ingest and projections; kept
under var/bench-portal/ and in a PostgreSQL database of its own, reused by later runs with the same sizes),
starts `cx hub run` on it with its own broker vhost, and drives the portal with a closed-loop HTTP client
(`--concurrency` clients, each sending its next request when the last one is answered): searches by name
(whole names, trade names, three- and two-character pieces), by credit code, and enterprise pages (ordinary
enterprises and the few with hundreds of records). Latency is measured per request at the client; the hub
process's CPU time per request says how much of it is the hub's own work. Results go to
bench-results/portal.json and portal.md with a description of the machine (which is shared: the load
average before and after each run is written down; compare figures from the same run).

Targets (issue 13): search by name p95 < 100 ms, enterprise page p95 < 200 ms. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from portal_data import FORMS, PLACES, Corpus, copy_store, load, say  # noqa: E402
from support import (  # noqa: E402
    AMQP, MANAGEMENT, PG_ADMIN, delete_broker_state, free_port, run_sync, unique, wait_http,
)

from cx.hub import registry  # noqa: E402
from cx.hub.broker import provision_hub  # noqa: E402
from cx.hub.config import HubConfig  # noqa: E402
from cx.hub.projections import Projector, hub_projections  # noqa: E402
from cx.hub.store import Store, records  # noqa: E402
from cx.protocol.keys import SigningKey  # noqa: E402
from cx.transport import Topology  # noqa: E402

TARGETS_MS = {"search_name": 100, "enterprise_page": 200}
SAMPLE = 2000  # enterprises the queries are drawn from


@dataclass
class Site:
    """A corpus on disk (or in PostgreSQL) and the hub folder that serves it."""

    store: str  # sqlite | postgresql
    enterprises: int
    records: int
    root: Path

    @property
    def dir(self) -> Path:
        return self.root / f"{self.store}-{self.enterprises}-{self.records}"

    database_name: str = ""

    @property
    def database(self) -> str:
        return self.database_name or f"cx_bench_portal_{self.enterprises}_{self.records}"

    @property
    def url(self) -> str:
        if self.store == "sqlite":
            return "sqlite:///hub.db"
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.database}"

    def write_config(self, topology: Topology, port: int) -> HubConfig:
        """hub.toml for this run: the corpus's key and store, a broker vhost of its own, limits out of the way."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "hub.toml").write_text(f"""# written by bench/portal.py
[hub]
name = "洛阳市企业信用信息交换中心（基准测试）"
signing_key = "keys/hub.key"
[store]
url = "{self.url}"
[broker]
url = "{AMQP}"
vhost = "{topology.vhost}"
user_prefix = "{topology.user_prefix}"
password_file = "secrets/broker/{topology.hub_user}.password"
management_url = "{MANAGEMENT}"
[api]
listen = "127.0.0.1:{port}"
[portal]
# the load comes from one address: the per-client limits would answer 429 after the first seconds
searches_per_minute = 10000
views_per_minute = 10000
""", "utf-8")
        return HubConfig.load(self.dir / "hub.toml")

    def ensure_corpus(self) -> dict[str, Any]:
        """Generate the corpus unless an earlier run left it complete; bring the projections up to date."""
        marker = self.dir / "corpus.json"
        if self.store == "postgresql":
            _ensure_database(self.database, fresh=not marker.exists())
        elif not marker.exists():
            for leftover in self.dir.glob("hub.db*"):
                leftover.unlink()
        cfg = self.write_config(Topology(vhost="unused", user_prefix="unused-"), 0)
        twin_keys = self.root / f"sqlite-{self.enterprises}-{self.records}" / "keys"
        if not (self.dir / "keys" / "hub.key").exists():
            (self.dir / "keys").mkdir(parents=True, exist_ok=True)
            if self.store == "postgresql" and (twin_keys / "hub.key").exists():  # its checkpoints are signed with it
                SigningKey.load(twin_keys / "hub.key").save(self.dir / "keys" / "hub.key", self.dir / "keys" / "hub.pub")
            else:
                SigningKey.generate().save(self.dir / "keys" / "hub.key", self.dir / "keys" / "hub.pub")
        store = Store(cfg.store_url, sqlite_synchronous="OFF")
        try:
            store.migrate()
            twin = Site("sqlite", self.enterprises, self.records, self.root)
            if marker.exists():
                made = json.loads(marker.read_text())
            elif self.store == "postgresql" and (twin.dir / "corpus.json").exists():
                say(f"copying the SQLite corpus of {self.enterprises:,} enterprises into PostgreSQL (once)")
                started = time.perf_counter()
                source = Store(f"sqlite:///{twin.dir / 'hub.db'}")
                try:
                    copy_store(source, store)
                finally:
                    source.dispose()
                made = {**json.loads((twin.dir / "corpus.json").read_text()),
                        "copied_from_sqlite_seconds": round(time.perf_counter() - started, 1)}
                marker.write_text(json.dumps(made, indent=1))
            else:
                say(f"generating {self.enterprises:,} enterprises, {self.records:,} records on {self.store} "
                    "(once; later runs reuse it)")
                made = load(store, cfg, Corpus(self.enterprises, self.records)).__dict__
                marker.write_text(json.dumps(made, indent=1))
            # projections added since the corpus was made (or changed: cx hub rebuild) catch up the hub's way
            started = time.perf_counter()
            caught_up = Projector(store, hub_projections(cfg)).catch_up()
            made["catch_up_versions"] = caught_up
            made["catch_up_seconds"] = round(time.perf_counter() - started, 1)
            made["store_bytes"] = self.size(store)
        finally:
            store.dispose()
        return made

    def size(self, store: Store) -> int:
        if self.store == "sqlite":
            return sum(p.stat().st_size for p in self.dir.glob("hub.db*"))
        with store.reader.connect() as conn:
            return conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()


def _ensure_database(name: str, *, fresh: bool) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


# -- what to ask ------------------------------------------------------------------------------


def queries(store: Store, enterprises: int, rng: random.Random) -> dict[str, list[tuple[str, str | None]]]:
    """Paths for each phase, drawn from enterprises the corpus really holds."""
    picks = [f"amr-reg-{i}" for i in rng.sample(range(enterprises), min(SAMPLE, enterprises))]
    with store.reader.connect() as conn:
        found = conn.execute(select(records.c.subject_name, records.c.uscc)
                             .where(records.c.dept == "amr", records.c.record_id.in_(picks))).all()
        heavy = conn.execute(select(records.c.uscc).where(records.c.uscc.is_not(None)).group_by(records.c.uscc)
                             .having(func.count() >= 100).limit(50)).scalars().all()
    names = [n for n, _ in found]
    trades = [_trade(n) for n in names]
    pieces = {
        "name_whole": names,
        "name_trade": trades,  # 鼎盛商贸: the words people type
        "name_3": [t[:3] for t in trades if len(t) >= 3],
        "name_2": [t[:2] for t in trades if len(t) >= 2],
    }
    # (path, a text the answer must hold): a code search and a page name the enterprise
    paths = {kind: [(f"/portal/search?q={quote(q)}", None) for q in qs] for kind, qs in pieces.items()}
    paths["search_code"] = [(f"/portal/search?q={code}", name) for name, code in found]
    paths["enterprise_page"] = [(f"/portal/enterprises/{code}", name) for name, code in found]
    paths["enterprise_page_heavy"] = [(f"/portal/enterprises/{code}", code) for code in heavy]
    return paths


def _trade(name: str) -> str:
    """The trade name and industry of a generated name (洛阳鼎盛商贸有限公司 -> 鼎盛商贸)."""
    for place in sorted(PLACES, key=len, reverse=True):
        if name.startswith(place):
            name = name[len(place):]
            break
    for form in sorted(FORMS, key=len, reverse=True):
        if name.endswith(form):
            return name[:-len(form)]
    return name


# -- the load ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    latencies: list[float]
    statuses: dict[int, int]
    missing: int  # answers without the text they should hold
    elapsed: float


async def drive(base: str, paths: list[tuple[str, str | None]], requests: int, concurrency: int,
                rng: random.Random) -> Measured:
    """`requests` GETs from `concurrency` closed-loop clients, each timed from sending to the last byte."""
    todo = [rng.choice(paths) for _ in range(requests)]
    got = Measured([], {}, 0, 0.0)
    timeout = aiohttp.ClientTimeout(total=60)

    async def client(session: aiohttp.ClientSession) -> None:
        while todo:
            path, expected = todo.pop()
            start = time.perf_counter()
            try:
                async with session.get(base + path, allow_redirects=False) as resp:
                    body = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status, body = 0, b""
            got.latencies.append(time.perf_counter() - start)
            got.statuses[status] = got.statuses.get(status, 0) + 1
            if expected and expected.encode() not in body:
                got.missing += 1

    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        got.elapsed = time.perf_counter() - started
        return got


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def summary(got: Measured, cpu: float) -> dict[str, Any]:
    ms = [x * 1000 for x in got.latencies]
    return {"requests": len(ms), "statuses": {str(k): v for k, v in sorted(got.statuses.items())},
            "missing_expected_text": got.missing,
            "p50_ms": round(percentile(ms, 50), 1), "p90_ms": round(percentile(ms, 90), 1),
            "p95_ms": round(percentile(ms, 95), 1), "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(max(ms), 1), "mean_ms": round(sum(ms) / len(ms), 1),
            "requests_per_second": round(len(ms) / got.elapsed, 1),
            "hub_cpu_ms_per_request": round(cpu / len(ms) * 1000, 2)}


def run_load(site: Site, *, requests: int, concurrency: int, seed: int) -> dict[str, Any]:
    """Start a hub on the corpus, drive every phase, stop it; figures per phase."""
    topology = Topology(vhost=unique("cxbench-"), user_prefix=unique("b") + "-")
    cfg = site.write_config(topology, free_port())
    store = Store(cfg.store_url)
    rng = random.Random(seed)
    try:
        paths = queries(store, site.enterprises, rng)
        run_sync(provision_hub(cfg, registry.department_nodes(store)))
    finally:
        store.dispose()
    host, port = cfg.listen()
    base = f"http://{host}:{port}"
    log = open(site.dir / "hub.log", "ab")
    hub = subprocess.Popen([sys.executable, "-m", "cx.cli", "hub", "run", "--config", str(site.dir / "hub.toml")],
                           stdout=log, stderr=log, start_new_session=True)
    phases: dict[str, Any] = {}
    try:
        wait_http(f"{base}/readyz", timeout=120, process=hub, log=site.dir / "hub.log")
        # warm-up: the first pages of each kind (page cache, connection pool, templates)
        asyncio.run(drive(base, [p for ps in paths.values() for p in ps[:20]], 200, concurrency, rng))
        for phase, ps in paths.items():
            if not ps:
                continue
            before = cpu_seconds(hub.pid)
            measured = asyncio.run(drive(base, ps, requests, concurrency, rng))
            phases[phase] = summary(measured, cpu_seconds(hub.pid) - before)
            say(f"  {site.store} {phase}: p95 {phases[phase]['p95_ms']} ms, {phases[phase]['requests_per_second']}/s,"
                f" statuses {phases[phase]['statuses']}")
        mixed = [(phase, latency) for phase in ("name_whole", "name_trade", "name_3", "name_2")
                 for latency in [phases[phase]["p95_ms"]] if phase in phases]
        phases["search_name"] = {"p95_ms": max(p for _, p in mixed) if mixed else None,
                                 "note": "the highest p95 of the four kinds of name query"}
    finally:
        os.killpg(hub.pid, signal.SIGTERM)
        try:
            hub.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(hub.pid, signal.SIGKILL)
            hub.wait()
        run_sync(delete_broker_state(topology))
    return phases


# -- the report -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    out = {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory / 2 ** 20, 1),
           "platform": platform.platform(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN) as conn:
            out["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    except Exception:  # noqa: BLE001 - the description only
        out["postgresql"] = None
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Portal at scale ({results['measured']})", "",
             f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
             f"{results['machine']['memory_gib']} GiB, {results['machine']['platform']}; Python "
             f"{results['machine']['python']}, SQLite {results['machine']['sqlite']}, PostgreSQL "
             f"{results['machine']['postgresql']}. Load: {results['concurrency']} closed-loop clients, "
             f"{results['requests']} requests per phase.", ""]
    for store, r in results["stores"].items():
        c = r["corpus"]
        lines += [f"## {store}", "",
                  f"{c['enterprises']:,} enterprises, {c['records']:,} records ({c['versions']:,} versions), "
                  f"store {c['store_bytes'] / 2 ** 30:.1f} GiB; generated in {c['ingest_seconds'] / 60:.0f} min "
                  f"(ingest) + {c['projection_seconds'] / 60:.0f} min (projections); load average "
                  f"{r['load_before']} before, {r['load_after']} after.", "",
                  "| phase | p50 ms | p95 ms | p99 ms | max ms | req/s | hub CPU ms/req | statuses |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for phase, f in r["phases"].items():
            if "p50_ms" not in f:
                continue
            lines.append(f"| {phase} | {f['p50_ms']} | {f['p95_ms']} | {f['p99_ms']} | {f['max_ms']} | "
                         f"{f['requests_per_second']} | {f['hub_cpu_ms_per_request']} | {f['statuses']} |")
        for target, limit in TARGETS_MS.items():
            got = r["phases"].get(target, {}).get("p95_ms")
            verdict = "—" if got is None else ("met" if got < limit else "missed")
            lines.append(f"\n{target} p95 target < {limit} ms: {got} ms, {verdict}.")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--enterprises", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--requests", type=int, default=2000, help="requests per phase")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--data", type=Path, default=ROOT / "var" / "bench-portal", help="where corpora are kept")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument("--database", default="", help="the PostgreSQL corpus's database (default: named by the sizes)")
    parser.add_argument("--corpus-only", action="store_true", help="make the corpora and stop (the long part)")
    args = parser.parse_args()
    results: dict[str, Any] = {"measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
                               "requests": args.requests, "concurrency": args.concurrency, "stores": {}}
    for kind in (("sqlite", "postgresql") if args.store == "both" else (args.store,)):
        site = Site(kind, args.enterprises, args.records, args.data, args.database)
        corpus = site.ensure_corpus()
        if args.corpus_only:
            say(json.dumps(corpus))
            continue
        load_before = round(os.getloadavg()[0], 2)
        phases = run_load(site, requests=args.requests, concurrency=args.concurrency, seed=args.seed)
        results["stores"][kind] = {"corpus": corpus, "phases": phases, "load_before": load_before,
                                   "load_after": round(os.getloadavg()[0], 2)}
    if args.corpus_only:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "portal.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", "utf-8")
    (args.out / "portal.md").write_text(markdown(results), "utf-8")
    print(markdown(results))
    say(f"written: {args.out / 'portal.json'}, {args.out / 'portal.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
