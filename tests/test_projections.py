"""Derived views fed from the ledger in order, resumable, rebuildable — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest
from sqlalchemy import select

from cx.hub import registry
from cx.hub.ingest import Inbound, Ingestor
from cx.hub.projections import Accepted, Activity, Projector
from cx.hub.store import Store, projection_positions
from cx.protocol.envelope import RecordLine, build_batch
from cx.protocol.keys import SigningKey
from cx.transport import Topology
from examples import EXAMPLES
from support import wait_for

PENALTY = "administrative_penalty"


class Recording:
    """A projection that remembers what it was given, and can be told to fail."""

    def __init__(self, name: str = "recording"):
        self.name = name
        self.seen: list[tuple[str, int, str]] = []
        self.fail_at: int | None = None

    def apply(self, conn, versions: Sequence[Accepted]) -> None:
        for v in versions:
            if v.ledger_index == self.fail_at:
                raise RuntimeError("projection failed on purpose")
            self.seen.append((v.dept, v.ledger_index, v.record_id))

    def clear(self, conn) -> None:
        self.seen.clear()


class Department:
    """Feeds a store through the real Ingestor, as the broker consumer would."""

    def __init__(self, store: Store, dept: str):
        self.key = SigningKey.generate()
        self.topology = Topology(vhost="unused", user_prefix="cx-")
        registry.add_department(store, dept, f"部门 {dept}", "410300", self.key.public)
        self.ingestor = Ingestor(store, SigningKey.generate(), self.topology)
        self.dept, self.seq, self.prev = dept, 0, None

    def send(self, records: list[tuple[str, str]]) -> None:
        """records: (record_id, op) pairs; a retraction needs an earlier upsert of the record."""
        outcome = self.ingestor.process(self.message(records))
        assert outcome.result == "accepted" and outcome.accepted == len(records), outcome

    def message(self, records: list[tuple[str, str]]) -> Inbound:
        """The next batch of `records` as the broker would deliver it."""
        lines = [RecordLine(rid, PENALTY, 1, op, EXAMPLES[PENALTY] if op == "upsert" else None,
                            {"adapter": "test"}, None if op == "upsert" else "撤销测试").to_bytes()
                 for rid, op in records]
        self.seq += 1
        batch = build_batch(self.key, dept=self.dept, node="n1", seq=self.seq, prev=self.prev, lines=lines,
                            schemas={PENALTY: 1})
        self.prev = batch.header_hash
        return Inbound(batch.to_bytes(), f"{self.dept}.{PENALTY}", self.topology.dept_user(self.dept))


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    s.migrate()
    yield s
    s.dispose()


def test_versions_arrive_in_ledger_order_per_department_and_only_once(store):
    amr, tax = Department(store, "amr"), Department(store, "tax")
    amr.send([("a1", "upsert"), ("a2", "upsert")])
    tax.send([("t1", "upsert")])
    amr.send([("a1", "retract"), ("a3", "upsert")])
    seen = Recording()
    projector = Projector(store, [seen], chunk=3)  # chunks smaller than a department's ledger
    assert projector.lag() == {"recording": 5}
    assert projector.catch_up() == 5
    assert seen.seen == [("amr", 0, "a1"), ("amr", 1, "a2"), ("amr", 2, "a1"), ("amr", 3, "a3"), ("tax", 0, "t1")]
    assert projector.catch_up() == 0 and projector.lag() == {"recording": 0}
    tax.send([("t2", "upsert")])
    projector.catch_up()
    assert seen.seen[-1] == ("tax", 1, "t2") and len(seen.seen) == 6


def test_a_projection_gets_the_record_content(store):
    amr = Department(store, "amr")
    amr.send([("a1", "upsert")])
    amr.send([("a1", "retract")])

    class Keep(Recording):
        def apply(self, conn, versions):
            self.versions = list(versions)

    keep = Keep()
    Projector(store, [keep]).catch_up()
    upsert, retraction = keep.versions
    assert upsert.data["decision_no"] == EXAMPLES[PENALTY]["decision_no"] and upsert.op == "upsert"
    assert retraction.data is None and retraction.reason == "撤销测试" and retraction.op == "retract"
    assert upsert.received.endswith("Z") and upsert.accepted and upsert.batch_id != retraction.batch_id


def test_positions_survive_a_restart_and_a_new_projection_starts_from_the_beginning(store):
    amr = Department(store, "amr")
    amr.send([(f"a{i}", "upsert") for i in range(4)])
    first = Recording("first")
    Projector(store, [first]).catch_up()
    amr.send([("a9", "upsert")])
    again, added = Recording("first"), Recording("second")  # a restarted hub, with one more view
    Projector(store, [again, added]).catch_up()
    assert [i for _, i, _ in again.seen] == [4]
    assert [i for _, i, _ in added.seen] == [0, 1, 2, 3, 4]


def test_a_failing_chunk_advances_nothing_and_is_retried(store):
    amr = Department(store, "amr")
    amr.send([(f"a{i}", "upsert") for i in range(4)])
    flaky = Recording()
    flaky.fail_at = 2
    projector = Projector(store, [flaky])
    with pytest.raises(RuntimeError):
        projector.catch_up()
    with store.reader.connect() as conn:
        assert conn.execute(select(projection_positions)).all() == []
    flaky.seen.clear()
    flaky.fail_at = None
    assert projector.catch_up() == 4 and [i for _, i, _ in flaky.seen] == [0, 1, 2, 3]


def test_rebuild_clears_and_replays_one_projection(store):
    amr = Department(store, "amr")
    amr.send([("a1", "upsert"), ("a2", "upsert")])
    kept, rebuilt = Recording("kept"), Recording("rebuilt")
    projector = Projector(store, [kept, rebuilt])
    projector.catch_up()
    rebuilt.seen.append(("stale", -1, "x"))
    assert projector.rebuild("rebuilt") == 2
    assert rebuilt.seen == [("amr", 0, "a1"), ("amr", 1, "a2")] and len(kept.seen) == 2
    with pytest.raises(KeyError):
        projector.rebuild("nothing")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_activity_is_busy_while_messages_queue_up_and_for_a_quiet_second_after():
    clock = Clock()
    activity = Activity(quiet_seconds=1.0, clock=clock)
    assert not activity.busy()
    with activity.message():  # one batch at a time (or a heartbeat) is no backlog
        clock.now += 5
        assert not activity.busy()
        with activity.message():
            assert activity.busy()
            clock.now += 5
    assert activity.busy()
    clock.now += 0.5
    assert activity.busy()
    clock.now += 0.6
    assert not activity.busy()


def test_activity_knows_a_trickle_and_tells_other_threads_when_nothing_is_in_hand():
    clock = Clock()
    activity = Activity(quiet_seconds=1.0, clock=clock)
    assert not activity.recent() and activity.wait_idle(0)
    with activity.message():  # one heartbeat or one batch: no backlog, but recent
        assert activity.recent() and not activity.busy()
        assert not activity.wait_idle(0)
        clock.now += 5
    assert activity.wait_idle(0) and activity.recent()
    clock.now += 1.1
    assert not activity.recent()


def test_a_catch_up_beside_a_trickle_takes_brief_chunks(store):
    amr = Department(store, "amr")
    amr.send([(f"a{i}", "upsert") for i in range(7)])
    seen = Recording()
    projector = Projector(store, [seen], chunk=5, brief_chunk=2)
    done = []
    trickle = iter([True, True, False])  # batches arrive for two chunks, then a lull
    assert projector.catch_up(progress=lambda n, total: done.append(n), before=lambda: next(trickle)) == 7
    assert done == [2, 4, 7]
    assert [i for _, i, _ in seen.seen] == list(range(7))


def test_the_write_turn_goes_to_a_waiting_batch_before_the_projectors_next_chunk(store):
    amr = Department(store, "amr")
    amr.send([("a0", "upsert")])
    projector = Projector(store, [Recording()])
    message = amr.message([("a1", "upsert")])
    results = {}
    with store.turn.after():  # a chunk (or any background write) holds the turn …
        batch = threading.Thread(target=lambda: results.update(
            batch=amr.ingestor.finish(amr.ingestor.prepare(message)).result))
        batch.start()
        deadline = time.monotonic() + 10
        while store.turn.waiting < 1 and time.monotonic() < deadline:  # … while a batch waits for it
            time.sleep(0.01)
        assert store.turn.waiting == 1
        chunk = threading.Thread(target=lambda: results.update(chunk=projector.catch_up()))
        chunk.start()  # and so does the projector's next chunk
        time.sleep(0.1)
        assert results == {}
    batch.join(10)
    chunk.join(10)
    # the batch went first: the chunk found both versions (one, had it gone first)
    assert results == {"batch": "accepted", "chunk": 2}


def test_a_catch_up_pauses_between_chunks_when_told_and_resumes_where_it_stopped(store):
    amr = Department(store, "amr")
    amr.send([(f"a{i}", "upsert") for i in range(7)])
    seen = Recording()
    projector = Projector(store, [seen], chunk=3)
    asked = []
    assert projector.catch_up(pause=lambda: asked.append(1) or True) == 3  # the first chunk, then it pauses
    assert projector.current_at is None and projector.lag() == {"recording": 4}
    assert projector.catch_up() == 4 and projector.current_at is not None
    assert [i for _, i, _ in seen.seen] == list(range(7))


async def test_the_projector_waits_for_a_lull_in_ingest_but_never_longer_than_its_bound(store):
    amr = Department(store, "amr")
    seen = Recording()
    projector = Projector(store, [seen])
    activity = Activity(quiet_seconds=0.2)
    stop = asyncio.Event()
    with activity.message(), activity.message():  # batches keep arriving …
        task = asyncio.create_task(projector.run(stop, interval=0.05, activity=activity, max_lag_seconds=1.5))
        await wait_for(lambda: projector.current_at is not None)  # an empty ledger: current at once
        amr.send([("a1", "upsert")])
        await asyncio.sleep(0.6)
        assert seen.seen == []  # … so the view waits
        await wait_for(lambda: seen.seen, timeout=5)  # until it is 1.5 s late: then it catches up anyway
        amr.send([("a2", "upsert")])
        await asyncio.sleep(0.3)
        assert len(seen.seen) == 1
    await wait_for(lambda: len(seen.seen) == 2, timeout=2)  # the lull: in at once
    stop.set()
    await task


def test_a_catch_up_beside_ingest_leaves_the_store_free_between_chunks(store):
    amr = Department(store, "amr")
    amr.send([(f"a{i}", "upsert") for i in range(9)])
    seen = Recording()
    projector = Projector(store, [seen], chunk=3)
    steps = []
    original = projector._step

    def timed(dept, limit):
        steps.append(time.monotonic())
        result = original(dept, limit)
        steps.append(time.monotonic())
        return result

    projector._step = timed
    assert projector.catch_up(share=lambda: True) == 9
    chunks = list(zip(steps[::2], steps[1::2]))
    for (began, ended), (following, _) in zip(chunks, chunks[1:]):
        assert following - ended >= (ended - began) * 0.9  # a rest as long as the chunk, for ingest to write
