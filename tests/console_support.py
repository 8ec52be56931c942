"""A hub's console served in the test's own event loop, with departments, records and accounts of every role.

Records enter through the hub's real ingest (`Ingestor.process`, the code the broker consumer runs),
signed by each department's key; the broker is not needed to test who may see them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from cx.hub import accounts, registry
from cx.hub.config import HubConfig
from cx.hub.ingest import Inbound, Ingestor
from cx.hub.service import build_app
from cx.hub.store import Store
from cx.protocol.envelope import RecordLine, build_batch
from cx.protocol.heartbeat import Heartbeat
from cx.protocol.keys import SigningKey, generate_key_files
from cx.transport import Topology
from examples import EXAMPLES
from support import free_port

PASSWORD = "correct horse battery"
ROLES = {"op": "operator", "office1": "office", "amr1": "department:amr", "court1": "department:court",
         "aud": "auditor"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def record_line(record_id: str, rtype: str, data: dict | None = None) -> bytes:
    return RecordLine(record_id, rtype, 1, "upsert", data or EXAMPLES[rtype],
                      {"adapter": "test", "locator": f"row {record_id}", "extracted": "2026-01-01T00:00:00.000Z"}
                      ).to_bytes()


@dataclass
class ConsoleHub:
    dir: Path
    cfg: HubConfig
    key: SigningKey
    dept_keys: dict[str, SigningKey]
    url: str = ""
    runner: web.AppRunner | None = None
    app: web.Application | None = None
    batches: dict[str, str] = field(default_factory=dict)  # dept -> a batch id
    tokens: dict[str, str] = field(default_factory=dict)

    def store(self) -> Store:
        return Store(self.cfg.store_url)

    async def start(self) -> None:
        self.app = build_app(self.cfg)
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        host, port = self.cfg.listen()
        await web.TCPSite(self.runner, host, port).start()
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def flush_trail(self) -> None:
        import asyncio

        from cx.hub.access import TRAIL

        await asyncio.to_thread(self.app[TRAIL].flush)


def make_console_hub(base: Path, store_url: str, console: str = "", api: str = "", more: str = "") -> ConsoleHub:
    """A hub folder (no broker reachable: the console does not need one) with amr and court enrolled,
    a few records each (the registration holds an ID number), a heartbeat, and one account per role.
    `more` is appended to hub.toml (further sections)."""
    base.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    (base / "keys").mkdir(exist_ok=True)
    key.save(base / "keys" / "hub.key", base / "keys" / "hub.pub")
    (base / "broker.password").write_text("unused")
    (base / "hub.toml").write_text(f"""
[hub]
name = "测试交换中心"
signing_key = "keys/hub.key"
[store]
url = "{store_url}"
sqlite_synchronous = "NORMAL"
[broker]
url = "amqp://127.0.0.1:1/"
password_file = "broker.password"
[api]
listen = "127.0.0.1:{free_port()}"
{api}
[console]
{console if "trail_flush_seconds" in console else "trail_flush_seconds = 0.2" + chr(10) + console}
{more}
""")
    cfg = HubConfig.load(base / "hub.toml")
    store = Store(cfg.store_url)
    store.migrate()
    topology = Topology()
    hub = ConsoleHub(base, cfg, key, {})
    ingestor = Ingestor(store, key, topology)
    for dept in ("amr", "court"):
        dkey = generate_key_files(base / "depts", dept)
        hub.dept_keys[dept] = dkey
        registry.add_department(store, dept, f"测试部门{dept}", "410300", dkey.public)
        lines = [record_line(f"{dept}-reg-1", "enterprise_registration"),
                 record_line(f"{dept}-pen-1", "administrative_penalty")]
        prev = None
        for i, line in enumerate(lines):
            rtype = "enterprise_registration" if i == 0 else "administrative_penalty"
            batch = build_batch(dkey, dept=dept, node=f"{dept}-1", seq=i + 1, prev=prev, lines=[line],
                                schemas={rtype: 1})
            prev = batch.header_hash
            outcome = ingestor.process(Inbound(batch.to_bytes(), f"{dept}.{rtype}", topology.dept_user(dept), "m"))
            assert outcome.result == "accepted", outcome
            hub.batches[dept] = batch.header.batch_id
        beat = Heartbeat.sign(dkey, dept=dept, node=f"{dept}-1", version="0.1.0", outbox_depth=3,
                              oldest_pending_seconds=5.0, last_error=None,
                              inventory={"administrative_penalty": 4}, rejections={"administrative_penalty":
                                                                                  {"format:uscc": 7}})
        assert ingestor.process_heartbeat(Inbound(beat, f"{dept}.heartbeat", topology.dept_user(dept))).result \
            == "heartbeat"
    for name, role in ROLES.items():
        accounts.add_user(store, name, accounts.Role.parse(role), PASSWORD)
        hub.tokens[name] = accounts.add_token(store, f"token of {name}", accounts.Role.parse(role))
    store.dispose()
    return hub


class Client:
    """A browser-like HTTP client: keeps cookies, reads the CSRF token from the last page it saw."""

    def __init__(self, hub: ConsoleHub, lang: str = "en"):
        self.hub = hub
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        self.session = aiohttp.ClientSession(cookie_jar=jar, cookies={"cx_lang": lang})
        self.csrf = ""

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.session.close()

    async def get(self, path: str, **kw: Any) -> tuple[int, str, str]:
        async with self.session.get(self.hub.url + path, **kw) as r:
            body = await r.text()
            found = CSRF.search(body)
            if found:
                self.csrf = found.group(1)
            return r.status, body, str(r.url)

    async def post(self, path: str, data: dict[str, str], csrf: bool = True, **kw: Any) -> tuple[int, str, str]:
        form = {**data, "csrf_token": self.csrf} if csrf else dict(data)
        async with self.session.post(self.hub.url + path, data=form, **kw) as r:
            body = await r.text()
            found = CSRF.search(body)
            if found:
                self.csrf = found.group(1)
            return r.status, body, str(r.url)

    async def login(self, name: str, password: str = PASSWORD) -> tuple[int, str, str]:
        await self.get("/login")
        return await self.post("/login", {"name": name, "password": password})

    async def json(self, path: str, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.get(self.hub.url + path, headers=headers) as r:
            return r.status, await r.json(content_type=None)
