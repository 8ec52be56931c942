"""The portal benchmark, scaled down: its corpus passes the hub's checks, and a run measures every phase."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

from cx.protocol.validation import default_registry
from support import drop_pg_database, unique

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from portal_data import Corpus  # noqa: E402


def test_the_corpus_is_what_a_department_may_send():
    """Every generated record passes the hub's full schema check (the benchmark's ingest skips it for speed)."""
    registry = default_registry()
    lines = list(Corpus(400, 2500, seed=7).lines())
    upserts = [line for _, line in lines if line.op == "upsert"]
    assert len(upserts) >= 2400
    assert {line.type for line in upserts} >= {"enterprise_registration", "administrative_penalty", "honor",
                                                "judicial", "abnormal_operation", "serious_violation"}
    problems = [(line.record_id, errors) for line in upserts
                if (errors := registry.check_record(line, date.today()))]
    assert problems == []
    repairs = [line for _, line in lines if line.op == "retract" and line.reason.startswith("信用修复")]
    assert repairs, "some penalties are withdrawn by credit repair"


def test_a_small_run_measures_every_phase(tmp_path):
    database = unique("cx_bench_portal_")
    try:
        done = subprocess.run(
            [sys.executable, str(BENCH / "portal.py"), "--store", "both", "--enterprises", "800", "--records", "3000",
             "--requests", "20", "--concurrency", "2", "--data", str(tmp_path / "data"), "--database", database,
             "--out", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finally:
        drop_pg_database(database)
    results = json.loads((tmp_path / "out" / "portal.json").read_text("utf-8"))
    assert set(results["stores"]) == {"sqlite", "postgresql"}
    for store, got in results["stores"].items():
        assert got["corpus"]["enterprises"] == 800
        assert 2950 <= got["corpus"]["records"] <= 3000
        phases = got["phases"]
        for phase in ("name_whole", "name_trade", "name_3", "name_2", "search_code", "enterprise_page"):
            assert phases[phase]["requests"] == 20, (store, phase)
            assert phases[phase]["statuses"] == {"200": 20}, (store, phase, phases[phase])
            assert phases[phase]["missing_expected_text"] == 0, (store, phase)  # the page names the enterprise
            assert phases[phase]["p50_ms"] <= phases[phase]["p95_ms"] <= phases[phase]["max_ms"]
    assert "| enterprise_page |" in (tmp_path / "out" / "portal.md").read_text("utf-8")
