"""Source adapters against real databases (SQLite, PostgreSQL, MariaDB) and a real drop folder."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from hypothesis import given
from hypothesis import strategies as st

from cx_adapters.base import Chunk, SourceError, StreamConfigError, StreamSpec, UnitReport, load_adapter
from cx_adapters.files import FileSource
from cx_adapters.sql import SqlSource, decode_value, encode_value

PG_URL = os.environ.get("CX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("CX_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")

DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")  # keep microseconds
T1, T2, T3 = (dt.datetime(2024, 5, 1, 9, 0), dt.datetime(2024, 5, 1, 9, 0, 0, 500), dt.datetime(2024, 5, 2, 17, 30))


# -- databases ---------------------------------------------------------------------------------------

@dataclass
class Db:
    """One empty database (SQLite file, PostgreSQL schema, MariaDB database) for one test."""

    backend: str
    url: str
    admin: sa.Engine  # writable, for setting up
    schema: str | None = None
    metadata: sa.MetaData = field(default_factory=sa.MetaData)
    sources: list[SqlSource] = field(default_factory=list)

    def xzcf(self, name: str = "xzcf") -> sa.Table:
        table = sa.Table(
            name, self.metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("updated_at", DATETIME, nullable=True),
            sa.Column("name", sa.String(100)),
            sa.Column("amount", sa.Numeric(12, 2)),
            sa.Column("decided", sa.Date),
            schema=self.schema,
        )
        table.create(self.admin)
        return table

    def insert(self, table: sa.Table, rows: list[dict]) -> None:
        with self.admin.begin() as conn:
            conn.execute(table.insert(), rows)

    def qualified(self, name: str) -> str:
        return f"{self.schema}.{name}" if self.schema else name

    def stream(self, name: str = "xzcf", key: tuple[str, ...] = ("id",), cursor: str | None = "updated_at",
               **options) -> StreamSpec:
        if "query" not in options:
            options.setdefault("table", name)
            if self.schema:
                options["schema"] = self.schema
        return StreamSpec(name, options, key, cursor)

    def source(self, *streams: StreamSpec, **options) -> SqlSource:
        source = SqlSource({"url": self.url, **options}, streams)
        self.sources.append(source)
        return source


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db(request, tmp_path) -> Iterator[Db]:
    backend = request.param
    unique = f"cx_test_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'dept.db'}"
        env = Db(backend, url, sa.create_engine(url))
        drop = None
    elif backend == "postgresql":
        admin = sa.create_engine(PG_URL)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {unique}")
        env = Db(backend, PG_URL, admin, schema=unique)
        drop = f"DROP SCHEMA {unique} CASCADE"
    else:
        server = sa.create_engine(MYSQL_URL)
        with server.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {unique} CHARACTER SET utf8mb4")
        server.dispose()
        url = sa.make_url(MYSQL_URL).set(database=unique).render_as_string(hide_password=False)
        env = Db(backend, url, sa.create_engine(url))
        drop = f"DROP DATABASE {unique}"
    try:
        yield env
    finally:
        for source in env.sources:
            source.close()
        if drop:
            with env.admin.begin() as conn:
                conn.exec_driver_sql(drop)
        env.admin.dispose()


def read_all(source: SqlSource, stream: StreamSpec, position=None, chunk_size: int = 100) -> list[Chunk]:
    """Every chunk, with each position passed through JSON as the node stores it."""
    chunks = list(source.read(stream, position, chunk_size))
    for chunk in chunks:
        assert len(chunk.rows) <= chunk_size
        chunk.position = json.loads(json.dumps(chunk.position))
    return chunks


def ids(chunks: list[Chunk]) -> list[int]:
    return [int(row.key[0]) for chunk in chunks for row in chunk.rows]


# -- SQL: cursor mode --------------------------------------------------------------------------------

def test_cursor_ties_every_row_exactly_once_and_resume_from_any_position(db):
    table = db.xzcf()
    stamps = (T3, T1, T2)  # ids interleave across the timestamps, so cursor order is not key order
    db.insert(table, [{"id": i, "updated_at": stamps[(i * 7) % 3], "name": f"企业{i}"} for i in range(1, 2501)])
    expected = [i for _, i in sorted(((stamps[(i * 7) % 3], i) for i in range(1, 2501)))]
    source = db.source(db.stream())

    chunks = read_all(source, db.stream())
    assert ids(chunks) == expected
    assert [len(c.rows) for c in chunks] == [100] * 25
    assert not any(c.snapshot_complete for c in chunks)
    for n, chunk in enumerate(chunks):
        assert ids(read_all(source, db.stream(), chunk.position)) == expected[(n + 1) * 100:]

    # later rows sharing the newest timestamp (higher keys) and a later one are picked up, nothing repeats
    db.insert(table, [{"id": 2501, "updated_at": T3}, {"id": 2502, "updated_at": T3},
                      {"id": 2600, "updated_at": T3 + dt.timedelta(seconds=1)}])
    with db.admin.begin() as conn:  # a changed row comes again: its cursor moved on
        conn.execute(table.update().where(table.c.id == 5).values(updated_at=T3 + dt.timedelta(seconds=2)))
    assert ids(read_all(source, db.stream(), chunks[-1].position)) == [2501, 2502, 2600, 5]
    assert read_all(source, db.stream(), read_all(source, db.stream(), chunks[-1].position)[-1].position) == []


def test_rows_with_null_cursor_are_never_read_in_cursor_mode(db):
    table = db.xzcf()
    db.insert(table, [{"id": 1, "updated_at": T1}, {"id": 2, "updated_at": None}, {"id": 3, "updated_at": T2}])
    source = db.source(db.stream(), db.stream("all", cursor=None, table="xzcf"))
    chunks = read_all(source, db.stream())
    assert ids(chunks) == [1, 3]
    assert ids(read_all(source, db.stream(), chunks[-1].position)) == []
    # snapshot mode and the inventory still see the row, so completeness checks show it as missing
    assert ids(read_all(source, source.streams[1])) == [1, 2, 3]
    assert source.inventory(db.stream()) == 3


def test_values_keep_native_types_and_locators_name_the_row(db):
    table = db.xzcf()
    db.insert(table, [{"id": 7, "updated_at": T2, "name": "洛阳市某某有限公司", "amount": Decimal("1250.50"),
                       "decided": dt.date(2024, 4, 30)}])
    [chunk] = read_all(db.source(db.stream()), db.stream())
    [row] = chunk.rows
    assert row.key == ("7",)
    assert row.locator == f"table {db.qualified('xzcf')} id=7"
    assert row.values["id"] == 7 and row.values["name"] == "洛阳市某某有限公司"
    if db.backend == "sqlite":  # SQLite hands back the text it stores
        assert row.values["amount"] == 1250.5 and row.values["decided"] == "2024-04-30"
    else:
        assert row.values["amount"] == Decimal("1250.50")
        assert row.values["decided"] == dt.date(2024, 4, 30)
        assert row.values["updated_at"] == T2
    assert chunk.position == {"cursor": encode_value(row.values["updated_at"]), "key": [7]}


def test_names_are_matched_case_insensitively(db):
    table = db.xzcf()
    db.insert(table, [{"id": 1, "updated_at": T1}])
    stream = db.stream("XZCF", key=("ID",), cursor="UPDATED_AT")
    source = db.source(stream)
    source.check()
    [chunk] = read_all(source, stream)
    assert chunk.rows[0].key == ("1",) and chunk.rows[0].locator.lower().endswith("xzcf id=1")


def test_timestamptz_and_decimal_cursors_survive_the_position(tmp_path):
    admin = sa.create_engine(PG_URL)
    schema = f"cx_test_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        conn.exec_driver_sql(f"CREATE TABLE {schema}.t (id int PRIMARY KEY, ts timestamptz, seq numeric(20, 3))")
        conn.exec_driver_sql(f"INSERT INTO {schema}.t SELECT i, timestamptz '2024-05-01 08:00:00.123456+08' "
                             f"+ mod(i, 2) * interval '1 microsecond', mod(i, 3) + 0.5 FROM generate_series(1, 50) i")
    source = SqlSource({"url": PG_URL}, [])
    try:
        for cursor in ("ts", "seq"):
            stream = StreamSpec("t", {"table": "t", "schema": schema}, ("id",), cursor)
            chunks = read_all(source, stream, chunk_size=7)
            assert sorted(ids(chunks)) == list(range(1, 51)) and len(ids(chunks)) == 50
            for n, chunk in enumerate(chunks):
                assert ids(read_all(source, stream, chunk.position, 7)) == ids(chunks)[(n + 1) * 7:]
    finally:
        source.close()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


# -- SQL: snapshot mode ------------------------------------------------------------------------------

def test_snapshot_reads_everything_by_key_and_marks_the_last_chunk(db):
    table = db.xzcf()
    db.insert(table, [{"id": i} for i in (17, 3, 25, 8, 1, 12, 20, 5, 14, 9, 22, 2)])
    stream = db.stream(cursor=None)
    source = db.source(stream)
    chunks = read_all(source, stream, chunk_size=5)
    assert ids(chunks) == sorted((17, 3, 25, 8, 1, 12, 20, 5, 14, 9, 22, 2))
    assert [c.snapshot_complete for c in chunks] == [False, False, True]
    assert chunks[0].position == {"key": [8]} and chunks[-1].position is None
    assert ids(read_all(source, stream, chunks[0].position, 5)) == [9, 12, 14, 17, 20, 22, 25]

    # a pass that ends exactly on a chunk boundary ends with an empty, complete chunk
    chunks = read_all(source, stream, chunk_size=6)
    assert [(len(c.rows), c.snapshot_complete) for c in chunks] == [(6, False), (6, False), (0, True)]


def test_snapshot_of_an_empty_table_is_one_complete_empty_chunk(db):
    db.xzcf()
    stream = db.stream(cursor=None)
    assert read_all(db.source(stream), stream) == [Chunk("xzcf", [], None, snapshot_complete=True)]


def test_snapshot_with_a_composite_key(db):
    table = sa.Table("permits", db.metadata, sa.Column("dept", sa.String(10), primary_key=True),
                     sa.Column("seq", sa.Integer, primary_key=True), sa.Column("note", sa.String(20)),
                     schema=db.schema)
    table.create(db.admin)
    db.insert(table, [{"dept": d, "seq": s} for d in ("b", "a", "c") for s in (3, 1, 2)])
    stream = db.stream("permits", key=("dept", "seq"), cursor=None)
    source = db.source(stream)
    chunks = read_all(source, stream, chunk_size=2)
    assert [r.key for c in chunks for r in c.rows] == [(d, str(s)) for d in "abc" for s in (1, 2, 3)]
    assert chunks[1].rows[0].locator == f"table {db.qualified('permits')} dept=a seq=3"
    assert [r.key for c in read_all(source, stream, chunks[1].position, 2) for r in c.rows] == \
        [("b", "2"), ("b", "3"), ("c", "1"), ("c", "2"), ("c", "3")]


def test_rows_are_found_again_by_their_typed_keys_and_columns_are_known_before_reading(db):
    table = sa.Table("permits", db.metadata, sa.Column("dept", sa.String(10), primary_key=True),
                     sa.Column("seq", sa.Integer, primary_key=True), sa.Column("decided", sa.Date),
                     sa.Column("note", sa.String(20)), schema=db.schema)
    table.create(db.admin)
    db.insert(table, [{"dept": d, "seq": s, "decided": dt.date(2024, 5, s), "note": f"{d}{s}"}
                      for d in ("a", "b") for s in (1, 2, 3)])
    stream = db.stream("permits", key=("dept", "seq"), cursor=None)
    source = db.source(stream)
    assert sorted(source.columns(stream)) == ["decided", "dept", "note", "seq"]
    [chunk] = read_all(source, stream)
    refs = [json.loads(json.dumps(source.ref(stream, chunk, row))) for row in chunk.rows if row.key[1] != "2"]
    assert refs[0] == {"key": ["s:a", 1]}  # the key as the database types it, as positions are kept
    with db.admin.begin() as conn:
        conn.execute(table.update().where(table.c.dept == "a", table.c.seq == 1).values(note="changed"))
        conn.execute(table.delete().where(table.c.dept == "b", table.c.seq == 3))
    found = [row for c in source.reread(stream, refs) for row in c.rows]
    assert sorted((r.key, r.values["note"]) for r in found) == [
        (("a", "1"), "changed"), (("a", "3"), "a3"), (("b", "1"), "b1")]  # b3 is gone: left out
    assert list(source.reread(stream, [{"key": ["s:a"]}, {"nonsense": 1}])) == []


def test_a_stream_that_does_not_fit_the_source_is_a_configuration_problem(db):
    db.xzcf()
    with pytest.raises(StreamConfigError, match="has no key 主键 column 'nokey'"):
        db.source(db.stream(key=("nokey",))).columns(db.stream(key=("nokey",)))
    with pytest.raises(SourceError) as unreachable:
        SqlSource({"url": "postgresql+psycopg://u@127.0.0.1:1/x"}, [db.stream()]).columns(db.stream())
    assert not isinstance(unreachable.value, StreamConfigError)  # the source is away, not misconfigured


# -- SQL: query streams, read-only, check, inventory -------------------------------------------------

def test_a_query_stream_is_filtered_and_paged_as_a_subquery(db):
    table = db.xzcf()
    db.insert(table, [{"id": i, "updated_at": (T1, T2)[i % 2], "name": f"n{i}", "amount": i} for i in range(1, 41)])
    query = (f"SELECT id, updated_at, name, 'a:b' AS tag FROM {db.qualified('xzcf')} "
             f"WHERE amount > 10 AND name LIKE 'n%';")
    stream = StreamSpec("penalties", {"query": query}, ("id",), "updated_at")
    source = db.source(stream)
    source.check()
    chunks = read_all(source, stream, chunk_size=7)
    expected = [i for _, i in sorted(((T1, T2)[i % 2], i) for i in range(11, 41))]
    assert ids(chunks) == expected
    assert chunks[0].rows[0].locator == f"query penalties id={expected[0]}"
    assert chunks[0].rows[0].values["tag"] == "a:b"
    assert ids(read_all(source, stream, chunks[1].position, 7)) == expected[14:]
    assert source.inventory(stream) == 30


def test_the_adapter_cannot_write(db):
    table = db.xzcf()
    db.insert(table, [{"id": 1, "updated_at": T1}])
    source = db.source(db.stream())
    for statement in (table.insert().values(id=2), table.update().values(name="x"), table.delete(),
                      sa.text(f"CREATE TABLE {db.qualified('intruder')} (x int)")):
        with source.engine.connect() as conn:
            with pytest.raises(sa.exc.DBAPIError):
                conn.execute(statement)
                conn.commit()
    with db.admin.connect() as conn:
        assert conn.execute(sa.select(table.c.id, table.c.name)).all() == [(1, None)]


def test_sqlite_missing_file_is_reported_not_created(tmp_path):
    path = tmp_path / "nothing.db"
    source = SqlSource({"url": f"sqlite:///{path}"}, [StreamSpec("t", {"table": "t"}, ("id",))])
    with pytest.raises(SourceError, match="无法连接数据库 cannot connect"):
        source.check()
    assert not path.exists()


@pytest.mark.parametrize("url", ["postgresql+psycopg://postgres@127.0.0.1:1/test",
                                 "mysql+pymysql://root@127.0.0.1:1/test"])
def test_check_reports_an_unreachable_database_without_its_password(url):
    source = SqlSource({"url": url.replace("@", ":s3cret@")}, [])
    with pytest.raises(SourceError, match="无法连接数据库 cannot connect to database") as info:
        source.check()
    assert "s3cret" not in str(info.value) and "127.0.0.1:1" in str(info.value)


def test_check_names_what_is_missing(db):
    db.xzcf()
    cases = [
        (db.stream("nosuch"), "表或视图不存在.*does not exist.*nosuch"),
        (db.stream(key=("nokey",)), "has no key 主键 column 'nokey'"),
        (db.stream(cursor="changed_at"), "has no cursor 游标 column 'changed_at'"),
        (StreamSpec("q", {"query": f"SELECT nope FROM {db.qualified('xzcf')}"}, ("id",)), "查询失败 query of stream 'q' failed"),
        (StreamSpec("both", {"table": "xzcf", "query": "SELECT 1"}, ("id",)), "exactly one of table, query"),
        (StreamSpec("nokey", {"table": "xzcf"}, ()), "has no key columns"),
    ]
    if db.backend != "sqlite":  # SQLite renames the second one "id:1"
        cases.append((StreamSpec("q", {"query": f"SELECT id, id FROM {db.qualified('xzcf')}"}, ("id",)),
                      "(?i)duplicate column"))
    for stream, message in cases:
        with pytest.raises(SourceError, match=message):
            db.source(stream).check()
    db.source(db.stream()).check()


def test_inventory_counts_rows_at_the_source(db):
    table = db.xzcf()
    stream = db.stream()
    source = db.source(stream)
    assert source.inventory(stream) == 0
    db.insert(table, [{"id": i} for i in range(1, 124)])
    assert source.inventory(stream) == 123


def test_url_file_keeps_the_url_out_of_the_config(tmp_path):
    sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}").connect().close()
    (tmp_path / "url").write_text(f"sqlite:///{tmp_path / 'a.db'}\n")
    SqlSource({"url_file": str(tmp_path / "url")}, []).check()
    with pytest.raises(SourceError, match="url_file"):
        SqlSource({"url_file": str(tmp_path / "missing")}, []).check()
    with pytest.raises(SourceError, match="exactly one of url, url_file"):
        SqlSource({}, [])
    with pytest.raises(SourceError, match="position"):
        list(SqlSource({"url": f"sqlite:///{tmp_path / 'a.db'}"}, []).read(
            StreamSpec("t", {"query": "SELECT 1 AS id, 2 AS c"}, ("id",), "c"), {"key": [1]}, 10))


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.text(), st.binary(), st.uuids(), st.dates(),
                 st.datetimes(), st.datetimes(timezones=st.timezones()), st.times(), st.timedeltas(),
                 st.decimals(allow_nan=False, allow_infinity=False),
                 st.floats(allow_nan=False, allow_infinity=False)))
def test_positions_round_trip_through_json(value):
    decoded = decode_value(json.loads(json.dumps(encode_value(value))))
    assert type(decoded) is type(value)
    if isinstance(value, dt.datetime) and value.utcoffset() is not None:
        # the same instant and offset; `==` across zones is always False for a time a DST change makes
        # ambiguous (PEP 495), e.g. 1987-09-27 02:00 in Europe, so compare the instants
        assert decoded.timestamp() == value.timestamp() and decoded.utcoffset() == value.utcoffset()
    else:
        assert decoded == value


def test_adapters_are_registered_as_entry_points():
    assert load_adapter("sql") is SqlSource
    assert load_adapter("files") is FileSource


# -- files -------------------------------------------------------------------------------------------

PENALTIES = StreamSpec("penalties", {"pattern": "penalties*.csv"}, ("统一社会信用代码",))


def drop(folder: Path, name: str, data: bytes, age: float = 60) -> Path:
    """A file as staff leave it, modified `age` seconds ago."""
    path = folder / name
    path.write_bytes(data)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def files(folder: Path, *streams: StreamSpec, **options) -> FileSource:
    source = FileSource({"folder": str(folder), **options}, streams or [PENALTIES])
    source.check()
    return source


def read_files(source: FileSource, stream: StreamSpec = PENALTIES) -> list[Chunk]:
    return list(source.read(stream, None, 1000))


CSV_TEXT = ("统一社会信用代码,企业名称,处罚金额,决定日期\r\n"
            "91410300MA44ABCD1X, 洛阳市某某有限公司 ,5000,2024-05-01\r\n"
            "\r\n"
            "91410300MA44ABCD2X,\"涧西区\n某某商行\",,2024-05-02\r\n")


def test_gbk_csv_with_chinese_headers_is_detected(tmp_path):
    drop(tmp_path, "penalties-2024.csv", CSV_TEXT.encode("gbk"))
    [chunk] = read_files(files(tmp_path))
    assert chunk.error is None and chunk.position is None
    assert [r.key for r in chunk.rows] == [("91410300MA44ABCD1X",), ("91410300MA44ABCD2X",)]
    assert chunk.rows[0].values == {"统一社会信用代码": "91410300MA44ABCD1X", "企业名称": "洛阳市某某有限公司",
                                    "处罚金额": "5000", "决定日期": "2024-05-01"}
    assert chunk.rows[1].values["企业名称"] == "涧西区\n某某商行" and chunk.rows[1].values["处罚金额"] is None
    assert [r.locator for r in chunk.rows] == ["penalties-2024.csv line 2", "penalties-2024.csv line 4"]
    digest = hashlib.sha256(CSV_TEXT.encode("gbk")).hexdigest()
    assert chunk.unit == f"penalties-2024.csv:{digest}"
    [again] = read_files(files(tmp_path, encoding="gbk"))
    assert again.rows == chunk.rows


def test_utf8_bom_is_stripped_from_the_first_header(tmp_path):
    drop(tmp_path, "penalties.csv", b"\xef\xbb\xbf" + CSV_TEXT.encode("utf-8"))
    for encoding in ("auto", "utf-8"):
        [chunk] = read_files(files(tmp_path, encoding=encoding))
        assert chunk.rows[0].key == ("91410300MA44ABCD1X",)
        assert list(chunk.rows[0].values)[0] == "统一社会信用代码"


def test_undecodable_csv_and_missing_key_column_are_unit_errors(tmp_path):
    drop(tmp_path, "penalties-a.csv", "统一社会信用代码\n".encode() + b"\x80\xff\n", age=90)  # neither UTF-8 nor GB18030
    drop(tmp_path, "penalties-b.csv", "企业名称,金额\n某某,1\n".encode())
    source = files(tmp_path)
    undecodable, no_key = read_files(source)
    assert undecodable.rows == [] and "penalties-a.csv is not valid UTF-8 at line 2" in undecodable.error
    assert no_key.rows == [] and "缺少主键列 key column(s) missing: 统一社会信用代码" in no_key.error
    assert no_key.unit.startswith("penalties-b.csv:")


def test_xlsx_cells_become_text(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "处罚"
    book.create_sheet("说明")
    sheet.append(["洛阳市行政处罚信息"])  # a title row above the header
    sheet.append(["统一社会信用代码 ", "企业名称", "处罚金额", "决定日期", "录入时间", "件数"])
    sheet.append(["91410300MA44ABCD1X", "洛阳市某某有限公司", 5000.0, dt.date(2024, 5, 1),
                  dt.datetime(2024, 5, 1, 10, 30), 3])
    sheet.append([])
    sheet.append(["91410300MA44ABCD2X", "  ", 1234.5, dt.datetime(2024, 5, 2), None, 0.1])
    book.save(tmp_path / "penalties.xlsx")
    os.utime(tmp_path / "penalties.xlsx", (time.time() - 60,) * 2)

    stream = StreamSpec("penalties", {"pattern": "penalties*.xlsx"}, ("统一社会信用代码",))
    [chunk] = read_files(files(tmp_path, stream, header_row=2), stream)
    assert chunk.error is None
    first, second = chunk.rows
    assert first.values == {"统一社会信用代码": "91410300MA44ABCD1X", "企业名称": "洛阳市某某有限公司", "处罚金额": "5000",
                            "决定日期": "2024-05-01", "录入时间": "2024-05-01T10:30:00", "件数": "3"}
    assert second.values["企业名称"] is None and second.values["处罚金额"] == "1234.5"
    assert second.values["决定日期"] == "2024-05-02" and second.values["件数"] == "0.1"
    assert [r.locator for r in chunk.rows] == ["penalties.xlsx sheet 处罚 row 3", "penalties.xlsx sheet 处罚 row 5"]

    [other] = read_files(files(tmp_path, stream, sheet="无此表"), stream)
    assert "sheet '无此表' not found" in other.error


def test_broken_xlsx_goes_to_failed_with_a_report(tmp_path):
    drop(tmp_path, "penalties.xlsx", b"PK\x03\x04 this is not really a workbook")
    stream = StreamSpec("penalties", {"pattern": "penalties*.xlsx"}, ("统一社会信用代码",))
    source = files(tmp_path, stream)
    [chunk] = read_files(source, stream)
    assert chunk.rows == [] and "无法打开 Excel 文件 cannot open the XLSX file" in chunk.error
    source.finish(stream, chunk, UnitReport(chunk.unit, 0, 0, 0))
    assert not (tmp_path / "penalties.xlsx").exists()
    assert (tmp_path / "failed" / "penalties.xlsx").exists()
    report = (tmp_path / "failed" / "penalties.xlsx.report.txt").read_text("utf-8")
    assert "未处理 failed" in report and chunk.error in report
    assert read_files(source, stream) == []


def test_files_being_written_are_left_alone(tmp_path):
    fresh = drop(tmp_path, "penalties-new.csv", CSV_TEXT.encode(), age=0)
    for name in (".penalties.csv", "~$penalties.csv", "penalties.csv.tmp", "penalties.csv.part"):
        drop(tmp_path, name, CSV_TEXT.encode())
    source = files(tmp_path, settle_seconds=5)
    assert read_files(source) == []
    os.utime(fresh, (time.time() - 6,) * 2)
    assert [c.unit.split(":")[0] for c in read_files(source)] == ["penalties-new.csv"]


def test_files_come_oldest_first_and_belong_to_the_first_matching_stream(tmp_path):
    same_time = time.time() - 100
    for name in ("penalties-b.csv", "penalties-a.csv"):
        os.utime(drop(tmp_path, name, CSV_TEXT.encode()), (same_time, same_time))
    drop(tmp_path, "PENALTIES-old.CSV", CSV_TEXT.encode(), age=200)
    drop(tmp_path, "licences.csv", CSV_TEXT.encode(), age=300)
    everything = StreamSpec("rest", {"pattern": "*.csv"}, ("统一社会信用代码",))
    source = files(tmp_path, PENALTIES, everything)
    assert [c.unit.split(":")[0] for c in read_files(source)] == ["PENALTIES-old.CSV", "penalties-a.csv", "penalties-b.csv"]
    assert [c.unit.split(":")[0] for c in read_files(source, everything)] == ["licences.csv"]


def test_processed_file_is_moved_with_its_report_and_a_same_name_file_gets_a_new_name(tmp_path):
    drop(tmp_path, "penalties.csv", CSV_TEXT.encode())
    source = files(tmp_path)
    [chunk] = read_files(source)
    rejection = {"locator": chunk.rows[1].locator, "errors": [
        {"path": "amount", "rule": "required", "message_zh": "缺少必填字段", "message_en": "a required field is missing",
         "value": None}]}
    source.finish(PENALTIES, chunk, UnitReport(chunk.unit, 2, 1, 1, [rejection]))
    assert (tmp_path / "processed" / "penalties.csv").read_bytes() == CSV_TEXT.encode()
    report = (tmp_path / "processed" / "penalties.csv.report.txt").read_text("utf-8")
    for expected in ("已处理 processed", "读取行数 rows read: 2", "合格 valid: 1", "不合格 invalid: 1",
                     "penalties.csv line 4", "amount [required] 缺少必填字段 / a required field is missing",
                     chunk.unit.split(":")[1]):
        assert expected in report
    assert read_files(source) == []

    changed = CSV_TEXT.replace("5000", "6000")
    drop(tmp_path, "penalties.csv", changed.encode())
    [chunk2] = read_files(source)
    assert chunk2.unit != chunk.unit
    source.finish(PENALTIES, chunk2, UnitReport(chunk2.unit, 2, 2, 0))
    assert (tmp_path / "processed" / "penalties.csv").read_bytes() == CSV_TEXT.encode()
    [moved] = [p for p in (tmp_path / "processed").iterdir() if p.name not in
               ("penalties.csv", "penalties.csv.report.txt") and not p.name.endswith(".report.txt")]
    assert moved.name.startswith("penalties.") and moved.suffix == ".csv" and moved.read_bytes() == changed.encode()
    assert (moved.parent / (moved.name + ".report.txt")).exists()


def test_finish_leaves_a_vanished_or_replaced_file_alone(tmp_path):
    path = drop(tmp_path, "penalties.csv", CSV_TEXT.encode())
    source = files(tmp_path)
    [chunk] = read_files(source)
    path.write_bytes(CSV_TEXT.replace("5000", "1").encode())  # a newer export under the same name
    source.finish(PENALTIES, chunk, UnitReport(chunk.unit, 2, 2, 0))
    assert path.exists() and not (tmp_path / "processed").exists()
    path.unlink()
    source.finish(PENALTIES, chunk, UnitReport(chunk.unit, 2, 2, 0))
    assert not (tmp_path / "processed").exists()


def test_a_unit_the_node_gave_up_on_goes_to_failed(tmp_path):
    drop(tmp_path, "penalties.csv", CSV_TEXT.encode())
    source = files(tmp_path)
    [chunk] = read_files(source)
    source.finish(PENALTIES, chunk, UnitReport(chunk.unit, 2, 0, 0, error="映射配置错误 mapping failed"))
    assert "映射配置错误 mapping failed" in (tmp_path / "failed" / "penalties.csv.report.txt").read_text("utf-8")


def test_files_source_options_are_checked(tmp_path):
    with pytest.raises(SourceError, match="文件夹不存在 folder not found"):
        files(tmp_path / "missing")
    with pytest.raises(SourceError, match="unknown encoding"):
        FileSource({"folder": str(tmp_path), "encoding": "klingon"}, [PENALTIES])
    with pytest.raises(SourceError, match="needs a file name pattern"):
        FileSource({"folder": str(tmp_path)}, [StreamSpec("x", {}, ("id",))])
    assert FileSource({"folder": str(tmp_path)}, [PENALTIES]).inventory(PENALTIES) is None


def test_encoding_problems_name_the_line_and_the_likely_encoding(tmp_path):
    from cx_adapters.files import Unreadable, decode

    text = CSV_TEXT + "91410300MA44ABCD3X,洛阳市测试商贸有限公司,100,2024-05-03\r\n"
    utf8 = text.encode("utf-8").split(b"\r\n")
    utf8[4] = utf8[4].replace("测试".encode(), "测试".encode("gbk"))  # line 6 pasted from a GBK program
    cases = {
        ("broken.csv", b"\r\n".join(utf8), "auto"): ["broken.csv is not valid UTF-8 at line 6", "第 6 行"],
        ("big5.csv", "統一社會信用代碼,企業名稱\r\n9141,洛陽市測試商貿有限公司\r\n".encode("big5"), "auto"):
            ["big5.csv looks like Big5", "繁体中文 Big5"],
        ("big5-as-gbk.csv", "統一社會信用代碼,企業名稱\r\n9141,洛陽市測試商貿有限公司\r\n".encode("big5"), "gbk"):
            ["looks like Big5"],
        ("utf8-as-gbk.csv", text.encode("utf-8"), "gbk"): ["does not decode as gbk at line 1", "looks like UTF-8"],
        ("gbk-as-utf8.csv", text.encode("gbk"), "utf-8"): ["does not decode as utf-8 at line 1", "looks like GBK"],
        ("utf16.csv", text.encode("utf-16-le"), "auto"): ["UTF-16 without a byte order mark"],
    }
    for (name, data, encoding), said in cases.items():
        with pytest.raises(Unreadable) as info:
            decode(data, encoding, name)
        for words in said:
            assert words in str(info.value), (name, str(info.value))
    assert decode(text.encode("gbk"), "auto") == text  # GBK is not mistaken for anything else
    assert decode(text.encode("utf-8"), "auto") == text


def test_a_failed_file_put_back_is_read_again_and_processed_rows_can_be_found_again(tmp_path):
    drop(tmp_path, "penalties.csv", CSV_TEXT.encode())
    source = files(tmp_path)
    [chunk] = read_files(source)
    refs = [source.ref(PENALTIES, chunk, row) for row in chunk.rows]
    source.finish(PENALTIES, chunk, UnitReport(chunk.unit, 2, 2, 0))
    assert not (tmp_path / "penalties.csv").exists()
    # the node re-reads one of its rows from processed/: the file is found by its hash, the row by its key
    [again] = list(source.reread(PENALTIES, refs[1:]))
    assert [r.key for r in again.rows] == [("91410300MA44ABCD2X",)] and again.unit == chunk.unit
    assert again.rows[0].locator == chunk.rows[1].locator
    assert source.columns(PENALTIES) is None  # a drop folder's columns: only its files tell

    drop(tmp_path, "penalties-x.csv", b"\x80\xff\xfe\x00", age=90)
    [bad] = read_files(source)
    source.finish(PENALTIES, bad, UnitReport(bad.unit, 0, 0, 0))
    report = (tmp_path / "failed" / "penalties-x.csv.report.txt").read_text("utf-8")
    assert report.count("错误 error:") == 1 and "put it back from failed/" in report
