"""Fuzz run: hostile messages through a running hub on the real broker, each accounted for.

A department's broker user (and, for a few, a broker administrator) publishes generated hostile messages
into the ingest queue: mutated bytes of signed batches, correctly signed batches whose headers or record
lines are at and beyond every bound (timestamps like 2026-02-30, lone surrogates, U+0000, over-long
`source` values and ids, wrong types, huge numbers, duplicate keys), replays, reused batch ids and
sequence numbers, batches signed with the wrong, an unknown or a revoked key, hostile heartbeats, garbage,
wrong routing keys and users. Valid batches from the department's enrolled node are interleaved and must
all be accepted with every record.

Afterwards every message has exactly one outcome, found by its message id: a quarantine row (never two), or
a stored batch (a batch id the hub holds, for a message that parses), or a heartbeat; the hub's outcome
counters add up to the messages published; no message was redelivered or retried as a store outage
(nothing looped); no `internal_error`. The hub's RSS and open files are reported before and after.

A case is one hostile message, or one hostile record line inside a correctly signed batch (which reaches the
hub's record validation and store, and gets its own verdict in the receipt). `make fuzz` runs at least
100,000 cases on each hub store (python tests/fuzz.py --help); tests/test_fuzz.py runs a
short one in `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import random
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: support and the test modules sit beside it

from chaos import Broker, hub_store  # noqa: E402
from cx import transport  # noqa: E402
from cx.hub import registry  # noqa: E402
from cx.hub.store import batches, quarantine  # noqa: E402
from cx.protocol import jsonutil  # noqa: E402
from cx.protocol.envelope import (  # noqa: E402
    RECORD_ID_MAX, SOURCE_MAX, build_batch, encode_batch, parse_batch, signature_line,
)
from cx.protocol.errors import ProtocolError  # noqa: E402
from cx.protocol.heartbeat import Heartbeat  # noqa: E402
from cx.protocol.keys import SigningKey  # noqa: E402
from cx.protocol.receipts import Receipt  # noqa: E402
from cx.protocol.validation import KEPT_DATA_FIELDS  # noqa: E402
from examples import EXAMPLES  # noqa: E402
from support import Hub, make_hub, run_sync  # noqa: E402

DEPT = "amr"
TYPE = "administrative_penalty"
GOOD_TIME = "2026-01-02T03:04:05.678Z"
PUBLISH_AT_ONCE = 200  # publishes awaiting their confirms at a time
# values that have broken or could break a parser, a validator or a store column; "@@…@@" marks raw escapes
HOSTILE_VALUES: list[Any] = [
    None, "", " ", True, 0, -1, 1.5, 10**30, 10**400, "@@1e400@@", "@@-1e400@@", "@@NaN@@", [], {}, [[[[[]]]]],
    {"a": {"b": {"c": {"d": {}}}}}, "2026-02-30", "2026-13-01", "2026-01-01T00:00:61Z", "0000-01-01T00:00:00Z",
    "2026-02-30T00:00:00.000Z", "@@\\ud800@@", "@@\\udfff@@", "a@@\\u0000@@b", "@@\\ude00\\ud83d@@", "\u202e反转",
    "\ufeff", "😀" * 3, "\n", "\r\n", "\t", "\\", '"', "罚" * 2000, "9" * 5000,
] + ["x" * (n + d) for n in {RECORD_ID_MAX, *SOURCE_MAX.values(), *KEPT_DATA_FIELDS.values(), 32} for d in (0, 1)]
HEADER_VALUES: dict[str, list[Any]] = {
    "created": ["2026-02-30T00:00:00.000Z", "2026-13-01T00:00:00.000Z", "2026-01-01T00:00:61.000Z",
                "0000-01-01T00:00:00.000Z", "2026-01-01", 0, None, "@@\\ud800@@"],
    "v": [..., 2, 0, "1", None, 10**400],
    "seq": [0, -1, 10**20, 1.5, "1", None, ...],
    "prev": ["0" * 64, "zz", 1, ...],
    "count": [0, 2, -1, 10**9, "1", ...],
    "dept": ["tax", "AMR", "", "amr\u0000", "@@\\ud800@@", ...],
    "node": ["", "n" * 65, "@@\\u0000@@", ...],
    "batch_id": ["", "x" * 37, "@@\\ud800@@", 5, ...],
    "key_id": ["", "k" * 33, None, ...],
    "schemas": [{}, {TYPE: 2}, {TYPE: "1"}, {"nope": 1}, [], None, ...],
    "extra": [1],
}
HEARTBEAT_FIELDS: dict[str, list[Any]] = {
    "time": ["2026-02-30T00:00:00.000Z", "2026-13-01T00:00:00.000Z", "0000-01-01T00:00:00.000Z", 5],
    "last_error": ["@@\\ud800@@", "a@@\\u0000@@", "e" * 100_000, 5, None],
    "outbox_depth": [-1, 10**30, 1.5, "1", None],
    "oldest_pending_seconds": [-1.0, 10**400, "@@NaN@@", "x"],
    "inventory": [{TYPE: -1}, {TYPE: 10**30}, [], {"@@\\ud800@@": 1}],
    "alerts": [{"x" * 300: 1}, {"a": "b"}, []],
    "node": ["", "n" * 65, "@@\\u0000@@"],
    "version": ["v" * 1000, "@@\\ud800@@"],
}


def raw_json(obj: Any) -> bytes:
    """Compact JSON where "@@…@@" strings become the raw text between the markers (escapes, 1e400, NaN)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return re.sub(r'"@@(.*?)@@"', lambda m: m.group(1).replace("\\\\", "\\"), text).replace("@@", "").encode()


