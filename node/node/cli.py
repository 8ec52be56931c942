"""`cx node …`: set up a department node, check the source, run the service, see what happened."""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ..config import UsageError, print_json
from ..protocol.envelope import CHINA, DEPT_ID, NODE_ID, china_time
from ..protocol.errors import ProtocolError
from ..protocol.keys import generate_key_files
from .config import NodeConfig

NODE_TOML = """\
# Credit Exchange department node 部门前置机配置
# Paths are relative to this file. Any key can be overridden by an environment variable
# CX_<SECTION>_<KEY>, e.g. CX_DELIVERY_POLL_SECONDS. The broker address and user, the hub API and the
# hub's public key all come from the handover file the hub operator gives you: nothing else to set.

[node]
dept = "{dept}"                        # this department's id at the hub
node_id = "{node_id}"                  # this machine; one department may run several nodes, each enrolled
signing_key = "keys/{dept}.key"        # Ed25519, mode 0600; never leaves this machine
handover = "secrets/handover.toml"     # from the hub operator (chmod 600): broker, hub API, hub key
outbox = "{outbox}"                     # SQLite; holds everything not yet receipted by the hub
keep_settled_days = 7                  # records the hub receipted stay this long in the outbox, then go
reports_dir = "{reports}"               # where `cx node check` writes its rejection reports

[broker]
# tls_ca = "certs/ca.pem"              # for amqps:// with the federation's certificate authority
# tls_cert = "certs/{dept}.pem"        # a client certificate: the broker logs you in by it
# tls_key = "certs/{dept}-key.pem"

[delivery]
batch_max_records = 1000               # records per signed batch
batch_max_bytes = 4194304
linger_seconds = 1.0                   # a partial batch waits at most this long
max_in_flight = 8                      # batches sent but not yet receipted
receipt_timeout_seconds = 120          # then the same batch is sent again (same id, stored once)
heartbeat_seconds = 60
poll_seconds = 10                      # how often the sources are read for new rows

[http]
listen = "127.0.0.1:8471"              # /healthz and /metrics

# ---- sources: where the department's data is --------------------------------------------
# A database (SQLite, PostgreSQL, MySQL/MariaDB), read only:
# [sources.db]
# adapter = "sql"
# url = "postgresql+psycopg://reader@10.0.0.5/xzcf"      # or url_file = "secrets/db.url"
#
# A folder where staff drop CSV or XLSX exports (UTF-8 or GBK):
# [sources.drop]
# adapter = "files"
# folder = "/srv/cx-drop"

# ---- streams: which rows become which record type ---------------------------------------
# `cx validate --list` lists the record types, `cx validate --list --type TYPE` their fields.
# [[streams]]
# name = "penalties"
# source = "db"
# type = "administrative_penalty"
# table = "xzcf"                        # or query = "SELECT ... FROM ..."
# key = ["id"]
# cursor = "updated_at"                 # omit for snapshot mode (deleted rows become retractions)
# record_id = "{dept}-penalty-{{id}}"
# entered_by = "lrr"                    # column naming who entered the row, if there is one
# [streams.fields]
# subject_name = "dsr_mc"
# subject_category = {{ const = "legal_person" }}
# uscc = "tyshxydm"
# authority = {{ const = "洛阳市市场监督管理局" }}          # your department's name
# authority_uscc = {{ const = "11410300005123456F" }}    # and its own credit code
# decision_no = "cfjdswh"
# violation_type = "wflx"
# facts = "wfss"
# legal_basis = "cfyj"
# penalty_types = {{ column = "cflb", map = "penalty_codes" }}
# content = "cfnr"
# fine_amount = "fkje"
# decision_date = "cfjdrq"              # 2016-03-01, 2016/3/1, 20160301, 2016年3月1日 all work
#
# [code_tables.penalty_codes]
# "01" = "警告"
# "02" = "罚款"
"""


