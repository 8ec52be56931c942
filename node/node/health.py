"""What stands in a node's way, classified and said in Chinese and English: broker and hub errors, and what to do.

The running node records the last broker error and the last hub API error in its outbox (`Trouble`), so
`cx node status`, in another process, shows them; `/healthz` and `--once` use the same words.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import asdict, dataclass
from typing import Any

from ..protocol.envelope import utc_now

BROKER_ERROR = "broker_error"  # outbox state keys
HUB_ERROR = "hub_error"


@dataclass(frozen=True)
class Trouble:
    """One classified problem: `kind` is stable (for monitoring), `zh`/`en` say it and what to do."""

    kind: str
    zh: str
    en: str
    detail: str  # what the library or the server said
    at: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.zh} / {self.en} ({self.detail})"


# kind -> (Chinese, English): what it is and what to do about it
BROKER_KINDS = {
    "unreachable": ("无法连接消息代理：请检查网络、防火墙和交接文件中的地址；节点会自动重试，数据不会丢失",
                    "cannot reach the broker: check the network, the firewall and the address in the handover file; "
                    "the node keeps retrying and loses nothing"),
    "login_refused": ("消息代理拒绝登录（用户名或密码错误）：请使用交换中心最新提供的交接文件",
                      "the broker refused the login (wrong user name or password): use the latest handover file "
                      "from the hub operator"),
    "permission_refused": ("消息代理拒绝操作（权限不足或用户与交接文件不符）：请交换中心运行 cx hub provision 并重新提供交接文件",
                           "the broker refused an operation (no permission, or a user other than the handover's): "
                           "ask the hub operator to run `cx hub provision` and send the handover file again"),
    "not_enrolled": ("本前置机的回执队列不存在：请交换中心登记本前置机（cx hub add-node）并运行 cx hub provision",
                     "this node's receipts queue does not exist: ask the hub operator to enrol this node "
                     "(`cx hub add-node`) and run `cx hub provision`"),
    "no_receipt": ("已发送的批次尚未收到回执：交换中心可能未运行，或已隔离这些批次（请交换中心查看 cx hub quarantine）",
                   "batches were sent but no receipt came yet: the hub may be down, or it quarantined them (ask the "
                   "hub operator to look at `cx hub quarantine`)"),
}
HUB_KINDS = {
    "hub_api_unreachable": ("无法连接交换中心接口，账本检查点暂未核验（将自动重试）",
                            "cannot reach the hub API: ledger checkpoints are not yet verified (retried by itself)"),
    "hub_api_error": ("交换中心接口未提供一致性证明，账本检查点暂未核验（将自动重试）",
                      "the hub API gave no consistency proof: ledger checkpoints are not yet verified (retried by "
                      "itself)"),
    "hub_api_missing": ("未配置交换中心接口地址（交接文件中的 hub_api），账本检查点无法核验",
                        "no hub API address (hub_api in the handover file): ledger checkpoints cannot be verified"),
}


def trouble(kind: str, detail: str) -> Trouble:
    zh, en = {**BROKER_KINDS, **HUB_KINDS}[kind]
    return Trouble(kind, zh, en, detail[:500], utc_now())


def broker_trouble(exc: BaseException) -> Trouble:
    """Which kind of broker problem an exception from connecting, declaring or publishing is."""
    import aiormq.exceptions as amqp

    text = _text(exc)
    upper = text.upper()
    if isinstance(exc, (amqp.ProbableAuthenticationError, amqp.AuthenticationError)) or "LOGIN WAS REFUSED" in upper:
        return trouble("login_refused", text)
    if isinstance(exc, amqp.ChannelNotFoundEntity) or "NOT_FOUND - NO QUEUE" in upper:
        return trouble("not_enrolled", text)
    if (isinstance(exc, (amqp.ChannelAccessRefused, amqp.ChannelPreconditionFailed)) or "ACCESS_REFUSED" in upper
            or "NOT_ALLOWED" in upper or "USER_ID PROPERTY SET TO" in upper):
        return trouble("permission_refused", text)
    return trouble("unreachable", text)


def hub_trouble(exc: BaseException | None = None, status: int | None = None, api: str = "") -> Trouble:
    if not api:
        return trouble("hub_api_missing", "no hub_api")
    if status is not None:
        return trouble("hub_api_error", f"{api} answered HTTP {status}")
    return trouble("hub_api_unreachable", f"{api}: {_text(exc) if exc else 'no answer'}")


def _text(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timed out 超时"
    if isinstance(exc, socket.gaierror):
        return f"unknown host 主机名无法解析: {exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc}"
    return str(exc) or type(exc).__name__
