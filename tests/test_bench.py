"""`make bench` still works: a scaled-down end-to-end run on both hub stores writes well-formed figures.

Only the shape and the consistency of the results are checked, never a speed: the machine is shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_scaled_down_end_to_end_run_writes_its_figures(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "e2e.py"), "--runs", "1", "--rows", "2000",
                           "--million", "3000", "--depts", "2", "--dept-rows", "500", "--stores", "sqlite,postgresql",
                           "--baseline", "2000", "--loads", "500", "--load-seconds", "3", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "baseline" in done.stderr and "figures in" in done.stderr  # progress on stderr
    results = json.loads((tmp_path / "e2e.json").read_text())

    assert {"cores", "memory_gib", "cpu", "python", "rabbitmq", "postgresql", "sqlite", "commit"} <= set(
        results["machine"])
    assert set(results["scenarios"]) == {"100k-sqlite", "100k-postgresql", "1m-sqlite", "depts"}
    for name, s in results["scenarios"].items():
        records = {"depts": 1000, "1m-sqlite": 3000}.get(name, 2000)
        assert len(s["runs"]) == len(s["baselines"]) == 1
        run, base = s["runs"][0], s["baselines"][0]
        assert run["records"] == records and base["messages"] == 2000
        assert s["records_per_second"]["min"] <= s["records_per_second"]["median"] <= s["records_per_second"]["max"]
        assert s["ratio_to_baseline"]["median"] == round(run["records_per_second"] / base["records_per_second"], 2)
        assert all(v > 0 for v in s["cpu_us_per_record"].values() if v is not None)
        assert s["cpu_us_per_record"]["node"] and s["cpu_us_per_record"]["hub"]
        assert s["peak_rss_mib"]["node"] > 20 and s["peak_rss_mib"]["hub"] > 20
        assert s["outbox_mib"] > 0
        assert run["views_current_after_seconds"] >= 0 and run["views_cpu_us_per_record"] >= 0  # views caught up
        assert 0 < s["records_per_second_views_current"] <= s["records_per_second"]["max"]
        assert 780 <= s["mean_line_bytes"] <= 900  # the departments' penalty records are about 840 bytes a line

    [latency] = results["latency"]
    assert latency["offered_per_second"] == 500 and 1000 <= latency["records"] <= 1500
    assert latency["arrived"] == latency["records"]
    for figures in (latency["outbox_commit_to_verified_receipt_ms"], latency["source_insert_to_hub_accepted_ms"]):
        assert figures["n"] == latency["records"]
        assert 0 <= figures["p50"] <= figures["p95"] <= figures["p99"] <= figures["max"]

    assert len(results["targets"]) == 5  # the 1,000 rec/s latency target needs a 1,000 rec/s load
    assert all(isinstance(t["met"], bool) for t in results["targets"])
    table = (tmp_path / "e2e.md").read_text()
    assert "| scenario |" in table and "| target | goal | measured | met |" in table
    assert "2 departments × 500 rows at once" in table and results["machine"]["cpu"] in table
