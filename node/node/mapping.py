"""Mapping source rows to record fields: columns, constants, dates, decimals, code tables, lists, ids."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from cx_adapters.base import Row

from ..protocol.errors import FieldError, shown_value
from ..protocol.validation import RecordSchema
from .config import FieldMap, StreamConfig

DATE_FORMS = [
    re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$"),
    re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$"),
    re.compile(r"^(\d{4})\.(\d{1,2})\.(\d{1,2})$"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
    re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日$"),
]
# a date that arrives with a time of day ("2016-03-01 00:00:00", "2016/3/1 9:30") keeps its date part
TIME_SUFFIX = re.compile(r"^(\S+)[ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:?\d{2}|Z)?$")


class MappingError(Exception):
    def __init__(self, error: FieldError):
        self.error = error


def parse_date(value: Any) -> str | None:
    """An ISO date from the forms Chinese office systems write, or None when it is not one."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if not isinstance(value, str):
        return None
    text = value.strip()
    timed = TIME_SUFFIX.match(text)
    if timed:
        text = timed.group(1)
    for form in DATE_FORMS:
        m = form.match(text)
        if m:
            try:
                return date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
            except ValueError:
                return None
    return None


def to_decimal(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = repr(value)
    try:
        number = Decimal(str(value).strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite():
        return None
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


class _Columns:
    """format_map source for templates: a named column as stripped text (converted only when named)."""

    def __init__(self, values: Mapping[str, Any]):
        self.values = values

    def __getitem__(self, key: str) -> str:
        return _text(self.values[key])  # a missing column raises KeyError: reported as a mapping error


DEFAULT_SPLIT = "、,，;；|"


def field_kinds(schema: RecordSchema) -> dict[str, str]:
    """What each field of a record type holds, so mapping converts values without being told."""
    kinds = {}
    for name, prop in schema.schema.get("properties", {}).items():
        fmt = schema.formats.get(name)
        if fmt in ("date", "decimal"):
            kinds[name] = fmt
        elif prop.get("type") == "array":
            kinds[name] = "array"
        elif prop.get("type") == "integer":
            kinds[name] = "integer"
    return kinds


class Mapper:
    """Turns one stream's source rows into (record_id, data) for its record type."""

    def __init__(self, stream: StreamConfig, code_tables: Mapping[str, Mapping[str, Any]], schema: RecordSchema):
        self.stream = stream
        self.code_tables = {name: {str(k): v for k, v in table.items()} for name, table in code_tables.items()}
        self.kinds = field_kinds(schema)
        self.converters = [(name, self._converter(name, spec)) for name, spec in stream.fields.items()]

    def record_id(self, row: Row) -> str:
        try:
            rid = self.stream.record_id.format_map(_Columns(row.values))
        except KeyError as exc:
            raise MappingError(FieldError("record_id", "record_id_template",
                                          f"记录标识模板引用了不存在的列 {exc}", f"record_id template names a missing column {exc}")) from None
        if not rid.strip():
            raise MappingError(FieldError("record_id", "record_id_template", "记录标识为空", "record id is empty"))
        return rid

    def map(self, row: Row) -> tuple[dict[str, Any], list[FieldError]]:
        """The record's data object and the mapping errors found (the row is rejected if any)."""
        data: dict[str, Any] = {}
        errors: list[FieldError] = []
        values = row.values
        for name, convert in self.converters:
            try:
                value = convert(values)
            except MappingError as exc:
                errors.append(exc.error)
                continue
            if value is not None and value != "" and value != []:
                data[name] = value
        return data, errors

    def _converter(self, name: str, spec: FieldMap) -> Callable[[Mapping[str, Any]], Any]:
        """values -> the field's value, chosen once per field: most fields are a constant or a text column
        taken as it is, and those need none of the questions `_field` asks of every value."""
        def general(values: Mapping[str, Any]) -> Any:
            return self._field(name, spec, values)

        if spec.const is not None:
            const = spec.const
            return lambda values: const
        if (spec.template is not None or spec.split is not None or spec.map is not None or spec.date or spec.decimal
                or name in self.kinds):
            return general
        column, trim = spec.column or name, spec.trim

        def text(values: Mapping[str, Any]) -> Any:
            value = values.get(column)
            if value.__class__ is not str:  # missing, None, bytes, numbers, dates, str subclasses: the long way
                return general(values)
            return (value.strip() if trim else value) or None
        return text

    def _field(self, name: str, spec: FieldMap, values: Mapping[str, Any]) -> Any:
        if spec.const is not None:
            return spec.const
        if spec.template is not None:
            try:
                return spec.template.format_map(_Columns(values)).strip()
            except KeyError as exc:
                raise MappingError(FieldError(name, "mapping", f"模板引用了不存在的列 {exc}",
                                              f"template names a missing column {exc}")) from None
        column = spec.column or name
        if column not in values:
            raise MappingError(FieldError(name, "mapping", f"源数据中没有列「{column}」",
                                          f"the source has no column {column!r}"))
        value = values[column]
        if value is None:
            return None
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise MappingError(FieldError(name, "mapping", f"列「{column}」不是文本", f"column {column!r} is not text")) from None
        if isinstance(value, str) and spec.trim:
            value = value.strip()
        if value == "":
            return None
        kind = self.kinds.get(name)
        if spec.split is not None or (kind == "array" and isinstance(value, str)):
            parts = [p.strip() for p in _splitter(spec.split or DEFAULT_SPLIT).split(_text(value))]
            return [self._coded(name, spec, p) for p in parts if p]
        value = self._coded(name, spec, value)
        if kind == "integer" and isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if spec.date or kind == "date":
            parsed = parse_date(value)
            if parsed is None:
                raise MappingError(FieldError(name, "date_parse", f"无法识别的日期「{shown_value(value)}」",
                                              f"cannot read {value!r} as a date", shown_value(value)))
            return parsed
        if spec.decimal or kind == "decimal":
            parsed = to_decimal(value)
            if parsed is None:
                raise MappingError(FieldError(name, "decimal_parse", f"无法识别的金额「{shown_value(value)}」",
                                              f"cannot read {value!r} as a number", shown_value(value)))
            return parsed
        return _json_value(value)

    def _coded(self, name: str, spec: FieldMap, value: Any) -> Any:
        if spec.map is None:
            return value
        table = self.code_tables[spec.map]
        key = _text(value)
        if key not in table:
            raise MappingError(FieldError(name, "code_table", f"代码「{key}」不在代码表 {spec.map} 中",
                                          f"code {key!r} is not in code table {spec.map!r}", shown_value(key)))
        return table[key]


@functools.lru_cache(maxsize=64)
def _splitter(separators: str) -> re.Pattern[str]:
    """A pattern splitting on any one of these characters (compiled once per set of separators)."""
    return re.compile("[" + re.escape(separators) + "]")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value).strip()


def _json_value(value: Any) -> Any:
    """A value as JSON can carry it: numbers stay numbers, dates become ISO text, the rest text."""
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, Decimal):
        return _text(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)
