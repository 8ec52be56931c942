"""Test helpers: isolated broker vhosts, hubs on SQLite or PostgreSQL, hub processes, department keys, broker relays."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from cx.hub import accounts, registry
from cx.hub.broker import ManagementAPI, deprovision, provision_hub
from cx.hub.config import HubConfig
from cx.handover import Handover
from cx.hub.store import Store
from cx.protocol.keys import SigningKey, generate_key_files
from cx.transport import Topology

MANAGEMENT = "http://127.0.0.1:15672"
AMQP = "amqp://127.0.0.1:5672/"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop (own thread)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class LoopThread:
    """An asyncio event loop on a thread of its own, for sync tests that keep async things open while they run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        """Run `coro` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BrokerRelay:
    """A TCP relay to the shared broker, owned by one test: `cut()` is a broker outage for exactly the hub and
    nodes that connect through it (`url`), while the broker and everyone else's connections keep running."""

    def __init__(self, broker: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        self._broker = broker
        self._ends: set[asyncio.StreamWriter] = set()
        self._cut = False
        self._loop = LoopThread()
        self._server = self._loop.call(asyncio.start_server(self._relay, "127.0.0.1", 0))
        self.url = f"amqp://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/"

    def cut(self) -> None:
        """Drop every relayed connection, both ways, and refuse new ones until `restore()`."""
        async def cut() -> None:
            self._cut = True
            for end in list(self._ends):
                reset(end)
        self._loop.call(cut())

    def restore(self) -> None:
        async def restore() -> None:
            self._cut = False
        self._loop.call(restore())

    def close(self) -> None:
        self.cut()
        self._server.close()
        self._loop.call(self._server.wait_closed())
        self._loop.close()

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        if self._cut:  # accepted only to be reset at once: the client sees no broker
            reset(client_out)
            return
        try:
            broker_in, broker_out = await asyncio.open_connection(*self._broker)
        except OSError:
            reset(client_out)
            return
        ends = (client_out, broker_out)
        if self._cut:  # cut while the broker side was connecting
            for end in ends:
                reset(end)
            return
        self._ends.update(ends)
        try:
            await asyncio.gather(pipe(client_in, broker_out), pipe(broker_in, client_out))
        finally:
            self._ends.difference_update(ends)


def reset(end: asyncio.StreamWriter) -> None:
    """Close a connection abruptly (RST, no FIN), as a network failure would."""
    sock = end.get_extra_info("socket")
    if sock is not None and sock.fileno() != -1:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    end.transport.abort()


async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy one direction of a relayed connection until either end goes, then close `sink` (which ends the other
    direction too)."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        reset(sink)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def delete_broker_state(topology: Topology) -> None:
    """Remove a test's vhost and every broker user with its prefix."""
    async with ManagementAPI(MANAGEMENT, "guest", "guest") as api:
        await deprovision(api, topology)


def create_pg_database() -> str:
    name = unique("cxtest_")
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Dept:
    dept: str
    key: SigningKey
    key_dir: Path
    amqp_url: str = ""

    @property
    def node(self) -> str:
        """The node enrolled with the department (`cx node init`'s default id)."""
        return f"{self.dept}-1"

    @property
    def public_key_path(self) -> Path:
        return self.key_dir / f"{self.dept}.pub"

    @property
    def private_key_path(self) -> Path:
        return self.key_dir / f"{self.dept}.key"


@dataclass
class Hub:
    """A hub set up in a folder: config, keys, store, enrolled departments, provisioned broker."""

    dir: Path
    cfg: HubConfig
    key: SigningKey
    depts: dict[str, Dept] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    token: str = ""  # an operator's API token, for tests reading the API

    @property
    def topology(self) -> Topology:
        return self.cfg.topology

    @property
    def api(self) -> str:
        host, port = self.cfg.listen()
        return f"http://{host}:{port}"

    def store(self) -> Store:
        return Store(self.cfg.store_url)

    def provision(self) -> list[str]:
        """`cx hub provision`: the broker for every department and node the hub knows of, handover files."""
        store = self.store()
        try:
            nodes = registry.department_nodes(store)
        finally:
            store.dispose()
        return run_sync(provision_hub(self.cfg, nodes))

    def add_node(self, dept: str, node: str) -> Path:
        """`cx hub add-node` then `cx hub provision`; returns the new node's handover file."""
        store = self.store()
        try:
            registry.add_node(store, dept, node)
        finally:
            store.dispose()
        self.provision()
        return self.handover_path(dept, node)

    def handover_path(self, dept: str, node: str | None = None) -> Path:
        return self.cfg.handover_dir / dept / f"{node or self.depts[dept].node}.toml"

    def start(self, log_name: str = "hub.log") -> None:
        """Run `cx hub run` as a separate process (so a test can SIGKILL it)."""
        log = open(self.dir / log_name, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "cx.cli", "hub", "run", "--config",
                                         str(self.dir / "hub.toml")], stdout=log, stderr=log,
                                        start_new_session=True)
        wait_http(f"{self.api}/readyz", timeout=30, process=self.process, log=self.dir / log_name)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=20)
        self.process = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