def register(commands: Any) -> None:
    node = commands.add_parser("node", help="run a department node 部门前置机")
    sub = node.add_subparsers(title="node commands", metavar="ACTION", required=True)

    init = sub.add_parser("init", help="create node.toml and this department's keys")
    init.add_argument("--dept", required=True, help="department id given by the hub operator, e.g. amr")
    init.add_argument("--dir", required=True, type=Path)
    init.add_argument("--node-id", help="name of this machine (default: <dept>-1)")
    init.add_argument("--state-dir", type=Path, help="where the node writes (its outbox and reports); default the "
                                                     "same folder; /var/lib/credit-exchange for the systemd unit")
    init.set_defaults(run=run_init)

    check = sub.add_parser("check", help="read the sources, map and validate; send nothing 检查数据 "
                                         "(exit 0 clean, 1 invalid rows, 2 source unreachable, 3 configuration)")
    _config_arg(check)
    check.add_argument("--report-dir", type=Path, help="where to write the rejection report (default [node] reports_dir)")
    check.add_argument("--examples", type=int, default=3, help="examples shown per problem (default 3)")
    check.set_defaults(run=run_check)

    run = sub.add_parser("run", help="run the node service 运行 (exit 3: a configuration problem, nothing read)")
    _config_arg(run)
    run.add_argument("--once", action="store_true", help="read everything, deliver everything, wait for every "
                                                         "receipt, then exit: 0 all delivered, 4 delivered but rows "
                                                         "rejected, 1 not delivered or refused")
    run.add_argument("--timeout", type=float, default=None, help="with --once: give up after this many seconds")
    run.set_defaults(run=run_node)

    status = sub.add_parser("status", help="outbox, broker and hub errors, checkpoints, rejections, alerts 状态")
    _config_arg(status)
    status.add_argument("--format", choices=("text", "json"), default="text")
    status.set_defaults(run=run_status)

    retry = sub.add_parser("retry", help="read rejected rows again from the source and send those now valid; send "
                                         "the records of batches the hub refused again 重新读取退回的行、重新发送被拒收的记录")
    _config_arg(retry)
    retry.set_defaults(run=run_retry)

    retract = sub.add_parser("retract", help="withdraw a record the node sent, or end its publication by credit "
                                             "repair (reason starting with 信用修复) 撤销记录或信用修复")
    _config_arg(retract)
    retract.add_argument("stream", help="the stream that sent the record (node.toml [[streams]] name)")
    retract.add_argument("record_id", help="the record's id, as sent")
    retract.add_argument("--reason", required=True,
                         help="why; start with 信用修复 for a credit repair, e.g. \"信用修复：已履行行政处罚决定\"")
    retract.set_defaults(run=run_retract)

    rej = sub.add_parser("rejections", help="list rejected rows and why 退回明细")
    _config_arg(rej)
    rej.add_argument("--all", action="store_true", help="include rejections resolved by a later valid row")
    rej.add_argument("--format", choices=("text", "json", "csv"), default="text")
    rej.add_argument("--limit", type=int, default=200)
    rej.set_defaults(run=run_rejections)

    alerts = sub.add_parser("alerts", help="alerts: receipts that failed their checks, refused batches, ledger "
                                           "inconsistencies 告警")
    _config_arg(alerts)
    alerts.add_argument("--all", action="store_true", help="include resolved alerts")
    alerts.add_argument("--resolve", metavar="ID|all", help="mark an open alert (or all) as looked into 标记为已处理")
    alerts.add_argument("--format", choices=("text", "json"), default="text")
    alerts.set_defaults(run=run_alerts)

    service = sub.add_parser("install-service", help="write the systemd unit for this node 安装系统服务")
    _config_arg(service)
    service.add_argument("--user", default="cx", help="the system user the node runs as (default cx)")
    service.add_argument("--unit-dir", type=Path, default=Path("/etc/systemd/system"),
                         help="where to write cx-node.service (default /etc/systemd/system)")
    service.add_argument("--print", action="store_true", dest="print_only", help="print the unit instead")
    service.set_defaults(run=run_install_service)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path(os.environ.get("CX_NODE_CONFIG", "node.toml")),
                        help="node.toml (default: $CX_NODE_CONFIG or ./node.toml)")


# -- init ------------------------------------------------------------------------------------

