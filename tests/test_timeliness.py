"""Record timeliness kept by the projector, counted by the rules in the store, recomputed on request — both stores."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from cx.hub.projections import Projector, hub_projections
from cx.hub.store import Store, hub_settings, record_timeliness
from cx.hub.timeliness import Basis, Limits, TimelinessProjection, basis_in_force, recompute
from cx.hub.workdays import WorkCalendar, YearOverride
from timeliness_support import Feeder, at

LICENCE, HONOR = "administrative_license", "honor"


def rows(store: Store) -> dict[tuple[str, str, int], dict]:
    with store.reader.connect() as conn:
        found = conn.execute(select(record_timeliness).order_by(record_timeliness.c.dept,
                                                                record_timeliness.c.ledger_index)).all()
    return {(r.dept, r.record_id, r.ledger_index): dict(r._mapping) for r in found}


def only(found: dict, record_id: str, index: int | None = None) -> dict:
    matches = [v for (_, rid, i), v in found.items() if rid == record_id and (index is None or i == index)]
    assert len(matches) == 1, matches
    return matches[0]


def test_each_version_gets_its_event_date_deadline_lag_and_status(store):
    fda = Feeder(store, "fda")
    # Fri 9 Oct 2026: Sat 10 Oct is a make-up working day (1), 12–16 Oct (2–6), Mon 19 Oct (7)
    fda.send(LICENCE, [("on-time", "2026-10-09"), ("late", "2026-10-09")], at("2026-10-19", "23:59"))
    fda.send(LICENCE, [("late-2", "2026-10-09")], at("2026-10-20", "00:30"))  # 19 Oct 16:30 UTC: the 20th in China
    # Wed 30 Sep 2026, 20 working days: 8, 9 Oct (1, 2), Sat 10 Oct (3), 12–30 Oct (4–18), 2 Nov (19), 3 Nov (20)
    fda.send(HONOR, [("honor", "2026-09-30")], at("2026-10-28"))
    fda.send(LICENCE, [("on-time", None)], at("2026-10-21"))  # a retraction counts nothing
    Projector(store, hub_projections()).catch_up()
    found = rows(store)
    first = only(found, "on-time", 0)
    assert (first["event_date"], first["limit_days"], first["deadline"], first["received_date"], first["lag"],
            first["status"], first["estimated"]) == ("2026-10-09", 7, "2026-10-19", "2026-10-19", 7, "on_time", None)
    late = only(found, "late-2")
    assert (late["received"], late["received_date"], late["lag"], late["status"]) == (
        "2026-10-19T16:30:00.000Z", "2026-10-20", 8, "late")
    honor = only(found, "honor")
    assert (honor["limit_days"], honor["deadline"], honor["lag"], honor["status"]) == (20, "2026-11-03", 16, "on_time")
    retraction = only(found, "on-time", 4)
    assert (retraction["status"], retraction["event_date"], retraction["lag"]) == ("retraction", None, None)


def test_a_correction_with_the_same_event_date_is_not_late_and_a_changed_date_counts_anew(store):
    amr = Feeder(store, "amr")
    amr.send(LICENCE, [("r1", "2026-11-02"), ("r2", "2026-11-02")], at("2026-11-03"))
    # weeks later: r1 corrected (same decision date), r2 re-dated to a decision made later
    amr.send(LICENCE, [("r1", "2026-11-02")], at("2026-11-25"), changes={"content": "更正：许可内容"})
    amr.send(LICENCE, [("r2", "2026-11-20")], at("2026-11-25"), changes={"content": "重新作出许可决定"})
    amr.send(LICENCE, [("r2", "2026-11-02")], at("2026-11-26"), changes={"content": "恢复原决定"})
    Projector(store, hub_projections()).catch_up()
    found = rows(store)
    assert only(found, "r1", 2)["status"] == "correction" and only(found, "r1", 2)["lag"] == 17
    assert only(found, "r2", 3)["status"] == "on_time" and only(found, "r2", 3)["lag"] == 3  # 23, 24, 25 Nov
    assert only(found, "r2", 4)["status"] == "late"  # the event date changed again: counted from 2 Nov


def test_a_projection_chunk_sees_corrections_in_its_own_chunk(store):
    amr = Feeder(store, "amr")
    amr.send(LICENCE, [("a", "2026-11-02")], at("2026-11-03"))
    amr.send(LICENCE, [("a", "2026-11-02")], at("2026-11-30"), changes={"content": "更正"})
    amr.send(LICENCE, [("b", "2026-11-02")], at("2026-11-03"))
    Projector(store, hub_projections(), chunk=1).catch_up()  # one version per transaction
    found = rows(store)
    assert [only(found, "a", i)["status"] for i in (0, 1)] == ["on_time", "correction"]


def test_a_lag_into_2027_is_marked_estimated(store):
    tax = Feeder(store, "tax")
    # Fri 27 Nov 2026 + 20 working days = Fri 25 Dec 2026; received 20 Jan 2027: 28–31 Dec (21–24), 1 Jan a
    # statutory holiday, 4–15 Jan (25–34), 18–20 Jan (35–37), counted Monday–Friday in 2027
    tax.send(HONOR, [("h", "2026-11-27")], at("2027-01-20"))
    Projector(store, hub_projections()).catch_up()
    row = only(rows(store), "h")
    assert (row["deadline"], row["lag"], row["status"], row["estimated"]) == ("2026-12-25", 37, "late", "2027")


def test_limits_per_department_and_type_override_the_dictionary():
    limits = Limits.parse({"fda": {LICENCE: 10}, "*": {LICENCE: 5, HONOR: 30}})
    assert limits.limit("fda", LICENCE) == 10 and limits.limit("amr", LICENCE) == 5
    assert limits.limit("amr", HONOR) == 30 and limits.limit("amr", "administrative_penalty") == 7
    assert limits.limit("amr", "abnormal_operation") == 10 and limits.limit("amr", "inspection") == 20
    from cx.config import ConfigError

    with pytest.raises(ConfigError) as err:
        Limits.parse({"fda": {"licence": 10, LICENCE: 0}, "amr": 3})
    assert "unknown record type" in str(err.value) and "1–366" in str(err.value) and "amr" in str(err.value)


def test_the_rules_in_force_live_in_the_store_and_recompute_says_what_changed(store):
    fda = Feeder(store, "fda")
    fda.send(LICENCE, [("f1", "2026-10-09")], at("2026-10-21"))  # lag 9: Sat 10 Oct (1), 12–16 (2–6), 19–21
    fda.send(LICENCE, [("f2", "2026-11-02"), ("f3", "2026-10-28")], at("2026-11-13"))  # lags 9 and 12
    first = Basis.default()
    Projector(store, [TimelinessProjection(first)]).catch_up()
    assert basis_in_force(store).text == first.text
    with store.reader.connect() as conn:
        assert conn.execute(select(hub_settings.c.updated_by)).scalar() == "hub (first start)"
    assert [only(rows(store), r)["status"] for r in ("f1", "f2", "f3")] == ["late", "late", "late"]

    # the office grants the food and drug department 10 working days, and the calendar file declares
    # Thu 12 Nov 2026 a holiday: a hub configured so keeps counting by the rules in force until recomputed
    overrides = dict(first.calendar.overrides)
    overrides[2026] = YearOverride(holidays=frozenset({date(2026, 11, 12)}))
    changed = Basis(WorkCalendar(overrides), Limits({"fda": {LICENCE: 10}}))
    fda.send(LICENCE, [("f4", "2026-10-09")], at("2026-10-22"))  # lag 10
    Projector(store, [TimelinessProjection(changed)]).catch_up()
    assert only(rows(store), "f4")["status"] == "late" and basis_in_force(store).text == first.text

    result = recompute(store, changed, by="联席办")
    assert result.versions == 4
    assert any("limit fda administrative_license: default 7 → 10" in line for line in result.basis_changes)
    assert any("calendar 2026: holidays added" in line and "2026-11-12" in line for line in result.basis_changes)
    after = rows(store)
    assert [only(after, r)["status"] for r in ("f1", "f2", "f3", "f4")] == ["on_time", "on_time", "late", "on_time"]
    assert [only(after, r)["lag"] for r in ("f1", "f2", "f3", "f4")] == [9, 8, 11, 10]
    assert only(after, "f3")["deadline"] == "2026-11-11"
    assert result.transitions == {("late", "on_time"): 3}
    assert result.by_dept == {"fda": 4} and result.deadlines_changed == 4
    assert basis_in_force(store).text == changed.text
    with store.reader.connect() as conn:
        assert conn.execute(select(hub_settings.c.updated_by)).scalar() == "联席办"
    again = recompute(store, changed, by="联席办")
    assert again.changed == 0 and again.basis_changes == ["the calendar and limits are unchanged 日历和时限未变"]
