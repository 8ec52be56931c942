"""The public portal in Debian's chromium (Playwright): search, open an enterprise, verify a record, change language.

No account: a visitor types part of a name, follows the result, reads the warning class and the lists
the enterprise is on, has the server check a penalty's proof, and switches to English. Screenshots go
to test-artefacts/browser/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from portal_support import TARGET, make_portal_hub
from test_browser import ARTEFACTS, CHROMIUM, FLAGS

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                                reason="chromium is not installed: ops/dev/services.sh browser")


async def test_a_visitor_searches_opens_an_enterprise_verifies_a_record_and_changes_language(store_url, tmp_path):
    from playwright.async_api import async_playwright

    hub, corpus = make_portal_hub(tmp_path / "hub", store_url)
    await hub.start()
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            context = await browser.new_context(viewport={"width": 1280, "height": 900}, base_url=hub.url,
                                                locale="zh-CN")
            page = await context.new_page()
            await page.goto("/portal")
            assert await page.title() == "企业信用信息公示 · 测试交换中心"
            await page.fill("input[name=q]", "某某商贸")
            await page.click("form.search button[type=submit]")
            await page.wait_for_selector("#results")
            await page.screenshot(path=str(ARTEFACTS / "portal-search.png"), full_page=True)
            await page.click(f"text={TARGET}")
            await page.wait_for_selector("#standing")
            assert "/portal/enterprises/" + corpus.enterprises[0]["code"] in page.url
            standing = await page.inner_text("#standing")
            assert "严重" in standing and "严重违法失信名单" in standing and "经营异常名录" in standing
            await page.screenshot(path=str(ARTEFACTS / "portal-enterprise.png"), full_page=True)
            await page.click("#administrative_penalty >> text=核验")
            await page.wait_for_selector("#check")
            check = await page.inner_text("#check")
            assert "✔" in check and "✘" not in check
            await page.screenshot(path=str(ARTEFACTS / "portal-verify.png"), full_page=True)
            await page.click("a.lang")  # English
            await page.wait_for_selector("#check")
            assert "Proof checked by the hub" in await page.inner_text("#check")
            assert "/verify" in page.url  # the same page, now in English
            await page.click("nav.tabs >> text=Serious-violation list")
            await page.wait_for_selector("#list")
            assert TARGET in await page.inner_text("#list")
            await context.close()
            await browser.close()
    finally:
        await hub.stop()
