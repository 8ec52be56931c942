"""The hub end to end with the real broker, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import urllib.request
from datetime import datetime, timedelta, timezone

import aio_pika
from sqlalchemy import delete, func, select

from cx import transport
from cx.hub import registry
from cx.hub.store import batches, dept_keys, departments, quarantine, record_versions, records
from cx.protocol import jsonutil
from cx.protocol.envelope import RecordLine, build_batch, format_time
from cx.protocol.keys import PublicKey
from cx.protocol.merkle import verify_consistency
from cx.protocol.receipts import Receipt, Refusal
from examples import EXAMPLES as VALID
from support import Hub, get_json, wait_for

TODAY_TYPE = "administrative_penalty"


def line(record_id: str, data: dict | None = None, rtype: str = TODAY_TYPE) -> bytes:
    return RecordLine(record_id, rtype, 1, "upsert", data or VALID[rtype],
                      {"adapter": "test", "locator": f"test {record_id}", "extracted": "2026-01-01T00:00:00.000Z"}
                      ).to_bytes()


class Sender:
    """A department's side of the broker, as a test drives it: publish batches, collect receipts."""

    def __init__(self, hub: Hub, dept: str, url: str | None = None):
        self.hub, self.dept = hub, dept
        self.url = url or hub.depts[dept].amqp_url
        self.seq, self.prev = 0, None
        self.refused: list[Refusal] = []  # refusals that arrived on the receipts queue, in order

    async def __aenter__(self) -> "Sender":
        self.conn = await transport.connect(self.url)
        self.channel = await transport.confirmed_channel(self.conn)
        self.exchange = await self.channel.get_exchange(self.hub.topology.records_exchange, ensure=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()

    def batch(self, lines: list[bytes], **overrides):
        self.seq += 1
        b = build_batch(self.hub.depts[self.dept].key, dept=self.dept, node=self.hub.depts[self.dept].node,
                        seq=overrides.pop("seq", self.seq),
                        prev=overrides.pop("prev", self.prev), lines=lines,
                        schemas=overrides.pop("schemas", {TODAY_TYPE: 1}), **overrides)
        self.prev = b.header_hash
        return b

    async def publish(self, body: bytes, routing_key: str | None = None, user_id: str | None = "default",
                      message_type: str = transport.BATCH) -> None:
        user = self.hub.topology.dept_user(self.dept) if user_id == "default" else user_id
        await transport.publish(self.exchange, routing_key or f"{self.dept}.batch", body,
                                message_type=message_type, message_id="m", user_id=user)

    async def receipts(self, n: int, timeout: float = 20, refusals: int = 0) -> list[Receipt]:
        """The next n receipts (verified); refusals arriving meanwhile go to `self.refused`, until it holds
        at least `refusals`."""
        queue = await self.channel.get_queue(self.hub.topology.receipts_queue(self.dept, self.hub.depts[self.dept].node),
                                             ensure=False)
        out: list[Receipt] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(out) < n or len(self.refused) < refusals:
            message = await queue.get(fail=False)
            if message is None:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"got {len(out)} of {n} receipts, {len(self.refused)} of {refusals} refusals")
                await asyncio.sleep(0.05)
                continue
            if message.type == transport.REFUSAL:
                self.refused.append(Refusal.parse(message.body, self.hub.key.public))
            else:
                out.append(Receipt.parse(message.body, self.hub.key.public))
            await message.ack()
        return out


async def admin_sender(hub: Hub, dept: str) -> Sender:
    """guest has every permission in the test vhost: it can publish what a department's user cannot."""
    return await Sender(hub, dept, url=f"amqp://guest:guest@127.0.0.1:5672/{hub.topology.vhost}").__aenter__()


def quarantined(hub: Hub) -> list[dict]:
    store = hub.store()
    with store.reader.connect() as conn:
        found = [dict(r._mapping) for r in conn.execute(select(quarantine).order_by(quarantine.c.id))]
    store.dispose()
    return found


