"""The node's outbox on disk after 1,000,000 rows and 200,000 updates, pruned as the running node prunes it, or not.

Records go the node's way through the outbox (commit in chunks of 1,000 rows, sealed and signed into batches of
1,000, settled by a hub-signed receipt); the pruning run calls `Outbox.prune` between batches as the node's
background task does with `keep_settled_days = 0` (the floor: only what deduplication needs stays), and the
other run never prunes (what an outbox grew to before). Writes the figures as JSON (`make bench`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cx.node.outbox import Outbox, Queued  # noqa: E402
from cx.protocol.envelope import RecordLine, build_batch, content_hash, utc_now  # noqa: E402
from cx.protocol.keys import SigningKey  # noqa: E402
from cx.protocol.merkle import merkle_root  # noqa: E402
from cx.protocol.receipts import Checkpoint, Receipt  # noqa: E402
from examples import EXAMPLES  # noqa: E402

TYPE = "administrative_penalty"
FAR_FUTURE = "2999-01-01T00:00:00.000Z"


def record(i: int, version: int) -> Queued:
    """A penalty record about the size the demo's and a department's are (about 900 bytes as a line)."""
    data = {**EXAMPLES[TYPE], "subject_name": f"洛阳市测试{i}商贸有限公司", "decision_no": f"洛市监罚〔2026〕{i}号",
            "facts": f"当事人发布虚假广告，误导消费者（第 {version} 次核定）。经查，该广告自2025年起在其经营场所及网络平台发布。"}
    line = RecordLine(f"amr-penalty-{i}", TYPE, 1, "upsert", data,
                      {"adapter": "sql", "locator": f"table xzcf id={i}", "extracted": utc_now()})
    return Queued("penalties", line.record_id, TYPE, 1, "upsert", content_hash(line), line.to_bytes(), line.source["locator"])


def run(path: Path, rows: int, updates: int, prune: bool) -> dict:
    outbox = Outbox(path)
    key, hub = SigningKey.generate(), SigningKey.generate()
    started = time.perf_counter()
    pruned = 0
    size = 0

    def deliver() -> None:
        nonlocal pruned, size
        while batch := outbox.pending(1000, 64 * 1024 * 1024):
            lines = [r[3] for r in batch]
            batch_id, _ = outbox.seal([r[0] for r in batch], lambda seq, prev: build_batch(
                key, dept="amr", node="amr-1", seq=seq, prev=prev, lines=lines, schemas={TYPE: 1}))
            members = outbox.batch_records(batch_id)
            size += len(members)
            receipt = Receipt.issue(hub, batch_id=batch_id, dept="amr", header_hash="ab" * 32,
                                    accepted=[m[1] for m in members], rejected=[], duplicates=0,
                                    checkpoint=Checkpoint.sign(hub, "amr", size, merkle_root([b"x"])))
            cp = receipt.checkpoint
            outbox.apply_receipt(batch_id, receipt.to_bytes(), receipt.accepted, [],
                                 (cp.size, cp.root, cp.time, json.dumps(cp.to_json())))
            if prune:
                while (step := outbox.prune(FAR_FUTURE, 2000)) >= 2000:
                    pruned += step
                pruned += step
                outbox.release_space()

    def load(ids: range, version: int) -> None:
        for start in range(ids.start, ids.stop, 1000):
            outbox.commit_chunk("penalties", [record(i, version) for i in range(start, min(start + 1000, ids.stop))],
                                [], position={"cursor": start}, set_position=True)
            if (start - ids.start) % 20000 == 0:
                deliver()
                print(f"\r  {'pruned' if prune else 'unpruned'}: {start - ids.start:,} of {len(ids):,} rows "
                      f"(version {version})", end="", file=sys.stderr, flush=True)
        deliver()

    load(range(rows), 1)
    after_rows = _measure(outbox)
    load(range(updates), 2)
    print(file=sys.stderr)
    outbox.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    figures = {"prune": prune, "rows": rows, "updates": updates, "seconds": round(time.perf_counter() - started, 1),
               "rows_pruned": pruned, "after_rows": after_rows, "after_updates": _measure(outbox),
               "counts": outbox.counts()}
    outbox.close()
    return figures


def _measure(outbox: Outbox) -> dict:
    size = outbox.size()
    tables = {t: outbox.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
              for t in ("records", "latest", "batches", "batch_bodies", "checkpoints", "rejections")}
    return {"file_mib": round(size["bytes"] / 2**20, 1), "free_mib": round(size["free_bytes"] / 2**20, 1),
            "wal_mib": round(size["wal_bytes"] / 2**20, 1), "rows": tables}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=Path("bench-results/outbox-size.json"))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for prune in (True, False):
            results.append(run(Path(tmp) / f"outbox-{prune}.db", args.rows, args.updates, prune))
            (Path(tmp) / f"outbox-{prune}.db").unlink()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    for r in results:
        print(f"{'pruned (keep_settled_days = 0)' if r['prune'] else 'never pruned'}: "
              f"{r['after_rows']['file_mib']} MiB after {r['rows']:,} rows, {r['after_updates']['file_mib']} MiB after "
              f"{r['updates']:,} updates ({r['seconds']} s)")
    print(f"figures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