def wait_http(url: str, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}: {log.read_text()[-3000:] if log else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s: {log.read_text()[-3000:] if log else ''}")


def make_hub(base: Path, depts: Sequence[str], *, store_url: str = "sqlite:///hub.db",
             topology: Topology | None = None, console: str = "", amqp: str = AMQP,
             management: str = MANAGEMENT) -> Hub:
    """Initialise a hub folder with `cx hub init`'s layout, enrol departments, provision the broker
    (the shared test broker unless `amqp` and `management` name another)."""
    topology = topology or Topology(vhost=unique("cxtest-"), user_prefix=unique("t") + "-")
    base.mkdir(parents=True, exist_ok=True)
    (base / "keys").mkdir(exist_ok=True)
    key = SigningKey.generate()
    key.save(base / "keys" / "hub.key", base / "keys" / "hub.pub")
    (base / "hub.toml").write_text(f"""
[hub]
signing_key = "keys/hub.key"
[store]
url = "{store_url}"
sqlite_synchronous = "NORMAL"
[broker]
url = "{amqp}"
vhost = "{topology.vhost}"
user_prefix = "{topology.user_prefix}"
password_file = "secrets/broker/{topology.hub_user}.password"
management_url = "{management}"
prefetch = 8
[api]
listen = "127.0.0.1:{free_port()}"
[console]
trail_flush_seconds = 0.2
{console}
""")
    cfg = HubConfig.load(base / "hub.toml")
    hub = Hub(base, cfg, key)
    store = Store(cfg.store_url)
    store.migrate()
    hub.token = accounts.add_token(store, "tests", accounts.Role("operator"))
    for dept in depts:
        dkey = generate_key_files(base / "depts", dept)
        registry.add_department(store, dept, f"测试部门 {dept}", "410300", node_ids=(f"{dept}-1",))
        registry.add_key(store, dept, dkey.public)
        hub.depts[dept] = Dept(dept, dkey, base / "depts")
    store.dispose()
    hub.provision()
    for dept in depts:
        hub.depts[dept].amqp_url = Handover.load(hub.handover_path(dept)).broker_url
    return hub


async def get_json(url: str, *, token: str | None = None, **params: Any) -> Any:
    """GET a JSON answer (with an API token when given): (status, body)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, params=params, headers=headers) as resp:
            return resp.status, await resp.json()


@dataclass
class Node:
    """A department node set up in a folder against a test hub."""

    dir: Path
    hub: Hub
    dept: str
    process: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.dir / "node.toml"

    def cx(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cx.cli", "node", *args, "--config", str(self.config)],
                              capture_output=True, text=True, timeout=timeout)

    def once(self, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.cx("run", "--once", "--timeout", str(timeout), timeout=timeout + 30)

    def start(self, log_name: str = "node.log") -> None:
        log = open(self.dir / log_name, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "cx.cli", "node", "run", "--config", str(self.config)],
                                        stdout=log, stderr=log, start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        self.process = None

    def status(self) -> dict:
        import json

        done = self.cx("status", "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def healthz(node: Node) -> tuple[int, dict]:
    """(HTTP status, body) of the running node's /healthz (503 when degraded)."""
    import json
    import tomllib
    import urllib.error
    import urllib.request

    listen = tomllib.loads(node.config.read_text())["http"]["listen"]
    try:
        with urllib.request.urlopen(f"http://{listen}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, {}  # not listening (yet)


def make_node(hub: Hub, dept: str, base: Path, body: str, *, delivery: str = "", node_id: str | None = None,
              node: str = "") -> Node:
    """A node folder for `dept` with its key and the hub's handover file, and node.toml = header + body.

    As a department's IT sets it up: nothing in node.toml comes from the hub operator except through the
    handover file (broker URL and user, vhost, receipts queue, hub API, hub key). `body` holds [sources.*],
    [[streams]] and [code_tables.*]; `delivery` adds [delivery] keys, `node` [node] keys.
    """
    import shutil

    base.mkdir(parents=True, exist_ok=True)
    (base / "keys").mkdir(exist_ok=True)
    (base / "secrets").mkdir(exist_ok=True)
    d = hub.depts[dept]
    node_id = node_id or d.node
    shutil.copy(d.private_key_path, base / "keys" / f"{dept}.key")
    shutil.copy(hub.handover_path(dept, node_id), base / "secrets" / "handover.toml")
    (base / "node.toml").write_text(f"""
[node]
dept = "{dept}"
node_id = "{node_id}"
signing_key = "keys/{dept}.key"
{node}
[delivery]
heartbeat_seconds = 2
poll_seconds = 1
linger_seconds = 0.2
receipt_timeout_seconds = 10
{delivery}
[http]
listen = "127.0.0.1:{free_port()}"
{body}
""")
    return Node(base, hub, dept)


def hub_records(hub: Hub, dept: str) -> dict[str, dict]:
    """record_id -> {status, version, versions} as the hub's store holds them."""
    from sqlalchemy import func, select

    from cx.hub.store import record_versions, records

    store = hub.store()
    with store.reader.connect() as conn:
        current = {r.record_id: dict(r._mapping) for r in conn.execute(select(records).where(records.c.dept == dept))}
        counts = dict(conn.execute(select(record_versions.c.record_id, func.count()).where(
            record_versions.c.dept == dept).group_by(record_versions.c.record_id)).all())
    store.dispose()
    for rid, row in current.items():
        row["versions"] = counts.get(rid, 0)
    return current


async def wait_for(predicate, timeout: float = 15.0) -> None:
    """Poll `predicate` on the running event loop until it holds; TimeoutError after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.1)
