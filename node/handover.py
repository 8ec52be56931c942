"""The handover file: everything a department's node needs from the hub operator, in one file they hand over.

The hub writes one per enrolled node (`cx hub provision` → `handover/<dept>/<node>.toml`, mode 0600, since
it holds the broker password); the node reads it (`[node] handover`, default `secrets/handover.toml`). It
is TOML with these keys, so a person can read it too:

    format          "cx-handover/1"
    dept, node_id   whom it is for; the node refuses a handover for another department or node
    broker_url      amqp(s)://user:password@host:port/vhost (over TLS with a client certificate the
                    password is not needed: the URL then ends in ?auth=external)
    broker_user     the broker user, which every message the node publishes names as its user_id
    vhost           the hub's vhost
    receipts_queue  the queue this node reads its receipts and refusals from
    hub_api         the hub's API, where the node fetches ledger consistency proofs (no login needed)
    hub_key_id      the hub's key id: confirm it with the operator by phone
    hub_public_key  the hub's Ed25519 public key (PEM): receipts, refusals and checkpoints must verify with it

An older handover file held only the broker URL on one line; it is still read (user and vhost then come
from the URL).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .config import ConfigError
from .protocol.errors import ProtocolError
from .protocol.keys import PublicKey

HANDOVER_FORMAT = "cx-handover/1"
FIELDS = ("format", "dept", "node_id", "broker_url", "broker_user", "vhost", "receipts_queue", "hub_api",
          "hub_key_id", "hub_public_key")


@dataclass(frozen=True)
class Handover:
    broker_url: str
    broker_user: str = ""
    vhost: str = ""
    dept: str = ""
    node_id: str = ""
    receipts_queue: str = ""
    hub_api: str = ""
    hub_key: PublicKey | None = None

    def to_toml(self) -> str:
        """The file's text, with a header saying what it is and what to do with it."""
        values = {"format": HANDOVER_FORMAT, "dept": self.dept, "node_id": self.node_id,
                  "broker_url": self.broker_url, "broker_user": self.broker_user, "vhost": self.vhost,
                  "receipts_queue": self.receipts_queue, "hub_api": self.hub_api,
                  "hub_key_id": self.hub_key.key_id if self.hub_key else "",
                  "hub_public_key": self.hub_key.pem() if self.hub_key else ""}
        lines = [f"# Credit Exchange handover 交接文件 — department 部门 {self.dept}, node 节点 {self.node_id}",
                 "# Holds the broker password: give it to the department's IT staff only. They save it next to",
                 "# node.toml as secrets/handover.toml (chmod 600); the node takes everything below from it.",
                 "# 含消息代理密码，仅交给该部门信息化人员；保存为 node.toml 旁的 secrets/handover.toml（权限 600）。"]
        lines += [f"{name} = {json.dumps(values[name], ensure_ascii=False)}" for name in FIELDS]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str, where: str = "handover file") -> Handover:
        """A handover file's text: the TOML form, or the older single broker URL line."""
        stripped = text.strip()
        if "\n" not in stripped and "://" in stripped and "=" not in stripped.split("://", 1)[0]:
            return cls.from_url(stripped)
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not a handover file, cannot be read as TOML: {exc} "
                              "交接文件格式错误，请向交换中心重新索取") from None
        if raw.get("format") != HANDOVER_FORMAT:
            raise ConfigError(f"{where}: not a handover file (format {raw.get('format')!r}, expected "
                              f"{HANDOVER_FORMAT!r}) 不是交接文件")
        unknown = sorted(set(raw) - set(FIELDS))
        wrong = [name for name in FIELDS if not isinstance(raw.get(name, ""), str)]
        if unknown or wrong or not raw.get("broker_url"):
            raise ConfigError(f"{where}: unknown keys {unknown}, keys that are not text {wrong}, or no broker_url "
                              "交接文件内容不完整，请向交换中心重新索取")
        hub_key = None
        if raw.get("hub_public_key"):
            try:
                hub_key = PublicKey.from_pem(raw["hub_public_key"])
            except ProtocolError as exc:
                raise ConfigError(f"{where}: hub_public_key is not a usable public key: {exc.detail} "
                                  "交接文件中的中心公钥无效") from None
            if raw.get("hub_key_id") and raw["hub_key_id"] != hub_key.key_id:
                raise ConfigError(f"{where}: hub_key_id {raw['hub_key_id']} is not the key id of hub_public_key "
                                  f"({hub_key.key_id}): the file was altered 交接文件中的中心密钥标识与公钥不符")
        url = from_url(raw["broker_url"])
        return cls(broker_url=raw["broker_url"], broker_user=raw.get("broker_user") or url.broker_user,
                   vhost=raw.get("vhost") or url.vhost, dept=raw.get("dept", ""), node_id=raw.get("node_id", ""),
                   receipts_queue=raw.get("receipts_queue", ""), hub_api=raw.get("hub_api", ""), hub_key=hub_key)

    @classmethod
    def from_url(cls, url: str) -> Handover:
        return from_url(url)

    @classmethod
    def load(cls, path: str | Path) -> Handover:
        try:
            text = Path(path).read_text("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"no handover file at {path}: save the file the hub operator gave you "
                              "(handover/<dept>/<node>.toml) there 找不到交接文件，请将交换中心提供的交接文件保存到此处") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the handover file {path}: {getattr(exc, 'strerror', None) or exc} "
                              "无法读取交接文件") from None
        return cls.parse(text, str(path))


def from_url(url: str) -> Handover:
    """What a bare broker URL says: the user and the vhost."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError(f"the broker URL must start with amqp:// or amqps://, not {parts.scheme or 'nothing'}:// "
                          "消息代理地址格式错误")
    vhost = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    return Handover(broker_url=url, broker_user=unquote(parts.username or ""), vhost=vhost)
