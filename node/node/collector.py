"""Reading sources into the outbox: map, validate locally, commit valid records with the reading position."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import structlog
from cx_adapters.base import Chunk, Row, Source, SourceError, StreamConfigError, StreamSpec, UnitReport, load_adapter

from .. import __version__
from ..protocol import jsonutil
from ..protocol.envelope import DEFAULT_LIMITS, RecordLine, content_hash, utc_now
from ..protocol.errors import FieldError, ProtocolError, Reason
from ..protocol.validation import SchemaRegistry, china_today, default_registry
from .config import NodeConfig, StreamConfig
from .mapping import Mapper, MappingError
from .outbox import Outbox, Queued, Rejected
from .preflight import Problem, mapping_problems

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


@dataclass
class Reread:
    """What reading rejected rows again from the source found, per stream."""

    asked: int = 0  # open rejections of rows this node refused
    found: int = 0  # rows the source still holds
    valid: int = 0  # now valid: queued for delivery
    invalid: int = 0  # still invalid (their rejections are renewed)
    gone: int = 0  # no longer at the source: their rejections are resolved
    cannot: int = 0  # the source cannot find them again (unreadable files, a source without re-reading)
    error: str | None = None


# json.dumps(..., ensure_ascii=False) builds an encoder on every call; the same encoder, made once
_row_key_json = json.JSONEncoder(ensure_ascii=False).encode


def row_key(row: Row) -> str:
    return _row_key_json(list(row.key))


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

    def prepare(self, stream: str, rows: list[Row], refer: Callable[[Row], Any] | None = None) -> Prepared:
        """Map and validate rows; `refer(row)` gives a rejected row's reference for reading it again."""
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
                                             [e.to_json() for e in errors], refer(row) if refer else None))
                continue
            out.valid_keys.append(key)
            out.queued.append(Queued(stream, record.record_id, cfg.type, schema.version, "upsert",
                                     content_hash(record), line, row.locator))
        return out

    def fingerprint(self, stream: str, code_tables: dict[str, Any]) -> str:
        """What decides whether a row of this stream is valid: its mapping, code tables, schema, this version.

        When it changes, rows rejected before are read again (`Collector.reread`).
        """
        cfg = self.streams[stream]
        tables = {name: code_tables.get(name) for name in sorted({f.map for f in cfg.fields.values() if f.map})}
        schema = self.record_schemas[stream]
        described = {"type": cfg.type, "version": schema.version, "schema": schema.schema, "record_id": cfg.record_id,
                     "entered_by": cfg.entered_by, "fields": {k: vars(v) for k, v in sorted(cfg.fields.items())},
                     "code_tables": tables, "cx": __version__}
        return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()

    def retraction(self, stream: str, record_id: str, record_type: str, locator: str,
                   reason: str = RETRACT_REASON) -> Queued:
        """A retraction of a record this node sent; a reason starting with 信用修复 makes it a credit repair."""
        cfg = self.streams[stream]
        source = {"adapter": self.adapters[stream], "locator": locator, "extracted": utc_now()}
        record = RecordLine(record_id, record_type, self.record_schemas[stream].version, "retract", None, source,
                            reason)
        return Queued(stream, record_id, cfg.type, record.schema_version, "retract", content_hash(record),
                      record.to_bytes(), locator)


def unit_key(unit: str | None) -> str | None:
    """The rejection key of a whole dropped file: its name (a corrected copy has another hash, the same name)."""
    return f"file:{unit.rpartition(':')[0]}" if unit else None


def unit_report(chunk: Chunk, prepared: Prepared | None) -> UnitReport:
    if prepared is None:
        return UnitReport(chunk.unit or "", 0, 0, 0, [])  # the chunk's error is the unit's error
    rejections = [{"locator": r.locator, "errors": r.errors} for r in prepared.rejected]
    return UnitReport(chunk.unit or "", len(chunk.rows), len(prepared.queued), len(prepared.rejected), rejections)


