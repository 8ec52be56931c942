"""The figures behind the alert rules: what nodes report in signed heartbeats, key expiry, the consumer's state."""

from __future__ import annotations

import time
import urllib.request

import pytest

from cx.hub import registry
from cx.hub.figures import DeliveryFigures
from cx.hub.ingest import Inbound, Ingestor
from cx.hub.store import Store
from cx.protocol.envelope import parse_time
from cx.protocol.heartbeat import Heartbeat
from cx.protocol.keys import SigningKey
from cx.transport import HEARTBEAT, Topology


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    s.migrate()
    yield s
    s.dispose()


def samples(figures: DeliveryFigures) -> dict[str, dict[tuple, float]]:
    return {family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
            for family in figures.collect()}


def test_heartbeats_and_keys_become_figures(store):
    topology = Topology(vhost="unused", user_prefix="cx-")
    ingestor = Ingestor(store, SigningKey.generate(), topology)
    amr, court = SigningKey.generate(), SigningKey.generate()
    registry.add_department(store, "amr", "市场监管局", "410300", amr.public, valid_to="2027-01-31T00:00:00.000Z")
    registry.add_department(store, "court", "中级人民法院", "410300", court.public)  # no end: not listed
    old = SigningKey.generate()
    registry.add_key(store, "court", old.public, valid_to="2026-01-01T00:00:00.000Z")  # already expired: not listed

    def beat(dept: str, key: SigningKey, node: str, **fields) -> None:
        body = Heartbeat.sign(key, dept=dept, node=node, version="test", outbox_depth=0, oldest_pending_seconds=None,
                              last_error=None, **fields)
        outcome = ingestor.handle(Inbound(body, f"{dept}.heartbeat", topology.dept_user(dept), type=HEARTBEAT))
        assert outcome.result == "heartbeat", outcome

    beat("amr", amr, "amr-1", inventory={"administrative_penalty": 600},
         rejections={"administrative_penalty": {"format:uscc": 20, "required": 5}}, alerts={"batch_refused": 2})
    beat("amr", amr, "amr-2", inventory={"administrative_penalty": 400},
         rejections={"administrative_penalty": {"required": 3}})
    beat("court", court, "court-1", inventory={"judicial": 50}, alerts={"inconsistent_checkpoint": 1})

    figures = DeliveryFigures(store)
    assert all(not f.samples for f in figures.collect())  # nothing read yet: names only
    figures.refresh()
    found = samples(figures)
    assert found["cx_node_alerts"] == {
        (("dept", "amr"), ("kind", "batch_refused"), ("node", "amr-1")): 2,
        (("dept", "court"), ("kind", "inconsistent_checkpoint"), ("node", "court-1")): 1}
    # summed over the department's nodes: 28 of 1,000 source rows refused at the department
    assert found["cx_department_rejected_rows"] == {(("dept", "amr"), ("type", "administrative_penalty")): 28}
    assert found["cx_department_source_rows"] == {(("dept", "amr"), ("type", "administrative_penalty")): 1000,
                                                  (("dept", "court"), ("type", "judicial")): 50}
    assert found["cx_key_expiry_timestamp_seconds"] == {
        (("dept", "amr"), ("key_id", amr.key_id)): parse_time("2027-01-31T00:00:00.000Z").timestamp()}


def test_a_running_hub_exports_its_consumer_state_and_the_figures(hub_factory):
    hub = hub_factory(["amr"])
    hub.start()

    def metrics() -> str:
        with urllib.request.urlopen(f"{hub.api}/metrics", timeout=10) as resp:
            return resp.read().decode()

    deadline = time.time() + 30
    while "cx_ingest_consumer_up 1.0" not in (text := metrics()) and time.time() < deadline:
        time.sleep(0.5)
    assert "cx_ingest_consumer_up 1.0" in text and "cx_ingest_in_progress 0.0" in text
    for name in ("cx_node_alerts", "cx_department_rejected_rows", "cx_key_expiry_timestamp_seconds"):
        assert f"# TYPE {name} gauge" in text, name
