"""The `cx` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import __version__
from .config import ConfigError, UsageError, print_json
from .protocol import jsonutil
from .protocol.bundle import ProofBundle
from .protocol.envelope import DEPT_ID, RecordLine
from .protocol.errors import FieldError, ProtocolError
from .protocol.keys import PublicKey, generate_key_files
from .protocol.validation import default_registry

EXIT_OK, EXIT_INVALID, EXIT_UNUSABLE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_OK
    try:
        return args.run(args)
    except (UsageError, ConfigError) as exc:
        print(f"cx: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `cx … | head`: the reader left; nothing to report
        sys.stderr.close()
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cx",
        description="Credit Exchange 企业信用信息交换: signed, schema-validated exchange of enterprise "
                    "credit records between departments and a hub.",
    )
    parser.add_argument("--version", action="version", version=f"credit-exchange {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    keys = commands.add_parser("keys", help="create signing keys 生成签名密钥")
    key_commands = keys.add_subparsers(title="keys commands", metavar="ACTION", required=True)
    init = key_commands.add_parser("init", help="write an Ed25519 key pair for a department and print its key id")
    init.add_argument("--dept", required=True, help="department id, e.g. amr (lower-case letters, digits, - and _)")
    init.add_argument("--dir", required=True, type=Path, help="folder for <dept>.key (mode 0600) and <dept>.pub")
    init.set_defaults(run=run_keys_init)

    validate = commands.add_parser(
        "validate", help="check records against a record type's schema 校验数据; --list shows the record types",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="record types 记录类型 (`cx validate --list --type TYPE` shows a type's fields 字段):\n"
               + "\n".join(f"  {t:<26} {title}" for t, title in _record_types()))
    validate.add_argument("--type", dest="record_type", help="record type, e.g. administrative_penalty")
    validate.add_argument("--schema-version", type=int, default=None, help="schema version (default: the latest)")
    validate.add_argument("--format", choices=("text", "json"), default="text")
    validate.add_argument("--list", action="store_true", help="list the record types, or with --type the type's "
                                                              "fields with their Chinese titles, and exit")
    validate.add_argument("file", type=Path, nargs="?", help="JSON Lines (one data object per line) or a JSON array")
    validate.set_defaults(run=run_validate)

    verify = commands.add_parser("verify", help="check a record's proof bundle offline 验证存证")
    verify.add_argument("bundle", type=Path, help="proof bundle JSON from the hub's API")
    verify.add_argument("--public-key", required=True, type=Path, help="the department's public key (PEM)")
    verify.set_defaults(run=run_verify)

    verify_trail = commands.add_parser("verify-trail", help="check an exported access-trail segment offline 验证留痕")
    verify_trail.add_argument("segment", type=Path, help="segment JSON from the hub (/api/v1/trail/segment)")
    verify_trail.add_argument("--public-key", required=True, type=Path, help="the hub's public key (PEM)")
    verify_trail.set_defaults(run=run_verify_trail)
    verify_report = commands.add_parser("verify-report", help="check a compliance report's signature offline 验证报告")
    verify_report.add_argument("report", type=Path, help="the report file (HTML, PDF, XLSX, CSV or JSON)")
    verify_report.add_argument("--signature", type=Path, help="its signature file (default: REPORT.sig)")
    verify_report.add_argument("--public-key", required=True, type=Path, help="the hub's public key (PEM)")
    verify_report.set_defaults(run=run_verify_report)
    verify_check = commands.add_parser("verify-credit-check", help="check a credit check's signed document offline "
                                                                   "验证信用审查结果")
    verify_check.add_argument("document", type=Path, help="the signed JSON document the hub gave (credit-check-….json)")
    verify_check.add_argument("--public-key", required=True, type=Path, help="the hub's public key (PEM)")
    verify_check.set_defaults(run=run_verify_credit_check)

    from .hub import cli as hub_cli
    from .hub.compliance_cli import register_report
    from .node import cli as node_cli

    hub_cli.register(commands)
    register_report(commands, hub_cli._config_arg)
    node_cli.register(commands)
    return parser


# -- cx keys init ----------------------------------------------------------------------------

def run_keys_init(args: argparse.Namespace) -> int:
    if not DEPT_ID.match(args.dept):
        raise UsageError(f"部门标识无效 invalid department id {args.dept!r}: use 1-32 lower-case letters, digits, - or _, "
                         "starting with a letter")
    try:
        key = generate_key_files(args.dir, args.dept)
    except FileExistsError as exc:
        raise UsageError(f"密钥已存在，不会覆盖 {exc}") from None
    print(key.key_id)
    print(f"private key 私钥: {args.dir / (args.dept + '.key')} (mode 0600, keep it on this machine)", file=sys.stderr)
    print(f"public key 公钥:  {args.dir / (args.dept + '.pub')} (send this to the hub operator)", file=sys.stderr)
    return EXIT_OK


# -- cx validate -----------------------------------------------------------------------------

def read_data_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """(number, decoded value or ProtocolError) for each item of a JSON Lines file or JSON array."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"无法读取文件 cannot read {path}: {exc.strerror}") from None
    text = raw.lstrip(b"\xef\xbb\xbf")
    if text.lstrip()[:1] == b"[":
        try:
            items = jsonutil.loads(text, max_depth=jsonutil.MAX_DEPTH + 1, what=str(path))
        except ProtocolError as exc:
            raise UsageError(f"不是有效的 JSON 数组 not a usable JSON array: {exc.detail}") from None
        yield from enumerate(items, start=1)
        return
    for number, line in enumerate(text.split(b"\n"), start=1):
        if line.strip():
            try:
                yield number, jsonutil.loads(line.rstrip(b"\r"), what=f"line {number}")
            except ProtocolError as exc:
                yield number, exc


