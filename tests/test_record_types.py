"""Every record type of the data dictionary: valid examples, each failure, error shape, validator agreement."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import fastjsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cx.protocol.validation import default_registry
from examples import EXAMPLES, ID_NO, TODAY, USCC_A, example

# -- the data dictionary (shared/spec/record-types.md), written out independently -----------

SUBJECT_ENUMS = {"subject_category": ["legal_person", "individual_business", "natural_person"]}
STATUS_VALID = ["有效", "无效"]
ACTION = ["列入", "移出"]
# authority is required where the type is a decision
DECISIONS = {"administrative_license", "administrative_penalty", "support_policy",
             "abnormal_operation", "serious_violation"}

SPEC: dict[str, dict[str, Any]] = {
    "enterprise_registration": dict(
        required=["enterprise_type", "legal_rep", "established_date", "address", "business_scope", "status",
                  "registration_authority", "approval_date", "region"],
        enums={"status": ["存续", "在业", "吊销", "注销", "迁出", "停业", "清算"]},
        dates=["established_date", "approval_date"], decimals=["registered_capital"], event="approval_date", limit=7),
    "administrative_license": dict(
        required=["decision_doc_name", "decision_no", "license_category", "content", "decision_date",
                  "valid_from", "valid_to"],
        enums={"license_category": ["普通", "特许", "认可", "核准", "登记", "其他"]},
        dates=["decision_date", "valid_from", "valid_to"], decimals=[], event="decision_date", limit=7),
    "administrative_penalty": dict(
        required=["decision_no", "violation_type", "facts", "legal_basis", "penalty_types", "content",
                  "decision_date"],
        enums={"penalty_types": ["警告", "通报批评", "罚款", "没收违法所得", "没收非法财物", "暂扣许可证件",
                                 "降低资质等级", "吊销许可证件", "限制开展生产经营活动", "责令停产停业",
                                 "责令关闭", "限制从业", "行政拘留", "其他"]},
        dates=["decision_date", "valid_until", "publish_until"], decimals=["fine_amount", "confiscated_amount"],
        event="decision_date", limit=7),
    "inspection": dict(
        required=["inspection_kind", "inspection_date", "result"],
        enums={"inspection_kind": ["定向抽查", "不定向抽查", "专项检查", "其他"]},
        dates=["inspection_date"], decimals=[], event="inspection_date", limit=20),
    "ip_registration": dict(
        required=["ip_kind", "registration_no", "ip_name", "pledgor", "pledgee", "registration_date", "status"],
        enums={"ip_kind": ["商标", "专利", "著作权"], "status": STATUS_VALID},
        dates=["registration_date"], decimals=[], event="registration_date", limit=20),
    "equity_pledge": dict(
        required=["registration_no", "pledgor", "pledged_amount", "pledgee", "registration_date", "status"],
        enums={"status": STATUS_VALID},
        dates=["registration_date"], decimals=["pledged_amount"], event="registration_date", limit=20),
    "chattel_mortgage": dict(
        required=["registration_no", "registration_authority", "secured_amount", "mortgagee", "collateral",
                  "registration_date", "status"],
        enums={"status": ["有效", "注销"]},
        dates=["registration_date"], decimals=["secured_amount"], event="registration_date", limit=20),
    "consumer_warning": dict(
        required=["title", "content", "issue_date"], enums={},
        dates=["issue_date"], decimals=[], event="issue_date", limit=20),
    "support_policy": dict(
        required=["policy_name", "support_content", "decision_date"], enums={},
        dates=["decision_date"], decimals=["amount"], event="decision_date", limit=20),
    "honor": dict(
        required=["honor_name", "level", "conferred_by", "conferred_date"],
        enums={"level": ["国家级", "省级", "市级", "县级"]},
        dates=["conferred_date"], decimals=[], event="conferred_date", limit=20),
    "judicial": dict(
        required=["judicial_kind", "case_no", "court", "content", "decision_date"],
        enums={"judicial_kind": ["失信被执行人", "股权冻结", "股东变更协助执行", "判决裁定", "其他"]},
        dates=["decision_date"], decimals=["amount"], event="decision_date", limit=20),
    "arbitration": dict(
        required=["case_no", "arbitration_body", "content", "award_date"], enums={},
        dates=["award_date"], decimals=[], event="award_date", limit=20),
    "self_disclosure": dict(
        required=["disclosure_kind", "content", "disclosed_date"],
        enums={"disclosure_kind": ["年度报告", "股东出资", "股权变更", "行政许可", "知识产权出质", "行政处罚", "其他"]},
        dates=["disclosed_date"], decimals=[], event="disclosed_date", limit=20),
    "abnormal_operation": dict(
        required=["action", "reason", "decision_date"], enums={"action": ACTION},
        dates=["decision_date"], decimals=[], event="decision_date", limit=10),
    "serious_violation": dict(
        required=["action", "reason", "decision_date"], enums={"action": ACTION},
        dates=["decision_date"], decimals=[], event="decision_date", limit=10),
    "other": dict(
        required=["title", "content", "event_date"], enums={},
        dates=["event_date"], decimals=[], event="event_date", limit=20),
}
TYPES = sorted(SPEC)
SUBJECT_FIELDS = ["subject_name", "subject_category", "uscc", "reg_no", "org_code", "tax_no", "legal_rep",
                  "legal_rep_id_type", "legal_rep_id_no", "authority", "authority_uscc", "entered_by", "remarks"]


def required_fields(t: str) -> list[str]:
    return ["subject_name", "subject_category", *(["authority"] if t in DECISIONS else []), *SPEC[t]["required"]]


def schema(t: str):
    return default_registry().get(t)


def check(t: str, data: Any):
    return schema(t).check(data, today=TODAY)


def only_error(t: str, data: Any):
    errors = check(t, data)
    assert len(errors) == 1, [e.to_json() for e in errors]
    assert_shape(t, errors[0])
    return errors[0]


def title_in(message: str, title: str) -> bool:
    """The title, or the title without its unit in brackets (罚款金额（万元） -> 罚款金额)."""
    return title in message or re.sub(r"（[^）]*）$", "", title) in message


def assert_shape(t: str, error) -> None:
    obj = error.to_json()
    assert set(obj) == {"path", "rule", "message_zh", "message_en", "value"}
    assert isinstance(obj["path"], str) and isinstance(obj["rule"], str) and obj["rule"]
    assert obj["message_zh"] and re.search(r"[\u4e00-\u9fff]", obj["message_zh"]), obj
    assert re.search(r"[A-Za-z]{3}", obj["message_en"]), obj
    top = re.split(r"[.\[]", obj["path"], maxsplit=1)[0]
    title = schema(t).titles.get(top)
    if title and title != top:
        assert title_in(obj["message_zh"], title), (title, obj)
    # personal data never shows in full
    assert ID_NO not in repr(obj), obj


# -- the schemas say what the dictionary says ----------------------------------------------------

def test_all_sixteen_types_are_registered_and_have_examples():
    assert default_registry().record_types() == TYPES
    assert len(TYPES) == 16
    assert sorted(EXAMPLES) == TYPES


@pytest.mark.parametrize("t", TYPES)
def test_schema_matches_data_dictionary(t):
    s = schema(t)
    assert s.event_date == SPEC[t]["event"]
    assert s.limit_days == SPEC[t]["limit"]
    assert sorted(s.schema["required"]) == sorted(required_fields(t))
    for name in SUBJECT_FIELDS:
        assert name in s.schema["properties"], name
    for name in SPEC[t]["dates"]:
        assert s.formats[name] == "date", name
    for name in SPEC[t]["decimals"]:
        assert s.formats[name] == "decimal", name
    assert s.formats["uscc"] == "uscc" and s.formats["authority_uscc"] == "uscc"
    assert s.formats["org_code"] == "org_code"
    assert "legal_rep_id_no" in s.personal
    assert s.schema.get("additionalProperties") is False


# -- valid examples ------------------------------------------------------------------------

@pytest.mark.parametrize("t", TYPES)
def test_valid_example_passes(t):
    assert check(t, example(t)) == []
    schema(t).validator.validate(example(t))  # the reference validator agrees
    schema(t).fast(example(t))


@pytest.mark.parametrize("t", TYPES)
def test_valid_with_only_required_fields(t):
    data = {k: v for k, v in example(t).items() if k in required_fields(t) or k in ("uscc", "authority_uscc")}
    if t == "self_disclosure":
        data["disclosure_kind"] = "其他"
    if t == "administrative_penalty":
        data["penalty_types"] = ["警告"]
    assert check(t, data) == []


@pytest.mark.parametrize("t", TYPES)
def test_event_date_today_is_accepted(t):
    data = example(t)
    data[SPEC[t]["event"]] = TODAY.isoformat()
    for later in ("valid_from", "valid_to"):
        if later in data:
            data[later] = TODAY.isoformat()
    assert check(t, data) == []


# -- failure cases, generated from the dictionary --------------------------------------------

def cases(kind: str):
    out = []
    for t in TYPES:
        if kind == "required":
            out += [(t, f) for f in required_fields(t)]
        elif kind == "enum":
            out += [(t, f) for f in [*SPEC[t]["enums"], *SUBJECT_ENUMS]]
        elif kind == "date":
            out += [(t, f) for f in SPEC[t]["dates"]]
        elif kind == "decimal":
            out += [(t, f) for f in SPEC[t]["decimals"]]
    return out


@pytest.mark.parametrize(("t", "field"), cases("required"))
def test_missing_required_field(t, field):
    data = example(t)
    data.pop(field, None)
    if field == "authority":
        data.pop("authority_uscc")  # otherwise it is an orphan, still valid
    err = only_error(t, data)
    assert (err.path, err.rule) == (field, "required")
    assert field in err.message_en
    assert err.value is None


@pytest.mark.parametrize(("t", "field"), cases("enum"))
def test_enum_with_bad_value(t, field):
    for bad in ["不存在的值", "", "LEGAL_PERSON", " 列入"]:
        data = example(t)
        if isinstance(data[field], list):
            data[field] = [bad]
            path = f"{field}[0]"
        else:
            data[field] = bad
            path = field
        err = only_error(t, data)
        assert (err.path, err.rule) == (path, "enum")
        assert err.value == bad


@pytest.mark.parametrize(("t", "field"), cases("enum"))
def test_every_enum_value_is_accepted(t, field):
    values = SPEC[t]["enums"].get(field) or SUBJECT_ENUMS[field]
    for value in values:
        data = example(t)
        data[field] = [value] if isinstance(data[field], list) else value
        if value == "natural_person":
            data.pop("uscc")
        assert check(t, data) == [], (field, value)


BAD_DATES = ["2024-02-30", "2023-02-29", "2024/01/02", "20240102", "2024-1-2", "24-01-02", "2024-13-01",
             "2024-01-02T00:00:00", "2024-01-02\n", " 2024-01-02", "一〇二四-01-02", "\u0662\u0660\u0662\u0664-01-02", ""]


@pytest.mark.parametrize(("t", "field"), cases("date"))
def test_broken_date(t, field):
    for bad in BAD_DATES:
        data = example(t)
        data[field] = bad
        err = only_error(t, data)
        assert (err.path, err.rule, err.value) == (field, "format:date", bad)


@pytest.mark.parametrize(("t", "field"), cases("date"))
def test_date_of_wrong_type(t, field):
    data = example(t)
    data[field] = 20240102
    err = only_error(t, data)
    assert (err.path, err.rule) == (field, "type")


def test_leap_day_is_a_real_date():
    data = example("other")
    data["event_date"] = "2024-02-29"
    assert check("other", data) == []


BAD_DECIMALS = ["12,50", "1.2.3", "abc", "1e5", "12.50\n", " 12.5", "+1", "01.5", "1.", ".5", "", "１２", "NaN",
                "Infinity", "12.5元", "1 000"]
GOOD_DECIMALS = ["0", "12.50", "100", "0.5", "123456789.01"]


@pytest.mark.parametrize(("t", "field"), cases("decimal"))
def test_broken_decimal(t, field):
    for bad in BAD_DECIMALS:
        data = example(t)
        data[field] = bad
        err = only_error(t, data)
        assert (err.path, err.rule) == (field, "format:decimal"), bad


@pytest.mark.parametrize(("t", "field"), cases("decimal"))
@pytest.mark.parametrize("number", [12.5, 12, 0])
def test_decimal_given_as_json_number(t, field, number):
    data = example(t)
    data[field] = number
    err = only_error(t, data)
    assert (err.path, err.rule) == (field, "decimal")
    assert "12.50" in err.message_zh and "number" in err.message_en
    assert err.value == number


@pytest.mark.parametrize(("t", "field"), cases("decimal"))
def test_good_decimals(t, field):
    for good in GOOD_DECIMALS:
        data = example(t)
        data[field] = good
        assert check(t, data) == [], good


BAD_USCC = {
    "91350100M000100Y4Z": "charset",
    "91430111MA4L41YT1V": "charset",
    "91430111MA4L41YT1A": "check",
    "9143011MA4L41YT1U": "length",
    "91430111ma4l41yt1u": "charset",
    "91A30111MA4L41YT1U": "region",
}


@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize("field", ["uscc", "authority_uscc"])
def test_broken_uscc(t, field):
    for bad, problem in BAD_USCC.items():
        data = example(t)
        data[field] = bad
        if field == "authority_uscc":
            data.setdefault("authority", "某某局")
        err = only_error(t, data)
        assert (err.path, err.rule) == (field, "format:uscc")
        zh, en = {"charset": ("不允许的字符", "alphabet"), "check": ("校验位错误", "check character"),
                  "length": ("位数不对", "length"), "region": ("行政区划", "region")}[problem]
        assert zh in err.message_zh and en in err.message_en
        assert err.value == bad


@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize(("bad", "problem"), [("MA4L41YT2", "check"), ("MA4L41YT", "length"), ("ma4l41yt1", "charset")])
def test_broken_org_code(t, bad, problem):
    data = example(t)
    data["org_code"] = bad
    err = only_error(t, data)
    assert (err.path, err.rule) == ("org_code", "format:org_code")
    assert "组织机构代码" in err.message_zh
    assert {"check": "校验位错误", "length": "位数不对", "charset": "不允许的字符"}[problem] in err.message_zh


@pytest.mark.parametrize("bad", ["999999", "41030", "4103000", "410300\n", "190000", "000000", "41030A", "\u0664\u0661\u0660\u0663\u0660\u0660"])
def test_broken_region(bad):
    data = example("enterprise_registration")
    data["region"] = bad
    err = only_error("enterprise_registration", data)
    assert (err.path, err.rule) == ("region", "format:region")
    assert "行政区划" in err.message_zh


@pytest.mark.parametrize("region", ["410300", "410302", "410306", "410322", "410381", "110000"])
def test_luoyang_and_retired_regions_pass(region):
    data = example("enterprise_registration")
    data["region"] = region
    assert check("enterprise_registration", data) == []


@pytest.mark.parametrize("t", TYPES)
def test_unknown_extra_field_is_refused(t):
    data = example(t)
    data["mobile_phone"] = "13800000000"
    err = only_error(t, data)
    assert (err.path, err.rule) == ("mobile_phone", "additional_properties")
    assert "mobile_phone" in err.message_zh and "mobile_phone" in err.message_en
    assert err.value != "13800000000"  # an unknown field may be personal data: masked


@pytest.mark.parametrize("t", TYPES)
def test_two_extra_fields_are_two_errors(t):
    data = example(t)
    data["a_extra"] = "x"
    data["b_extra"] = 1
    errors = check(t, data)
    assert sorted((e.path, e.rule) for e in errors) == [("a_extra", "additional_properties"),
                                                       ("b_extra", "additional_properties")]


@pytest.mark.parametrize("t", TYPES)
def test_several_problems_are_all_reported(t):
    data = example(t)
    required = SPEC[t]["required"]
    data.pop(required[0])
    data["subject_category"] = "robot"
    data["uscc"] = "91430111MA4L41YT1A"
    got = {(e.path, e.rule) for e in check(t, data)}
    assert {(required[0], "required"), ("subject_category", "enum"), ("uscc", "format:uscc")} <= got


@pytest.mark.parametrize("not_an_object", [[], "text", 1, None, ["a"]])
def test_data_that_is_not_an_object(not_an_object):
    errors = check("other", not_an_object)
    assert [(e.path, e.rule) for e in errors] == [("", "type")]
    assert "对象" in errors[0].message_zh


# -- cross-field rules ---------------------------------------------------------------------

def test_fine_amount_required_when_fined():
    data = example("administrative_penalty")
    data.pop("fine_amount")
    err = only_error("administrative_penalty", data)
    assert (err.path, err.rule) == ("fine_amount", "fine_amount_when_fined")
    assert "罚款金额" in err.message_zh


def test_fine_amount_not_required_without_fine():
    data = example("administrative_penalty")
    data.pop("fine_amount")
    data["penalty_types"] = ["警告", "没收违法所得"]
    assert check("administrative_penalty", data) == []


def test_valid_to_before_valid_from():
    data = example("administrative_license")
    data["valid_from"], data["valid_to"] = "2020-01-02", "2020-01-01"
    err = only_error("administrative_license", data)
    assert (err.path, err.rule) == ("valid_to", "valid_range")
    assert err.value == "2020-01-01"


def test_valid_to_equal_to_valid_from_passes():
    data = example("administrative_license")
    data["valid_from"] = data["valid_to"] = "2020-01-01"
    assert check("administrative_license", data) == []


@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize("category", ["legal_person", "individual_business"])
def test_uscc_required_for_organisations_without_reg_no(t, category):
    data = example(t)
    data.pop("uscc")
    data["subject_category"] = category
    err = only_error(t, data)
    assert (err.path, err.rule) == ("uscc", "uscc_required")


@pytest.mark.parametrize("t", TYPES)
def test_uscc_not_required_for_natural_person_or_with_reg_no(t):
    data = example(t)
    data.pop("uscc")
    data["subject_category"] = "natural_person"
    assert check(t, data) == []
    data = example(t)
    data.pop("uscc")
    data["reg_no"] = "410300000012345"
    assert check(t, data) == []


@pytest.mark.parametrize("bad", ["41030000001234", "4103000000123456", "41030000001234X", "410300000012345\n"])
def test_reg_no_is_fifteen_digits(bad):
    data = example("inspection")
    data["reg_no"] = bad
    err = only_error("inspection", data)
    assert (err.path, err.rule) == ("reg_no", "pattern")


@pytest.mark.parametrize("t", TYPES)
def test_authority_without_authority_uscc(t):
    data = example(t)
    data["authority"] = "洛阳市市场监督管理局"
    data.pop("authority_uscc", None)
    err = only_error(t, data)
    assert (err.path, err.rule) == ("authority_uscc", "dependent_required")
    assert "决定机关" in err.message_zh


@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize("days", [1, 400])
def test_event_date_in_the_future(t, days):
    data = example(t)
    event = SPEC[t]["event"]
    future = (TODAY + timedelta(days=days)).isoformat()
    data[event] = future
    if "valid_to" in data:
        data["valid_to"] = future
    err = only_error(t, data)
    assert (err.path, err.rule) == (event, "event_date_not_future")
    assert err.value == future
    assert TODAY.isoformat() in err.message_zh


def test_only_the_event_date_may_not_be_future():
    data = example("administrative_license")
    data["valid_to"] = (TODAY + timedelta(days=3650)).isoformat()
    assert check("administrative_license", data) == []


def test_annual_report_needs_report_year():
    data = example("self_disclosure")
    data.pop("report_year")
    err = only_error("self_disclosure", data)
    assert (err.path, err.rule) == ("report_year", "report_year_for_annual_report")
    assert "报告年度" in err.message_zh


@pytest.mark.parametrize("kind", ["股东出资", "其他"])
def test_other_disclosures_need_no_report_year(kind):
    data = example("self_disclosure")
    data.pop("report_year")
    data["disclosure_kind"] = kind
    assert check("self_disclosure", data) == []


@pytest.mark.parametrize("content", ["文字公示内容", {"a": 1}])
def test_self_disclosure_content_is_object_or_string(content):
    data = example("self_disclosure")
    data["content"] = content
    assert check("self_disclosure", data) == []


def test_self_disclosure_report_year_bounds():
    data = example("self_disclosure")
    data["report_year"] = 1989
    assert [(e.path, e.rule) for e in check("self_disclosure", data)] == [("report_year", "minimum")]
    data["report_year"] = "2016"
    assert [(e.path, e.rule) for e in check("self_disclosure", data)] == [("report_year", "type")]


def test_penalty_types_empty_and_duplicate():
    data = example("administrative_penalty")
    data["penalty_types"] = []
    assert [(e.path, e.rule) for e in check("administrative_penalty", data)] == [("penalty_types", "min_items")]
    data["penalty_types"] = ["罚款", "罚款"]
    assert [(e.path, e.rule) for e in check("administrative_penalty", data)] == [("penalty_types", "unique_items")]


def test_empty_and_too_long_strings():
    data = example("other")
    data["title"] = ""
    err = only_error("other", data)
    assert (err.path, err.rule) == ("title", "min_length")
    data["title"] = "长" * 201
    err = only_error("other", data)
    assert (err.path, err.rule) == ("title", "max_length")
    assert len(str(err.value)) <= 81  # long values are truncated


# -- personal data is masked -----------------------------------------------------------------

@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize(
    ("value", "rule"),
    [(ID_NO * 3, "max_length"), (int(ID_NO[:-1]), "type"), ([ID_NO], "type"), ("", "min_length")],
)
def test_legal_rep_id_no_is_masked(t, value, rule):
    data = example(t)
    data["legal_rep_id_no"] = value
    err = only_error(t, data)
    assert (err.path, err.rule) == ("legal_rep_id_no", rule)
    shown = repr(err.to_json())
    assert ID_NO not in shown and ID_NO[:-1] not in shown and ID_NO[2:-2] not in shown
    if isinstance(value, str) and value:
        assert err.value == value[:2] + "*" * (len(value) - 4) + value[-2:]


def test_masking_survives_other_errors_in_the_record():
    data = example("enterprise_registration")
    data["legal_rep_id_no"] = ID_NO * 3
    data["status"] = "bad"
    data["personal_note"] = ID_NO
    errors = check("enterprise_registration", data)
    assert {e.rule for e in errors} == {"max_length", "enum", "additional_properties"}
    assert ID_NO not in repr([e.to_json() for e in errors])


# -- the fast validator and the reference validator agree ------------------------------------

TRICKY = ["", " ", "2024-01-02", "2024-02-30", "2024-01-02\n", "12.50", "12.50\n", "1e5", "410300", "410300\n",
          USCC_A, USCC_A + "\n", "91350100M000100Y4Z", "MA4L41YT1", "MA4L41YT1\n", "CNY", "CNY\n", "cny",
          "410300000012345", "410300000012345\n", "罚款", "警告", "legal_person", "年度报告", "列入", "有效",
          "x" * 201, "\u0000", "\ud800", 0, -1, 1.5, 2016, 2016.0, True, None, [], {}, ["罚款"], ["罚款", "罚款"],
          [1], {"a": None}]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                          max_leaves=6)


@st.composite
def mutated(draw, t: str):
    data = example(t)
    fields = sorted(set(schema(t).schema["properties"]) | set(data))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["drop", "tricky", "json", "text", "add", "type"]))
        name = draw(st.sampled_from(fields))
        if kind == "drop":
            data.pop(name, None)
        elif kind == "tricky":
            data[name] = draw(st.sampled_from(TRICKY))
        elif kind == "json":
            data[name] = draw(json_value)
        elif kind == "text":
            data[name] = draw(st.text(max_size=20))
        elif kind == "add":
            data[draw(st.text(min_size=1, max_size=10))] = draw(json_leaf)
        else:  # change the type of a present value
            if name in data:
                value = data[name]
                data[name] = [value] if not isinstance(value, list) else (value[0] if value else None)
    return data


def fast_valid(t: str, data: Any) -> bool:
    try:
        schema(t).fast(data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


AGREEMENT_TYPES = ["enterprise_registration", "administrative_license", "administrative_penalty",
                   "self_disclosure", "equity_pledge", "judicial"]


@pytest.mark.parametrize("t", AGREEMENT_TYPES)
def test_fast_and_reference_validators_agree(t):
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mutated(t))
    def agree(data):
        reference = schema(t).validator.is_valid(data)
        assert fast_valid(t, data) == reference, data
        # check() reports schema errors exactly when the reference finds some
        rules = {"uscc_required", "event_date_not_future", "valid_range", "fine_amount_when_fined",
                 "report_year_for_annual_report"}
        schema_errors = [e for e in check(t, data) if e.rule not in rules]
        assert (not schema_errors) == reference, data

    agree()


@pytest.mark.parametrize("t", TYPES)
def test_validators_agree_on_tricky_values_in_every_field(t):
    for value in TRICKY:
        for name in schema(t).schema["properties"]:
            data = example(t)
            data[name] = value
            assert fast_valid(t, data) == schema(t).validator.is_valid(data), (name, value)
