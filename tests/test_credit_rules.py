"""Publicity periods, credit repair, classes, labels and lists: hand-made fixtures through the real ingest."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from sqlalchemy import select, update

from cx.config import ConfigError
from cx.hub import credit
from cx.hub.credit import CreditProjection, Rules
from cx.hub.projections import Projector
from cx.hub.store import Store, publicity, record_versions, standing
from examples import USCC_A, USCC_B, USCC_C
from timeliness_support import Feeder, at

PENALTY = "administrative_penalty"
AMR = {"authority": "洛阳市市场监督管理局"}
TAX = {"authority": "国家税务总局洛阳市税务局"}
RULES = Rules.load()


def period(data: dict[str, Any], rules: Rules = RULES, event: date = date(2026, 1, 10)) -> tuple[str, str | None]:
    rule, until = rules.period(PENALTY, {"subject_category": "legal_person", **data}, event)
    return rule, until.isoformat() if until else None


# -- publicity periods, pure -------------------------------------------------------------------------

@pytest.mark.parametrize("data, expected", [
    # SAMR Order 45 art. 13: reprimand only, or a low fine → 3 months (the event day counts)
    ({**AMR, "penalty_types": ["通报批评"]}, ("market_minor", "2026-04-09")),
    ({**AMR, "penalty_types": ["罚款"], "fine_amount": "4.99"}, ("market_minor", "2026-04-09")),
    ({**AMR, "penalty_types": ["罚款"], "fine_amount": "5.00"}, ("market_penalty", "2029-01-09")),
    # ¥5,000 for individuals (individual businesses count as individuals)
    ({**AMR, "penalty_types": ["罚款"], "fine_amount": "0.40", "subject_category": "individual_business"},
     ("market_minor", "2026-04-09")),
    ({**AMR, "penalty_types": ["罚款"], "fine_amount": "0.60", "subject_category": "individual_business"},
     ("market_penalty", "2029-01-09")),
    ({**AMR, "penalty_types": ["警告", "罚款"], "fine_amount": "0.10"}, ("market_penalty", "2029-01-09")),
    # a longer restriction is shown for its duration; a shorter one does not shorten the period
    ({**AMR, "penalty_types": ["限制从业"], "valid_until": "2031-06-30"}, ("market_penalty+restriction", "2031-06-30")),
    ({**AMR, "penalty_types": ["限制从业"], "valid_until": "2027-06-30"}, ("market_penalty", "2029-01-09")),
    # other departments: the 2026 credit-repair rules — minor not published, ordinary 1 year, serious 3 years
    ({**TAX, "penalty_types": ["警告"]}, ("minor", "2026-01-09")),
    ({**TAX, "penalty_types": ["罚款"], "fine_amount": "10"}, ("ordinary", "2027-01-09")),
    ({**TAX, "penalty_types": ["吊销许可证件"]}, ("serious", "2029-01-09")),
    # the department's publish_until wins over every rule
    ({**AMR, "penalty_types": ["通报批评"], "publish_until": "2028-12-31"}, ("publish_until", "2028-12-31")),
    ({**TAX, "penalty_types": ["警告"], "publish_until": "2026-06-30"}, ("publish_until", "2026-06-30")),
])
def test_publicity_period_rules(data, expected):
    assert period(data) == expected


def test_the_province_amount_comes_from_the_config():
    lower = Rules.load(fine_organisation=30000)
    fine = {**AMR, "penalty_types": ["罚款"], "fine_amount": "4.00"}
    assert period(fine) == ("market_minor", "2026-04-09")
    assert period(fine, lower) == ("market_penalty", "2029-01-09")


def test_records_other_than_penalties_have_no_end():
    assert RULES.period("enterprise_registration", {"status": "存续"}, date(2020, 1, 1)) == ("standing_record", None)


def test_repair_minimum_is_a_year_for_food_and_drugs():
    base = {**AMR, "violation_type": "虚假宣传", "legal_basis": "《广告法》"}
    assert RULES.repair_after(PENALTY, base, date(2026, 1, 31)) == date(2026, 7, 31)
    food = {**base, "violation_type": "销售过期食品"}
    assert RULES.repair_after(PENALTY, food, date(2026, 1, 31)) == date(2027, 1, 31)
    assert credit.add_months(date(2026, 8, 31), 6) == date(2027, 2, 28)


def test_a_broken_rules_file_is_explained(tmp_path):
    text = credit.shipped_rules_file().read_text("utf-8")
    bad = tmp_path / "rules.toml"
    bad.write_text(text.replace('period = "3m"', 'period = "three months"'), "utf-8")
    with pytest.raises(ConfigError, match="period 'three months'"):
        Rules.load(bad)
    bad.write_text(text.replace('class = "attention"', 'class = "amber"', 1), "utf-8")
    with pytest.raises(ConfigError, match="class 'amber'"):
        Rules.load(bad)


# -- through ingest and the projector --------------------------------------------------------------

@pytest.fixture
def store(store_url):
    s = Store(store_url)
    s.migrate()
    yield s
    s.dispose()


class Hub:
    """Departments feeding one store, and the credit projection run on a day the test sets."""

    def __init__(self, store: Store):
        self.store = store
        self.day = date(2026, 11, 20)
        self.projector = Projector(store, [CreditProjection(RULES, today=lambda: self.day)])
        self.feeders: dict[str, Feeder] = {}

    def send(self, dept: str, rtype: str, record_id: str, event: str | None, *, received: str = "2026-11-20",
             reason: str = "撤销", **data: Any) -> None:
        feeder = self.feeders.get(dept) or self.feeders.setdefault(dept, Feeder(self.store, dept))
        batch = feeder.send(rtype, [(record_id, event)], at(received), changes=data, reason=reason)
        with self.store.writer.begin() as conn:  # the hub accepted it that day too
            conn.execute(update(record_versions).where(record_versions.c.batch_id == batch)
                         .values(accepted=at(received)))
        self.projector.catch_up()

    def row(self, dept: str, record_id: str) -> dict[str, Any] | None:
        with self.store.reader.connect() as conn:
            r = conn.execute(select(publicity).where(publicity.c.dept == dept,
                                                     publicity.c.record_id == record_id)).first()
        return dict(r._mapping) if r else None

    def public(self, uscc: str = USCC_C) -> list[tuple[str, str]]:
        with self.store.reader.connect() as conn:
            return credit.public_record_keys(conn, uscc, self.day)

    def standing(self, uscc: str = USCC_C) -> dict[str, Any]:
        with self.store.reader.connect() as conn:
            return credit.standing_of(conn, uscc)

    def labels(self, uscc: str = USCC_C) -> dict[str, list[list[str]]]:
        return {label["id"]: label["records"] for label in self.standing(uscc)["labels"]}

    def lists(self, uscc: str = USCC_C, **kw: Any) -> dict[str, dict[str, Any]]:
        with self.store.reader.connect() as conn:
            return {m["list_id"]: m for m in credit.memberships(conn, uscc, **kw)}


@pytest.fixture
def hub(store):
    return Hub(store)


def test_a_repair_hides_the_record_at_once_and_keeps_its_history(hub):
    hub.send("amr", PENALTY, "p1", "2026-03-02", **AMR, penalty_types=["罚款"], fine_amount="20",
             publish_until=None, violation_type="虚假宣传", legal_basis="《广告法》第五十五条")
    assert hub.public() == [("amr", "p1")]
    assert hub.labels() == {"penalised": [["amr", "p1"]]}
    assert hub.standing()["class"] == "attention"
    hub.send("amr", PENALTY, "p1", None, reason="信用修复：已履行行政处罚决定并公开作出信用承诺")
    assert hub.public() == []
    assert hub.labels() == {} and hub.standing()["class"] == "normal"
    row = hub.row("amr", "p1")
    assert row["repaired_at"] is not None and row["repair_reason"].startswith("信用修复")
    assert row["repair_early"] is False  # more than 6 months after 2026-03-02
    with hub.store.reader.connect() as conn:  # history and proof stay with the ledger
        assert len(conn.execute(select(record_versions).where(record_versions.c.record_id == "p1")).all()) == 2


def test_an_early_repair_is_recorded_and_stands(hub):
    hub.send("fda", PENALTY, "f1", "2026-08-03", **AMR, penalty_types=["罚款"], fine_amount="20",
             publish_until=None, violation_type="销售过期食品")
    hub.send("fda", PENALTY, "f1", None, reason="信用修复 已整改")
    row = hub.row("fda", "f1")
    assert row["repair_after"] == "2027-08-03" and row["repair_early"] is True
    assert hub.public() == []


def test_a_plain_retraction_withdraws_the_record(hub):
    hub.send("amr", PENALTY, "p2", "2026-03-02", **AMR, publish_until=None)
    hub.send("amr", PENALTY, "p2", None, reason="录入错误，撤销")
    assert hub.row("amr", "p2") is None and hub.public() == []
    assert hub.standing()["class"] == "normal"


def test_classes_and_labels_name_the_records_that_cause_them(hub):
    hub.send("amr", "abnormal_operation", "ab1", "2026-05-06")
    assert hub.labels() == {"abnormal_list": [["amr", "ab1"]]}
    assert hub.standing()["class"] == "attention"
    assert hub.lists()["abnormal"]["basis"] == [["amr", "ab1"]]
    hub.send("court", "judicial", "j1", "2026-06-01", judicial_kind="失信被执行人")
    hub.send("amr", PENALTY, "rv", "2025-12-01", **AMR, penalty_types=["吊销许可证件"], publish_until=None)
    hub.send("amr", "serious_violation", "sv1", "2026-07-01")
    labels = hub.labels()
    assert labels["serious_violation_list"] == [["amr", "sv1"]]
    assert labels["judgment_debtor"] == [["court", "j1"]]
    assert labels["licence_revoked"] == [["amr", "rv"]] and labels["severely_penalised"] == [["amr", "rv"]]
    assert labels["penalised"] == [["amr", "rv"]]
    assert hub.standing()["class"] == "serious"
    assert hub.standing()["labels"][0]["id"] == "serious_violation_list"  # strongest first
    assert set(hub.lists()) == {"abnormal", "serious_violation", "judgment_debtors"}
    # 移出 ends the stay; the entry keeps its dates and basis
    hub.send("amr", "abnormal_operation", "ab2", "2026-09-01", action="移出")
    ended = hub.lists(include_ended=True)["abnormal"]
    assert (ended["entered"], ended["ended"]) == ("2026-05-06", "2026-09-01")
    assert ended["basis"] == [["amr", "ab1"], ["amr", "ab2"]]
    assert "abnormal_list" not in hub.labels() and "abnormal" not in hub.lists()
    # other enterprises untouched
    assert hub.standing(USCC_A)["class"] == "normal"


def test_the_red_list_needs_an_honour_and_no_dishonesty(hub):
    hub.send("tax", "honor", "h1", "2026-04-01", uscc=USCC_B, honor_name="2025年度纳税信用A级纳税人")
    red = hub.lists(USCC_B)["red"]
    assert red["entered"] == "2026-04-01" and red["basis"] == [["tax", "h1"]]
    with hub.store.reader.connect() as conn:
        members, total = credit.list_members(conn, "red")
    assert total == 1 and members[0]["uscc"] == USCC_B and members[0]["name"]
    hub.send("amr", PENALTY, "p9", "2026-10-01", **AMR, uscc=USCC_B, publish_until=None)
    assert "red" not in hub.lists(USCC_B)
    assert hub.lists(USCC_B, include_ended=True)["red"]["ended"] == "2026-11-20"


def test_periods_expire_with_time_through_the_daily_sweep(hub):
    # a reprimand only: shown 3 months (2026-09-01 … 2026-11-30)
    hub.send("amr", PENALTY, "m1", "2026-09-01", **AMR, penalty_types=["通报批评"], publish_until=None,
             fine_amount=None)
    assert hub.public() == [("amr", "m1")] and hub.labels() == {"penalised": [["amr", "m1"]]}
    assert hub.standing()["class"] == "attention"
    with hub.store.reader.connect() as conn:
        assert conn.execute(select(standing.c.next_change)).scalar() == "2026-12-01"
    assert credit.sweep(hub.store, RULES, date(2026, 11, 30)) == 0  # nothing due yet
    hub.day = date(2026, 12, 1)
    assert hub.public() == []  # gone from the public view the day after the period, before any sweep
    assert credit.sweep(hub.store, RULES, hub.day) == 1
    assert hub.standing()["class"] == "normal" and hub.labels() == {}
    assert hub.row("amr", "m1")["rule"] == "market_minor"  # still known to the office and operators


def test_a_record_without_a_credit_code_is_not_enterprise_information(hub):
    hub.send("amr", PENALTY, "n1", "2026-03-02", **AMR, uscc=None, subject_category="natural_person",
             publish_until=None, legal_rep=None)
    assert hub.row("amr", "n1") is None


def test_rebuild_gives_the_same_tables(hub):
    hub.send("amr", "abnormal_operation", "ab1", "2026-05-06")
    hub.send("tax", "honor", "h1", "2026-04-01", uscc=USCC_B)
    before = (hub.standing(), hub.standing(USCC_B), hub.lists(USCC_B))
    hub.projector.rebuild("credit")
    after = (hub.standing(), hub.standing(USCC_B), hub.lists(USCC_B))
    assert [json.dumps({k: v for k, v in s.items() if k != "updated"}, sort_keys=True) for s in before[:2]] == \
        [json.dumps({k: v for k, v in s.items() if k != "updated"}, sort_keys=True) for s in after[:2]]
    assert before[2] == after[2]
