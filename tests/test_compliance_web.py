"""The compliance page and API behind the console's one access check: the office sees all, a department its own."""

from __future__ import annotations

import base64
import io
import os
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from cx.hub import obligations, reports
from cx.hub.access import GRANTS, Permission
from cx.hub.projections import Projector, hub_projections
from cx.hub.store import access_trail
from cx.protocol.reports import ReportSignature
from console_support import Client, make_console_hub
from test_browser import CHROMIUM, browser  # noqa: F401 - the Playwright fixture (Debian's chromium)
from timeliness_support import Feeder, at

LICENCE = "administrative_license"
NOVEMBER = "from=2026-11-01&to=2026-11-30"
OBLIGATIONS = """
[[obligation]]
id = "licences-monthly"
title = "行政许可按月报送"
departments = ["fda"]
record_types = ["administrative_license"]
period = "month"
due_workdays = 5
"""


@pytest.fixture
async def hub(store_url, tmp_path):
    made = make_console_hub(tmp_path / "hub", store_url)
    store = made.store()
    fda = Feeder(store, "fda", "洛阳市食品药品监督管理局", made.key)
    # Fri 9 Oct → Thu 5 Nov 2026: 20 working days; Tue 20 Oct → 5 Nov: 12 — both late against 7
    fda.send(LICENCE, [("fda-1", "2026-10-09"), ("fda-2", "2026-10-20")], at("2026-11-05"))
    fda.beat({LICENCE: 3}, at("2026-11-05"))
    Projector(store, hub_projections(made.cfg)).catch_up()
    obligations.load(store, OBLIGATIONS, by="联席办")
    store.dispose()
    await made.start()
    yield made
    await made.stop()


def test_compliance_is_granted_to_the_office_and_each_department_for_itself():
    assert Permission.COMPLIANCE in GRANTS["office"] and Permission.COMPLIANCE in GRANTS["department"]
    assert Permission.COMPLIANCE not in GRANTS["auditor"]


async def test_the_office_sees_every_department_and_downloads_a_signed_report(hub):
    async with Client(hub, lang="zh") as c:
        await c.login("office1")
        status, page, _ = await c.get(f"/compliance?{NOVEMBER}")
        assert status == 200, page[-500:]
        assert "报送时限合规" in page and "洛阳市食品药品监督管理局" in page and "测试部门amr" in page
        assert 'data-dept="fda" class="bad"' in page and "fda-1" in page and "20 / 7" in page
        assert "源端数量" in page and "行政许可按月报送" in page and "已逾期" not in page  # November is still due
        assert 'href="/compliance"' in page  # the menu
        status, answer = await c.json(f"/api/v1/reports/compliance?{NOVEMBER}&as_of={at('2026-12-10')}&lang=zh")
        assert status == 200 and answer["data"]["format"] == "cx-compliance/1"
        assert {d["dept"] for d in answer["data"]["departments"]} == {"amr", "court", "fda"}
        fda = next(d for d in answer["data"]["departments"] if d["dept"] == "fda")
        assert (fda["late"], fda["on_time"], fda["missing"]) == (2, 0, 1)
        assert answer["words"]["obligations"][0]["status"] == "已逾期"  # on 10 December: 7 December has passed
        async with c.session.get(hub.url + f"/api/v1/reports/compliance?{NOVEMBER}&as_of={at('2026-12-10')}"
                                          f"&format=xlsx&lang=zh") as r:
            assert r.status == 200 and r.content_type.endswith("spreadsheetml.sheet")
            assert "attachment" in r.headers["Content-Disposition"]
            body = await r.read()
            header_sig = base64.b64decode(r.headers["X-CX-Report-Signature"])
        async with c.session.get(hub.url + f"/api/v1/reports/compliance?{NOVEMBER}&as_of={at('2026-12-10')}"
                                          f"&format=xlsx&lang=zh&signature=1") as r:
            sig = await r.read()
    assert sig == header_sig  # the signature link signs the very file downloaded
    ReportSignature.parse(sig).verify(hub.key.public, body)
    from openpyxl import load_workbook

    late = {row[1]: row for row in load_workbook(io.BytesIO(body))["逾期记录"].iter_rows(min_row=2, values_only=True)}
    assert late["fda-1"][:3] == ("fda", "fda-1", "行政许可") and late["fda-1"][6] == 20
    await hub.flush_trail()
    store = hub.store()
    with store.reader.connect() as conn:
        actions = [(r.actor, r.action, r.target) for r in conn.execute(
            select(access_trail).where(access_trail.c.actor == "office1").order_by(access_trail.c.idx))]
    store.dispose()
    assert any(a == "view" and t.startswith("GET /compliance") for _, a, t in actions)
    assert any(a == "download" and "format=xlsx" in t for _, a, t in actions)


