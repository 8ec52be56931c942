"""One outcome per message, the same verdict on SQLite and PostgreSQL: the hub's ingest without the broker.

The property test drives the full ingest path (parse → verify → validate → store → receipt) on both
stores at once with record lines at and beyond every bound the store has, and fails on any exception
other than the documented outcomes, on an `internal_error`, or on the two stores disagreeing.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select
from sqlalchemy import exc as sa_exc

from cx import transport
from cx.hub import registry
from cx.hub.ingest import Inbound, Ingestor, StoreUnavailable, store_outage
from cx.hub.store import Store, quarantine, record_versions, records
from cx.protocol import jsonutil
from cx.protocol.envelope import RECORD_ID_FORBIDDEN, RECORD_ID_MAX, SOURCE_MAX, build_batch, encode_batch, sha256_hex
from cx.protocol.errors import Reason
from cx.protocol.keys import SigningKey
from cx.protocol.receipts import Receipt, Refusal
from cx.protocol.validation import KEPT_DATA_FIELDS, default_registry
from cx.transport import Topology
from examples import EXAMPLES
from support import create_pg_database, drop_pg_database

HUB = SigningKey.generate()
AMR = SigningKey.generate()
TOPOLOGY = Topology(user_prefix="cxt-")
TYPE = "administrative_penalty"
GOOD_TIME = "2026-01-02T03:04:05.678Z"
UNREAL_TIMES = ["2026-02-30T00:00:00.000Z", "2026-13-01T00:00:00Z", "2026-01-01T00:00:61Z", "0000-01-01T00:00:00Z"]
OUTCOMES = {"accepted", "quarantined"}


def enrolled_store(url: str) -> Store:
    store = Store(url)
    store.migrate()
    registry.add_department(store, "amr", "市场监管局", "410300", AMR.public)
    return store


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> Iterator[dict[str, Ingestor]]:
    """An ingestor on SQLite and one on PostgreSQL, each with department amr enrolled."""
    database = create_pg_database()
    sqlite = enrolled_store(f"sqlite:///{tmp_path_factory.mktemp('outcomes') / 'hub.db'}")
    postgresql = enrolled_store(f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}")
    try:
        yield {"sqlite": Ingestor(sqlite, HUB, TOPOLOGY), "postgresql": Ingestor(postgresql, HUB, TOPOLOGY)}
    finally:
        sqlite.dispose()
        postgresql.dispose()
        drop_pg_database(database)


@pytest.fixture
def ingestor(store_url) -> Iterator[Ingestor]:
    store = enrolled_store(store_url)
    try:
        yield Ingestor(store, HUB, TOPOLOGY)
    finally:
        store.dispose()


def inbound(body: bytes, *, redelivered: bool = False, user: str | None = None) -> Inbound:
    return Inbound(body, f"amr.{TYPE}", user or TOPOLOGY.dept_user("amr"), "m-1", transport.BATCH, redelivered)


_nodes = itertools.count()


def batch(lines: list[bytes], **header) -> bytes:
    """A batch from a node of its own (so every example starts a fresh sequence chain), signed by amr;
    `header` overrides header fields (`...` removes one) and the header is signed as changed."""
    built = build_batch(AMR, dept="amr", node=f"n{next(_nodes)}", seq=1, prev=None, lines=lines,
                        schemas={TYPE: 1}, created=header.pop("created", GOOD_TIME))
    if not header:
        return built.to_bytes()
    fields = {k: v for k, v in {**json.loads(built.header_bytes), **header}.items() if v is not ...}
    header_bytes = jsonutil.dumps(fields)
    return encode_batch(header_bytes, AMR.sign(header_bytes), lines)


def record(rid: str, **changes) -> dict:
    obj = {"record_id": rid, "type": TYPE, "schema_version": 1, "op": "upsert", "data": dict(EXAMPLES[TYPE]),
           "source": {"adapter": "sql", "locator": "table xzcf id=1", "extracted": GOOD_TIME}}
    for key, value in changes.items():
        if key in ("adapter", "locator", "extracted", "entered_by"):
            obj["source"][key] = value
        elif key in ("record_id", "op"):
            obj[key] = value
        else:
            obj["data"][key] = value
    return obj


def encode(obj: dict, escapes: dict[str, str] | None = None) -> bytes:
    """The line as a node writes it; `escapes` puts raw JSON escapes (\\u0000, \\ud800) where placeholders are."""
    text = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    for placeholder, escape in (escapes or {}).items():
        text = text.replace(placeholder, escape)
    return text.encode()


def verdict(outcome) -> tuple:
    """What a department learns from the outcome, comparable across stores."""
    if outcome.result == "quarantined":
        return ("quarantined", outcome.reason.value)
    receipt = Receipt.parse(outcome.receipt, HUB.public)
    return ("accepted", tuple(receipt.accepted),
            tuple((r.line, tuple(sorted(e["rule"] for e in r.errors))) for r in receipt.rejected))


def stored_rows(ingestor: Ingestor, rids: list[str]) -> list[tuple]:
    with ingestor.store.reader.connect() as conn:
        found = conn.execute(
            select(records.c.record_id, records.c.subject_name, records.c.uscc, record_versions.c.source_locator,
                   record_versions.c.source_adapter, record_versions.c.entered_by, record_versions.c.extracted,
                   record_versions.c.line)
            .join(record_versions, (record_versions.c.dept == records.c.dept)
                  & (record_versions.c.record_id == records.c.record_id))
            .where(records.c.dept == "amr", records.c.record_id.in_(rids)).order_by(records.c.record_id)).all()
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in found]


# -- the property: any record line at or beyond a bound, the same verdict on both stores, nothing else ----------

EDGE_CHARS = sorted({chr(c) for lo, hi in re.findall(r"(.)(?:-(.))?", RECORD_ID_FORBIDDEN)
                     for edge in (ord(lo), ord(hi or lo)) for c in (edge - 1, edge, edge + 1)
                     if 0 < c < 0x110000 and not 0xD800 <= c <= 0xDFFF} | set("a罚-_ 😀"))
BAD_ESCAPES = ["\\u0000", "\\ud800", "\\udfff", "\\ude00\\ud83d"]


def around(limit: int) -> st.SearchStrategy[int]:
    return st.sampled_from([max(0, limit - 1), limit, limit + 1, limit + 7])


@st.composite
def record_lines(draw, n: int) -> bytes:
    """One record line, each field either fine or pushed at / beyond one of its bounds."""
    rid = f"p{n}-" + draw(st.text(alphabet=st.sampled_from(EDGE_CHARS), max_size=RECORD_ID_MAX + 2))
    changes: dict = {}
    escapes: dict = {}
    for name, limit in (*SOURCE_MAX.items(), ("subject_name", KEPT_DATA_FIELDS["subject_name"])):
        if draw(st.booleans()):
            changes[name] = "长" * draw(around(limit))
    if draw(st.booleans()):
        changes["extracted"] = draw(st.sampled_from([GOOD_TIME, None, "yesterday", *UNREAL_TIMES]))
    if draw(st.booleans()):
        changes["uscc"] = draw(st.sampled_from(["91410302MA44ABCD53", "9141030", "91410302MA44ABCD53X"]))
    if draw(st.booleans()):  # a character no store keeps, somewhere in the line
        where = draw(st.sampled_from(["facts", "subject_name", "locator", "entered_by", "record_id"]))
        placeholder = f"@@{where}@@"
        escapes[placeholder] = draw(st.sampled_from(BAD_ESCAPES))
        if where == "record_id":
            rid += placeholder
        else:
            changes[where] = placeholder
    return encode(record(rid, **changes), escapes)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_full_ingest_path_has_one_documented_outcome_and_the_same_verdict_on_both_stores(both, data):
    n = next(_nodes)
    lines = [data.draw(record_lines(n * 10 + i)) for i in range(data.draw(st.integers(1, 3)))]
    header = data.draw(st.sampled_from([{}, {}, {}, {"created": UNREAL_TIMES[0]}, {"v": ...}]))
    body = batch(lines, **header)
    outcomes = {name: ing.handle(inbound(body)) for name, ing in both.items()}  # raises: the test fails
    verdicts = {name: verdict(o) for name, o in outcomes.items()}
    assert verdicts["sqlite"] == verdicts["postgresql"], verdicts
    for o in outcomes.values():
        assert o.result in OUTCOMES and o.reason != Reason.INTERNAL_ERROR, o
    if header:
        assert verdicts["sqlite"] == ("quarantined", "bad_header")
        return
    # what was accepted reads back the same from both stores, byte for byte
    accepted = list(verdicts["sqlite"][1])
    assert stored_rows(both["sqlite"], accepted) == stored_rows(both["postgresql"], accepted)
    # and every line got exactly one answer
    _, ids, rejected = verdicts["sqlite"]
    assert len(ids) + len(rejected) == len(lines)


# -- each shape the issue reports, on both stores ----------------------------------------------------------------


@pytest.mark.parametrize(("change", "escape", "rule"), [
    ({"subject_name": "@@x@@"}, "\\ud800", "bad_character"),
    ({"locator": "@@x@@"}, "\\ud800", "bad_character"),
    ({"uscc": "@@x@@"}, "\\ud800", "bad_character"),  # an invalid value a rejection would quote
    ({"facts": "@@x@@"}, "\\ud800", "bad_character"),
    ({"facts": "a@@x@@b"}, "\\u0000", "bad_character"),
    ({"extracted": "2026-01-01T00:00:00.0000000000000000000000000000Z"}, None, "bad_record"),
    ({"extracted": "2026-02-30T00:00:00.000Z"}, None, "bad_record"),
    ({"adapter": "a" * 65}, None, "bad_record"),
    ({"entered_by": "e" * 101}, None, "bad_record"),
    ({"locator": "l" * 501}, None, "bad_record"),
])
def test_each_reported_record_shape_is_rejected_with_its_rule(ingestor, change, escape, rule):
    bad = encode(record("bad-1", **change), {"@@x@@": escape} if escape else None)
    good = encode(record("good-1"))
    outcome = ingestor.handle(inbound(batch([bad, good])))
    receipt = Receipt.parse(outcome.receipt, HUB.public)
    assert receipt.accepted == ["good-1"]
    [rejection] = receipt.rejected
    assert rejection.line == 0 and [e["rule"] for e in rejection.errors] == [rule]
    assert all(e["message_zh"] and e["message_en"] for e in rejection.errors)
    assert stored_rows(ingestor, ["good-1"])[0][0] == "good-1"


@pytest.mark.parametrize("header", [{"created": t} for t in UNREAL_TIMES] + [{"v": ...}])
def test_each_reported_header_shape_is_quarantined_as_bad_header(ingestor, header):
    outcome = ingestor.handle(inbound(batch([encode(record("h-1"))], **header)))
    assert (outcome.result, outcome.reason) == ("quarantined", Reason.BAD_HEADER)
    with ingestor.store.reader.connect() as conn:
        row = conn.execute(select(quarantine)).one()
    assert row.reason == "bad_header" and row.detail and row.detail_zh and row.body_hash
    refusal = Refusal.parse(bytes(row.refusal), HUB.public)  # the department is known from its broker user
    assert refusal.reason == "bad_header" and refusal.dept == "amr" and refusal.batch_id is None
    assert outcome.refusal == bytes(row.refusal) and outcome.refuse_to == "amr"


# -- internal errors: caught per message, quarantined, never retried --------------------------------------------


class Exploding:
    """A schema registry that raises for one record id, as an unforeseen bug would."""

    def __init__(self, error: BaseException):
        self.real, self.error = default_registry(), error

    def check_record(self, rec, today=None):
        if rec.record_id == "boom":
            raise self.error
        return self.real.check_record(rec, today)


def test_an_unforeseen_exception_is_quarantined_as_internal_error(ingestor):
    ingestor.schemas = Exploding(RuntimeError("bad luck \ud800 \0 here"))
    body = batch([encode(record("boom"))])
    outcome = ingestor.handle(inbound(body))
    assert (outcome.result, outcome.reason) == ("quarantined", Reason.INTERNAL_ERROR)
    with ingestor.store.reader.connect() as conn:
        row = conn.execute(select(quarantine)).one()
    assert row.reason == "internal_error"
    assert row.detail.startswith("RuntimeError: bad luck \\ud800 \\u0000 here")  # class and message, storable
    assert bytes(row.header) == body.split(b"\n")[0] and row.size == len(body)
    assert Refusal.parse(outcome.refusal, HUB.public).reason == "internal_error"
    # the next batch goes through
    after = ingestor.handle(inbound(batch([encode(record("after-1"))])))
    assert Receipt.parse(after.receipt, HUB.public).accepted == ["after-1"]


def test_a_heartbeat_that_breaks_something_is_quarantined_too(ingestor, monkeypatch):
    from cx.protocol.heartbeat import Heartbeat

    beat = Heartbeat.sign(AMR, dept="amr", node="n1", version="1", outbox_depth=0, oldest_pending_seconds=None,
                          last_error=None)
    monkeypatch.setattr(Heartbeat, "verify", staticmethod(lambda *a: (_ for _ in ()).throw(KeyError("x"))))
    outcome = ingestor.handle(Inbound(beat, "amr.heartbeat", TOPOLOGY.dept_user("amr"), "hb", transport.HEARTBEAT))
    assert (outcome.result, outcome.reason, outcome.refusal) == ("quarantined", Reason.INTERNAL_ERROR, None)


def test_a_quarantine_row_the_store_refuses_still_ends_the_message(ingestor):
    """The first line breaks the store (here: a listener that refuses it); a reduced row is kept, and if even
    that is refused, the message ends with a log line and no exception."""
    refusals = {"left": 1}

    def refuse(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO quarantine") and refusals["left"] > 0:
            refusals["left"] -= 1
            raise ValueError("this store does not take these bytes")

    event.listen(ingestor.store.writer, "before_cursor_execute", refuse)
    try:
        first = ingestor.handle(inbound(b"\x00garbage that breaks the store\n"))
        refusals["left"] = 2
        second = ingestor.handle(inbound(b"more garbage\n"))
    finally:
        event.remove(ingestor.store.writer, "before_cursor_execute", refuse)
    assert first.result == second.result == "quarantined"
    with ingestor.store.reader.connect() as conn:
        [row] = conn.execute(select(quarantine)).all()
    assert row.reason == "bad_framing" and row.header is None and "refused by the store" in row.detail
    after = ingestor.handle(inbound(batch([encode(record("after-2"))])))
    assert after.result == "accepted"


def test_a_redelivered_quarantined_message_gets_the_same_outcome_not_a_second_row(ingestor):
    body = batch([encode(record("r-1"))], created=UNREAL_TIMES[1])
    first = ingestor.handle(inbound(body))
    again = ingestor.handle(inbound(body, redelivered=True))
    assert again.refusal == first.refusal and again.result == "quarantined"
    with ingestor.store.reader.connect() as conn:
        assert conn.execute(select(func.count()).select_from(quarantine)).scalar() == 1
    ingestor.handle(inbound(body))  # the same bytes published again are a new message
    with ingestor.store.reader.connect() as conn:
        assert conn.execute(select(func.count()).select_from(quarantine)).scalar() == 2
        assert set(conn.execute(select(quarantine.c.body_hash)).scalars()) == {sha256_hex(body)}


def test_garbage_nobody_vouches_for_gets_no_refusal(ingestor):
    outcome = ingestor.handle(inbound(b"garbage\n", user="guest"))
    assert outcome.result == "quarantined" and outcome.refusal is None and outcome.refuse_to is None
    with ingestor.store.reader.connect() as conn:
        assert conn.execute(select(quarantine.c.refusal)).scalar() is None


# -- the pipeline: the hub prepares the next message while the store commits the one before ---------------------


def test_prepared_ahead_of_the_commit_before_it_the_outcome_is_the_same(ingestor):
    """`prepare` writes nothing; batches prepared before the previous one committed link, and a batch
    prepared twice before either copy committed is stored once and receipted twice alike."""
    chain, prev = [], None
    for seq in (1, 2, 3):
        built = build_batch(AMR, dept="amr", node="pipe", seq=seq, prev=prev,
                            lines=[encode(record(f"p-{seq}-{i}")) for i in range(3)], schemas={TYPE: 1})
        chain.append(built.to_bytes())
        prev = built.header_hash
    prepared = [ingestor.prepare(inbound(body)) for body in (*chain, chain[2])]  # the third one twice
    with ingestor.store.reader.connect() as conn:
        assert conn.execute(select(func.count()).select_from(record_versions)).scalar() == 0
    outcomes = [ingestor.finish(p) for p in prepared]
    assert [o.result for o in outcomes] == ["accepted", "accepted", "accepted", "redelivered"]
    assert outcomes[3].receipt == outcomes[2].receipt
    receipts = [Receipt.parse(o.receipt, HUB.public) for o in outcomes[:3]]
    assert [r.checkpoint.size for r in receipts] == [3, 6, 9]
    with ingestor.store.reader.connect() as conn:
        assert conn.execute(select(func.count()).select_from(record_versions)).scalar() == 9


# -- store outages are the only thing retried --------------------------------------------------------------------


def test_an_unreachable_store_is_an_outage_and_the_message_is_kept():
    store = Store("postgresql+psycopg://postgres@127.0.0.1:5432/cx_no_such_database_ever")
    try:
        with pytest.raises(StoreUnavailable):
            Ingestor(store, HUB, TOPOLOGY).handle(inbound(batch([encode(record("o-1"))])))
    finally:
        store.dispose()


def test_what_counts_as_a_store_outage():
    def wrapped(cls, orig):
        return cls("INSERT …", {}, orig)

    import psycopg

    assert store_outage(wrapped(sa_exc.OperationalError, sqlite3.OperationalError("database is locked")))
    assert store_outage(wrapped(sa_exc.OperationalError, sqlite3.OperationalError("database or disk is full")))
    assert store_outage(wrapped(sa_exc.OperationalError, psycopg.errors.DiskFull("no space left on device")))
    assert store_outage(wrapped(sa_exc.OperationalError, psycopg.errors.AdminShutdown("terminating connection")))
    assert store_outage(wrapped(sa_exc.InterfaceError, psycopg.InterfaceError("the connection is closed")))
    assert not store_outage(wrapped(sa_exc.OperationalError, psycopg.errors.ProgramLimitExceeded("index row too big")))
    assert not store_outage(wrapped(sa_exc.DataError, psycopg.errors.StringDataRightTruncation("value too long")))
    assert not store_outage(wrapped(sa_exc.IntegrityError, sqlite3.IntegrityError("UNIQUE constraint failed")))
    assert not store_outage(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
    assert not store_outage(ValueError("day is out of range for month"))