def run_init(args: argparse.Namespace) -> int:
    if not DEPT_ID.match(args.dept):
        raise UsageError(f"部门标识无效 invalid department id {args.dept!r}")
    node_id = args.node_id or f"{args.dept}-1"
    if not NODE_ID.match(node_id):
        raise UsageError(f"节点标识无效 invalid node id {node_id!r}: letters, digits, '.', '_' or '-'")
    target: Path = args.dir
    config_path = target / "node.toml"
    if config_path.exists():
        raise UsageError(f"{config_path} already exists 已存在")
    target.mkdir(parents=True, exist_ok=True)
    (target / "secrets").mkdir(exist_ok=True)
    os.chmod(target / "secrets", 0o700)
    key = generate_key_files(target / "keys", args.dept)
    outbox, reports = ((str(args.state_dir.resolve() / "outbox.db"), str(args.state_dir.resolve() / "reports"))
                       if args.state_dir else ("outbox.db", "reports"))
    if args.state_dir:
        args.state_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(_aligned(NODE_TOML.format(dept=args.dept, node_id=node_id, outbox=outbox,
                                                     reports=reports)))
    pub = target / "keys" / f"{args.dept}.pub"
    print(f"node created in {target} 前置机已创建")
    print()
    print("1. Send to the hub operator 交给交换中心管理员:")
    print(f"     department id 部门标识: {args.dept}")
    print(f"     node id 前置机标识:     {node_id}")
    print(f"     public key 公钥文件:    {pub}")
    print(f"     key id 密钥标识:        {key.key_id}   (read it to them by phone to confirm)")
    print(f"   They run: cx hub add-dept {args.dept} --name 部门名称 --region 410300 --public-key {args.dept}.pub "
          f"--node {node_id}")
    print("              cx hub provision")
    print("2. Receive from them 从管理员处取得:")
    print(f"     the handover file 交接文件 ({args.dept}/{node_id}.toml) → {target / 'secrets' / 'handover.toml'}  "
          "(chmod 600)")
    print("     and confirm the hub key id it names (hub_key_id) with them by phone 电话核对中心密钥标识")
    print(f"3. Describe your data in {config_path} ([sources] and [[streams]]; `cx validate --list` shows the record "
          "types and fields), then run")
    print(f"     cx node check --config {config_path}     until it reports no problems")
    print(f"     cx node run --config {config_path} --once   a first delivery, watched")
    print(f"     cx node install-service --config {config_path}   then: systemctl enable --now cx-node")
    return 0


def _aligned(text: str, column: int = 39) -> str:
    """Settings' trailing comments lined up again after the values were filled in."""
    out = []
    for line in text.splitlines():
        setting, sep, comment = line.partition("  # ")
        if sep and not line.startswith("#") and "=" in setting:
            line = f"{setting.rstrip():<{column - 1}} # {comment.strip()}"
        out.append(line)
    return "\n".join(out) + "\n"


# -- check -----------------------------------------------------------------------------------

def _load(path: Path) -> NodeConfig | int:
    """node.toml, or exit 3 with the same words as every other configuration problem."""
    from ..config import ConfigError
    from .preflight import EXIT_CONFIG, Problem, report

    try:
        return NodeConfig.load(path)
    except ConfigError as exc:
        print(report([Problem(str(path), "配置文件无法使用（见英文说明）", str(exc))]), file=sys.stderr)
        return EXIT_CONFIG


def _preflight(cfg: NodeConfig, *, handover_required: bool) -> tuple[Any, list[str]] | int:
    """Open the sources and run the configuration checks: (opened sources, unreachable sources), or exit 3."""
    from cx_adapters.base import SourceError

    from .collector import open_sources
    from .preflight import EXIT_CONFIG, Problem, configuration_problems, node_problems, report

    try:
        opened = open_sources(cfg)
    except SourceError as exc:  # an adapter that cannot be set up from its options: node.toml's to fix
        problems = node_problems(cfg, handover_required=handover_required)
        print(report([*problems, Problem("[sources]", "数据源配置错误（见英文说明）", str(exc))]), file=sys.stderr)
        return EXIT_CONFIG
    problems, unreachable = configuration_problems(cfg, opened, handover_required=handover_required)
    if problems:
        opened.close()
        print(report(problems), file=sys.stderr)
        return EXIT_CONFIG
    return opened, unreachable


