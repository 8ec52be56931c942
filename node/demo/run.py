"""Bring up the demo: keys, a hub on SQLite, four departments' sources and nodes, new rows every few seconds."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import select

from .. import transport
from ..handover import Handover
from ..hub import registry
from ..hub.broker import ManagementAPI, deprovision, provision_hub
from ..hub.config import HubConfig
from ..hub.store import Store, records
from ..protocol.envelope import RecordLine, build_batch, utc_now
from ..protocol.keys import PublicKey, SigningKey, generate_key_files
from ..protocol.validation import CHINA
from ..transport import Topology
from .sample import AUTHORITIES, PENALTY_CODES, SampleData, authority_uscc
from .sources import DemoSources

DEPARTMENTS = {
    "amr": ("洛阳市市场监督管理局", "410300"),
    "court": ("河南省洛阳市中级人民法院", "410300"),
    "tax": ("国家税务总局洛阳市税务局", "410300"),
    "fda": ("洛阳市食品药品监督管理局", "410300"),
}
STATE_VERSION = 1
# the lists the sample records put enterprises on (node/hub/credit_rules.toml)
DEMO_LISTS = ("abnormal", "serious_violation", "judgment_debtors", "red")
# the market regulator's credit-repair desk (信用修复窗口): a second node of the department that sends repairs
REPAIR_NODE = "amr-repair"
REPAIR_REASON = "信用修复：当事人已履行行政处罚决定、完成整改并作出信用承诺，准予提前停止公示"
DEMO_ACCOUNTS = (("operator", "operator"), ("office", "office"), ("amr", "department:amr"), ("auditor", "auditor"))
# what the demo's joint-meeting office expects of the four departments (cx hub obligations show)
DEMO_OBLIGATIONS = """\
title = "演示：各部门月度报送任务"

[[obligation]]
id = "licences-monthly"
title = "行政许可信息按月归集公示"
unit = "市场监督管理局、食品药品监督管理局"
departments = ["amr", "fda"]
record_types = ["administrative_license"]
period = "month"
due_workdays = 7

[[obligation]]
id = "penalties-monthly"
title = "行政处罚信息按月归集公示"
departments = ["amr", "tax"]
record_types = ["administrative_penalty"]
period = "month"
due_workdays = 7

[[obligation]]
id = "judicial-monthly"
title = "司法公示信息按月归集"
departments = ["court"]
record_types = ["judicial"]
period = "month"

