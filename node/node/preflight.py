"""What a node can tell is wrong before it reads a row: one set of checks, and words, for check and run.

`cx node check` and `cx node run` both stop here (exit 3) when the configuration cannot work: a key that
cannot be read, a handover file that does not parse, an unknown record type or field, a required field
left unmapped, a code table mapping to values the schema does not allow, a mapped column the source
does not have. The running node repeats the column check before each pass over a source, so a column
dropped at the source stops that stream instead of rejecting every row.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cx_adapters.base import SourceError, StreamConfigError

from ..config import ConfigError
from ..protocol.errors import ProtocolError
from ..protocol.keys import SigningKey
from ..protocol.validation import RecordSchema, SchemaRegistry, default_registry
from .config import NodeConfig, StreamConfig

EXIT_CONFIG = 3  # `cx node check` and `cx node run`: the configuration cannot work; nothing was read


@dataclass(frozen=True)
class Problem:
    where: str  # "[[streams]] penalties fields.subject_name", "[node] signing_key", …
    zh: str
    en: str

    def __str__(self) -> str:
        return f"{self.where}: {self.zh} / {self.en}"


def report(problems: Sequence[Problem]) -> str:
    """The block both commands print: every problem, then what to do."""
    lines = ["配置错误，未读取任何数据 configuration problem(s), nothing was read:"]
    lines += [f"  {p}" for p in problems]
    lines.append("修改 node.toml（或向交换中心索取交接文件）后运行 cx node check / fix node.toml (or get the handover file "
                 "from the hub operator), then run `cx node check`")
    return "\n".join(lines)


def node_problems(cfg: NodeConfig, *, handover_required: bool) -> list[Problem]:
    """The node's own identity: its signing key, the handover file and the hub key."""
    problems = []
    try:
        SigningKey.load(cfg.node.signing_key)
    except OSError as exc:
        problems.append(Problem("[node] signing_key", f"无法读取签名私钥 {cfg.node.signing_key}（{exc.strerror}）",
                                f"cannot read the signing key {cfg.node.signing_key}: {exc.strerror}"))
    except ProtocolError as exc:
        problems.append(Problem("[node] signing_key", f"签名私钥不可用：{exc.detail}",
                                f"the signing key cannot be used: {exc.detail}"))
    try:
        if cfg.handover(required=handover_required) is not None and handover_required:
            cfg.pinned_hub_key()
    except ConfigError as exc:
        problems.append(Problem("[node] handover", "交接文件不可用（见英文说明）", str(exc)))
    return problems


def mapping_problems(stream: StreamConfig, schema: RecordSchema, code_tables: dict[str, Any],
                     columns: Sequence[str] | None) -> list[Problem]:
    """A stream's mapping against its record type's schema and, when known, the source's columns."""
    where = f"[[streams]] {stream.name}"
    problems = []
    fields = schema.fields
    for name in stream.fields:
        if name not in fields:
            near = difflib.get_close_matches(name, list(fields), n=3)
            problems.append(Problem(f"{where} fields.{name}",
                                    f"记录类型 {schema.type}（{schema.title}）没有字段「{name}」" + _near_zh(near),
                                    f"record type {schema.type} has no field {name!r}" + _near_en(near)
                                    + " (cx validate --list shows the fields)"))
    for name in schema.schema.get("required", []):
        if name not in stream.fields:
            title = fields.get(name, {}).get("title", "")
            problems.append(Problem(f"{where} fields", f"必填字段「{name}」（{title}）未映射，每一行都会被退回",
                                    f"the required field {name!r} ({title}) is not mapped: every row would be rejected"))
    for name, spec in stream.fields.items():
        allowed = _allowed_values(fields.get(name, {}))
        if spec.map and allowed is not None:
            wrong = sorted({str(v) for v in code_tables.get(spec.map, {}).values()} - allowed)
            if wrong:
                problems.append(Problem(f"{where} fields.{name}",
                                        f"代码表 {spec.map} 映射到该字段不允许的值 {wrong}（允许：{sorted(allowed)}）",
                                        f"code table {spec.map!r} maps to values the field does not allow: {wrong} "
                                        f"(allowed: {sorted(allowed)})"))
        if spec.const is not None and allowed is not None and str(spec.const) not in allowed:
            problems.append(Problem(f"{where} fields.{name}", f"常量 {spec.const!r} 不是该字段允许的值（允许：{sorted(allowed)}）",
                                    f"const {spec.const!r} is not a value the field allows (allowed: {sorted(allowed)})"))
    if columns is not None:
        problems += _missing_columns(stream, columns)
    return problems


