"""The public portal as a visitor meets it: search, enterprise pages, proof checks, lists, limits, privacy.

A hub is served in the test's event loop over a generated corpus (portal_support.py) on both stores;
no one logs in. The crawl follows every portal link (searches, enterprise pages, record pages, proofs,
lists, both languages) and scans every response for the ID numbers in the data and for anything shaped
like one.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urljoin, urlsplit

import pytest
from console_support import Client
from portal_support import TARGET, _line, catch_up, ingest, make_portal_hub

from cx.protocol.codes import is_uscc

# an 18-character resident ID (last may be X) or an old 15-digit one, not inside a longer code
ID_SHAPE = re.compile(r"(?<![0-9A-Za-z])(\d{17}[\dXx]|\d{15})(?![0-9A-Za-z])")


@pytest.fixture
async def portal(store_url, tmp_path):
    hub, corpus = make_portal_hub(tmp_path / "hub", store_url)
    await hub.start()
    yield hub, corpus
    await hub.stop()


async def test_search_by_code_number_and_name_with_filters(portal):
    hub, corpus = portal
    target = corpus.enterprises[0]
    async with Client(hub, lang="en") as c:
        status, body, _ = await c.get("/portal")
        assert status == 200 and 'name="q"' in body and "/portal/lists/abnormal" in body
        status, body, _ = await c.get(f"/portal/search?q={target['code']}")
        assert status == 200 and f'href="/portal/enterprises/{target["code"]}"' in body and TARGET in body
        status, body, _ = await c.get(f"/portal/search?q={target['reg_no']}")
        assert TARGET in body
        wrong = target["code"][:-1] + ("0" if target["code"][-1] != "0" else "1")
        assert not is_uscc(wrong)
        status, body, _ = await c.get(f"/portal/search?q={wrong}")
        assert status == 400 and "is not a valid unified social credit code" in body and "Not found" not in body
        status, body, _ = await c.get(f"/portal/enterprises/{wrong}")
        assert status == 404 and "Not a valid code" in body
        unknown = "91110000600037341L"  # valid, but not in the corpus
        status, body, _ = await c.get(f"/portal/search?q={unknown}")
        assert status == 200 and "Not found" in body
        status, body, _ = await c.get("/portal/search?q=某某商贸")
        assert TARGET in body and "洛阳市某某食品有限公司" not in body
        status, body, _ = await c.get("/portal/search?q=某某")  # two characters
        assert TARGET in body and "洛阳市某某食品有限公司" in body
        status, body, _ = await c.get("/portal/search?q=某")
        assert status == 400 and "at least two characters" in body
        # 孟津区 (410308) takes in 孟津县 (410322) and 吉利区 (410306): filtering by the old code finds all
        for region in ("410308", "410322"):
            status, body, _ = await c.get(f"/portal/search?q=机械厂&region={region}")
            assert "孟津县老城机械厂" in body
            status, body, _ = await c.get(f"/portal/search?q=石化配件&region={region}")
            assert "洛阳吉利石化配件有限公司" in body
        status, body, _ = await c.get("/portal/search?q=机械厂&region=410302")
        assert "孟津县老城机械厂" not in body
        status, body, _ = await c.get("/portal/search?q=有限公司&status=吊销")
        assert "吊销" in body and TARGET not in body
        status, body, _ = await c.get("/portal/search?q=有限公司&class=serious")
        assert TARGET in body and body.count('href="/portal/enterprises/') == 1
        status, body, _ = await c.get("/portal/search?q=有限公司&type=judicial")
        assert TARGET in body and body.count('href="/portal/enterprises/') == 1
    async with Client(hub, lang="zh") as c:
        status, body, _ = await c.get(f"/portal/search?q={wrong}")
        assert "不是有效的统一社会信用代码" in body


async def test_result_pages_are_capped_and_nothing_is_listed_without_a_query(portal):
    hub, _ = portal
    async with Client(hub, lang="en") as c:
        seen = []
        page = 1
        status, body, _ = await c.get("/portal/search?q=有限公司")
        while True:
            assert status == 200
            seen += re.findall(r'href="/portal/enterprises/(\w+)"', body)
            found = re.search(r'rel="next" href="/portal/search\?([^"]+)"', body)
            if not found:
                break
            page += 1
            status, body, _ = await c.get("/portal/search?" + found.group(1).replace("&amp;", "&"))
        assert page == 3 and len(seen) == 15 == len(set(seen))  # per_page 5, max_pages 3
        assert "narrow the search" in body
        status, body, _ = await c.get("/portal/search?q=有限公司&page=4")
        assert status == 400 and "Only the first 3 pages" in body
        status, body, _ = await c.get("/portal/search?q=")
        assert status == 400 and "does not list enterprises without a query" in body
        status, body, _ = await c.get("/portal/lists/abnormal?page=4")
        assert status == 400
        status, body, _ = await c.get("/portal/lists/nonesuch")
        assert status == 404


async def test_enterprise_page_explains_its_class_and_lists_and_checks_a_proof(portal):
    hub, corpus = portal
    code = corpus.enterprises[0]["code"]
    async with Client(hub, lang="en") as c:
        status, body, _ = await c.get(f"/portal/enterprises/{code}")
        assert status == 200 and TARGET in body
        top = body[:body.index('id="registration"')]
        assert "Warning class" in top and "Serious" in top
        assert "Serious-violation list" in top and "Abnormal-operations list" in top
        assert "/records/amr/ser-0/verify" in top and "/records/amr/abn-0/verify" in top  # explained by its records
        assert "/records/amr/pen-0-0/verify" in top  # "penalised within a year" names both penalties
        # one section per category, one record a page (records_per_page = 1), newest first
        penalties = body[body.index('id="administrative_penalty"'):]
        penalties = penalties[:penalties.index("</section>")]
        assert "洛市监罚〔2026〕1号" in penalties and "洛市监罚〔2026〕0号" not in penalties and "1 / 2" in penalties
        status, older, _ = await c.get(f"/portal/enterprises/{code}?p_administrative_penalty=2")
        assert "洛市监罚〔2026〕0号" in older
        assert 'id="judicial"' in body and "测试部门court" in body  # several departments, each named
        assert "信用修复窗口 0379-65190000" in body and "洛阳市信用办 0379-12345678" in body  # whom to ask
        # a penalty carries an ID number: no proof to download, but the server checks it
        assert "/records/amr/pen-0-1/proof" not in body and "/records/amr/abn-0/proof" in body
        status, page, _ = await c.get(f"/portal/enterprises/{code}/records/amr/pen-0-1/verify")
        assert status == 200 and "Proof checked by the hub" in page and "NOT valid" not in page
        assert page.count("✔") == 4
        status, denied, _ = await c.get(f"/portal/enterprises/{code}/records/amr/pen-0-1/proof")
        assert status == 403 and "personal data" in denied
        async with c.session.get(hub.url + f"/portal/enterprises/{code}/records/amr/abn-0/proof") as r:
            assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
            bundle = json.loads(await r.read())
        assert bundle["ledger"]["dept"] == "amr" and bundle["ledger"]["checkpoint"]
        # another enterprise's record is not reachable under this one's address
        other = corpus.enterprises[3]["code"]
        status, _, _ = await c.get(f"/portal/enterprises/{other}/records/amr/pen-0-1/verify")
        assert status == 404
        status, body, _ = await c.get("/portal/lists/serious_violation")
        assert status == 200 and TARGET in body and "Removed three years after entry" in body
    async with Client(hub, lang="zh") as c:
        status, body, _ = await c.get(f"/portal/enterprises/{code}")
        assert "警示类别" in body and "严重" in body and "严重违法失信名单" in body and "行政处罚" in body


async def test_a_credit_repair_hides_the_record_at_once(portal):
    hub, corpus = portal
    code = corpus.enterprises[0]["code"]
    store = hub.store()
    try:
        repair = _line("pen-0-1", "administrative_penalty", {}, "retract", "信用修复：已履行行政处罚决定并公开信用承诺")
        ingest(store, hub, {"amr": [(repair, "administrative_penalty")]}, node="repair")
    finally:
        store.dispose()
    async with Client(hub, lang="en") as c:
        status, body, _ = await c.get(f"/portal/enterprises/{code}")
        assert "洛市监罚〔2026〕1号" not in body and "pen-0-1" not in body
        assert "洛市监罚〔2026〕0号" in body  # the other penalty stays
        status, _, _ = await c.get(f"/portal/enterprises/{code}/records/amr/pen-0-1/verify")
        assert status == 404


async def test_rate_limits_answer_429_with_a_page(store_url, tmp_path):
    hub, corpus = make_portal_hub(tmp_path / "hub", store_url, count=10, searches=3, views=2)
    await hub.start()
    try:
        async with Client(hub, lang="zh") as c:
            for _ in range(3):
                status, _, _ = await c.get("/portal/search?q=某某")
                assert status == 200
            async with c.session.get(hub.url + "/portal/search?q=某某") as r:
                body = await r.text()
                assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
            assert "请求过于频繁" in body and "Traceback" not in body
            code = corpus.enterprises[0]["code"]
            for expected in (200, 200, 429):
                status, body, _ = await c.get(f"/portal/enterprises/{code}")
                assert status == expected
        async with Client(hub, lang="en") as c:  # the same address: still refused, in English
            status, body, _ = await c.get("/portal/lists/abnormal")
            assert status == 429 and "Too many requests" in body
    finally:
        await hub.stop()


async def test_a_crawl_of_the_portal_finds_no_id_number(portal):
    hub, corpus = portal
    codes = {e["code"] for e in corpus.enterprises} | {e["reg_no"] for e in corpus.enterprises}
    start = ["/portal", "/portal/search?q=有限公司", "/portal/search?q=某某", f"/portal/search?q={TARGET}",
             f"/portal/search?q={corpus.enterprises[0]['reg_no']}"]
    seen: set[str] = set()
    responses = 0
    for lang in ("zh", "en"):
        async with Client(hub, lang=lang) as c:
            queue = list(start)
            visited: set[str] = set()
            while queue and len(visited) < 400:
                path = queue.pop(0)
                if path in visited:
                    continue
                visited.add(path)
                async with c.session.get(hub.url + path) as r:
                    body = (await r.read()).decode("utf-8", "replace")
                    assert r.status < 500, path
                responses += 1
                for id_no in corpus.ids:
                    assert id_no not in body, (path, id_no)
                shaped = {m for m in ID_SHAPE.findall(body) if m not in codes}
                assert not shaped, (path, shaped)
                assert "王小明" not in body, path
                for href in re.findall(r'href="([^"]+)"', body):
                    href = urljoin(path, href.replace("&amp;", "&"))
                    parts = urlsplit(href)
                    if parts.path.startswith("/portal") and not parts.netloc and not parts.path.endswith(
                            (".csv", ".xlsx")):
                        queue.append(parts.path + (f"?{parts.query}" if parts.query else ""))
            seen |= visited
    assert responses > 60 and any(p.endswith("/proof") for p in seen) and any(p.endswith("/verify") for p in seen)