[[obligation]]
id = "a-grade-taxpayers"
title = "纳税信用A级纳税人名单"
departments = ["tax"]
record_types = ["honor"]
period = "month"
"""


@dataclass
class Broker:
    amqp: str  # amqp://host:port/ without credentials
    management: str
    user: str
    password: str

    @classmethod
    def from_env(cls) -> Broker:
        """CX_AMQP_URL (credentials of a broker administrator) if set, else the local broker as guest."""
        url = os.environ.get("CX_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        scheme = parts.scheme or "amqp"
        port = parts.port or (5671 if scheme == "amqps" else 5672)
        management = os.environ.get("CX_MANAGEMENT_URL", f"http://{host}:15672")
        return cls(f"{scheme}://{host}:{port}/", management, unquote(parts.username or "guest"),
                   unquote(parts.password or "guest"))

    def reachable(self) -> str | None:
        parts = urlsplit(self.amqp)
        try:
            with socket.create_connection((parts.hostname, parts.port), timeout=3):
                pass
        except OSError as exc:
            return f"no broker at {parts.hostname}:{parts.port} ({exc.strerror or exc})"
        try:
            with urllib.request.urlopen(self.management + "/api/overview", timeout=5):
                pass
        except urllib.error.HTTPError:
            pass  # it answers (401 without credentials): the management API is there
        except OSError as exc:
            return f"the RabbitMQ management API does not answer at {self.management} ({exc})"
        return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cx.demo", description=__doc__)
    p.add_argument("--state", type=Path, default=Path("var/demo"), help="where the demo keeps its state")
    p.add_argument("--keys", type=Path, default=Path("certs/dev"), help="development keys (generated, not committed)")
    p.add_argument("--reset", action="store_true", help="start from scratch: delete state, vhost and demo users")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--interval", type=float, default=5, help="seconds between new source rows (default 5)")
    p.add_argument("--port", type=int, default=8470, help="hub API and dashboard port; nodes use the next four")
    p.add_argument("--vhost", default="credit-exchange-demo")
    p.add_argument("--user-prefix", default="cxdemo-")
    p.add_argument("--pg-database", default="cx_demo_fda", help="PostgreSQL database for the food and drug "
                   "department's table (SQLite when PostgreSQL is not reachable)")
    p.add_argument("--quiet", action="store_true", help="no periodic status lines")
    return p.parse_args(argv)


def say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    broker = Broker.from_env()
    problem = broker.reachable()
    if problem:
        say(f"演示无法启动 the demo cannot start: {problem}.\n"
            "Start RabbitMQ with its management plugin, e.g.:\n"
            "  sudo apt-get install rabbitmq-server && sudo rabbitmq-plugins enable rabbitmq_management\n"
            "or point CX_AMQP_URL at a broker (amqp://admin:password@host:5672/) and CX_MANAGEMENT_URL at its "
            "management API.")
        return 1
    for port in range(args.port, args.port + 1 + len(DEPARTMENTS)):
        if _port_busy(port):
            say(f"port {port} is in use — is another demo running? Stop it, or run with a different --port "
                f"(make demo DEMO_ARGS='--port 9470').")
            return 1
    topology = Topology(vhost=args.vhost, user_prefix=args.user_prefix)
    if args.reset:
        reset(args, topology, broker)
    demo = Demo(args, topology, broker)
    return demo.run()


def reset(args: argparse.Namespace, topology: Topology, broker: Broker) -> None:
    say(f"resetting the demo: {args.state}, vhost {topology.vhost}, users {topology.user_prefix}*")
    shutil.rmtree(args.state, ignore_errors=True)

    async def clean() -> None:
        async with ManagementAPI(broker.management, broker.user, broker.password) as api:
            await deprovision(api, topology)

    asyncio.run(clean())
    pg = _postgres_admin_url()
    if pg:
        import psycopg

        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.pg_database}" WITH (FORCE)')


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _postgres_admin_url() -> str | None:
    """PostgreSQL for the food and drug department, when one answers on the usual local port."""
    url = os.environ.get("CX_DEMO_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return url
    except Exception:  # noqa: BLE001 - any failure: use SQLite instead
        return None


class Demo:
    def __init__(self, args: argparse.Namespace, topology: Topology, broker: Broker):
        self.args = args
        self.topology = topology
        self.broker = broker
        self.state: Path = args.state.resolve()
        self.keys: Path = args.keys.resolve()
        self.hub_dir = self.state / "hub"
        self.logs = self.state / "logs"
        self.processes: dict[str, subprocess.Popen] = {}
        self.stopping = False
        self.logins: dict[str, Any] = {"accounts": [], "token": ""}
        self.repaired: dict[str, str] | None = None  # the penalty the repair desk withdrew (信用修复)

    # -- set-up ---------------------------------------------------------------------------

    def run(self) -> int:
        started = time.time()
        self.state.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        reused = (self.state / "demo.json").exists()
        say(("reusing the demo state in " if reused else "creating the demo in ") + str(self.state))
        keys = self.ensure_keys()
        sources = self.ensure_sources()
        cfg = self.ensure_hub(keys)
        changes = asyncio.run(provision_hub(cfg, {dept: [f"{dept}-1", *([REPAIR_NODE] if dept == "amr" else [])]
                                                  for dept in DEPARTMENTS}))
        say(f"broker: vhost {self.topology.vhost} provisioned ({len(changes)} change(s))")
        for dept in DEPARTMENTS:
            self.write_node(dept, sources, cfg)
        saved = json.loads((self.state / "demo.json").read_text()) if reused else {}
        self.repaired = saved.get("repaired")
        self.save_state()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        try:
            self.start("hub", ["hub", "run", "--config", str(self.hub_dir / "hub.toml")])
            self.wait_ready(f"http://127.0.0.1:{self.args.port}/readyz", "hub")
            for dept in DEPARTMENTS:
                self.start(f"node-{dept}", ["node", "run", "--config", str(self.state / "nodes" / dept / "node.toml")])
            self.banner()
            last_status = time.time()
            while not self.stopping:
                if self.args.duration and time.time() - started > self.args.duration:
                    break
                self.check_children()
                if self.repaired is None:
                    self.repaired = asyncio.run(self.repair_a_penalty(cfg))
                sources.grow()
                if not self.args.quiet and time.time() - last_status > 15:
                    self.status_line()
                    last_status = time.time()
                self.sleep(self.args.interval)
        finally:
            self.shutdown()
        self.status_line(final=True)
        return 0

    def save_state(self) -> None:
        (self.state / "demo.json").write_text(json.dumps({
            "version": STATE_VERSION, "vhost": self.topology.vhost, "user_prefix": self.topology.user_prefix,
            "repaired": self.repaired}, ensure_ascii=False))

    async def repair_a_penalty(self, cfg: HubConfig) -> dict[str, str] | None:
        """信用修复: once the first market-regulation penalty is public, the repair desk ends its publication.

        A repair is a retraction whose reason starts with 信用修复, signed with the department's key and
        sent by its repair desk's own node; the portal stops showing the penalty, the history keeps it.
        """
        store = Store(cfg.store_url)
        try:
            with store.reader.connect() as conn:
                penalty = conn.execute(
                    select(records.c.record_id, records.c.uscc, records.c.subject_name)
                    .where(records.c.dept == "amr", records.c.type == "administrative_penalty",
                           records.c.status == "active", records.c.uscc.is_not(None))
                    .order_by(records.c.ledger_index).limit(1)).first()
        finally:
            store.dispose()
        if penalty is None:
            return None  # not yet accepted: try again next round
        line = RecordLine(penalty.record_id, "administrative_penalty", 1, "retract", None,
                          {"adapter": "credit-repair-desk", "locator": penalty.record_id, "extracted": utc_now()},
                          REPAIR_REASON)
        batch = build_batch(SigningKey.load(self.keys / "amr.key"), dept="amr", node=REPAIR_NODE, seq=1, prev=None,
                            lines=[line.to_bytes()], schemas={"administrative_penalty": 1})
        handover = Handover.load(cfg.handover_dir / "amr" / f"{REPAIR_NODE}.toml")
        connection = await transport.connect(handover.broker_url)
        try:
            channel = await transport.confirmed_channel(connection)
            exchange = await channel.get_exchange(self.topology.records_exchange, ensure=False)
            await transport.publish(exchange, "amr.administrative_penalty", batch.to_bytes(),
                                    message_type=transport.BATCH, message_id=batch.header.batch_id,
                                    user_id=handover.broker_user)
            queue = await channel.get_queue(handover.receipts_queue, ensure=False)
            deadline = time.time() + 30
            while time.time() < deadline:
                message = await queue.get(fail=False)
                if message is not None:
                    await message.ack()
                    break
                await asyncio.sleep(0.3)
        finally:
            await connection.close()
        self.repaired = {"record_id": penalty.record_id, "uscc": penalty.uscc, "name": penalty.subject_name}
        self.save_state()
        say(f"  credit repair 信用修复: {penalty.subject_name}'s penalty {penalty.record_id} is no longer public — "
            f"http://127.0.0.1:{self.args.port}/portal/enterprises/{penalty.uscc}")
        return self.repaired

    def ensure_keys(self) -> dict[str, SigningKey]:
        self.keys.mkdir(parents=True, exist_ok=True)
        out = {}
        for name in ("hub", *DEPARTMENTS):
            path = self.keys / f"{name}.key"
            out[name] = SigningKey.load(path) if path.exists() else generate_key_files(self.keys, name)
        return out

    def ensure_sources(self) -> DemoSources:
        gen = SampleData(seed=int(time.time()))
        pg = _postgres_admin_url()
        fda_url = f"sqlite:///{self.state / 'sources' / 'fda.db'}"
        if pg:
            import psycopg

            with psycopg.connect(pg, autocommit=True) as conn:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.args.pg_database,)).fetchone():
                    conn.execute(f'CREATE DATABASE "{self.args.pg_database}"')
            parts = urlsplit(pg)
            fda_url = f"postgresql+psycopg://{parts.netloc}/{self.args.pg_database}"
        sources = DemoSources(self.state / "sources", gen, fda_url)
        fresh = not (self.state / "sources" / "amr.db").exists()
        sources.create()
        if fresh:
            sources.grow(scale=25)  # a first export: a few hundred records per department
        say(f"sources: {self.state / 'sources'} (food and drug on "
            f"{'PostgreSQL ' + self.args.pg_database if pg else 'SQLite'})")
        return sources

    def ensure_hub(self, keys: dict[str, SigningKey]) -> HubConfig:
        d = self.hub_dir
        (d / "secrets" / "broker").mkdir(parents=True, exist_ok=True)
        os.chmod(d / "secrets", 0o700)
        management_secret = d / "secrets" / "management.password"
        management_secret.write_text(self.broker.password)
        os.chmod(management_secret, 0o600)
        (d / "hub.toml").write_text(f"""# written by the demo (python -m cx.demo); a real hub starts with `cx hub init`
