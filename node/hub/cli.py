"""`cx hub …`: set up a hub, enrol departments and keys, provision the broker, run."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..config import ConfigError, UsageError, print_json
from ..protocol.envelope import format_time, parse_time
from ..protocol.errors import ProtocolError
from ..protocol.keys import PublicKey, SigningKey
from ..transport import redact as transport_redacted
from .config import HubConfig

HUB_TOML = """\
# Credit Exchange hub configuration 企业信用信息交换中心配置
# Paths are relative to this file. Any key can be overridden by an environment variable
# CX_<SECTION>_<KEY>, e.g. CX_STORE_URL, CX_BROKER_MANAGEMENT_PASSWORD.

[hub]
name = "{name}"
signing_key = "keys/hub.key"        # Ed25519; signs receipts and ledger checkpoints. Mode 0600.
# projection_max_lag_seconds = 60    # while batches queue up, the derived views catch up in lulls, at most this late

[store]
# SQLite (embedded, the default) or PostgreSQL, e.g. "postgresql+psycopg://cx@127.0.0.1/cx"
url = "{store_url}"

[broker]
url = "{amqp_url}"                   # no credentials here: the hub's password is in password_file
# public_url = "amqps://exchange.example.gov.cn:5671/"   # what departments connect to (handover files)
vhost = "{vhost}"
user_prefix = "cx-"
password_file = "secrets/broker/{user_prefix}hub.password"
management_url = "{management_url}"
management_user = "guest"            # an administrator of the broker, used by `cx hub provision`
# management_password_file = "secrets/management.password"
prefetch = 8

[api]
listen = "{listen}"
# public_url = "https://exchange.example.gov.cn/"   # the API as departments reach it (handover files); default http://<listen>
# metrics_listen = "127.0.0.1:9470"  # serve /metrics only there (and not beside the API)

[console]
session_key_file = "secrets/console/session.key"   # encrypts session cookies; made by `cx hub init`
idle_timeout_minutes = 30           # a session unused this long ends
session_max_hours = 12              # and any session after this long
secure_cookies = "auto"             # Secure cookies when the request came over TLS (auto) | always | never
lockout_attempts = 5                # failed log-ins in a row that lock an account …
lockout_minutes = 15                # … for this long
login_attempts_per_minute = 10      # per client address
trail_flush_seconds = 1.0           # the access trail is appended and checkpointed at most this often
silent_after_seconds = 300          # overview: no heartbeat this long is red (silent)
late_pending_seconds = 900          # overview: records waiting this long in a node's outbox is amber (late)
language = "zh"                     # zh | en, until a user chooses

[compliance]
calendar = "calendar.toml"           # holidays and make-up working days beyond chinesecalendar (调休)
obligations = "obligations.toml"     # the joint-meeting office's obligations: cx hub obligations load
report_day = 10                      # the monthly compliance report is made on this day of the next month
report_langs = ["zh"]
# working days from an event date to the hub's receipt; defaults from the data dictionary (7 for licences and
# penalties, 20 for most others). Per department, or "*" for all:
# [compliance.limits.fda]
# administrative_license = 10
"""

OBLIGATIONS_TOML = """\
# 联席会议办公室任务 — the joint-meeting office's obligations. After editing: cx hub obligations load
# A full example: ops/examples/obligations-2016-luoyang.toml in the Credit Exchange repository.
title = "任务分工"

