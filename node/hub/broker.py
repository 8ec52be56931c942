"""Broker provisioning: the hub's vhost, exchanges, quorum queues and per-department users in RabbitMQ."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from ..handover import Handover
from ..protocol.envelope import NODE_ID
from ..protocol.errors import ProtocolError
from ..protocol.keys import PublicKey, SigningKey
from ..transport import Topology, amqp_url
from .config import HubConfig

HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
_HASHES = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}
# a department code becomes the first word of a topic routing key and a file name
_BAD_DEPT = re.compile(r"[\s.*#/\\]")
_NOTHING = "^$"


class BrokerError(Exception):
    """Provisioning could not be done; the message says why and what to do."""


class ManagementError(BrokerError):
    """The management API answered with an error status."""

    def __init__(self, method: str, path: str, status: int, error: str, reason: str):
        self.method = method
        self.path = path
        self.status = status
        self.error = error
        self.reason = reason
        hint = " (check [broker] management_user and management_password)" if status == 401 else ""
        super().__init__(f"RabbitMQ management API {method} {path}: HTTP {status} {error}: {reason}{hint}")


class TopologyMismatch(BrokerError):
    """Exchanges or queues exist with settings the broker cannot change in place."""

    def __init__(self, vhost: str, problems: list[str]):
        self.vhost = vhost
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"vhost {vhost!r}: these exist with settings the broker cannot change in place; provisioning stopped "
            f"before changing any exchange, queue or user:\n{lines}\n"
            "Delete an empty queue (rabbitmqctl delete_queue --vhost <vhost> <queue>) or a mismatched exchange "
            "(management UI or rabbitmqadmin) and provision again. Never delete a queue that holds messages: let "
            "its consumer drain it, or move the messages with a shovel, first. A different x-delivery-limit can "
            "instead be matched by setting [broker] delivery_limit in hub.toml. "
            "已存在的队列或交换机参数与期望不符，无法原地修改")


# ---------------------------------------------------------------------------------------------
# the management HTTP API


class ManagementAPI:
    """A small client for the RabbitMQ management HTTP API; `async with` owns its HTTP session."""

    def __init__(self, url: str = "http://127.0.0.1:15672", user: str = "guest", password: str = "guest", *,
                 timeout: float = 30.0):
        self.url = url.rstrip("/")
        credentials = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
        self._headers = {"Authorization": f"Basic {credentials}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ManagementAPI:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, *segments: str, body: Any = None, missing_ok: bool = False) -> Any:
        if self._session is None:
            raise RuntimeError("use ManagementAPI as `async with ManagementAPI(...) as api`")
        # every segment is quoted whole: vhost "/" is "%2F", a binding's properties key "%23" is "%2523"
        path = "/api/" + "/".join(quote(s, safe="") for s in segments)
        try:
            async with self._session.request(method, URL(self.url + path, encoded=True), json=body) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BrokerError(f"cannot reach the RabbitMQ management API at {self.url}: {exc or type(exc).__name__}; is the management "
                              "plugin enabled (rabbitmq-plugins enable rabbitmq_management)? "
                              "无法连接 RabbitMQ 管理接口") from None
        if status == 404 and missing_ok:
            return None
        if status >= 400:
            try:
                detail = json.loads(text)
                error, reason = str(detail.get("error", "")), str(detail.get("reason", ""))
            except (ValueError, AttributeError):
                error, reason = "", text.strip()[:500]
            raise ManagementError(method, path, status, error, reason)
        return json.loads(text) if text.strip() else None

    async def whoami(self) -> dict:
        return await self._request("GET", "whoami")

    async def overview(self) -> dict:
        return await self._request("GET", "overview")

    async def import_definitions(self, document: Mapping[str, Any]) -> None:
        """Load a definitions document (what `definitions()` returns) into the running broker."""
        await self._request("POST", "definitions", body=document)

    async def get_vhost(self, vhost: str) -> dict | None:
        return await self._request("GET", "vhosts", vhost, missing_ok=True)

    async def put_vhost(self, vhost: str, description: str = "") -> None:
        await self._request("PUT", "vhosts", vhost, body={"description": description})

    async def delete_vhost(self, vhost: str) -> None:
        await self._request("DELETE", "vhosts", vhost, missing_ok=True)

    async def users(self) -> list[dict]:
        return await self._request("GET", "users")

    async def get_user(self, user: str) -> dict | None:
        return await self._request("GET", "users", user, missing_ok=True)

    async def put_user(self, user: str, *, password: str | None = None, password_hash: str | None = None,
                       hashing_algorithm: str = HASHING_ALGORITHM, tags: Iterable[str] = ()) -> None:
        """Create or replace a user: give `password`, or `password_hash` to keep the one it has."""
        body: dict[str, Any] = {"tags": ",".join(tags)}
        if password is not None:
            body["password"] = password
        else:
            body.update(password_hash=password_hash or "", hashing_algorithm=hashing_algorithm)
        await self._request("PUT", "users", user, body=body)

    async def delete_user(self, user: str) -> None:
        await self._request("DELETE", "users", user, missing_ok=True)

    async def get_permissions(self, vhost: str, user: str) -> dict | None:
        return await self._request("GET", "permissions", vhost, user, missing_ok=True)

    async def put_permissions(self, vhost: str, user: str, *, configure: str, write: str, read: str) -> None:
        await self._request("PUT", "permissions", vhost, user,
                            body={"configure": configure, "write": write, "read": read})

    async def delete_permissions(self, vhost: str, user: str) -> None:
        await self._request("DELETE", "permissions", vhost, user, missing_ok=True)

    async def get_topic_permissions(self, vhost: str, user: str) -> list[dict]:
        return await self._request("GET", "topic-permissions", vhost, user, missing_ok=True) or []

    async def put_topic_permissions(self, vhost: str, user: str, *, exchange: str, write: str, read: str) -> None:
        await self._request("PUT", "topic-permissions", vhost, user,
                            body={"exchange": exchange, "write": write, "read": read})

    async def get_exchange(self, vhost: str, name: str) -> dict | None:
        return await self._request("GET", "exchanges", vhost, name, missing_ok=True)

    async def put_exchange(self, vhost: str, name: str, settings: Mapping[str, Any]) -> None:
        await self._request("PUT", "exchanges", vhost, name, body=dict(settings))

    async def get_queue(self, vhost: str, name: str) -> dict | None:
        return await self._request("GET", "queues", vhost, name, missing_ok=True)

    async def put_queue(self, vhost: str, name: str, settings: Mapping[str, Any]) -> None:
        await self._request("PUT", "queues", vhost, name, body=dict(settings))

    async def queue_bindings(self, vhost: str, queue: str) -> list[dict]:
        """Every binding whose destination is `queue`, including the default exchange's."""
        return await self._request("GET", "queues", vhost, queue, "bindings")

    async def bind(self, vhost: str, exchange: str, queue: str, routing_key: str,
                   arguments: Mapping[str, Any] | None = None) -> None:
        await self._request("POST", "bindings", vhost, "e", exchange, "q", queue,
                            body={"routing_key": routing_key, "arguments": dict(arguments or {})})

    async def unbind(self, vhost: str, exchange: str, queue: str, properties_key: str) -> None:
        await self._request("DELETE", "bindings", vhost, "e", exchange, "q", queue, properties_key, missing_ok=True)


