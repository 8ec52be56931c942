"""The department node end to end: real sources, the real hub, the real broker."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import sqlalchemy as sa

from cx import transport
from cx.handover import Handover
from cx.hub.store import heartbeats, ledger_nodes, record_versions, records
from cx.node.config import NodeConfig
from cx.protocol.keys import PublicKey, SigningKey
from cx.protocol.merkle import frontier_nodes, merkle_root
from cx.protocol.receipts import Checkpoint, Receipt
from examples import EXAMPLES
from support import MANAGEMENT, Hub, LoopThread, free_port, hub_records, make_node, run_sync

PENALTY = EXAMPLES["administrative_penalty"]
PENALTY_STREAM = """
[[streams]]
name = "penalties"
source = "db"
type = "administrative_penalty"
table = "xzcf"
key = ["id"]
{mode}
record_id = "{dept}-penalty-{{id}}"
entered_by = "lrr"
[streams.fields]
subject_name = "dsr_mc"
subject_category = {{ const = "legal_person" }}
uscc = "tyshxydm"
authority = {{ const = "%s" }}
authority_uscc = {{ const = "%s" }}
decision_no = "cfjdswh"
violation_type = "wflx"
facts = "wfss"
legal_basis = "cfyj"
penalty_types = {{ column = "cflb", map = "penalty_codes" }}
content = "cfnr"
fine_amount = "fkje"
decision_date = "cfjdrq"
[code_tables.penalty_codes]
"01" = "警告"
"02" = "罚款"
""" % (PENALTY["authority"], PENALTY["authority_uscc"])

xzcf = sa.Table(
    "xzcf", sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("dsr_mc", sa.String(200)), sa.Column("tyshxydm", sa.String(18)), sa.Column("cfjdswh", sa.String(100)),
    sa.Column("wflx", sa.String(100)), sa.Column("wfss", sa.Text), sa.Column("cfyj", sa.Text),
    sa.Column("cflb", sa.String(50)), sa.Column("cfnr", sa.Text), sa.Column("fkje", sa.Numeric(12, 2)),
    sa.Column("cfjdrq", sa.String(20)), sa.Column("updated_at", sa.DateTime), sa.Column("lrr", sa.String(50)),
)


def penalty_row(i: int, *, invalid: bool = False, stamp: str = "2026-03-01 10:00:00") -> dict:
    from datetime import datetime

    return {"id": i, "dsr_mc": f"洛阳测试{i}商贸有限公司", "tyshxydm": PENALTY["uscc"], "cfjdswh": f"洛市监罚〔2026〕{i}号",
            "wflx": "虚假宣传", "wfss": "发布虚假广告", "cfyj": "《中华人民共和国广告法》第五十五条",
            "cflb": "99" if invalid else "01、02", "cfnr": "警告并罚款", "fkje": "1.50", "cfjdrq": "2026/3/1",
            "updated_at": datetime.fromisoformat(stamp), "lrr": "张三"}


def fill(url: str, rows: list[dict]) -> sa.Engine:
    engine = sa.create_engine(url)
    xzcf.metadata.create_all(engine)
    if rows:
        with engine.begin() as conn:
            conn.execute(xzcf.insert(), rows)
    return engine


def sources(url: str) -> str:
    return f'[sources.db]\nadapter = "sql"\nurl = "{url}"\n'


@pytest.fixture
def sql_source(request, tmp_path):
    """A source database URL of the requested kind, created for the test and dropped after."""
    import pymysql

    from support import create_pg_database, drop_pg_database, unique

    kind = request.param
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'source.db'}"
    elif kind == "postgresql":
        db = create_pg_database()
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
        sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}").dispose()
        drop_pg_database(db)
    else:
        name = unique("cxsrc_")
        admin = pymysql.connect(host="127.0.0.1", user="root", password="")
        admin.cursor().execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.mark.parametrize("sql_source", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_sql_source_rows_arrive_exactly_once(hub_factory, sql_source, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    rows = [penalty_row(i, invalid=(i % 10 == 0)) for i in range(1, 401)]
    engine = fill(sql_source, rows)
    node = make_node(hub, "amr", tmp_path / "node", sources(sql_source) +
                     PENALTY_STREAM.format(mode='cursor = "updated_at"', dept="amr"),
                     delivery="batch_max_records = 100")
    check = node.cx("check")
    assert check.returncode == 1  # 40 invalid rows
    assert "valid 合格 360" in check.stdout and "code_table" in check.stdout and "table xzcf id=10" in check.stdout
    assert list((node.dir / "reports").glob("rejections-*.xlsx"))
    done = node.once()
    assert done.returncode == 4, done.stderr[-3000:]
    held = hub_records(hub, "amr")
    assert set(held) == {f"amr-penalty-{i}" for i in range(1, 401) if i % 10}
    assert all(r["versions"] == 1 for r in held.values())
    status = node.status()
    assert status["outbox"]["delivered"] == 360 and status["outbox"]["rejections_open"] == 40
    rejections = json.loads(node.cx("rejections", "--format", "json").stdout)
    assert {r["locator"] for r in rejections} == {f"table xzcf id={i}" for i in range(10, 401, 10)}
    # a second run sends nothing; a fixed row and a changed row go as new versions
    assert node.once().returncode == 4
    with engine.begin() as conn:
        conn.execute(xzcf.update().where(xzcf.c.id == 10).values(cflb="01", updated_at=sa.func.now()))
        conn.execute(xzcf.update().where(xzcf.c.id == 11).values(fkje="2.00", updated_at=sa.func.now()))
    engine.dispose()
    assert node.once().returncode == 4
    held = hub_records(hub, "amr")
    assert held["amr-penalty-10"]["versions"] == 1 and held["amr-penalty-11"]["versions"] == 2
    assert len(held) == 361
    assert node.status()["outbox"]["rejections_open"] == 39


# -- helpers for the tests below ------------------------------------------------------------------

def hub_data(hub: Hub, dept: str) -> dict[str, dict]:
    """record_id -> the data of its current version, read from the record line the hub stored byte for byte."""
    store = hub.store()
    with store.reader.connect() as conn:
        found = conn.execute(sa.select(record_versions.c.record_id, record_versions.c.line).join(
            records, sa.and_(records.c.dept == record_versions.c.dept, records.c.record_id == record_versions.c.record_id,
                             records.c.version == record_versions.c.version)).where(records.c.dept == dept)).all()
    store.dispose()
    return {rid: json.loads(bytes(line))["data"] for rid, line in found}


REJECTED_HERE = 4  # `--once`: delivered, but rows were rejected at the department


def delivered(done, status: int = 0) -> None:
    assert done.returncode == status, (done.stdout + done.stderr)[-3000:]


# -- drop folder: GBK CSV and XLSX ------------------------------------------------------------------

DROP = """
[sources.drop]
adapter = "files"
folder = "drop"
settle_seconds = 0

