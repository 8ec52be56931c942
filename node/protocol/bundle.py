"""Proof bundles: everything needed to check one record offline with the department's public key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import jsonutil
from .envelope import KEY_ID, Batch, BatchHeader, b64decode, b64encode, parse_record_line
from .errors import ProtocolError, Reason
from .keys import PublicKey
from .merkle import leaf_hash, verify_inclusion

BUNDLE_FORMAT = "cx-proof/1"


@dataclass(frozen=True)
class ProofBundle:
    record_line: bytes
    leaf_index: int
    path: list[bytes]
    header_bytes: bytes
    signature: bytes
    key_id: str

    @classmethod
    def for_record(cls, batch: Batch, index: int, path: list[bytes]) -> ProofBundle:
        return cls(batch.lines[index], index, path, batch.header_bytes, batch.signature, batch.header.key_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "record_line": self.record_line.decode(),
            "inclusion": {"leaf_index": self.leaf_index, "path": [h.hex() for h in self.path]},
            "batch_header": self.header_bytes.decode(),
            "signature": b64encode(self.signature),
            "key_id": self.key_id,
        }

    @classmethod
    def from_json(cls, obj: Any) -> ProofBundle:
        try:
            if obj["format"] != BUNDLE_FORMAT:
                raise ProtocolError(Reason.UNSUPPORTED_VERSION, f"bundle format {obj['format']!r}")
            inclusion = obj["inclusion"]
            return cls(
                record_line=obj["record_line"].encode(),
                leaf_index=_index(inclusion["leaf_index"]),
                path=[bytes.fromhex(h) for h in inclusion["path"]],
                header_bytes=obj["batch_header"].encode(),
                signature=b64decode(obj["signature"]),
                key_id=_key_id(obj["key_id"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:  # int(inf) overflows
            raise ProtocolError(Reason.BAD_PROOF, f"the bundle is malformed: {exc}") from None

    def verify(self, key: PublicKey) -> BatchHeader:
        """Check key, signature, inclusion; returns the verified header. Raises ProtocolError."""
        if key.key_id != self.key_id:
            raise ProtocolError(Reason.KEY_ID_MISMATCH, f"bundle names key {self.key_id}, the given key is {key.key_id}")
        header = BatchHeader.from_json(jsonutil.loads(self.header_bytes, max_depth=2, what="header"))
        if header.key_id != key.key_id:
            raise ProtocolError(Reason.KEY_ID_MISMATCH, f"the header names key {header.key_id}")
        if not key.verify(self.signature, self.header_bytes):
            raise ProtocolError(Reason.BAD_SIGNATURE, "the batch header signature does not verify")
        if b"\n" in self.record_line:
            raise ProtocolError(Reason.RECORD_MISMATCH, "the record line contains a newline")
        try:
            verify_inclusion(self.leaf_index, header.count, leaf_hash(self.record_line), self.path,
                             bytes.fromhex(header.root))
        except ProtocolError as exc:
            raise ProtocolError(Reason.RECORD_MISMATCH,
                                f"the record line is not the one the signed batch holds at index "
                                f"{self.leaf_index}: {exc.detail}") from None
        parse_record_line(self.record_line)
        return header


def _index(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"leaf_index must be a non-negative integer, not {str(value)[:40]!r}")
    return value


def _key_id(value: object) -> str:
    if not isinstance(value, str) or not KEY_ID.match(value):
        raise ValueError(f"key_id must be 32 hex digits, not {str(value)[:40]!r}")
    return value