@dataclass
class Message:
    body: bytes
    kind: str  # what the generator made: valid, mutated, record, header, replay, heartbeat, garbage …
    type: str = transport.BATCH
    routing_key: str = f"{DEPT}.batch"
    as_admin: bool = False  # published by guest (another broker user than the department's)
    batch_id: str | None = None  # of a valid batch: must be accepted with every record
    lines: int = 0
    cases: int = 1  # hostile cases it carries: one, or one per hostile record line of a signed batch


@dataclass
class Generator:
    """Hostile messages from a seed, with a valid batch of the enrolled node every `valid_every`."""

    hub: Hub
    rng: random.Random
    revoked: SigningKey
    valid_every: int = 50
    max_lines: int = 120  # hostile record lines in one signed batch, at most
    stranger: SigningKey = field(default_factory=SigningKey.generate)
    fresh: int = 0  # hostile signed batches each come from a node of their own (a fresh sequence chain)
    seq: int = 0
    prev: str | None = None
    sent: list[bytes] = field(default_factory=list)  # earlier batches, for replays and reused ids

    @property
    def key(self) -> SigningKey:
        return self.hub.depts[DEPT].key

    def line(self, rid: str) -> dict:
        return {"record_id": rid, "type": TYPE, "schema_version": 1, "op": "upsert", "data": dict(EXAMPLES[TYPE]),
                "source": {"adapter": "sql", "locator": f"table xzcf id={rid}", "extracted": GOOD_TIME}}

    def signed(self, lines: list[bytes], key: SigningKey | None = None, **header: Any) -> bytes:
        self.fresh += 1
        built = build_batch(self.key, dept=DEPT, node=f"fz{self.fresh}", seq=1, prev=None, lines=lines,
                            schemas={TYPE: 1}, created=GOOD_TIME)
        if not header and key is None:
            return built.to_bytes()
        fields = {k: v for k, v in {**json.loads(built.header_bytes), **header}.items() if v is not ...}
        header_bytes = raw_json(fields) if header else built.header_bytes
        return encode_batch(header_bytes, (key or self.key).sign(header_bytes), lines)

    def valid(self, i: int) -> Message:
        self.seq += 1
        lines = [jsonutil.dumps(self.line(f"ok-{i}-{n}")) for n in range(self.rng.randint(1, 20))]
        built = build_batch(self.key, dept=DEPT, node=self.hub.depts[DEPT].node, seq=self.seq, prev=self.prev,
                            lines=lines, schemas={TYPE: 1})
        self.prev = built.header_hash
        self.sent.append(built.to_bytes())
        return Message(self.sent[-1], "valid", batch_id=built.header.batch_id, lines=len(lines), cases=0)

    def message(self, i: int) -> Message:
        if i % self.valid_every == 0:
            return self.valid(i)
        kind = self.rng.choices(
            ["record", "header", "mutated", "wrong_key", "replay", "heartbeat", "garbage", "routing"],
            weights=[40, 15, 20, 5, 5, 8, 5, 2])[0]
        return getattr(self, kind)(i)

    def record(self, i: int) -> Message:
        """A signed batch of a fresh node whose record lines are pushed at and beyond their bounds."""
        lines = []
        for n in range(self.rng.randint(1, self.max_lines)):
            obj = self.line(f"fz-{i}-{n}")
            for _ in range(self.rng.randint(1, 3)):
                where = self.rng.choice(["data", "data", "source", "top"])
                target = obj if where == "top" else obj.get(where)
                if not isinstance(target, dict):  # replaced or dropped by an earlier change
                    continue
                name = self.rng.choice(sorted(target) + ["unknown"])
                if self.rng.random() < 0.1:
                    target.pop(name, None)
                else:
                    target[name] = copy.deepcopy(self.rng.choice(HOSTILE_VALUES))
            line = raw_json(obj)
            if self.rng.random() < 0.05:
                line = line[:-1] + b',"op":"upsert"}'  # a duplicate key
            lines.append(line)
        return Message(self.signed(lines), "record", cases=len(lines))

    def header(self, i: int) -> Message:
        """A batch whose header has a field changed, dropped or added, signed as changed."""
        name = self.rng.choice(sorted(HEADER_VALUES))
        change = {name: self.rng.choice(HEADER_VALUES[name])}
        return Message(self.signed([jsonutil.dumps(self.line(f"fz-{i}"))], **change), "header")

    def wrong_key(self, i: int) -> Message:
        line = [jsonutil.dumps(self.line(f"fz-{i}"))]
        which = self.rng.choice(["revoked", "stranger", "wrong"])
        if which == "wrong":  # the header names the department's key, a stranger signed
            return Message(self.signed(line, key=self.stranger), "key")
        key = self.revoked if which == "revoked" else self.stranger
        return Message(self.signed(line, key=key, key_id=key.key_id), "key")

    def mutated(self, i: int) -> Message:
        data = self.signed([jsonutil.dumps(self.line(f"fz-{i}-{n}")) for n in range(self.rng.randint(1, 3))])
        for _ in range(self.rng.randint(1, 3)):
            pos = self.rng.randrange(max(1, len(data)))
            op = self.rng.choice(["flip", "insert", "delete", "truncate", "dup_line", "drop_line", "swap"])
            if op == "flip" and data:
                data = data[:pos] + bytes([data[pos] ^ (1 << self.rng.randrange(8))]) + data[pos + 1:]
            elif op == "insert":
                extra = self.rng.choice([b" ", b"\n", b"\x00", b"\xff", b"\\u0000", b'"', b"{"])
                data = data[:pos] + extra + data[pos:]
            elif op == "delete":
                data = data[:pos] + data[pos + self.rng.randint(1, 4):]
            elif op == "truncate":
                data = data[:pos]
            else:
                lines = data.split(b"\n")
                a, b = self.rng.randrange(len(lines)), self.rng.randrange(len(lines))
                if op == "dup_line":
                    lines.insert(a, lines[b])
                elif op == "drop_line":
                    del lines[a]
                else:
                    lines[a], lines[b] = lines[b], lines[a]
                data = b"\n".join(lines)
        return Message(data, "mutated")

    def replay(self, i: int) -> Message:
        """An earlier valid batch again (it gets its stored receipt again), or its id or sequence number reused."""
        if not self.sent:
            return self.garbage(i)
        earlier = parse_batch(self.rng.choice(self.sent)).header
        how = self.rng.choice(["same", "same_id", "same_seq"])
        if how == "same":
            return Message(self.rng.choice(self.sent), "replay")
        line = [jsonutil.dumps(self.line(f"fz-{i}"))]
        if how == "same_id":  # another node's batch under a stored batch id
            self.fresh += 1
            built = build_batch(self.key, dept=DEPT, node=f"fz{self.fresh}", seq=1, prev=None, lines=line,
                                schemas={TYPE: 1}, batch_id=earlier.batch_id)
        else:  # the enrolled node's sequence number again, with other content
            built = build_batch(self.key, dept=DEPT, node=earlier.node, seq=earlier.seq, prev=earlier.prev,
                                lines=line, schemas={TYPE: 1})
        return Message(built.to_bytes(), "replay")

    def heartbeat(self, i: int) -> Message:
        fields: dict[str, Any] = dict(dept=DEPT, node=self.hub.depts[DEPT].node, version="1", outbox_depth=0,
                                      oldest_pending_seconds=None, last_error=None)
        if self.rng.random() < 0.2:
            return Message(Heartbeat.sign(self.key, **fields), "heartbeat", type=transport.HEARTBEAT)
        body = json.loads(Heartbeat.sign(self.key, **fields).split(b"\n")[0])
        name = self.rng.choice(sorted(HEARTBEAT_FIELDS))
        body[name] = self.rng.choice(HEARTBEAT_FIELDS[name])
        raw = raw_json(body)
        key = self.stranger if self.rng.random() < 0.1 else self.key
        return Message(raw + b"\n" + signature_line(key.sign(raw)) + b"\n", "heartbeat", type=transport.HEARTBEAT)

    def garbage(self, i: int) -> Message:
        choice = self.rng.randrange(6)
        body = [self.rng.randbytes(self.rng.randint(0, 300)), b"[" * 5000, b"{}\n{}\n", b"\xef\xbb\xbf{}",
                b"9" * 5000 + b"\n", b'{"a":1,"a":1}\n{"sig":""}\n'][choice]
        mtype = self.rng.choice([transport.BATCH, transport.HEARTBEAT, "cx.other/9", ""])
        return Message(body, "garbage", type=mtype)

    def routing(self, i: int) -> Message:
        """A valid-looking batch under another routing key, or published by another broker user."""
        body = self.signed([jsonutil.dumps(self.line(f"fz-{i}"))])
        if self.rng.random() < 0.5:
            return Message(body, "routing", routing_key="tax.batch", as_admin=True)
        return Message(body, "routing", as_admin=True)


