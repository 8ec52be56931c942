"""Operator chores on the hub's store: online backups, and moving from SQLite to PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select

from ..config import UsageError
from .store import Store, metadata, schema_version


class MaintenanceError(UsageError):
    """A backup or copy the operator asked for that cannot be done as asked."""

COPY_CHUNK = 5000


def backup_sqlite(store: Store, destination: Path) -> Path:
    """A consistent copy of a running SQLite store (SQLite's online backup API; writers keep going)."""
    if not store.is_sqlite:
        raise MaintenanceError("backup works on the SQLite store; back PostgreSQL up with pg_dump (docs/hub.md)")
    if destination.exists():
        raise MaintenanceError(f"{destination} already exists; a backup never overwrites a file 文件已存在")
    source = sqlite3.connect(store.url.database)
    target = sqlite3.connect(destination)
    try:
        with target:
            source.backup(target)
    finally:
        target.close()
        source.close()
    return destination


def copy_store(source: Store, target: Store, progress: Callable[[str, int, int], None] = lambda *_: None) -> dict[str, int]:
    """Copy every table of one store into another, empty one (e.g. SQLite to PostgreSQL), keeping ids.

    The hub must be stopped while this runs. The target's schema is created by its own migration,
    so both sides have the same schema version before rows move.
    """
    source.migrate()
    target.migrate()
    with target.reader.connect() as conn:
        if conn.execute(select(func.count()).select_from(metadata.tables["departments"])).scalar():
            raise MaintenanceError("the target store is not empty; copy into a new database 目标库非空")
    copied: dict[str, int] = {}
    with source.reader.connect() as src, target.writer.begin() as dst:
        for table in metadata.sorted_tables:
            if table is schema_version:
                continue
            total = src.execute(select(func.count()).select_from(table)).scalar() or 0
            done = 0
            order = list(table.primary_key.columns) or list(table.columns)
            result = src.execution_options(stream_results=True, yield_per=COPY_CHUNK).execute(
                select(table).order_by(*order))
            for part in result.mappings().partitions(COPY_CHUNK):
                dst.execute(table.insert(), [dict(row) for row in part])
                done += len(part)
                progress(table.name, done, total)
            copied[table.name] = done
        if target.writer.dialect.name == "postgresql":
            for table in metadata.sorted_tables:  # identity columns continue after the copied ids
                if "id" in table.c and table.c.id.autoincrement is True:
                    dst.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)")
    return copied
