"""Shared fixtures: every test gets its own broker vhost, users and database, removed afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cx.hub.store import Store
from support import (AMQP, BrokerRelay, Hub, create_pg_database, delete_broker_state, drop_pg_database, make_hub,
                     run_sync)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_url(store_kind: str, tmp_path: Path) -> Iterator[str]:
    """A new, empty store of each kind (SQLite file, PostgreSQL database), dropped afterwards."""
    if store_kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    db = create_pg_database()
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
    finally:
        drop_pg_database(db)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store of each kind, disposed of afterwards."""
    s = Store(store_url)
    s.migrate()
    yield s
    s.dispose()


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Callable[..., Hub]]:
    """make(depts, store="sqlite"|"postgresql") -> Hub, provisioned in its own vhost; cleaned up after.
    `amqp` is the broker URL the hub and its departments' handover files name (a BrokerRelay's, say)."""
    made: list[Hub] = []
    databases: list[str] = []

    def make(depts: list[str], store: str = "sqlite", name: str = "hub", console: str = "", amqp: str = AMQP) -> Hub:
        url = "sqlite:///hub.db"
        if store == "postgresql":
            db = create_pg_database()
            databases.append(db)
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
        hub = make_hub(tmp_path / name, depts, store_url=url, console=console, amqp=amqp)
        made.append(hub)
        return hub

    yield make
    for hub in made:
        hub.kill()
        run_sync(delete_broker_state(hub.topology))
    for db in databases:
        drop_pg_database(db)


@pytest.fixture
def broker_relay() -> Iterator[BrokerRelay]:
    """A relay to the shared broker for this test alone: its `cut()` is an outage no other test sees."""
    relay = BrokerRelay()
    yield relay
    relay.close()
