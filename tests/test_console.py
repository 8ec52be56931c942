"""The console's pages and their data: status lights, the overview's figures, translations, packaging."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cx.hub import i18n
from cx.hub.ingest import Inbound, Ingestor
from cx.hub.queries import dashboard_view, status_light
from cx.protocol.envelope import format_time
from cx.protocol.heartbeat import Heartbeat
from cx.protocol.keys import SigningKey
from cx.transport import Topology
from console_support import Client, make_console_hub

NOW = datetime(2026, 11, 2, 3, 0, tzinfo=timezone.utc)


def _row(**over):
    beat = format_time(NOW - timedelta(seconds=20))
    row = {"heartbeat_refused": None, "last_heartbeat": beat, "nodes": [{"last_error": None}], "alerts": {},
           "oldest_pending_seconds": 10}
    row.update(over)
    return row


@pytest.mark.parametrize("row, expected", [
    (_row(), "healthy"),
    (_row(oldest_pending_seconds=901), "late"),
    (_row(alerts={"inconsistent_checkpoint": 1}), "failing"),
    (_row(nodes=[{"last_error": "source unreachable"}]), "failing"),
    (_row(last_heartbeat=format_time(NOW - timedelta(seconds=301))), "silent"),
    (_row(last_heartbeat=None, nodes=[]), "silent"),
    (_row(heartbeat_refused={"reason": "unknown_key", "detail": "key x is not enrolled"}), "quarantining"),
    # precedence: a refused heartbeat explains the silence; silence outranks the last reported error
    (_row(heartbeat_refused={"reason": "key_revoked", "detail": ""},
          last_heartbeat=format_time(NOW - timedelta(hours=1))), "quarantining"),
    (_row(last_heartbeat=format_time(NOW - timedelta(hours=1)), alerts={"x": 1}), "silent"),
    (_row(alerts={"x": 1}, oldest_pending_seconds=5000), "failing"),
])
def test_status_light_rules(row, expected):
    status, reason = status_light(row, NOW, 300, 900)
    assert status == expected
    assert (reason == "") == (expected == "healthy")


def test_the_overview_counts_rejections_at_both_ends_and_a_refused_heartbeat_turns_red(store_url, tmp_path):
    hub = make_console_hub(tmp_path / "hub", store_url)
    store = hub.store()
    try:
        view = {d["dept"]: d for d in dashboard_view(store)["departments"]}
        amr = view["amr"]
        assert amr["status"] == "healthy" and amr["accepted"] == 2 and amr["dept_rejected"] == 7
        assert amr["rejection_rate"] == pytest.approx(7 / 9)
        assert amr["records_today"] == 2 and amr["records_7d"] == 2 and amr["outbox_depth"] == 3
        assert amr["versions"] == ["0.1.0"] and amr["key_expiry"] is None and amr["active_keys"] == 1
        # a heartbeat signed with a key the hub does not know is quarantined: red, with the reason
        rogue = SigningKey.generate()
        beat = Heartbeat.sign(rogue, dept="amr", node="amr-1", version="0.1.0", outbox_depth=0,
                              oldest_pending_seconds=None, last_error=None)
        outcome = Ingestor(store, hub.key, Topology()).process_heartbeat(
            Inbound(beat, "amr.heartbeat", Topology().dept_user("amr")))
        assert outcome.result == "quarantined"
        amr = {d["dept"]: d for d in dashboard_view(store)["departments"]}["amr"]
        assert amr["status"] == "quarantining" and amr["status_reason"].startswith("unknown_key")
        # once a good heartbeat comes after it, the node is heard again
        good = Heartbeat.sign(hub.dept_keys["amr"], dept="amr", node="amr-1", version="0.1.1", outbox_depth=0,
                              oldest_pending_seconds=None, last_error=None)
        Ingestor(store, hub.key, Topology()).process_heartbeat(Inbound(good, "amr.heartbeat", Topology().dept_user("amr")))
        amr = {d["dept"]: d for d in dashboard_view(store)["departments"]}["amr"]
        assert amr["status"] == "healthy" and amr["versions"] == ["0.1.1"]
        # silence, as seen from later
        later = datetime.now(timezone.utc) + timedelta(minutes=10)
        assert {d["dept"]: d for d in dashboard_view(store, now=later)["departments"]}["amr"]["status"] == "silent"
    finally:
        store.dispose()


async def test_pages_in_both_languages_and_what_the_office_does_not_see(tmp_path):
    hub = make_console_hub(tmp_path / "hub", f"sqlite:///{tmp_path / 'store.db'}")
    store = hub.store()
    beat = Heartbeat.sign(hub.dept_keys["amr"], dept="amr", node="amr-1", version="0.1.0", outbox_depth=0,
                          oldest_pending_seconds=None, last_error="cannot reach postgresql://svc:secret@db/x",
                          alerts={"refused_batches": 2})
    Ingestor(store, hub.key, Topology()).process_heartbeat(Inbound(beat, "amr.heartbeat", Topology().dept_user("amr")))
    store.dispose()
    await hub.start()
    try:
        async with Client(hub, lang="zh") as c:
            await c.login("op")
            status, body, _ = await c.get("/")
            assert status == 200 and "各部门报送情况" in body and "故障" in body and "状态灯如何判定" in body
            assert "secret" not in body  # a node's own error text is not on the overview
            status, body, _ = await c.get("/departments/amr")
            assert "近30天每日记录数" in body and "<svg" in body and "secret@db" in body  # the operator sees it
            status, _, landed = await c.get("/lang/en?next=/departments/amr")
            assert landed.endswith("/departments/amr")
            status, body, _ = await c.get("/")
            assert "Delivery by department" in body and "各部门报送情况" not in body
            status, _, landed = await c.get("/lang/en?next=https://elsewhere.example/")
            assert landed.endswith("/")  # no open redirect
        async with Client(hub, lang="en") as c:
            await c.login("office1")
            status, body, _ = await c.get("/departments/amr")
            assert status == 200 and "secret@db" not in body and "signed receipt" not in body
            assert "/quarantine" not in body and "/trail" not in body  # not in its menu either
            status, body, _ = await c.get("/?partial=1")
            assert status == 200 and "<html" not in body and "data-dept=\"amr\"" in body
            # static files are served under their content hash and cached for good
            css = body_css = None
            status, page, _ = await c.get("/")
            css = next(part.split('"')[0] for part in page.split('href="')[1:] if part.startswith("/static/"))
            async with c.session.get(hub.url + css) as r:
                assert r.status == 200 and "immutable" in r.headers["Cache-Control"]
                body_css = await r.text()
            assert "Noto Sans CJK SC" in body_css
    finally:
        await hub.stop()


def test_every_message_has_its_chinese_translation():
    from babel.messages.extract import extract_from_dir

    root = Path(i18n.__file__).parent
    found = {m[2] for m in extract_from_dir(str(root), i18n.METHODS, options_map=i18n.OPTIONS)}
    assert len(found) > 150
    zh = i18n.catalog("zh")
    missing = sorted(m for m in found if isinstance(m, str) and zh.gettext(m) == m)
    assert missing == [], "run `python -m cx.hub.i18n` and translate: " + ", ".join(missing[:20])


def test_the_wheel_carries_templates_static_files_and_catalogs(tmp_path):
    root = Path(__file__).parent.parent
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "-w", str(tmp_path), str(root)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = tmp_path.glob("credit_exchange-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "cx/hub/locale/zh/LC_MESSAGES/messages.po" in names
    assert {"cx/hub/templates/base.html", "cx/hub/templates/overview.html", "cx/hub/static/console.css",
            "cx/hub/static/console.js", "cx/hub/openapi.json"} <= names
    assert "cx/hub/dashboard.py" not in names


async def test_the_servers_proof_check_explains_a_failure(tmp_path):
    from sqlalchemy import update

    from cx.hub.store import record_versions

    hub = make_console_hub(tmp_path / "hub", f"sqlite:///{tmp_path / 'store.db'}")
    store = hub.store()
    with store.writer.begin() as conn:  # someone edits a stored record line behind the hub's back
        line = conn.execute(record_versions.select().where(record_versions.c.record_id == "amr-pen-1")).first().line
        conn.execute(update(record_versions).where(record_versions.c.record_id == "amr-pen-1")
                     .values(line=bytes(line).replace("警告".encode(), "表扬".encode())))
    store.dispose()
    await hub.start()
    try:
        async with Client(hub) as c:
            await c.login("op")
            status, body, _ = await c.get("/departments/amr/records/amr-pen-1?check=")
            assert status == 200 and "NOT valid" in body and "record_mismatch" in body
            assert body.count("✘") == 2 and body.count("✔") == 2  # the key and the checkpoint are fine
            assert "has been altered" in body
            async with c.session.get(hub.url + "/") as r:
                assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    finally:
        await hub.stop()