# ---------------------------------------------------------------------------------------------
# passwords and the files that hold them


def password_hash(password: str, *, salt: bytes | None = None) -> str:
    """The hash RabbitMQ stores (rabbit_password_hashing_sha256): base64(salt ‖ SHA-256(salt ‖ password))."""
    salt = secrets.token_bytes(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).decode("ascii")


def verify_password(stored_hash: str, password: str, hashing_algorithm: str = HASHING_ALGORITHM) -> bool:
    """Whether `password` is the one behind a RabbitMQ password hash (4-byte salt first)."""
    digest = _HASHES.get(hashing_algorithm)
    try:
        raw = base64.b64decode(stored_hash or "", validate=True)
    except ValueError:
        return False
    if digest is None or len(raw) <= 4:
        return False
    return hmac.compare_digest(raw[4:], digest(raw[:4] + password.encode("utf-8")).digest())


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only: created 0600 beside the target, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates with mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_private_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    _write_private(path, text)
    return True


class CredentialStore:
    """Broker passwords the hub generated, one file per user (mode 0600) under `<secrets_dir>/broker/`."""

    def __init__(self, secrets_dir: str | Path, *, files: Mapping[str, str | Path] | None = None):
        self.dir = Path(secrets_dir) / "broker"
        self._files = {user: Path(p) for user, p in (files or {}).items()}  # users whose file is configured

    @classmethod
    def for_hub(cls, cfg: HubConfig) -> CredentialStore:
        """The hub's store: its own user's password goes where [broker] password_file says the hub reads it."""
        return cls(cfg.secrets_dir, files={cfg.topology.hub_user: cfg.broker.password_file})

    def path(self, user: str) -> Path:
        if user in self._files:
            return self._files[user]
        if not user or "/" in user or "\\" in user or user.startswith("."):
            raise BrokerError(f"broker user name {user!r} cannot name a password file 用户名不能用作文件名")
        return self.dir / f"{user}.password"

    def _read(self, user: str) -> str | None:
        try:
            return self.path(user).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def has(self, user: str) -> bool:
        return self._read(user) is not None

    def password(self, user: str) -> str:
        """The user's password, generated and written on first use."""
        stored = self._read(user)
        if stored is not None:
            return stored
        password = secrets.token_urlsafe(24)
        _write_private(self.path(user), password + "\n")
        return password


