"""SQL source: reads a table, view or SELECT from any database SQLAlchemy reaches, read-only, by keyset pages.

Source options ([sources.<name>] with adapter = "sql"):
    url              SQLAlchemy URL: sqlite:///path.db, postgresql+psycopg://user@host/db,
                     mysql+pymysql://user@host/db (MariaDB too)
    url_file         path of a file holding the URL, so the password stays out of node.toml
    connect_timeout  seconds to wait for a connection (PostgreSQL, MySQL), default 10

Stream options ([[streams]]):
    table (+ schema) a table or view; names are matched case-insensitively when not found as written
    query            a SELECT; it is wrapped as a subquery, so key/cursor filtering and ordering work

Cursor mode (stream.cursor set): rows ordered by (cursor, key...), each page strictly after the last
position, so rows sharing a cursor value are neither skipped nor repeated. Rows whose cursor or key
is NULL are never read (they cannot be placed in that order); inventory() still counts them, so they
show up as missing in completeness checks rather than disappearing silently.

Snapshot mode (no cursor): every row ordered by key, keyset pages (not OFFSET); the last chunk has
snapshot_complete=True and position None, so the next read() starts a new pass.

Positions are JSON objects: {"cursor": v, "key": [v, ...]} (snapshot mode: {"key": [...]}) where each
v is a JSON number, boolean, or a tagged string: "s:text", "dt:2024-05-01T10:00:00+08:00",
"d:2024-05-01", "t:10:00:00", "td:<microseconds>", "n:12.50" (Decimal), "b:<base64>", "u:<uuid>".
Values keep the driver's native types (SQLite gives date columns back as the text it stores).

The node only reads: every connection is made read-only where the backend allows it (SQLite
mode=ro plus PRAGMA query_only, PostgreSQL and MySQL/MariaDB read-only session transactions).
Give the node a database account that may only SELECT, too.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.sql import ColumnElement, FromClause
from sqlalchemy.types import NullType

from cx_adapters.base import Chunk, Row, Source, SourceError, StreamConfigError, StreamSpec

# Run on every new connection so that each transaction on it is read-only.
READ_ONLY_SESSION = {
    "sqlite": "PRAGMA query_only = ON",
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
}


class SqlSource(Source):
    """Tables, views and queries of one database."""

    name = "sql"

    def __init__(self, options: Mapping[str, Any], streams: Sequence[StreamSpec]):
        super().__init__(options, streams)
        if bool(options.get("url")) == bool(options.get("url_file")):
            raise SourceError("sql 数据源需要 url 或 url_file 之一 the sql source needs exactly one of url, url_file")
        try:
            self.connect_timeout = int(options.get("connect_timeout", 10))
        except (TypeError, ValueError):
            raise SourceError("connect_timeout 须为整数秒 connect_timeout must be whole seconds") from None
        self._engine: Engine | None = None
        self._plans: dict[str, _Plan] = {}

    # -- the engine ------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The read-only engine, created on first use."""
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    def _url(self) -> URL:
        text = self.options.get("url")
        if not text:
            path = Path(self.options["url_file"]).expanduser()
            try:
                text = path.read_text("utf-8").strip()
            except OSError as exc:
                raise StreamConfigError(f"无法读取数据库地址文件 cannot read url_file {path}: {exc.strerror}") from None
        try:
            return sa.make_url(text)
        except sa.exc.ArgumentError:
            raise StreamConfigError("数据库地址格式错误 the database URL is not a valid SQLAlchemy URL") from None

    def _create_engine(self) -> Engine:
        url = _read_only_url(self._url())
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() in ("postgresql", "mysql", "mariadb") and "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = self.connect_timeout
        try:
            engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True, pool_recycle=3600)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
            raise StreamConfigError(f"不支持的数据库地址 unsupported database URL {_safe(url)}: {exc}") from None
        statement = READ_ONLY_SESSION.get(engine.dialect.name)
        if statement:
            sa.event.listen(engine, "connect", _session_setup(statement))
        return engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._plans.clear()

    # -- the Source interface --------------------------------------------------------------------

    def check(self) -> None:
        self._plans.clear()
        with self._connect():
            pass
        for stream in self.streams:
            self._plan(stream)

    def read(self, stream: StreamSpec, position: Any, chunk_size: int) -> Iterator[Chunk]:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
        plan = self._plan(stream)
        after = plan.decode(position)
        while True:
            rows, last = self._page(plan, after, chunk_size)
            full = len(rows) == chunk_size
            if plan.cursor:
                if rows:
                    yield Chunk(stream.name, rows, position=plan.encode(last))
                if not full:
                    return
            else:
                yield Chunk(stream.name, rows, position=plan.encode(last) if full else None, snapshot_complete=not full)
                if not full:
                    return
            after = last

    def inventory(self, stream: StreamSpec) -> int | None:
        plan = self._plan(stream)
        with self._connect() as conn:
            return int(self._execute(conn, plan, sa.select(sa.func.count()).select_from(plan.source)).scalar_one())

    def columns(self, stream: StreamSpec) -> Sequence[str]:
        return self._plan(stream).columns

    def ref(self, stream: StreamSpec, chunk: Chunk, row: Row) -> Any:
        """The row's key values with their types ({"key": [...]}, tagged like positions)."""
        plan = self._plan(stream)
        try:
            return {"key": [encode_value(row.values[c]) for c in plan.key]}
        except (KeyError, SourceError):
            return None

    def reread(self, stream: StreamSpec, refs: Sequence[Any]) -> Iterator[Chunk]:
        """The rows with these keys, by keyset lookups of 100 keys (the key's index does the work)."""
        plan = self._plan(stream)
        keys = []
        for ref in refs:
            try:
                values = tuple(decode_value(v) for v in ref["key"])
            except (TypeError, KeyError, ValueError):
                continue  # a reference from another configuration of the stream: that row cannot be found
            if len(values) == len(plan.key):
                keys.append(values)
        for start in range(0, len(keys), 100):
            part = keys[start:start + 100]
            cols = [plan.source.c[name] for name in plan.key]
            bind = lambda v: sa.bindparam(None, v, type_=NullType())  # noqa: E731 - untyped, as in _after
            where = sa.or_(*(sa.and_(*(c == bind(v) for c, v in zip(cols, values))) for values in part))
            statement = sa.select(sa.literal_column("*")).select_from(plan.source).where(where)
            with self._connect() as conn:
                result = self._execute(conn, plan, statement)
                rows = [self._row(plan, list(result.keys()), record) for record in result]
            if rows:
                yield Chunk(stream.name, rows)

    # -- reading ---------------------------------------------------------------------------------

    def _page(self, plan: _Plan, after: tuple | None, limit: int) -> tuple[list[Row], tuple | None]:
        """Up to `limit` rows strictly after `after`, and the ordering values of the last one."""
        with self._connect() as conn:
            result = self._execute(conn, plan, plan.page(after, limit))
            names = list(result.keys())
            order = [names.index(c) for c in plan.order]
            rows, last = [], None
            for record in result:
                rows.append(self._row(plan, names, record))
                last = tuple(record[i] for i in order)
        return rows, last

    @staticmethod
    def _row(plan: _Plan, names: list[str], record: Sequence[Any]) -> Row:
        if memoryview in map(type, record):  # a C-speed look first: most rows hold no binary value
            values = dict(zip(names, (bytes(v) if isinstance(v, memoryview) else v for v in record)))
        else:
            values = dict(zip(names, record))
        key_text = tuple(_key_text(values[c]) for c in plan.key)
        locator = " ".join([plan.what, *(f"{c}={t}" for c, t in zip(plan.key, key_text))])
        return Row(key_text, values, locator)

    def _connect(self) -> sa.Connection:
        try:
            return self.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise SourceError(f"无法连接数据库 cannot connect to database {_safe(self.engine.url)}: {_reason(exc)}") from None

    @staticmethod
    def _execute(conn: sa.Connection, plan: _Plan, statement: sa.Executable) -> sa.CursorResult:
        try:
            return conn.execute(statement)
        except sa.exc.DBAPIError as exc:
            raise SourceError(f"读取失败 cannot read {plan.what}: {_reason(exc)}") from None

    def _plan(self, stream: StreamSpec) -> _Plan:
        if stream.name not in self._plans:
            with self._connect() as conn:
                try:
                    self._plans[stream.name] = _Plan.build(conn, stream)
                except StreamConfigError:
                    raise
                except SourceError as exc:  # connected, and the table, query or a column does not work
                    raise StreamConfigError(str(exc)) from None
        return self._plans[stream.name]