def run_check(args: argparse.Namespace) -> int:
    from cx_adapters.base import SourceError

    from .collector import iterate_check, source_checks

    cfg = _load(args.config)
    if isinstance(cfg, int):
        return cfg
    checked = _preflight(cfg, handover_required=False)
    if isinstance(checked, int):
        return checked
    checked[0].close()
    problems = source_checks(cfg)
    if problems:
        for p in problems:
            print(f"source problem 数据源问题: {p}", file=sys.stderr)
        return 2
    per_stream: dict[str, Counter] = defaultdict(Counter)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    report_rows: list[dict[str, Any]] = []
    unreadable: list[tuple[str, str]] = []
    try:
        for stream, chunk, prepared in iterate_check(cfg):
            counts = per_stream[stream]
            if prepared is None:
                counts["unreadable"] += 1
                unreadable.append((stream, chunk.error or ""))
                report_rows.append({"stream": stream, "locator": (chunk.unit or "").rpartition(":")[0], "record_id": "",
                                    "path": "", "rule": "unreadable", "message_zh": chunk.error,
                                    "message_en": chunk.error, "value": ""})
                continue
            counts["read"] += len(chunk.rows)
            counts["valid"] += len(prepared.queued)
            counts["invalid"] += len(prepared.rejected)
            for r in prepared.rejected:
                for e in r.errors:
                    groups[(stream, e["path"], e["rule"])].append({"locator": r.locator, **e})
                    report_rows.append({"stream": stream, "locator": r.locator, "record_id": r.record_id or "", **e})
    except (SourceError, ProtocolError) as exc:
        raise UsageError(f"检查失败 check failed: {exc}") from None
    for stream, c in per_stream.items():
        print(f"{stream}: read 读取 {c['read']:,}, valid 合格 {c['valid']:,}, invalid 不合格 {c['invalid']:,}"
              + (f", unreadable files 无法读取的文件 {c['unreadable']}" if c["unreadable"] else ""))
    if unreadable:
        print("\nunreadable files 无法读取的文件 (they would go to failed/ 运行时会移入 failed/):")
        for stream, error in unreadable:
            print(f"  [{stream}] {error}")
    if groups:
        print("\nproblems 问题 (by field and rule):")
        for (stream, path, rule), items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            first = items[0]
            print(f"  [{stream}] {path or '(record)'} · {rule} · {len(items):,} row(s)")
            print(f"      {first['message_zh']}")
            print(f"      {first['message_en']}")
            for ex in items[: args.examples]:
                value = "" if ex.get("value") in (None, "") else f"  value 值: {ex['value']!r}"
                print(f"      e.g. 例: {ex['locator']}{value}")
    total_invalid = sum(c["invalid"] + c["unreadable"] for c in per_stream.values())
    if report_rows:
        folder = args.report_dir or cfg.node.reports_dir
        csv_path, xlsx_path = write_rejection_report(report_rows, folder)
        print(f"\nfull report 完整报告: {csv_path}  {xlsx_path}")
    if not cfg.node.handover.exists() and not cfg.broker.url_file:
        print(f"\nno handover file yet 尚无交接文件 ({cfg.node.handover}): `cx node run` needs it; ask the hub operator")
    print("\nnothing was sent 未发送任何数据." + (" All rows are valid 全部合格." if not total_invalid else ""))
    return 1 if total_invalid else 0


REPORT_COLUMNS = [("stream", "数据流 stream"), ("locator", "来源位置 source row"), ("record_id", "记录标识 record id"),
                  ("path", "字段 field"), ("rule", "规则 rule"), ("message_zh", "说明"), ("message_en", "message"),
                  ("value", "值 value")]


def write_rejection_report(rows: list[dict[str, Any]], folder: Path) -> tuple[Path, Path]:
    """The same rejections as CSV (UTF-8 with BOM, so Excel shows Chinese) and as XLSX."""
    from datetime import datetime

    from openpyxl import Workbook

    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(CHINA).strftime("%Y%m%d-%H%M%S")  # Beijing time, as the people who open it read it
    csv_path = folder / f"rejections-{stamp}.csv"
    with csv_path.open("w", newline="", encoding="utf-8-sig") as fh:
        writer = csv.writer(fh)
        writer.writerow([title for _, title in REPORT_COLUMNS])
        for r in rows:
            writer.writerow(["" if r.get(k) is None else r.get(k) for k, _ in REPORT_COLUMNS])
    xlsx_path = folder / f"rejections-{stamp}.xlsx"
    wb = Workbook()
    ws = wb.active
    ws.title = "退回明细 rejections"
    ws.append([title for _, title in REPORT_COLUMNS])
    for r in rows:
        ws.append(["" if r.get(k) is None else str(r.get(k)) for k, _ in REPORT_COLUMNS])
    ws.freeze_panes = "A2"
    for column, width in zip("ABCDEFGH", (14, 28, 24, 18, 22, 50, 50, 24)):
        ws.column_dimensions[column].width = width
    wb.save(xlsx_path)
    return csv_path, xlsx_path


