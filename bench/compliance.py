"""Benchmark: the timeliness projection and compliance reports on a realistic month, with ingest as the yardstick.

    .venv/bin/python bench/compliance.py [--versions 100000] [--store sqlite|postgresql] [--out bench-results]

Feeds N administrative-licence versions for four departments through the real Ingestor (batches of
1,000, October 2026 — National Day week included — with event dates up to 30 days before receipt),
then measures, in the same run: ingest, the timeliness projection (first catch-up and a full
recompute that compares before with after), the report's data section, and each rendering (HTML,
PDF with its page count, XLSX, CSV). Writes JSON and a Markdown table to the output folder.
No assertions: figures only (the machine is shared; compare ratios within one run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cx.hub import compliance, obligations, registry, reports  # noqa: E402
from cx.hub.ingest import Inbound, Ingestor  # noqa: E402
from cx.hub.projections import Projector  # noqa: E402
from cx.hub.store import Store, batches, record_versions  # noqa: E402
from cx.hub.timeliness import Basis, Limits, TimelinessProjection, recompute  # noqa: E402
from cx.protocol.envelope import RecordLine, build_batch  # noqa: E402
from cx.protocol.keys import SigningKey  # noqa: E402
from cx.transport import Topology  # noqa: E402
from examples import example  # noqa: E402
from timeliness_support import at  # noqa: E402

DEPTS = {"amr": 0.02, "court": 0.05, "tax": 0.08, "fda": 0.6}  # share of records sent late
LICENCE = "administrative_license"
MONTH = (date(2026, 10, 1), date(2026, 10, 31))


def feed(store: Store, versions: int, rng: random.Random) -> float:
    """Ingest `versions` records (batches of 1,000) and spread their receipt over the month; returns seconds."""
    hub_key, topology = SigningKey.generate(), Topology(vhost="bench", user_prefix="cx-")
    ingestor = Ingestor(store, hub_key, topology)
    per_dept = versions // len(DEPTS)
    spent = 0.0
    for dept, late_share in DEPTS.items():
        key = SigningKey.generate()
        registry.add_department(store, dept, f"部门 {dept}", "410300", key.public)
        prev, seq = None, 0
        for start in range(0, per_dept, 1000):
            received = MONTH[0] + timedelta(days=rng.randrange(31))
            lines = []
            for i in range(start, min(per_dept, start + 1000)):
                back = rng.randint(12, 30) if rng.random() < late_share else rng.randint(0, 5)
                data = {**example(LICENCE), "decision_date": (received - timedelta(days=back)).isoformat()}
                lines.append(RecordLine(f"{dept}-{i}", LICENCE, 1, "upsert", data, {"adapter": "bench"}).to_bytes())
            seq += 1
            batch = build_batch(key, dept=dept, node="n1", seq=seq, prev=prev, lines=lines, schemas={LICENCE: 1})
            prev = batch.header_hash
            t = time.perf_counter()
            outcome = ingestor.process(Inbound(batch.to_bytes(), f"{dept}.{LICENCE}", topology.dept_user(dept)))
            spent += time.perf_counter() - t
            assert outcome.result == "accepted" and outcome.accepted == len(lines), outcome
            stamp = at(received.isoformat(), f"{rng.randint(8, 17):02d}:00")
            with store.writer.begin() as conn:
                conn.execute(update(record_versions).where(record_versions.c.batch_id == outcome.batch_id)
                             .values(received=stamp))
                conn.execute(update(batches).where(batches.c.batch_id == outcome.batch_id).values(received=stamp))
    return spent


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=100_000)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    rng = random.Random(2016)
    work = Path(tempfile.mkdtemp(prefix="cx-bench-compliance-"))
    pg_db = None
    if args.store == "postgresql":
        from support import create_pg_database

        pg_db = create_pg_database()
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_db}"
    else:
        url = f"sqlite:///{work / 'hub.db'}"
    store = Store(url, sqlite_synchronous="NORMAL")
    store.migrate()
    try:
        ingest = feed(store, args.versions, rng)
        n = args.versions // len(DEPTS) * len(DEPTS)
        basis = Basis.default()
        projected, project = timed(Projector(store, [TimelinessProjection(basis)]).catch_up)
        changed = Basis(basis.calendar, Limits({"fda": {LICENCE: 10}}))
        result, recompute_s = timed(recompute, store, changed, by="bench")
        found = obligations.load(store, (ROOT / "ops" / "examples" / "obligations-2016-luoyang.toml")
                                 .read_text("utf-8"), by="bench").current
        request = compliance.Request(*MONTH, as_of=at("2026-11-10"))
        data, build_s = timed(compliance.build_report, store, request, settings=compliance.Settings("bench"),
                              basis=changed, obligation_set=found)
        key = SigningKey.generate()
        renders = {}
        for fmt in ("html", "pdf", "xlsx", "csv", "json"):
            report, seconds = timed(reports.render, data, fmt, lang="zh", key=key)
            renders[fmt] = {"seconds": round(seconds, 3), "bytes": len(report.body)}
            if fmt == "pdf":
                import io

                from pypdf import PdfReader

                renders[fmt]["pages"] = len(PdfReader(io.BytesIO(report.body)).pages)
        late = sum(d["late"] for d in data["departments"])
        figures = {
            "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "store": args.store,
                        "platform": platform.platform()},
            "versions": n, "projected": projected,
            "ingest_seconds": round(ingest, 2), "ingest_per_second": round(n / ingest),
            "projection_seconds": round(project, 2), "projection_per_second": round(n / project),
            "projection_seconds_per_100k": round(project / n * 100_000, 2),
            "projection_share_of_ingest": round(project / ingest, 3),
            "recompute_seconds": round(recompute_s, 2), "recompute_changed": result.changed,
            "report_data_seconds": round(build_s, 2), "late_records": late,
            "late_records_listed": sum(len(d["late_records"]) for d in data["departments"]),
            "renders": renders,
        }
    finally:
        store.dispose()
        if pg_db:
            from support import drop_pg_database

            drop_pg_database(pg_db)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"compliance-{args.store}-{n}"
    stem.with_suffix(".json").write_text(json.dumps(figures, indent=1))
    lines = ["| what | figure |", "| --- | --- |",
             f"| record versions (4 departments, one month) | {n:,} ({args.store}) |",
             f"| ingest (Ingestor.process, batches of 1,000) | {ingest:.1f} s, {n / ingest:,.0f} versions/s |",
             f"| timeliness projection, first catch-up | {project:.1f} s, {n / project:,.0f} versions/s, "
             f"{project / n * 100_000:.1f} s per 100,000 ({project / ingest:.0%} of ingest) |",
             f"| recompute (snapshot, rebuild, compare) | {recompute_s:.1f} s, {result.changed:,} changed |",
             f"| report data section ({late:,} late records) | {build_s:.2f} s |"]
    for fmt, r in renders.items():
        pages = f", {r['pages']} pages" if "pages" in r else ""
        lines.append(f"| render {fmt} | {r['seconds']:.2f} s, {r['bytes']:,} bytes{pages} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written: {stem}.json, {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
