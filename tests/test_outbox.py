"""The outbox on its own: pruning keeps what delivery and deduplication need, and gives the space back."""

from __future__ import annotations

import threading
from pathlib import Path

from cx.node.outbox import Outbox, Queued
from cx.protocol.envelope import RecordLine, build_batch, content_hash, utc_now
from cx.protocol.keys import SigningKey
from examples import EXAMPLES

TYPE = "administrative_penalty"
FAR_FUTURE = "2999-01-01T00:00:00.000Z"


def queued(i: int, text: str = "") -> Queued:
    data = {**EXAMPLES[TYPE], "facts": f"违法事实 {i} {text}" + "。" * 300}
    record = RecordLine(f"amr-penalty-{i}", TYPE, 1, "upsert", data,
                        {"adapter": "sql", "locator": f"table xzcf id={i}", "extracted": utc_now()})
    return Queued("penalties", record.record_id, TYPE, 1, "upsert", content_hash(record), record.to_bytes(),
                  f"table xzcf id={i}")


def seal(outbox: Outbox, key: SigningKey, size: int) -> str:
    rows = outbox.pending(size, 64 * 1024 * 1024)
    batch_id, _ = outbox.seal([r[0] for r in rows], lambda seq, prev: build_batch(
        key, dept="amr", node="amr-1", seq=seq, prev=prev, lines=[r[3] for r in rows], schemas={TYPE: 1}))
    return batch_id


