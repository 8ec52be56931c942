"""Compliance reports against a hand-computed fixture: figures, obligations, renderings read back, signatures."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
import urllib.request
from datetime import date, datetime

import pytest

from cx.hub import compliance, obligations, reports
from cx.hub.projections import Projector, hub_projections
from cx.hub.store import Store
from cx.hub.timeliness import Basis
from cx.protocol.errors import ProtocolError
from cx.protocol.keys import SigningKey
from cx.protocol.reports import ReportSignature
from timeliness_support import Feeder, at

LICENCE, PENALTY, HONOR = "administrative_license", "administrative_penalty", "honor"
NAMES = {"amr": "洛阳市市场监督管理局", "court": "河南省洛阳市中级人民法院", "fda": "洛阳市食品药品监督管理局",
         "tax": "国家税务总局洛阳市税务局"}
OBLIGATIONS = """
title = "2026年11月任务"
[[obligation]]
id = "licences-monthly"
title = "行政许可按月报送"
unit = "各许可部门"
departments = ["amr", "fda"]
record_types = ["administrative_license"]
period = "month"
due_workdays = 5

[[obligation]]
id = "tax-honors"
title = "纳税信用A级名单报送"
departments = ["tax"]
record_types = ["honor"]
due = 2026-11-20
expected = { honor = 2 }

[[obligation]]
id = "joint-meeting"
title = "召开联席会议"
departments = ["amr"]
due = 2026-11-15
completed = 2026-11-10