[hub]
name = "洛阳市企业信用信息交换中心（演示）"
signing_key = "{self.keys / 'hub.key'}"
[store]
url = "sqlite:///hub.db"
[broker]
url = "{self.broker.amqp}"
vhost = "{self.topology.vhost}"
user_prefix = "{self.topology.user_prefix}"
password_file = "secrets/broker/{self.topology.hub_user}.password"
management_url = "{self.broker.management}"
management_user = "{self.broker.user}"
management_password_file = "secrets/management.password"
[api]
listen = "127.0.0.1:{self.args.port}"
[console]
silent_after_seconds = 60            # the demo's nodes beat every 10 s
[compliance]
obligations = "obligations.toml"
[portal]
contact = "洛阳市企业信用信息交换中心（演示）：信用修复与异议窗口"
[portal.contacts]
amr = "洛阳市市场监督管理局信用监督管理科（演示）"
court = "河南省洛阳市中级人民法院执行局（演示）"
tax = "国家税务总局洛阳市税务局纳税服务科（演示）"
fda = "洛阳市食品药品监督管理局政策法规科（演示）"
""")
        (d / "obligations.toml").write_text(DEMO_OBLIGATIONS, "utf-8")
        cfg = HubConfig.load(d / "hub.toml")
        cfg.session_key()
        store = Store(cfg.store_url)
        store.migrate()
        enrolled = {x["dept"]: {k["key_id"] for k in x["keys"]} for x in registry.list_departments(store)}
        for dept, (name, region) in DEPARTMENTS.items():
            if dept not in enrolled:
                registry.add_department(store, dept, name, region, node_ids=(f"{dept}-1",))
            registry.add_node(store, dept, f"{dept}-1")  # a demo state from before nodes were enrolled
            if keys[dept].key_id not in enrolled.get(dept, set()):
                registry.add_key(store, dept, PublicKey.from_raw(keys[dept].public.raw))
        registry.add_node(store, "amr", REPAIR_NODE)
        self.logins = self.ensure_accounts(store, cfg)
        store.dispose()
        return cfg

    def ensure_accounts(self, store: Store, cfg: HubConfig) -> dict[str, Any]:
        """One console account per role (passwords generated here, kept in the demo's secrets, printed by
        the banner) and an operator API token for the status line and the curl examples."""
        from ..hub import accounts

        path = cfg.console.session_key_file.parent / "demo-logins.json"
        if path.exists():
            return json.loads(path.read_text())
        logins: dict[str, Any] = {"accounts": []}
        for name, role in DEMO_ACCOUNTS:
            password = accounts.new_password()
            if accounts.get_user(store, name) is None:
                accounts.add_user(store, name, accounts.Role.parse(role), password, by="demo")
            else:
                accounts.set_password(store, name, password)
            logins["accounts"].append({"name": name, "role": role, "password": password})
        logins["token"] = accounts.add_token(store, "the demo's status line", accounts.Role("operator"), by="demo")
        path.touch(mode=0o600)
        path.write_text(json.dumps(logins, ensure_ascii=False, indent=1))
        (path.parent / "demo.token").write_text(logins["token"] + "\n")
        os.chmod(path.parent / "demo.token", 0o600)
        return logins

    def write_node(self, dept: str, sources: DemoSources, cfg: HubConfig) -> None:
        d = self.state / "nodes" / dept
        (d / "secrets").mkdir(parents=True, exist_ok=True)
        os.chmod(d / "secrets", 0o700)
        shutil.copy(cfg.handover_dir / dept / f"{dept}-1.toml", d / "secrets" / "handover.toml")
        os.chmod(d / "secrets" / "handover.toml", 0o600)
        port = self.args.port + 1 + list(DEPARTMENTS).index(dept)
        header = f"""# written by the demo (python -m cx.demo); a real node starts with `cx node init`
