"""Hub ingest rate: signed 1,000-record penalty batches through a running hub on the local broker.

    python bench/hub_ingest.py [--batches 20] [--records 1000] [--store sqlite|postgresql] [--out FILE]

Starts a hub process of its own (own vhost, users and store, removed afterwards), publishes every
batch at once, waits for every receipt, and reports records/s from first publish to last receipt,
the hub process's CPU time per record, and the per-stage means from `cx_ingest_stage_seconds`.
The machine is shared: compare figures from the same run, or runs close together.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from examples import EXAMPLES  # noqa: E402
from support import create_pg_database, delete_broker_state, drop_pg_database, make_hub, run_sync  # noqa: E402

from cx import transport  # noqa: E402
from cx.protocol.envelope import RecordLine, build_batch  # noqa: E402
from cx.protocol.receipts import Receipt  # noqa: E402

TYPE = "administrative_penalty"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stage_means(api: str) -> dict[str, float]:
    """Mean seconds per batch of each ingest stage, from the hub's Prometheus histogram."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in urllib.request.urlopen(f"{api}/metrics").read().decode().splitlines():
        for suffix, into in (("_sum", sums), ("_count", counts)):
            prefix = f"cx_ingest_stage_seconds{suffix}{{stage=\""
            if line.startswith(prefix):
                stage = line[len(prefix):].split('"', 1)[0]
                into[stage] = float(line.rsplit(" ", 1)[1])
    return {s: sums[s] / counts[s] for s in sums if counts.get(s)}


async def publish_and_wait(hub, batches: list[bytes]) -> float:
    url = hub.depts["amr"].amqp_url
    conn = await transport.connect(url)
    try:
        channel = await transport.confirmed_channel(conn)
        exchange = await channel.get_exchange(hub.topology.records_exchange, ensure=False)
        queue = await channel.get_queue(hub.topology.receipts_queue("amr", hub.depts["amr"].node), ensure=False)
        start = time.perf_counter()
        for body in batches:
            await transport.publish(exchange, f"amr.{TYPE}", body, message_type=transport.BATCH,
                                    message_id="bench", user_id=hub.topology.dept_user("amr"))
        got = 0
        while got < len(batches):
            message = await queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.01)
                continue
            Receipt.parse(message.body, hub.key.public)
            await message.ack()
            got += 1
        return time.perf_counter() - start
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "hub-ingest.json")
    args = parser.parse_args()

    database = create_pg_database() if args.store == "postgresql" else None
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}" if database else "sqlite:///hub.db"
    with tempfile.TemporaryDirectory() as tmp:
        hub = make_hub(Path(tmp) / "hub", ["amr"], store_url=url)
        try:
            hub.start()
            key = hub.depts["amr"].key
            bodies, prev = [], None
            for b in range(args.batches):
                lines = [RecordLine(f"bench-{b}-{i}", TYPE, 1, "upsert", EXAMPLES[TYPE],
                                    {"adapter": "bench", "locator": f"row {b}-{i}",
                                     "extracted": "2026-01-01T00:00:00.000Z"}).to_bytes()
                         for i in range(args.records)]
                batch = build_batch(key, dept="amr", node=hub.depts["amr"].node, seq=b + 1, prev=prev, lines=lines,
                                    schemas={TYPE: 1})
                prev = batch.header_hash
                bodies.append(batch.to_bytes())
            cpu_before = cpu_seconds(hub.process.pid)
            elapsed = asyncio.run(publish_and_wait(hub, bodies))
            cpu = cpu_seconds(hub.process.pid) - cpu_before
            stages = stage_means(hub.api)
        finally:
            hub.kill()
            run_sync(delete_broker_state(hub.topology))
            if database:
                drop_pg_database(database)
    records = args.batches * args.records
    result = {
        "store": args.store, "batches": args.batches, "records_per_batch": args.records,
        "records_per_second": round(records / elapsed), "elapsed_seconds": round(elapsed, 3),
        "hub_cpu_us_per_record": round(cpu / records * 1e6, 1),
        "stage_us_per_record": {s: round(v / args.records * 1e6, 1) for s, v in sorted(stages.items())},
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