async def test_a_department_sees_only_its_own(hub):
    async with Client(hub, lang="en") as c:
        await c.login("amr1")
        status, page, _ = await c.get(f"/compliance?{NOVEMBER}")
        assert status == 200 and "测试部门amr" in page and "洛阳市食品药品监督管理局" not in page
        assert (await c.get(f"/compliance?{NOVEMBER}&dept=fda"))[0] == 403
        status, answer = await c.json(f"/api/v1/reports/compliance?{NOVEMBER}")
        assert status == 200 and answer["data"]["scope"] == ["amr"]
        assert [d["dept"] for d in answer["data"]["departments"]] == ["amr"]
        assert (await c.json(f"/api/v1/reports/compliance?{NOVEMBER}&dept=fda"))[0] == 403
        assert (await c.json(f"/api/v1/reports/compliance?{NOVEMBER}&dept=amr&dept=fda"))[0] == 403
    async with Client(hub) as c:
        await c.login("aud")
        assert (await c.get("/compliance"))[0] == 403
        assert (await c.json("/api/v1/reports/compliance"))[0] == 403
    async with Client(hub) as c:
        assert (await c.json("/api/v1/reports/compliance"))[0] == 401


async def test_kept_monthly_reports_are_listed_and_served_by_scope(hub):
    store = hub.store()
    reports.make_periodic(store, hub.cfg, hub.key, date(2026, 11, 1), date(2026, 11, 30), formats=("json", "csv"))
    store.dispose()
    async with Client(hub) as c:
        await c.login("office1")
        status, kept = await c.json("/api/v1/reports")
        assert status == 200 and {k["scope"] for k in kept} == {"*", "amr", "court", "fda"}
        everything = next(k for k in kept if k["scope"] == "*" and k["format"] == "csv")
        status, page, _ = await c.get("/compliance")
        assert f'href="/api/v1/reports/{everything["id"]}"' in page
        async with c.session.get(f"{hub.url}/api/v1/reports/{everything['id']}") as r:
            body = await r.read()
        async with c.session.get(f"{hub.url}/api/v1/reports/{everything['id']}?signature=1") as r:
            ReportSignature.parse(await r.read()).verify(hub.key.public, body)
    async with Client(hub) as c:
        await c.login("amr1")
        status, kept = await c.json("/api/v1/reports")
        assert {k["scope"] for k in kept} == {"amr"}
        own = kept[0]["id"]
        async with c.session.get(f"{hub.url}/api/v1/reports/{own}") as r:
            assert r.status == 200
        async with c.session.get(f"{hub.url}/api/v1/reports/{everything['id']}") as r:
            assert r.status == 403
        async with c.session.get(f"{hub.url}/api/v1/reports/999999") as r:
            assert r.status == 404


async def test_bad_periods_are_explained(hub):
    async with Client(hub, lang="en") as c:
        await c.login("office1")
        status, page, _ = await c.get("/compliance?from=2026-11-30&to=2026-11-01")
        assert status == 400 and "The period ends before it starts." in page
        status, answer = await c.json("/api/v1/reports/compliance?from=yesterday")
        assert status == 400 and "2026-11-01" in answer["message"]
        status, answer = await c.json(f"/api/v1/reports/compliance?{NOVEMBER}&format=docx")
        assert status == 400 and "Unknown format" in answer["message"]
        status, answer = await c.json(f"/api/v1/reports/compliance?{NOVEMBER}&dept=nope")
        assert status == 400 and "no department nope" in answer["message"]


@pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                    reason="chromium is not installed: ops/dev/services.sh browser")
@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_the_office_opens_the_compliance_page_in_a_browser_and_downloads_the_xlsx(hub, browser, tmp_path):
    """Debian's chromium (Playwright): log in as the office, open the compliance page, see the late department,
    download the XLSX from the page's link and read it back; a screenshot goes to test-artefacts/browser/."""
    from openpyxl import load_workbook

    from console_support import PASSWORD
    from test_browser import ARTEFACTS

    context = await browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True,
                                        base_url=hub.url, extra_http_headers={"Accept-Language": "zh-CN"})
    page = await context.new_page()
    await page.goto("/login")
    await page.fill("input[name=name]", "office1")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_load_state()
    await page.click("nav.main a[href='/compliance']")
    await page.fill("input[name=from]", "2026-11-01")
    await page.fill("input[name=to]", "2026-11-30")
    await page.click("form.filters button[type=submit]")
    await page.wait_for_load_state()
    late = page.locator("#ranking tr[data-dept=fda]")
    assert await late.get_attribute("class") == "bad"
    assert (await late.locator("td.late-count").inner_text()).strip() == "2"
    assert "fda-1" in await page.locator(".late-records[data-dept=fda]").inner_text()
    await page.screenshot(path=str(ARTEFACTS / "compliance.png"), full_page=True)
    async with page.expect_download() as waiting:
        await page.click("#downloads a:text-is('XLSX')")
    download = await waiting.value
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    await context.close()
    assert saved.name.startswith("compliance-2026-11-01-2026-11-30-all-") and saved.suffix == ".xlsx"
    rows = {r[1]: r for r in load_workbook(saved)["逾期记录" if "-zh." in saved.name else "Late records"]
            .iter_rows(min_row=2, values_only=True)}
    assert rows["fda-1"][0] == "fda" and rows["fda-1"][6] == 20 and rows["fda-2"][6] == 12