@dataclass(frozen=True)
class _Plan:
    """How one stream is read: the FROM clause and the resolved (real-case) ordering columns."""

    what: str  # "table xzcf" or "query penalties": starts every locator and error message
    source: FromClause
    key: tuple[str, ...]
    cursor: str | None
    columns: tuple[str, ...] = ()  # every column the rows have

    @property
    def order(self) -> tuple[str, ...]:
        return ((self.cursor,) if self.cursor else ()) + self.key

    @classmethod
    def build(cls, conn: sa.Connection, stream: StreamSpec) -> _Plan:
        table, query = stream.options.get("table"), stream.options.get("query")
        if bool(table) == bool(query):
            raise SourceError(f"数据流 {stream.name} 需要 table 或 query 之一 "
                              f"stream {stream.name!r} needs exactly one of table, query")
        if not stream.key:
            raise SourceError(f"数据流 {stream.name} 未配置主键 stream {stream.name!r} has no key columns")
        if table:
            schema = stream.options.get("schema")
            table = _table_name(conn, table, schema)
            what = f"table {schema + '.' if schema else ''}{table}"
            missing = f"表或视图不存在或无法读取 table or view {what.removeprefix('table ')} does not exist or cannot be read"
            columns = _probe(conn, sa.table(table, schema=schema), missing)
            source: FromClause = sa.table(table, *map(sa.column, columns), schema=schema)
        else:
            what = f"query {stream.name}"
            # colons escaped: the query is the department's SQL, not a template with :bind parameters
            sql = str(query).strip().rstrip(";").replace(":", r"\:")
            failed = f"查询失败 query of stream {stream.name!r} failed"
            columns = _probe(conn, sa.text(sql).columns().subquery("cx_q"), failed)
            duplicated = sorted({c for c in columns if columns.count(c) > 1})
            if duplicated:
                raise SourceError(f"查询结果列名重复 the query of stream {stream.name!r} returns duplicate columns "
                                  f"{duplicated}; name them with AS")
            source = sa.text(sql).columns(*map(sa.column, columns)).subquery("cx_q")

        def resolve(name: str, role: str) -> str:
            found = _match(columns, name)
            if found is None:
                raise SourceError(f"{what} 中没有{role}列 has no {role} column {name!r}; columns 现有列: {', '.join(columns)}")
            return found

        return cls(what, source, tuple(resolve(k, "key 主键") for k in stream.key),
                   resolve(stream.cursor, "cursor 游标") if stream.cursor else None, tuple(columns))

    def page(self, after: tuple | None, limit: int) -> sa.Select:
        cols = [self.source.c[name] for name in self.order]
        statement = (sa.select(sa.literal_column("*")).select_from(self.source)
                     .where(*(c.is_not(None) for c in cols)).order_by(*cols).limit(limit))
        return statement if after is None else statement.where(_after(cols, after))

    def encode(self, last: tuple | None) -> dict[str, Any] | None:
        if last is None:
            return None
        values = [encode_value(v) for v in last]
        return {"cursor": values[0], "key": values[1:]} if self.cursor else {"key": values}

    def decode(self, position: Any) -> tuple | None:
        if position is None:
            return None
        try:
            if set(position) != ({"cursor", "key"} if self.cursor else {"key"}):
                raise ValueError
            values = ([position["cursor"]] if self.cursor else []) + list(position["key"])
            if len(values) != len(self.order):
                raise ValueError
            return tuple(decode_value(v) for v in values)
        except (TypeError, KeyError, ValueError):
            raise SourceError(f"保存的读取位置与数据流配置不符 the saved position {position!r} does not fit {self.what} "
                              f"(cursor/key changed?); reset the stream's position 请重置读取位置") from None