def test_pruning_keeps_what_waits_and_what_deduplication_needs(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    key = SigningKey.generate()
    for start in range(0, 3000, 500):
        outbox.commit_chunk("penalties", [queued(i) for i in range(start, start + 500)], [])
    batches = [seal(outbox, key, 500) for _ in range(6)]
    for batch_id in batches[:4]:
        ids = [record_id for _, record_id, _, _ in outbox.batch_records(batch_id)]
        outbox.apply_receipt(batch_id, b"receipt", ids, [], (1, "ab" * 32, utc_now(), "{}"))
    outbox.refuse(batches[4], b"refusal", "merkle_root_mismatch", "不符", "mismatch")
    outbox.mark_sent(batches[5])
    outbox.commit_chunk("penalties", [queued(i) for i in range(3000, 3200)], [])
    before = outbox.size()["bytes"]
    counts = outbox.counts()

    removed = 0
    while (step := outbox.prune(FAR_FUTURE, 500)) >= 500:
        removed += step
    removed += step
    while outbox.release_space(256):
        pass
    after = outbox.size()
    assert removed >= 2000
    assert outbox.counts() == {**counts, "alerts": counts["alerts"]}  # counted as before, pruned or not
    remaining = dict(outbox.db.execute("SELECT state, COUNT(*) FROM records GROUP BY state").fetchall())
    assert remaining == {"refused": 500, "batched": 500, "pending": 200}  # nothing that waits
    states = dict(outbox.db.execute("SELECT state, COUNT(*) FROM batches GROUP BY state").fetchall())
    assert states == {"refused": 1, "sent": 1}
    kept = {r[0] for r in outbox.db.execute("SELECT batch_id FROM batch_bodies")}
    assert kept == set(batches[4:])  # a pruned batch's bytes went with it
    assert outbox.db.execute("SELECT COUNT(*) FROM latest").fetchone()[0] == 3200
    # the same rows read again are recognised; a changed one is new
    result = outbox.commit_chunk("penalties", [queued(i) for i in range(0, 2000)] + [queued(7, "changed")], [])
    assert (result.unchanged, result.queued) == (2000, 1)
    assert after["bytes"] < before * 0.6, (before, after)  # the file itself shrank (incremental auto-vacuum)
    outbox.close()


def test_an_outbox_of_an_earlier_version_gains_its_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE checkpoints(size INTEGER PRIMARY KEY, root TEXT NOT NULL, time TEXT NOT NULL, body TEXT NOT NULL,
                                 seen TEXT NOT NULL);
        INSERT INTO checkpoints VALUES (10, 'ab', '2026-01-01T00:00:00.000Z', '{}', '2026-01-01T00:00:00.000Z');
        CREATE TABLE rejections(id INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, origin TEXT NOT NULL,
            locator TEXT, row_key TEXT, record_id TEXT, type TEXT, errors TEXT NOT NULL, at TEXT NOT NULL,
            batch_id TEXT, resolved TEXT);
        CREATE TABLE alerts(id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, kind TEXT NOT NULL, batch_id TEXT,
                            detail TEXT NOT NULL);
        INSERT INTO alerts(at, kind, detail) VALUES ('2026-01-01T00:00:00.000Z', 'receipt_invalid', 'x');
        CREATE TABLE latest(record_id TEXT PRIMARY KEY, version TEXT NOT NULL, type TEXT NOT NULL);
    """)
    known = queued(1)
    db.execute("INSERT INTO latest VALUES (?, ?, ?)", (known.record_id, known.version, known.type))
    db.commit()
    db.close()
    outbox = Outbox(path)
    assert outbox.latest_version(known.record_id) == known.version  # converted to the compact form
    assert outbox.commit_chunk("penalties", [known], []).unchanged == 1
    assert outbox.last_checkpoint() == (10, "ab")  # what it verified before stays verified
    assert outbox.alert_summary() == {"receipt_invalid": 1}  # an alert from before is open
    assert outbox.resolve_alerts() == 1 and outbox.alert_summary() == {}
    outbox.close()


def test_connections_of_one_process_take_turns_at_writing_without_polling(tmp_path: Path) -> None:
    collector, sender = Outbox(tmp_path / "outbox.db"), Outbox(str(tmp_path / "." / "outbox.db"))
    other = Outbox(tmp_path / "other.db")
    assert collector.turn is sender.turn and other.turn is not collector.turn
    done = threading.Event()

    def commit() -> None:
        sender.commit_chunk("penalties", [queued(1)], [])
        done.set()

    with collector.tx():  # the collector writes a chunk …
        writer = threading.Thread(target=commit)
        writer.start()
        assert not done.wait(0.2)  # … the sender waits for the turn (not in SQLite's busy handler) …
        assert collector.turn.locked()
    writer.join(10)
    assert done.is_set() and sender.waiting() == (1, 0)  # … and writes as soon as it is free


def test_a_batch_body_is_written_once_and_the_row_that_changes_state_stays_small(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    key = SigningKey.generate()
    outbox.commit_chunk("penalties", [queued(i) for i in range(300)], [])
    batch_id = seal(outbox, key, 300)
    [(batch_id_due, body, attempts)] = outbox.due(600, 8)
    assert batch_id_due == batch_id and attempts == 0 and len(body) > 200_000
    outbox.mark_sent(batch_id)
    ids = [record_id for _, record_id, _, _ in outbox.batch_records(batch_id)]
    outbox.apply_receipt(batch_id, b"receipt", ids, [], (300, "ab" * 32, utc_now(), "{}"))
    row_bytes = outbox.db.execute("SELECT length(body) FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()[0]
    assert row_bytes == 0  # two updates of its state rewrote a small row, not the bytes
    assert outbox.batch(batch_id)["body"] == body and "body" not in outbox.batch(batch_id, body=False)
    assert outbox.batch(batch_id, body=False)["state"] == "receipted"
    outbox.close()


def test_an_outbox_that_kept_bodies_in_its_batches_moves_them_once(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    outbox = Outbox(path)
    key = SigningKey.generate()
    outbox.commit_chunk("penalties", [queued(i) for i in range(5)], [])
    batch_id = seal(outbox, key, 5)
    outbox.close()
    db = sqlite3.connect(path)  # as an earlier version left it: the bytes in the batch row, no batch_bodies
    with db:
        [body] = db.execute("SELECT body FROM batch_bodies").fetchone()
        db.execute("DROP TRIGGER batch_bodies_go_with_their_batch")
        db.execute("DROP TABLE batch_bodies")
        db.execute("UPDATE batches SET body = ?", (body,))
    db.close()
    outbox = Outbox(path)
    assert outbox.due(600, 8) == [(batch_id, body, 0)]
    assert outbox.db.execute("SELECT length(body) FROM batches").fetchone()[0] == 0
    outbox.close()
    outbox = Outbox(path)  # a second open finds nothing to move
    assert outbox.batch(batch_id)["body"] == body
    outbox.close()