def _missing_columns(stream: StreamConfig, columns: Sequence[str]) -> list[Problem]:
    where = f"[[streams]] {stream.name}"
    wanted: list[tuple[str, str]] = []  # (where in node.toml, column)
    for name, spec in stream.fields.items():
        if spec.const is not None:
            continue
        if spec.template is not None:
            wanted += [(f"fields.{name}", c) for c in _template_columns(spec.template)]
        else:
            wanted.append((f"fields.{name}", spec.column or name))
    wanted += [("record_id", c) for c in _template_columns(stream.record_id)]
    if stream.entered_by:
        wanted.append(("entered_by", stream.entered_by))
    problems = []
    for place, column in wanted:
        if column in columns:
            continue
        near = [c for c in columns if c.casefold() == column.casefold()] or difflib.get_close_matches(
            column, list(columns), n=3)
        problems.append(Problem(f"{where} {place}", f"数据源中没有列「{column}」" + _near_zh(near),
                                f"the source has no column {column!r}" + _near_en(near)))
    return problems


def stream_problems(cfg: NodeConfig, columns_of: Any = None,
                    schemas: SchemaRegistry | None = None) -> tuple[list[Problem], list[str]]:
    """Every stream's type, mapping and columns: (problems, sources that could not be reached).

    `columns_of(stream_config)` gives the source's columns, or None when only rows can tell; it may raise
    StreamConfigError (a problem with the stream) or SourceError (the source is unreachable now).
    """
    schemas = schemas or default_registry()
    problems: list[Problem] = []
    unreachable: list[str] = []
    for stream in cfg.stream_configs():
        try:
            schema = schemas.get(stream.type, stream.schema_version)
        except ProtocolError:
            problems.append(Problem(f"[[streams]] {stream.name} type",
                                    f"未知的记录类型 {stream.type!r}" + (f" 版本 {stream.schema_version}" if
                                                                      stream.schema_version else ""),
                                    f"unknown record type {stream.type!r} (known: {', '.join(schemas.record_types())}; "
                                    "cx validate --list)"))
            continue
        columns = None
        if columns_of is not None:
            try:
                columns = columns_of(stream)
            except StreamConfigError as exc:
                problems.append(Problem(f"[[streams]] {stream.name}", "数据流与数据源不符（见英文说明）", str(exc)))
                continue
            except SourceError as exc:
                unreachable.append(f"[sources.{stream.source}] {exc}")
        problems += mapping_problems(stream, schema, cfg.code_tables, columns)
    return problems, unreachable


def configuration_problems(cfg: NodeConfig, opened: Any, *, handover_required: bool) -> tuple[list[Problem], list[str]]:
    """Everything above for a node whose sources are open (`collector.OpenSources`)."""
    def columns_of(stream: StreamConfig) -> Sequence[str] | None:
        return opened.of_stream[stream.name].columns(opened.specs[stream.name])

    problems = node_problems(cfg, handover_required=handover_required)
    found, unreachable = stream_problems(cfg, columns_of)
    return problems + found, unreachable


def _template_columns(template: str) -> list[str]:
    try:
        return [field for _, field, _, _ in string.Formatter().parse(template) if field]
    except ValueError:
        return []


def _allowed_values(prop: dict[str, Any]) -> set[str] | None:
    """The values a field (or a list field's items) may take, when the schema lists them."""
    found = prop.get("enum") or (prop.get("items") or {}).get("enum")
    return {str(v) for v in found} if found else None


def _near_zh(near: list[str]) -> str:
    return f"（相近的：{'、'.join(near)}）" if near else ""


def _near_en(near: list[str]) -> str:
    return f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""
