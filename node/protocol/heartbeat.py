"""Signed node heartbeats: liveness, outbox state and the source inventory the hub measures completeness by."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import jsonutil
from .envelope import DEPT_ID, KEY_ID, NODE_ID, is_timestamp, parse_signature_line, signature_line, utc_now
from .errors import ProtocolError, Reason
from .keys import PublicKey, SigningKey

HEARTBEAT_FORMAT = "cx-heartbeat/1"
MAX_HEARTBEAT_BYTES = 256 * 1024
MAX_HEARTBEAT_VERSION = 40  # characters of the node's software version
MAX_PENDING_SECONDS = 2**31  # what the hub's integer column holds (68 years)


@dataclass(frozen=True)
class Heartbeat:
    dept: str
    node: str
    key_id: str
    time: str
    version: str  # the node's software version
    outbox_depth: int  # records not yet settled by a receipt
    oldest_pending_seconds: float | None
    last_error: str | None
    inventory: dict[str, int] = field(default_factory=dict)  # record type -> rows at the source now
    # rows refused at the department and not yet resolved: record type -> rule -> rows (optional on the wire)
    rejections: dict[str, dict[str, int]] = field(default_factory=dict)
    # what the node is alarmed about: alert kind -> how many (optional on the wire)
    alerts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": HEARTBEAT_FORMAT, "dept": self.dept, "node": self.node, "key_id": self.key_id,
                "time": self.time, "version": self.version, "outbox_depth": self.outbox_depth,
                "oldest_pending_seconds": self.oldest_pending_seconds, "last_error": self.last_error,
                "inventory": dict(self.inventory),
                "rejections": {t: dict(rules) for t, rules in self.rejections.items()}, "alerts": dict(self.alerts)}

    @classmethod
    def sign(cls, key: SigningKey, **fields: Any) -> bytes:
        beat = cls(key_id=key.key_id, time=fields.pop("time", None) or utc_now(), **fields)
        body = jsonutil.dumps(beat.to_json())
        return body + b"\n" + signature_line(key.sign(body)) + b"\n"

    @classmethod
    def read(cls, data: bytes) -> tuple[Heartbeat, bytes, bytes]:
        """Parse without verifying: (heartbeat, signed body, signature). The caller picks the key by key_id."""
        if len(data) > MAX_HEARTBEAT_BYTES:
            raise ProtocolError(Reason.TOO_LARGE, f"heartbeat of {len(data)} bytes")
        parts = data.split(b"\n")
        if len(parts) != 3 or parts[2] != b"":
            raise ProtocolError(Reason.BAD_FRAMING, "a heartbeat is a body line and a signature line")
        body, sig = parts[0], parse_signature_line(parts[1])
        obj = jsonutil.loads(body, what="heartbeat")
        try:
            age = obj["oldest_pending_seconds"]
            rejections, alerts = obj.get("rejections", {}), obj.get("alerts", {})
            ok = (obj["format"] == HEARTBEAT_FORMAT and DEPT_ID.match(obj["dept"]) and NODE_ID.match(obj["node"])
                  and KEY_ID.match(obj["key_id"]) and is_timestamp(obj["time"])
                  and isinstance(obj["version"], str) and len(obj["version"]) <= MAX_HEARTBEAT_VERSION
                  and _count(obj["outbox_depth"])
                  and (age is None or (isinstance(age, (int, float)) and not isinstance(age, bool)
                                     and 0 <= age < MAX_PENDING_SECONDS))
                  and (obj["last_error"] is None or isinstance(obj["last_error"], str))
                  and _counts(obj["inventory"])
                  and isinstance(rejections, dict) and all(_counts(rules) for rules in rejections.values())
                  and _counts(alerts)
                  and not set(obj) - _FIELDS)
            if not ok:
                raise ValueError
            beat = cls(obj["dept"], obj["node"], obj["key_id"], obj["time"], obj["version"],
                       obj["outbox_depth"], obj["oldest_pending_seconds"], obj["last_error"], obj["inventory"],
                       rejections, alerts)
        except (KeyError, TypeError, ValueError):
            raise ProtocolError(Reason.BAD_HEADER, "heartbeat fields are missing or wrong") from None
        return beat, body, sig

    @staticmethod
    def verify(body: bytes, signature: bytes, key: PublicKey) -> None:
        if not key.verify(signature, body):
            raise ProtocolError(Reason.BAD_SIGNATURE, "the heartbeat signature does not verify")


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def _counts(value: object) -> bool:
    """A JSON object of name -> count."""
    return isinstance(value, dict) and all(isinstance(k, str) and _count(v) for k, v in value.items())


_FIELDS = {"format", "dept", "node", "key_id", "time", "version", "outbox_depth", "oldest_pending_seconds",
           "last_error", "inventory", "rejections", "alerts"}