[node]
dept = "{dept}"
node_id = "{dept}-1"
signing_key = "{self.keys / (dept + '.key')}"
handover = "secrets/handover.toml"  # from the hub: broker, vhost, receipts queue, hub API and hub key
[delivery]
poll_seconds = {3 if dept != 'fda' else 20}
linger_seconds = 1
heartbeat_seconds = 10
[http]
listen = "127.0.0.1:{port}"
"""
        (d / "node.toml").write_text(header + NODE_STREAMS[dept](sources))

    # -- processes ------------------------------------------------------------------------

    def start(self, name: str, cx_args: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen([sys.executable, "-m", "cx.cli", *cx_args], stdout=log, stderr=log,
                                                start_new_session=True)

    def wait_ready(self, url: str, name: str, timeout: float = 40) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.check_children()
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"{name} did not become ready; see {self.logs / (name + '.log')}")

    def check_children(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None and not self.stopping:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"{name} stopped unexpectedly (exit {proc.returncode}):\n{tail}")

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def sleep(self, seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end and not self.stopping:
            time.sleep(0.2)

    def shutdown(self) -> None:
        self.stopping = True
        say("stopping 正在停止 …")
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.time() + 15
        for name, proc in self.processes.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        say("stopped 已停止. `make demo` continues where this left off; `make demo RESET=1` starts afresh.")

    # -- output ---------------------------------------------------------------------------

    def banner(self) -> None:
        base = f"http://127.0.0.1:{self.args.port}"
        today = datetime.now(CHINA).date()
        rel = os.path.relpath
        token_file = rel(self.hub_dir / "secrets" / "console" / "demo.token")
        lines = [
            "",
            "Credit Exchange demo is running 演示已启动",
            f"  console 控制台:       {base}/",
            f"  compliance 合规:      {base}/compliance   (the office's view: 食品药品监督管理局 delivers late 逾期报送)",
            f"  portal 公示查询:      {base}/portal   (public, no login 公众无需登录; e.g. search 搜索 “洛阳”)",
            f"    lists 名单:         {base}/portal/lists/{{{','.join(DEMO_LISTS)}}}",
        ]
        for login in self.logins["accounts"]:
            lines.append(f"    {login['role']:<16} login 登录: {login['name']:<9} / {login['password']}")
        lines += [
            f"  hub API 接口:         {base}/api/v1/departments   (OpenAPI {base}/api/v1/openapi.json; "
            f"an operator token is in {token_file})",
            f"  RabbitMQ management:  {self.broker.management}/   login 登录: {self.broker.user} / "
            f"{'guest' if self.broker.password == 'guest' else '(your CX_AMQP_URL password)'}",
            "  department nodes 部门前置机:",
        ]
        for i, (dept, (name, _)) in enumerate(DEPARTMENTS.items()):
            lines.append(f"    {dept:<6} {name:<16} http://127.0.0.1:{self.args.port + 1 + i}/healthz")
        lines += [
            f"  state 状态: {rel(self.state)}   logs 日志: {rel(self.logs)}",
            "  try 试试:",
            f"    .venv/bin/cx node status --config {rel(self.state / 'nodes' / 'amr' / 'node.toml')}",
            f"    .venv/bin/cx node rejections --config {rel(self.state / 'nodes' / 'court' / 'node.toml')}",
            f"    curl -s -H \"Authorization: Bearer $(cat {token_file})\" "
            f"{base}/api/v1/departments/amr/records/amr-xzcf-1/proof > bundle.json && "
            f".venv/bin/cx verify bundle.json --public-key {rel(self.keys / 'amr.pub')}",
            f"    .venv/bin/cx report compliance --config {rel(self.hub_dir / 'hub.toml')} "
            f"--from {today.replace(day=1)} --to {today} --format pdf --out var/compliance.pdf",
            f"    .venv/bin/cx verify-report var/compliance.pdf --public-key {rel(self.keys / 'hub.pub')}",
            "  Ctrl-C stops everything 按 Ctrl-C 停止.",
            "",
        ]
        say("\n".join(lines))

    def status_line(self, final: bool = False) -> None:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{self.args.port}/api/v1/dashboard",
                                             headers={"Authorization": f"Bearer {self.logins['token']}"})
            with urllib.request.urlopen(request, timeout=3) as resp:
                view = json.load(resp)
        except OSError:
            hub_db = Store(f"sqlite:///{self.hub_dir / 'hub.db'}")
            try:
                from ..hub.queries import dashboard_view

                view = dashboard_view(hub_db)
            finally:
                hub_db.dispose()
        parts = [f"{d['dept']} {d['accepted']:,} accepted/{d['rejected']:,} rejected" for d in view["departments"]]
        say(("final 最终: " if final else "hub 中心: ") + " · ".join(parts) +
            f" · quarantined {view['quarantined_total']}")


def _amr_streams(s: DemoSources) -> str:
    name, code = AUTHORITIES["amr"][0], authority_uscc("amr")
    penalty_codes = "\n".join(f'"{k}" = "{v}"' for k, v in PENALTY_CODES.items())
    return f"""
