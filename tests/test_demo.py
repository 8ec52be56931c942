"""`make demo`, headless for about 30 seconds: every sample department's records reach the hub."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from cx.demo.run import DEMO_LISTS
from cx.hub.store import Store, heartbeats, list_entries, publicity, records
from cx.transport import Topology
from support import delete_broker_state, drop_pg_database, free_port, run_sync, unique


def test_demo_runs_headless(tmp_path):
    topology = Topology(vhost=unique("cxdemo-"), user_prefix=unique("d") + "-")
    pg_database = unique("cx_demo_")
    port = free_port()
    while any(_busy(p) for p in range(port, port + 5)):
        port = free_port()
    state = tmp_path / "demo"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cx.demo", "--state", str(state), "--keys", str(tmp_path / "keys"),
             "--duration", "30", "--interval", "2", "--port", str(port), "--vhost", topology.vhost,
             "--user-prefix", topology.user_prefix, "--pg-database", pg_database, "--quiet"],
            capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "demo is running" in done.stdout and f"console 控制台:       http://127.0.0.1:{port}/" in done.stdout
        printed = re.findall(r"^ +(\S+) +login 登录: (\S+) +/ (\S+)$", done.stdout, re.M)
        assert {role for role, _, _ in printed} == {"operator", "office", "department:amr", "auditor"}
        logins = json.loads((state / "hub" / "secrets" / "console" / "demo-logins.json").read_text())
        assert {a["password"] for a in logins["accounts"]} == {p for _, _, p in printed}
        store = Store(f"sqlite:///{state / 'hub' / 'hub.db'}")
        with store.reader.connect() as conn:
            held = dict(conn.execute(select(records.c.dept, func.count()).group_by(records.c.dept)).all())
            beating = {r.dept for r in conn.execute(select(heartbeats.c.dept))}
        assert set(held) == {"amr", "court", "tax", "fda"}, held
        assert all(n >= 10 for n in held.values()), held
        assert beating == {"amr", "court", "tax", "fda"}
        # the portal: enterprises with records from several departments, someone on every list, one repair
        with store.reader.connect() as conn:
            listed = dict(conn.execute(select(list_entries.c.list_id, func.count())
                                       .where(list_entries.c.ended.is_(None)).group_by(list_entries.c.list_id)).all())
            several = conn.execute(select(publicity.c.uscc).group_by(publicity.c.uscc)
                                   .having(func.count(publicity.c.dept.distinct()) >= 3)).all()
            repaired = conn.execute(select(publicity.c.record_id, publicity.c.repair_reason)
                                    .where(publicity.c.repaired_at.is_not(None))).all()
        store.dispose()
        assert set(listed) >= set(DEMO_LISTS), listed
        assert several, "no enterprise has records from three departments"
        saved = json.loads((state / "demo.json").read_text())["repaired"]
        assert [(r.record_id, r.repair_reason.startswith("信用修复")) for r in repaired] == [(saved["record_id"], True)]
        assert f"/portal/enterprises/{saved['uscc']}" in done.stdout and "/portal" in done.stdout
        # the compliance report: the food and drug department delivers late, the others on time
        today = datetime.now(timezone(timedelta(hours=8))).date()
        report = tmp_path / "compliance.json"
        made = subprocess.run(
            [sys.executable, "-m", "cx.cli", "report", "compliance", "--config", str(state / "hub" / "hub.toml"),
             "--from", str(today - timedelta(days=60)), "--to", str(today), "--format", "json", "--out", str(report)],
            capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stdout + made.stderr
        data = json.loads(report.read_text("utf-8"))
        late = {d["dept"]: (d["late"], d["on_time"]) for d in data["departments"]}
        assert late["fda"][0] >= 10 and late["fda"][1] == 0, late
        assert all(late[d][0] == 0 and late[d][1] >= 10 for d in ("amr", "court", "tax")), late
        assert data["ranking"][-1]["dept"] == "fda"
        assert {o["id"] for o in data["obligations"]} >= {"licences-monthly", "judicial-monthly"}
        # a second run reuses the state without errors; meanwhile the office opens the compliance page
        rerun = subprocess.Popen(
            [sys.executable, "-m", "cx.demo", "--state", str(state), "--keys", str(tmp_path / "keys"),
             "--duration", "15", "--port", str(port), "--vhost", topology.vhost,
             "--user-prefix", topology.user_prefix, "--pg-database", pg_database, "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        office = next(a for a in logins["accounts"] if a["role"] == "office")
        page = _compliance_page(f"http://127.0.0.1:{port}", office["name"], office["password"])
        rows = dict(re.findall(r'<tr data-dept="(\w+)" class="(\w*)">', page.split('id="ranking"')[1]))
        assert rows == {"amr": "", "court": "", "tax": "", "fda": "bad"}, rows  # bad: late records
        # the public sees the repaired enterprise without its withdrawn penalty
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/portal/enterprises/{saved['uscc']}", timeout=30) as resp:
            public = resp.read().decode()
        assert saved["name"] in public and f"r-amr-{saved['record_id']}\"" not in public
        assert "/compliance" in done.stdout
        out, err = rerun.communicate(timeout=120)
        again = subprocess.CompletedProcess(rerun.args, rerun.returncode, out, err)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "reusing the demo state" in again.stdout
        assert re.findall(r"^ +(\S+) +login 登录: (\S+) +/ (\S+)$", again.stdout, re.M) == printed
    finally:
        run_sync(delete_broker_state(topology))
        drop_pg_database(pg_database)


def _compliance_page(base: str, name: str, password: str, timeout: float = 60) -> str:
    """Log in to the demo's console as a browser would (cookie, CSRF token) and fetch /compliance."""
    import http.cookiejar
    import time
    import urllib.parse

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    deadline = time.time() + timeout
    while True:
        try:
            form = opener.open(f"{base}/login", timeout=5).read().decode()
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    body = urllib.parse.urlencode({"name": name, "password": password, "csrf_token": csrf}).encode()
    opener.open(f"{base}/login", data=body, timeout=10).read()
    return opener.open(f"{base}/compliance", timeout=60).read().decode()


def _busy(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
