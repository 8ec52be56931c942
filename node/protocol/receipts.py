"""The hub's signed statements: ledger checkpoints, batch receipts and batch refusals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import jsonutil
from .envelope import (
    DEPT_ID, HEX256, KEY_ID, is_uuid, b64decode, b64encode, is_timestamp, parse_signature_line, signature_line,
    utc_now,
)
from .errors import ProtocolError, Reason
from .keys import PublicKey, SigningKey
from .merkle import verify_consistency

CHECKPOINT_FORMAT = "cx-checkpoint/1"
RECEIPT_FORMAT = "cx-receipt/1"
REFUSAL_FORMAT = "cx-refusal/1"
MAX_RECEIPT_BYTES = 64 * 1024 * 1024
MAX_REFUSAL_BYTES = 64 * 1024
MAX_REFUSAL_DETAIL = 2000  # characters of each detail text


@dataclass(frozen=True)
class Checkpoint:
    """A department ledger's size and root at a time, signed by the hub (cf. RFC 9162 STH).

    The signature covers a fixed text form, so it can be re-checked from the fields alone:

        cx-checkpoint/1\\n<dept>\\n<size>\\n<root hex>\\n<time>\\n
    """

    dept: str
    size: int
    root: str
    time: str
    key_id: str
    signature: str  # base64url

    @staticmethod
    def signed_text(dept: str, size: int, root: str, time: str) -> bytes:
        return f"{CHECKPOINT_FORMAT}\n{dept}\n{size}\n{root}\n{time}\n".encode()

    @classmethod
    def sign(cls, key: SigningKey, dept: str, size: int, root: bytes, time: str | None = None) -> Checkpoint:
        time = time or utc_now()
        text = cls.signed_text(dept, size, root.hex(), time)
        return cls(dept, size, root.hex(), time, key.key_id, b64encode(key.sign(text)))

    def to_json(self) -> dict[str, Any]:
        return {"dept": self.dept, "size": self.size, "root": self.root, "time": self.time,
                "key_id": self.key_id, "sig": self.signature}

    @classmethod
    def from_json(cls, obj: Any) -> Checkpoint:
        if not isinstance(obj, dict) or set(obj) != {"dept", "size", "root", "time", "key_id", "sig"}:
            raise ProtocolError(Reason.BAD_CHECKPOINT, "checkpoint fields are wrong")
        ok = (isinstance(obj["dept"], str) and DEPT_ID.match(obj["dept"])
              and isinstance(obj["size"], int) and not isinstance(obj["size"], bool) and obj["size"] >= 0
              and isinstance(obj["root"], str) and HEX256.match(obj["root"])
              and is_timestamp(obj["time"])
              and isinstance(obj["key_id"], str) and KEY_ID.match(obj["key_id"])
              and isinstance(obj["sig"], str))
        if not ok:
            raise ProtocolError(Reason.BAD_CHECKPOINT, "a checkpoint field is invalid")
        return cls(obj["dept"], obj["size"], obj["root"], obj["time"], obj["key_id"], obj["sig"])

    @property
    def root_bytes(self) -> bytes:
        return bytes.fromhex(self.root)

    def verify(self, hub_key: PublicKey) -> None:
        if self.key_id != hub_key.key_id:
            raise ProtocolError(Reason.KEY_ID_MISMATCH, f"checkpoint signed by {self.key_id}, expected {hub_key.key_id}")
        try:
            sig = b64decode(self.signature)
        except ValueError:
            raise ProtocolError(Reason.BAD_CHECKPOINT, "signature is not base64url") from None
        if not hub_key.verify(sig, self.signed_text(self.dept, self.size, self.root, self.time)):
            raise ProtocolError(Reason.BAD_SIGNATURE, "the checkpoint signature does not verify")


@dataclass(frozen=True)
class Consistency:
    old_size: int
    proof: Sequence[bytes]

    def to_json(self) -> dict[str, Any]:
        return {"old_size": self.old_size, "proof": [h.hex() for h in self.proof]}

    @classmethod
    def from_json(cls, obj: Any) -> Consistency:
        try:
            old = obj["old_size"]
            if not isinstance(old, int) or isinstance(old, bool) or old < 0:
                raise ValueError("old_size")
            return cls(old, [bytes.fromhex(h) for h in obj["proof"]])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(Reason.BAD_RECEIPT, f"consistency proof is malformed: {exc}") from None

    def verify(self, old_root: bytes, checkpoint: Checkpoint) -> None:
        """Raise INCONSISTENT_CHECKPOINT unless the checkpoint extends the ledger whose root was old_root."""
        try:
            verify_consistency(self.old_size, checkpoint.size, old_root, checkpoint.root_bytes, self.proof)
        except ProtocolError as exc:
            raise ProtocolError(Reason.INCONSISTENT_CHECKPOINT,
                                f"checkpoint {checkpoint.size} does not extend {self.old_size}: {exc.detail}") from None


@dataclass(frozen=True)
class Rejection:
    """A record the hub refused: which line, which record, and every error found."""

    line: int  # 0-based index of the record line in the batch
    record_id: str | None
    errors: Sequence[Mapping[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "record_id": self.record_id, "errors": [dict(e) for e in self.errors]}


@dataclass(frozen=True)
class Receipt:
    """The hub's answer to one batch. Sent as two lines: the body JSON, then {"sig": ...}."""

    batch_id: str
    dept: str
    header_hash: str
    accepted: Sequence[str]
    rejected: Sequence[Rejection]
    duplicates: int
    checkpoint: Checkpoint
    received: str
    hub_key_id: str
    # RFC 9162 consistency proof from the ledger size before this batch to the checkpoint's size,
    # so a node that saw the previous checkpoint can check the hub did not rewrite history
    consistency: Consistency | None = None
    body: bytes = field(default=b"", compare=False)
    signature: bytes = field(default=b"", compare=False)

    def body_json(self) -> dict[str, Any]:
        return {
            "format": RECEIPT_FORMAT, "batch_id": self.batch_id, "dept": self.dept,
            "header_hash": self.header_hash, "accepted": list(self.accepted),
            "rejected": [r.to_json() for r in self.rejected], "duplicates": self.duplicates,
            "checkpoint": self.checkpoint.to_json(), "received": self.received,
            "hub_key_id": self.hub_key_id,
            "consistency": self.consistency.to_json() if self.consistency else None,
        }

    @classmethod
    def issue(cls, key: SigningKey, *, batch_id: str, dept: str, header_hash: str, accepted: Sequence[str],
              rejected: Sequence[Rejection], duplicates: int, checkpoint: Checkpoint,
              received: str | None = None, consistency: Consistency | None = None) -> Receipt:
        draft = cls(batch_id, dept, header_hash, list(accepted), list(rejected), duplicates, checkpoint,
                    received or utc_now(), key.key_id, consistency)
        body = jsonutil.dumps(draft.body_json())
        return cls(**{**draft.__dict__, "body": body, "signature": key.sign(body)})

    def to_bytes(self) -> bytes:
        return self.body + b"\n" + signature_line(self.signature) + b"\n"

    @classmethod
    def parse(cls, data: bytes, hub_key: PublicKey, max_bytes: int = MAX_RECEIPT_BYTES) -> Receipt:
        """Read and verify a receipt: the hub's signature over the body, then its checkpoint."""
        body, sig, obj = read_signed(data, hub_key, max_bytes, "receipt")
        try:
            if obj["format"] != RECEIPT_FORMAT:
                raise ProtocolError(Reason.UNSUPPORTED_VERSION, f"receipt format {obj['format']!r}")
            rejected = [Rejection(r["line"], r["record_id"], r["errors"]) for r in obj["rejected"]]
            consistency = Consistency.from_json(obj["consistency"]) if obj["consistency"] is not None else None
            receipt = cls(obj["batch_id"], obj["dept"], obj["header_hash"], obj["accepted"], rejected,
                          obj["duplicates"], Checkpoint.from_json(obj["checkpoint"]), obj["received"],
                          obj["hub_key_id"], consistency, body, sig)
        except (KeyError, TypeError) as exc:
            raise ProtocolError(Reason.BAD_RECEIPT, f"receipt field missing or wrong: {exc}") from None
        if receipt.hub_key_id != hub_key.key_id:
            raise ProtocolError(Reason.KEY_ID_MISMATCH, "receipt names another hub key")
        receipt.checkpoint.verify(hub_key)
        if receipt.checkpoint.dept != receipt.dept:
            raise ProtocolError(Reason.BAD_RECEIPT, "the checkpoint is for another department")
        return receipt