[sources.db]
adapter = "sql"
url = "{s.amr_url}"

[[streams]]
name = "registrations"
source = "db"
type = "enterprise_registration"
table = "qydj"
key = ["id"]
cursor = "gxsj"
record_id = "amr-qydj-{{id}}"
entered_by = "lrr"
[streams.fields]
subject_name = "qymc"
subject_category = {{ const = "legal_person" }}
uscc = "tyshxydm"
org_code = "zzjgdm"
enterprise_type = "qylx"
legal_rep = "fddbr"
registered_capital = "zczb"
established_date = "clrq"
address = "zs"
business_scope = "jyfw"
licensed_items = "xkjyxm"
status = "djzt"
registration_authority = "djjg"
approval_date = "hzrq"
region = "xzqh"

[[streams]]
name = "licences"
source = "db"
type = "administrative_license"
table = "xzxk"
key = ["id"]
cursor = "gxsj"
record_id = "amr-xzxk-{{id}}"
entered_by = "lrr"
[streams.fields]
subject_name = "xdr_mc"
subject_category = {{ column = "xdr_lb", map = "subject_category" }}
uscc = "tyshxydm"
authority = {{ const = "{name}" }}
authority_uscc = {{ const = "{code}" }}
decision_doc_name = "xkws_mc"
decision_no = "xkjdswh"
license_category = "xklb"
certificate_name = "xkzs_mc"
license_no = "xkbh"
content = "xknr"
decision_date = "xkjdrq"
valid_from = "yxqz"
valid_to = "yxqzhi"