# [[obligation]]
# id = "licences-monthly"
# title = "行政许可信息按月归集公示"
# unit = "各许可部门"
# departments = ["amr", "fda"]
# record_types = ["administrative_license"]
# period = "month"          # or a one-off deadline: due = 2026-12-31
# due_workdays = 10         # working days after each month ends
"""


def register(commands: Any) -> None:
    hub = commands.add_parser("hub", help="run and administer the hub 交换中心")
    sub = hub.add_subparsers(title="hub commands", metavar="ACTION", required=True)

    init = sub.add_parser("init", help="create a hub: config, signing key, store")
    init.add_argument("--dir", required=True, type=Path)
    init.add_argument("--name", default="企业信用信息交换中心")
    init.add_argument("--store-url", default="sqlite:///hub.db")
    init.add_argument("--amqp-url", default="amqp://127.0.0.1:5672/")
    init.add_argument("--vhost", default="credit-exchange")
    init.add_argument("--management-url", default="http://127.0.0.1:15672")
    init.add_argument("--listen", default="127.0.0.1:8470")
    init.set_defaults(run=run_init)

    add = sub.add_parser("add-dept", help="enrol a department and its public key 登记部门")
    _config_arg(add)
    add.add_argument("dept", help="department id, e.g. amr")
    add.add_argument("--name", required=True, help="department name, e.g. 洛阳市市场监督管理局")
    add.add_argument("--region", required=True, help="6-digit region code, e.g. 410300")
    add.add_argument("--public-key", required=True, type=Path, help="the department's public key (PEM)")
    add.add_argument("--valid-from", help="UTC time the key becomes valid (default: no lower bound)")
    add.add_argument("--valid-to", help="UTC time the key stops being valid (default: until revoked)")
    add.add_argument("--node", action="append", dest="nodes", metavar="NODE_ID",
                     help="a node the department runs, as its `cx node init` printed it (repeatable; default "
                          "<dept>-1); more later with `cx hub add-node`")
    add.set_defaults(run=run_add_dept)

    add_node = sub.add_parser("add-node", help="enrol one more node of a department 登记前置机")
    _config_arg(add_node)
    add_node.add_argument("dept", help="department id, e.g. amr")
    add_node.add_argument("node", help="the node's id, as its node.toml [node] node_id says, e.g. amr-2")
    add_node.set_defaults(run=run_add_node)

    depts = sub.add_parser("depts", help="list departments and their keys")
    _config_arg(depts)
    depts.add_argument("--format", choices=("text", "json"), default="text")
    depts.set_defaults(run=run_depts)

    keys = sub.add_parser("keys", help="rotate or revoke department keys")
    key_sub = keys.add_subparsers(title="keys actions", metavar="ACTION", required=True)
    rotate = key_sub.add_parser("rotate", help="enrol a new key; the old one stays valid during an overlap")
    _config_arg(rotate)
    rotate.add_argument("--dept", required=True)
    rotate.add_argument("--public-key", required=True, type=Path)
    rotate.add_argument("--overlap-days", type=float, default=7.0, help="days the old key stays valid (default 7)")
    rotate.set_defaults(run=run_rotate)
    revoke = key_sub.add_parser("revoke", help="refuse batches signed with a key from a time on")
    _config_arg(revoke)
    revoke.add_argument("key_id")
    revoke.add_argument("--at", help="UTC time of revocation, e.g. 2026-03-01T00:00:00.000Z (default: now)")
    revoke.set_defaults(run=run_revoke)

    provision = sub.add_parser("provision", help="create the broker vhost, queues, users and permissions")
    _config_arg(provision)
    provision.add_argument("--definitions", type=Path, metavar="DIR",
                           help="also write the equivalent definitions.json into DIR")
    provision.set_defaults(run=run_provision)

    quarantined = sub.add_parser("quarantine", help="messages the hub could not attribute or verify 隔离区")
    _config_arg(quarantined)
    quarantined.add_argument("--limit", type=int, default=50)
    quarantined.add_argument("--format", choices=("text", "json"), default="text")
    quarantined.set_defaults(run=run_quarantine)

    backup = sub.add_parser("backup", help="copy the SQLite store while the hub runs 备份")
    _config_arg(backup)
    backup.add_argument("--to", required=True, type=Path, help="the backup file to create")
    backup.set_defaults(run=run_backup)

    copy = sub.add_parser("copy-store", help="copy the store into a new, empty database (SQLite → PostgreSQL)")
    _config_arg(copy)
    copy.add_argument("--to", required=True, help="SQLAlchemy URL of the new store, e.g. "
                                                  "postgresql+psycopg://cx@127.0.0.1/cx")
    copy.set_defaults(run=run_copy_store)

    service = sub.add_parser("install-service", help="write the systemd unit for this hub 安装系统服务")
    _config_arg(service)
    service.add_argument("--user", default="cx", help="the system user the hub runs as (default cx)")
    service.add_argument("--unit-dir", type=Path, default=Path("/etc/systemd/system"))
    service.add_argument("--print", action="store_true", dest="print_only", help="print the unit instead")
    service.set_defaults(run=run_install_service)

    from . import credit_cli
    from .compliance_cli import register_hub

    register_hub(sub, _config_arg)
    credit_cli.register_hub(sub, _config_arg)

    run = sub.add_parser("run", help="run ingest and the API")
    _config_arg(run)
    run.set_defaults(run=run_hub)

    user = sub.add_parser("user", help="console accounts 控制台账号")
    user_sub = user.add_subparsers(title="user actions", metavar="ACTION", required=True)
    add_user = user_sub.add_parser("add", help="create an account (prints a one-time password unless given one)")
    _config_arg(add_user)
    add_user.add_argument("name")
    add_user.add_argument("--role", required=True, help="operator | office | auditor | department:ID")
    add_user.add_argument("--password-file", type=Path, help="read the password from this file instead")
    add_user.set_defaults(run=run_user_add)
    passwd = user_sub.add_parser("passwd", help="set a new password (a one-time one unless given one); unlocks")
    _config_arg(passwd)
    passwd.add_argument("name")
    passwd.add_argument("--password-file", type=Path, help="read the password from this file instead")
    passwd.set_defaults(run=run_user_passwd)
    disable = user_sub.add_parser("disable", help="stop an account from logging in (--enable undoes it)")
    _config_arg(disable)
    disable.add_argument("name")
    disable.add_argument("--enable", action="store_true")
    disable.set_defaults(run=run_user_disable)
    users = user_sub.add_parser("list", help="accounts, roles and state")
    _config_arg(users)
    users.add_argument("--format", choices=("text", "json"), default="text")
    users.set_defaults(run=run_user_list)

    token = sub.add_parser("token", help="API tokens for machine clients 接口令牌")
    token_sub = token.add_subparsers(title="token actions", metavar="ACTION", required=True)
    add_token = token_sub.add_parser("add", help="create a token; it is shown once")
    _config_arg(add_token)
    add_token.add_argument("--role", required=True, help="operator | office | auditor | department:ID")
    add_token.add_argument("--name", required=True, help="who or what uses it, e.g. 审计脚本")
    add_token.set_defaults(run=run_token_add)
    tokens = token_sub.add_parser("list", help="tokens, roles, and whether revoked")
    _config_arg(tokens)
    tokens.add_argument("--format", choices=("text", "json"), default="text")
    tokens.set_defaults(run=run_token_list)
    revoke_token = token_sub.add_parser("revoke", help="stop a token from working")
    _config_arg(revoke_token)
    revoke_token.add_argument("token_id", help="the id shown by `token list` (the part after cx_)")
    revoke_token.set_defaults(run=run_token_revoke)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path(os.environ.get("CX_HUB_CONFIG", "hub.toml")),
                        help="hub.toml (default: $CX_HUB_CONFIG or ./hub.toml)")


@contextmanager
def opened_store(cfg: HubConfig) -> Iterator[Any]:
    """The hub's store, migrated, disposed of afterwards."""
    from .store import Store

    store = Store(cfg.store_url, sqlite_synchronous=cfg.store.sqlite_synchronous)
    try:
        store.migrate()
        yield store
    finally:
        store.dispose()


