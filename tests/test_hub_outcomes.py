"""Every inbound message gets one outcome, through a running hub on the real broker, on SQLite and PostgreSQL.

Each shape that once made the hub loop (unreal timestamps, lone surrogates, U+0000, values longer than a
PostgreSQL column, a missing `v`, a revoked key) ends with its documented outcome, and a valid batch
published right after it is accepted within seconds; a hundred poison messages ahead of a valid batch do
not hold it up with a prefetch of 100; a store outage keeps the message and counts the retries.
"""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import psycopg
from sqlalchemy import func, select

from cx import transport
from cx.hub import registry
from cx.hub.config import HubConfig
from cx.hub.store import records
from cx.protocol import jsonutil
from cx.protocol.envelope import encode_batch, format_time, signature_line
from cx.protocol.heartbeat import Heartbeat
from support import PG_ADMIN, Hub, wait_for
from test_hub import Sender, line, quarantined

VALID_WITHIN = 10.0  # seconds a valid batch may take behind a poison message (it took 39 s and more before)
UNREAL_TIMES = ["2026-02-30T00:00:00.000Z", "2026-13-01T00:00:00.000Z", "2026-01-01T00:00:61.000Z",
                "0000-01-01T00:00:00.000Z"]


def with_header(sender: Sender, lines: list[bytes], **changes) -> bytes:
    """A batch whose header is changed as given (`...` drops a field) and signed as changed: it reaches the
    checks behind the signature only if the header is sound."""
    batch = sender.batch(lines)
    fields = {k: v for k, v in {**json.loads(batch.header_bytes), **changes}.items() if v is not ...}
    header = jsonutil.dumps(fields)
    return encode_batch(header, sender.hub.depts[sender.dept].key.sign(header), lines)


def record_line(record_id: str, escape: str | None = None, **changes) -> bytes:
    """A penalty record line with fields changed; "@@" in a value becomes the raw JSON escape `escape`."""
    obj = json.loads(line(record_id))
    for key, value in changes.items():
        (obj["source"] if key in ("adapter", "locator", "extracted", "entered_by") else obj["data"])[key] = value
    text = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return (text.replace("@@", escape) if escape else text).encode()


def heartbeat(hub: Hub, dept: str, time_: str | None = None, last_error: str = "ok") -> bytes:
    return Heartbeat.sign(hub.depts[dept].key, dept=dept, node="n1", version="1", outbox_depth=0,
                          oldest_pending_seconds=None, last_error=last_error, time=time_)


RECORD_SHAPES = [  # (line changes, escape, the rule the record is rejected with)
    ({"subject_name": "洛阳@@公司"}, "\\ud800", "bad_character"),
    ({"locator": "table @@"}, "\\ud800", "bad_character"),
    ({"uscc": "@@"}, "\\udc00", "bad_character"),  # an invalid value a rejection would quote
    ({"facts": "经查@@"}, "\\ud800", "bad_character"),  # stored before, then HTTP 500 for ever
    ({"facts": "a@@b"}, "\\u0000", "bad_character"),  # PostgreSQL text refuses U+0000
    ({"extracted": "2026-01-01T00:00:00.000000000000000000000000000Z"}, None, "bad_record"),  # over 32 characters
    ({"adapter": "a" * 65}, None, "bad_record"),
    ({"entered_by": "e" * 101}, None, "bad_record"),
    ({"locator": "l" * 501}, None, "bad_record"),
]


async def valid_batch_goes_through(sender: Sender, record_id: str) -> None:
    start = time.monotonic()
    await sender.publish(sender.batch([line(record_id)]).to_bytes())
    [receipt] = await sender.receipts(1, timeout=VALID_WITHIN + 10)
    assert receipt.accepted == [record_id]
    assert time.monotonic() - start < VALID_WITHIN, "a valid batch waited behind a poison message"