# -- run, status, retry, alerts ----------------------------------------------------------------

def run_node(args: argparse.Namespace) -> int:
    from .. import log
    from .service import NodeService

    cfg = _load(args.config)
    if isinstance(cfg, int):
        return cfg
    log.configure()
    checked = _preflight(cfg, handover_required=True)
    if isinstance(checked, int):
        return checked
    opened, unreachable = checked
    for problem in unreachable:
        print(f"数据源暂时无法连接，节点会自动重试 source not reachable now; the node keeps trying: {problem}", file=sys.stderr)
    try:
        service = NodeService(cfg, once=args.once, timeout=args.timeout, opened=opened)
    except (OSError, ProtocolError) as exc:
        opened.close()
        raise UsageError(f"cannot start the node 无法启动: {getattr(exc, 'detail', None) or exc}") from None
    return asyncio.run(service.run())


def node_status(cfg: NodeConfig) -> dict[str, Any]:
    """What `cx node status` shows, read from the outbox (the running node records its errors there)."""
    from .health import BROKER_ERROR, HUB_ERROR
    from .outbox import Outbox

    outbox = Outbox(cfg.node.outbox)
    try:
        counts = outbox.counts()
        return {
            "dept": cfg.node.dept, "node": cfg.node.node_id, "outbox": counts,
            "oldest_pending_seconds": outbox.oldest_pending_age(),
            "chain": dict(zip(("seq", "header_hash"), outbox.chain())),
            "last_receipt": dict(zip(("batch_id", "at"), outbox.last_receipt() or (None, None))),
            "last_checkpoint": dict(zip(("size", "root"), outbox.last_checkpoint() or (None, None))),
            "checkpoints_unverified": [{"size": size, "seen": seen}
                                       for size, _, seen in outbox.unverified_checkpoints()],
            "broker_error": outbox.state_value(BROKER_ERROR),
            "hub_error": outbox.state_value(HUB_ERROR),
            "batches_unanswered": outbox.unanswered(),
            "refused": [{"batch_id": b["batch_id"], "seq": b["seq"], "records": b["records"], "reason": b["alert"],
                         "reason_zh": b["alert_zh"]} for b in outbox.refused_batches()],
            "alerts": outbox.alerts(10, open_only=True),
            "file": outbox.size(),
        }
    finally:
        outbox.close()


