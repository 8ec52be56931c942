"""Prometheus figures read from the store in the background, so a scrape never waits on a query.

A `StoreFigures` reads what it needs every `refresh_seconds` in a worker thread and keeps the result;
`collect` only turns the last result into metric families. `DeliveryFigures` carries what the nodes
report in their signed heartbeats (alerts, rows refused at the department, the source inventory) and
when each department key expires, for the alert rules in ops/prometheus/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import select

from ..protocol.envelope import parse_time, utc_now
from .registry import KeyInfo
from .store import Store, dept_keys, heartbeats


class StoreFigures:
    """A collector whose figures come from a periodic read of the store."""

    def __init__(self, store: Store | None, refresh_seconds: float = 30.0):
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.found: dict[str, Any] = {}

    def read(self) -> dict[str, Any]:
        """Read the figures from the store (runs in a worker thread)."""
        raise NotImplementedError

    def families(self, found: dict[str, Any]) -> list[GaugeMetricFamily]:
        """The metric families for what `read` found (empty families when nothing was read yet)."""
        raise NotImplementedError

    def refresh(self) -> None:
        self.found = self.read()

    async def run(self, stop: asyncio.Event, first_delay: float = 3.0) -> None:
        """Refresh shortly after start (once the projector has caught up), then every `refresh_seconds`."""
        delay = first_delay
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            if stop.is_set():
                return
            delay = self.refresh_seconds
            with contextlib.suppress(Exception):  # figures are best effort; the next round tries again
                await asyncio.to_thread(self.refresh)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self.families(self.found)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return self.families({})  # the names, without samples


class DeliveryFigures(StoreFigures):
    """What the nodes say about themselves (latest signed heartbeat per node) and when keys expire."""

    def read(self) -> dict[str, Any]:
        assert self.store is not None
        with self.store.reader.connect() as conn:
            beats = conn.execute(select(heartbeats.c.dept, heartbeats.c.node, heartbeats.c.inventory,
                                        heartbeats.c.rejections, heartbeats.c.alerts)).all()
            keys = conn.execute(select(dept_keys.c.key_id, dept_keys.c.dept, dept_keys.c.valid_from,
                                       dept_keys.c.valid_to, dept_keys.c.revoked_at, dept_keys.c.added)).all()
        alerts: dict[tuple[str, str, str], int] = {}
        refused: dict[tuple[str, str], int] = {}
        source: dict[tuple[str, str], int] = {}
        for dept, node, inventory, rejections, node_alerts in beats:
            for kind, n in json.loads(node_alerts or "{}").items():
                alerts[(dept, node, kind)] = n
            for rtype, rules in json.loads(rejections or "{}").items():
                refused[(dept, rtype)] = refused.get((dept, rtype), 0) + sum(rules.values())
            for rtype, n in json.loads(inventory or "{}").items():
                source[(dept, rtype)] = source.get((dept, rtype), 0) + n
        now = utc_now()
        expiry = {(info.dept, info.key_id): parse_time(info.valid_to).timestamp()
                  for info in (KeyInfo(*k) for k in keys) if info.valid_to and info.state(now) == "active"}
        return {"alerts": alerts, "refused": refused, "source": source, "expiry": expiry}

    def families(self, found: dict[str, Any]) -> list[GaugeMetricFamily]:
        alerts = GaugeMetricFamily("cx_node_alerts", "Open alerts a node reported in its latest heartbeat (invalid "
                                   "receipts, inconsistent checkpoints, refused batches …), by kind",
                                   labels=["dept", "node", "kind"])
        refused = GaugeMetricFamily("cx_department_rejected_rows", "Rows refused at the department (local "
                                    "validation) and not yet resolved, from the nodes' heartbeats",
                                    labels=["dept", "type"])
        source = GaugeMetricFamily("cx_department_source_rows", "Rows the department's sources hold (the nodes' "
                                   "signed inventory)", labels=["dept", "type"])
        expiry = GaugeMetricFamily("cx_key_expiry_timestamp_seconds", "When an active department key stops being "
                                   "valid (keys without an end are not listed), Unix time", labels=["dept", "key_id"])
        for family, name in ((alerts, "alerts"), (refused, "refused"), (source, "source"), (expiry, "expiry")):
            for labels, value in sorted(found.get(name, {}).items()):
                family.add_metric(list(labels), value)
        return [alerts, refused, source, expiry]
