"""The portal's enterprise index: a projection of registrations, searched by code, number and part of the name.

On both stores (SQLite FTS5 trigram, PostgreSQL pg_trgm) over a generated corpus; the query plans show
that a name search uses the text index, not a scan.
"""

from __future__ import annotations

import copy

import pytest
from portal_support import NAMED, TARGET, _line, corpus_lines
from sqlalchemy import text

from cx.hub import registry
from cx.hub.ingest import Inbound, Ingestor
from cx.hub.projections import Projector
from cx.hub.search import EnterpriseIndex, Filters, Query, QueryProblem, bigrams, region_codes, search
from cx.hub.store import Store
from cx.protocol.envelope import build_batch
from cx.protocol.keys import SigningKey
from cx.transport import Topology
from examples import EXAMPLES, USCC_A, USCC_C


def _feed(store: Store, dept_key: SigningKey, lines: list[tuple[bytes, str]], seq: int = 1, prev=None):
    hub_key = SigningKey.generate()
    batch = build_batch(dept_key, dept="amr", node="amr-1", seq=seq, prev=prev, lines=[line for line, _ in lines],
                        schemas={t: 1 for _, t in lines})
    outcome = Ingestor(store, hub_key, Topology()).process(
        Inbound(batch.to_bytes(), "amr.records", Topology().dept_user("amr"), "m"))
    assert outcome.result == "accepted", outcome
    Projector(store, [EnterpriseIndex()]).catch_up()
    return batch.header_hash


@pytest.fixture
def indexed(store):
    key = SigningKey.generate()
    registry.add_department(store, "amr", "洛阳市市场监督管理局", "410300", key.public)
    corpus, lines = corpus_lines(60)
    _feed(store, key, [x for x in lines["amr"] if x[1] == "enterprise_registration"])
    return store, corpus, key


def names(store: Store, q: str, filters: Filters = Filters(), offset: int = 0, limit: int = 100) -> list[str]:
    with store.reader.connect() as conn:
        return [e["name"] for e in search(conn, Query.parse(q), filters, offset, limit)]


def test_search_by_code_number_and_any_part_of_the_name(indexed):
    store, corpus, _ = indexed
    target = corpus.enterprises[0]
    assert names(store, target["code"]) == [TARGET]
    assert names(store, target["code"].lower()) == [TARGET]  # typed in lower case
    assert names(store, target["reg_no"]) == [TARGET]
    assert names(store, "某某商贸") == [TARGET]  # a substring from the middle
    assert set(names(store, "某某")) == {TARGET, "洛阳市某某食品有限公司"}  # two characters: the bigram table
    assert names(store, "一二") == ["洛阳一二科技有限公司"]
    # results come in the index's order (the order the projection wrote them), not the corpus's
    assert sorted(names(store, "商贸有限公司")) == sorted(e["name"] for e in corpus.enterprises if "商贸有限公司" in e["name"])
    assert names(store, "不存在的名字") == []
    assert names(store, "100%") == [] and names(store, '某"某') == []  # LIKE and FTS syntax are plain text


def test_a_wrong_check_character_is_not_a_valid_code_and_one_character_is_too_short():
    wrong = USCC_C[:-1] + ("0" if USCC_C[-1] != "0" else "1")
    with pytest.raises(QueryProblem) as caught:
        Query.parse(wrong)
    assert caught.value.code == "invalid_code"
    with pytest.raises(QueryProblem) as caught:
        Query.parse("某")
    assert caught.value.code == "too_short"
    assert Query.parse(USCC_C).kind == "uscc" and Query.parse(" 洛阳  某某 ").text == "洛阳 某某"


def test_region_filter_finds_enterprises_registered_under_retired_codes(indexed):
    store, corpus, _ = indexed
    mengjin = region_codes("410308")
    assert set(mengjin) == {"410308", "410322", "410306"} and region_codes("410322") == mengjin
    found = set(names(store, "有限", Filters(region=mengjin))) | set(names(store, "机械厂", Filters(region=mengjin)))
    expected = {e["name"] for e in corpus.enterprises if e["region"] in mengjin}
    assert {"孟津县老城机械厂", "孟津区新建建材有限公司", "洛阳吉利石化配件有限公司"} <= expected
    assert found == expected
    yanshi = region_codes("410381")
    assert "偃师市牡丹纺织有限公司" in names(store, "牡丹", Filters(region=yanshi))
    assert names(store, "牡丹纺织", Filters(region=region_codes("410302"))) == []
    assert names(store, TARGET, Filters(status="吊销")) == []


