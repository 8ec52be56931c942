"""The access trail (留痕): a Merkle log like a department's ledger, buffered writes, segments checked offline."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from cx.hub import ledger, trail
from cx.hub.store import Store, access_trail, checkpoints
from cx.protocol.errors import ProtocolError
from cx.protocol.keys import SigningKey
from cx.protocol.merkle import MerkleTree, range_proof_ranges, root_from_range, verify_range
from console_support import Client, make_console_hub
from support import free_port


# -- range proofs: pure, against the in-memory tree ------------------------------------------

def _leaves(n: int) -> list[bytes]:
    return [i.to_bytes(32, "big") for i in range(n)]


@given(st.integers(1, 300).flatmap(lambda size: st.tuples(st.just(size), st.integers(0, size - 1)))
       .flatmap(lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.integers(t[1] + 1, t[0]))))
@settings(max_examples=300, deadline=None)
def test_a_range_proof_leads_to_the_root_and_nothing_else_does(case):
    size, start, end = case
    leaves = _leaves(size)
    tree = MerkleTree(leaves)
    proof = [tree.range_hash(a, b) for a, b in range_proof_ranges(start, end, size)]
    assert len(proof) <= 2 * size.bit_length()
    assert root_from_range(start, size, leaves[start:end], proof) == tree.root()
    changed = list(leaves[start:end])
    changed[-1] = b"\xff" * 32
    with pytest.raises(ProtocolError):
        verify_range(start, size, changed, proof, tree.root())
    if end - start > 1:  # an entry removed from the run
        with pytest.raises(ProtocolError):
            verify_range(start, size, leaves[start:end - 1], proof, tree.root())
    if start > 0:  # the run claimed at another position
        with pytest.raises(ProtocolError):
            verify_range(start - 1, size, leaves[start:end], proof, tree.root())


def test_range_proof_edges():
    with pytest.raises(ProtocolError):
        range_proof_ranges(3, 3, 5)
    with pytest.raises(ProtocolError):
        range_proof_ranges(0, 6, 5)
    leaves = _leaves(5)
    tree = MerkleTree(leaves)
    assert range_proof_ranges(0, 5, 5) == []  # the whole log needs no proof
    assert root_from_range(0, 5, leaves, []) == tree.root()
    with pytest.raises(ProtocolError):
        root_from_range(1, 5, leaves[1:], [tree.root()] * 3)  # too long


# -- the trail in the store ---------------------------------------------------------------------

def test_flushes_append_in_one_transaction_with_one_checkpoint_and_segments_verify(store_url, tmp_path):
    store = Store(store_url)
    store.migrate()
    key = SigningKey.generate()
    log = trail.Trail(store, key)
    try:
        for flush in range(5):
            for i in range(37):
                log.record(f"user{i % 3}", "operator", "view", f"GET /departments/amr/records/r{flush}-{i}",
                           "127.0.0.1", dept="amr" if i % 2 else "court")
            cp = log.flush()
            assert cp is not None and cp.size == 37 * (flush + 1)
        assert log.flush() is None  # nothing buffered: no transaction, no checkpoint
        with store.reader.connect() as conn:
            assert conn.execute(select(func.count()).select_from(checkpoints)
                                .where(checkpoints.c.dept == ledger.TRAIL_LOG)).scalar() == 5
            assert [r.idx for r in conn.execute(select(access_trail.c.idx).order_by(access_trail.c.idx))] \
                == list(range(185))
        # segments of every shape verify against the latest checkpoint with the hub's public key
        for start, end in ((0, 185), (0, 1), (184, 185), (37, 74), (50, 51), (3, 170)):
            doc = json.loads(json.dumps(trail.segment(store, start, end)))
            cp, entries = trail.verify_segment(doc, key.public)
            assert cp.size == 185 and len(entries) == end - start
        doc = trail.segment(store, 40, 80)
        assert json.loads(doc["entries"][0])["target"].endswith("r1-3")
        # an edited, removed or reordered entry, or a forged checkpoint, fails
        edited = dict(doc, entries=[doc["entries"][0].replace('"view"', '"login"')] + doc["entries"][1:])
        removed = dict(doc, entries=doc["entries"][:5] + doc["entries"][6:])
        swapped = dict(doc, entries=[doc["entries"][1], doc["entries"][0]] + doc["entries"][2:])
        other_key = SigningKey.generate()
        for bad, why in ((edited, "bad_proof"), (removed, "bad_proof"), (swapped, "bad_proof")):
            with pytest.raises(ProtocolError) as exc:
                trail.verify_segment(bad, key.public)
            assert exc.value.reason.value == why
        with pytest.raises(ProtocolError):
            trail.verify_segment(doc, other_key.public)
        # filters and consistency between sizes
        found = trail.search(store, {"actor": "user1", "dept": "amr"}, limit=1000)
        assert found and all(r["actor"] == "user1" and r["dept"] == "amr" for r in found)
        assert [r["idx"] for r in found] == sorted((r["idx"] for r in found), reverse=True)
        proof = trail.consistency(store, 37, 185)
        assert proof["checkpoints"]["37"]["size"] == 37 and proof["proof"]
    finally:
        store.dispose()


def test_entries_are_kept_when_the_store_fails(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    log = trail.Trail(store, SigningKey.generate())
    log.record("op", "operator", "login", "POST /login", "127.0.0.1")
    store.dispose()
    (tmp_path / "store.db").unlink()
    (tmp_path / "store.db").mkdir()  # the store is now unusable
    with pytest.raises(Exception):
        log.flush()
    log.record("op", "operator", "view", "GET /trail", "127.0.0.1")
    assert log.pending == 2
    (tmp_path / "store.db").rmdir()
    store2 = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store2.migrate()
    log.store = store2
    assert log.flush().size == 2  # nothing lost, in order
    assert [r["action"] for r in trail.search(store2, {})] == ["view", "login"]
    store2.dispose()


def test_a_clean_stop_flushes_the_trail_and_cx_verify_trail_checks_an_export(tmp_path):
    """The hub as a process, stopped with SIGTERM right after requests: every entry is in the store."""
    metrics_port = free_port()
    hub = make_console_hub(tmp_path / "hub", f"sqlite:///{tmp_path / 'hub' / 'hub.db'}",
                           console="trail_flush_seconds = 3600",  # only the stop flushes
                           api=f'metrics_listen = "127.0.0.1:{metrics_port}"')
    log = open(tmp_path / "hub.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "cx.cli", "hub", "run", "--config", str(hub.dir / "hub.toml")],
                               stdout=log, stderr=log, start_new_session=True)
    host, port = hub.cfg.listen()
    hub.url = f"http://{host}:{port}"
    try:
        from support import run_sync, wait_http

        wait_http(f"{hub.url}/healthz", 30, process, tmp_path / "hub.log")
        # /metrics has an address of its own, and only it is there
        wait_http(f"http://127.0.0.1:{metrics_port}/metrics", 10)
        for url, expected in ((f"{hub.url}/metrics", 404), (f"http://127.0.0.1:{metrics_port}/login", 404)):
            with pytest.raises(urllib.error.HTTPError) as exc:
                urllib.request.urlopen(url, timeout=5)
            assert exc.value.code == expected

        async def browse() -> None:
            async with Client(hub) as c:
                await c.login("op")
                for _ in range(10):
                    await c.get("/departments/amr")
                await c.login("aud", "wrong password")
        run_sync(browse())
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    store = hub.store()
    try:
        found = trail.search(store, {}, limit=100)
        assert [r["action"] for r in reversed(found)] == ["login"] + ["view"] * 10 + ["login"]
        assert found[0]["outcome"] == "failed" and found[0]["actor"] == "aud"
        segment = trail.segment(store, 0)
    finally:
        store.dispose()
    path = tmp_path / "segment.json"
    path.write_text(json.dumps(segment, ensure_ascii=False))
    done = subprocess.run([sys.executable, "-m", "cx.cli", "verify-trail", str(path), "--public-key",
                           str(hub.dir / "keys" / "hub.pub")], capture_output=True, text=True)
    assert done.returncode == 0 and "VALID" in done.stdout and "0 … 11 (12)" in done.stdout, done.stdout + done.stderr
    segment["entries"][3] = segment["entries"][3].replace("amr", "court")
    path.write_text(json.dumps(segment, ensure_ascii=False))
    done = subprocess.run([sys.executable, "-m", "cx.cli", "verify-trail", str(path), "--public-key",
                           str(hub.dir / "keys" / "hub.pub")], capture_output=True, text=True)
    assert done.returncode == 1 and "bad_proof" in done.stdout
    time.sleep(0)  # keep the log file open until here
    log.close()
