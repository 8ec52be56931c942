"""Broker provisioning against the real RabbitMQ: topology, idempotency, what each user may do."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed

from cx import transport
from cx.handover import Handover
from cx.hub.broker import (
    HASHING_ALGORITHM,
    BrokerError,
    CredentialStore,
    HandoverPlace,
    ManagementAPI,
    TopologyMismatch,
    definitions,
    provision,
    provision_hub,
    verify_password,
    write_definitions,
)
from cx.hub.config import HubConfig
from cx.transport import Topology, amqp_url

MANAGEMENT_URL = os.environ.get("CX_TEST_MANAGEMENT_URL", "http://127.0.0.1:15672")
AMQP_URL = os.environ.get("CX_TEST_AMQP_URL", "amqp://127.0.0.1:5672/")
ADMIN = ("guest", "guest")  # the broker's default administrator, allowed from localhost only
PENALTY = "administrative_penalty"


@dataclass
class Env:
    api: ManagementAPI
    topology: Topology
    credentials: CredentialStore
    tmp: Path

    async def provision(self, depts: list[str], **kwargs) -> list[str]:
        """Each department with one node, named after it in lower case (A → a1)."""
        return await provision(self.api, self.topology, {d: [node(d)] for d in depts}, self.credentials,
                               handover=HandoverPlace(self.tmp / "handover", AMQP_URL), **kwargs)

    def queue(self, dept: str) -> str:
        return self.topology.receipts_queue(dept, node(dept))

    def url(self, user: str) -> str:
        return amqp_url(AMQP_URL, user, self.credentials.password(user), self.topology.vhost)

    def admin_url(self) -> str:
        return amqp_url(AMQP_URL, *ADMIN, self.topology.vhost)


def node(dept: str) -> str:
    return f"{dept.lower()}1"


@pytest.fixture
async def env(tmp_path):
    """Its own vhost (with a '/' in it, as vhost names may have) and user prefix; both removed afterwards."""
    suffix = secrets.token_hex(4)
    topology = Topology(vhost=f"cxtest-{suffix}/vh", user_prefix=f"t{suffix}-")
    async with ManagementAPI(MANAGEMENT_URL, *ADMIN) as api:
        try:
            await api.overview()
        except BrokerError as exc:
            pytest.fail(f"{exc}\nstart the broker with ops/dev/services.sh")
        try:
            yield Env(api, topology, CredentialStore(tmp_path / "secrets"), tmp_path)
        finally:
            await api.delete_vhost(topology.vhost)
            for user in await api.users():
                if user["name"].startswith(topology.user_prefix):
                    await api.delete_user(user["name"])
            assert not [u for u in await api.users() if u["name"].startswith(topology.user_prefix)]
            assert await api.get_vhost(topology.vhost) is None


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    pass


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_provision_creates_topology_then_changes_nothing(env):
    t, api, vhost = env.topology, env.api, env.topology.vhost
    changes = await env.provision(["A", "B"], delivery_limit=9)
    assert f"created vhost {vhost!r}" in changes

    records = await api.get_exchange(vhost, t.records_exchange)
    assert (records["type"], records["durable"]) == ("topic", True)
    assert (await api.get_exchange(vhost, t.dead_letter_exchange))["type"] == "fanout"
    assert (await api.get_exchange(vhost, t.receipts_exchange))["type"] == "direct"
    ingest = await api.get_queue(vhost, t.ingest_queue)
    assert ingest["type"] == "quorum" and ingest["durable"]
    assert ingest["arguments"] == {
        "x-queue-type": "quorum", "x-dead-letter-exchange": t.dead_letter_exchange,
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish", "x-delivery-limit": 9}
    for queue in (t.quarantine_queue, env.queue("A"), env.queue("B")):
        assert (await api.get_queue(vhost, queue))["type"] == "quorum"

    def routes(bindings):
        return {(b["source"], b["routing_key"]) for b in bindings if b["source"]}
    assert routes(await api.queue_bindings(vhost, t.ingest_queue)) == {(t.records_exchange, "#")}
    assert routes(await api.queue_bindings(vhost, t.quarantine_queue)) == {(t.dead_letter_exchange, "")}
    # a node's queue: what is routed to that node, and what is for every node of its department
    assert routes(await api.queue_bindings(vhost, env.queue("B"))) == {(t.receipts_exchange, "B.b1"),
                                                                       (t.receipts_exchange, "B")}

    hub = await api.get_permissions(vhost, t.hub_user)
    assert (hub["configure"], hub["write"], hub["read"]) == ("^$", r"^cx\.receipts$", r"^(cx\.ingest|cx\.quarantine)$")
    dept_a = await api.get_permissions(vhost, t.dept_user("A"))
    assert (dept_a["configure"], dept_a["write"], dept_a["read"]) == ("^$", r"^cx\.records$", r"^cx\.receipts\.A\.")
    [topic] = await api.get_topic_permissions(vhost, t.dept_user("A"))
    assert (topic["exchange"], topic["write"], topic["read"]) == (t.records_exchange, r"^A\.", "^$")
    for user in (t.hub_user, t.dept_user("A"), t.dept_user("B")):
        assert (await api.get_user(user))["tags"] == []
        assert mode(env.credentials.path(user)) == 0o600

    handover = env.tmp / "handover" / "A" / "a1.toml"
    assert mode(handover) == 0o600
    handed = Handover.load(handover)
    assert handed.broker_url == env.url(t.dept_user("A"))
    assert (handed.broker_user, handed.vhost, handed.dept, handed.node_id, handed.receipts_queue) == (
        t.dept_user("A"), vhost, "A", "a1", env.queue("A"))

    assert await env.provision(["A", "B"], delivery_limit=9) == []

    added = await env.provision(["A", "B", "C"], delivery_limit=9)
    assert added and all(t.dept_user("C") in c or env.queue("C") in c or "'C'" in c for c in added), added
    assert routes(await api.queue_bindings(vhost, env.queue("C"))) == {(t.receipts_exchange, "C.c1"),
                                                                       (t.receipts_exchange, "C")}
    assert await env.provision(["A", "B", "C"], delivery_limit=9) == []


async def test_provision_repairs_only_what_differs(env):
    t, api, vhost = env.topology, env.api, env.topology.vhost
    await env.provision(["A", "B"])
    user_a = t.dept_user("A")
    await api.put_permissions(vhost, user_a, configure=".*", write=".*", read=".*")
    await api.bind(vhost, t.receipts_exchange, env.queue("A"), "B")  # would leak B's receipts to A
    have = await api.get_user(t.dept_user("B"))
    await api.put_user(t.dept_user("B"), password_hash=have["password_hash"], tags=["management"])
    old_hub_password = env.credentials.password(t.hub_user)
    env.credentials.path(t.hub_user).unlink()

    changes = await env.provision(["A", "B"])

    assert len(changes) == 4, changes
    assert any(c.startswith(f"set permissions of {user_a!r}") for c in changes)
    assert any(c.startswith("removed unexpected binding") and "'B'" in c for c in changes)
    assert any(c.startswith("removed tags management") for c in changes)
    assert any("password file was missing" in c and t.hub_user in c for c in changes)
    assert env.credentials.password(t.hub_user) != old_hub_password
    assert mode(env.credentials.path(t.hub_user)) == 0o600
    assert await env.provision(["A", "B"]) == []  # the new hub password and B's kept one both verify
    connection = await aio_pika.connect(env.url(t.dept_user("B")))
    await connection.close()


async def test_department_user_may_only_publish_its_own_records(env):
    t = env.topology
    await env.provision(["A", "B"])
    user_a, user_b = t.dept_user("A"), t.dept_user("B")
    connection = await aio_pika.connect(env.url(user_a))
    admin = await aio_pika.connect(env.admin_url())
    try:
        async def publish(routing_key: str, *, exchange: str = t.records_exchange, user_id: str | None = None):
            channel = await transport.confirmed_channel(connection)
            target = channel.default_exchange if exchange == "" else await channel.get_exchange(exchange, ensure=False)
            await transport.publish(target, routing_key, b'{"x":1}\n', message_type=transport.BATCH,
                                    message_id=uuid.uuid4().hex, user_id=user_id, timeout=5)

        async def refused(action, error=ChannelAccessRefused) -> str:
            channel = await connection.channel()
            with pytest.raises(error) as info:
                await action(channel)
            return str(info.value)

        admin_channel = await admin.channel()
        ingest = await admin_channel.get_queue(t.ingest_queue, ensure=False)

        await publish(transport.Topology.routing_key("A", PENALTY), user_id=user_a)
        message = await ingest.get(timeout=5, no_ack=True)
        assert (message.routing_key, message.user_id) == (f"A.{PENALTY}", user_a)

        with pytest.raises(ChannelAccessRefused, match="B.administrative_penalty"):
            await publish(f"B.{PENALTY}")
        with pytest.raises(ChannelAccessRefused):
            await publish(t.ingest_queue, exchange="")  # the default exchange
        with pytest.raises(ChannelAccessRefused):
            await publish("A", exchange=t.receipts_exchange)  # forging a receipt
        with pytest.raises(ChannelPreconditionFailed, match="user_id"):
            await publish(f"A.{PENALTY}", user_id=user_b)  # the broker validates user-id
        assert await ingest.get(fail=False) is None  # nothing refused got through

        # passive declares need no permission: a node may check that its exchange and queue exist
        channel = await connection.channel()
        await channel.declare_exchange(t.records_exchange, passive=True)
        own = await channel.declare_queue(env.queue("A"), passive=True)
        await own.consume(ignore)

        async def consume_b(ch):
            await (await ch.get_queue(env.queue("B"), ensure=False)).consume(ignore)

        async def get_b(ch):
            await (await ch.get_queue(env.queue("B"), ensure=False)).get()
        assert env.queue("B") in await refused(consume_b)
        assert env.queue("B") in await refused(get_b)
        await refused(lambda ch: ch.declare_queue("mine", durable=True))
        await refused(lambda ch: ch.declare_queue(exclusive=True))
        await refused(lambda ch: ch.declare_queue(env.queue("A"), durable=True,
                                                  arguments={"x-queue-type": "quorum"}))  # even an identical one
        await refused(lambda ch: ch.declare_exchange("mine", aio_pika.ExchangeType.TOPIC))
    finally:
        await connection.close()
        await admin.close()


async def test_hub_configuration_drives_provisioning(env, tmp_path):
    t = env.topology
    (tmp_path / "hub.toml").write_text(
        f'[broker]\nurl = "{AMQP_URL}"\nvhost = "{t.vhost}"\nuser_prefix = "{t.user_prefix}"\n'
        f'management_url = "{MANAGEMENT_URL}"\nmanagement_user = "{ADMIN[0]}"\nmanagement_password = "{ADMIN[1]}"\n')
    cfg = HubConfig.load(tmp_path / "hub.toml")
    assert cfg.topology == t

    changes = await provision_hub(cfg, {"A": ["a1"]})
    assert changes and await provision_hub(cfg, {"A": ["a1"]}) == []
    assert mode(cfg.broker.password_file) == 0o600  # where the hub reads its own password
    url_a = Handover.load(cfg.handover_dir / "A" / "a1.toml").broker_url

    hub = await transport.connect(cfg.hub_amqp_url(), name="test-hub")
    dept = await aio_pika.connect(url_a)
    try:
        dept_channel = await transport.confirmed_channel(dept)
        records = await dept_channel.get_exchange(t.records_exchange, ensure=False)
        await transport.publish(records, f"A.{PENALTY}", b"batch\n", message_type=transport.BATCH, message_id="b1",
                                user_id=t.dept_user("A"))

        hub_channel = await transport.confirmed_channel(hub)
        message = await (await hub_channel.get_queue(t.ingest_queue, ensure=False)).get(timeout=5)
        assert t.dept_of_user(message.user_id) == "A"
        receipts = await hub_channel.get_exchange(t.receipts_exchange, ensure=False)
        await transport.publish(receipts, t.receipts_key("A", "a1"), b"receipt\n", message_type=transport.RECEIPT,
                                message_id="r1")
        await message.ack()
        with pytest.raises(ChannelAccessRefused):
            await transport.publish(await hub_channel.get_exchange(t.records_exchange, ensure=False), f"A.{PENALTY}",
                                    b"forged\n", message_type=transport.BATCH, message_id="f1")

        receipt = await (await dept_channel.get_queue(env.queue("A"), ensure=False)).get(timeout=5)
        assert receipt.body == b"receipt\n"
    finally:
        await hub.close()
        await dept.close()


async def test_definitions_document_matches_provisioning(env):
    t, vhost = env.topology, env.topology.vhost
    document = definitions(t, {"A": ["a1"], "B": ["b1"]}, env.credentials, delivery_limit=20)

    assert document["vhosts"] == [{"name": vhost}]
    assert {u["name"] for u in document["users"]} == {t.hub_user, t.dept_user("A"), t.dept_user("B")}
    for user in document["users"]:
        assert (user["hashing_algorithm"], user["tags"]) == (HASHING_ALGORITHM, [])
        raw = base64.b64decode(user["password_hash"])
        salt, digest = raw[:4], raw[4:]
        password = env.credentials.password(user["name"])
        assert digest == hashlib.sha256(salt + password.encode()).digest()
        assert verify_password(user["password_hash"], password)
        assert not verify_password(user["password_hash"], password + "x")
    assert {(p["user"], p["configure"], p["read"]) for p in document["permissions"]} == {
        (t.hub_user, "^$", r"^(cx\.ingest|cx\.quarantine)$"),
        (t.dept_user("A"), "^$", r"^cx\.receipts\.A\."), (t.dept_user("B"), "^$", r"^cx\.receipts\.B\.")}
    assert {(p["user"], p["exchange"], p["write"]) for p in document["topic_permissions"]} == {
        (t.dept_user("A"), t.records_exchange, r"^A\."), (t.dept_user("B"), t.records_exchange, r"^B\.")}
    assert {(e["name"], e["type"]) for e in document["exchanges"]} == {
        (t.records_exchange, "topic"), (t.dead_letter_exchange, "fanout"), (t.receipts_exchange, "direct")}
    queues = {q["name"]: q for q in document["queues"]}
    assert set(queues) == {t.ingest_queue, t.quarantine_queue, env.queue("A"), env.queue("B")}
    assert queues[t.ingest_queue]["arguments"]["x-delivery-limit"] == 20
    assert all(q["vhost"] == vhost and q["durable"] for q in queues.values())
    assert {(b["source"], b["destination"], b["routing_key"]) for b in document["bindings"]} == {
        (t.records_exchange, t.ingest_queue, "#"), (t.dead_letter_exchange, t.quarantine_queue, ""),
        (t.receipts_exchange, env.queue("A"), "A.a1"), (t.receipts_exchange, env.queue("A"), "A"),
        (t.receipts_exchange, env.queue("B"), "B.b1"), (t.receipts_exchange, env.queue("B"), "B")}

    path = write_definitions(env.tmp / "definitions.json", t, {"A": ["a1"], "B": ["b1"]}, env.credentials)
    assert mode(path) == 0o600
    assert {u["name"] for u in json.loads(path.read_text())["users"]} == {u["name"] for u in document["users"]}

    # the broker loads it, and provisioning then finds only its own access to grant: the two agree
    await env.api.import_definitions(document)
    await env.api.delete_permissions(vhost, ADMIN[0])  # an HTTP import grants them; a load at broker start does not
    changes = await env.provision(["A", "B"])
    assert [c for c in changes if not c.startswith("wrote handover file")] == [
        f"gave the management user {ADMIN[0]!r} permissions on vhost {vhost!r} to declare the topology"]
    connection = await aio_pika.connect(env.url(t.dept_user("A")))  # the broker accepts the hash we computed
    await connection.close()


async def test_queue_with_other_arguments_is_reported_not_replaced(env):
    t, api, vhost = env.topology, env.api, env.topology.vhost
    await api.put_vhost(vhost)
    await api.put_queue(vhost, t.ingest_queue, {"durable": True, "arguments": {"x-queue-type": "quorum",
                                                                               "x-delivery-limit": 5}})
    with pytest.raises(TopologyMismatch) as info:
        await env.provision(["A"])
    text = str(info.value)
    assert t.ingest_queue in text and vhost in text
    assert "argument x-delivery-limit is 5, wanted 20" in text
    assert "argument x-overflow is not set, wanted 'reject-publish'" in text
    assert "delivery_limit" in text and "Never delete a queue that holds messages" in text
    assert (await api.get_queue(vhost, t.ingest_queue))["arguments"]["x-delivery-limit"] == 5
    assert await api.get_user(t.dept_user("A")) is None  # stopped before changing anything
    assert await api.get_exchange(vhost, t.records_exchange) is None


def test_credential_store_and_department_codes(tmp_path):
    store = CredentialStore(tmp_path / "secrets")
    assert not store.has("u1")
    password = store.password("u1")
    assert store.has("u1") and store.password("u1") == password
    assert store.path("u1") == tmp_path / "secrets" / "broker" / "u1.password"
    assert mode(store.path("u1")) == 0o600
    with pytest.raises(BrokerError, match="department code"):
        definitions(Topology(), {"A.B": ["n1"]}, store)
    with pytest.raises(BrokerError):
        store.path("../x")


async def test_each_node_gets_its_queue_and_handover_and_the_old_department_queue_is_retired(env):
    t, api, vhost = env.topology, env.api, env.topology.vhost
    await api.put_vhost(vhost)
    legacy = "cx.receipts.A"  # what earlier versions made: one receipts queue per department
    await api.put_queue(vhost, legacy, {"durable": True, "arguments": {"x-queue-type": "quorum"}})
    await api.put_exchange(vhost, t.receipts_exchange, {"type": "direct", "durable": True, "auto_delete": False,
                                                        "internal": False, "arguments": {}})
    await api.bind(vhost, t.receipts_exchange, legacy, "A")
    place = HandoverPlace(env.tmp / "handover", AMQP_URL, "https://hub.example")
    changes = await provision(api, t, {"A": ["a-fep-01", "a-fep-02"]}, env.credentials, handover=place)
    assert any(c.startswith(f"unbound {legacy!r}") and "delete" in c for c in changes), changes

    def routes(bindings):
        return {(b["source"], b["routing_key"]) for b in bindings if b["source"]}
    assert routes(await api.queue_bindings(vhost, legacy)) == set()  # it gets nothing any more
    for node in ("a-fep-01", "a-fep-02"):
        queue = t.receipts_queue("A", node)
        assert routes(await api.queue_bindings(vhost, queue)) == {(t.receipts_exchange, f"A.{node}"),
                                                                  (t.receipts_exchange, "A")}
        handed = Handover.load(place.path("A", node))
        assert (handed.node_id, handed.receipts_queue, handed.hub_api) == (node, queue, "https://hub.example")
        assert handed.broker_user == t.dept_user("A") and mode(place.path("A", node)) == 0o600
    # one node's receipt reaches it alone; what is for the department reaches both
    connection = await aio_pika.connect(env.admin_url())
    try:
        channel = await transport.confirmed_channel(connection)
        exchange = await channel.get_exchange(t.receipts_exchange, ensure=False)
        await transport.publish(exchange, t.receipts_key("A", "a-fep-02"), b"r2\n", message_type=transport.RECEIPT,
                                message_id="r2")
        await transport.publish(exchange, t.receipts_key("A"), b"all\n", message_type=transport.REFUSAL,
                                message_id="all")
        got = {}
        for node in ("a-fep-01", "a-fep-02"):
            queue = await channel.get_queue(t.receipts_queue("A", node), ensure=False)
            bodies = []
            while (message := await queue.get(fail=False, no_ack=True, timeout=5)) is not None:
                bodies.append(message.body)
            got[node] = bodies
        assert got == {"a-fep-01": [b"all\n"], "a-fep-02": [b"r2\n", b"all\n"]}
    finally:
        await connection.close()
    assert await provision(api, t, {"A": ["a-fep-01", "a-fep-02"]}, env.credentials, handover=place) == []
    with pytest.raises(BrokerError, match="node id"):
        await provision(api, t, {"A": ["bad node"]}, env.credentials)
