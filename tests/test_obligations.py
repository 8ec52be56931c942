"""The joint-meeting office's obligations: a checked file, versions kept with who and when, and each status."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from cx.hub import obligations as obl
from cx.hub.timeliness import load_calendar

D = date.fromisoformat
EXAMPLE = Path(__file__).resolve().parent.parent / "ops" / "examples" / "obligations-2016-luoyang.toml"

MONTHLY = """
title = "月度报送"
[[obligation]]
id = "fda-licences"
title = "食品经营许可按月报送"
unit = "食品药品监督管理局"
departments = ["fda"]
record_types = ["administrative_license"]
period = "month"
due_workdays = 5
"""


def test_the_luoyang_2016_example_carries_the_annex_tables():
    found = obl.parse(EXAMPLE.read_text("utf-8"), str(EXAMPLE))
    by_id = found.by_id()
    assert len(found.obligations) == 21
    assert {o.due for o in found.obligations} == {D("2016-01-30"), D("2016-02-28"), D("2016-03-10"),
                                                   D("2016-03-31"), D("2016-04-15"), D("2016-05-15")}
    amr = by_id["2016-city-amr-collection"]
    assert amr.due == D("2016-03-31") and amr.departments == ("amr",) and "12315" in amr.unit
    assert "abnormal_operation" in amr.record_types and amr.measured
    nine = by_id["2016-city-nine-departments"]
    assert len(nine.departments) == 8 and "judicial" in nine.record_types  # 国税 and 地税 are two departments
    assert not by_id["2016-city-system-online"].measured and by_id["2016-city-joint-meeting"].due == D("2016-04-15")
    # units and tasks, never the persons the annex names
    text = EXAMPLE.read_text("utf-8")
    for person in ("吉建宾", "王志伟", "李晓阳", "孙军", "潘伟", "袁剑", "杨洁"):
        assert person not in text


def test_every_problem_in_a_file_is_named_with_where_it_is():
    bad = """
colour = 1
[[obligation]]
id = "a b"
departments = "amr"
record_types = ["licence"]
due = "2016-02-30"
[[obligation]]
id = "ok"
title = "x"
departments = ["AMR"]
period = "week"
due_workdays = -1
expected = { honor = 3 }
[[obligation]]
id = "ok"
title = "twice"
departments = ["amr"]
due = 2016-03-31
period = "month"
completed = 2016-03-01
record_types = ["honor"]
"""
    with pytest.raises(obl.ObligationsError) as err:
        obl.parse(bad, "obligations.toml")
    text = str(err.value)
    for expected in ("unknown top-level key(s) ['colour']", "#1 (id 'a b') id", "#1 (id 'a b') title: required",
                     "departments: a list of department ids", "unknown record type 'licence'",
                     "give either due", "due: '2016-02-30' is not a date", "#2 (id 'ok') departments: 'AMR' is not a department id",
                     "period: 'week'", "due_workdays: -1", "expected.honor: not one of this obligation's record_types",
                     "#3 (id 'ok')", "completed: only for a task without record_types"):
        assert expected in text, (expected, text)
    with pytest.raises(obl.ObligationsError, match="not valid TOML"):
        obl.parse("[[obligation]\n")


def test_versions_are_kept_with_who_when_and_what_changed(store):
    first = obl.load(store, MONTHLY, by="联席办 王某", source="obligations.toml")
    assert first.changed and first.current.version == 1 and first.changes["added"] == ["fda-licences"]
    same = obl.load(store, MONTHLY, by="someone else")
    assert not same.changed and same.current.version == 1
    edited = MONTHLY.replace("due_workdays = 5", "due_workdays = 8") + """
