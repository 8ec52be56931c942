"""The hub's store: SQLAlchemy Core tables on SQLite (embedded default) or PostgreSQL, versioned."""

from __future__ import annotations

import contextlib
import operator
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    DDL, BigInteger, Boolean, Column, Engine, Index, Integer, LargeBinary, MetaData, String, Table, Text,
    create_engine, event, select, text,
)
from sqlalchemy.engine import Connection, make_url

from ..protocol.envelope import RECORD_ID_MAX, SOURCE_MAX
from ..protocol.heartbeat import MAX_HEARTBEAT_VERSION
from ..protocol.validation import KEPT_DATA_FIELDS

SCHEMA_VERSION = 3
ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite only autoincrements INTEGER PRIMARY KEY
TIME = String(32)  # UTC, "2026-01-02T03:04:05.678Z": exactly what was signed, and sorts as text
HASH = String(64)  # SHA-256 hex

metadata = MetaData()

schema_version = Table("cx_schema", metadata, Column("version", Integer, nullable=False))

departments = Table(
    "departments", metadata,
    Column("dept", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("region", String(6), nullable=False),
    Column("created", TIME, nullable=False),
    # the head of the department's ledger; the row is locked while a batch is appended
    Column("ledger_size", BigInteger, nullable=False, default=0),
)

dept_keys = Table(
    "dept_keys", metadata,
    Column("key_id", String(32), primary_key=True),
    Column("dept", String(32), nullable=False, index=True),
    Column("public_key", LargeBinary(32), nullable=False),
    Column("valid_from", TIME),  # NULL: valid for anything signed before valid_to / revocation
    Column("valid_to", TIME),
    Column("revoked_at", TIME),
    Column("added", TIME, nullable=False),
)

# the nodes a department runs, enrolled by the operator before they send: each gets its own receipts queue
enrolled_nodes = Table(
    "enrolled_nodes", metadata,
    Column("dept", String(32), primary_key=True),
    Column("node", String(64), primary_key=True),
    Column("added", TIME, nullable=False),
)

# each node's sequence chain, from its first batch on
nodes = Table(
    "nodes", metadata,
    Column("dept", String(32), primary_key=True),
    Column("node", String(64), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_header_hash", HASH, nullable=False),
    Column("missing", Text, nullable=False, default="[]"),  # JSON list of sequence numbers not yet seen
    Column("last_batch_at", TIME, nullable=False),
)

sequence_events = Table(
    "sequence_events", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("dept", String(32), nullable=False),
    Column("node", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", String(20), nullable=False),  # gap, late, redelivery, replay, chain_broken
    Column("batch_id", String(36)),
    Column("detail", Text),
    Column("at", TIME, nullable=False),
    Index("ix_sequence_events_dept", "dept", "at"),
)

batches = Table(
    "batches", metadata,
    Column("batch_id", String(36), primary_key=True),
    Column("dept", String(32), nullable=False),
    Column("node", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("header", LargeBinary, nullable=False),  # exact signed bytes
    Column("signature", LargeBinary(64), nullable=False),
    Column("header_hash", HASH, nullable=False),
    Column("leaf_hashes", LargeBinary, nullable=False),  # 32 bytes per line, for inclusion proofs
    Column("created", TIME, nullable=False),
    Column("received", TIME, nullable=False),
    Column("accepted_at", TIME, nullable=False),
    Column("record_count", Integer, nullable=False),
    Column("accepted", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("duplicates", Integer, nullable=False),
    Column("ledger_size", BigInteger, nullable=False),
    Column("receipt", LargeBinary, nullable=False),
    Index("ix_batches_dept_received", "dept", "received"),
)

records = Table(
    "records", metadata,
    Column("dept", String(32), primary_key=True),
    Column("record_id", String(RECORD_ID_MAX), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("version", HASH, nullable=False),  # content hash of the current version
    Column("status", String(10), nullable=False),  # active | retracted
    Column("ledger_index", BigInteger, nullable=False),
    Column("subject_name", String(KEPT_DATA_FIELDS["subject_name"])),
    Column("uscc", String(KEPT_DATA_FIELDS["uscc"])),
    Column("first_accepted", TIME, nullable=False),
    Column("updated", TIME, nullable=False),
    Index("ix_records_uscc", "uscc"),
    Index("ix_records_subject_name", "subject_name"),
)

record_versions = Table(
    "record_versions", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("dept", String(32), nullable=False),
    Column("record_id", String(RECORD_ID_MAX), nullable=False),
    Column("version", HASH, nullable=False),
    Column("op", String(10), nullable=False),
    Column("type", String(64), nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("line", LargeBinary, nullable=False),  # the record line's exact bytes
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("batch_id", String(36), nullable=False),
    Column("line_index", Integer, nullable=False),
    Column("ledger_index", BigInteger, nullable=False),
    # provenance: 谁产生、谁录入、谁提供、谁负责; every bound is one the protocol states and the parser enforces
    Column("authority", String(KEPT_DATA_FIELDS["authority"])),
    Column("authority_uscc", String(KEPT_DATA_FIELDS["authority_uscc"])),
    Column("entered_by", String(max(KEPT_DATA_FIELDS["entered_by"], SOURCE_MAX["entered_by"]))),
    Column("node", String(64), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("source_adapter", String(SOURCE_MAX["adapter"])),
    Column("source_locator", String(SOURCE_MAX["locator"])),
    Column("extracted", TIME),
    Column("sent", TIME, nullable=False),  # the batch's created time
    Column("received", TIME, nullable=False),
    Column("accepted", TIME, nullable=False),
    Index("ix_record_versions_record", "dept", "record_id"),
    Index("ux_record_versions_ledger", "dept", "ledger_index", unique=True),
)

ledger_nodes = Table(
    "ledger_nodes", metadata,
    Column("dept", String(32), primary_key=True),
    Column("level", Integer, primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    Column("hash", LargeBinary(32), nullable=False),
)

checkpoints = Table(
    "checkpoints", metadata,
    Column("dept", String(32), primary_key=True),
    Column("size", BigInteger, primary_key=True),
    Column("root", HASH, nullable=False),
    Column("time", TIME, nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("signature", String(100), nullable=False),
)

quarantine = Table(
    "quarantine", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("received", TIME, nullable=False),
    Column("reason", String(40), nullable=False),
    Column("detail", Text),
    Column("routing_key", String(300)),
    Column("user_id", String(100)),
    Column("message_id", String(100)),
    Column("dept", String(32)),  # as claimed by the header or routing key; not verified
    Column("batch_id", String(36)),
    Column("header", LargeBinary),  # the raw first line, at most 64 KiB
    Column("size", Integer, nullable=False),
    Column("detail_zh", Text),  # (schema 3) the reason and detail in Chinese
    Column("body_hash", HASH),  # (schema 3) SHA-256 of the message: a redelivered copy is the same message
    Column("refusal", LargeBinary),  # (schema 3) the signed refusal sent to the department, if any
    Index("ix_quarantine_received", "received"),
    Index("ix_quarantine_body_hash", "body_hash"),
)

heartbeats = Table(
    "heartbeats", metadata,
    Column("dept", String(32), primary_key=True),
    Column("node", String(64), primary_key=True),
    Column("time", TIME, nullable=False),  # the node's signed time
    Column("received", TIME, nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("version", String(MAX_HEARTBEAT_VERSION)),
    Column("outbox_depth", BigInteger),
    Column("oldest_pending_seconds", Integer),
    Column("last_error", Text),
    Column("inventory", Text),  # JSON: record type -> rows at the source
    Column("rejections", Text),  # JSON: record type -> rule -> rows refused at the department (schema 2)
    Column("alerts", Text),  # JSON: alert kind -> count, what the node is alarmed about (schema 2)
    Column("body", LargeBinary, nullable=False),  # signed bytes
    Column("signature", LargeBinary(64), nullable=False),
)

# how far each derived view (node/hub/projections.py) has applied each department's ledger
projection_positions = Table(
    "projection_positions", metadata,
    Column("projection", String(40), primary_key=True),
    Column("dept", String(32), primary_key=True),
    Column("position", BigInteger, nullable=False),  # ledger indexes below this are applied
    Column("updated", TIME, nullable=False),
)

# -- the console: accounts, API tokens, the access trail, what was done with quarantined messages --

accounts = Table(
    "accounts", metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),  # operator | office | department | auditor
    Column("dept", String(32)),  # the department of a department account
    Column("password_hash", String(200), nullable=False),  # argon2id, with its parameters
    Column("must_change", Integer, nullable=False, default=0),  # 1: a one-time password, changed at first login
    Column("created", TIME, nullable=False),
    Column("created_by", String(64)),
    Column("password_changed", TIME, nullable=False),  # sessions from before a change end
    Column("disabled_at", TIME),
    Column("failed_logins", Integer, nullable=False, default=0),  # failures since the last success
    Column("locked_until", TIME),
    Column("last_login", TIME),
)

api_tokens = Table(
    "api_tokens", metadata,
    Column("token_id", String(16), primary_key=True),  # the public part: cx_<token_id>_<secret>
    Column("name", String(100), nullable=False),  # who or what uses it, e.g. "审计脚本"
    Column("role", String(16), nullable=False),
    Column("dept", String(32)),
    Column("secret_hash", HASH, nullable=False),  # SHA-256 of the secret (256 random bits: no KDF needed)
    Column("created", TIME, nullable=False),
    Column("created_by", String(64)),
    Column("revoked_at", TIME),
)

access_trail = Table(
    "access_trail", metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),  # leaf index in the trail's Merkle log
    Column("time", TIME, nullable=False),
    Column("actor", String(80), nullable=False),  # account name, "token:<id>", or "-" for nobody
    Column("role", String(48), nullable=False),
    Column("action", String(32), nullable=False),  # login, view, download, export, release, …
    Column("dept", String(32)),  # whose data it was
    Column("target", String(500), nullable=False),
    Column("client", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),  # ok | denied | failed | locked | …
    Column("line", LargeBinary, nullable=False),  # the exact bytes hashed into the log
    Index("ix_access_trail_time", "time"),
    Index("ix_access_trail_actor", "actor", "time"),
    Index("ix_access_trail_dept", "dept", "time"),
)

quarantine_actions = Table(
    "quarantine_actions", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("quarantine_id", BigInteger, nullable=False, index=True),
    Column("action", String(16), nullable=False),  # release | discard
    Column("comment", Text, nullable=False),
    Column("actor", String(80), nullable=False),
    Column("time", TIME, nullable=False),
    Column("result", String(40), nullable=False),  # accepted, quarantined again, not in queue, discarded …
    Column("detail", Text),
)

# timeliness of every accepted version (node/hub/timeliness.py), computed once by the projector
record_timeliness = Table(
    "record_timeliness", metadata,
    Column("dept", String(32), primary_key=True),
    Column("ledger_index", BigInteger, primary_key=True),
    Column("record_id", String(200), nullable=False),
    Column("type", String(64), nullable=False),
    Column("event_date", String(10)),  # ISO date from the type's event-date field; NULL for a retraction
    Column("limit_days", Integer),  # working days allowed
    Column("deadline", String(10)),
    Column("received", TIME, nullable=False),  # UTC, when the hub received the batch
    Column("received_date", String(10), nullable=False),  # the same instant's date in Asia/Shanghai
    Column("lag", Integer),  # working days from the event date to received_date
    Column("status", String(12), nullable=False),  # on_time | late | correction | retraction | no_date
    Column("estimated", String(40)),  # years counted Monday–Friday (e.g. "2027"); NULL when none
    Index("ix_record_timeliness_received", "received_date", "dept"),
    Index("ix_record_timeliness_record", "dept", "record_id"),
    Index("ix_record_timeliness_estimated", "estimated"),
)

# small named settings the hub keeps in its store (the rules timeliness is counted by, …)
hub_settings = Table(
    "hub_settings", metadata,
    Column("name", String(40), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated", TIME, nullable=False),
    Column("updated_by", String(100), nullable=False),
)

# every version of the joint-meeting office's obligations file that the hub loaded: who, when, what changed
obligation_sets = Table(
    "obligation_sets", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("loaded", TIME, nullable=False),
    Column("loaded_by", String(100), nullable=False),
    Column("source", String(500)),  # the file it was read from
    Column("sha256", HASH, nullable=False),
    Column("content", Text, nullable=False),  # the TOML as loaded
    Column("changes", Text, nullable=False),  # JSON: added, removed, changed obligation ids
)

# compliance reports the hub produced and keeps (the periodic ones, and any saved on request)
compliance_reports = Table(
    "compliance_reports", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("period_from", String(10), nullable=False),
    Column("period_to", String(10), nullable=False),
    Column("scope", String(32), nullable=False),  # a department id, or "*" for all
    Column("lang", String(8), nullable=False),
    Column("format", String(8), nullable=False),  # json | html | pdf | xlsx | csv
    Column("generated", TIME, nullable=False),
    Column("data_sha256", HASH, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),  # the detached signature file's bytes
    Index("ux_compliance_reports", "period_from", "period_to", "scope", "lang", "format", unique=True),
)

# -- public credit information (node/hub/credit.py): kept by the credit projection from accepted versions --

# one row per enterprise record that is or was published: its publicity period and any credit repair
publicity = Table(
    "publicity", metadata,
    Column("dept", String(32), primary_key=True),
    Column("record_id", String(RECORD_ID_MAX), primary_key=True),
    Column("uscc", String(18), nullable=False),
    Column("name", String(KEPT_DATA_FIELDS["subject_name"])),
    Column("type", String(64), nullable=False),
    Column("category", String(32), nullable=False),
    Column("event_date", String(10)),  # ISO date
    Column("public_until", String(10)),  # last day shown (ISO date, Asia/Shanghai); NULL: no end
    Column("rule", String(64), nullable=False),  # id of the publicity rule applied
    Column("repair_after", String(10)),  # the first day a credit repair is on time
    Column("repaired_at", TIME),  # when the hub accepted the repair; NULL: not repaired
    Column("repair_reason", Text),
    Column("repair_early", Boolean, nullable=False, default=False),  # repaired before the minimum time
    Column("facts", Text, nullable=False),  # JSON: the record's fields the label rules read
    Column("ledger_index", BigInteger, nullable=False),
    Index("ix_publicity_uscc", "uscc"),
    Index("ix_publicity_until", "public_until"),
)

# each enterprise's warning class and labels, each label naming the records behind it
standing = Table(
    "standing", metadata,
    Column("uscc", String(18), primary_key=True),
    Column("name", String(KEPT_DATA_FIELDS["subject_name"])),
    Column("class", String(16), nullable=False),
    Column("labels", Text, nullable=False),  # JSON [{"id", "since", "records": [[dept, record_id], …]}]
    Column("updated", TIME, nullable=False),
    Column("next_change", String(10)),  # the day time alone changes it (a period or a label ends)
    Index("ix_standing_class", "class"),
    Index("ix_standing_next_change", "next_change"),
)

# red and black list membership (守信激励 / 失信惩戒)
list_entries = Table(
    "list_entries", metadata,
    Column("list_id", String(32), primary_key=True),
    Column("uscc", String(18), primary_key=True),
    Column("name", String(KEPT_DATA_FIELDS["subject_name"])),
    Column("entered", String(10), nullable=False),
    Column("basis", Text, nullable=False),  # JSON [[dept, record_id], …]
    Column("ends", Text, nullable=False),  # the condition that ends it
    Column("ended", String(10)),  # NULL: still on the list
    Column("public", Boolean, nullable=False),
    Index("ix_list_entries_list", "list_id", "ended", "entered"),
)

# credit checks (信用审查) agencies ran: the signed document each got, kept so it can be fetched again
credit_checks = Table(
    "credit_checks", metadata,
    Column("check_id", String(36), primary_key=True),
    Column("time", TIME, nullable=False),
    Column("actor", String(80), nullable=False),
    Column("role", String(48), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("checked", Integer, nullable=False),  # valid credit codes checked
    Column("document", LargeBinary, nullable=False),  # the signed JSON document, exactly as served
    Index("ix_credit_checks_actor", "actor", "time"),
)

# the public portal's enterprise index (node/hub/search.py keeps it from accepted registrations)
enterprises = Table(
    "enterprises", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),  # the text index's row id
    Column("code", String(18), nullable=False, unique=True),  # the credit code, or the registration number without one
    Column("uscc", String(18)),
    Column("reg_no", String(15), index=True),
    Column("name", String(KEPT_DATA_FIELDS["subject_name"]), nullable=False),
    Column("region", String(6)),
    Column("status", String(16)),
    Column("enterprise_type", Text),
    Column("legal_rep", Text),
    Column("registered_capital", Text),
    Column("currency", Text),
    Column("established_date", String(10)),
    Column("approval_date", String(10)),
    Column("address", Text),
    Column("business_scope", Text),
    Column("registration_authority", Text),
    Column("dept", String(32), nullable=False),  # the registration record it was taken from
    Column("record_id", String(RECORD_ID_MAX), nullable=False),
    Column("updated", TIME, nullable=False),
    Index("ix_enterprises_record", "dept", "record_id"),
    Index("ix_enterprises_region", "region", "id"),
)

# every two-character piece of each enterprise name: trigram indexes cannot answer a two-character query
enterprise_bigrams = Table(
    "enterprise_bigrams", metadata,
    Column("gram", String(2), primary_key=True),
    Column("enterprise_id", ID, primary_key=True),
)

# the store's own substring index on names: SQLite FTS5 (trigram tokenizer) as an external-content table
# kept by triggers; PostgreSQL pg_trgm (a trusted extension: the database owner may create it)
for _ddl in (
    "CREATE VIRTUAL TABLE enterprises_fts USING fts5(name, content='enterprises', content_rowid='id', "
    "tokenize='trigram')",
    "CREATE TRIGGER enterprises_fts_insert AFTER INSERT ON enterprises BEGIN "
    "INSERT INTO enterprises_fts(rowid, name) VALUES (new.id, new.name); END",
    "CREATE TRIGGER enterprises_fts_delete AFTER DELETE ON enterprises BEGIN "
    "INSERT INTO enterprises_fts(enterprises_fts, rowid, name) VALUES ('delete', old.id, old.name); END",
    "CREATE TRIGGER enterprises_fts_update AFTER UPDATE OF name ON enterprises BEGIN "
    "INSERT INTO enterprises_fts(enterprises_fts, rowid, name) VALUES ('delete', old.id, old.name); "
    "INSERT INTO enterprises_fts(rowid, name) VALUES (new.id, new.name); END",
):
    event.listen(enterprises, "after_create", DDL(_ddl).execute_if(dialect="sqlite"))
for _ddl in ("CREATE EXTENSION IF NOT EXISTS pg_trgm",
             "CREATE INDEX ix_enterprises_name_trgm ON enterprises USING gin (name gin_trgm_ops)"):
    event.listen(enterprises, "after_create", DDL(_ddl).execute_if(dialect="postgresql"))

MAX_QUARANTINE_HEADER = 64 * 1024


class WriteTurn:
    """Whose turn it is to write, among this process's threads: ingest first, derived views after.

    SQLite lets one writer in at a time and makes the others poll (its busy handler sleeps up to 100 ms a try),
    so a projector taking chunk after chunk could keep a batch's commit waiting for seconds. Here a batch
    waiting for its turn gets it as soon as the current transaction ends, and background work starts a
    transaction only while no batch holds or waits for the turn. Other processes still meet SQLite's lock.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._waiting = 0  # ingest threads waiting for the turn

    @contextlib.contextmanager
    def first(self) -> Iterator[None]:
        """Ingest's turn: the next one free."""
        with self._cond:
            self._waiting += 1
            try:
                while self._held:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._held = True
        try:
            yield
        finally:
            self._release()

    @contextlib.contextmanager
    def after(self) -> Iterator[None]:
        """Background work's turn: once no ingest holds or waits for it."""
        with self._cond:
            while self._held or self._waiting:
                self._cond.wait()
            self._held = True
        try:
            yield
        finally:
            self._release()

    @property
    def waiting(self) -> int:
        """Ingest threads waiting for the turn now."""
        return self._waiting

    def _release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()


class Store:
    """Owns the database engines. Writes go through `writer` (SQLite: BEGIN IMMEDIATE), reads through `reader`.

    `turn` orders this process's writers: ingest takes `turn.first()`, the projector `turn.after()`.
    """

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL"):
        self.url = make_url(url)
        self.turn = WriteTurn()
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            self.writer = self._sqlite_engine(immediate=True, synchronous=sqlite_synchronous)
            self.reader = self._sqlite_engine(immediate=False, synchronous=sqlite_synchronous)
        else:
            # no server-side prepared statements: after five runs psycopg prepares a statement and PostgreSQL may
            # keep one generic plan for it, made while a table was nearly empty (a sequential scan) and used
            # as it grows — the credit projection's lookups by key grew from 0.4 to 7 s per chunk within
            # 40,000 rows. Planned with its parameters every time, each statement keeps its index.
            self.writer = self.reader = create_engine(self.url, pool_pre_ping=True,
                                                      connect_args={"prepare_threshold": None})

    def _sqlite_engine(self, *, immediate: bool, synchronous: str) -> Engine:
        engine = create_engine(self.url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            # a writer takes the lock at BEGIN, so two writers never deadlock upgrading a read lock
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def migrate(self) -> int:
        """Create or upgrade the schema to SCHEMA_VERSION; returns the version found before."""
        with self.writer.begin() as conn:
            if self.writer.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(804219)"))  # one migrating hub at a time
            metadata.create_all(conn, tables=[schema_version])
            found = conn.execute(select(schema_version.c.version)).scalar()
            if found is None:
                metadata.create_all(conn)
                conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
                return 0
            if found > SCHEMA_VERSION:
                raise RuntimeError(f"the store has schema version {found}, newer than this hub ({SCHEMA_VERSION}); "
                                   "upgrade Credit Exchange")
            for version in range(found + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version](conn)
                conn.execute(schema_version.update().values(version=version))
            # a table (or index of a new table) added since the store was created is simply created;
            # only a change to an existing table needs a numbered migration
            metadata.create_all(conn)
            return found

    def dispose(self) -> None:
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()


def _add_columns(table: Table, *names: str) -> Any:
    """A migration step adding columns (as declared in `metadata`) to an existing table."""
    def step(conn: Connection) -> None:
        for name in names:
            column = table.c[name]
            conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {name} "
                              f"{column.type.compile(dialect=conn.dialect)}"))
    return step


def _add_index(table: Table, name: str) -> Any:
    """A migration step creating an index (as declared in `metadata`) on an existing table."""
    def step(conn: Connection) -> None:
        next(index for index in table.indexes if index.name == name).create(conn)
    return step


def _steps(*steps: Any) -> Any:
    def step(conn: Connection) -> None:
        for one in steps:
            one(conn)
    return step


# version -> upgrade step from the version before (changes to existing tables: new columns, new indexes on
# old tables); SCHEMA_VERSION 1 is created whole, and new tables are created by `migrate` without a step
MIGRATIONS: dict[int, Any] = {
    2: _add_columns(heartbeats, "rejections", "alerts"),
    3: _steps(_add_columns(quarantine, "detail_zh", "body_hash", "refusal"),
              _add_index(quarantine, "ix_quarantine_body_hash")),
}


def insert_many(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT many rows (dicts with the same keys) straight through the driver's executemany."""
    if rows:
        columns = list(rows[0])
        values = operator.itemgetter(*columns)  # a tuple per row, at C speed (one column: a bare value)
        insert_rows(conn, table, columns, [values(row) for row in rows] if len(columns) > 1
                    else [(values(row),) for row in rows])


def insert_rows(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    """INSERT many rows, tuples in `columns` order, straight through the driver's executemany.

    Per batch the hub inserts thousands of rows whose values are already plain str/int/bytes;
    SQLAlchemy's per-row parameter processing was a third of the hub's time per record, and building
    a dict per row only to read it back into a tuple another tenth.
    """
    if not rows:
        return
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "
           f"VALUES ({', '.join([marker] * len(columns))})")
    conn.exec_driver_sql(sql, list(rows))


def copy_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Many rows in one go: PostgreSQL's COPY (one round trip instead of one per row), else `insert_many`."""
    if not rows or conn.dialect.name != "postgresql":
        insert_many(conn, table, rows)
        return
    columns = list(rows[0])
    with conn.connection.dbapi_connection.cursor() as cursor:
        with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])


def chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def rows(conn: Connection, statement: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(statement)]


def in_chunks(conn: Connection, make: Any, keys: Iterable[Any]) -> list[Any]:
    """Run `make(chunk)` for chunks of keys (bounded IN lists) and gather the rows."""
    keys = list(keys)
    out: list[Any] = []
    for chunk in chunks(keys):
        out.extend(conn.execute(make(chunk)).all())
    return out