def _time_arg(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return format_time(parse_time(value))
    except ValueError as exc:
        raise UsageError(f"时间格式错误 {exc}") from None


def _public_key(path: Path) -> PublicKey:
    try:
        return PublicKey.load(path)
    except OSError as exc:
        raise UsageError(f"无法读取公钥 cannot read {path}: {exc.strerror}") from None
    except ProtocolError as exc:
        raise UsageError(f"公钥无效 unusable public key {path}: {exc.detail}") from None


# -- commands --------------------------------------------------------------------------------

def run_init(args: argparse.Namespace) -> int:
    target: Path = args.dir
    config_path = target / "hub.toml"
    if config_path.exists():
        raise UsageError(f"{config_path} already exists; this folder already holds a hub 已存在")
    target.mkdir(parents=True, exist_ok=True)
    (target / "keys").mkdir(exist_ok=True)
    (target / "secrets" / "broker").mkdir(parents=True, exist_ok=True)
    os.chmod(target / "secrets", 0o700)
    config_path.write_text(HUB_TOML.format(
        name=args.name, store_url=args.store_url, amqp_url=args.amqp_url, vhost=args.vhost, user_prefix="cx-",
        management_url=args.management_url, listen=args.listen))
    from .timeliness import shipped_calendar_file

    (target / "calendar.toml").write_text(shipped_calendar_file().read_text("utf-8"), "utf-8")
    (target / "obligations.toml").write_text(OBLIGATIONS_TOML, "utf-8")
    key = SigningKey.generate()
    key.save(target / "keys" / "hub.key", target / "keys" / "hub.pub")
    cfg = HubConfig.load(config_path)
    cfg.session_key()  # secrets/console/session.key, mode 0600
    from .accounts import FIRST_OPERATOR, bootstrap_operator

    with opened_store(cfg) as store:  # creates the schema
        password = bootstrap_operator(store)
    print(f"hub created in {target}")
    print(f"  hub key id 中心密钥: {key.key_id} (public key {target / 'keys' / 'hub.pub'}: give it to every department)")
    print(f"  store 存储:          {cfg.store_url}")
    if password:
        print(f"  console 控制台:      http://{args.listen}/  first operator 首个管理员: {FIRST_OPERATOR} / {password}")
        print("                      (a one-time password: it must be changed at the first log-in 首次登录须修改)")
    print("next 下一步:")
    print(f"  cx hub add-dept ID --name 名称 --region 410300 --public-key ID.pub --node NODE_ID --config {config_path}")
    print(f"  cx hub provision --config {config_path}")
    print(f"  cx hub run --config {config_path}")
    return 0


def run_add_dept(args: argparse.Namespace) -> int:
    from .registry import add_department, default_node

    cfg = HubConfig.load(args.config)
    key = _public_key(args.public_key)
    nodes = tuple(args.nodes or [default_node(args.dept)])
    with opened_store(cfg) as store:
        add_department(store, args.dept, args.name, args.region, key, _time_arg(args.valid_from),
                       _time_arg(args.valid_to), node_ids=nodes)
    print(f"department {args.dept} ({args.name}, {args.region}) enrolled with key {key.key_id} and node(s) "
          f"{', '.join(nodes)} 已登记")
    print(f"next: cx hub provision --config {args.config}  (its broker user, a receipts queue and a handover file "
          "per node)")
    return 0


def run_add_node(args: argparse.Namespace) -> int:
    from .registry import add_node

    with opened_store(HubConfig.load(args.config)) as store:
        added = add_node(store, args.dept, args.node)
    print(f"node {args.node} of {args.dept} " + ("enrolled 已登记" if added else "was already enrolled 已登记过"))
    print(f"next: cx hub provision --config {args.config}  (its receipts queue and its handover file)")
    return 0


def run_depts(args: argparse.Namespace) -> int:
    from .registry import list_departments

    with opened_store(HubConfig.load(args.config)) as store:
        depts = list_departments(store)
    if args.format == "json":
        print_json(depts)
        return 0
    if not depts:
        print("no departments yet 尚无部门; add one with `cx hub add-dept`")
    for d in depts:
        print(f"{d['dept']:<16} {d['name']} ({d['region']})  ledger {d['ledger_size']} records")
        print(f"    nodes 前置机: {', '.join(d['nodes']) or 'none enrolled 尚无 (cx hub add-node)'}")
        for k in d["keys"]:
            until = k["revoked_at"] and f"revoked {k['revoked_at']}" or (k["valid_to"] and f"until {k['valid_to']}") or ""
            print(f"    key {k['key_id']}  {k['state']}  {until}")
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    from .registry import rotate_key

    cfg = HubConfig.load(args.config)
    key = _public_key(args.public_key)
    overlap = format_time(datetime.now(timezone.utc) + timedelta(days=args.overlap_days))
    with opened_store(cfg) as store:
        info, ended = rotate_key(store, args.dept, key, overlap)
    print(f"key {info.key_id} enrolled for {args.dept} 新密钥已登记")
    for key_id in ended:
        print(f"key {key_id} stays valid until {overlap}, then expires")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from .registry import revoke_key

    with opened_store(HubConfig.load(args.config)) as store:
        info = revoke_key(store, args.key_id, _time_arg(args.at))
    print(f"key {info.key_id} of {info.dept} revoked at {info.revoked_at} 已吊销: batches it signs from then on "
          "are refused; what it signed before stays valid")
    return 0


def run_provision(args: argparse.Namespace) -> int:
    from .broker import BrokerError, CredentialStore, handover_place, provision_hub, write_definitions
    from .registry import department_nodes

    cfg = HubConfig.load(args.config)
    with opened_store(cfg) as store:
        depts = department_nodes(store)
    try:
        changes = asyncio.run(provision_hub(cfg, depts))
    except BrokerError as exc:
        raise UsageError(f"broker provisioning failed 代理配置失败: {exc}") from None
    for change in changes:
        print(f"  {change}")
    print(f"{len(changes)} change(s) 项变更" if changes else "nothing to change; the broker is up to date 无需变更")
    place = handover_place(cfg)
    print(f"vhost {cfg.broker.vhost}: {len(depts)} department(s), {sum(map(len, depts.values()))} node(s)")
    print("handover files 交接文件 (give each to its department's IT; they save it as secrets/handover.toml):")
    for dept, nodes in depts.items():
        for node in nodes:
            print(f"  {place.path(dept, node)}")
        if not nodes:
            print(f"  {dept}: no node enrolled 尚无前置机 — cx hub add-node {dept} NODE_ID")
    print(f"they carry the broker address {transport_redacted(place.broker_url)}, the hub API {place.hub_api} and the "
          f"hub key {place.hub_key.key_id if place.hub_key else '(missing: the hub signing key cannot be read)'}")
    if args.definitions:
        path = write_definitions(args.definitions / "definitions.json", cfg.topology, depts,
                                 CredentialStore.for_hub(cfg), delivery_limit=cfg.broker.delivery_limit)
        print(f"definitions written to {path} (mode 0600: it holds password hashes)")
    return 0


def run_quarantine(args: argparse.Namespace) -> int:
    from .queries import quarantine_view

    with opened_store(HubConfig.load(args.config)) as store:
        items = quarantine_view(store, args.limit)
    if args.format == "json":
        print_json(items)
        return 0
    if not items:
        print("quarantine is empty 隔离区为空")
    for q in items:
        print(f"{q['received']}  {q['reason']:<22} dept {q['dept'] or '?'}  batch {q['batch_id'] or '?'}  "
              f"user {q['user_id'] or '?'}  routing {q['routing_key']}"
              + ("  refusal sent 已发拒收通知" if q.get("refusal") else ""))
        if q.get("detail_zh"):
            print(f"    {q['detail_zh']}")
        print(f"    {q['detail']}")
    return 0


def run_backup(args: argparse.Namespace) -> int:
    from .maintenance import backup_sqlite

    with opened_store(HubConfig.load(args.config)) as store:
        path = backup_sqlite(store, args.to)
    print(f"backup written to {path} 备份完成")
    return 0


def run_copy_store(args: argparse.Namespace) -> int:
    from .maintenance import copy_store
    from .store import Store

    def progress(table: str, done: int, total: int) -> None:
        print(f"\r  {table}: {done:,} / {total:,}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    target = Store(args.to)
    try:
        with opened_store(HubConfig.load(args.config)) as source:
            copied = copy_store(source, target, progress)
    finally:
        target.dispose()
    print(f"copied {sum(copied.values()):,} rows in {len(copied)} tables 复制完成")
    print(f"now set [store] url = \"{args.to}\" in {args.config} and start the hub")
    return 0


def run_install_service(args: argparse.Namespace) -> int:
    from ..service_unit import install_unit

    cfg = HubConfig.load(args.config)
    prefix = "sqlite:///"
    writable = [Path(cfg.store_url[len(prefix):]).parent] if cfg.store_url.startswith(prefix) else []
    return install_unit("hub", args.config, user=args.user, unit_dir=args.unit_dir, print_only=args.print_only,
                        writable=writable)


# glibc gives each thread that allocates at the same time as another an arena of its own (up to 8 per core), and
# an arena keeps what it once held: the hub's prepare, store and projector threads each kept their own high
# water. Two arenas: ~10 MiB less RSS after a million rows (130 against 140 MiB), CPU per record within noise.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def fewer_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas before any thread starts; whether it was set (not on another libc, nor when
    the environment already says: MALLOC_ARENA_MAX or GLIBC_TUNABLES)."""
    if platform.libc_ver()[0] != "glibc" or "MALLOC_ARENA_MAX" in os.environ or \
            "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        return ctypes.CDLL(None).mallopt(_M_ARENA_MAX, arenas) == 1
    except (OSError, AttributeError):
        return False


def run_hub(args: argparse.Namespace) -> int:
    from .. import log
    from .service import run

    fewer_malloc_arenas()  # before the store, prepare and projector threads exist

    cfg = HubConfig.load(args.config)
    try:  # what would only fail later, deep in start-up, is checked here and said plainly
        SigningKey.load(cfg.hub.signing_key)
    except OSError as exc:
        raise UsageError(f"cannot read the hub's signing key 无法读取中心签名密钥 {cfg.hub.signing_key}: "
                         f"{exc.strerror}") from None
    except ProtocolError as exc:
        raise UsageError(f"the hub's signing key is unusable 中心签名密钥不可用: {exc.detail}") from None
    try:
        cfg.hub_amqp_url()
    except ConfigError as exc:
        raise UsageError(f"{exc} — run `cx hub provision --config {args.config}` first") from None
    from .timeliness import Basis

    Basis.from_config(cfg)  # a calendar file or limit that cannot be used is said now, not deep in start-up
    log.configure()
    try:
        asyncio.run(run(cfg))
    except KeyboardInterrupt:
        pass
    return 0


# -- accounts and tokens -----------------------------------------------------------------------

def _password_arg(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text("utf-8").strip()
    except OSError as exc:
        raise UsageError(f"无法读取密码文件 cannot read {path}: {exc.strerror}") from None


def run_user_add(args: argparse.Namespace) -> int:
    from .accounts import Role, add_user

    role = Role.parse(args.role)
    with opened_store(HubConfig.load(args.config)) as store:
        password = add_user(store, args.name, role, _password_arg(args.password_file), by="cli")
    print(f"account {args.name} ({role}) created 账号已创建")
    if args.password_file is None:
        print(f"one-time password 一次性密码: {password}")
        print("it must be changed at the first log-in 首次登录须修改")
    return 0


def run_user_passwd(args: argparse.Namespace) -> int:
    from .accounts import set_password

    with opened_store(HubConfig.load(args.config)) as store:
        password = set_password(store, args.name, _password_arg(args.password_file))
    print(f"password of {args.name} changed; the account is unlocked and its sessions end 密码已修改")
    if args.password_file is None:
        print(f"one-time password 一次性密码: {password}")
    return 0


def run_user_disable(args: argparse.Namespace) -> int:
    from .accounts import disable_user

    with opened_store(HubConfig.load(args.config)) as store:
        disable_user(store, args.name, enabled=args.enable)
    print(f"account {args.name} " + ("enabled 已启用" if args.enable else "disabled; its sessions end 已停用"))
    return 0


def _listing(args: argparse.Namespace, read: Any, empty: str, line: Any) -> int:
    """`user list` and `token list`: JSON (roles as text) or one line each."""
    from dataclasses import asdict

    with opened_store(HubConfig.load(args.config)) as store:
        found = read(store)
    if args.format == "json":
        print_json([{**asdict(item), "role": str(item.role)} for item in found])
    else:
        print("\n".join(line(item) for item in found) or empty)
    return 0


def run_user_list(args: argparse.Namespace) -> int:
    from .accounts import list_users

    def line(a: Any) -> str:
        state = "disabled" if a.disabled_at else ("locked until " + a.locked_until if a.locked_until else "active")
        return (f"{a.name:<20} {str(a.role):<20} {state:<12} last login {a.last_login or '-'}"
                + ("  (one-time password)" if a.must_change else ""))

    return _listing(args, list_users, "no accounts yet 尚无账号", line)


def run_token_add(args: argparse.Namespace) -> int:
    from .accounts import Role, add_token

    role = Role.parse(args.role)
    with opened_store(HubConfig.load(args.config)) as store:
        secret = add_token(store, args.name, role, by="cli")
    print(secret)
    print(f"token for {args.name!r} ({role}); shown only now, keep it safe 令牌仅显示一次. "
          "Use it as: Authorization: Bearer <token>", file=sys.stderr)
    return 0


def run_token_list(args: argparse.Namespace) -> int:
    from .accounts import list_tokens

    return _listing(args, list_tokens, "no tokens 尚无令牌", lambda t: (
        f"{t.token_id}  {str(t.role):<20} {'revoked ' + t.revoked_at if t.revoked_at else 'active':<12} {t.name}"))


def run_token_revoke(args: argparse.Namespace) -> int:
    from .accounts import revoke_token

    with opened_store(HubConfig.load(args.config)) as store:
        revoke_token(store, args.token_id)
    print(f"token {args.token_id} revoked 已吊销")
    return 0