[[obligation]]
id = "meeting"
title = "联席会议"
departments = ["amr"]
due = 2026-12-15
"""
    second = obl.load(store, edited, by="联席办 李某")
    assert second.changes == {"added": ["meeting"], "removed": [], "changed": ["fda-licences"]}
    current = obl.current(store)
    assert current.version == 2 and current.loaded_by == "联席办 李某" and current.loaded.endswith("Z")
    assert current.by_id()["fda-licences"].due_workdays == 8
    history = obl.history(store)
    assert [(h["version"], h["loaded_by"]) for h in history] == [(1, "联席办 王某"), (2, "联席办 李某")]
    assert history[0]["source"] == "obligations.toml"
    with pytest.raises(obl.ObligationsError):
        obl.load(store, "[[obligation]]\nid = 3\n", by="x")
    assert obl.current(store).version == 2  # a bad file changes nothing


def test_monthly_instances_fall_due_working_days_after_the_month():
    cal = load_calendar(None)
    o = obl.parse(MONTHLY).obligations[0]
    instances = o.instances(D("2026-09-15"), D("2026-10-31"), cal)
    # September: 5 working days after Wed 30 Sep are 8, 9, 10 (Sat, make-up), 12, 13 Oct
    assert [(i.first, i.last, i.due) for i in instances] == [
        (D("2026-09-01"), D("2026-09-30"), D("2026-10-13")), (D("2026-10-01"), D("2026-10-31"), D("2026-11-06"))]
    assert obl.periods_between("quarter", D("2026-02-01"), D("2026-04-01")) == [
        (D("2026-01-01"), D("2026-03-31")), (D("2026-04-01"), D("2026-06-30"))]
    assert obl.periods_between("year", D("2026-12-31"), D("2027-01-01"))[1] == (D("2027-01-01"), D("2027-12-31"))


def o_(text: str) -> obl.Obligation:
    return obl.parse(text).obligations[0]


ONE_OFF = """
[[obligation]]
id = "collect"
title = "归集"
departments = ["amr"]
record_types = ["administrative_license"]
due = 2016-03-31
"""


@pytest.mark.parametrize("arrivals, held, inventory, as_of, status, reason", [
    # nothing missing against the inventory, everything in by the due date
    (["2016-03-01", "2016-03-30"], 2, 2, "2016-04-10", "met", "all_arrived"),
    # complete, but the last one came after the due date
    (["2016-03-01", "2016-04-02"], 2, 2, "2016-04-10", "met_late", "arrived_late"),
    # the source holds more than arrived: open before the due date, overdue after it
    (["2016-03-01"], 1, 3, "2016-03-20", "open", "inventory_missing"),
    (["2016-03-01"], 1, 3, "2016-04-01", "overdue", "inventory_missing"),
    # no inventory: completeness cannot be measured, never met
    (["2016-03-01"], 1, None, "2016-04-01", "overdue", "no_inventory"),
    # a department with no data at all
    ([], 0, None, "2016-03-01", "open", "no_inventory"),
    # the hub holds more than the source reports (a surplus): nothing missing
    (["2016-03-01"], 3, 2, "2016-04-01", "met", "all_arrived"),
])
def test_status_from_the_inventory(arrivals, held, inventory, as_of, status, reason):
    o = o_(ONE_OFF)
    facts = obl.Facts([D(a) for a in arrivals], held, inventory)
    found = obl.evaluate(o, o.instances(D("2016-03-01"), D("2016-03-31"), None)[0], facts, D(as_of))
    assert (found.status, found.reason) == (status, reason)
    if reason == "inventory_missing":
        assert found.params["missing"] == inventory - held


def test_status_from_expected_counts_and_manual_confirmation():
    o = o_(ONE_OFF.replace('due = 2016-03-31', 'due = 2016-03-31\nexpected = { administrative_license = 3 }'))
    instance = o.instances(D("2016-03-01"), D("2016-03-31"), None)[0]
    arrivals = [D("2016-03-01"), D("2016-03-20"), D("2016-04-05"), D("2016-04-06")]
    late = obl.evaluate(o, instance, obl.Facts(arrivals, 4, None), D("2016-04-10"))
    assert (late.status, late.reason, late.params["reached"]) == ("met_late", "expected_reached_late", "2016-04-05")
    on_time = obl.evaluate(o, instance, obl.Facts(arrivals[:2] + [D("2016-03-31")], 3, None), D("2016-04-10"))
    assert (on_time.status, on_time.reason) == ("met", "expected_reached")
    short = obl.evaluate(o, instance, obl.Facts(arrivals[:1], 1, 10), D("2016-04-10"))
    assert (short.status, short.params["missing"]) == ("overdue", 2)

    meeting = o_('[[obligation]]\nid = "m"\ntitle = "会议"\ndepartments = ["amr"]\ndue = 2016-04-15\n')
    when = meeting.instances(D("2016-04-01"), D("2016-04-30"), None)[0]
    assert obl.evaluate(meeting, when, None, D("2016-04-10")).status == "open"
    assert obl.evaluate(meeting, when, None, D("2016-04-16")).status == "overdue"
    done = o_('[[obligation]]\nid = "m"\ntitle = "会议"\ndepartments = ["amr"]\ndue = 2016-04-15\n'
              'completed = 2016-04-18\n')
    assert obl.evaluate(done, when, None, D("2016-04-20")).reason == "completed_late"
    assert obl.evaluate(done, when, None, D("2016-04-17")).status == "overdue"  # not yet done on that day


def test_a_running_period_is_open_even_when_nothing_is_missing():
    cal = load_calendar(None)
    o = o_(MONTHLY)
    november = o.instances(D("2026-11-01"), D("2026-11-30"), cal)[0]
    assert obl.evaluate(o, november, obl.Facts([D("2026-11-03")], 1, 1), D("2026-11-20")).reason == "period_running"
    assert obl.evaluate(o, november, obl.Facts([D("2026-11-03")], 1, 1), D("2026-12-01")).status == "met"
