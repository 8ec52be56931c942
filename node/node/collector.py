"""Reading sources into the outbox: map, validate locally, commit valid records with the reading position."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date

import structlog
from cx_adapters.base import Chunk, Row, Source, SourceError, StreamSpec, UnitReport, load_adapter

from ..protocol import jsonutil
from ..protocol.envelope import DEFAULT_LIMITS, RecordLine, content_hash, utc_now
from ..protocol.errors import FieldError, ProtocolError, Reason
from ..protocol.validation import SchemaRegistry, china_today, default_registry
from .config import NodeConfig, StreamConfig
from .mapping import Mapper, MappingError
from .outbox import Outbox, Queued, Rejected

log = structlog.get_logger("cx.node.collector")
RETRACT_REASON = "源系统中已删除 deleted at the source"


@dataclass
class Prepared:
    """A chunk's rows after mapping and local validation."""

    queued: list[Queued] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    valid_keys: list[str] = field(default_factory=list)


@dataclass
class StreamStats:
    read: int = 0
    queued: int = 0
    unchanged: int = 0
    rejected: int = 0
    retracted: int = 0
    units: int = 0
    errors: list[str] = field(default_factory=list)


def row_key(row: Row) -> str:
    return json.dumps(list(row.key), ensure_ascii=False)


def row_hash(row: Row) -> str:
    return hashlib.sha256(json.dumps(row.values, sort_keys=True, default=str, ensure_ascii=True).encode()).hexdigest()


@dataclass
class OpenSources:
    """Every configured source, instantiated with its streams, and which stream reads from which."""

    sources: dict[str, Source]  # source name -> Source
    specs: dict[str, StreamSpec]  # stream name -> its spec
    of_stream: dict[str, Source]  # stream name -> the Source it reads
    adapter_of: dict[str, str]  # stream name -> adapter name (recorded in each record's source block)

    def close(self) -> None:
        for source in self.sources.values():
            source.close()


def open_sources(cfg: NodeConfig) -> OpenSources:
    """Instantiate every configured source with its streams; raises SourceError with a plain message."""
    streams = cfg.stream_configs()
    configs = cfg.source_configs()
    specs = {s.name: StreamSpec(s.name, s.options, s.key, s.cursor) for s in streams}
    sources = {name: load_adapter(sc.adapter)(sc.options, [specs[s.name] for s in streams if s.source == name])
               for name, sc in configs.items()}
    return OpenSources(sources, specs, {s.name: sources[s.source] for s in streams},
                       {s.name: configs[s.source].adapter for s in streams})


class Preparer:
    """Maps and validates rows of every stream; the same code serves `cx node check` and the service."""

    def __init__(self, cfg: NodeConfig, adapters: dict[str, str], schemas: SchemaRegistry | None = None,
                 today: Callable[[], date] = china_today):
        self.schemas = schemas or default_registry()
        self.streams = {s.name: s for s in cfg.stream_configs()}
        self.adapters = adapters  # stream -> adapter name
        self.today = today
        self.mappers = {}
        self.record_schemas = {}
        for s in self.streams.values():
            schema = self.schemas.get(s.type, s.schema_version)  # raises ProtocolError for an unknown type
            self.record_schemas[s.name] = schema
            self.mappers[s.name] = Mapper(s, cfg.code_tables, schema)

    def prepare(self, stream: str, rows: list[Row]) -> Prepared:
        cfg: StreamConfig = self.streams[stream]
        schema = self.record_schemas[stream]
        mapper = self.mappers[stream]
        today = self.today()
        extracted = utc_now()
        out = Prepared()
        for row in rows:
            key = row_key(row)
            record_id = None
            try:
                record_id = mapper.record_id(row)
                data, errors = mapper.map(row)
            except MappingError as exc:
                data, errors = {}, [exc.error]
            if not errors:
                errors = schema.check(data, today)
            line = b""
            if not errors:
                source = {"adapter": self.adapters[stream], "locator": row.locator, "extracted": extracted}
                if cfg.entered_by and row.values.get(cfg.entered_by) not in (None, ""):
                    source["entered_by"] = str(row.values[cfg.entered_by]).strip()
                record = RecordLine(record_id or "", cfg.type, schema.version, "upsert", data, source)
                try:  # what the hub's parser would refuse is refused here, with the same rule
                    record.check()
                    line = record.to_bytes()
                    if jsonutil.suspect(line):
                        jsonutil.refuse_bad_characters(record.to_json(), "record")
                except UnicodeEncodeError:  # a lone surrogate: UTF-8 cannot carry it
                    errors = [FieldError.from_protocol(ProtocolError(Reason.BAD_CHARACTER, "a lone surrogate"))]
                except ProtocolError as exc:
                    errors = [FieldError.from_protocol(exc)]
                if len(line) > DEFAULT_LIMITS.max_line_bytes:
                    errors = [FieldError("", "line_too_long", f"记录过长（{len(line)} 字节）",
                                         f"the record is {len(line)} bytes, over {DEFAULT_LIMITS.max_line_bytes}")]
            if errors:
                out.rejected.append(Rejected(stream, row.locator, key, record_id, cfg.type,
                                             [e.to_json() for e in errors]))
                continue
            out.valid_keys.append(key)
            out.queued.append(Queued(stream, record.record_id, cfg.type, schema.version, "upsert",
                                     content_hash(record), line, row.locator))
        return out

    def retraction(self, stream: str, record_id: str, record_type: str, locator: str) -> Queued:
        cfg = self.streams[stream]
        source = {"adapter": self.adapters[stream], "locator": locator, "extracted": utc_now()}
        record = RecordLine(record_id, record_type, self.record_schemas[stream].version, "retract", None, source,
                            RETRACT_REASON)
        return Queued(stream, record_id, cfg.type, record.schema_version, "retract", content_hash(record),
                      record.to_bytes(), locator)


