"""The schema registry: one validator per (record type, version), errors in Chinese and English."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from cx.schemas.rules import RULES, RuleContext

from . import codes
from .envelope import CHINA, RecordLine
from .errors import FieldError, ProtocolError, Reason, shown_value

# \Z, not $: `$` also matches before a final newline ("12.50\n" is not a decimal)
DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
DECIMAL = re.compile(r"^-?(0|[1-9][0-9]{0,17})(\.[0-9]{1,6})?\Z")
REGION = re.compile(r"^[1-8][0-9]{5}\Z")
# The producing authority of a record (谁产生): the first of these data fields that is a string
AUTHORITY_FIELDS = ("authority", "court", "arbitration_body", "registration_authority", "conferred_by")
# Data fields the hub keeps in columns of their own (provenance, search) and the most code points each may
# hold. Every record type's schema must bound them at least this tightly: `SchemaRegistry` refuses to
# compile one that does not, so no valid record can hold a value the hub's store cannot keep.
KEPT_DATA_FIELDS = {"subject_name": 200, "uscc": 18, "authority_uscc": 18, "entered_by": 100,
                    **{name: 200 for name in AUTHORITY_FIELDS}}
FORMAT_LENGTHS = {"uscc": 18}  # formats that fix a value's length
PROVINCES = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46,
             50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82}


def china_today() -> date:
    return datetime.now(CHINA).date()


# -- formats -------------------------------------------------------------------------------

def is_date(value: Any) -> bool:
    if not isinstance(value, str):
        return True  # the "type" keyword reports non-strings
    if not DATE.match(value):
        return False
    try:
        return 1900 <= date.fromisoformat(value).year <= 2100
    except ValueError:
        return False


def is_decimal(value: Any) -> bool:
    return not isinstance(value, str) or DECIMAL.match(value) is not None


def is_region(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    return REGION.match(value) is not None and int(value[:2]) in PROVINCES


def _code_format(problem: Any) -> Any:
    return lambda value: not isinstance(value, str) or problem(value) is None


_DOLLAR = re.compile(r"(?<!\\)\$")


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterable[ValidationError]:
    """`pattern` as JSON Schema (ECMA 262) means it: `$` ends the string, it does not allow a final
    newline as Python's `$` does. fastjsonschema reads it the same way, so the two validators agree."""
    if validator.is_type(instance, "string") and not re.search(_DOLLAR.sub(r"\\Z", pattern), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


ReferenceValidator = validators.extend(Draft202012Validator, {"pattern": _pattern})

FORMAT_CHECKER = FormatChecker(formats=())
for _name, _check in {
    "date": is_date,
    "decimal": is_decimal,
    "region": is_region,
    "uscc": _code_format(codes.uscc_problem),
    "org_code": _code_format(codes.org_code_problem),
}.items():
    FORMAT_CHECKER.checks(_name)(_check)

FORMAT_MESSAGES = {
    "date": ("日期无效，应为真实存在的日期，格式 YYYY-MM-DD", "not a real calendar date in the form YYYY-MM-DD"),
    "decimal": ('金额应为数字字符串，如 "12.50"', 'not a decimal string such as "12.50"'),
    "region": ("行政区划代码无效，应为6位数字（GB/T 2260）", "not a 6-digit administrative division code (GB/T 2260)"),
}
CODE_PROBLEMS = {
    "length": ("位数不对", "wrong length"),
    "charset": ("含有不允许的字符", "contains characters outside the code's alphabet"),
    "region": ("第3至8位应为行政区划代码", "positions 3-8 must be a region code"),
    "check": ("校验位错误", "wrong check character"),
    "org_check": ("第9至17位的组织机构代码校验位错误", "the organisation code in positions 9-17 has a wrong check character"),
}
CODE_NAMES = {"uscc": ("统一社会信用代码", "unified social credit code", 18),
              "org_code": ("组织机构代码", "organisation code", 9)}
TYPE_NAMES = {"string": ("文本", "a string"), "integer": ("整数", "an integer"), "array": ("列表", "a list"),
              "object": ("对象", "an object"), "number": ("数字", "a number"), "boolean": ("布尔值", "a boolean")}


# -- per-type schemas ----------------------------------------------------------------------

@dataclass
class RecordSchema:
    """A record type at one schema version, with its compiled validator and rules."""

    type: str
    version: int
    title: str
    event_date: str
    limit_days: int
    schema: Mapping[str, Any]
    titles: dict[str, str]
    personal: frozenset[str]
    formats: dict[str, str]  # field -> format name
    fields: Mapping[str, Any]  # field -> its schema with every $ref resolved (type, enum, title …)
    validator: Draft202012Validator = field(repr=False)
    fast: Callable[[Any], Any] = field(repr=False)
    rules: list[Any] = field(repr=False)

    def check(self, data: Any, today: date | None = None) -> list[FieldError]:
        """Every problem with one record's data; an empty list means valid."""
        try:
            self.fast(data)
        except fastjsonschema.JsonSchemaException:
            errors = self._schema_errors(data)
        else:
            errors = []
        if not errors and isinstance(data, dict):
            ctx = RuleContext(today or china_today(), self.event_date, self.titles)
            errors = [self._shown(e) for rule in self.rules for e in rule(data, ctx)]
        return errors

    def _schema_errors(self, data: Any) -> list[FieldError]:
        """All schema errors, explained; the reference validator, run only on invalid data."""
        errors: list[FieldError] = []
        grouped: set[tuple[Any, ...]] = set()
        for e in self.validator.iter_errors(data):
            if e.validator in ("required", "dependentRequired", "additionalProperties"):
                # report these per field, read from the instance once (jsonschema groups them unevenly)
                key = (e.validator, *e.absolute_path)
                if key not in grouped:
                    grouped.add(key)
                    errors.extend(self._missing(e))
            else:
                errors.append(self._explain(e))
        return errors

    def _shown(self, error: FieldError) -> FieldError:
        top = error.path.split("[", 1)[0].split(".", 1)[0]
        value = shown_value(error.value, top in self.personal)
        return FieldError(error.path, error.rule, error.message_zh, error.message_en, value)

    def _missing(self, e: ValidationError) -> list[FieldError]:
        obj, prefix = e.instance, _path(e.absolute_path)
        if e.validator == "additionalProperties":
            known = e.schema.get("properties", {})
            return [FieldError(f"{prefix}.{f}" if prefix else f, "additional_properties",
                               f"字段「{f}」不在数据规范中，不允许提交", f"field '{f}' is not in the schema",
                               shown_value(obj[f], personal=True))
                    for f in obj if f not in known]
        if e.validator == "required":
            return [FieldError(f"{prefix}.{f}" if prefix else f, "required",
                               f"缺少必填字段「{self.titles.get(f, f)}」({f})", f"required field '{f}' is missing")
                    for f in e.validator_value if f not in obj]
        return [FieldError(f, "dependent_required",
                           f"填写了「{self.titles.get(trigger, trigger)}」时必须填写「{self.titles.get(f, f)}」",
                           f"'{f}' is required when '{trigger}' is given")
                for trigger, needed in e.validator_value.items() if trigger in obj
                for f in needed if f not in obj]

    def _explain(self, e: ValidationError) -> FieldError:
        path = _path(e.absolute_path)
        top = str(e.absolute_path[0]) if e.absolute_path else ""
        title = self.titles.get(top, top)
        name = f"「{title}」" if title else "记录"
        en_name = f"'{path}'" if path else "the record"
        kw, arg = e.validator, e.validator_value
        value = e.instance
        if kw == "type":
            wanted = arg if isinstance(arg, list) else [arg]
            if self.formats.get(top) == "decimal" and isinstance(value, (int, float)):
                return self._shown(FieldError(path, "decimal", f'{name}应写成字符串，如 "12.50"，不能是数字',
                                              f'{en_name} must be a decimal string such as "12.50", not a JSON number',
                                              value))
            zh = "或".join(TYPE_NAMES.get(t, (t, t))[0] for t in wanted)
            en = " or ".join(TYPE_NAMES.get(t, (t, t))[1] for t in wanted)
            return self._shown(FieldError(path, "type", f"{name}类型应为{zh}", f"{en_name} must be {en}", value))
        if kw == "enum":
            options = "、".join(str(o) for o in arg)
            return self._shown(FieldError(path, "enum", f"{name}取值无效，应为：{options}",
                                          f"{en_name} must be one of: {', '.join(map(str, arg))}", value))
        if kw == "format":
            return self._shown(self._format_error(path, name, en_name, arg, value))
        if kw == "minLength" and arg == 1:
            return self._shown(FieldError(path, "min_length", f"{name}不能为空", f"{en_name} must not be empty", value))
        simple = {
            "minLength": ("min_length", f"{name}长度不能少于 {arg} 个字符", f"{en_name} is shorter than {arg} characters"),
            "maxLength": ("max_length", f"{name}过长，最多 {arg} 个字符", f"{en_name} is longer than {arg} characters"),
            "pattern": ("pattern", f"{name}格式不正确（应符合 {arg}）", f"{en_name} does not match {arg}"),
            "minItems": ("min_items", f"{name}至少需要 {arg} 项", f"{en_name} needs at least {arg} items"),
            "maxItems": ("max_items", f"{name}最多 {arg} 项", f"{en_name} has more than {arg} items"),
            "uniqueItems": ("unique_items", f"{name}有重复项", f"{en_name} has duplicate items"),
            "minimum": ("minimum", f"{name}不能小于 {arg}", f"{en_name} is less than {arg}"),
            "maximum": ("maximum", f"{name}不能大于 {arg}", f"{en_name} is greater than {arg}"),
            "maxProperties": ("max_properties", f"{name}字段过多，最多 {arg} 个", f"{en_name} has more than {arg} keys"),
        }
        rule, zh, en = simple.get(kw, (kw, f"{name}不符合规则 {kw}", f"{en_name}: {e.message}"))
        return self._shown(FieldError(path, rule, zh, en, value))

    def _format_error(self, path: str, name: str, en_name: str, fmt: str, value: Any) -> FieldError:
        if fmt in CODE_NAMES:
            zh_code, en_code, _ = CODE_NAMES[fmt]
            problem = (codes.uscc_problem if fmt == "uscc" else codes.org_code_problem)(value) or "check"
            zh_p, en_p = CODE_PROBLEMS[problem]
            return FieldError(path, f"format:{fmt}", f"{name}不是有效的{zh_code}：{zh_p}",
                              f"{en_name} is not a valid {en_code}: {en_p}", value)
        zh, en = FORMAT_MESSAGES.get(fmt, (f"格式 {fmt} 不正确", f"invalid {fmt}"))
        return FieldError(path, f"format:{fmt}", f"{name}{zh}", f"{en_name}: {en}", value)


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# -- the registry --------------------------------------------------------------------------

class SchemaRegistry:
    """Every schema document by $id, resolved through `referencing`; validators built once."""

    def __init__(self, documents: Iterable[Mapping[str, Any]]):
        self.documents = {doc["$id"]: doc for doc in documents}
        self.registry: Registry = Registry().with_resources(
            (uri, Resource.from_contents(doc, default_specification=DRAFT202012))
            for uri, doc in self.documents.items()
        )
        self.types: dict[str, dict[int, Mapping[str, Any]]] = {}
        for doc in self.documents.values():
            if "x-record-type" in doc:
                self.types.setdefault(doc["x-record-type"], {})[doc["x-version"]] = doc
        self._compiled: dict[tuple[str, int], RecordSchema] = {}

    @classmethod
    def from_package(cls) -> SchemaRegistry:
        folder = resources.files("cx.schemas")
        docs = [json.loads(f.read_text("utf-8")) for f in folder.iterdir() if f.name.endswith(".json")]
        return cls(docs)

    def record_types(self) -> list[str]:
        return sorted(self.types)

    def latest(self, type_: str) -> int:
        return max(self._versions(type_))

    def _versions(self, type_: str) -> dict[int, Mapping[str, Any]]:
        try:
            return self.types[type_]
        except KeyError:
            raise ProtocolError(Reason.UNKNOWN_SCHEMA, f"unknown record type {type_!r}") from None

    def get(self, type_: str, version: int | None = None) -> RecordSchema:
        version = self.latest(type_) if version is None else version
        compiled = self._compiled.get((type_, version))
        if compiled is None:
            compiled = self._compiled[(type_, version)] = self._compile(type_, version)
        return compiled

    def _compile(self, type_: str, version: int) -> RecordSchema:
        doc = self._versions(type_).get(version)
        if doc is None:
            raise ProtocolError(Reason.UNKNOWN_SCHEMA, f"record type {type_!r} has no schema version {version}")
        resolver = self.registry.resolver(base_uri=doc["$id"])
        flat = _dereference(doc, resolver)
        titles, personal, formats = {}, set(), {}
        for name, prop in doc["properties"].items():
            resolved = _resolve(resolver, prop)
            if name in KEPT_DATA_FIELDS:
                _check_kept(type_, version, name, resolved)
            titles[name] = prop.get("title") or resolved.get("title") or name
            if resolved.get("x-personal"):
                personal.add(name)
            if "format" in resolved:
                formats[name] = resolved["format"]
        return RecordSchema(
            type=type_, version=version, title=doc["title"], event_date=doc["x-event-date"],
            limit_days=doc["x-limit-days"], schema=doc, titles=titles, personal=frozenset(personal),
            formats=formats, fields=flat.get("properties", {}), fast=_compile_fast(flat),
            validator=ReferenceValidator(doc, registry=self.registry, format_checker=FORMAT_CHECKER),
            rules=[RULES[name] for name in doc.get("x-rules", [])],
        )

    def check_record(self, record: RecordLine, today: date | None = None) -> list[FieldError]:
        """Errors for one record line; a retraction carries no data to check."""
        try:
            schema = self.get(record.type, record.schema_version)
        except ProtocolError as exc:
            return [FieldError("", Reason.UNKNOWN_SCHEMA.value, f"未知的记录类型或数据规范版本：{exc.detail}",
                               exc.detail, f"{record.type}/{record.schema_version}")]
        if record.op == "retract":
            return []
        return schema.check(record.data, today)


def _check_kept(type_: str, version: int, name: str, schema: Mapping[str, Any]) -> None:
    """A field the hub keeps in a column must be a string no longer than the column (KEPT_DATA_FIELDS)."""
    longest = FORMAT_LENGTHS.get(schema.get("format"), schema.get("maxLength"))
    if schema.get("type") != "string" or longest is None or longest > KEPT_DATA_FIELDS[name]:
        raise ValueError(f"schema {type_} v{version}: field {name!r} must be a string of at most "
                         f"{KEPT_DATA_FIELDS[name]} characters (the hub keeps it in a column of that size)")


def _dereference(schema: Any, resolver: Any) -> Any:
    """A copy of a schema with every $ref replaced by what it points to (our schemas are not recursive)."""
    if isinstance(schema, list):
        return [_dereference(item, resolver) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _dereference(v, resolver) for k, v in schema.items() if k != "$ref"}
    if "$ref" in schema:
        target = resolver.lookup(schema["$ref"])
        out = {**_dereference(target.contents, target.resolver), **out}
    return out


FAST_FORMATS = {
    "date": is_date,
    "decimal": DECIMAL.pattern,
    "region": is_region,
    "uscc": codes.is_uscc,
    "org_code": codes.is_org_code,
}


def _compile_fast(flat: Mapping[str, Any]) -> Callable[[Any], Any]:
    """A compiled validator (fastjsonschema, ~6x faster than jsonschema here) that only says yes or no.

    It speaks draft 7, so the one 2020-12 keyword our schemas use is given its draft-7 name;
    tests check that both validators agree.
    """
    schema = {k: v for k, v in flat.items() if k not in ("$schema", "$id", "$defs", "dependentRequired")}
    if "dependentRequired" in flat:
        schema["dependencies"] = flat["dependentRequired"]
    return fastjsonschema.compile(schema, formats=FAST_FORMATS)


def _resolve(resolver: Any, schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow $ref chains to the schema that holds the field's constraints."""
    merged: dict[str, Any] = {}
    while True:
        merged = {**schema, **merged}
        ref = schema.get("$ref")
        if ref is None:
            return merged
        resolved = resolver.lookup(ref)
        schema, resolver = resolved.contents, resolved.resolver


@cache
def default_registry() -> SchemaRegistry:
    """The schemas shipped with this version of Credit Exchange, loaded once per process."""
    return SchemaRegistry.from_package()