[[streams]]
name = "penalties"
source = "drop"
type = "administrative_penalty"
pattern = "处罚*.csv"
key = ["编号"]
record_id = "amr-cf-{编号}"
entered_by = "录入人"
[streams.fields]
subject_name = "当事人名称"
subject_category = { const = "legal_person" }
uscc = "统一社会信用代码"
authority = "处罚机关"
authority_uscc = "处罚机关代码"
decision_no = "处罚决定书文号"
violation_type = "违法行为类型"
facts = "违法事实"
legal_basis = "处罚依据"
penalty_types = "处罚类别"
content = "处罚内容"
fine_amount = "罚款金额"
decision_date = "处罚决定日期"

[[streams]]
name = "inspections"
source = "drop"
type = "inspection"
pattern = "抽查*.xlsx"
key = ["序号"]
record_id = "amr-cc-{序号}"
[streams.fields]
subject_name = "企业名称"
subject_category = { const = "legal_person" }
uscc = "统一社会信用代码"
inspection_kind = "检查类型"
inspection_date = "检查日期"
result = "检查结果"
"""

CSV_HEADER = ["编号", "当事人名称", "统一社会信用代码", "处罚机关", "处罚机关代码", "处罚决定书文号", "违法行为类型",
              "违法事实", "处罚依据", "处罚类别", "处罚内容", "罚款金额", "处罚决定日期", "录入人"]


def csv_row(i: int, decided: str = "2026年3月1日") -> list[str]:
    return [str(i), f"洛阳市测试{i}商贸有限公司", PENALTY["uscc"], PENALTY["authority"], PENALTY["authority_uscc"],
            f"洛市监罚〔2026〕{i}号", "虚假宣传", "发布虚假广告，误导消费者", "《中华人民共和国广告法》第五十五条",
            "警告、罚款", "警告并罚款人民币贰万元", "20,000.50", decided, "李四"]


def write_xlsx(path: Path, rows: list[list]) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "抽查结果"
    ws.append(["序号", "企业名称", "统一社会信用代码", "检查类型", "检查日期", "检查结果"])
    for row in rows:
        ws.append(row)
    wb.save(path)


def test_drop_folder_gbk_csv_and_xlsx(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    node = make_node(hub, "amr", tmp_path / "node", DROP, delivery="batch_max_records = 50")
    drop = node.dir / "drop"
    drop.mkdir()
    with (drop / "处罚决定2026.csv").open("w", encoding="gbk", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER)
        for i in range(1, 31):
            writer.writerow(csv_row(i, "2026年13月1日" if i == 7 else "2026年3月1日"))  # row 7: no such month
    # real Excel cells: an int and a float key, a datetime and a date
    write_xlsx(drop / "抽查结果.xlsx", [
        [1001, "洛阳市抽查一号有限公司", EXAMPLES["inspection"]["uscc"], "不定向抽查", datetime(2026, 2, 15), "未发现问题"],
        [1002.0, "洛阳市抽查二号有限公司", EXAMPLES["inspection"]["uscc"], "专项检查", datetime(2026, 2, 16).date(),
         "责令整改"],
    ])
    (drop / "抽查损坏.xlsx").write_bytes(b"PK\x03\x04 this is not a workbook" * 10)

    delivered(node.once(), REJECTED_HERE)
    held = hub_data(hub, "amr")
    assert set(held) == {f"amr-cf-{i}" for i in range(1, 31) if i != 7} | {"amr-cc-1001", "amr-cc-1002"}
    assert held["amr-cf-3"]["subject_name"] == "洛阳市测试3商贸有限公司"
    assert held["amr-cf-3"]["penalty_types"] == ["警告", "罚款"]
    assert held["amr-cf-3"]["fine_amount"] == "20000.5" and held["amr-cf-3"]["decision_date"] == "2026-03-01"
    assert held["amr-cc-1001"]["inspection_date"] == "2026-02-15"
    assert held["amr-cc-1002"]["inspection_date"] == "2026-02-16" and held["amr-cc-1002"]["result"] == "责令整改"

    # the folder is empty; each file sits in processed/ or failed/ with its report beside it
    assert sorted(p.name for p in drop.iterdir()) == ["failed", "processed"]
    assert sorted(p.name for p in (drop / "processed").iterdir()) == [
        "处罚决定2026.csv", "处罚决定2026.csv.report.txt", "抽查结果.xlsx", "抽查结果.xlsx.report.txt"]
    assert sorted(p.name for p in (drop / "failed").iterdir()) == ["抽查损坏.xlsx", "抽查损坏.xlsx.report.txt"]
    report = (drop / "processed" / "处罚决定2026.csv.report.txt").read_text("utf-8")
    assert "合格 valid: 29" in report and "不合格 invalid: 1" in report
    assert "处罚决定2026.csv line 8" in report and "date_parse" in report
    assert "合格 valid: 2" in (drop / "processed" / "抽查结果.xlsx.report.txt").read_text("utf-8")
    failed = (drop / "failed" / "抽查损坏.xlsx.report.txt").read_text("utf-8")
    assert "failed" in failed and "XLSX" in failed
    rejections = json.loads(node.cx("rejections", "--format", "json").stdout)
    assert sorted(r["locator"].split(":")[0] for r in rejections) == ["处罚决定2026.csv line 8", "抽查损坏.xlsx"]

    # a second run takes nothing twice, even when the same file is dropped again
    (drop / "处罚决定2026.csv").write_bytes((drop / "processed" / "处罚决定2026.csv").read_bytes())
    delivered(node.once(), REJECTED_HERE)
    assert not (drop / "处罚决定2026.csv").exists()
    reports = [p.read_text("utf-8") for p in drop.glob("*/处罚决定2026*.csv.report.txt")]
    assert len(reports) == 2 and any("already taken earlier" in r for r in reports)
    again = hub_records(hub, "amr")
    assert len(again) == 31 and all(r["versions"] == 1 for r in again.values())
    assert node.status()["outbox"]["delivered"] == 31


# -- cursor mode: many rows share a timestamp ------------------------------------------------------

@pytest.mark.parametrize("sql_source", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_cursor_ties_across_chunks_and_runs(hub_factory, sql_source, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    first, second = "2026-03-01 10:00:00", "2026-03-02 09:30:00"
    # 1,500 rows on two timestamps: every chunk of 100 ends inside a run of equal cursor values
    engine = fill(sql_source, [penalty_row(i, stamp=first if i <= 700 else second) for i in range(1, 1501)])
    node = make_node(hub, "amr", tmp_path / "node", sources(sql_source) +
                     PENALTY_STREAM.format(mode='cursor = "updated_at"', dept="amr"),
                     delivery="chunk_rows = 100\nbatch_max_records = 250")
    delivered(node.once())
    held = hub_records(hub, "amr")
    assert set(held) == {f"amr-penalty-{i}" for i in range(1, 1501)}
    # more rows at the last timestamp, with higher keys: after the saved (cursor, key) position
    with engine.begin() as conn:
        conn.execute(xzcf.insert(), [penalty_row(i, stamp=second) for i in range(1501, 1631)])
    engine.dispose()
    delivered(node.once())
    held = hub_records(hub, "amr")
    assert set(held) == {f"amr-penalty-{i}" for i in range(1, 1631)}
    assert all(r["versions"] == 1 for r in held.values())
    outbox = node.status()["outbox"]
    assert outbox["delivered"] == 1630 and outbox.get("duplicate", 0) == 0  # each row read exactly once


# -- snapshot mode: deletions become retractions ---------------------------------------------------

def test_snapshot_mode_retracts_deleted_rows(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    url = f"sqlite:///{tmp_path / 'source.db'}"
    engine = fill(url, [penalty_row(i, invalid=i in (9, 10)) for i in range(1, 41)])
    node = make_node(hub, "amr", tmp_path / "node", sources(url) + PENALTY_STREAM.format(mode="", dept="amr"),
                     delivery="chunk_rows = 15")
    delivered(node.once(), REJECTED_HERE)
    assert set(hub_records(hub, "amr")) == {f"amr-penalty-{i}" for i in range(1, 41) if i not in (9, 10)}

    with engine.begin() as conn:
        conn.execute(xzcf.delete().where(xzcf.c.id.in_([1, 2, 3, 10, 40])))  # 10 was never valid
        conn.execute(xzcf.update().where(xzcf.c.id.in_([4, 5])).values(wfss="经复核，发布虚假广告"))
    engine.dispose()
    delivered(node.once(), REJECTED_HERE)
    held = hub_records(hub, "amr")
    assert "amr-penalty-10" not in held and "amr-penalty-9" not in held
    for i in (1, 2, 3, 40):
        assert held[f"amr-penalty-{i}"]["status"] == "retracted" and held[f"amr-penalty-{i}"]["versions"] == 2
    for i in (4, 5):
        assert held[f"amr-penalty-{i}"]["status"] == "active" and held[f"amr-penalty-{i}"]["versions"] == 2
    assert all(r["versions"] == 1 and r["status"] == "active" for rid, r in held.items()
               if int(rid.rsplit("-", 1)[1]) not in (1, 2, 3, 4, 5, 40))
    outbox = node.status()["outbox"]
    # 38 first versions, 4 retractions, 2 changes; nothing rejected by the hub (no retraction of an unknown record)
    assert outbox["delivered"] == 44 and outbox.get("rejected", 0) == 0 and outbox.get("duplicate", 0) == 0

    # a pass over an unchanged table sends nothing; a deleted row that comes back is a new version
    delivered(node.once(), REJECTED_HERE)
    assert node.status()["outbox"]["delivered"] == 44
    engine = fill(url, [penalty_row(1)])
    engine.dispose()
    delivered(node.once(), REJECTED_HERE)
    held = hub_records(hub, "amr")
    assert held["amr-penalty-1"]["status"] == "active" and held["amr-penalty-1"]["versions"] == 3

    # staff end a record's publication by credit repair: a retraction with the reason they give
    done = node.cx("retract", "penalties", "amr-penalty-6", "--reason", "信用修复：已履行行政处罚决定")
    assert done.returncode == 0 and "credit repair" in done.stdout, done.stderr
    assert node.cx("retract", "penalties", "no-such-record", "--reason", "x").returncode == 2
    delivered(node.once(), REJECTED_HERE)
    assert hub_records(hub, "amr")["amr-penalty-6"]["status"] == "retracted"
    with hub.store().reader.connect() as conn:
        reason = conn.execute(sa.select(record_versions.c.line).where(record_versions.c.record_id == "amr-penalty-6")
                              .order_by(record_versions.c.ledger_index.desc())).first().line
    assert "信用修复：已履行行政处罚决定" in bytes(reason).decode()


# -- invalid rows: reported locally, never sent ----------------------------------------------------

def test_invalid_rows_are_reported_locally_and_never_sent(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    url = f"sqlite:///{tmp_path / 'source.db'}"
    rows = [penalty_row(i) for i in range(1, 21)]
    broken = {
        3: ("cflb", "99", "penalty_types", "code_table"),  # not in the code table
        5: ("tyshxydm", "91410300MA44XXXX0X", "uscc", None),  # bad credit code
        7: ("cfjdrq", "2099-01-01", "decision_date", None),  # in the future
        11: ("cfjdrq", "三月一日", "decision_date", "date_parse"),
        13: ("wfss", None, "facts", None),  # required
        17: ("fkje", None, "fine_amount", None),  # fined without an amount
    }
    for i, (column, value, _, _) in broken.items():
        rows[i - 1][column] = value
    engine = fill(url, rows)
    engine.dispose()
    node = make_node(hub, "amr", tmp_path / "node", sources(url) +
                     PENALTY_STREAM.format(mode='cursor = "updated_at"', dept="amr"))
    check = node.cx("check")
    assert check.returncode == 1, check.stderr
    assert "valid 合格 14, invalid 不合格 6" in check.stdout
    for i in broken:
        assert f"table xzcf id={i}" in check.stdout
    assert "nothing was sent" in check.stdout
    report = next((node.dir / "reports").glob("rejections-*.csv"))
    with report.open(encoding="utf-8-sig") as fh:
        lines = list(csv.DictReader(fh))
    assert {r["来源位置 source row"] for r in lines} == {f"table xzcf id={i}" for i in broken}
    by_row = {r["来源位置 source row"]: r for r in lines}
    for i, (_, _, field, rule) in broken.items():
        assert by_row[f"table xzcf id={i}"]["字段 field"] == field
        if rule:
            assert by_row[f"table xzcf id={i}"]["规则 rule"] == rule

    delivered(node.once(), REJECTED_HERE)
    held = hub_records(hub, "amr")
    assert set(held) == {f"amr-penalty-{i}" for i in range(1, 21) if i not in broken}
    # not rejected by the hub either: they never left the node
    store = hub.store()
    with store.reader.connect() as conn:
        sent = conn.execute(sa.text("SELECT SUM(record_count) FROM batches WHERE dept = 'amr'")).scalar_one()
    store.dispose()
    assert sent == 14
    rejections = json.loads(node.cx("rejections", "--format", "json").stdout)
    assert {r["locator"] for r in rejections} == {f"table xzcf id={i}" for i in broken}
    assert {r["origin"] for r in rejections} == {"local"}
    assert {r["record_id"] for r in rejections} == {f"amr-penalty-{i}" for i in broken}
    text = node.cx("rejections").stdout
    assert "table xzcf id=3" in text and "code_table" in text and "local 本地" in text
    listed = node.cx("rejections", "--format", "csv").stdout
    assert listed.count("\n") >= 1 + len(broken)
    assert node.status()["outbox"]["rejections_open"] == len(broken)


# -- resilience: broker outage and node crash while rows keep coming -------------------------------

def management(method: str, *segments: str) -> Any:
    """One call to the RabbitMQ management API as guest; the parsed answer (None when empty)."""
    path = "/".join(urllib.parse.quote(s, safe="") for s in segments)
    request = urllib.request.Request(f"{MANAGEMENT}/api/{path}", method=method, headers={
        "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(request, timeout=5) as resp:
        body = resp.read()
    return json.loads(body) if body.strip() else None


def vhost_connections(vhost: str) -> dict[str, str]:
    """The broker's connections into `vhost`: name (client and broker address) -> user."""
    return {c["name"]: c["user"] for c in management("GET", "vhosts", vhost, "connections")}


