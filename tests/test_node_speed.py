"""The node's quicker paths give what the plain ones gave: mapped data, row keys, record lines, hashes, states."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cx.node.collector import row_key
from cx.node.config import FieldMap, StreamConfig
from cx.node.mapping import Mapper, MappingError
from cx.node.outbox import Outbox
from cx.protocol.envelope import RecordLine, content_hash
from cx.protocol.keys import SigningKey
from cx.protocol.validation import default_registry
from cx_adapters.base import Row
from test_outbox import queued, seal

TYPE = "administrative_penalty"
SCHEMA = default_registry().get(TYPE)
FIELDS = {
    "subject_name": FieldMap(column="name"),  # a text column: the quick path when the value is a str
    "legal_rep": FieldMap(column="rep", trim=False),
    "remarks": FieldMap(),  # the column named like the field
    "subject_category": FieldMap(const="legal_person"),
    "entered_by": FieldMap(const=""),  # an empty constant leaves the field out
    "uscc": FieldMap(template="{code}"),
    "penalty_types": FieldMap(column="kinds", map="codes"),  # array kind, code table
    "license_affected": FieldMap(column="kinds", split="/"),
    "fine_amount": FieldMap(column="amount"),  # decimal kind
    "decision_date": FieldMap(column="day"),  # date kind
    "facts": FieldMap(column="day", date=True),
    "content": FieldMap(column="amount", decimal=True),
}
CODES = {"codes": {"01": "警告", "02": "罚款", "1": "其他"}}
STREAM = StreamConfig(name="penalties", source="db", type=TYPE, key=("id",), cursor=None, fields=FIELDS,
                      record_id="amr-penalty-{id}", options={}, schema_version=None, entered_by=None)


class Text(str):
    """A str subclass, as some drivers give: not the quick path's exact str."""


TEXTS = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "  x ", "01", "01、02", "1/2", "2016/3/1",
                                                          "2016年3月1日", "20160301", "12,000.50", " 7 ", "\u3000"]))
VALUES = st.one_of(st.none(), TEXTS, TEXTS.map(Text), st.binary(max_size=6), TEXTS.map(str.encode),
                   st.integers(), st.floats(), st.booleans(), st.decimals(places=2, allow_nan=False),
                   st.dates(), st.datetimes(), st.lists(st.integers(), max_size=2))
COLUMNS = ["id", "name", "rep", "remarks", "code", "kinds", "amount", "day"]


def plain_map(mapper: Mapper, row: Row) -> tuple[dict[str, Any], list[Any]]:
    """Mapping as it was before each field's conversion was chosen once: `_field` for every field, every row."""
    data: dict[str, Any] = {}
    errors = []
    for name, spec in mapper.stream.fields.items():
        try:
            value = mapper._field(name, spec, row.values)
        except MappingError as exc:
            errors.append(exc.error)
            continue
        if value is not None and value != "" and value != []:
            data[name] = value
    return data, errors


def exact(value: Any) -> str:
    """JSON that tells 1 from 1.0 from True (== does not), and keeps what JSON cannot hold visible."""
    kinds = sorted((k, type(v).__name__) for k, v in value.items())
    return json.dumps(value, sort_keys=True, default=repr) + repr(kinds)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional={c: VALUES for c in COLUMNS}))
def test_mapping_gives_what_the_plain_path_gave(values: dict[str, Any]) -> None:
    mapper = Mapper(STREAM, CODES, SCHEMA)
    row = Row(("1",), values, "table xzcf id=1")
    quick, plain = mapper.map(row), plain_map(mapper, row)
    assert exact(quick[0]) == exact(plain[0])
    assert quick[1] == plain[1]
    if not quick[1]:  # the record line and the content hash the data makes: byte for byte
        made = [RecordLine("amr-penalty-1", TYPE, 1, "upsert", data, {"adapter": "sql", "locator": row.locator,
                                                                       "extracted": "2026-03-01T00:00:00.000Z"})
                for data in (quick[0], plain[0])]
        try:
            lines = [r.to_bytes() for r in made]
        except (ValueError, UnicodeEncodeError):  # NaN or a lone surrogate: refused by both alike
            return
        assert lines[0] == lines[1]
        assert content_hash(made[0]) == content_hash(made[1])


