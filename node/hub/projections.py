"""Views derived from accepted record versions (timeliness, search, warnings), kept current behind ingest.

Ingest stores each accepted version once, in the department's ledger order. A projection turns
versions into a table of its own (a record's lag in working days, an enterprise's search entry, its
warning class …). The `Projector` feeds every projection the versions it has not seen yet, in ledger
order, department by department, and remembers how far each got (`projection_positions`). Nothing is
recomputed on a page view, ingest pays nothing for a projection, and a projection whose rules change
is rebuilt by clearing it and replaying the ledger (`Projector.rebuild`).

Positions are ledger indexes, not row ids: a department's ledger grows only under its row lock, so
its indexes are committed in order even with several hub processes on PostgreSQL, and a projection
can never skip a version that committed late.

Receipts come first: while batches queue up (`Activity`), the projector leaves the CPU and the store's
write lock to ingest and catches up in the first lull, or once its views are `max_lag_seconds` old,
whichever comes first — so a department's burst is receipted at ingest's rate and the views follow
within a bounded time, never unboundedly behind under steady load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..protocol.envelope import utc_now
from .store import Store, departments, projection_positions, record_versions

log = structlog.get_logger("cx.hub.projections")

@dataclass(frozen=True)
class Accepted:
    """One accepted record version, as projections see it."""

    dept: str
    record_id: str
    version: str  # content hash
    op: str  # upsert | retract
    type: str
    ledger_index: int
    data: Mapping[str, Any] | None  # the record's fields (None for a retraction)
    reason: str | None  # a retraction's reason
    received: str  # when the hub received the batch (UTC)
    accepted: str  # when the hub accepted it (UTC)
    batch_id: str


class Activity:
    """Whether ingest has a backlog: two or more messages taken from the queue and not yet decided (a node
    draining its outbox keeps several in flight), now or within the last `quiet_seconds`.

    A steady trickle (one batch at a time, heartbeats) is no backlog: the views keep up with it as it comes.
    """

    def __init__(self, quiet_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.quiet_seconds = quiet_seconds
        self.clock = clock
        self.active = 0
        self.last = float("-inf")  # when a backlog was last seen
        self.seen = float("-inf")  # when a message was last in hand
        self.idle = threading.Event()  # no message in hand: set and cleared by the event loop, waited on by others
        self.idle.set()

    @contextlib.contextmanager
    def message(self) -> Iterator[None]:
        """Around the handling of one inbound message (the event loop's thread only)."""
        self.active += 1  # `busy` and `recent` read it while the message is in hand; the times are of its end
        self.idle.clear()
        try:
            yield
        finally:
            if self.active > 1:
                self.last = self.clock()
            self.active -= 1
            self.seen = self.clock()
            if not self.active:
                self.idle.set()

    def busy(self) -> bool:
        return self.active > 1 or self.clock() - self.last < self.quiet_seconds

    def recent(self) -> bool:
        """A message in hand now or within the last `quiet_seconds` (a trickle counts)."""
        return self.active > 0 or self.clock() - self.seen < self.quiet_seconds

    def wait_idle(self, timeout: float) -> bool:
        """From another thread: wait until no message is in hand (at most `timeout` s); whether none is."""
        return self.idle.wait(timeout)


class Projection(Protocol):
    """A view kept from accepted versions. `apply` runs inside the projector's transaction."""

    name: str  # at most 40 characters, stable: positions are kept under it

    def apply(self, conn: Connection, versions: Sequence[Accepted]) -> None: ...

    def clear(self, conn: Connection) -> None: ...


class Projector:
    """Feeds projections the versions accepted since each one's position, a chunk per transaction."""

    def __init__(self, store: Store, projections: Iterable[Projection], *, chunk: int = 500, brief_chunk: int = 100):
        self.store = store
        self.projections = list(projections)
        self.chunk = chunk
        self.brief_chunk = brief_chunk  # while batches arrive: a batch waits for at most one such chunk
        self.current_at: float | None = None  # time.monotonic() when a catch-up last reached the ledgers' ends
        names = [p.name for p in self.projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique: {names}")

    def catch_up(self, progress: Callable[[int, int], None] | None = None,
                 pause: Callable[[], bool] | None = None, share: Callable[[], bool] | None = None,
                 before: Callable[[], bool] | None = None) -> int:
        """Apply everything accepted so far; returns how many versions were read.

        `progress(done, total)` is called after each chunk (long rebuilds show it); `pause()` before each
        chunk but the first, and a true answer stops here (the rest is applied by a later call). While
        `share()` is true, each chunk is followed by a wait as long as it took, so that ingest has the CPU
        at least half the time (the store's write turn, `Store.turn`, already lets a waiting batch in before
        the next chunk). `before()` is called before each chunk (it may wait for a moment when ingest has
        nothing in hand); a true answer makes the chunk a brief one.
        """
        if not self.projections:
            self.current_at = time.monotonic()
            return 0
        with self.store.reader.connect() as conn:
            sizes = dict(conn.execute(select(departments.c.dept, departments.c.ledger_size)).all())
            known = self._positions(conn)
        total = sum(max(0, size - min(known.get((p.name, dept), 0) for p in self.projections))
                    for dept, size in sizes.items())
        done = 0
        for dept, size in sorted(sizes.items()):
            while min(known.get((p.name, dept), 0) for p in self.projections) < size:
                if done and pause and pause():
                    return done
                limit = self.brief_chunk if before and before() else self.chunk
                began = time.monotonic()
                read, known = self._step(dept, limit)
                if share and share():
                    time.sleep(time.monotonic() - began)
                if not read:
                    break
                done += read
                if progress:
                    progress(done, total)
        self.current_at = time.monotonic()
        return done

    def _step(self, dept: str, limit: int) -> tuple[int, dict[tuple[str, str], int]]:
        """One chunk of one department, in one transaction with the positions it advances."""
        with self.store.turn.after(), self.store.writer.begin() as conn:
            lock = select(projection_positions).where(projection_positions.c.dept == dept)
            if conn.dialect.name == "postgresql":  # another hub process may be projecting the same department
                lock = lock.with_for_update()
            positions = {r.projection: r.position for r in conn.execute(lock)}
            start = min(positions.get(p.name, 0) for p in self.projections)
            versions = [_accepted(r) for r in conn.execute(
                select(record_versions.c.dept, record_versions.c.record_id, record_versions.c.version,
                       record_versions.c.op, record_versions.c.type, record_versions.c.ledger_index,
                       record_versions.c.line, record_versions.c.received, record_versions.c.accepted,
                       record_versions.c.batch_id)
                .where(record_versions.c.dept == dept, record_versions.c.ledger_index >= start)
                .order_by(record_versions.c.ledger_index).limit(limit))]
            if versions:
                end = versions[-1].ledger_index + 1
                now = utc_now()
                for p in self.projections:
                    at = positions.get(p.name, 0)
                    todo = [v for v in versions if v.ledger_index >= at]
                    if not todo:
                        continue
                    p.apply(conn, todo)
                    _set_position(conn, p.name, dept, end, now, exists=p.name in positions)
            known = self._positions(conn)
        return len(versions), known

    def rebuild(self, name: str, progress: Callable[[int, int], None] | None = None) -> int:
        """Clear one projection and replay every department's ledger into it; returns versions replayed."""
        projection = next((p for p in self.projections if p.name == name), None)
        if projection is None:
            raise KeyError(f"no projection {name!r}; known: {[p.name for p in self.projections]}")
        with self.store.writer.begin() as conn:
            projection.clear(conn)
            conn.execute(projection_positions.delete().where(projection_positions.c.projection == name))
        return Projector(self.store, [projection], chunk=self.chunk).catch_up(progress)

    def lag(self) -> dict[str, int]:
        """Versions accepted but not yet applied, per projection (0 when current)."""
        with self.store.reader.connect() as conn:
            sizes = dict(conn.execute(select(departments.c.dept, departments.c.ledger_size)).all())
            known = self._positions(conn)
        return {p.name: sum(max(0, size - known.get((p.name, dept), 0)) for dept, size in sizes.items())
                for p in self.projections}

    async def run(self, stop: asyncio.Event, interval: float = 1.0, *, activity: Activity | None = None,
                  max_lag_seconds: float = 60.0) -> None:
        """Keep the projections current until `stop` is set (the hub runs this beside ingest).

        With an `activity`, a round while batches queue up is skipped, and a catch-up pauses when they start
        queueing, unless the views were last current `max_lag_seconds` ago or more; then it goes on beside
        ingest, sharing the store with it. Beside a trickle (one batch at a time, heartbeats) each chunk
        waits for a moment with no message in hand and is brief: a batch that arrives meanwhile waits for
        the store's write turn (`Store.turn`) at most one brief chunk.
        """
        started = time.monotonic()

        def overdue() -> bool:
            return time.monotonic() - (self.current_at or started) >= max_lag_seconds

        def busy() -> bool:
            return activity is not None and activity.busy()

        def pause() -> bool:
            return busy() and not overdue()

        def before() -> bool:  # between the messages of a trickle, in brief chunks; when overdue, as `share` says
            if activity is None or overdue():
                return False
            activity.wait_idle(0.5)
            return activity.recent()

        while not stop.is_set():
            try:
                if not pause():
                    await asyncio.to_thread(self.catch_up, None, pause, busy, before)
            except Exception:  # noqa: BLE001 - a failing projection must not stop the hub; retried next round
                log.exception("projection failed; retrying")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    @staticmethod
    def _positions(conn: Connection) -> dict[tuple[str, str], int]:
        return {(r.projection, r.dept): r.position for r in conn.execute(select(projection_positions))}


def _set_position(conn: Connection, name: str, dept: str, position: int, now: str, *, exists: bool) -> None:
    if exists:
        conn.execute(projection_positions.update().where(projection_positions.c.projection == name,
                                                         projection_positions.c.dept == dept)
                     .values(position=position, updated=now))
    else:
        conn.execute(projection_positions.insert().values(projection=name, dept=dept, position=position, updated=now))


def _accepted(row: Any) -> Accepted:
    # the line was parsed and checked strictly at ingest (jsonutil: duplicate keys, depth …); plain json suffices
    line = json.loads(bytes(row.line))
    return Accepted(row.dept, row.record_id, row.version, row.op, row.type, row.ledger_index,
                    line.get("data"), line.get("reason"), row.received, row.accepted, row.batch_id)


def hub_projections(cfg: Any = None) -> list[Projection]:
    """The projections a hub keeps (timeliness, search, warnings add themselves here)."""
    from .credit import CreditProjection, Rules
    from .search import EnterpriseIndex
    from .timeliness import Basis, TimelinessProjection

    return [TimelinessProjection(Basis.from_config(cfg) if cfg is not None else Basis.default()),
            CreditProjection(Rules.from_config(cfg) if cfg is not None else Rules.load()), EnterpriseIndex()]