def handover_url(topology: Topology, dept: str, credentials: CredentialStore, broker_url: str) -> str:
    """The AMQP URL a department's node connects with: its own user, password and the hub's vhost."""
    user = topology.dept_user(dept)
    return amqp_url(broker_url, user, credentials.password(user), topology.vhost)


@dataclass(frozen=True)
class HandoverPlace:
    """Where handover files go and what they tell a node besides its credentials."""

    folder: Path
    broker_url: str = "amqp://127.0.0.1:5672/"  # what departments connect to
    hub_api: str = ""  # the hub's API as departments reach it
    hub_key: PublicKey | None = None

    def path(self, dept: str, node: str) -> Path:
        return self.folder / dept / f"{node}.toml"

    def handover(self, topology: Topology, dept: str, node: str, credentials: CredentialStore) -> Handover:
        return Handover(broker_url=handover_url(topology, dept, credentials, self.broker_url),
                        broker_user=topology.dept_user(dept), vhost=topology.vhost, dept=dept, node_id=node,
                        receipts_queue=topology.receipts_queue(dept, node), hub_api=self.hub_api,
                        hub_key=self.hub_key)


# ---------------------------------------------------------------------------------------------
# what the hub wants in its vhost


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str

    def settings(self) -> dict[str, Any]:
        return {"type": self.type, "durable": True, "auto_delete": False, "internal": False, "arguments": {}}


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        return {"durable": True, "auto_delete": False, "arguments": dict(self.arguments)}


@dataclass(frozen=True)
class BindingSpec:
    exchange: str
    queue: str
    routing_key: str


@dataclass(frozen=True)
class Permission:
    configure: str
    write: str
    read: str


@dataclass(frozen=True)
class TopicPermission:
    exchange: str
    write: str
    read: str


@dataclass(frozen=True)
class UserSpec:
    name: str
    permission: Permission
    topic: TopicPermission | None = None


@dataclass(frozen=True)
class BrokerLayout:
    """Everything the hub provisions in its one vhost, derived from the topology and the departments."""

    vhost: str
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    bindings: tuple[BindingSpec, ...]
    users: tuple[UserSpec, ...]


