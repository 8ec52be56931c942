"""Credit checks for agencies, list downloads and early repairs, behind the console's one access check."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile

import pytest
from sqlalchemy import select

from cx.cli import main
from cx.hub import creditcheck
from cx.hub.access import GRANTS, Permission
from cx.hub.creditcheck import CheckError, CheckInvalid
from cx.hub.projections import Projector, hub_projections
from cx.hub.store import access_trail
from console_support import Client, make_console_hub
from examples import ID_NO, USCC_A, USCC_B, USCC_C
from timeliness_support import Feeder, at

ID_PATTERN = re.compile(r"\d{17}[\dXx]")
CODES = "\n".join([USCC_C, USCC_A, "91350100M000100Y4Z", ID_NO, USCC_C.lower(), USCC_B])


@pytest.fixture
async def hub(store_url, tmp_path):
    made = make_console_hub(tmp_path / "hub", store_url)
    store = made.store()
    sam = Feeder(store, "sam", "洛阳市市场监督管理局", made.key)
    sam.send("abnormal_operation", [("ab-1", "2026-05-06")], at("2026-05-08"))
    sam.send("administrative_penalty", [("pen-9", "2026-10-01")], at("2026-10-08"),
             changes={"publish_until": None, "penalty_types": ["罚款"], "fine_amount": "20", "uscc": USCC_B})
    sam.send("administrative_penalty", [("pen-9", None)], at("2026-10-09"), reason="信用修复：已履行")
    Projector(store, hub_projections(made.cfg)).catch_up()
    store.dispose()
    await made.start()
    yield made
    await made.stop()


def test_credit_checks_are_granted_to_every_department_and_the_operator_only():
    assert Permission.CREDIT_CHECK in GRANTS["department"] and Permission.CREDIT_CHECK in GRANTS["operator"]
    assert Permission.CREDIT_CHECK not in GRANTS["auditor"] and Permission.CREDIT_CHECK not in GRANTS["office"]


def test_codes_are_read_per_line_and_invalid_ones_explained():
    parsed = creditcheck.parse_codes(f"{USCC_C}\n{USCC_A}；{USCC_B}\n\nabc\n{USCC_C.lower()}\n{ID_NO}", 10)
    assert parsed.codes == [(1, USCC_C), (2, USCC_A), (2, USCC_B)]
    reasons = {(x["line"], x["reason"]) for x in parsed.invalid}
    assert reasons == {(4, "length"), (5, "duplicate"), (6, "check")}
    shown = next(x["value"] for x in parsed.invalid if x["line"] == 6)
    assert shown != ID_NO and shown.startswith("41") and "*" in shown
    with pytest.raises(CheckError, match="at most 2"):
        creditcheck.parse_codes(f"{USCC_C}\n{USCC_A}\n{USCC_B}", 2)
    with pytest.raises(CheckError, match="at least one"):
        creditcheck.parse_codes(" \n ", 2)


async def test_another_agency_checks_and_the_signed_document_verifies(hub, tmp_path):
    async with Client(hub) as c:
        await c.login("court1")  # a department account: the court checks enterprises another department reported
        status, page, _ = await c.get("/credit-check")
        assert status == 200 and "procurement" in page
        status, page, _ = await c.post("/credit-check", {"purpose": "procurement", "codes": CODES})
        assert status == 200, page
        assert "On the abnormal-operations list" in page and "wrong check character" in page
        assert ID_NO not in page
        check_id = re.search(r"/credit-check/([0-9a-f-]{36})\.json", page).group(1)
        async with c.session.get(f"{hub.url}/credit-check/{check_id}.json") as r:
            assert r.status == 200
            signed = await r.read()
        async with c.session.get(f"{hub.url}/credit-check/{check_id}.xlsx?lang=zh") as r:
            assert r.status == 200
            workbook = await r.read()
    doc = creditcheck.verify(signed, hub.key.public)
    by_code = {r["uscc"]: r for r in doc["results"]}
    assert doc["purpose"] == "procurement" and doc["requested_by"]["actor"] == "court1"
    c_result = by_code[USCC_C]
    assert c_result["class"] == "attention"
    assert c_result["labels"][0]["id"] == "abnormal_list" and c_result["labels"][0]["records"] == [["sam", "ab-1"]]
    assert [x["list_id"] for x in c_result["lists"]] == ["abnormal"]
    assert by_code[USCC_B]["class"] == "normal"  # its penalty was repaired
    assert by_code[USCC_A]["known"] is False
    assert {x["reason"] for x in doc["invalid"]} == {"charset", "check", "duplicate"}
    # the ledger it was computed from: the hub's signed checkpoint of each department
    assert doc["ledger"]["sam"]["applied"] == 3 and doc["ledger"]["sam"]["checkpoint"]["size"] == 3
    # one changed byte anywhere breaks it
    for at_byte in (10, len(signed) // 2, len(signed) - 5):
        tampered = bytearray(signed)
        tampered[at_byte] = (tampered[at_byte] + 1) % 256
        with pytest.raises(CheckInvalid):
            creditcheck.verify(bytes(tampered), hub.key.public)
    with pytest.raises(CheckInvalid):
        creditcheck.verify(signed.replace(b'"procurement"', b'"honour"'), hub.key.public)
    # offline, with the command
    (tmp_path / "check.json").write_bytes(signed)
    (tmp_path / "bad.json").write_bytes(signed.replace(b'"attention"', b'"normal"', 1))
    (tmp_path / "hub.pub").write_text(hub.key.public.pem())
    assert main(["verify-credit-check", str(tmp_path / "check.json"), "--public-key", str(tmp_path / "hub.pub")]) == 0
    assert main(["verify-credit-check", str(tmp_path / "bad.json"), "--public-key", str(tmp_path / "hub.pub")]) == 1
    # nothing personal in the downloads
    for name, data in [("json", signed), *_xlsx_parts(workbook)]:
        assert not ID_PATTERN.search(data.decode("utf-8", "replace")), name
    # the trail: who checked whom, for what
    await hub.flush_trail()
    with hub.store().reader.connect() as conn:
        rows = conn.execute(select(access_trail.c.actor, access_trail.c.action, access_trail.c.target,
                                   access_trail.c.line).where(access_trail.c.action == "credit_check")).all()
    checked = {r.target for r in rows if r.target.startswith("credit-check ")}
    assert checked == {f"credit-check {USCC_C}", f"credit-check {USCC_A}", f"credit-check {USCC_B}"}
    assert all(r.actor == "court1" and b"purpose=procurement" in bytes(r.line) for r in rows
               if r.target.startswith("credit-check "))


def _xlsx_parts(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(n, z.read(n)) for n in z.namelist() if n.endswith(".xml")]


async def test_the_api_answers_the_signed_document_and_refuses_what_it_cannot_check(hub):
    async with Client(hub) as c:
        async def post(token: str, body: object) -> tuple[int, bytes]:
            async with c.session.post(f"{hub.url}/api/v1/credit-checks", json=body,
                                      headers={"Authorization": f"Bearer {hub.tokens[token]}"}) as r:
                return r.status, await r.read()

        status, signed = await post("amr1", {"purpose": "support", "codes": [USCC_C, "nonsense"]})
        assert status == 200
        doc = creditcheck.verify(signed, hub.key.public)
        assert doc["requested_by"]["actor"].startswith("token:") and doc["invalid"][0]["reason"] == "length"
        status, body = await post("aud", {"purpose": "support", "codes": [USCC_C]})
        assert status == 403
        status, body = await post("amr1", {"purpose": "lottery", "codes": [USCC_C]})
        assert status == 400 and "purpose" in json.loads(body)["message"]
        status, body = await post("amr1", {"purpose": "support", "codes": USCC_C})
        assert status == 400
        # a kept check is served again to whoever ran it, and to nobody else but the operator
        path = f"/api/v1/credit-checks/{doc['check_id']}"
        status, again = await c.json(path, hub.tokens["amr1"])
        assert status == 200 and again["check_id"] == doc["check_id"]
        assert (await c.json(path, hub.tokens["court1"]))[0] == 404
        assert (await c.json(path, hub.tokens["op"]))[0] == 200


async def test_public_lists_download_without_an_account(hub):
    async with Client(hub) as c:
        async with c.session.get(f"{hub.url}/portal/lists/abnormal.csv?lang=zh") as r:
            assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
            rows = list(csv.reader(io.StringIO((await r.read()).decode("utf-8-sig"))))
        assert rows[0][0] == "统一社会信用代码" and rows[1][:3] == [USCC_C, rows[1][1], "2026-05-06"]
        assert rows[1][3] == "sam/ab-1"
        async with c.session.get(f"{hub.url}/portal/lists/abnormal.xlsx") as r:
            assert r.status == 200
            parts = _xlsx_parts(await r.read())
        assert any(USCC_C.encode() in data for _n, data in parts)
        async with c.session.get(f"{hub.url}/portal/lists/nosuch.csv") as r:
            assert r.status == 404


async def test_early_repairs_are_shown_to_the_office(hub):
    async with Client(hub) as c:
        await c.login("office1")
        status, page, _ = await c.get("/compliance/repairs")
        assert status == 200 and "pen-9" in page and "2027-04-01" in page
    async with Client(hub) as c:
        await c.login("amr1")  # a department sees its own only
        status, page, _ = await c.get("/compliance/repairs")
        assert status == 200 and "pen-9" not in page


async def test_codes_come_in_a_file_too_and_a_file_too_large_is_refused_with_a_page(hub):
    import aiohttp

    async with Client(hub) as c:
        await c.login("amr1")
        await c.get("/credit-check")

        async def upload(content: bytes) -> tuple[int, str]:
            form = aiohttp.FormData()
            form.add_field("csrf_token", c.csrf)
            form.add_field("purpose", "honour")
            form.add_field("codes", "")
            form.add_field("file", content, filename="codes.csv", content_type="text/csv")
            async with c.session.post(f"{hub.url}/credit-check", data=form) as r:
                return r.status, await r.text()

        status, page = await upload(f"代码,名称\n{USCC_C},某某公司\n".encode("gb18030"))
        assert status == 200 and USCC_C in page and "On the abnormal-operations list" in page
        assert "repeats" not in page  # the header line is an invalid line, not a crash
        status, page = await upload(b"x" * (2 * 1024 * 1024))
        assert status == 413 and "too large" in page and "<html" in page and "Traceback" not in page
