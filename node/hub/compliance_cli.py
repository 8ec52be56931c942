"""`cx hub calendar|timeliness|obligations …` and `cx report …`: working days, timeliness, obligations, compliance reports."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import date
from pathlib import Path
from typing import Any

from ..config import ConfigError, UsageError, print_json
from .config import HubConfig


def register_hub(sub: Any, config_arg: Any) -> None:
    """Subcommands of `cx hub`."""
    calendar = sub.add_parser("calendar", help="working-day calendar 工作日历")
    cal_sub = calendar.add_subparsers(title="calendar actions", metavar="ACTION", required=True)
    check = cal_sub.add_parser("check", help="which years are covered, and from where 检查日历覆盖年份")
    config_arg(check)
    check.add_argument("--years", help="years to show, e.g. 2025-2028 (default: what the store's records span, "
                                       "this year and the next)")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.set_defaults(run=run_calendar_check)

    timeliness = sub.add_parser("timeliness", help="record timeliness 报送及时性")
    t_sub = timeliness.add_subparsers(title="timeliness actions", metavar="ACTION", required=True)
    recompute = t_sub.add_parser("recompute", help="apply a changed calendar or limits to every record, and say "
                                                   "what changed 重新计算")
    config_arg(recompute)
    recompute.add_argument("--by", default=None, help="who asks for it (kept with the rules; default: your login)")
    recompute.add_argument("--format", choices=("text", "json"), default="text")
    recompute.set_defaults(run=run_recompute)

    obligations = sub.add_parser("obligations", help="the joint-meeting office's obligations 联席会议任务")
    o_sub = obligations.add_subparsers(title="obligations actions", metavar="ACTION", required=True)
    load = o_sub.add_parser("load", help="check the obligations file and keep it as the version in force 载入任务文件")
    config_arg(load)
    load.add_argument("file", nargs="?", type=Path, help="the TOML file (default: [compliance] obligations)")
    load.add_argument("--by", default=None, help="who loads it (default: your login)")
    load.set_defaults(run=run_obligations_load)
    check_file = o_sub.add_parser("check", help="check an obligations file without loading it 检查任务文件")
    check_file.add_argument("file", type=Path)
    check_file.set_defaults(run=run_obligations_check)
    show = o_sub.add_parser("show", help="the obligations in force 显示现行任务")
    config_arg(show)
    show.add_argument("--format", choices=("text", "json"), default="text")
    show.set_defaults(run=run_obligations_show)
    history = o_sub.add_parser("history", help="every version loaded: who, when, what changed 变更记录")
    config_arg(history)
    history.add_argument("--format", choices=("text", "json"), default="text")
    history.set_defaults(run=run_obligations_history)


def register_report(commands: Any, config_arg: Any) -> None:
    """`cx report …`."""
    report = commands.add_parser("report", help="compliance reports 合规报告")
    r_sub = report.add_subparsers(title="report commands", metavar="ACTION", required=True)
    make = r_sub.add_parser("compliance", help="a signed deadline-compliance report for a period 生成合规报告")
    config_arg(make)
    make.add_argument("--from", dest="period_from", required=True, type=_date_arg, help="first day, e.g. 2026-11-01")
    make.add_argument("--to", dest="period_to", required=True, type=_date_arg, help="last day, e.g. 2026-11-30")
    make.add_argument("--dept", action="append", help="only this department (repeat for several; default: all)")
    make.add_argument("--format", choices=("html", "pdf", "xlsx", "csv", "json"), default="html")
    make.add_argument("--lang", choices=("zh", "en"), default="zh", help="language (default zh 中文)")
    make.add_argument("--as-of", help="count what had arrived by this UTC time (default: the end of the period, "
                                      "or now while it runs)")
    make.add_argument("--out", required=True, type=Path, help="the report file; its signature goes to FILE.sig")
    make.add_argument("--keep", action="store_true", help="also keep the report in the hub's store")
    make.set_defaults(run=run_report)

    periodic = r_sub.add_parser("periodic", help="make and keep a month's reports now (the hub does it on "
                                                 "[compliance] report_day) 生成月度报告")
    config_arg(periodic)
    periodic.add_argument("--month", type=_month_arg, help="e.g. 2026-10 (default: the latest month due)")
    periodic.set_defaults(run=run_periodic)

    listing = r_sub.add_parser("list", help="reports the hub keeps 已保存的报告")
    config_arg(listing)
    listing.add_argument("--dept", help="only this department's own reports")
    listing.add_argument("--format", choices=("text", "json"), default="text")
    listing.set_defaults(run=run_list)

    get = r_sub.add_parser("get", help="write a kept report and its signature to files 导出报告")
    config_arg(get)
    get.add_argument("id", type=int)
    get.add_argument("--out", required=True, type=Path)
    get.set_defaults(run=run_get)


def _date_arg(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-01 日期格式错误") from None


def _month_arg(text: str) -> date:
    try:
        return date.fromisoformat(text + "-01")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a month like 2026-10 月份格式错误") from None


def _who(given: str | None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container): say so
        return f"uid {os.getuid()}"


def _store(cfg: HubConfig) -> Any:
    from .cli import opened_store

    return opened_store(cfg)


def _configured_basis(cfg: HubConfig) -> Any:
    from .timeliness import Basis

    try:
        return Basis.from_config(cfg)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


# -- calendar and timeliness -----------------------------------------------------------------

def run_calendar_check(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from .store import record_timeliness
    from .timeliness import basis_in_force, estimated_counts
    from .workdays import package_version, package_years

    cfg = HubConfig.load(args.config)
    configured = _configured_basis(cfg)
    with _store(cfg) as store:
        in_force = basis_in_force(store)
        with store.reader.connect() as conn:
            first, last = conn.execute(select(func.min(record_timeliness.c.event_date),
                                              func.max(record_timeliness.c.received_date))).one()
            estimated = estimated_counts(conn)
    this_year = date.today().year
    if args.years:
        try:
            lo, _, hi = args.years.partition("-")
            years = list(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise UsageError(f"--years {args.years!r}: give e.g. 2025-2028 年份格式错误") from None
    else:
        lo = min(int(first[:4]) if first else this_year, this_year - 1)
        hi = max(int(last[:4]) if last else this_year, this_year + 1)
        years = list(range(lo, hi + 1))
    calendar = configured.calendar
    rows = [calendar.coverage(y).to_json() for y in years]
    per_year: dict[int, int] = {}
    for text, n in estimated.items():
        for y in text.split(","):
            per_year[int(y)] = per_year.get(int(y), 0) + n
    span = package_years()
    pending = in_force is not None and in_force.text != configured.text
    result = {
        "package": package_version(), "package_years": list(span) if span else None,
        "calendar_file": str(cfg.compliance.calendar) if cfg.compliance.calendar else "(shipped with cx)",
        "years": [{**r, "estimated_versions": per_year.get(r["year"], 0)} for r in rows],
        "in_force": in_force.fingerprint if in_force else None, "configured": configured.fingerprint,
        "recompute_needed": pending,
    }
    if args.format == "json":
        print_json(result)
        return 0
    print(f"chinesecalendar 软件包: {result['package']}" + (f", years {span[0]}–{span[1]}" if span else ""))
    print(f"calendar file 日历文件: {result['calendar_file']}")
    for r in result["years"]:
        mark = "ESTIMATED 估算" if r["estimated"] else "covered 已覆盖"
        extra = f"  ({r['estimated_versions']:,} records counted across it)" if r["estimated_versions"] else ""
        print(f"  {r['year']}  {mark:<14} {r['source']:<17} {r['detail']}{extra}")
    if in_force is None:
        print("rules in force 现行规则: none yet (the hub adopts the configured ones when it first projects records)")
    elif pending:
        print(f"the configured calendar or limits ({configured.fingerprint}) differ from those in force "
              f"({in_force.fingerprint}) 配置已变更: run `cx hub timeliness recompute --config {args.config}`")
    else:
        print(f"rules in force 现行规则: {in_force.fingerprint} (same as configured 与配置一致)")
    return 0


def run_recompute(args: argparse.Namespace) -> int:
    from .timeliness import recompute

    cfg = HubConfig.load(args.config)
    configured = _configured_basis(cfg)

    def progress(done: int, total: int) -> None:
        if args.format == "text" and sys.stderr.isatty():
            print(f"\r  recomputing 重新计算 {done:,} / {total:,}", end="", file=sys.stderr, flush=True)

    with _store(cfg) as store:
        result = recompute(store, configured, by=_who(args.by), progress=progress)
    if args.format == "text" and sys.stderr.isatty():
        print(file=sys.stderr)
    if args.format == "json":
        print_json(result.to_json())
        return 0
    print("rules 规则:")
    for line in result.basis_changes:
        print(f"  {line}")
    print(f"{result.versions:,} record versions recomputed 条记录已重新计算; {result.changed:,} changed 条有变化")
    for (before, after), n in sorted(result.transitions.items()):
        print(f"  {before} → {after}: {n:,}")
    if result.deadlines_changed:
        print(f"  deadlines moved 截止日期变化: {result.deadlines_changed:,}")
    if result.estimated_changed:
        print(f"  estimated marks changed 估算标记变化: {result.estimated_changed:,}")
    for dept, n in sorted(result.by_dept.items()):
        print(f"  {dept}: {n:,} changed")
    for x in result.examples:
        was = x["before"] or {}
        now = x["after"]
        print(f"  e.g. {x['dept']} {x['record_id']} ({x['type']}, event {x['event_date']}, received "
              f"{x['received_date']}): {was.get('status')} lag {was.get('lag')} deadline {was.get('deadline')} → "
              f"{now['status']} lag {now['lag']} deadline {now['deadline']}")
    return 0


# -- obligations -----------------------------------------------------------------------------

def _obligations_file(args: argparse.Namespace, cfg: HubConfig) -> Path:
    path = args.file or cfg.compliance.obligations
    if path is None:
        raise UsageError("give the obligations file, or set [compliance] obligations in hub.toml 请指定任务文件")
    return path


def run_obligations_load(args: argparse.Namespace) -> int:
    from . import obligations

    cfg = HubConfig.load(args.config)
    path = _obligations_file(args, cfg)
    with _store(cfg) as store:
        try:
            loaded = obligations.load_file(store, path, by=_who(args.by))
        except obligations.ObligationsError as exc:
            raise UsageError(str(exc)) from None
    current = loaded.current
    if not loaded.changed:
        print(f"{path}: unchanged; version {current.version} stays in force 任务文件未变更")
        return 0
    print(f"{path}: {len(current.obligations)} obligation(s) loaded as version {current.version} by "
          f"{current.loaded_by} 已载入")
    for kind, zh in (("added", "新增"), ("removed", "删除"), ("changed", "修改")):
        if loaded.changes[kind]:
            print(f"  {kind} {zh}: {', '.join(loaded.changes[kind])}")
    return 0


def run_obligations_check(args: argparse.Namespace) -> int:
    from . import obligations

    try:
        parsed = obligations.parse(args.file.read_text("utf-8"), str(args.file))
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror} 无法读取") from None
    except obligations.ObligationsError as exc:
        print(str(exc))
        return 1
    print(f"{args.file}: {len(parsed.obligations)} obligation(s), no problems 检查通过")
    return 0


def run_obligations_show(args: argparse.Namespace) -> int:
    from . import obligations

    cfg = HubConfig.load(args.config)
    with _store(cfg) as store:
        found = obligations.current(store)
    if args.format == "json":
        print_json({"set": found.info(), "obligations": [o.to_json() for o in found.obligations]} if found else None)
        return 0
    if found is None:
        print("no obligations loaded yet 尚未载入任务; use `cx hub obligations load FILE`")
        return 0
    print(f"{found.title or 'obligations'}: version {found.version}, loaded {found.loaded} by {found.loaded_by}")
    for o in found.obligations:
        when = f"due {o.due}" if o.due else f"every {o.period}, {o.due_workdays} working days after it ends"
        types = ", ".join(o.record_types) or "(not measured by records)"
        print(f"  {o.id:<28} {when:<40} {', '.join(o.departments):<20} {o.title}")
        print(f"  {'':<28} {types}")
    return 0


def run_obligations_history(args: argparse.Namespace) -> int:
    from . import obligations

    cfg = HubConfig.load(args.config)
    with _store(cfg) as store:
        versions = obligations.history(store)
    if args.format == "json":
        print_json(versions)
        return 0
    if not versions:
        print("no obligations loaded yet 尚未载入任务")
    for v in versions:
        changes = "; ".join(f"{k} {', '.join(ids)}" for k, ids in v["changes"].items() if ids) or "no changes"
        print(f"  v{v['version']}  {v['loaded']}  by {v['loaded_by']}  {v['source'] or ''}")
        print(f"        {changes}")
    return 0


# -- reports ---------------------------------------------------------------------------------

def _signing_key(cfg: HubConfig) -> Any:
    from ..protocol.errors import ProtocolError
    from ..protocol.keys import SigningKey

    try:
        return SigningKey.load(cfg.hub.signing_key)
    except OSError as exc:
        raise UsageError(f"cannot read the hub's signing key 无法读取中心签名密钥 {cfg.hub.signing_key}: "
                         f"{exc.strerror}") from None
    except ProtocolError as exc:
        raise UsageError(f"the hub's signing key is unusable 中心签名密钥不可用: {exc.detail}") from None


def run_report(args: argparse.Namespace) -> int:
    from . import compliance, reports

    cfg = HubConfig.load(args.config)
    key = _signing_key(cfg)
    _configured_basis(cfg)
    with _store(cfg) as store:
        try:
            data = reports.report_data(store, cfg, args.period_from, args.period_to, args.dept, args.as_of)
        except compliance.ReportError as exc:
            raise UsageError(str(exc)) from None
        report = reports.render(data, args.format, lang=args.lang, key=key)
        if args.keep:
            scope = "*" if not args.dept else ",".join(sorted(args.dept))[:32]
            reports.keep(store, data, report, scope)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(report.body)
    sig = args.out.with_name(args.out.name + ".sig")
    sig.write_bytes(report.signature.to_bytes())
    late = sum(d["late"] for d in data["departments"])
    print(f"{args.out} ({len(report.body):,} bytes, {args.format}, {args.lang}) and {sig.name} written 已生成")
    print(f"  period 报告期 {data['period']['from']} – {data['period']['to']}, {len(data['departments'])} "
          f"department(s), {late:,} late record(s) 逾期记录"
          + (f"; estimated calendar years 估算年度: {', '.join(map(str, data['estimated_years']))}"
             if data["estimated_years"] else ""))
    print(f"  check it 验证: cx verify-report {args.out} --public-key HUB.pub")
    return 0


def run_periodic(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from . import reports

    cfg = HubConfig.load(args.config)
    key = _signing_key(cfg)
    _configured_basis(cfg)
    with _store(cfg) as store:
        if args.month:
            first = args.month
            last = date(first.year + (first.month == 12), first.month % 12 + 1, 1) - timedelta(days=1)
            made = reports.make_periodic(store, cfg, key, first, last)
        else:
            due = reports.due_and_missing(store, cfg)
            made = reports.make_periodic(store, cfg, key, *due) if due else []
            if due is None:
                print("the latest month's reports are already kept 本月报告已生成")
    for line in made:
        print(f"  made 已生成 {line}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from . import reports

    cfg = HubConfig.load(args.config)
    with _store(cfg) as store:
        found = reports.kept(store, {args.dept} if args.dept else None)
    if args.format == "json":
        print_json(found)
        return 0
    if not found:
        print("no reports kept yet 尚无报告")
    for r in found:
        print(f"  {r['id']:>5}  {r['period_from']} – {r['period_to']}  {r['scope']:<10} {r['lang']}  {r['format']:<5} "
              f"generated {r['generated']}")
    return 0


def run_get(args: argparse.Namespace) -> int:
    from . import reports

    cfg = HubConfig.load(args.config)
    with _store(cfg) as store:
        found = reports.kept_report(store, args.id)
    if found is None:
        raise UsageError(f"no kept report {args.id} 没有该报告; see `cx report list`")
    args.out.write_bytes(bytes(found["body"]))
    args.out.with_name(args.out.name + ".sig").write_bytes(bytes(found["signature"]))
    print(f"{args.out} and {args.out.name}.sig written ({found['format']}, {found['period_from']} – "
          f"{found['period_to']}, {found['scope']})")
    return 0