def _only(*names: str) -> str:
    """A permission regex matching exactly these names."""
    escaped = [re.escape(n) for n in names]
    return f"^{escaped[0]}$" if len(escaped) == 1 else f"^({'|'.join(escaped)})$"


def check_depts(depts: Iterable[str]) -> list[str]:
    """Department codes in order, each once; refuse codes that would break routing keys or file names."""
    result: list[str] = []
    for dept in depts:
        if not dept or _BAD_DEPT.search(dept):
            raise BrokerError(f"department code {dept!r} cannot be used on the broker: it must be non-empty and "
                              "contain no '.', '*', '#', '/', '\\' or whitespace 部门代码不能用作路由键")
        if dept not in result:
            result.append(dept)
    return result


def check_nodes(depts: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Departments and their nodes, checked: department codes as `check_depts`, node ids as the protocol's."""
    out = {}
    for dept in check_depts(depts):
        nodes = list(dict.fromkeys(depts[dept]))
        bad = [n for n in nodes if not NODE_ID.match(n)]
        if bad:
            raise BrokerError(f"node id(s) {bad} of department {dept!r} cannot be used on the broker 节点标识无效")
        out[dept] = nodes
    return out


def layout(topology: Topology, depts: Mapping[str, Iterable[str]], *, delivery_limit: int = 20) -> BrokerLayout:
    """What the broker holds for these departments, each with its nodes (dept -> node ids)."""
    t = topology
    nodes = check_nodes(depts)
    if isinstance(delivery_limit, bool) or not isinstance(delivery_limit, int) or delivery_limit < 1:
        raise BrokerError(f"delivery_limit must be a whole number of at least 1, not {delivery_limit!r} 投递次数上限无效")
    quorum = {"x-queue-type": "quorum"}
    ingest_arguments = {
        **quorum,
        "x-dead-letter-exchange": t.dead_letter_exchange,
        "x-dead-letter-strategy": "at-least-once",  # needs reject-publish: no dead letter is dropped
        "x-overflow": "reject-publish",
        "x-delivery-limit": delivery_limit,
    }
    users = [UserSpec(t.hub_user, Permission(_NOTHING, _only(t.receipts_exchange),
                                             _only(t.ingest_queue, t.quarantine_queue)))]
    # a department's user reads the receipts queues of its own nodes, whichever are enrolled now or later
    users += [UserSpec(t.dept_user(d), Permission(_NOTHING, _only(t.records_exchange),
                                                  f"^{re.escape(t.receipts_queue(d, ''))}"),
                       TopicPermission(t.records_exchange, f"^{re.escape(d)}\\.", _NOTHING)) for d in nodes]
    receipts = [(d, n, t.receipts_queue(d, n)) for d, ns in nodes.items() for n in ns]
    return BrokerLayout(
        vhost=t.vhost,
        exchanges=(ExchangeSpec(t.records_exchange, "topic"), ExchangeSpec(t.dead_letter_exchange, "fanout"),
                   ExchangeSpec(t.receipts_exchange, "direct")),
        queues=(QueueSpec(t.ingest_queue, ingest_arguments), QueueSpec(t.quarantine_queue, quorum),
                *(QueueSpec(q, quorum) for _, _, q in receipts)),
        # a node's queue gets what is routed to that node, and what is for every node of its department
        # (a refusal of a batch whose header named no node the hub could read)
        bindings=(BindingSpec(t.records_exchange, t.ingest_queue, "#"),
                  BindingSpec(t.dead_letter_exchange, t.quarantine_queue, ""),
                  *(BindingSpec(t.receipts_exchange, q, key) for d, n, q in receipts
                    for key in (t.receipts_key(d, n), t.receipts_key(d)))),
        users=tuple(users),
    )


# ---------------------------------------------------------------------------------------------
# applying it


async def provision(api: ManagementAPI, topology: Topology, depts: Mapping[str, Iterable[str]],
                    credentials: CredentialStore, *, delivery_limit: int = 20,
                    handover: HandoverPlace | None = None) -> list[str]:
    """Make the broker match the layout for these departments and their nodes, changing only what differs;
    return what was changed.

    Each node gets a handover file (`HandoverPlace.path`, mode 0600) with its department's credentials.
    Raises TopologyMismatch, before changing any exchange, queue or user, when one exists with settings
    the broker cannot change in place.
    """
    nodes = check_nodes(depts)
    want = layout(topology, nodes, delivery_limit=delivery_limit)
    vhost = want.vhost
    changes: list[str] = []

    me = await api.whoami()
    if "administrator" not in _tags(me.get("tags")):
        raise BrokerError(f"the management user {me.get('name')!r} is not an administrator (tags: "
                          f"{_tags(me.get('tags')) or 'none'}); provisioning creates users and vhosts "
                          "管理账号需要 administrator 标签")
    if await api.get_vhost(vhost) is None:
        await api.put_vhost(vhost, description="Credit Exchange")
        changes.append(f"created vhost {vhost!r}")

    exchanges = {e.name: await api.get_exchange(vhost, e.name) for e in want.exchanges}
    queues = {q.name: await api.get_queue(vhost, q.name) for q in want.queues}
    problems = [p for e in want.exchanges if (p := _exchange_differs(e, exchanges[e.name]))]
    problems += [p for q in want.queues if (p := _queue_differs(q, queues[q.name]))]
    if problems:
        raise TopologyMismatch(vhost, problems)

    if await api.get_permissions(vhost, me["name"]) is None:  # a vhost someone else created, e.g. from definitions
        await api.put_permissions(vhost, me["name"], configure=".*", write=".*", read=".*")
        changes.append(f"gave the management user {me['name']!r} permissions on vhost {vhost!r} "
                       "to declare the topology")
    for e in want.exchanges:
        if exchanges[e.name] is None:
            await api.put_exchange(vhost, e.name, e.settings())
            changes.append(f"created {e.type} exchange {e.name!r}")
    for q in want.queues:
        if queues[q.name] is None:
            await api.put_queue(vhost, q.name, q.settings())
            changes.append(f"created quorum queue {q.name!r}")
    for q in want.queues:
        changes += await _reconcile_bindings(api, vhost, q.name, [b for b in want.bindings if b.queue == q.name])
    for dept in nodes:  # the one queue per department of earlier versions gets nothing any more
        changes += await _retire_department_queue(api, vhost, topology, dept)
    for user in want.users:
        changes += await _reconcile_user(api, vhost, user, credentials)

    if handover is not None:
        for dept, dept_nodes in nodes.items():
            for node in dept_nodes:
                path = handover.path(dept, node)
                text = handover.handover(topology, dept, node, credentials).to_toml()
                if _write_private_if_changed(path, text):
                    changes.append(f"wrote handover file {path} for node {node!r} of department {dept!r}")
    return changes


async def provision_hub(cfg: HubConfig, depts: Mapping[str, Iterable[str]]) -> list[str]:
    """`provision` with everything taken from hub.toml: management API, secrets, handover folder, URLs."""
    broker = cfg.broker
    async with ManagementAPI(broker.management_url, broker.management_user, cfg.management_password()) as api:
        return await provision(api, cfg.topology, depts, CredentialStore.for_hub(cfg),
                               delivery_limit=broker.delivery_limit, handover=handover_place(cfg))


def handover_place(cfg: HubConfig) -> HandoverPlace:
    try:
        hub_key = SigningKey.load(cfg.hub.signing_key).public
    except (OSError, ProtocolError):
        hub_key = None  # the node then needs keys/hub.pub from the operator, as before
    return HandoverPlace(cfg.handover_dir, cfg.broker.public_url or cfg.broker.url, cfg.public_api_url(), hub_key)


async def _retire_department_queue(api: ManagementAPI, vhost: str, topology: Topology, dept: str) -> list[str]:
    """Unbind the single `cx.receipts.<dept>` queue of earlier versions; say whether it still holds messages."""
    legacy = f"cx.receipts.{dept}"
    if await api.get_queue(vhost, legacy) is None:
        return []
    changes = []
    for b in await api.queue_bindings(vhost, legacy):
        if b["source"]:
            await api.unbind(vhost, b["source"], legacy, b["properties_key"])
            changes.append(f"unbound {legacy!r} (routing key {b['routing_key']!r}): receipts now go to a queue "
                           f"per node; delete {legacy!r} once its node has read what it holds")
    return changes


def _tags(tags: Any) -> list[str]:
    """User tags as a list; the API gives a list, older brokers a comma-separated string."""
    if isinstance(tags, str):
        return [t for t in tags.split(",") if t]
    return list(tags or [])


def _differences(kind: str, want: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(want) | set(have)):
        if key not in have:
            out.append(f"{kind} {key} is not set, wanted {want[key]!r}")
        elif key not in want:
            out.append(f"{kind} {key} is {have[key]!r}, wanted not set")
        elif want[key] != have[key]:
            out.append(f"{kind} {key} is {have[key]!r}, wanted {want[key]!r}")
    return out


def _settings_differ(want: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    plain = {k: v for k, v in want.items() if k != "arguments"}
    diffs = _differences("property", plain, {k: have.get(k) for k in plain})
    return diffs + _differences("argument", want["arguments"], have.get("arguments") or {})


def _exchange_differs(spec: ExchangeSpec, have: dict | None) -> str | None:
    diffs = _settings_differ(spec.settings(), have) if have is not None else []
    return f"exchange {spec.name!r}: {'; '.join(diffs)}" if diffs else None


def _queue_differs(spec: QueueSpec, have: dict | None) -> str | None:
    diffs = _settings_differ(spec.settings(), have) if have is not None else []
    if not diffs:
        return None
    messages = have.get("messages")
    # management statistics lag a few seconds behind the queue itself
    held = "message count not yet known" if messages is None else f"the broker last reported {messages} message(s)"
    return f"queue {spec.name!r} ({held}): {'; '.join(diffs)}"


async def _reconcile_bindings(api: ManagementAPI, vhost: str, queue: str, wanted: list[BindingSpec]) -> list[str]:
    """Bind what is missing and unbind what else routes into the queue (it could leak another's receipts)."""
    changes = []
    missing = {(b.exchange, b.routing_key) for b in wanted}
    for b in await api.queue_bindings(vhost, queue):
        if b["source"] == "":
            continue  # every queue's implicit default-exchange binding
        key = (b["source"], b["routing_key"])
        if key in missing and not b.get("arguments"):
            missing.discard(key)
        else:
            await api.unbind(vhost, b["source"], queue, b["properties_key"])
            changes.append(f"removed unexpected binding {b['source']!r} → {queue!r} (routing key {b['routing_key']!r})")
    for exchange, routing_key in sorted(missing):
        await api.bind(vhost, exchange, queue, routing_key)
        changes.append(f"bound {exchange!r} → {queue!r} with routing key {routing_key!r}")
    return changes


async def _reconcile_user(api: ManagementAPI, vhost: str, spec: UserSpec, credentials: CredentialStore) -> list[str]:
    changes = []
    name, path = spec.name, credentials.path(spec.name)
    had_file = credentials.has(name)
    password = credentials.password(name)  # generated and written now if there was no file
    have = await api.get_user(name)
    if have is None:
        await api.put_user(name, password=password)
        changes.append(f"created user {name!r} (password in {path})")
    else:
        tags = _tags(have.get("tags"))
        if not had_file:
            reason = (f"user {name!r} existed but its password file was missing: set a new password, "
                      f"written to {path}")
        elif not verify_password(have.get("password_hash", ""), password, have.get("hashing_algorithm", "")):
            reason = f"user {name!r} had a password other than the one in {path}: set it from that file"
        else:
            reason = None
        if reason:
            await api.put_user(name, password=password)
            changes.append(reason)
        elif tags:
            await api.put_user(name, password_hash=have["password_hash"], hashing_algorithm=have["hashing_algorithm"])
        if tags:
            changes.append(f"removed tags {', '.join(tags)} from user {name!r}")

    perm = spec.permission
    have_perm = await api.get_permissions(vhost, name)
    if have_perm is None or (have_perm["configure"], have_perm["write"], have_perm["read"]) != (
            perm.configure, perm.write, perm.read):
        await api.put_permissions(vhost, name, configure=perm.configure, write=perm.write, read=perm.read)
        changes.append(f"set permissions of {name!r} in {vhost!r}: configure {perm.configure!r}, "
                       f"write {perm.write!r}, read {perm.read!r}")

    topic = spec.topic
    if topic is not None:
        have_topic = [(p["write"], p["read"]) for p in await api.get_topic_permissions(vhost, name)
                      if p["exchange"] == topic.exchange]
        if have_topic != [(topic.write, topic.read)]:
            await api.put_topic_permissions(vhost, name, exchange=topic.exchange, write=topic.write, read=topic.read)
            changes.append(f"set topic permission of {name!r} on {topic.exchange!r}: write {topic.write!r}, "
                           f"read {topic.read!r}")
    return changes


# ---------------------------------------------------------------------------------------------
# the same as a definitions document


def definitions(topology: Topology, depts: Mapping[str, Iterable[str]], credentials: CredentialStore, *,
                delivery_limit: int = 20) -> dict[str, Any]:
    """The layout as a RabbitMQ definitions document, for brokers that load definitions at start.

    Passwords come from (and are generated into) the credential store; only their salted hashes
    are in the document. The management user is not in it: the operator manages that one.
    """
    want = layout(topology, depts, delivery_limit=delivery_limit)
    vhost = want.vhost
    return {
        "users": [{"name": u.name, "password_hash": password_hash(credentials.password(u.name)),
                   "hashing_algorithm": HASHING_ALGORITHM, "tags": [], "limits": {}} for u in want.users],
        "vhosts": [{"name": vhost}],
        "permissions": [{"user": u.name, "vhost": vhost, "configure": u.permission.configure,
                         "write": u.permission.write, "read": u.permission.read} for u in want.users],
        "topic_permissions": [{"user": u.name, "vhost": vhost, "exchange": u.topic.exchange,
                               "write": u.topic.write, "read": u.topic.read} for u in want.users if u.topic],
        "parameters": [],
        "policies": [],
        "queues": [{"name": q.name, "vhost": vhost, **q.settings()} for q in want.queues],
        "exchanges": [{"name": e.name, "vhost": vhost, **e.settings()} for e in want.exchanges],
        "bindings": [{"source": b.exchange, "vhost": vhost, "destination": b.queue, "destination_type": "queue",
                      "routing_key": b.routing_key, "arguments": {}} for b in want.bindings],
    }


def write_definitions(path: str | Path, topology: Topology, depts: Mapping[str, Iterable[str]], credentials: CredentialStore, *,
                      delivery_limit: int = 20) -> Path:
    """Write `definitions()` as JSON, mode 0600 (it holds password hashes)."""
    path = Path(path)
    document = definitions(topology, depts, credentials, delivery_limit=delivery_limit)
    _write_private(path, json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    return path


async def deprovision(api: ManagementAPI, topology: Topology) -> list[str]:
    """Remove a whole topology: its vhost (queues, messages and all) and every user with its prefix.

    For the demo's reset and the tests' clean-up; never run against a federation in use.
    """
    removed = []
    if await api.get_vhost(topology.vhost) is not None:
        await api.delete_vhost(topology.vhost)
        removed.append(f"deleted vhost {topology.vhost!r}")
    for user in await api.users():
        if user["name"].startswith(topology.user_prefix):
            await api.delete_user(user["name"])
            removed.append(f"deleted user {user['name']!r}")
    return removed