def run_status(args: argparse.Namespace) -> int:
    cfg = NodeConfig.load(args.config)
    status = node_status(cfg)
    if args.format == "json":
        print_json(status)
        return 0
    c = status["outbox"]
    print(f"department 部门 {status['dept']} · node 节点 {status['node']}   (times 时间: 北京时间 Asia/Shanghai)")
    print(f"  waiting 待送达:   {c.get('pending', 0):,} pending, {c.get('batched', 0):,} in "
          f"{c['batches_unreceipted']} unreceipted batch(es)"
          + (f", oldest {status['oldest_pending_seconds']:.0f}s" if status["oldest_pending_seconds"] else ""))
    print(f"  settled 已结清:   {c.get('delivered', 0):,} delivered, {c.get('duplicate', 0):,} already at the hub, "
          f"{c.get('rejected', 0):,} rejected by the hub")
    broker = status["broker_error"]
    print("  broker 消息代理:  " + (f"ERROR 错误 [{broker['kind']}] {china_time(broker['at'])}\n"
                                  f"      {broker['zh']}\n      {broker['en']}\n      ({broker['detail']})"
                                  if broker else "no error recorded 无错误记录"))
    if status["batches_unanswered"] and not broker:
        print(f"  no receipt yet 尚未收到回执: {status['batches_unanswered']} batch(es) sent more than once without a "
              "receipt; the hub may be down or have quarantined them (ask the operator: cx hub quarantine)")
    lr, lc = status["last_receipt"], status["last_checkpoint"]
    print(f"  last receipt 最近回执:  {china_time(lr['at']) if lr['at'] else 'none yet 尚无'}"
          + (f" (batch {lr['batch_id']})" if lr["batch_id"] else ""))
    print(f"  last checkpoint 账本:   verified 已核验 size {lc['size']} root {lc['root']}" if lc["size"] is not None
          else "  last checkpoint 账本:   none yet 尚无")
    if status["checkpoints_unverified"]:
        hub = status["hub_error"]
        print(f"  NOT YET VERIFIED 尚未核验: {len(status['checkpoints_unverified'])} checkpoint(s) (no consistency proof "
              "yet; retried by the running node 节点会自动重试)"
              + (f"\n      hub API 中心接口 [{hub['kind']}] {hub['zh']} / {hub['en']} ({hub['detail']})" if hub else ""))
    print(f"  open rejections 待处理退回: {c['rejections_open']:,} ({c['rejections_open_local']:,} here 本地)  "
          "(cx node rejections; after a fix: cx node retry)")
    if status["refused"]:
        print(f"  REFUSED 拒收: {len(status['refused'])} batch(es), {c.get('refused', 0):,} record(s) not stored by the "
              "hub; fix the cause, then `cx node retry` 排除原因后重新发送")
        for b in status["refused"]:
            print(f"    batch {b['batch_id']} (seq {b['seq']}, {b['records']} records): {b['reason_zh'] or ''}\n"
                  f"      {b['reason']}")
    for a in status["alerts"]:
        print(f"  ALERT 告警 #{a['id']} {china_time(a['at'])} {a['kind']}: {a['detail_zh'] or ''}\n      {a['detail']}")
    if status["alerts"]:
        print("      once looked into 处理后: cx node alerts --resolve all")
    size = status["file"]
    print(f"  outbox file 发件箱文件: {size['bytes'] / 2**20:,.1f} MiB ({size['free_bytes'] / 2**20:,.1f} MiB free pages)")
    return 0


def run_retract(args: argparse.Namespace) -> int:
    import getpass

    from .collector import Preparer
    from .outbox import Outbox

    cfg = _load(args.config)
    if isinstance(cfg, int):
        return cfg
    streams = {s.name: s for s in cfg.stream_configs()}
    if args.stream not in streams:
        raise UsageError(f"没有该数据流 no stream {args.stream!r}; node.toml has: {', '.join(sorted(streams))}")
    if not args.reason.strip():
        raise UsageError("请说明原因 give a reason (--reason)")
    outbox = Outbox(cfg.node.outbox)
    try:
        if outbox.latest_version(args.record_id) is None:
            raise UsageError(f"本节点未发送过该记录 this node never sent record {args.record_id!r}")
        stream = streams[args.stream]
        queued = Preparer(cfg, {args.stream: "cx node retract"}).retraction(
            args.stream, args.record_id, stream.type, f"cx node retract by {getpass.getuser()}", args.reason.strip())
        outbox.commit_chunk(args.stream, [], [], deletions=[queued])
    finally:
        outbox.close()
    kind = "credit repair 信用修复" if args.reason.strip().startswith("信用修复") else "retraction 撤销"
    print(f"{kind} of {args.record_id} queued 已排队; the running node (or the next `cx node run`) sends it")
    return 0