def _record_types() -> list[tuple[str, str]]:
    registry = default_registry()
    return [(t, registry.get(t).title) for t in registry.record_types()]


def run_validate(args: argparse.Namespace) -> int:
    registry = default_registry()
    if args.list and not args.record_type:
        return list_record_types(args.format)
    if not args.record_type:
        raise UsageError("给出 --type 记录类型（cx validate --list 列出全部）give --type TYPE (cx validate --list shows them)")
    try:
        schema = registry.get(args.record_type, args.schema_version)
    except ProtocolError:
        known = ", ".join(registry.record_types())
        raise UsageError(f"未知的记录类型 unknown record type {args.record_type!r} "
                         f"(version {args.schema_version or 'latest'}); known: {known}") from None
    if args.list:
        return list_fields(schema, args.format)
    if args.file is None:
        raise UsageError("给出要校验的文件 give the file to check (JSON Lines or a JSON array)")
    results = []
    for number, item in read_data_objects(args.file):
        errors = [FieldError.from_protocol(item)] if isinstance(item, ProtocolError) else schema.check(item)
        results.append({"line": number, "valid": not errors, "errors": [e.to_json() for e in errors]})
    invalid = [r for r in results if not r["valid"]]
    if args.format == "json":
        print_json(results)
    else:
        for r in invalid:
            print(f"line {r['line']}: invalid 不合格")
            for e in r["errors"]:
                value = "" if e["value"] is None else f"  value 值: {e['value']!r}"
                print(f"  - {e['path'] or '(record)'} [{e['rule']}] {e['message_zh']} / {e['message_en']}{value}")
        print(f"{len(results)} records 条, {len(results) - len(invalid)} valid 合格, "
              f"{len(invalid)} invalid 不合格 ({schema.type} v{schema.version} {schema.title})")
    return EXIT_INVALID if invalid else EXIT_OK


def list_record_types(fmt: str) -> int:
    registry = default_registry()
    types = [registry.get(t) for t in registry.record_types()]
    if fmt == "json":
        print_json([{"type": t.type, "version": t.version, "title": t.title, "event_date": t.event_date,
                     "limit_days": t.limit_days} for t in types])
        return EXIT_OK
    print("记录类型 record types (cx validate --list --type TYPE: its fields 字段)")
    for t in types:
        print(f"  {t.type:<26} v{t.version}  {t.title}  (事件日期 event date: {t.event_date}, "
              f"{t.limit_days} 个工作日 working days)")
    return EXIT_OK


def describe_fields(schema: Any) -> list[dict[str, Any]]:
    """A record type's fields as `cx validate --list --type` shows them."""
    required = set(schema.schema.get("required", []))
    out = []
    for name, prop in schema.fields.items():
        kind = schema.formats.get(name) or {"string": "text", "array": "list", "integer": "integer"}.get(
            prop.get("type"), prop.get("type") or "text")
        allowed = prop.get("enum") or (prop.get("items") or {}).get("enum")
        out.append({"field": name, "title": schema.titles.get(name, ""), "type": kind, "required": name in required,
                    "personal": name in schema.personal, "values": list(allowed) if allowed else None})
    return out


def list_fields(schema: Any, fmt: str) -> int:
    fields = describe_fields(schema)
    if fmt == "json":
        print_json({"type": schema.type, "version": schema.version, "title": schema.title, "fields": fields})
        return EXIT_OK
    print(f"{schema.type} v{schema.version} {schema.title} — 字段 fields (* 必填 required)")
    for f in fields:
        values = f" 取值 values: {'、'.join(map(str, f['values']))}" if f["values"] else ""
        print(f"  {'*' if f['required'] else ' '} {f['field']:<24} {f['title']:<14} {f['type']}"
              + (" 个人信息 personal" if f["personal"] else "") + values)
    print("在 node.toml 的 [streams.fields] 中使用这些字段名；cx node check 还会检查其他规则（如罚款须有金额、有效期起止） / use "
          "these field names in node.toml's [streams.fields]; cx node check also checks the rules between fields "
          "(a fine needs an amount, a validity range must not end before it starts, …)")
    return EXIT_OK


# -- cx verify -------------------------------------------------------------------------------

def _load_public_key(path: Path) -> PublicKey:
    try:
        return PublicKey.load(path)
    except OSError as exc:
        raise UsageError(f"无法读取公钥 cannot read {path}: {exc.strerror}") from None
    except ProtocolError as exc:
        raise UsageError(f"公钥无效 unusable public key {path}: {exc.detail}") from None