# -- the run ---------------------------------------------------------------------------------------------

@dataclass
class Plan:
    cases: int = 100_000
    store: str = "sqlite"
    seed: int = 8
    valid_every: int = 50
    max_lines: int = 120
    settle_timeout: float = 600.0  # without progress for this long, the run fails


def process_figures(pid: int) -> dict[str, int]:
    """The hub process's resident memory (KiB) and open files."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    return {"rss_kib": rss, "open_files": len(list(Path(f"/proc/{pid}/fd").iterdir()))}


def hub_counters(hub: Hub) -> Counter:
    """The hub's outcome counters from /metrics: (name, result or reason) -> value, summed over departments."""
    with urllib.request.urlopen(f"{hub.api}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: Counter = Counter()
    for name, labels, value in re.findall(r"^(cx_\w+?)_total\{?([^}\s]*)\}? (\S+)$", text, re.M):
        label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        out[(name, label.get("result") or label.get("reason") or "")] += float(value)
    return out


def stage_seconds(hub: Hub) -> dict[str, float]:
    """The hub's time per ingest stage, summed over the run (cx_ingest_stage_seconds)."""
    with urllib.request.urlopen(f"{hub.api}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {stage: round(float(v), 2) for stage, v in
            re.findall(r'^cx_ingest_stage_seconds_sum\{stage="(\w+)"\} (\S+)$', text, re.M)}


def outcomes(counters: Counter) -> int:
    """Messages the hub has given an outcome: batches stored, answered again or quarantined; heartbeats kept."""
    return int(sum(v for (name, result), v in counters.items()
                   if (name == "cx_batches" and result in ("accepted", "redelivered", "quarantined"))
                   or name == "cx_heartbeats"))


async def publish_all(hub: Hub, messages: list[Message], admin_url: str, first: int = 0) -> None:
    """Publish every message with its confirm, PUBLISH_AT_ONCE at a time, with message ids fz-<first + n>."""
    conns = {False: await transport.connect(hub.depts[DEPT].amqp_url), True: await transport.connect(admin_url)}
    try:
        exchanges = {}
        for admin, conn in conns.items():
            channel = await transport.confirmed_channel(conn)
            exchanges[admin] = await channel.get_exchange(hub.topology.records_exchange, ensure=False)
        user = {False: hub.topology.dept_user(DEPT), True: "guest"}
        for start in range(0, len(messages), PUBLISH_AT_ONCE):
            await asyncio.gather(*(
                transport.publish(exchanges[m.as_admin], m.routing_key, m.body, message_type=m.type,
                                  message_id=f"fz-{first + start + n}", user_id=user[m.as_admin])
                for n, m in enumerate(messages[start:start + PUBLISH_AT_ONCE])))
    finally:
        for conn in conns.values():
            await conn.close()


async def receipts_for(hub: Hub) -> dict[str, Receipt]:
    """The receipts waiting on the enrolled node's queue, verified, by batch id."""
    conn = await transport.connect(hub.depts[DEPT].amqp_url)
    try:
        channel = await conn.channel()
        queue = await channel.get_queue(hub.topology.receipts_queue(DEPT, hub.depts[DEPT].node), ensure=False)
        out: dict[str, Receipt] = {}
        while (message := await queue.get(fail=False)) is not None:
            if message.type == transport.RECEIPT:
                receipt = Receipt.parse(message.body, hub.key.public)
                out[receipt.batch_id] = receipt
            await message.ack()
        return out
    finally:
        await conn.close()


def account(hub: Hub, messages: list[Message], counters: Counter, receipts: dict[str, Receipt]) -> list[str]:
    """Every message's one outcome, by its message id; what disagrees."""
    problems = []
    store = hub.store()
    try:
        with store.reader.connect() as conn:
            rows = conn.execute(select(quarantine.c.message_id, quarantine.c.reason)).all()
            stored = {r.batch_id for r in conn.execute(select(batches.c.batch_id))}
            uncounted = conn.execute(select(batches.c.batch_id).where(
                batches.c.record_count != batches.c.accepted + batches.c.rejected + batches.c.duplicates)).all()
    finally:
        store.dispose()
    if uncounted:
        problems.append(f"{len(uncounted)} stored batches whose records are not each accepted, rejected or "
                        f"a duplicate, e.g. {uncounted[0].batch_id}")
    quarantined = Counter(r.message_id for r in rows)
    twice = [m for m, n in quarantined.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} messages quarantined more than once, e.g. {twice[:3]}")
    reasons = Counter(r.reason for r in rows)
    if reasons["internal_error"]:
        problems.append(f"{reasons['internal_error']} messages ended as internal_error")
    heartbeats = 0
    for n, m in enumerate(messages):
        if f"fz-{n}" in quarantined:
            if m.kind == "valid":
                problems.append(f"valid batch fz-{n} was quarantined")
            continue
        if m.type == transport.HEARTBEAT:
            heartbeats += 1
            continue
        try:
            batch_id = parse_batch(m.body).header.batch_id
        except ProtocolError as exc:
            problems.append(f"fz-{n} ({m.kind}) does not parse ({exc.reason.value}) yet was not quarantined")
            continue
        if batch_id not in stored:
            problems.append(f"fz-{n} ({m.kind}) has no outcome: neither quarantined nor stored")
    if heartbeats != counters[("cx_heartbeats", "")]:
        problems.append(f"{heartbeats} heartbeats not quarantined, the hub kept {counters[('cx_heartbeats', '')]}")
    for m in messages:
        receipt = receipts.get(m.batch_id) if m.kind == "valid" else None
        if m.kind == "valid" and (receipt is None or len(receipt.accepted) != m.lines or receipt.rejected):
            problems.append(f"valid batch {m.batch_id} not accepted whole: {receipt}")
    if counters[("cx_ingest_errors", "")]:
        problems.append(f"{counters[('cx_ingest_errors', '')]} attempts retried as a store outage")
    if counters[("cx_batches", "quarantined")] != len(rows):
        problems.append(f"{counters[('cx_batches', 'quarantined')]} quarantined by the counters, {len(rows)} rows")
    return problems


def ingest_queue(hub: Hub, timeout: float = 60) -> dict:
    """The ingest queue as the management API sees it, once its sampled figures show it empty."""
    deadline = time.monotonic() + timeout
    while True:
        queue = Broker(hub.dir).api("GET", "queues", hub.topology.vhost, hub.topology.ingest_queue)
        if queue.get("messages") == 0 or time.monotonic() > deadline:
            return queue
        time.sleep(1)


class Run:
    def __init__(self, plan: Plan, base: Path):
        self.plan, self.base = plan, base
        self.figures: dict[str, Any] = {"store": plan.store, "cases": plan.cases}

    def execute(self) -> dict[str, Any]:
        from support import delete_broker_state

        with hub_store(self.plan.store, self.base) as url:
            hub = make_hub(self.base / "hub", [DEPT, "tax"], store_url=url)
            try:
                self.with_hub(hub)
            finally:
                hub.kill()
                run_sync(delete_broker_state(hub.topology))
        return self.figures

    def with_hub(self, hub: Hub) -> None:
        revoked = SigningKey.generate()
        store = hub.store()
        try:
            registry.add_key(store, DEPT, revoked.public)
            registry.revoke_key(store, revoked.key_id, at="2000-01-01T00:00:00.000Z")
        finally:
            store.dispose()
        gen = Generator(hub, random.Random(self.plan.seed), revoked, valid_every=self.plan.valid_every,
                        max_lines=self.plan.max_lines)
        warm = [gen.valid(-n) for n in range(1, 21)]
        messages, cases = list(warm), 0
        while cases < self.plan.cases:
            messages.append(gen.message(len(messages)))
            cases += messages[-1].cases
        self.figures.update(cases=cases, messages=len(messages) - len(warm),
                            kinds=dict(Counter(m.kind for m in messages[len(warm):])))
        hub.start()
        admin = f"amqp://guest:guest@{hub.cfg.broker.url.split('//', 1)[1].split('/', 1)[0]}/{hub.topology.vhost}"
        run_sync(publish_all(hub, warm, admin))
        self.wait(hub, len(warm))
        self.figures["hub_before"] = process_figures(hub.process.pid)
        started = time.monotonic()
        run_sync(publish_all(hub, messages[len(warm):], admin, first=len(warm)))
        self.figures["publish_seconds"] = round(time.monotonic() - started, 1)
        counters = self.wait(hub, len(messages))
        self.figures["hub_seconds"] = round(time.monotonic() - started, 1)
        self.figures["messages_per_second"] = round(self.figures["messages"] / self.figures["hub_seconds"])
        self.figures["hub_after"] = process_figures(hub.process.pid)
        receipts = run_sync(receipts_for(hub))
        problems = account(hub, messages, counters, receipts)
        ingest = ingest_queue(hub)
        self.figures["ingest_queue"] = {"messages": ingest["messages"],
                                        "redelivered": ingest.get("message_stats", {}).get("redeliver", 0)}
        if ingest["messages"] or self.figures["ingest_queue"]["redelivered"]:
            problems.append(f"the ingest queue: {self.figures['ingest_queue']} (a message was taken twice)")
        store = hub.store()
        try:
            with store.reader.connect() as conn:
                self.figures["quarantined_by_reason"] = dict(Counter(
                    r for (r,) in conn.execute(select(quarantine.c.reason))).most_common())
        finally:
            store.dispose()
        self.figures["outcomes"] = {k: int(counters[("cx_batches", k)]) for k in ("accepted", "redelivered",
                                                                                  "quarantined")}
        self.figures["outcomes"]["heartbeat"] = int(counters[("cx_heartbeats", "")])
        self.figures["records"] = {k: int(counters[("cx_records", k)]) for k in ("accepted", "rejected")}
        self.figures["refusals"] = int(sum(v for (name, _), v in counters.items() if name == "cx_refusals"))
        self.figures["hub_stage_seconds"] = stage_seconds(hub)
        assert hub.process.poll() is None, "the hub stopped"
        assert not problems, f"{len(problems)} problems: " + "; ".join(problems[:20])

    def wait(self, hub: Hub, n: int) -> Counter:
        """Until the hub has given n outcomes, and no more come; fails when it makes no progress for long."""
        last, since = -1, time.monotonic()
        while True:
            counters = hub_counters(hub)
            done = outcomes(counters)
            assert done <= n, f"{done} outcomes for {n} messages: a message got more than one"
            if done == n:
                time.sleep(1)
                counters = hub_counters(hub)
                assert outcomes(counters) == n, f"{outcomes(counters)} outcomes for {n} messages"
                return counters
            if done != last:
                last, since = done, time.monotonic()
            assert time.monotonic() - since < self.plan.settle_timeout, f"stuck at {done} of {n} outcomes"
            assert hub.process.poll() is None, "the hub stopped"
            time.sleep(0.5)


def run(plan: Plan, keep: bool = False) -> dict[str, Any]:
    """One fuzz run in a fresh folder (removed afterwards unless it failed or `keep`); its figures."""
    base = Path(tempfile.mkdtemp(prefix=f"cx-fuzz-{plan.store}-"))
    try:
        figures = Run(plan, base).execute()
    except BaseException:
        print(f"fuzz: the run's folder (hub log) is kept in {base}", file=sys.stderr, flush=True)
        raise
    if keep:
        print(f"fuzz: kept {base}", flush=True)
    else:
        shutil.rmtree(base, ignore_errors=True)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=Plan.cases, help="hostile and valid messages per store")
    ap.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--seed", type=int, default=Plan.seed)
    ap.add_argument("--keep", action="store_true", help="keep the run's folder (the hub's log)")
    args = ap.parse_args()
    for store in ("sqlite", "postgresql") if args.store == "both" else (args.store,):
        figures = run(Plan(cases=args.cases, store=store, seed=args.seed), keep=args.keep)
        print(json.dumps(figures, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
