"""The hub's store itself: schema creation and upgrades, the ledger's stored nodes, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect, select, text

from cx.hub import ledger
from cx.hub.store import SCHEMA_VERSION, Store, metadata, schema_version
from cx.protocol import merkle
from cx.protocol.merkle import MerkleTree, leaf_hash


def test_a_new_store_has_every_table_at_the_current_version(store_url):
    store = Store(store_url)
    try:
        assert store.migrate() == 0
        with store.reader.connect() as conn:
            assert conn.execute(select(schema_version.c.version)).scalar() == SCHEMA_VERSION
            assert set(metadata.tables) <= set(inspect(conn).get_table_names())
        assert store.migrate() == SCHEMA_VERSION  # a second start changes nothing
    finally:
        store.dispose()


def test_a_version_1_store_is_upgraded_in_place(store_url):
    """A store made by the first release (no heartbeat rejections or alerts, no quarantine refusals) keeps its rows
    and gains the rest."""
    store = Store(store_url)
    try:
        store.migrate()
        with store.writer.begin() as conn:
            for column in ("rejections", "alerts"):
                conn.execute(text(f"ALTER TABLE heartbeats DROP COLUMN {column}"))
            conn.execute(text("DROP INDEX ix_quarantine_body_hash"))
            for column in ("detail_zh", "body_hash", "refusal"):
                conn.execute(text(f"ALTER TABLE quarantine DROP COLUMN {column}"))
            conn.execute(text("INSERT INTO quarantine (received, reason, size) VALUES ('r', 'bad_json', 1)"))
            conn.execute(text("DROP TABLE sequence_events"))  # stands for a table a later version added
            conn.execute(schema_version.update().values(version=1))
            conn.execute(text("INSERT INTO heartbeats (dept, node, time, received, key_id, body, signature) "
                              "VALUES ('amr', 'n1', 't', 'r', 'k', :b, :b)"), {"b": b"x"})
        assert store.migrate() == 1
        with store.reader.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("heartbeats")}
            assert {"rejections", "alerts"} <= columns
            columns = {c["name"] for c in inspect(conn).get_columns("quarantine")}
            assert {"detail_zh", "body_hash", "refusal"} <= columns
            assert "ix_quarantine_body_hash" in {i["name"] for i in inspect(conn).get_indexes("quarantine")}
            assert conn.execute(text("SELECT reason FROM quarantine")).scalars().all() == ["bad_json"]
            assert "sequence_events" in inspect(conn).get_table_names()
            assert conn.execute(text("SELECT node FROM heartbeats")).scalars().all() == ["n1"]
            assert conn.execute(select(schema_version.c.version)).scalar() == SCHEMA_VERSION
    finally:
        store.dispose()


def test_ledger_proofs_read_stored_nodes_through_the_key(store):
    """Appends and proofs over a stored log give the in-memory tree's answers, and every node is read
    through the primary key (a read that scanned the log made each batch cost more as the ledger grew)."""
    leaves = [leaf_hash(str(i).encode()) for i in range(1500)]
    tree = MerkleTree(leaves)
    size = 0
    with store.writer.begin() as conn:
        for cut in (1, 7, 500, 992):  # uneven batches: frontiers of every shape
            size = ledger.append_nodes(conn, "amr", size, leaves[size:size + cut]).size
    with store.reader.connect() as conn:
        assert ledger.root(conn, "amr", size) == tree.root(size)
        for old, new in ((1, 1500), (8, 508), (700, 1500)):
            assert ledger.consistency_proof(conn, "amr", old, new) == tree.consistency_proof(old, new)
        assert ledger.inclusion_proof(conn, "amr", 1234, 1500) == tree.inclusion_proof(1234, 1500)
        wanted = {(0, i) for i in range(0, 1500, 2)} | {(3, 5), (3, 9), (10, 0)}  # more than one chunk
        assert ledger.fetch_nodes(conn, "amr", wanted) == {n: tree.node(n) for n in wanted}
        if store.is_sqlite:
            query = ledger._nodes_query("amr", sorted(merkle.nodes_for_ranges(merkle.consistency_ranges(700, 1500))))
            compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
            plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
            searches = [step for step in plan if "ledger_nodes" in step]
            assert searches and all("dept=? AND level=? AND idx=?" in step for step in searches), plan


def test_postgresql_plans_every_statement_with_its_parameters(store_url):
    """A statement prepared on the server may keep one generic plan made while its table was nearly empty (a
    scan) as the table grows; the projections' key lookups grew with the store until none were prepared."""
    store = Store(store_url)
    try:
        store.migrate()
        with store.reader.connect() as conn:
            for _ in range(10):  # psycopg prepares a statement on the server from its fifth run by default
                conn.execute(select(schema_version.c.version).where(schema_version.c.version > 0)).all()
            if conn.dialect.name == "postgresql":
                assert conn.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar() == 0
    finally:
        store.dispose()