[[streams]]
name = "penalties"
source = "db"
type = "administrative_penalty"
table = "xzcf"
key = ["id"]
cursor = "gxsj"
record_id = "amr-xzcf-{{id}}"
entered_by = "lrr"
[streams.fields]
subject_name = "dsr_mc"
subject_category = {{ column = "dsr_lb", map = "subject_category" }}
uscc = "tyshxydm"
authority = {{ const = "{name}" }}
authority_uscc = {{ const = "{code}" }}
decision_no = "cfjdswh"
violation_type = "wflx"
facts = "wfss"
legal_basis = "cfyj"
penalty_types = {{ column = "cflb", map = "penalty_codes" }}
content = "cfnr"
fine_amount = "fkje"
decision_date = "cfjdrq"

[[streams]]
name = "abnormal"
source = "db"
type = "abnormal_operation"
table = "jyyc"
key = ["id"]
cursor = "gxsj"
record_id = "amr-jyyc-{{id}}"
[streams.fields]
subject_name = "qymc"
subject_category = {{ const = "legal_person" }}
uscc = "tyshxydm"
authority = {{ const = "{name}" }}
authority_uscc = {{ const = "{code}" }}
action = "lrlx"
reason = "yy"
decision_no = "jdswh"
decision_date = "jdrq"