async def test_happy_path_receipts_and_proofs(hub_factory, store_kind, tmp_path):
    hub = hub_factory(["amr", "court"], store=store_kind)
    hub.start()
    async with Sender(hub, "amr") as amr:
        sent = [amr.batch([line(f"p-{b}-{i}") for i in range(50)]) for b in range(3)]
        for b in sent:
            await amr.publish(b.to_bytes())
        receipts = await amr.receipts(3)
    assert [r.batch_id for r in receipts] == [b.header.batch_id for b in sent]
    assert [len(r.accepted) for r in receipts] == [50, 50, 50]
    assert [r.checkpoint.size for r in receipts] == [50, 100, 150]
    assert all(r.header_hash == b.header_hash for r, b in zip(receipts, sent))
    # each receipt proves its checkpoint extends the one before
    for before, after in zip(receipts, receipts[1:]):
        after.consistency.verify(before.checkpoint.root_bytes, after.checkpoint)

    status, bundle = await get_json(f"{hub.api}/api/v1/departments/amr/records/p-1-7/proof", token=hub.token)
    assert status == 200
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    done = subprocess.run([sys.executable, "-m", "cx.cli", "verify", str(path), "--public-key",
                           str(hub.depts["amr"].public_key_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VALID" in done.stdout and "p-1-7" in done.stdout
    # a bundle whose record line was changed fails
    bad = tmp_path / "bad.json"
    bundle["record_line"] = bundle["record_line"].replace("p-1-7", "p-1-8")
    bad.write_text(json.dumps(bundle))
    done = subprocess.run([sys.executable, "-m", "cx.cli", "verify", str(bad), "--public-key",
                           str(hub.depts["amr"].public_key_path)], capture_output=True, text=True)
    assert done.returncode == 1 and "record_mismatch" in done.stdout

    status, record = await get_json(f"{hub.api}/api/v1/departments/amr/records/p-1-7", token=hub.token)
    assert status == 200 and record["status"] == "active" and len(record["versions"]) == 1
    prov = record["versions"][0]["provenance"]
    assert prov["node"] == "amr-1" and prov["batch_id"] == sent[1].header.batch_id
    assert prov["authority"] == VALID[TODAY_TYPE]["authority"] and prov["providing_dept"] == "amr"
    assert prov["source_locator"] == "test p-1-7" and prov["ledger_index"] == 57
    status, cp = await get_json(f"{hub.api}/api/v1/departments/amr/checkpoint")
    assert status == 200 and cp["size"] == 150
    status, batch = await get_json(f"{hub.api}/api/v1/batches/{sent[0].header.batch_id}", token=hub.token)
    assert status == 200 and batch["accepted"] == 50 and batch["receipt"]["batch_id"] == sent[0].header.batch_id
    status, missing = await get_json(f"{hub.api}/api/v1/departments/amr/records/nope", token=hub.token)
    assert status == 404
    status, doc = await get_json(f"{hub.api}/api/v1/openapi.json")
    assert status == 200 and "/api/v1/departments/{dept}/consistency" in doc["paths"]
    metrics_text = urllib.request.urlopen(f"{hub.api}/metrics").read().decode()
    assert 'cx_records_total{dept="amr",result="accepted"} 150.0' in metrics_text
    assert 'cx_ledger_size{dept="amr"} 150.0' in metrics_text
    assert "cx_ingest_stage_seconds_bucket" in metrics_text and 'le="0.0001"' in metrics_text


def tamper_header(body: bytes, **changes) -> bytes:
    header, rest = body.split(b"\n", 1)
    obj = jsonutil.loads(header)
    obj.update(changes)
    return jsonutil.dumps(obj) + b"\n" + rest


async def test_tampering_ends_in_quarantine_with_its_reason(hub_factory, store_kind):
    hub = hub_factory(["amr", "court", "tax"], store=store_kind)
    store = hub.store()
    with store.writer.begin() as conn:  # "tax" has a broker user but the hub no longer knows it
        conn.execute(delete(dept_keys).where(dept_keys.c.dept == "tax"))
        conn.execute(delete(departments).where(departments.c.dept == "tax"))
    registry.revoke_key(store, hub.depts["court"].key.key_id,
                        format_time(datetime.now(timezone.utc) - timedelta(minutes=1)))
    store.dispose()
    hub.start()
    expected = []
    async with Sender(hub, "amr") as amr, Sender(hub, "court") as court, Sender(hub, "tax") as tax:
        guest = await admin_sender(hub, "amr")
        good = amr.batch([line("t-1"), line("t-2")])
        raw = good.to_bytes()
        await amr.publish(tamper_header(raw, count=2, created="2026-01-01T00:00:00.000Z"))
        expected.append("bad_signature")  # a header field changed after signing
        await amr.publish(raw.replace(b"t-2", b"t-3"))
        expected.append("merkle_root_mismatch")  # a record line changed
        sig_at = raw.index(b'{"sig":"') + 10
        await amr.publish(raw[:sig_at] + (b"A" if raw[sig_at:sig_at + 1] != b"A" else b"B") + raw[sig_at + 1:])
        expected.append("bad_signature")  # the signature changed
        await amr.publish(tamper_header(raw, key_id=hub.depts["court"].key.key_id))
        expected.append("unknown_key")  # another department's key id
        await guest.publish(raw, routing_key="court.batch", user_id="guest")
        expected.append("dept_mismatch")  # routed as another department
        await guest.publish(raw, user_id="guest")
        expected.append("user_mismatch")  # right routing key, wrong broker user
        await court.publish(court.batch([line("c-1")]).to_bytes())
        expected.append("key_revoked")
        await tax.publish(tax.batch([line("x-1")]).to_bytes())
        expected.append("unknown_dept")
        await amr.publish(b"not a batch at all\n")
        expected.append("bad_framing")  # not even a header and a signature line
        await guest.__aexit__()
        await wait_for(lambda: len(quarantined(hub)) >= len(expected))
        # the untouched batch still goes through afterwards
        await amr.publish(raw)
        [receipt] = await amr.receipts(1)
        assert receipt.accepted == ["t-1", "t-2"]
    found = quarantined(hub)
    assert [q["reason"] for q in found] == expected
    assert found[0]["dept"] == "amr" and found[0]["header"].startswith(b"{")
    # the broker dead-lettered each one into the quarantine queue
    async with await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:5672/{hub.topology.vhost}") as conn:
        channel = await conn.channel()
        for _ in range(100):
            q = await channel.declare_queue(hub.topology.quarantine_queue, passive=True)
            if q.declaration_result.message_count == len(expected):
                break
            await asyncio.sleep(0.1)
        assert q.declaration_result.message_count == len(expected)
    status, listed = await get_json(f"{hub.api}/api/v1/quarantine", token=hub.token)
    assert status == 200 and len(listed) == len(expected)


async def test_replay_and_mixed_batch(hub_factory, store_kind):
    hub = hub_factory(["amr"], store=store_kind)
    hub.start()
    bad = dict(VALID[TODAY_TYPE], uscc="91110000600037341A", fine_amount=12.5,
               legal_rep_id_no="410302199001011234", extra="x")
    bad.pop("facts")
    async with Sender(hub, "amr") as amr:
        mixed = amr.batch([line("m-1"), line("m-2", bad), b'{"broken', line("m-3")])
        await amr.publish(mixed.to_bytes())
        await amr.publish(mixed.to_bytes())  # the same batch again: same receipt, stored once
        first, again = await amr.receipts(2)
        replay = amr.batch([line("m-9")], seq=1, prev=None)  # another batch claiming sequence 1
        await amr.publish(replay.to_bytes())
        await wait_for(lambda: len(quarantined(hub)) == 1)
    assert first.body == again.body
    assert first.accepted == ["m-1", "m-3"]
    rejected = {r.line: r for r in first.rejected}
    assert set(rejected) == {1, 2}
    errors = {(e["path"], e["rule"]) for e in rejected[1].errors}
    assert {("uscc", "format:uscc"), ("fine_amount", "decimal"), ("facts", "required"),
            ("extra", "additional_properties")} <= errors
    assert all(e["message_zh"] and e["message_en"] for e in rejected[1].errors)
    assert "410302199001011234" not in first.body.decode()  # personal data never echoed back
    assert rejected[2].record_id is None and rejected[2].errors[0]["rule"] == "bad_json"
    assert quarantined(hub)[0]["reason"] == "sequence_replay"
    store = hub.store()
    with store.reader.connect() as conn:
        assert conn.execute(select(func.count()).select_from(batches)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(record_versions)).scalar() == 2
    store.dispose()


async def test_hub_killed_between_commit_and_ack(hub_factory, store_kind):
    hub = hub_factory(["amr"], store=store_kind)
    os.environ["CX_FAULT_INJECT"] = "crash-after-commit"
    try:
        hub.start("hub-crash.log")
    finally:
        del os.environ["CX_FAULT_INJECT"]
    async with Sender(hub, "amr") as amr:
        batch = amr.batch([line(f"k-{i}") for i in range(20)])
        await amr.publish(batch.to_bytes())
        await asyncio.to_thread(hub.process.wait, 20)  # it killed itself after committing
        assert hub.process.returncode == -9
        hub.process = None
        hub.start("hub-restarted.log")
        [receipt] = await amr.receipts(1)
    assert receipt.batch_id == batch.header.batch_id and len(receipt.accepted) == 20
    store = hub.store()
    with store.reader.connect() as conn:
        stored = conn.execute(select(batches.c.receipt)).all()
        assert len(stored) == 1 and bytes(stored[0][0]) == receipt.to_bytes()
        assert conn.execute(select(func.count()).select_from(record_versions)).scalar() == 20
        assert conn.execute(select(func.count()).select_from(records)).scalar() == 20
    store.dispose()


async def test_checkpoints_pairwise_consistent(hub_factory):
    hub = hub_factory(["amr"])
    hub.start()
    rng = random.Random(7)
    async with Sender(hub, "amr") as amr:
        for b in range(25):
            await amr.publish(amr.batch([line(f"c-{b}-{i}") for i in range(rng.randint(1, 40))]).to_bytes())
        receipts = await amr.receipts(25)
    checkpoints = [r.checkpoint for r in receipts]
    hub_key = PublicKey.load(hub.dir / "keys" / "hub.pub")
    for cp in checkpoints:
        cp.verify(hub_key)
    pairs = [(a, b) for a in range(len(checkpoints)) for b in range(a, len(checkpoints))]
    for a, b in rng.sample(pairs, 60):
        old, new = checkpoints[a], checkpoints[b]
        status, doc = await get_json(f"{hub.api}/api/v1/departments/amr/consistency", old=old.size, new=new.size)
        assert status == 200
        verify_consistency(old.size, new.size, old.root_bytes, new.root_bytes, [bytes.fromhex(h) for h in doc["proof"]])
    status, doc = await get_json(f"{hub.api}/api/v1/departments/amr/consistency", old=5, new=10**9)
    assert status == 400


def test_cli_hub_lifecycle(tmp_path):
    """cx hub init, add-dept, keys rotate and revoke, depts — as an operator types them."""
    def cx(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cx.cli", *args], capture_output=True, text=True)

    hubdir, keys = tmp_path / "hub", tmp_path / "keys"
    assert cx("hub", "init", "--dir", str(hubdir)).returncode == 0
    assert (hubdir / "keys" / "hub.key").stat().st_mode & 0o777 == 0o600
    assert cx("hub", "init", "--dir", str(hubdir)).returncode == 2
    cfg = str(hubdir / "hub.toml")
    assert cx("keys", "init", "--dept", "amr", "--dir", str(keys)).returncode == 0
    done = cx("hub", "add-dept", "amr", "--name", "市场监管局", "--region", "410300", "--public-key",
              str(keys / "amr.pub"), "--config", cfg)
    assert done.returncode == 0, done.stderr
    again = cx("hub", "add-dept", "amr", "--name", "x", "--region", "410300", "--public-key",
               str(keys / "amr.pub"), "--config", cfg)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert cx("hub", "add-dept", "bad.id", "--name", "x", "--region", "410300", "--public-key",
              str(keys / "amr.pub"), "--config", cfg).returncode == 2
    (keys / "new").mkdir()
    assert cx("keys", "init", "--dept", "amr", "--dir", str(keys / "new")).returncode == 0
    rotated = cx("hub", "keys", "rotate", "--dept", "amr", "--public-key", str(keys / "new" / "amr.pub"),
                 "--config", cfg)
    assert rotated.returncode == 0 and "stays valid until" in rotated.stdout
    listing = json.loads(cx("hub", "depts", "--format", "json", "--config", cfg).stdout)
    states = [k["state"] for k in listing[0]["keys"]]
    assert states == ["active", "active"]  # both valid during the overlap
    old_id = listing[0]["keys"][0]["key_id"]
    assert cx("hub", "keys", "revoke", old_id, "--config", cfg).returncode == 0
    listing = json.loads(cx("hub", "depts", "--format", "json", "--config", cfg).stdout)
    assert [k["state"] for k in listing[0]["keys"]] == ["revoked", "active"]
    assert cx("hub", "keys", "revoke", "0" * 32, "--config", cfg).returncode == 2

    # nodes: add-dept enrolled amr-1 (what `cx node init` calls a department's first node); more with add-node
    assert listing[0]["nodes"] == ["amr-1"]
    added = cx("hub", "add-node", "amr", "amr-fep-02", "--config", cfg)
    assert added.returncode == 0 and "enrolled" in added.stdout and "cx hub provision" in added.stdout
    assert "already enrolled" in cx("hub", "add-node", "amr", "amr-fep-02", "--config", cfg).stdout
    assert cx("hub", "add-node", "amr", "bad node", "--config", cfg).returncode == 2
    assert cx("hub", "add-node", "tax", "tax-1", "--config", cfg).returncode == 2  # no such department
    listing = json.loads(cx("hub", "depts", "--format", "json", "--config", cfg).stdout)
    assert listing[0]["nodes"] == ["amr-1", "amr-fep-02"]
    assert "amr-fep-02" in cx("hub", "depts", "--config", cfg).stdout
    unit = cx("hub", "install-service", "--config", cfg, "--print")
    assert unit.returncode == 0 and f"hub run --config {(hubdir / 'hub.toml').resolve()}" in unit.stdout


async def test_backup_and_move_from_sqlite_to_postgresql(hub_factory, tmp_path):
    from support import create_pg_database, drop_pg_database

    hub = hub_factory(["amr"])
    hub.start()
    async with Sender(hub, "amr") as amr:
        for b in range(3):
            await amr.publish(amr.batch([line(f"mv-{b}-{i}") for i in range(30)]).to_bytes())
        before = await amr.receipts(3)

        def cx(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "cx.cli", "hub", *args, "--config",
                                   str(hub.dir / "hub.toml")], capture_output=True, text=True)

        backup = tmp_path / "backup.db"
        done = cx("backup", "--to", str(backup))  # while the hub runs
        assert done.returncode == 0, done.stderr
        assert cx("backup", "--to", str(backup)).returncode == 2  # never overwrites
        from cx.hub.store import Store
        copy = Store(f"sqlite:///{backup}")
        with copy.reader.connect() as conn:
            assert conn.execute(select(func.count()).select_from(record_versions)).scalar() == 90
        copy.dispose()

        hub.stop()
        db = create_pg_database()
        try:
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
            done = cx("copy-store", "--to", url)
            assert done.returncode == 0, done.stderr
            assert cx("copy-store", "--to", url).returncode == 2  # the target is no longer empty
            config = (hub.dir / "hub.toml").read_text().replace('url = "sqlite:///hub.db"', f'url = "{url}"')
            (hub.dir / "hub.toml").write_text(config)
            hub.cfg = type(hub.cfg).load(hub.dir / "hub.toml")
            hub.start("hub-pg.log")
            await amr.publish(amr.batch([line(f"mv-3-{i}") for i in range(30)]).to_bytes())
            [after] = await amr.receipts(1)
            # the ledger carried over: the new checkpoint extends the last one from SQLite
            after.consistency.verify(before[-1].checkpoint.root_bytes, after.checkpoint)
            assert after.checkpoint.size == 120
            status, bundle = await get_json(f"{hub.api}/api/v1/departments/amr/records/mv-0-3/proof", token=hub.token)
            assert status == 200
            from cx.protocol.bundle import ProofBundle
            ProofBundle.from_json(bundle).verify(hub.depts["amr"].key.public)
        finally:
            hub.stop()
            drop_pg_database(db)


async def test_at_most_pipeline_depth_messages_are_prepared_or_storing_at_once(hub_factory, monkeypatch):
    """The prefetch delivers eight batches; only PIPELINE_DEPTH of them are parsed ahead (the rest wait as
    bytes), and every one is still stored and receipted in order."""
    import threading
    import time

    from aiohttp import web

    from cx.hub import service
    from cx.hub.ingest import Ingestor

    hub = hub_factory(["amr"])
    lock, held, most = threading.Lock(), [0], [0]
    prepare, finish = Ingestor.prepare, Ingestor.finish

    def counted_prepare(self, msg):
        with lock:
            held[0] += 1
            most[0] = max(most[0], held[0])
        return prepare(self, msg)

    def slow_finish(self, prepared):
        try:
            time.sleep(0.05)  # the store as the slower stage, so the prefetch fills up behind it
            return finish(self, prepared)
        finally:
            with lock:
                held[0] -= 1

    monkeypatch.setattr(Ingestor, "prepare", counted_prepare)
    monkeypatch.setattr(Ingestor, "finish", slow_finish)
    monkeypatch.setattr(service, "PIPELINE_DEPTH", 3)  # neither the default nor the prefetch (8)
    runner = web.AppRunner(service.build_app(hub.cfg))
    await runner.setup()
    try:
        async with Sender(hub, "amr") as amr:
            sent = [amr.batch([line(f"d-{b}-{i}") for i in range(20)]) for b in range(12)]
            for b in sent:
                await amr.publish(b.to_bytes())
            receipts = await amr.receipts(12, timeout=60)
    finally:
        await runner.cleanup()
    assert [r.batch_id for r in receipts] == [b.header.batch_id for b in sent]
    assert [r.checkpoint.size for r in receipts] == [20 * n for n in range(1, 13)]
    assert most[0] == 3
