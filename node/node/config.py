"""The node's configuration (node.toml): identity, broker, delivery tuning, sources, streams, mappings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import config
from ..config import ConfigError
from ..protocol.envelope import DEPT_ID, NODE_ID


@dataclass(frozen=True)
class NodeSection:
    dept: str = ""
    node_id: str = ""
    signing_key: Path = Path("keys/node.key")
    hub_public_key: Path = Path("keys/hub.pub")  # pinned: receipts must verify with this key
    outbox: Path = Path("outbox.db")
    reports_dir: Path = Path("reports")


@dataclass(frozen=True)
class BrokerSection:
    url_file: Path | None = Path("secrets/broker.amqp")  # the handover file from the hub operator
    url: str = ""  # or the URL itself (prefer CX_BROKER_URL to keep the password out of files)
    vhost: str = "credit-exchange"
    user_prefix: str = "cx-"
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
    hub_api: str = ""  # optional hub API URL, for consistency proofs when receipts arrive out of order


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

    def amqp_url(self) -> str:
        if os.environ.get("CX_BROKER_URL"):
            return os.environ["CX_BROKER_URL"]
        if self.broker.url:
            return self.broker.url
        return config.read_secret(None, self.broker.url_file, "the broker URL (handover file from the hub operator)")

    def listen(self) -> tuple[str, int]:
        return config.listen_address(self.http.listen)
