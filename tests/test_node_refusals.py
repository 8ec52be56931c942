"""The node acts on the hub's signed refusals: it seals the records again when it can fix the cause itself,
and otherwise keeps them visibly refused — never resending the same bytes for ever, never dropping them."""

from __future__ import annotations

import json
import signal
import sqlite3
from datetime import datetime, timedelta, timezone

import aio_pika
import sqlalchemy as sa

from cx import transport
from cx.hub import registry
from cx.hub.store import heartbeats, record_versions
from cx.protocol.envelope import format_time
from cx.protocol.keys import SigningKey, generate_key_files
from cx.protocol.receipts import Refusal
from support import Hub, healthz, hub_records, make_node, run_sync
from test_hub import quarantined
from test_node import PENALTY_STREAM, fill, outbox_rows, penalty_row, sent_batches, sources, wait_until

ROWS = 30


def node_for(hub: Hub, tmp_path, **delivery: str):
    url = f"sqlite:///{tmp_path / 'source.db'}"
    fill(url, [penalty_row(i) for i in range(1, ROWS + 1)]).dispose()
    extra = "\n".join(f"{k} = {v}" for k, v in delivery.items())
    return make_node(hub, "amr", tmp_path / "node", sources(url) +
                     PENALTY_STREAM.format(mode='cursor = "updated_at"', dept="amr"), delivery=extra)


def new_node_key(node) -> SigningKey:
    """Dept IT installs a new key on the node (the hub operator enrols its public half)."""
    for suffix in (".key", ".pub"):
        (node.dir / "keys" / f"amr{suffix}").unlink(missing_ok=True)
    return generate_key_files(node.dir / "keys", "amr")


async def purge(hub: Hub, queue: str) -> None:
    async with await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:5672/{hub.topology.vhost}") as conn:
        channel = await conn.channel()
        await (await channel.declare_queue(queue, passive=True)).purge()


