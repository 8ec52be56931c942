"""Valid `data` objects for every record type in the data dictionary, shared by the tests."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

# The receiving date the examples are checked against: every event date lies before it.
TODAY = date(2025, 3, 31)

# Credit codes from the data dictionary's list of valid examples.
USCC_A = "91110000600037341L"
USCC_B = "91110108551385082Q"
USCC_C = "91430111MA4L41YT1U"
USCC_D = "91350200776049653A"
ORG_CODE = "MA4L41YT1"  # positions 9-17 of USCC_C, a valid GB 11714 code

# A made-up resident ID number (format only); it must never appear unmasked in an error.
ID_NO = "410302198001011234"

SUBJECT: dict[str, Any] = {
    "subject_name": "洛阳市示例商贸有限公司",
    "subject_category": "legal_person",
    "uscc": USCC_C,
}
AUTHORITY: dict[str, Any] = {"authority": "洛阳市市场监督管理局", "authority_uscc": USCC_D}

EXAMPLES: dict[str, dict[str, Any]] = {
    "enterprise_registration": {
        **SUBJECT,
        "org_code": ORG_CODE,
        "legal_rep": "张三",
        "legal_rep_id_type": "居民身份证",
        "legal_rep_id_no": ID_NO,
        "enterprise_type": "有限责任公司（自然人投资或控股）",
        "registered_capital": "500.00",
        "currency": "CNY",
        "established_date": "2016-03-10",
        "address": "河南省洛阳市西工区中州中路1号",
        "business_scope": "日用百货、五金交电销售",
        "licensed_items": ["食品经营"],
        "status": "存续",
        "registration_authority": "洛阳市工商行政管理局",
        "approval_date": "2016-03-10",
        "region": "410302",
    },
    "administrative_license": {
        **SUBJECT,
        **AUTHORITY,
        "decision_doc_name": "食品经营许可决定书",
        "decision_no": "洛食药监许〔2016〕12号",
        "license_category": "普通",
        "certificate_name": "食品经营许可证",
        "license_no": "JY14103020000123",
        "content": "预包装食品销售",
        "decision_date": "2016-04-01",
        "valid_from": "2016-04-01",
        "valid_to": "2021-03-31",
    },
    "administrative_penalty": {
        **SUBJECT,
        **AUTHORITY,
        "legal_rep": "张三",
        "decision_no": "洛市监罚〔2016〕5号",
        "violation_type": "销售不合格产品",
        "facts": "经查，当事人销售不合格电线。",
        "legal_basis": "《中华人民共和国产品质量法》第四十九条",
        "penalty_types": ["警告", "罚款"],
        "content": "警告，罚款人民币贰万元",
        "fine_amount": "2.00",
        "decision_date": "2016-05-16",
        "publish_until": "2019-05-16",
    },
    "inspection": {
        **SUBJECT,
        "inspection_kind": "不定向抽查",
        "inspection_date": "2016-06-01",
        "result": "未发现问题",
    },
    "ip_registration": {
        **SUBJECT,
        "ip_kind": "商标",
        "registration_no": "ZC2016001",
        "ip_name": "牡丹",
        "pledgor": "洛阳市示例商贸有限公司",
        "pledgee": "洛阳银行股份有限公司",
        "registration_date": "2016-07-01",
        "status": "有效",
    },
    "equity_pledge": {
        **SUBJECT,
        "registration_no": "410300201600001",
        "pledgor": "李四",
        "pledged_amount": "100",
        "pledgee": "王五",
        "registration_date": "2016-08-01",
        "status": "有效",
    },
    "chattel_mortgage": {
        **SUBJECT,
        "registration_no": "DY2016-0001",
        "registration_authority": "洛阳市工商行政管理局",
        "secured_amount": "300.5",
        "mortgagee": "中国工商银行洛阳分行",
        "collateral": "生产设备一批",
        "registration_date": "2016-09-01",
        "status": "有效",
    },
    "consumer_warning": {
        **SUBJECT,
        "title": "关于预付卡消费的提示",
        "content": "请谨慎办理预付卡。",
        "issue_date": "2016-10-01",
    },
    "support_policy": {
        **SUBJECT,
        **AUTHORITY,
        "policy_name": "小微企业创业扶持",
        "support_content": "创业补贴",
        "amount": "5.00",
        "decision_date": "2016-11-01",
    },
    "honor": {
        **SUBJECT,
        "honor_name": "A级纳税人",
        "level": "市级",
        "conferred_by": "洛阳市国家税务局",
        "conferred_date": "2016-12-01",
    },
    "judicial": {
        **SUBJECT,
        "judicial_kind": "股权冻结",
        "case_no": "（2017）豫03执12号",
        "court": "河南省洛阳市中级人民法院",
        "content": "冻结股权",
        "amount": "50",
        "decision_date": "2017-01-05",
        "status": "冻结",
    },
    "arbitration": {
        **SUBJECT,
        "case_no": "洛仲字〔2017〕第1号",
        "arbitration_body": "洛阳仲裁委员会",
        "content": "裁决如下",
        "award_date": "2017-02-01",
    },
    "self_disclosure": {
        **SUBJECT,
        "disclosure_kind": "年度报告",
        "report_year": 2016,
        "content": {"employees": 12, "website": "example.cn"},
        "disclosed_date": "2017-03-01",
    },
    "abnormal_operation": {
        **SUBJECT,
        **AUTHORITY,
        "action": "列入",
        "reason": "未按规定报送年度报告",
        "decision_no": "洛市监异〔2017〕1号",
        "decision_date": "2017-07-01",
    },
    "serious_violation": {
        **SUBJECT,
        **AUTHORITY,
        "action": "列入",
        "reason": "被列入经营异常名录届满3年仍未履行相关义务",
        "decision_no": "洛市监严〔2020〕1号",
        "decision_date": "2020-07-01",
    },
    "other": {
        **SUBJECT,
        "title": "其他信息",
        "content": "说明",
        "event_date": "2018-01-01",
    },
}


def example(record_type: str) -> dict[str, Any]:
    """A fresh deep copy of the type's valid example, safe to mutate."""
    return copy.deepcopy(EXAMPLES[record_type])


def record_line(record_type: str, n: int = 1, *, op: str = "upsert") -> bytes:
    """The encoded record line for the type's example, as a node writes it."""
    from cx.protocol.envelope import RecordLine

    return RecordLine(
        record_id=f"{record_type}-{n}", type=record_type, schema_version=1, op=op,
        data=example(record_type) if op == "upsert" else None,
        source={"adapter": "csv", "locator": f"{record_type}.csv:{n}", "extracted": "2025-03-30T01:02:03.456Z",
                "entered_by": None},
        reason="录入错误，撤销" if op == "retract" else None,
    ).to_bytes()


def signed_batch(key, record_types=("administrative_penalty", "other", "honor"), *, seq: int = 1,
                 prev: str | None = None, dept: str = "amr", node: str = "amr-node-1"):
    """A Batch of the given types' example records, signed with `key`."""
    from cx.protocol.envelope import build_batch

    lines = [record_line(t, i) for i, t in enumerate(record_types, start=1)]
    return build_batch(key, dept=dept, node=node, seq=seq, prev=prev, lines=lines,
                       schemas={t: 1 for t in record_types}, created="2025-03-31T02:00:00.000Z")