def unit_report(chunk: Chunk, prepared: Prepared | None) -> UnitReport:
    if prepared is None:
        return UnitReport(chunk.unit or "", 0, 0, 0, [], chunk.error)
    rejections = [{"locator": r.locator, "errors": r.errors} for r in prepared.rejected]
    return UnitReport(chunk.unit or "", len(chunk.rows), len(prepared.queued), len(prepared.rejected), rejections)


class Collector:
    """Reads every stream from its saved position into the outbox. Runs in its own thread."""

    def __init__(self, cfg: NodeConfig, outbox: Outbox, *, schemas: SchemaRegistry | None = None,
                 today: Callable[[], date] = china_today, on_commit: Callable[[], None] | None = None):
        self.cfg = cfg
        self.outbox = outbox
        self.opened = open_sources(cfg)
        self.specs = self.opened.specs
        self.preparer = Preparer(cfg, self.opened.adapter_of, schemas, today)
        self.on_commit = on_commit or (lambda: None)
        self.last_error: str | None = None

    def close(self) -> None:
        self.opened.close()

    def collect_all(self) -> dict[str, StreamStats]:
        """One pass over every stream, each to the end of what its source holds now."""
        stats = {}
        for name in self.specs:
            stats[name] = self.collect(name)
        errors = [e for s in stats.values() for e in s.errors]
        self.last_error = errors[-1] if errors else None
        return stats

    def inventory(self) -> dict[str, int]:
        """Rows each record type holds at the source now, where the adapter can say."""
        out: dict[str, int] = {}
        for name, spec in self.specs.items():
            try:
                count = self.opened.of_stream[name].inventory(spec)
            except SourceError:
                count = None
            if count is not None:
                rtype = self.preparer.streams[name].type
                out[rtype] = out.get(rtype, 0) + count
        return out

    def collect(self, name: str) -> StreamStats:
        spec = self.specs[name]
        source = self.opened.of_stream[name]
        stats = StreamStats()
        snapshot_pass = self.outbox.snapshot_pass(name) + 1 if spec.snapshot else None
        position = None if spec.snapshot else self.outbox.position(name)
        try:
            for chunk in source.read(spec, position, self.cfg.delivery.chunk_rows):
                self._commit_chunk(source, spec, chunk, snapshot_pass, stats)
        except SourceError as exc:
            stats.errors.append(str(exc))
            log.warning("source error", stream=name, error=str(exc))
        return stats

    def _commit_chunk(self, source: Source, spec: StreamSpec, chunk: Chunk, snapshot_pass: int | None,
                      stats: StreamStats) -> None:
        name = spec.name
        if chunk.unit is not None and self.outbox.unit_state(chunk.unit) is not None:
            # committed before a crash or restart, not yet moved: finish it, take nothing twice
            source.finish(spec, chunk, UnitReport(chunk.unit, len(chunk.rows), 0, 0, [],
                                                  "already taken earlier 此前已处理"))
            self.outbox.finish_unit(chunk.unit)
            return
        if chunk.error is not None:
            stats.errors.append(chunk.error)
            self.outbox.commit_chunk(name, [], [Rejected(name, chunk.unit, None, None, self.preparer.streams[name].type,
                                                         [{"path": "", "rule": "unreadable", "message_zh": chunk.error,
                                                           "message_en": chunk.error, "value": None}])],
                                     unit=chunk.unit)
            source.finish(spec, chunk, unit_report(chunk, None))
            if chunk.unit:
                self.outbox.finish_unit(chunk.unit)
            return
        rows = chunk.rows
        stats.read += len(rows)
        # snapshot passes compare whole tables; a dropped file (a unit) is new rows, whatever the mode
        snapshot = spec.snapshot and chunk.unit is None
        snapshot_rows: list[tuple[str, str, str | None, str]] = []
        if snapshot:
            keys = [row_key(r) for r in rows]
            hashes = [row_hash(r) for r in rows]
            known = self.outbox.snapshot_hashes(name, keys)
            changed = [r for r, k, h in zip(rows, keys, hashes) if known.get(k) != h]
            unchanged_keys = [k for k, h in zip(keys, hashes) if known.get(k) == h]
            stats.unchanged += len(unchanged_keys)
            if unchanged_keys:
                self.outbox.touch_snapshot(name, unchanged_keys, snapshot_pass or 0)
            rows = changed
        prepared = self.preparer.prepare(name, rows)
        if snapshot:
            ids = dict(zip(prepared.valid_keys, (q.record_id for q in prepared.queued)))
            rtype = self.preparer.streams[name].type
            snapshot_rows = [(row_key(r), row_hash(r), ids.get(row_key(r)), rtype) for r in rows]
        result = self.outbox.commit_chunk(
            name, prepared.queued, prepared.rejected, valid_keys=prepared.valid_keys, position=chunk.position,
            set_position=not spec.snapshot, unit=chunk.unit, snapshot=snapshot_rows, snapshot_pass=snapshot_pass)
        stats.queued += result.queued
        stats.unchanged += result.unchanged
        stats.rejected += result.rejected
        if chunk.unit is not None:
            stats.units += 1
            source.finish(spec, chunk, unit_report(chunk, prepared))
            self.outbox.finish_unit(chunk.unit)
        if snapshot and chunk.snapshot_complete:
            stats.retracted += self._end_pass(name, snapshot_pass or 0)
        if result.queued or result.retracted:
            self.on_commit()

    def _end_pass(self, name: str, snapshot_pass: int) -> int:
        """Rows gone from the source since the last full pass become retractions."""
        gone = self.outbox.snapshot_deleted(name, snapshot_pass)
        retractions = []
        for key, record_id, rtype in gone:
            latest = self.outbox.latest_record(record_id) if record_id else None
            if latest is None:
                continue  # never sent (it was invalid): nothing to retract
            retractions.append(self.preparer.retraction(name, record_id, rtype, f"deleted row {key}"))
        if retractions:
            self.outbox.commit_chunk(name, [], [], deletions=retractions)
        self.outbox.end_snapshot_pass(name, snapshot_pass, [k for k, _, _ in gone])
        if retractions:
            self.on_commit()
        return len(retractions)


def iterate_check(cfg: NodeConfig) -> Iterator[tuple[str, Chunk, Prepared | None]]:
    """For `cx node check`: every stream read from the start, mapped and validated; nothing stored."""
    opened = open_sources(cfg)
    preparer = Preparer(cfg, opened.adapter_of)
    try:
        for name, spec in opened.specs.items():
            for chunk in opened.of_stream[name].read(spec, None, cfg.delivery.chunk_rows):
                yield name, chunk, None if chunk.error else preparer.prepare(name, chunk.rows)
    finally:
        opened.close()


def source_checks(cfg: NodeConfig) -> list[str]:
    """Problems reaching the sources, as messages; empty when every source answers."""
    problems = []
    try:
        opened = open_sources(cfg)
    except SourceError as exc:
        return [str(exc)]
    for name, source in opened.sources.items():
        try:
            source.check()
        except SourceError as exc:
            problems.append(f"[sources.{name}] {exc}")
        finally:
            source.close()
    return problems