@pytest.fixture
def connection_elsewhere(hub_factory) -> Iterator[Callable[[], bool]]:
    """A connection to the shared broker in another vhost, held from before the test to its end: calling the
    fixture's value says whether the broker still holds that very connection."""
    vhost = hub_factory([], name="elsewhere").topology.vhost
    with LoopThread() as loop:
        conn = loop.call(aio_pika.connect(f"amqp://guest:guest@127.0.0.1:5672/{vhost}"))  # not robust: no reconnecting
        try:
            wait_until(lambda: vhost_connections(vhost), 10, "the broker to list the connection")
            held = vhost_connections(vhost)
            yield lambda: not conn.is_closed and vhost_connections(vhost) == held
        finally:
            loop.call(conn.close())


def wait_settled(node, want_delivered: int, timeout: float, *, drained: bool = True) -> dict:
    """Poll `cx node status` until `want_delivered` records are delivered and (if `drained`) none wait."""
    deadline = time.time() + timeout
    while True:
        status = node.status()
        c = status["outbox"]
        if c.get("delivered", 0) >= want_delivered and (not drained or (
                c.get("pending", 0) + c.get("batched", 0) == 0 and c["batches_unreceipted"] == 0)):
            return status
        assert time.time() < deadline, f"not settled: {status}"
        time.sleep(0.5)