@given(st.lists(st.one_of(st.text(), st.sampled_from(["洛阳", "a\"b", "\\", "\ud800"])), min_size=1, max_size=3))
def test_row_keys_are_the_json_they_were(key: list[str]) -> None:
    assert row_key(Row(tuple(key), {}, "")) == json.dumps(key, ensure_ascii=False)


def test_a_receipt_settles_each_record_as_before(tmp_path: Path) -> None:
    """Delivered in one statement, the rejected and the duplicates one by one: the states and counts as before."""
    outbox = Outbox(tmp_path / "outbox.db")
    key = SigningKey.generate()
    outbox.commit_chunk("penalties", [queued(i) for i in range(6)], [])
    batch_id = seal(outbox, key, 6)
    outbox.commit_chunk("penalties", [queued(i) for i in range(6, 8)], [])  # another batch's records stay
    members = outbox.batch_records(batch_id)
    accepted = [members[i][1] for i in (0, 2, 3)]
    counts = outbox.apply_receipt(batch_id, b"receipt", accepted, [(3, members[3][1], [{"rule": "x"}]),
                                                                   (4, members[4][1], [{"rule": "y"}])], None)
    assert counts == {"delivered": 2, "rejected": 2, "duplicate": 2}
    states = [s for s, in outbox.db.execute("SELECT state FROM records ORDER BY id")]
    assert states == ["delivered", "duplicate", "delivered", "rejected", "rejected", "duplicate", "pending", "pending"]
    assert outbox.db.execute("SELECT COUNT(*) FROM records WHERE batch_id = ? AND settled IS NULL",
                             (batch_id,)).fetchone()[0] == 0
    hub = outbox.db.execute("SELECT record_id, locator FROM rejections WHERE origin = 'hub' ORDER BY id").fetchall()
    assert hub == [(members[3][1], members[3][3]), (members[4][1], members[4][3])]


def test_the_oldest_pending_record_is_the_one_min_created_finds(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    key = SigningKey.generate()
    assert outbox.oldest_pending_age() is None
    for start in (0, 3, 6):
        outbox.commit_chunk("penalties", [queued(i) for i in range(start, start + 3)], [])
    batch_id = seal(outbox, key, 3)
    outbox.refuse(batch_id, b"refusal", "merkle_root_mismatch", "不符", "mismatch")
    outbox.retry_refused()  # the oldest records pending again

    def by_min(state: str = "pending") -> str:
        return outbox.db.execute("SELECT MIN(created) FROM records WHERE state = ?", (state,)).fetchone()[0]
    oldest = outbox.db.execute("SELECT created FROM records WHERE state = 'pending' ORDER BY id LIMIT 1").fetchone()[0]
    assert oldest == by_min()
    assert outbox.oldest_pending_age() is not None
    assert outbox.waiting() == (9, 0)


def test_source_rows_keep_their_values(tmp_path: Path) -> None:
    """The SQL adapter's rows: binary values as bytes, everything else as the driver gave it."""
    import sqlite3

    from cx_adapters.base import StreamSpec
    from cx_adapters.sql import SqlSource

    path = tmp_path / "s.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB, s TEXT, n NUMERIC, d DATE)")
    db.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", [(1, b"\x00\xff", "洛阳", 12.5, "2016-03-01"),
                                                            (2, None, " x ", 3, None)])
    db.commit()
    db.close()
    spec = StreamSpec("t", {"table": "t"}, ("id",))
    source = SqlSource({"url": f"sqlite:///{path}"}, [spec])
    try:
        rows = [r for c in source.read(spec, None, 10) for r in c.rows]
    finally:
        source.close()
    assert [r.values for r in rows] == [{"id": 1, "b": b"\x00\xff", "s": "洛阳", "n": 12.5, "d": "2016-03-01"},
                                        {"id": 2, "b": None, "s": " x ", "n": 3, "d": None}]
    assert [type(r.values["b"]) for r in rows] == [bytes, type(None)]
    assert [(r.key, r.locator) for r in rows] == [(("1",), "table t id=1"), (("2",), "table t id=2")]