[[obligation]]
id = "stats-penalties"
title = "统计局行政处罚报送"
departments = ["stats"]
record_types = ["administrative_penalty"]
due = 2026-11-30
"""
AS_OF = at("2026-12-10")  # after every due date in the fixture
PERIOD = (date(2026, 11, 1), date(2026, 11, 30))


@pytest.fixture
def hub_key() -> SigningKey:
    return SigningKey.generate()


def fixture(store: Store, hub_key: SigningKey) -> obligations.ObligationSet:
    """Four departments (lags counted by hand in working days; November 2026 has no holidays)."""
    feeders = {d: Feeder(store, d, NAMES[d], hub_key) for d in ("amr", "court", "fda", "tax")}
    amr, fda, tax = feeders["amr"], feeders["fda"], feeders["tax"]
    # 市场监管: on time — Mon 2 Nov to Wed 4 Nov is 2; Tue 10 Nov to Thu 12 Nov is 2
    amr.send(LICENCE, [("amr-l1", "2026-11-02"), ("amr-l2", "2026-11-02")], at("2026-11-04"))
    amr.send(PENALTY, [("amr-p1", "2026-11-10")], at("2026-11-12"))
    # three weeks later a correction of l1 with the same decision date: a correction, not late (lag 17)
    amr.send(LICENCE, [("amr-l1", "2026-11-02")], at("2026-11-25"), changes={"content": "更正许可内容"})
    amr.beat({LICENCE: 2, PENALTY: 1}, at("2026-12-10", "09:58"))
    # 食药监: only late — Fri 9 Oct → Thu 5 Nov: Sat 10 Oct (make-up) 1, 12–16 Oct 2–6, 19–23 Oct 7–11,
    # 26–30 Oct 12–16, 2–5 Nov 17–20; Tue 20 Oct → 5 Nov: 12; Mon 2 Nov → Fri 20 Nov: 14. Two rejected by the hub.
    fda.send(LICENCE, [("fda-1", "2026-10-09"), ("fda-2", "2026-10-20")], at("2026-11-05"), invalid=2)
    fda.send(LICENCE, [("fda-3", "2026-11-02")], at("2026-11-20"))
    fda.beat({LICENCE: 5}, at("2026-11-30"), rejections={LICENCE: {"uscc_check": 3}})
    # 税务: one honor on time (Mon 2 Nov → Fri 6 Nov: 4 of 20), but the source holds 4
    tax.send(HONOR, [("tax-h1", "2026-11-02")], at("2026-11-06"))
    tax.beat({HONOR: 4}, at("2026-11-30"))
    # 法院: nothing at all
    Projector(store, hub_projections()).catch_up()
    return obligations.load(store, OBLIGATIONS, by="联席办").current


def build(store: Store, found: obligations.ObligationSet, **request) -> dict:
    req = compliance.Request(*PERIOD, **{"as_of": AS_OF, **request})
    return compliance.build_report(store, req, settings=compliance.Settings("洛阳市企业信用信息交换中心"),
                                   basis=Basis.default(), obligation_set=found)


def dept(data: dict, name: str) -> dict:
    return next(d for d in data["departments"] if d["dept"] == name)


def test_the_figures_match_the_hand_computed_fixture(store, hub_key):
    data = build(store, fixture(store, hub_key))
    assert data["period"] == {"from": "2026-11-01", "to": "2026-11-30", "as_of": AS_OF}
    assert data["estimated_years"] == [] and [c["year"] for c in data["basis"]["calendar"]] == [2026]

    amr = dept(data, "amr")
    assert (amr["versions"], amr["on_time"], amr["late"], amr["corrections"]) == (4, 3, 0, 1)
    assert (amr["on_time_share"], amr["lag_median"], amr["lag_p95"]) == (1.0, 2.0, 2.0)
    assert (amr["inventory"], amr["held"], amr["missing"], amr["surplus"]) == (3, 3, 0, 0)
    assert amr["late_records"] == [] and not amr["liveness"]["silent"]
    assert amr["checkpoint"]["size"] == 4 and len(amr["checkpoint"]["root"]) == 64

    fda = dept(data, "fda")
    assert (fda["versions"], fda["on_time"], fda["late"], fda["on_time_share"]) == (3, 0, 3, 0.0)
    assert (fda["lag_median"], fda["lag_p95"]) == (14.0, 20.0)
    assert [(x["record_id"], x["event_date"], x["deadline"], x["received_date"], x["lag"], x["limit"])
            for x in fda["late_records"]] == [
        ("fda-1", "2026-10-09", "2026-10-19", "2026-11-05", 20, 7),
        ("fda-3", "2026-11-02", "2026-11-11", "2026-11-20", 14, 7),
        ("fda-2", "2026-10-20", "2026-10-29", "2026-11-05", 12, 7)]
    assert fda["late_records_total"] == 3
    assert (fda["inventory"], fda["held"], fda["missing"]) == (5, 3, 2)
    assert fda["rejections"]["hub"] == [{"type": LICENCE, "rule": "format:uscc", "records": 2}]
    assert fda["rejections"]["department"] == [{"type": LICENCE, "rule": "uscc_check", "rows": 3}]
    assert (fda["rejected_hub"], fda["rejected_dept"]) == (2, 3)
    assert fda["liveness"]["silent"] and fda["liveness"]["last_batch"] == at("2026-11-20")

    tax = dept(data, "tax")
    assert (tax["on_time_share"], tax["lag_median"], tax["inventory"], tax["held"], tax["missing"]) == (
        1.0, 4.0, 4, 1, 3)

    court = dept(data, "court")
    assert (court["versions"], court["on_time_share"], court["lag_median"], court["inventory"], court["checkpoint"],
            court["late_records"]) == (0, None, None, None, None, [])
    assert court["liveness"] == {"nodes": [], "last_heartbeat": None, "last_batch": None,
                                 "silent_after_seconds": 300.0, "silent": True}

    assert [(r["rank"], r["dept"]) for r in data["ranking"]] == [(1, "amr"), (2, "tax"), (3, "fda"), (4, "court")]
    statuses = {(o["id"], o["dept"]): (o["status"], o["reason"]) for o in data["obligations"]}
    assert statuses == {
        ("licences-monthly", "amr"): ("met", "all_arrived"),  # due 7 Dec: 5 working days after 30 Nov
        ("licences-monthly", "fda"): ("overdue", "inventory_missing"),
        ("tax-honors", "tax"): ("overdue", "expected_missing"),
        ("joint-meeting", "amr"): ("met", "completed"),
        ("stats-penalties", "stats"): ("overdue", "no_inventory"),  # named in the file, not enrolled
    }
    monthly = next(o for o in data["obligations"] if o["id"] == "licences-monthly" and o["dept"] == "fda")
    assert (monthly["from"], monthly["to"], monthly["due"], monthly["missing"]) == (
        "2026-11-01", "2026-11-30", "2026-12-07", 2)
    nov = {t["dept"]: t["points"][-1] for t in data["trend"]["departments"]}
    assert data["trend"]["periods"][-1] == "2026-11" and len(data["trend"]["periods"]) == 6
    assert (nov["amr"]["versions"], nov["amr"]["on_time"], nov["fda"]["late"], nov["court"]["versions"]) == (4, 3, 3, 0)


def test_a_report_for_one_department_shows_only_its_own(store, hub_key):
    data = build(store, fixture(store, hub_key), depts=("fda",))
    assert data["scope"] == ["fda"] and [d["dept"] for d in data["departments"]] == ["fda"]
    assert {o["dept"] for o in data["obligations"]} == {"fda"}
    assert [r["dept"] for r in data["ranking"]] == ["fda"]
    with pytest.raises(compliance.ReportError, match="no department nope"):
        build(store, None, depts=("nope",))


def test_the_same_inputs_give_byte_identical_data(store, hub_key):
    found = fixture(store, hub_key)
    first, second = build(store, found), build(store, found)
    assert compliance.data_bytes(first) == compliance.data_bytes(second)
    one = reports.render(first, "json", lang="zh", key=hub_key, generated="2026-12-10T02:00:00.000Z")
    two = reports.render(second, "html", lang="en", key=hub_key, generated="2026-12-11T02:00:00.000Z")
    assert one.signature.data_sha256 == two.signature.data_sha256 and one.body == compliance.data_bytes(first)


def test_a_period_into_2027_names_the_estimated_year(store, hub_key):
    tax = Feeder(store, "tax", NAMES["tax"], hub_key)
    tax.send(HONOR, [("h", "2026-11-27")], at("2027-01-20"))
    Projector(store, hub_projections()).catch_up()
    req = compliance.Request(date(2027, 1, 1), date(2027, 1, 31), as_of=at("2027-02-01"))
    data = compliance.build_report(store, req, settings=compliance.Settings(), basis=Basis.default(),
                                   obligation_set=None)
    assert data["estimated_years"] == [2027]
    assert dept(data, "tax")["estimated_versions"] == 1
    assert dept(data, "tax")["late_records"][0]["estimated"] == "2027"
    html = reports.render(data, "html", lang="zh", key=hub_key).body.decode()
    assert "估算年度：2027" in html


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_xlsx_reads_back_cell_by_cell(store, hub_key):
    from openpyxl import load_workbook

    data = build(store, fixture(store, hub_key))
    report = reports.render(data, "xlsx", lang="zh", key=hub_key, generated="2026-12-10T02:00:00.000Z")
    wb = load_workbook(io.BytesIO(report.body))
    assert wb.sheetnames == ["说明", "排名", "部门", "任务", "逾期记录", "退回", "在线情况", "趋势", "账本检查点", "日历"]
    assert all(ws.freeze_panes == "A2" for ws in wb.worksheets)

    ranking = wb["排名"]
    assert [c.value for c in ranking[1]] == ["名次", "部门标识", "部门", "按时报送率", "逾期", "缺报", "时滞P95（工作日）",
                                             "失联"]
    assert [c.value for c in ranking[2]] == [1, "amr", NAMES["amr"], 1.0, 0, 0, 2.0, "否"]
    assert [c.value for c in ranking[4]] == [3, "fda", NAMES["fda"], 0.0, 3, 2, 20.0, "是"]
    assert ranking["D2"].number_format == "0.0%" and ranking["E2"].number_format == "#,##0"
    assert [c.value for c in ranking[5]] == [4, "court", NAMES["court"], None, 0, None, None, "是"]

    late = wb["逾期记录"]
    assert [c.value for c in late[1]] == ["部门标识", "记录标识", "记录类型", "事项日期", "报送期限", "接收时间", "时滞（工作日）",
                                          "时限（工作日）", "估算年度"]
    assert [c.value for c in late[2]] == ["fda", "fda-1", "行政许可", datetime(2026, 10, 9), datetime(2026, 10, 19),
                                          datetime(2026, 11, 5, 10, 0), 20, 7, None]
    assert late["D2"].number_format == "yyyy-mm-dd" and late["F2"].number_format == "yyyy-mm-dd hh:mm:ss"
    assert late.max_row == 4

    depts = wb["部门"]
    header = [c.value for c in depts[1]]
    fda_licences = next(r for r in depts.iter_rows(min_row=2, values_only=True) if r[0] == "fda")
    row = dict(zip(header, fda_licences))
    assert (row["记录类型"], row["时限（工作日）"], row["收到条数"], row["按时"], row["逾期"], row["按时报送率"],
            row["时滞中位数（工作日）"], row["源端数量"], row["中心数量"], row["缺报"], row["中心退回"],
            row["部门端退回"]) == ("行政许可", 7, 3, 0, 3, 0.0, 14.0, 5, 3, 2, 2, 3)

    tasks = {(r[0], r[3]): r for r in wb["任务"].iter_rows(min_row=2, values_only=True)}
    overdue = tasks[("licences-monthly", "fda")]
    assert overdue[5:9] == (datetime(2026, 11, 1), datetime(2026, 11, 30), datetime(2026, 12, 7), "已逾期")
    assert overdue[9] == "源系统中有2条记录尚未报送至交换中心（源系统5条，中心3条）。"
    assert tasks[("joint-meeting", "amr")][8:] == ("按期完成", "已于2026-11-10确认完成。")

    rejections = list(wb["退回"].iter_rows(min_row=2, values_only=True))
    assert rejections == [("fda", "交换中心", "行政许可", "format:uscc", 2), ("fda", "部门前置机", "行政许可", "uscc_check", 3)]
    about = dict(wb["说明"].iter_rows(min_row=2, values_only=True))
    assert about["报告期"] == "2026-11-01 – 2026-11-30" and about["估算年度"] == "无"
    assert about["数据部分 SHA-256"] == report.signature.data_sha256

    english = load_workbook(io.BytesIO(reports.render(data, "xlsx", lang="en", key=hub_key).body))
    assert english.sheetnames[:3] == ["About", "Ranking", "Departments"]
    assert english["Ranking"]["D1"].value == "On-time share"


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_csv_is_utf8_with_a_bom_and_reads_back(store, hub_key):
    data = build(store, fixture(store, hub_key))
    body = reports.render(data, "csv", lang="zh", key=hub_key, generated="2026-12-10T02:00:00.000Z").body
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0] == ["生成时间", "2026-12-10 10:00:00"]
    sections = {}
    for i, row in enumerate(rows):
        if row and row[0].startswith("# "):
            end = next((j for j in range(i + 1, len(rows)) if not rows[j]), len(rows))
            sections[row[0][2:]] = rows[i + 1:end]
    assert list(sections) == ["说明", "排名", "部门", "任务", "逾期记录", "退回", "在线情况", "趋势", "账本检查点", "日历"]
    assert sections["排名"][1] == ["1", "amr", NAMES["amr"], "100.0%", "0", "0", "2", "否"]
    assert sections["排名"][4] == ["4", "court", NAMES["court"], "", "0", "", "", "是"]
    assert sections["逾期记录"][1] == ["fda", "fda-1", "行政许可", "2026-10-09", "2026-10-19", "2026-11-05 10:00:00", "20",
                                     "7", ""]
    assert len(sections["逾期记录"]) == 4
    trend_nov = [r for r in sections["趋势"][1:] if r[1] == "2026-11"]
    assert trend_nov == [["amr", "2026-11", "4", "3", "0", "100.0%"], ["court", "2026-11", "0", "0", "0", ""],
                         ["fda", "2026-11", "3", "0", "3", "0.0%"], ["tax", "2026-11", "1", "1", "0", "100.0%"]]


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_the_pdf_is_a4_with_a_page_per_department_and_their_names(store, hub_key):
    from pypdf import PdfReader

    data = build(store, fixture(store, hub_key))
    pdf = reports.render(data, "pdf", lang="zh", key=hub_key).body
    reader = PdfReader(io.BytesIO(pdf))
    pages = [p.extract_text() for p in reader.pages]
    # the summary (ranking, obligations, trend, calendar, checkpoints) on the first two pages,
    # then each department's section on a page of its own
    assert len(pages) == 6, [p[:80] for p in pages]
    width, height = reader.pages[0].mediabox.width, reader.pages[0].mediabox.height
    assert (round(float(width) / 72 * 25.4), round(float(height) / 72 * 25.4)) == (210, 297)
    assert "信用信息报送时限合规报告" in pages[0]
    for name in NAMES.values():
        assert name in pages[0]  # the ranking
    for page, name in zip(pages[2:], ("洛阳市市场监督管理局", "河南省洛阳市中级人民法院", "洛阳市食品药品监督管理局",
                                     "国家税务总局洛阳市税务局")):
        assert page.lstrip().startswith(name), page[:60]
    assert "fda-1" in pages[4] and "2026-10-19" in pages[4]
    assert reader.metadata.title.startswith("信用信息报送时限合规报告")


def test_a_signature_verifies_and_fails_after_one_changed_byte(store, hub_key, tmp_path):
    data = build(store, fixture(store, hub_key))
    for fmt in ("html", "xlsx", "csv", "json"):
        report = reports.render(data, fmt, lang="zh", key=hub_key)
        signature = ReportSignature.parse(report.signature.to_bytes())
        signature.verify(hub_key.public, report.body)
        for at_byte in (0, len(report.body) // 2, len(report.body) - 1):
            changed = bytearray(report.body)
            changed[at_byte] ^= 0x01
            with pytest.raises(ProtocolError, match="differs from the one the hub signed"):
                signature.verify(hub_key.public, bytes(changed))
        forged = report.signature.to_bytes().replace(b"period 2026-11-01", b"period 2026-10-01")
        with pytest.raises(ProtocolError, match="does not verify"):
            ReportSignature.parse(forged).verify(hub_key.public, report.body)
        with pytest.raises(ProtocolError, match="not by"):
            signature.verify(SigningKey.generate().public, report.body)


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_cx_report_and_cx_verify_report_from_the_command_line(store, tmp_path):
    """A hub folder made by `cx hub init`; its store fed; the office's commands run as a user would."""
    from cx.hub.config import HubConfig

    def cx(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cx.cli", *args], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **env})

    hub_dir = tmp_path / "hub"
    assert cx("hub", "init", "--dir", str(hub_dir)).returncode == 0
    config = str(hub_dir / "hub.toml")
    cfg = HubConfig.load(config)
    hub_store = Store(cfg.store_url)
    hub_store.migrate()
    fixture(hub_store, SigningKey.load(cfg.hub.signing_key))
    hub_store.dispose()
    (hub_dir / "obligations.toml").write_text(OBLIGATIONS, "utf-8")
    loaded = cx("hub", "obligations", "load", "--config", config, "--by", "联席办 王某")
    assert loaded.returncode == 0 and "unchanged" in loaded.stdout  # the fixture loaded the same text already
    (hub_dir / "obligations.toml").write_text(OBLIGATIONS.replace("due_workdays = 5", "due_workdays = 8"), "utf-8")
    loaded = cx("hub", "obligations", "load", "--config", config, "--by", "联席办 王某")
    assert loaded.returncode == 0 and "version 2 by 联席办 王某" in loaded.stdout and "changed 修改: licences-monthly" \
        in loaded.stdout
    history = cx("hub", "obligations", "history", "--config", config)
    assert "v1" in history.stdout and "by 联席办 王某" in history.stdout and "changed licences-monthly" in history.stdout
    shown = cx("hub", "obligations", "show", "--config", config)
    assert "every month, 8 working days after it ends" in shown.stdout and "tax-honors" in shown.stdout

    check = cx("hub", "calendar", "check", "--config", config, "--years", "2025-2027")
    assert check.returncode == 0, check.stderr
    assert "2027  ESTIMATED" in check.stdout and "2026  covered" in check.stdout

    out = tmp_path / "reports" / "2026-11.pdf"
    made = cx("report", "compliance", "--config", config, "--from", "2026-11-01", "--to", "2026-11-30",
              "--as-of", AS_OF, "--format", "pdf", "--out", str(out), "--keep")
    assert made.returncode == 0, made.stderr
    assert "3 late record(s)" in made.stdout and out.exists() and (tmp_path / "reports" / "2026-11.pdf.sig").exists()
    good = cx("verify-report", str(out), "--public-key", str(hub_dir / "keys" / "hub.pub"))
    assert good.returncode == 0 and "VALID" in good.stdout and "2026-11-01 – 2026-11-30" in good.stdout
    body = bytearray(out.read_bytes())
    body[len(body) // 2] ^= 0x20
    out.write_bytes(bytes(body))
    bad = cx("verify-report", str(out), "--public-key", str(hub_dir / "keys" / "hub.pub"))
    assert bad.returncode == 1 and "INVALID" in bad.stdout

    with open(config, "a", encoding="utf-8") as fh:
        fh.write('[compliance.limits.fda]\nadministrative_license = 15\n')
    pending = cx("hub", "calendar", "check", "--config", config)
    assert "differ from those in force" in pending.stdout and "timeliness recompute" in pending.stdout
    recomputed = cx("hub", "timeliness", "recompute", "--config", config, "--by", "联席办 王某")
    assert recomputed.returncode == 0, recomputed.stderr
    assert "limit fda administrative_license: default 7 → 15 working days" in recomputed.stdout
    assert "late → on_time: 2" in recomputed.stdout and "fda: 3 changed" in recomputed.stdout  # lags 12 and 14

    kept = cx("report", "list", "--config", config)
    assert "2026-11-01 – 2026-11-30" in kept.stdout and "pdf" in kept.stdout
    nope = cx("report", "compliance", "--config", config, "--from", "2026-11-30", "--to", "2026-11-01",
              "--out", str(tmp_path / "x.html"))
    assert nope.returncode == 2 and "before it starts" in nope.stderr
    with open(config, "a", encoding="utf-8") as fh:
        fh.write('amr = 3\n')
    broken = cx("hub", "run", "--config", config, CX_BROKER_PASSWORD="unused")
    assert broken.returncode == 2 and "[compliance.limits] fda.amr: unknown record type" in broken.stderr


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_the_hub_keeps_the_monthly_reports_once(store, hub_key, tmp_path):
    from cx.hub.config import ComplianceSection, HubConfig, HubSection

    fixture(store, hub_key)
    cfg = HubConfig(hub=HubSection(name="洛阳"), compliance=ComplianceSection(report_day=10, report_langs=["zh", "en"]))
    assert reports.due_month(date(2026, 12, 10), 10) == PERIOD
    assert reports.due_month(date(2026, 12, 9), 10) == (date(2026, 10, 1), date(2026, 10, 31))
    assert reports.due_month(date(2027, 1, 3), 10) == (date(2026, 11, 1), date(2026, 11, 30))
    made = reports.ensure_periodic(store, cfg, hub_key, today=date(2026, 12, 10))
    assert len(made) == 5 * 2 * 5  # all departments together and each of four, two languages, five formats
    assert reports.ensure_periodic(store, cfg, hub_key, today=date(2026, 12, 20)) == []
    fda_own = reports.kept(store, {"fda"})
    assert {r["scope"] for r in fda_own} == {"fda"} and len(fda_own) == 10
    pdf = next(r for r in fda_own if r["format"] == "pdf" and r["lang"] == "zh")
    kept = reports.kept_report(store, pdf["id"])
    ReportSignature.parse(bytes(kept["signature"])).verify(hub_key.public, bytes(kept["body"]))


def test_a_running_hub_loads_the_obligations_file_and_exports_the_figures(hub_factory):
    """`cx hub run`: the obligations file becomes a version (by "hub start"), and /metrics marks the
    estimated year and counts versions by timeliness."""
    hub = hub_factory([])
    with (hub.dir / "hub.toml").open("a") as fh:
        fh.write('\n[compliance]\nobligations = "obligations.toml"\n')
    (hub.dir / "obligations.toml").write_text(OBLIGATIONS, "utf-8")
    store = Store(hub.cfg.store_url)
    tax = Feeder(store, "tax", NAMES["tax"], hub.key)
    tax.send(HONOR, [("h-late", "2026-11-27")], at("2027-01-20"))
    store.dispose()
    hub.start()
    deadline = time.time() + 45  # the figures are refreshed 3 s after start, then every 30 s
    text = ""
    while time.time() < deadline:
        with urllib.request.urlopen(f"{hub.api}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        if 'cx_timeliness_versions{dept="tax",status="late"} 1.0' in text:
            break
        time.sleep(0.5)
    assert 'cx_timeliness_versions{dept="tax",status="late"} 1.0' in text, text[-2000:]
    assert 'cx_timeliness_estimated_versions{years="2027"} 1.0' in text
    assert 'cx_calendar_year_estimated{year="2027"} 1.0' in text
    assert 'cx_node_last_contact_timestamp_seconds{dept="tax",node="n1"}' in text
    store = Store(hub.cfg.store_url)
    history = obligations.history(store)
    store.dispose()
    assert [(h["version"], h["loaded_by"]) for h in history] == [(1, "hub start (obligations.toml)")]


def test_the_benchmark_still_runs(tmp_path):
    """bench/compliance.py on a few hundred versions: it works and writes its figures (no timings checked)."""
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / "compliance.py"
    done = subprocess.run([sys.executable, str(script), "--versions", "400", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads((tmp_path / "compliance-sqlite-400.json").read_text())
    assert figures["versions"] == figures["projected"] == 400 and figures["renders"]["pdf"]["pages"] >= 2