def _after(cols: list[ColumnElement], values: tuple) -> ColumnElement[bool]:
    """(c1, c2, …) > (v1, v2, …), spelled out: not every backend has row-value comparison.

    The leading c1 >= v1 lets the database use an index on the cursor column.
    """
    def bind(v: Any) -> sa.BindParameter:  # untyped: the driver adapts it, no cast that could change comparison
        return sa.bindparam(None, v, type_=NullType())

    condition = cols[-1] > bind(values[-1])
    for col, value in zip(reversed(cols[:-1]), reversed(values[:-1])):
        condition = sa.or_(col > bind(value), sa.and_(col == bind(value), condition))
    return sa.and_(cols[0] >= bind(values[0]), condition) if len(cols) > 1 else condition


# -- positions: ordering values as JSON ------------------------------------------------------------

# (type, tag, to text, from text); order matters: datetime is a date, bool is an int
_TAGGED: list[tuple[type, str, Callable[[Any], str], Callable[[str], Any]]] = [
    (str, "s", str, str),
    (dt.datetime, "dt", dt.datetime.isoformat, dt.datetime.fromisoformat),
    (dt.date, "d", dt.date.isoformat, dt.date.fromisoformat),
    (dt.time, "t", dt.time.isoformat, dt.time.fromisoformat),
    (dt.timedelta, "td", lambda v: str(v // dt.timedelta(microseconds=1)), lambda s: dt.timedelta(microseconds=int(s))),
    (Decimal, "n", str, Decimal),
    ((bytes, bytearray, memoryview), "b", lambda v: base64.b64encode(bytes(v)).decode("ascii"), base64.b64decode),
    (uuid.UUID, "u", str, uuid.UUID),
]
_DECODERS = {tag: decode for _, tag, _, decode in _TAGGED}


def encode_value(value: Any) -> Any:
    """A cursor or key value as JSON: numbers as they are, everything else as a tagged string."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    for kind, tag, encode, _ in _TAGGED:
        if isinstance(value, kind):
            return f"{tag}:{encode(value)}"
    raise SourceError(f"不支持的游标或主键类型 cannot use a {type(value).__name__} as cursor or key value")


def decode_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    tag, sep, text = value.partition(":")
    if not sep or tag not in _DECODERS:
        raise ValueError(value)
    return _DECODERS[tag](text)


# -- helpers ---------------------------------------------------------------------------------------

def _read_only_url(url: URL) -> URL:
    """SQLite files are opened with mode=ro (which also stops SQLite creating a missing file)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:") or "uri" in url.query:
        return url
    return url.set(database=Path(url.database).expanduser().absolute().as_uri(),
                   query={**url.query, "mode": "ro", "uri": "true"})


def _session_setup(statement: str) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()
        dbapi_connection.commit()
    return on_connect


def _table_name(conn: sa.Connection, name: str, schema: str | None) -> str:
    """The table's name as the database spells it (PostgreSQL folds to lower case, MySQL is case-sensitive on Linux)."""
    inspector = sa.inspect(conn)
    try:
        if inspector.has_table(name, schema=schema):
            return name
        return _match(inspector.get_table_names(schema) + inspector.get_view_names(schema), name) or name
    except sa.exc.DBAPIError:
        return name  # no catalogue access: the probe query says whether the name works


def _probe(conn: sa.Connection, source: FromClause, failure: str) -> list[str]:
    """The column names of `source`, reading no rows."""
    try:
        return list(conn.execute(sa.select(sa.literal_column("*")).select_from(source).where(sa.text("1 = 0"))).keys())
    except sa.exc.DBAPIError as exc:
        raise SourceError(f"{failure}: {_reason(exc)}") from None


def _match(names: Sequence[str], wanted: str) -> str | None:
    if wanted in names:
        return wanted
    folded = [n for n in names if n.casefold() == wanted.casefold()]
    return folded[0] if len(folded) == 1 else None


def _key_text(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return "" if value is None else str(value)


def _safe(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _reason(exc: sa.exc.DBAPIError) -> str:
    return " ".join(str(exc.orig).split()) or type(exc.orig).__name__