def read_signed(data: bytes, hub_key: PublicKey, max_bytes: int, what: str) -> tuple[bytes, bytes, Any]:
    """A statement of the hub, two lines (body, signature line): check size, framing and the signature with the
    pinned key, and only then parse the body. Returns (body, signature, the parsed body)."""
    if len(data) > max_bytes:
        raise ProtocolError(Reason.TOO_LARGE, f"{what} of {len(data)} bytes")
    parts = data.split(b"\n")
    if len(parts) != 3 or parts[2] != b"":
        raise ProtocolError(Reason.BAD_FRAMING, f"a {what} is a body line and a signature line")
    body, sig = parts[0], parse_signature_line(parts[1])
    if not hub_key.verify(sig, body):
        raise ProtocolError(Reason.BAD_SIGNATURE, f"the {what} signature does not verify with the hub key")
    return body, sig, jsonutil.loads(body, what=what)


@dataclass(frozen=True)
class Refusal:
    """The hub's answer to a batch it quarantined: nothing of it was stored, and why. Two lines, like a receipt.

    Sent to the department the broker vouches for (its user published the batch), so a node can stop
    resending bytes that will never be accepted and act on the reason.
    """

    dept: str
    batch_id: str | None  # None when the header could not be read
    header_hash: str | None  # SHA-256 hex of the header line, when the header could be read
    body_hash: str  # SHA-256 hex of the whole message as the hub received it
    reason: str  # a reason code (section "Reason codes" of docs/protocol.md)
    detail_zh: str
    detail_en: str
    received: str
    hub_key_id: str
    body: bytes = field(default=b"", compare=False)
    signature: bytes = field(default=b"", compare=False)

    def body_json(self) -> dict[str, Any]:
        return {
            "format": REFUSAL_FORMAT, "dept": self.dept, "batch_id": self.batch_id,
            "header_hash": self.header_hash, "body_hash": self.body_hash, "reason": self.reason,
            "detail_zh": self.detail_zh, "detail_en": self.detail_en, "received": self.received,
            "hub_key_id": self.hub_key_id,
        }

    @classmethod
    def issue(cls, key: SigningKey, *, dept: str, batch_id: str | None, header_hash: str | None, body_hash: str,
              reason: str, detail_zh: str, detail_en: str, received: str | None = None) -> Refusal:
        draft = cls(dept, batch_id, header_hash, body_hash, reason,
                    jsonutil.escape_bad_characters(detail_zh[:MAX_REFUSAL_DETAIL]),
                    jsonutil.escape_bad_characters(detail_en[:MAX_REFUSAL_DETAIL]), received or utc_now(), key.key_id)
        body = jsonutil.dumps(draft.body_json())
        return cls(**{**draft.__dict__, "body": body, "signature": key.sign(body)})

    def to_bytes(self) -> bytes:
        return self.body + b"\n" + signature_line(self.signature) + b"\n"

    @classmethod
    def parse(cls, data: bytes, hub_key: PublicKey) -> Refusal:
        """Read and verify a refusal: the hub's signature over the body, then its fields."""
        body, sig, obj = read_signed(data, hub_key, MAX_REFUSAL_BYTES, "refusal")
        if not isinstance(obj, dict):
            raise ProtocolError(Reason.BAD_RECEIPT, "a refusal body is a JSON object")
        if obj.get("format") != REFUSAL_FORMAT:
            raise ProtocolError(Reason.UNSUPPORTED_VERSION, f"refusal format {str(obj.get('format'))[:40]!r}")
        fields = {"format", "dept", "batch_id", "header_hash", "body_hash", "reason", "detail_zh", "detail_en",
                  "received", "hub_key_id"}
        ok = (set(obj) == fields and isinstance(obj["dept"], str) and DEPT_ID.match(obj["dept"])
              and (obj["batch_id"] is None or is_uuid(obj["batch_id"]))
              and (obj["header_hash"] is None or (isinstance(obj["header_hash"], str) and HEX256.match(obj["header_hash"])))
              and isinstance(obj["body_hash"], str) and HEX256.match(obj["body_hash"])
              and isinstance(obj["reason"], str) and 0 < len(obj["reason"]) <= 40
              and isinstance(obj["detail_zh"], str) and isinstance(obj["detail_en"], str)
              and is_timestamp(obj["received"]) and isinstance(obj["hub_key_id"], str))
        if not ok:
            raise ProtocolError(Reason.BAD_RECEIPT, "refusal fields are missing or wrong")
        if obj["hub_key_id"] != hub_key.key_id:
            raise ProtocolError(Reason.KEY_ID_MISMATCH, "refusal names another hub key")
        return cls(obj["dept"], obj["batch_id"], obj["header_hash"], obj["body_hash"], obj["reason"],
                   obj["detail_zh"], obj["detail_en"], obj["received"], obj["hub_key_id"], body, sig)