def test_pages_follow_row_order_without_repeats(indexed):
    store, corpus, _ = indexed
    everyone = names(store, "有限公司")
    pages = [names(store, "有限公司", offset=i * 7, limit=7) for i in range((len(everyone) + 6) // 7)]
    assert [n for page in pages for n in page] == everyone and len(everyone) > 20


def test_a_correction_renames_and_a_retraction_removes(indexed):
    store, corpus, key = indexed
    with store.reader.connect() as conn:
        prev = conn.execute(text("SELECT last_header_hash FROM nodes WHERE node = 'amr-1'")).scalar()
    data = {**copy.deepcopy(EXAMPLES["enterprise_registration"]), "subject_name": "洛阳改名后商贸有限公司",
            "uscc": corpus.enterprises[0]["code"], "reg_no": corpus.enterprises[0]["reg_no"], "region": "410303"}
    prev = _feed(store, key, [(_line("reg-0", "enterprise_registration", data), "enterprise_registration")], 2, prev)
    assert names(store, "某某商贸") == [] and names(store, "改名后") == ["洛阳改名后商贸有限公司"]
    assert names(store, "改名") == ["洛阳改名后商贸有限公司"]
    _feed(store, key, [(_line("reg-0", "enterprise_registration", {}, "retract", "登记错误"),
                        "enterprise_registration")], 3, prev)
    assert names(store, "改名后") == [] and names(store, corpus.enterprises[0]["code"]) == []
    with store.reader.connect() as conn:  # nothing of it is left in the indexes
        assert conn.execute(text("SELECT count(*) FROM enterprise_bigrams WHERE gram = '改名'")).scalar() == 0


def test_name_search_uses_the_text_index(indexed):
    store, _, _ = indexed
    with store.reader.connect() as conn:
        if conn.dialect.name == "sqlite":
            plan = " ".join(str(r[-1]) for r in conn.execute(text(
                "EXPLAIN QUERY PLAN SELECT id FROM enterprises WHERE id IN "
                "(SELECT rowid FROM enterprises_fts WHERE enterprises_fts MATCH '\"某某商贸\"')")))
            assert "VIRTUAL TABLE INDEX" in plan, plan
        else:
            conn.execute(text("SET enable_seqscan = off"))  # a tiny table: ask whether the index can serve
            plan = " ".join(r[0] for r in conn.execute(text(
                "EXPLAIN SELECT id FROM enterprises WHERE name ILIKE '%某某商贸%'")))
            assert "ix_enterprises_name_trgm" in plan, plan
        sqlite = conn.dialect.name == "sqlite"
        plan = " ".join(str(r[-1] if sqlite else r[0]) for r in conn.execute(text(
            ("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") +
            "SELECT enterprise_id FROM enterprise_bigrams WHERE gram = '某某'")))
        assert ("SEARCH" in plan) if sqlite else ("Index" in plan), plan


def test_bigrams_of_a_name():
    assert bigrams("某某商贸") == {"某某", "某商", "商贸"} and bigrams("某") == set()
    assert len(NAMED) == len({n for n, _ in NAMED})


def test_two_departments_registering_one_code_show_the_later_registration(store):
    from cx.hub.projections import Accepted

    def reg(dept: str, rid: str, name: str, approved: str, code: str = USCC_C, op: str = "upsert") -> Accepted:
        data = {**EXAMPLES["enterprise_registration"], "subject_name": name, "uscc": code, "approval_date": approved}
        return Accepted(dept, rid, "v", op, "enterprise_registration", 0, data if op == "upsert" else None, None,
                        "t", "t", "b")

    index = EnterpriseIndex()
    with store.writer.begin() as conn:  # one chunk: decided in ledger order
        index.apply(conn, [reg("amr", "r1", "洛阳甲乙商贸有限公司", "2026-03-01"),
                           reg("civil", "c1", "洛阳甲乙协会", "2026-01-01")])  # earlier: does not replace
    assert names(store, "甲乙") == ["洛阳甲乙商贸有限公司"]
    with store.writer.begin() as conn:  # a later chunk: a later approval replaces it, under the same row
        index.apply(conn, [reg("civil", "c1", "洛阳甲乙协会", "2026-05-01")])
    assert names(store, "甲乙") == ["洛阳甲乙协会"] and names(store, "商贸") == []
    with store.writer.begin() as conn:  # the shown registration withdrawn, and a corrected code, in one chunk
        index.apply(conn, [reg("civil", "c1", "", "", op="retract"),
                           reg("amr", "r1", "洛阳丙丁商贸有限公司", "2026-06-01", code=USCC_A)])
    assert names(store, "甲乙") == [] and names(store, USCC_A) == ["洛阳丙丁商贸有限公司"]
    assert names(store, USCC_C) == [] and names(store, "丙丁") == ["洛阳丙丁商贸有限公司"]
