"""The hub's signed statements: ledger checkpoints and batch receipts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import jsonutil
from .envelope import (
    DEPT_ID, HEX256, KEY_ID, TIMESTAMP, b64decode, b64encode, parse_signature_line, signature_line, utc_now,
)
from .errors import ProtocolError, Reason
from .keys import PublicKey, SigningKey
from .merkle import verify_consistency

CHECKPOINT_FORMAT = "cx-checkpoint/1"
RECEIPT_FORMAT = "cx-receipt/1"


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
              and isinstance(obj["time"], str) and TIMESTAMP.match(obj["time"])
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
    def parse(cls, data: bytes, hub_key: PublicKey, max_bytes: int = 64 * 1024 * 1024) -> Receipt:
        """Read and verify a receipt: the hub's signature over the body, then its checkpoint."""
        if len(data) > max_bytes:
            raise ProtocolError(Reason.TOO_LARGE, f"receipt of {len(data)} bytes")
        parts = data.split(b"\n")
        if len(parts) != 3 or parts[2] != b"":
            raise ProtocolError(Reason.BAD_FRAMING, "a receipt is a body line and a signature line")
        body, sig_line = parts[0], parts[1]
        sig = parse_signature_line(sig_line)
        if not hub_key.verify(sig, body):
            raise ProtocolError(Reason.BAD_SIGNATURE, "the receipt signature does not verify with the hub key")
        obj = jsonutil.loads(body, what="receipt")
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