def test_a_revoked_key_while_batches_wait_the_records_arrive_under_the_new_key_once(hub_factory, tmp_path):
    hub = hub_factory(["amr"])  # not running yet: the node's batches wait in the broker
    node = node_for(hub, tmp_path, batch_max_records="10")
    old_key = hub.depts["amr"].key
    waited = node.once(timeout=6)
    assert waited.returncode == 1 and "NOT DELIVERED" in waited.stderr
    sealed = outbox_rows(node, "SELECT batch_id, created FROM batches ORDER BY seq")
    assert len(sealed) == 3

    # the key leaked: the operator enrols a new one and revokes the old from before those batches were sealed
    new_key = new_node_key(node)
    store = hub.store()
    registry.add_key(store, "amr", new_key.public)
    first_sealed = min(created for _, created in sealed)
    revoked_at = format_time(datetime.fromisoformat(first_sealed[:-1]).replace(tzinfo=timezone.utc)
                             - timedelta(minutes=1))
    registry.revoke_key(store, old_key.key_id, revoked_at)
    store.dispose()
    hub.start()
    # the hub quarantines the waiting batches as key_revoked and refuses them to amr
    wait_until(lambda: len(quarantined(hub)) >= 3, 30, "the old batches to be refused")
    assert {q["reason"] for q in quarantined(hub) if q["batch_id"]} == {"key_revoked"}

    done = node.once(timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    held = hub_records(hub, "amr")
    assert set(held) == {f"amr-penalty-{i}" for i in range(1, ROWS + 1)}
    assert all(r["versions"] == 1 for r in held.values())  # once
    store = hub.store()
    with store.reader.connect() as conn:
        keys = set(conn.execute(sa.select(record_versions.c.key_id)).scalars())
    store.dispose()
    assert keys == {new_key.key_id}  # under the new key
    states = dict(outbox_rows(node, "SELECT state, COUNT(*) FROM batches GROUP BY state"))
    assert states == {"resealed": 3, "receipted": 3}, states
    status = node.status()
    assert status["outbox"]["delivered"] == ROWS and status["outbox"]["batches_refused"] == 0
    assert status["refused"] == [] and status["outbox"]["rejections_open"] == 0
    # the node never kept sending the refused bytes: each old batch reached the hub at most twice
    assert len([q for q in quarantined(hub) if q["batch_id"]]) <= 6


def test_a_refusal_the_node_cannot_fix_is_visible_everywhere_until_retried(hub_factory, tmp_path):
    hub = hub_factory(["amr"])  # not running yet
    node = node_for(hub, tmp_path)
    assert node.once(timeout=5).returncode == 1  # sealed and published, no receipt
    run_sync(purge(hub, hub.topology.ingest_queue))
    # the outbox's copy of the batch is damaged (a disk fault): the hub can never accept these bytes
    db = sqlite3.connect(node.dir / "outbox.db")
    with db:
        [(batch_id, body)] = db.execute("SELECT batch_id, body FROM batch_bodies").fetchall()
        db.execute("UPDATE batch_bodies SET body = ? WHERE batch_id = ?",
                   (body.replace(b"amr-penalty-7", b"amr-penalty-X", 1), batch_id))
    db.close()
    hub.start()
    node.start()  # resends after its receipt timeout (10 s); the hub refuses: merkle_root_mismatch
    try:
        wait_until(lambda: node.status()["outbox"].get("refused", 0) == ROWS, 60, "the refusal")
        code, health = healthz(node)
        assert code == 503 and health["status"] == "degraded"
        assert any(p["kind"] == "batch_refused" for p in health["problems"])
        assert [b["batch_id"] for b in health["refused"]] == [batch_id]
        assert health["refused"][0]["reason"].startswith("merkle_root_mismatch")

        def alerts() -> dict:
            store = hub.store()
            with store.reader.connect() as conn:
                row = conn.execute(sa.select(heartbeats.c.alerts).where(heartbeats.c.dept == "amr")).scalar()
            store.dispose()
            return json.loads(row or "{}")
        wait_until(lambda: alerts().get("batch_refused", 0) >= 1, 30, "a heartbeat saying so")
    finally:
        node.kill(signal.SIGTERM)

    once = node.once(timeout=30)
    assert once.returncode == 1
    assert "REFUSED" in once.stderr and batch_id in once.stderr and "merkle_root_mismatch" in once.stderr
    text = node.cx("status").stdout
    assert "REFUSED" in text and batch_id in text and "cx node retry" in text
    status = node.status()
    assert status["outbox"]["refused"] == ROWS and status["outbox"]["batches_unreceipted"] == 0
    assert any(a["kind"] == "batch_refused" for a in status["alerts"])
    rejections = json.loads(node.cx("rejections", "--format", "json").stdout)
    assert len(rejections) == ROWS
    assert {(r["origin"], r["errors"][0]["rule"]) for r in rejections} == {("hub", "merkle_root_mismatch")}
    assert all("refused" in r["errors"][0]["message_en"] for r in rejections)
    assert "merkle_root_mismatch" in node.cx("rejections").stdout
    assert hub_records(hub, "amr") == {}  # nothing was stored, nothing was dropped: the records wait

    retried = node.cx("retry")
    assert retried.returncode == 0 and f"{ROWS} record(s) of 1 refused batch" in retried.stdout
    done = node.once(timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    held = hub_records(hub, "amr")
    assert len(held) == ROWS and all(r["versions"] == 1 for r in held.values())
    status = node.status()
    assert status["outbox"]["delivered"] == ROWS and status["refused"] == []
    assert status["outbox"]["rejections_open"] == 0
    assert node.cx("retry").stdout.startswith("nothing to retry")


def test_refusals_that_do_not_fit_the_batch_are_alerts_not_actions(hub_factory, tmp_path):
    hub = hub_factory(["amr"])  # never started: only what the test publishes reaches the node
    node = node_for(hub, tmp_path)
    node.start()
    try:
        wait_until(lambda: sent_batches(node) == 1, 30, "a batch to be sent")
        [(batch_id, header_hash)] = outbox_rows(node, "SELECT batch_id, header_hash FROM batches")

        def refusal(key: SigningKey, **overrides) -> bytes:
            fields = dict(dept="amr", batch_id=batch_id, header_hash=header_hash, body_hash="ab" * 32,
                          reason="merkle_root_mismatch", detail_zh="不符", detail_en="mismatch")
            return Refusal.issue(key, **{**fields, **overrides}).to_bytes()

        forged = refusal(SigningKey.generate())  # not the hub's key
        other_bytes = refusal(hub.key)  # the hub's key, but for other bytes under this batch id
        run_sync(_publish_refusals(hub, [forged, other_bytes]))
        wait_until(lambda: node.status()["outbox"]["alerts"] >= 2, 20, "two alerts")
        kinds = sorted(a["kind"] for a in node.status()["alerts"])
        assert kinds == ["refusal_invalid", "refusal_mismatch"]
        states = outbox_rows(node, "SELECT state FROM batches")
        assert states == [("sent",)]  # the batch was not refused because of either
    finally:
        node.kill(signal.SIGTERM)


async def _publish_refusals(hub: Hub, bodies: list[bytes]) -> None:
    conn = await transport.connect(f"amqp://guest:guest@127.0.0.1:5672/{hub.topology.vhost}")
    try:
        channel = await transport.confirmed_channel(conn)
        exchange = await channel.get_exchange(hub.topology.receipts_exchange, ensure=False)
        for body in bodies:
            await transport.publish(exchange, "amr", body, message_type=transport.REFUSAL, message_id="forged")
    finally:
        await conn.close()




def test_an_outbox_from_before_refusals_gains_their_columns(tmp_path):
    from cx.node.outbox import SCHEMA, Outbox

    path = tmp_path / "outbox.db"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA.replace(",\n    refusal BLOB, resealed_as TEXT);", ");"))
    old.execute("INSERT INTO batches(batch_id, seq, body, header_hash, records, created, state) "
                "VALUES ('b', 1, x'00', 'h', 0, 't', 'sent')")
    old.commit()
    old.close()
    outbox = Outbox(path)
    try:
        columns = [row[1] for row in outbox.db.execute("PRAGMA table_info(batches)")]
        assert columns[-2:] == ["refusal", "resealed_as"]
        assert outbox.counts()["batches_unreceipted"] == 1 and outbox.refused_batches() == []
    finally:
        outbox.close()
    Outbox(path).close()  # a second open changes nothing