def run_retry(args: argparse.Namespace) -> int:
    from cx_adapters.base import SourceError

    from .collector import Collector
    from .outbox import Outbox

    cfg = _load(args.config)
    if isinstance(cfg, int):
        return cfg
    checked = _preflight(cfg, handover_required=False)
    if isinstance(checked, int):
        return checked
    opened, _ = checked
    outbox = Outbox(cfg.node.outbox)
    try:
        batches, records = outbox.retry_refused()
        collector = Collector(cfg, outbox, opened=opened)
        try:
            found = collector.reread()
        except SourceError as exc:
            raise UsageError(f"无法重新读取 cannot read the rows again: {exc}") from None
        finally:
            collector.close()
    finally:
        outbox.close()
    if batches:
        print(f"{records:,} record(s) of {batches} refused batch(es) are pending again 已重新排队")
    for stream, f in found.items():
        if f.error:
            print(f"[{stream}] 无法重新读取 could not read the rows again: {f.error}")
        elif f.asked:
            print(f"[{stream}] {f.asked:,} rejected row(s) 退回的行: {f.valid:,} now valid and queued 现已合格并排队, "
                  f"{f.invalid:,} still invalid 仍不合格, {f.gone:,} no longer at the source 源中已不存在"
                  + (f", {f.cannot:,} cannot be read again (fix them at the source; a file from failed/ can be put back) "
                     "无法重新读取，请在源中修正" if f.cannot else ""))
    if not batches and not any(f.asked for f in found.values()):
        print("nothing to retry: no refused batches, no rejected rows 没有需要重试的内容")
        return 0
    print("the running node (or the next `cx node run`) sends what is queued 运行中的节点（或下次运行）将发送已排队的记录")
    return 0


def run_alerts(args: argparse.Namespace) -> int:
    from .outbox import Outbox

    cfg = NodeConfig.load(args.config)
    outbox = Outbox(cfg.node.outbox)
    try:
        if args.resolve:
            if args.resolve == "all":
                n = outbox.resolve_alerts(None)
            else:
                try:
                    n = outbox.resolve_alerts([int(i) for i in args.resolve.split(",")])
                except ValueError:
                    raise UsageError("--resolve takes alert ids (e.g. 3,4) or all 给出告警编号或 all") from None
            print(f"{n} alert(s) marked as looked into 已标记为已处理")
            return 0
        items = outbox.alerts(200, open_only=not args.all)
    finally:
        outbox.close()
    if args.format == "json":
        print_json(items)
        return 0
    if not items:
        print("no open alerts 没有未处理的告警")
    for a in items:
        print(f"#{a['id']} {china_time(a['at'])} {a['kind']}" + (f" batch {a['batch_id']}" if a["batch_id"] else "")
              + (f" (resolved 已处理 {china_time(a['resolved'])})" if a["resolved"] else ""))
        if a["detail_zh"]:
            print(f"    {a['detail_zh']}")
        print(f"    {a['detail']}")
    return 0


def run_install_service(args: argparse.Namespace) -> int:
    from ..service_unit import install_unit

    cfg = NodeConfig.load(args.config)
    # what the service writes: the outbox, the reports, and the drop folders it moves files out of
    writable = [cfg.node.outbox.parent, cfg.node.reports_dir]
    writable += [Path(sc.options["folder"]) for sc in cfg.source_configs().values()
                 if sc.adapter == "files" and sc.options.get("folder")]
    return install_unit("node", args.config, user=args.user, unit_dir=args.unit_dir, print_only=args.print_only,
                        writable=writable)


def run_rejections(args: argparse.Namespace) -> int:
    from .outbox import Outbox

    cfg = NodeConfig.load(args.config)
    outbox = Outbox(cfg.node.outbox)
    try:
        items = outbox.rejections(open_only=not args.all, limit=args.limit)
    finally:
        outbox.close()
    if args.format == "json":
        print_json(items)
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["at (Asia/Shanghai)", "origin", "stream", "locator", "record_id", "path", "rule", "message_zh",
                         "message_en"])
        for item in items:
            for e in item["errors"]:
                writer.writerow([china_time(item["at"]), item["origin"], item["stream"], item["locator"], item["record_id"],
                                 e.get("path"), e.get("rule"), e.get("message_zh"), e.get("message_en")])
    else:
        if not items:
            print("no open rejections 没有待处理的退回")
        for item in items:
            where = "hub 中心" if item["origin"] == "hub" else "local 本地"
            print(f"{china_time(item['at'])} [{item['stream']}] {item['locator'] or ''} {item['record_id'] or ''} ({where})"
                  + (" resolved 已解决" if item["resolved"] else ""))
            for e in item["errors"]:
                print(f"    {e.get('path') or '(record)'} [{e.get('rule')}] {e.get('message_zh')} / {e.get('message_en')}")
    return 0