[[streams]]
name = "serious"
source = "db"
type = "serious_violation"
table = "yzwf"
key = ["id"]
cursor = "gxsj"
record_id = "amr-yzwf-{{id}}"
[streams.fields]
subject_name = "qymc"
subject_category = {{ const = "legal_person" }}
uscc = "tyshxydm"
authority = {{ const = "{name}" }}
authority_uscc = {{ const = "{code}" }}
action = "lrlx"
reason = "yy"
decision_no = "jdswh"
decision_date = "jdrq"

[code_tables.subject_category]
"法人" = "legal_person"
"个体" = "individual_business"

[code_tables.penalty_codes]
{penalty_codes}
"""


def _court_streams(s: DemoSources) -> str:
    return f"""
[sources.db]
adapter = "sql"
url = "{s.court_url}"

[[streams]]
name = "judicial"
source = "db"
type = "judicial"
table = "sfgs"
key = ["ah"]
# no cursor: the table has no change time, so the node compares snapshots and retracts deleted rows
record_id = "court-{{ah}}"
[streams.fields]
subject_name = "dsr"
subject_category = {{ const = "legal_person" }}
uscc = "tyshxydm"
judicial_kind = "lx"
case_no = "ah"
court = "fy"
content = "nr"
amount = "je"
decision_date = "cprq"
status = "zt"
"""


def _tax_streams(s: DemoSources) -> str:
    return f"""
[sources.drop]
adapter = "files"
folder = "{s.tax_folder}"
encoding = "auto"
settle_seconds = 1

[[streams]]
name = "a-grade-taxpayers"
source = "drop"
type = "honor"
pattern = "纳税信用A级纳税人名单*.csv"
key = ["统一社会信用代码", "评价年度"]
record_id = "tax-honor-{{统一社会信用代码}}-{{评价年度}}"
[streams.fields]
subject_name = "纳税人名称"
subject_category = {{ const = "legal_person" }}
uscc = "统一社会信用代码"
honor_name = {{ template = "{{评价年度}}年度纳税信用A级纳税人" }}
level = {{ const = "市级" }}
conferred_by = "评定机关"
conferred_date = "评定日期"

[[streams]]
name = "tax-penalties"
source = "drop"
type = "administrative_penalty"
pattern = "税务行政处罚*.xlsx"
key = ["处罚决定书文号"]
record_id = "tax-penalty-{{处罚决定书文号}}"
[streams.fields]
subject_name = "当事人名称"
subject_category = {{ const = "legal_person" }}
uscc = "统一社会信用代码"
decision_no = "处罚决定书文号"
violation_type = "违法行为类型"
facts = "违法事实"
legal_basis = "处罚依据"
penalty_types = "处罚类别"
content = "处罚内容"
fine_amount = "罚款金额（万元）"
decision_date = "处罚决定日期"
authority = "处罚机关"
authority_uscc = "处罚机关统一社会信用代码"
"""


def _fda_streams(s: DemoSources) -> str:
    name, code = AUTHORITIES["fda"][0], authority_uscc("fda")
    return f"""
[sources.db]
adapter = "sql"
url = "{s.fda_url}"

[[streams]]
name = "food-licences"
source = "db"
type = "administrative_license"
table = "spjyxk"
key = ["xkzbh"]
cursor = "gxsj"
record_id = "fda-{{xkzbh}}"
[streams.fields]
subject_name = "jyz_mc"
subject_category = {{ const = "legal_person" }}
uscc = "tyshxydm"
legal_rep = "fddbr"
authority = {{ const = "{name}" }}
authority_uscc = {{ const = "{code}" }}
decision_doc_name = {{ const = "食品经营许可决定书" }}
decision_no = "xkzbh"
license_category = {{ const = "普通" }}
certificate_name = {{ const = "食品经营许可证" }}
license_no = "xkzbh"
content = "jyxm"
decision_date = "xkjdrq"
valid_from = "yxqz"
valid_to = "yxqzhi"
"""


NODE_STREAMS = {"amr": _amr_streams, "court": _court_streams, "tax": _tax_streams, "fda": _fda_streams}
