"""The node's configuration (node.toml): identity, broker, delivery tuning, sources, streams, mappings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import config
from ..config import ConfigError
from ..handover import Handover, from_url
from ..protocol.envelope import DEPT_ID, NODE_ID
from ..protocol.errors import ProtocolError
from ..protocol.keys import PublicKey
from ..transport import Topology


@dataclass(frozen=True)
class NodeSection:
    dept: str = ""
    node_id: str = ""
    signing_key: Path = Path("keys/node.key")
    # the hub operator's handover file (cx.handover): broker URL and user, vhost, receipts queue, hub API, hub key
    handover: Path = Path("secrets/handover.toml")
    # pinned: receipts must verify with this key. The handover file carries it; a file here must be the same key
    hub_public_key: Path = Path("keys/hub.pub")
    outbox: Path = Path("outbox.db")
    keep_settled_days: float = 7.0  # settled records and batches are pruned from the outbox after this long
    prune_seconds: float = 60.0  # how often the node looks for settled records to prune
    reports_dir: Path = Path("reports")


@dataclass(frozen=True)
class BrokerSection:
    url: str = ""  # overrides the handover's broker URL (prefer CX_BROKER_URL to keep a password out of files)
    url_file: Path | None = None  # earlier versions' handover: a file holding the broker URL alone
    vhost: str = "credit-exchange"  # used only when neither the handover nor the URL names one
    user_prefix: str = "cx-"  # used only when neither the handover nor the URL names the broker user
    tls_ca: Path | None = None  # CA certificate for amqps:// with a private CA
    tls_cert: Path | None = None  # client certificate (EXTERNAL authentication)
    tls_key: Path | None = None


@dataclass(frozen=True)
class DeliverySection:
    batch_max_records: int = 1000
    batch_max_bytes: int = 4 * 1024 * 1024
    linger_seconds: float = 1.0  # a partial batch waits at most this long for more records
    max_in_flight: int = 8  # batches published but not yet receipted
    receipt_timeout_seconds: float = 120.0  # then the same batch (same id) is sent again
    retry_min_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    heartbeat_seconds: float = 60.0
    poll_seconds: float = 10.0  # how often sources are read for new rows
    chunk_rows: int = 1000  # rows read and committed to the outbox per transaction
    hub_api: str = ""  # overrides the handover's hub API URL (where consistency proofs are fetched)


@dataclass(frozen=True)
class HttpSection:
    listen: str = "127.0.0.1:8471"


@dataclass(frozen=True)
class FieldMap:
    """How one record field is made from a source row."""

    column: str | None = None
    const: Any = None
    date: bool = False  # parse 2016-03-01, 2016/3/1, 20160301, 2016年3月1日, or a date/datetime value
    decimal: bool = False  # numbers to a decimal string
    split: str | None = None  # split a text into a list on any of these characters
    map: str | None = None  # a code table name: source code -> value
    trim: bool = True
    template: str | None = None  # "{col1}-{col2}" from columns


@dataclass(frozen=True)
class StreamConfig:
    name: str
    source: str
    type: str
    key: tuple[str, ...]
    cursor: str | None
    fields: dict[str, FieldMap]
    record_id: str  # template over source columns, e.g. "amr-penalty-{id}"
    options: dict[str, Any]  # adapter-specific: table, query, pattern …
    schema_version: int | None = None
    entered_by: str | None = None  # source column naming who entered the row, if any


@dataclass(frozen=True)
class SourceConfig:
    name: str
    adapter: str
    options: dict[str, Any]


STREAM_KEYS = {"name", "source", "type", "key", "cursor", "fields", "record_id", "schema_version", "entered_by"}
FIELD_KEYS = {"column", "const", "date", "decimal", "split", "map", "trim", "template"}


@dataclass(frozen=True)
class NodeConfig(config.LoadedFromFile):
    node: NodeSection = field(default_factory=NodeSection)
    broker: BrokerSection = field(default_factory=BrokerSection)
    delivery: DeliverySection = field(default_factory=DeliverySection)
    http: HttpSection = field(default_factory=HttpSection)
    sources: dict[str, Any] = field(default_factory=dict)
    streams: list[Any] = field(default_factory=list)
    code_tables: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path) -> NodeConfig:
        cfg = config.load(cls, path)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        where = str(self.path)
        if not DEPT_ID.match(self.node.dept):
            raise ConfigError(f"{where} [node] dept: {self.node.dept!r} is not a department id 部门标识无效")
        if not NODE_ID.match(self.node.node_id):
            raise ConfigError(f"{where} [node] node_id: {self.node.node_id!r} is not a node id 节点标识无效")
        self.source_configs()
        self.stream_configs()

    def source_configs(self) -> dict[str, SourceConfig]:
        out = {}
        for name, table in self.sources.items():
            if not isinstance(table, dict) or "adapter" not in table:
                raise ConfigError(f"{self.path} [sources.{name}] needs adapter = \"sql\" or \"files\" 缺少 adapter")
            options = {k: v for k, v in table.items() if k != "adapter"}
            for key in ("url_file", "folder", "database"):
                if isinstance(options.get(key), str) and not os.path.isabs(options[key]):
                    options[key] = str(self.base / options[key])  # relative to node.toml, like every path
            out[name] = SourceConfig(name, table["adapter"], options)
        return out

    def stream_configs(self) -> list[StreamConfig]:
        sources = set(self.sources)
        out, seen = [], set()
        for i, s in enumerate(self.streams):
            where = f"{self.path} [[streams]] #{i + 1}"
            if not isinstance(s, dict):
                raise ConfigError(f"{where}: not a table")
            for required in ("name", "source", "type", "key"):
                if required not in s:
                    raise ConfigError(f"{where}: missing {required} 缺少配置项")
            if s["name"] in seen:
                raise ConfigError(f"{where}: stream name {s['name']!r} used twice 数据流名称重复")
            seen.add(s["name"])
            if s["source"] not in sources:
                raise ConfigError(f"{where}: source {s['source']!r} is not defined under [sources] 未定义的数据源")
            key = (s["key"],) if isinstance(s["key"], str) else tuple(s["key"])
            fields = {}
            for name, spec in (s.get("fields") or {}).items():
                if isinstance(spec, str):
                    spec = {"column": spec}
                if not isinstance(spec, dict) or set(spec) - FIELD_KEYS:
                    raise ConfigError(f"{where} fields.{name}: use a column name or a table with "
                                      f"{sorted(FIELD_KEYS)} 字段映射格式错误")
                if spec.get("map") and spec["map"] not in self.code_tables:
                    raise ConfigError(f"{where} fields.{name}: code table {spec['map']!r} is not defined under "
                                      "[code_tables] 未定义的代码表")
                fields[name] = FieldMap(**spec)
            options = {k: v for k, v in s.items() if k not in STREAM_KEYS}
            out.append(StreamConfig(
                name=s["name"], source=s["source"], type=s["type"], key=key, cursor=s.get("cursor"),
                fields=fields, record_id=s.get("record_id") or f"{s['name']}-" + "-".join("{%s}" % k for k in key),
                options=options, schema_version=s.get("schema_version"), entered_by=s.get("entered_by")))
        return out

    def handover(self, *, required: bool = True) -> Handover | None:
        """What the hub operator handed over, completed, with what node.toml or the environment overrides.

        Raises ConfigError for a handover that cannot be read or is for another department or node; returns
        None when there is none yet and `required` is false (`cx node check` works before it arrives).
        """
        override = self._url_override()
        legacy = self.broker.url_file
        if self.node.handover.exists():
            found: Handover | None = Handover.load(self.node.handover)
        elif legacy is not None and legacy.exists():
            found = Handover.parse(config.read_secret(None, legacy, "the broker URL"), str(legacy))
        elif override or not required:
            found = None
        else:
            found = Handover.load(self.node.handover)  # says there is none, and where it belongs
        if override:
            url = from_url(override)
            found = replace(found or url, broker_url=override,
                            broker_user=url.broker_user or (found.broker_user if found else ""),
                            vhost=url.vhost or (found.vhost if found else ""))
        if found is None:
            return None
        where = f"handover file {self.node.handover}"
        if found.dept and found.dept != self.node.dept:
            raise ConfigError(f"{where} is for department {found.dept!r}, this node is {self.node.dept!r} "
                              "交接文件不属于本部门")
        if found.node_id and found.node_id != self.node.node_id:
            raise ConfigError(f"{where} is for node {found.node_id!r}, this node is {self.node.node_id!r} ([node] "
                              "node_id): ask the hub operator for this node's file (cx hub add-node) 交接文件不属于本前置机")
        topology = Topology(vhost=found.vhost or self.broker.vhost, user_prefix=self.broker.user_prefix)
        return replace(found, dept=self.node.dept, node_id=self.node.node_id, vhost=topology.vhost,
                       broker_user=found.broker_user or topology.dept_user(self.node.dept),
                       receipts_queue=found.receipts_queue or topology.receipts_queue(self.node.dept,
                                                                                       self.node.node_id),
                       hub_api=(self.delivery.hub_api or found.hub_api).rstrip("/"),
                       hub_key=self._hub_key(found.hub_key))

    def pinned_hub_key(self) -> PublicKey:
        """The hub key receipts must verify with; ConfigError when neither the handover nor a file gives one."""
        link = self.handover()
        if link is None or link.hub_key is None:
            raise ConfigError(f"no hub public key: the handover file carries none and {self.node.hub_public_key} does "
                              "not exist; ask the hub operator for the handover file 缺少交换中心公钥")
        return link.hub_key

    def _url_override(self) -> str:
        return os.environ.get("CX_BROKER_URL") or self.broker.url

    def _hub_key(self, handed: PublicKey | None) -> PublicKey | None:
        """The pinned hub key: the handover's, or keys/hub.pub; both present must be the same key."""
        path = self.node.hub_public_key
        try:
            pinned = PublicKey.load(path) if path.exists() else None
        except (OSError, ProtocolError) as exc:
            raise ConfigError(f"[node] hub_public_key {path}: not a usable public key "
                              f"({getattr(exc, 'detail', None) or exc}) 中心公钥文件无效") from None
        if pinned and handed and pinned.key_id != handed.key_id:
            raise ConfigError(f"[node] hub_public_key {path} holds key {pinned.key_id}, the handover file names "
                              f"{handed.key_id}: confirm the hub key id with the operator by phone, then remove the "
                              "file that is wrong 中心公钥与交接文件不一致")
        return pinned or handed

    def amqp_url(self) -> str:
        link = self.handover()
        assert link is not None
        return link.broker_url

    def listen(self) -> tuple[str, int]:
        return config.listen_address(self.http.listen)