async def test_each_reported_shape_gets_its_outcome_and_the_next_batch_goes_through(hub_factory, store_kind):
    hub = hub_factory(["amr", "court"], store=store_kind)
    store = hub.store()
    registry.revoke_key(store, hub.depts["court"].key.key_id,
                        format_time(datetime.now(timezone.utc) - timedelta(minutes=1)))
    store.dispose()
    hub.start()
    expected_quarantine = []
    async with Sender(hub, "amr") as amr, Sender(hub, "court") as court:
        for n, stamp in enumerate(UNREAL_TIMES):  # before the signature is checked: no key needed
            await amr.publish(with_header(amr, [line(f"t-{n}")], created=stamp))
            expected_quarantine.append("bad_header")
            await valid_batch_goes_through(amr, f"after-time-{n}")
        await amr.publish(with_header(amr, [line("no-v")], v=...))
        expected_quarantine.append("bad_header")  # a missing key is bad_header, as the spec says
        await valid_batch_goes_through(amr, "after-no-v")
        for time_ in UNREAL_TIMES[:2]:
            await amr.publish(heartbeat(hub, "amr", time_), routing_key="amr.heartbeat",
                              message_type=transport.HEARTBEAT)
            expected_quarantine.append("bad_header")
        body, sig = heartbeat(hub, "amr", last_error="X").split(b"\n")[:2]
        body = body.replace(b'"last_error":"X"', b'"last_error":"\\ud800"')
        await amr.publish(body + b"\n" + signature_line(hub.depts["amr"].key.sign(body)) + b"\n",
                          routing_key="amr.heartbeat", message_type=transport.HEARTBEAT)
        expected_quarantine.append("bad_character")
        await valid_batch_goes_through(amr, "after-heartbeats")

        for n, (changes, escape, rule) in enumerate(RECORD_SHAPES):
            await amr.publish(amr.batch([record_line(f"bad-{n}", escape, **changes), line(f"ok-{n}")]).to_bytes())
            [receipt] = await amr.receipts(1, timeout=VALID_WITHIN)
            assert receipt.accepted == [f"ok-{n}"], (changes, receipt.rejected)
            assert [e["rule"] for e in receipt.rejected[0].errors] == [rule], changes
            await valid_batch_goes_through(amr, f"after-record-{n}")

        # a revoked key: quarantined, and the department learns why from a signed refusal
        await court.publish(court.batch([line("c-1")]).to_bytes())
        expected_quarantine.append("key_revoked")
        await court.receipts(0, refusals=1, timeout=VALID_WITHIN)
        assert court.refused[0].reason == "key_revoked" and court.refused[0].dept == "court"
        await valid_batch_goes_through(amr, "after-revoked")
        await wait_for(lambda: len(quarantined(hub)) >= len(expected_quarantine))
        # the header shapes were refused to amr too, each for exactly the bytes it sent
        await amr.receipts(0, refusals=5, timeout=VALID_WITHIN)
        assert [r.reason for r in amr.refused] == ["bad_header"] * 5
    rows = quarantined(hub)
    assert [q["reason"] for q in rows] == expected_quarantine
    assert all(q["detail"] and q["detail_zh"] and q["body_hash"] for q in rows)
    assert [bool(q["refusal"]) for q in rows] == [True] * 5 + [False] * 3 + [True]  # heartbeats get none
    # nothing with a character no store keeps was stored; the API answers for every stored record
    store = hub.store()
    with store.reader.connect() as conn:
        stored = conn.execute(select(records.c.record_id)).scalars().all()
    store.dispose()
    assert not any(rid.startswith("bad-") for rid in stored) and len(stored) == 2 * len(RECORD_SHAPES) + 7
    for rid in stored:
        request = urllib.request.Request(f"{hub.api}/api/v1/departments/amr/records/{rid}",
                                         headers={"Authorization": f"Bearer {hub.token}"})
        with urllib.request.urlopen(request) as resp:
            assert resp.status == 200


async def test_a_hundred_poison_messages_do_not_hold_up_a_valid_batch(hub_factory, store_kind):
    hub = hub_factory(["amr"], store=store_kind)
    toml = (hub.dir / "hub.toml").read_text().replace("prefetch = 8", "prefetch = 100")
    (hub.dir / "hub.toml").write_text(toml)
    hub.cfg = HubConfig.load(hub.dir / "hub.toml")
    hub.start()
    async with Sender(hub, "amr") as amr:
        poison = []
        for n in range(100):
            kind = n % 4
            if kind == 0:
                poison.append((with_header(amr, [line(f"p-{n}")], created=UNREAL_TIMES[n % 4]), transport.BATCH))
            elif kind == 1:
                poison.append((with_header(amr, [line(f"p-{n}")], v=...), transport.BATCH))
            elif kind == 2:
                poison.append((f"not a batch {n}\n".encode(), transport.BATCH))
            else:
                poison.append((heartbeat(hub, "amr", UNREAL_TIMES[1]), transport.HEARTBEAT))
        for body, kind in poison:
            await amr.publish(body, routing_key="amr.heartbeat" if kind == transport.HEARTBEAT else None,
                              message_type=kind)
        start = time.monotonic()
        await amr.publish(amr.batch([line("behind-the-poison")]).to_bytes())
        [receipt] = await amr.receipts(1, timeout=60)
        waited = time.monotonic() - start
        assert receipt.accepted == ["behind-the-poison"]
        assert waited < 30, f"the valid batch waited {waited:.1f} s behind 100 poison messages"
        await wait_for(lambda: len(quarantined(hub)) == 100, timeout=30)
        await amr.receipts(0, refusals=75, timeout=30)  # every batch-shaped one, none for heartbeats
    reasons = [q["reason"] for q in quarantined(hub)]
    assert reasons.count("bad_header") == 75 and reasons.count("bad_framing") == 25
    assert len(amr.refused) == 75


async def test_a_store_outage_keeps_the_message_and_counts_the_retries(hub_factory):
    """PostgreSQL stops taking connections for a few seconds: the batch is neither lost nor quarantined."""
    hub = hub_factory(["amr"], store="postgresql")
    database = hub.cfg.store_url.rsplit("/", 1)[1]
    hub.start()
    async with Sender(hub, "amr") as amr:
        await amr.publish(amr.batch([line("before")]).to_bytes())
        await amr.receipts(1)
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
            try:
                await amr.publish(amr.batch([line("during")]).to_bytes())
                await wait_for(lambda: _metric(hub, "cx_ingest_errors_total") >= 2, timeout=30)
            finally:
                admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
        [receipt] = await amr.receipts(1, timeout=60)
        assert receipt.accepted == ["during"]
    assert quarantined(hub) == []
    store = hub.store()
    with store.reader.connect() as conn:
        assert conn.execute(select(func.count()).select_from(records)).scalar() == 2
    store.dispose()


def _metric(hub: Hub, name: str) -> float:
    text = urllib.request.urlopen(f"{hub.api}/metrics").read().decode()
    return sum(float(row.rsplit(" ", 1)[1]) for row in text.splitlines() if row.startswith(name))