def in_flight(node, timeout: float) -> None:
    """Return as soon as the outbox holds a batch published and not yet receipted (or after `timeout`)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not sent_batches(node):
        time.sleep(0.01)


def test_broker_outage_and_node_crash_lose_and_repeat_nothing(broker_relay, hub_factory, connection_elsewhere,
                                                              tmp_path):
    # the hub and (by its handover file) the node reach the broker through a relay of this test's own, so the
    # outage is theirs alone: the shared broker, other tests and benchmarks keep running
    hub: Hub = hub_factory(["amr"], amqp=broker_relay.url)
    hub.start()
    url = f"sqlite:///{tmp_path / 'source.db'}"
    base = datetime(2026, 3, 1, 8, 0, 0)
    engine = fill(url, [])
    node = make_node(hub, "amr", tmp_path / "node", sources(url) +
                     PENALTY_STREAM.format(mode='cursor = "updated_at"', dept="amr"),
                     delivery="batch_max_records = 200\nretry_max_seconds = 2")
    inserted = 0
    stop = threading.Event()

    def insert_continuously() -> None:
        """100 rows every 0.25 s (every 50th invalid), up to 8,000, until stopped."""
        nonlocal inserted
        while not stop.is_set() and inserted < 8000:
            rows = [penalty_row(i, invalid=i % 50 == 0, stamp=str(base + timedelta(seconds=i)))
                    for i in range(inserted + 1, inserted + 101)]
            with engine.begin() as conn:
                conn.execute(xzcf.insert(), rows)
            inserted += 100
            time.sleep(0.25)

    def valid_so_far() -> int:
        return inserted - inserted // 50

    node.start()
    inserter = threading.Thread(target=insert_continuously, name="inserter")
    inserter.start()
    try:
        try:
            time.sleep(2)
            hub_and_node = {hub.topology.hub_user, hub.topology.dept_user("amr")}

            def connected() -> bool:  # as the broker lists them (its management API lags a few seconds)
                return hub_and_node <= set(vhost_connections(hub.topology.vhost).values())

            wait_until(connected, 15, "the broker to list the hub's and the node's connections")
            before = set(vhost_connections(hub.topology.vhost))
            broker_relay.cut()
            time.sleep(3)  # the node keeps reading into its outbox while the broker is unreachable
            broker_relay.restore()
            # hub and node reconnect by themselves: everything read so far arrives without a restart
            wait_settled(node, valid_so_far(), timeout=40, drained=False)
            wait_until(connected, 15, "the broker to list the hub's and the node's new connections")
            assert not before & set(vhost_connections(hub.topology.vhost)), "a connection outlived the outage"
            assert connection_elsewhere(), "the outage reached another vhost's connection on the shared broker"
            assert node.process.poll() is None, (node.dir / "node.log").read_text()[-3000:]
            in_flight(node, timeout=10)
            node.kill()  # SIGKILL mid-run: whatever was being read, sealed or published is where the outbox says
            time.sleep(1)
            node.start("node-2.log")
            time.sleep(2)
        finally:
            stop.set()
            inserter.join()
            engine.dispose()
        valid = {f"amr-penalty-{i}" for i in range(1, inserted + 1) if i % 50}
        status = wait_settled(node, len(valid), timeout=60)
    finally:
        node.kill(signal.SIGTERM)
    assert hub.process is not None and hub.process.poll() is None, "the hub process died"
    held = hub_records(hub, "amr")
    assert set(held) == valid
    assert all(r["versions"] == 1 for r in held.values())
    assert status["outbox"]["delivered"] == len(valid) and status["outbox"].get("duplicate", 0) == 0
    assert status["outbox"]["rejections_open"] == inserted - len(valid)


# -- receipts: only the pinned hub key settles a batch ----------------------------------------------

async def publish_receipts(hub: Hub, dept: str, bodies: list[bytes]) -> None:
    """Publish as guest (every permission in the test vhost) into the department's receipts exchange."""
    conn = await transport.connect(f"amqp://guest:guest@127.0.0.1:5672/{hub.topology.vhost}")
    try:
        channel = await transport.confirmed_channel(conn)
        exchange = await channel.get_exchange(hub.topology.receipts_exchange, ensure=False)
        for body in bodies:
            await transport.publish(exchange, dept, body, message_type=transport.RECEIPT, message_id="forged")
    finally:
        await conn.close()