class Collector:
    """Reads every stream from its saved position into the outbox. Runs in its own thread."""

    def __init__(self, cfg: NodeConfig, outbox: Outbox, *, schemas: SchemaRegistry | None = None,
                 today: Callable[[], date] = china_today, on_commit: Callable[[], None] | None = None,
                 opened: OpenSources | None = None):
        self.cfg = cfg
        self.outbox = outbox
        self.opened = opened or open_sources(cfg)
        self.specs = self.opened.specs
        self.preparer = Preparer(cfg, self.opened.adapter_of, schemas, today)
        self.on_commit = on_commit or (lambda: None)
        self.last_error: str | None = None
        # streams whose mapping, code tables or schema changed since their rows were last judged: their
        # rejected rows are read again before the next pass
        self.changed = [name for name in self.specs if self._fingerprint_changed(name)]

    def close(self) -> None:
        self.opened.close()

    def _fingerprint_changed(self, name: str) -> bool:
        return self.outbox.state_value(f"fingerprint:{name}") != self.preparer.fingerprint(name, self.cfg.code_tables)

    def collect_all(self) -> dict[str, StreamStats]:
        """One pass over every stream, each to the end of what its source holds now."""
        if self.changed:
            for name, found in self.reread(self.changed).items():
                if found.asked:
                    log.info("rejected rows read again after a configuration or schema change", stream=name,
                             **{k: v for k, v in vars(found).items() if v})
        stats = {}
        for name in self.specs:
            stats[name] = self.collect(name)
        errors = [e for s in stats.values() for e in s.errors]
        self.last_error = errors[-1] if errors else None
        return stats

    def stream_problems(self, name: str) -> list[Problem]:
        """The stream's mapping against the columns its source has now (nothing when only rows can tell)."""
        spec = self.specs[name]
        stream = self.preparer.streams[name]
        columns = self.opened.of_stream[name].columns(spec)
        if columns is None:
            return []
        return mapping_problems(stream, self.preparer.record_schemas[name], self.cfg.code_tables, columns)

    def reread(self, names: list[str] | None = None) -> dict[str, Reread]:
        """Read the rows this node rejected again from their sources, by their keys; queue those now valid.

        Done when a stream's mapping, code tables or schema changed, and when people ask (`cx node retry`).
        """
        out = {}
        for name in names if names is not None else list(self.specs):
            found = out[name] = Reread()
            try:
                self._reread(name, found)
            except SourceError as exc:
                found.error = str(exc)
                log.warning("rejected rows could not be read again", stream=name, error=str(exc))
                continue
            self.outbox.set_state(f"fingerprint:{name}", self.preparer.fingerprint(name, self.cfg.code_tables))
            if name in self.changed:
                self.changed.remove(name)
        return out

    def _reread(self, name: str, found: Reread) -> None:
        spec = self.specs[name]
        source = self.opened.of_stream[name]
        open_rows = self.outbox.open_local_rejections(name)  # (row_key, ref)
        found.asked = len(open_rows)
        refs = [ref for _, ref in open_rows if ref is not None]
        found.cannot = found.asked - len(refs)
        if not refs:
            return
        if self.stream_problems(name):
            raise StreamConfigError("; ".join(map(str, self.stream_problems(name))))
        seen: set[str] = set()
        snapshot_pass = self.outbox.snapshot_pass(name) if spec.snapshot else None
        for chunk in source.reread(spec, refs):
            prepared = self.preparer.prepare(name, chunk.rows, lambda row, c=chunk: source.ref(spec, c, row))
            snapshot_rows = []
            if spec.snapshot and chunk.unit is None:
                ids = dict(zip(prepared.valid_keys, (q.record_id for q in prepared.queued)))
                rtype = self.preparer.streams[name].type
                snapshot_rows = [(row_key(r), row_hash(r), ids.get(row_key(r)), rtype) for r in chunk.rows]
            result = self.outbox.commit_chunk(name, prepared.queued, prepared.rejected,
                                              valid_keys=prepared.valid_keys, snapshot=snapshot_rows,
                                              snapshot_pass=snapshot_pass)
            seen.update(row_key(r) for r in chunk.rows)
            found.found += len(chunk.rows)
            found.valid += len(prepared.queued)
            found.invalid += result.rejected
            if result.queued:
                self.on_commit()
        gone = [key for key, ref in open_rows if ref is not None and key not in seen]
        found.gone = self.outbox.resolve_rejections(name, gone)

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
            problems = self.stream_problems(name)
            if problems:  # e.g. a column dropped at the source: stop this stream rather than reject every row
                raise StreamConfigError("; ".join(map(str, problems)))
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
            # nothing was taken from it, so no unit is recorded: put back (corrected) it is read again
            stats.errors.append(chunk.error)
            self.outbox.commit_chunk(name, [], [Rejected(name, chunk.unit, unit_key(chunk.unit), None,
                                                         self.preparer.streams[name].type,
                                                         [{"path": "", "rule": "unreadable", "message_zh": chunk.error,
                                                           "message_en": chunk.error, "value": None}])])
            source.finish(spec, chunk, unit_report(chunk, None))
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
        prepared = self.preparer.prepare(name, rows, lambda row: source.ref(spec, chunk, row))
        if chunk.unit is not None:  # a file read at last resolves what was said about an unreadable one
            prepared.valid_keys.append(unit_key(chunk.unit))
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
            if not record_id or self.outbox.latest_version(record_id) is None:
                continue  # never sent (it was invalid): nothing to retract
            retractions.append(self.preparer.retraction(name, record_id, rtype, f"deleted row {key}"))
        if retractions:
            self.outbox.commit_chunk(name, [], [], deletions=retractions)
        self.outbox.resolve_rejections(name, [k for k, _, _ in gone])  # a row deleted at the source needs no fix
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