def run_verify(args: argparse.Namespace) -> int:
    key = _load_public_key(args.public_key)
    try:
        bundle = ProofBundle.from_json(jsonutil.loads(args.bundle.read_bytes(), what=str(args.bundle)))
        header = bundle.verify(key)
    except OSError as exc:
        raise UsageError(f"无法读取 cannot read {args.bundle}: {exc.strerror}") from None
    except ProtocolError as exc:
        print(f"INVALID 验证失败 ({exc.reason.value}): {exc.detail}")
        return EXIT_INVALID
    record = RecordLine.from_json(jsonutil.loads(bundle.record_line))
    print("VALID 验证通过")
    print(f"  record 记录:      {record.record_id} ({record.type} v{record.schema_version}, {record.op})")
    print(f"  department 部门:  {header.dept}, node {header.node}")
    print(f"  batch 批次:       {header.batch_id} (seq {header.seq}, created {header.created}, "
          f"record {bundle.leaf_index + 1} of {header.count})")
    print(f"  signed by 签名:   key {key.key_id}")
    return EXIT_OK


# -- cx verify-trail ---------------------------------------------------------------------------

def run_verify_trail(args: argparse.Namespace) -> int:
    from .hub.trail import verify_segment

    key = _load_public_key(args.public_key)
    try:
        doc = jsonutil.loads(args.segment.read_bytes(), what=str(args.segment))
        cp, entries = verify_segment(doc, key)
    except OSError as exc:
        raise UsageError(f"无法读取 cannot read {args.segment}: {exc.strerror}") from None
    except ProtocolError as exc:
        print(f"INVALID 验证失败 ({exc.reason.value}): {exc.detail}")
        return EXIT_INVALID
    start = doc["start"]
    print("VALID 验证通过")
    print(f"  entries 条目:     {start} … {start + len(entries) - 1} ({len(entries)}), none removed or changed")
    print(f"  checkpoint 检查点: size {cp.size}, root {cp.root}, {cp.time}, signed by hub key {cp.key_id}")
    if entries:
        print(f"  from {entries[0]['time']} to {entries[-1]['time']}")
    return EXIT_OK


# -- cx verify-credit-check -------------------------------------------------------------------

def run_verify_credit_check(args: argparse.Namespace) -> int:
    from .hub.creditcheck import CheckInvalid, verify

    key = _load_public_key(args.public_key)
    try:
        data = args.document.read_bytes()
    except OSError as exc:
        raise UsageError(f"无法读取 cannot read {exc.filename}: {exc.strerror}") from None
    try:
        doc = verify(data, key)
    except CheckInvalid as exc:
        print(f"INVALID 验证失败: {exc}")
        return EXIT_INVALID
    counts = doc["counts"]
    print("VALID 验证通过")
    print(f"  check 审查编号:     {doc['check_id']} at {doc['time']} (rules 规则 {doc['rules']['version']})")
    print(f"  purpose 用途:       {doc['purpose_zh']} {doc['purpose_en']}")
    print(f"  requested by 审查人: {doc['requested_by']['actor']} ({doc['requested_by']['role']})")
    print(f"  enterprises 企业:   {counts['checked']} checked, {counts['invalid']} invalid lines; classes "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts["classes"].items())))
    for dept, read in sorted(doc["ledger"].items()):
        cp = read["checkpoint"]
        print(f"  ledger 账本 {dept}: {read['applied']} versions read; checkpoint "
              + (f"size {cp['size']} root {cp['root'][:16]}… at {cp['time']} (signature valid)" if cp else "none"))
    print(f"  signed by 签名:     hub key {key.key_id}")
    return EXIT_OK


# -- cx verify-report ------------------------------------------------------------------------

def run_verify_report(args: argparse.Namespace) -> int:
    from .protocol.reports import ReportSignature

    key = _load_public_key(args.public_key)
    sig_path = args.signature or args.report.with_name(args.report.name + ".sig")
    try:
        body = args.report.read_bytes()
        signature = ReportSignature.parse(sig_path.read_bytes())
    except OSError as exc:
        raise UsageError(f"无法读取 cannot read {exc.filename}: {exc.strerror}") from None
    except ProtocolError as exc:
        print(f"INVALID 验证失败 ({exc.reason.value}): {exc.detail}")
        return EXIT_INVALID
    try:
        signature.verify(key, body)
    except ProtocolError as exc:
        print(f"INVALID 验证失败 ({exc.reason.value}): {exc.detail}")
        return EXIT_INVALID
    print("VALID 验证通过")
    print(f"  report 报告:      {args.report.name} ({signature.format}, {signature.lang})")
    print(f"  period 报告期:    {signature.period_from} – {signature.period_to}, departments 部门: {signature.scope}")
    print(f"  generated 生成:   {signature.generated}")
    print(f"  data 数据 SHA-256: {signature.data_sha256}")
    print(f"  signed by 签名:   hub key {key.key_id}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