def outbox_rows(node, query: str) -> list[tuple]:
    db = sqlite3.connect(f"file:{node.dir / 'outbox.db'}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def sent_batches(node) -> int:
    """Batches the node published that have no receipt yet (0 while its outbox is still being created)."""
    try:
        return outbox_rows(node, "SELECT COUNT(*) FROM batches WHERE state = 'sent'")[0][0]
    except sqlite3.OperationalError:
        return 0


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_forged_receipts_are_refused(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])  # provisioned, not running: no genuine receipt can come yet
    url = f"sqlite:///{tmp_path / 'source.db'}"
    fill(url, [penalty_row(i) for i in range(1, 31)]).dispose()
    node = make_node(hub, "amr", tmp_path / "node", sources(url) +
                     PENALTY_STREAM.format(mode='cursor = "updated_at"', dept="amr"))
    node.start()
    try:
        wait_until(lambda: sent_batches(node) > 0, 30, "a batch to be sent")
        [(batch_id, header_hash)] = outbox_rows(node, "SELECT batch_id, header_hash FROM batches")
        ids = [r[0] for r in outbox_rows(node, f"SELECT record_id FROM records WHERE batch_id = '{batch_id}'")]
        root = merkle_root([b"x"])

        def receipt(key: SigningKey, **overrides) -> Receipt:
            fields = dict(batch_id=batch_id, dept="amr", header_hash=header_hash, accepted=ids, rejected=[],
                          duplicates=0, checkpoint=Checkpoint.sign(key, "amr", len(ids), root))
            return Receipt.issue(key, **{**fields, **overrides})

        forged = receipt(SigningKey.generate()).to_bytes()  # a well-formed receipt under another key
        genuine = receipt(hub.key)
        altered = genuine.to_bytes().replace(b'"duplicates":0', b'"duplicates":3', 1)  # changed after signing
        assert altered != genuine.to_bytes()
        other_batch = receipt(hub.key, header_hash="ab" * 32).to_bytes()  # the hub's key, another batch header
        run_sync(publish_receipts(hub, "amr", [forged, altered, other_batch]))
        wait_until(lambda: node.status()["outbox"]["alerts"] >= 3, 20, "three alerts")
        status = node.status()
        kinds = sorted(a["kind"] for a in status["alerts"])
        assert kinds == ["receipt_invalid", "receipt_invalid", "receipt_mismatch"], status["alerts"]
        assert all("bad_signature" in a["detail"] for a in status["alerts"] if a["kind"] == "receipt_invalid")
        assert any(a["batch_id"] == batch_id for a in status["alerts"] if a["kind"] == "receipt_mismatch")
        assert status["outbox"].get("delivered", 0) == 0 and status["outbox"]["batches_unreceipted"] >= 1
        assert status["outbox"]["batched"] == 30
        assert "ALERT" in node.cx("status").stdout and "receipt_mismatch" in node.cx("status").stdout

        hub.start()  # the real receipt settles everything
        status = wait_settled(node, 30, timeout=40)
    finally:
        node.kill(signal.SIGTERM)
    assert status["outbox"]["delivered"] == 30 and status["outbox"]["alerts"] == 3
    assert set(hub_records(hub, "amr")) == {f"amr-penalty-{i}" for i in range(1, 31)}


# -- the ledger: a hub that rewrites history is caught ---------------------------------------------

def test_rewritten_ledger_history_is_detected(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    url = f"sqlite:///{tmp_path / 'source.db'}"
    engine = fill(url, [penalty_row(i) for i in range(1, 31)])
    node = make_node(hub, "amr", tmp_path / "node", sources(url) +
                     PENALTY_STREAM.format(mode='cursor = "updated_at"', dept="amr"))
    delivered(node.once())
    assert node.status()["last_checkpoint"]["size"] == 30

    # the hub, stopped, rewrites part of the department's history: one perfect subtree it appends next to
    hub.stop()
    frontier = frontier_nodes(30)
    level, idx = frontier[1]
    store = hub.store()
    with store.writer.begin() as conn:
        changed = conn.execute(ledger_nodes.update().where(
            ledger_nodes.c.dept == "amr", ledger_nodes.c.level == level, ledger_nodes.c.idx == idx,
        ).values(hash=hashlib.sha256(b"another history").digest())).rowcount
    store.dispose()
    assert changed == 1
    hub.start("hub-2.log")
    with engine.begin() as conn:
        conn.execute(xzcf.insert(), [penalty_row(i, stamp="2026-03-02 10:00:00") for i in range(31, 41)])
    engine.dispose()

    done = node.cx("run", "--once", timeout=60)  # no --timeout: waiting cannot fix this, so it stops at once
    assert done.returncode == 1
    assert "NOT DELIVERED" in done.stderr and "inconsistent_checkpoint" in done.stderr, done.stderr[-3000:]
    assert "does not extend the checkpoint this node verified" in done.stderr
    status = node.status()
    assert {a["kind"] for a in status["alerts"]} == {"inconsistent_checkpoint"}
    assert "does not extend 30" in status["alerts"][0]["detail"]
    # the new records stay unsettled in the outbox; the node still holds the checkpoint it trusted
    assert status["outbox"]["delivered"] == 30 and status["outbox"]["batched"] == 10
    assert status["outbox"]["batches_unreceipted"] == 1 and status["last_checkpoint"]["size"] == 30
    assert len(hub_records(hub, "amr")) == 40  # the hub did store them: the node refused its receipt


# -- heartbeats ----------------------------------------------------------------------------------------

def test_heartbeats_carry_inventory_rejections_and_outbox_depth(hub_factory, tmp_path):
    hub: Hub = hub_factory(["amr"])
    hub.start()
    url = f"sqlite:///{tmp_path / 'source.db'}"
    engine = fill(url, [penalty_row(i, invalid=i == 5) for i in range(1, 26)])
    node = make_node(hub, "amr", tmp_path / "node", sources(url) +
                     PENALTY_STREAM.format(mode='cursor = "updated_at"', dept="amr"))

    def beat() -> dict | None:
        store = hub.store()
        with store.reader.connect() as conn:
            row = conn.execute(sa.select(heartbeats).where(heartbeats.c.dept == "amr")).first()
        store.dispose()
        return dict(row._mapping) if row else None

    node.start()
    try:
        wait_until(lambda: (b := beat()) is not None and b["outbox_depth"] == 0 and json.loads(b["rejections"])
                   and json.loads(b["inventory"]) == {"administrative_penalty": 25}, 30, "a heartbeat")
        first = beat()
        assert first["node"] == "amr-1" and first["version"] and first["last_error"] is None
        # the row refused here at the department travels too, by record type and rule, for the hub's dashboard
        refused_here = json.loads(first["rejections"])
        assert list(refused_here) == ["administrative_penalty"]
        assert sum(refused_here["administrative_penalty"].values()) >= 1, refused_here
        assert json.loads(first["alerts"]) == {}
        with engine.begin() as conn:  # the inventory follows the source: every row, valid or not
            conn.execute(xzcf.insert(), [penalty_row(i, stamp="2026-03-02 10:00:00") for i in range(26, 31)])
        wait_until(lambda: json.loads(beat()["inventory"]) == {"administrative_penalty": 30}, 30, "a newer heartbeat")
        assert beat()["time"] > first["time"]
    finally:
        node.kill(signal.SIGTERM)
        engine.dispose()
    with urllib.request.urlopen(f"{hub.api}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    counts = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith('cx_heartbeats_total{dept="amr"}')]
    assert counts and counts[0] >= 2, metrics


# -- cx node init, and a broker that cannot be reached -----------------------------------------------

def cx(*args: str, timeout: float = 60):
    return subprocess.run([sys.executable, "-m", "cx.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_init_then_unreachable_broker_keeps_records(tmp_path):
    folder = tmp_path / "x-node"
    done = cx("node", "init", "--dept", "x", "--dir", str(folder))
    assert done.returncode == 0, done.stderr
    key = SigningKey.load(folder / "keys" / "x.key")
    assert key.key_id in done.stdout and "cx hub add-dept x" in done.stdout
    assert str(folder / "secrets" / "handover.toml") in done.stdout and "cx node check" in done.stdout
    assert "--node x-1" in done.stdout and "node id" in done.stdout
    assert stat.S_IMODE((folder / "keys" / "x.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "secrets").stat().st_mode) == 0o700
    assert PublicKey.load(folder / "keys" / "x.pub").key_id == key.key_id
    cfg = NodeConfig.load(folder / "node.toml")
    assert (cfg.node.dept, cfg.node.node_id) == ("x", "x-1") and cfg.stream_configs() == []
    # never overwrites a node that exists: its key is the department's identity at the hub
    before = (folder / "node.toml").read_bytes(), (folder / "keys" / "x.key").read_bytes()
    again = cx("node", "init", "--dept", "x", "--dir", str(folder))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert ((folder / "node.toml").read_bytes(), (folder / "keys" / "x.key").read_bytes()) == before
    assert cx("node", "init", "--dept", "Bad Dept", "--dir", str(tmp_path / "y")).returncode == 2

    # filled in as the printed steps say, but the broker address in the handover file is wrong
    (folder / "secrets" / "handover.toml").write_text(Handover(
        "amqp://cx-dept-x:Pw-n0t-sh0wn@127.0.0.1:1/credit-exchange", "cx-dept-x", "credit-exchange", "x", "x-1",
        "cx.receipts.x.x-1", "", SigningKey.generate().public).to_toml())
    url = f"sqlite:///{tmp_path / 'source.db'}"
    fill(url, [penalty_row(i) for i in range(1, 13)]).dispose()
    text = (folder / "node.toml").read_text().replace('listen = "127.0.0.1:8471"', f'listen = "127.0.0.1:{free_port()}"')
    (folder / "node.toml").write_text(text + sources(url) + PENALTY_STREAM.format(mode='cursor = "updated_at"', dept="x"))
    config = str(folder / "node.toml")
    done = cx("node", "run", "--once", "--timeout", "5", "--config", config)
    assert done.returncode == 1
    assert "NOT DELIVERED" in done.stderr and "cannot reach the broker" in done.stderr, done.stderr[-3000:]
    assert "Pw-n0t-sh0wn" not in done.stderr  # the password never shows
    status = json.loads(cx("node", "status", "--format", "json", "--config", config).stdout)
    assert status["outbox"]["pending"] == 12 and status["outbox"].get("delivered", 0) == 0
    assert "12 pending" in cx("node", "status", "--config", config).stdout


def test_failed_connect_leaves_no_connection_open(hub_factory, tmp_path):
    """A broker that takes the login but not the receipts queue: each retry closes the connection it opened."""
    hub: Hub = hub_factory(["amr"])
    management("DELETE", "queues", hub.topology.vhost, hub.topology.receipts_queue("amr", "amr-1"))
    node = make_node(hub, "amr", tmp_path / "node", "", delivery="retry_min_seconds = 0.2\nretry_max_seconds = 0.5")
    node.start()
    try:
        time.sleep(6)
        user = hub.topology.dept_user("amr")
        assert sum(1 for c in management("GET", "connections") if c["user"] == user) <= 1
    finally:
        node.kill(signal.SIGTERM)
    assert (node.dir / "node.log").read_text().count("NOT_FOUND - no queue") >= 5  # it did retry, many times
