"""Signed batches: the header line, the signature line, one JSON line per record.

A batch is bytes, every line ending in LF:

    <header JSON>\\n
    {"sig":"<base64url Ed25519 signature over the exact header bytes>"}\\n
    <record line 1>\\n
    ...

The header carries the RFC 6962 Merkle root of the record lines' exact bytes, so one
signature covers every record, and each record can later be proven on its own.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from . import jsonutil
from .errors import ProtocolError, Reason
from .keys import PublicKey, SigningKey
from .merkle import MerkleTree

FORMAT_VERSION = 1
# \Z, not $: `$` also matches before a final newline, so "amr\n" would pass as a department id
DEPT_ID = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
KEY_ID = re.compile(r"^[0-9a-f]{32}\Z")
HEX256 = re.compile(r"^[0-9a-f]{64}\Z")
TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
TIMESTAMP = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z\Z")  # ASCII digits only
OPS = ("upsert", "retract")

# A record id: 1-200 code points, none of them a control character, a space other than U+0020, an invisible or
# bidirectional formatting character, a surrogate, a private-use character or a noncharacter of the Basic
# Multilingual Plane. An explicit list, so that a node in any language (with Unicode code-point regular
# expressions) draws the same line; schemas/record-line.v1.json states the same pattern.
RECORD_ID_MAX = 200
RECORD_ID_FORBIDDEN = ("\x00-\x1f\x7f-\xa0\xad\u061c\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000"
                       "\ud800-\udfff\ue000-\uf8ff\ufdd0-\ufdef\ufeff\ufff9-\ufffb\ufffe\uffff")
RECORD_ID = re.compile(f"[^{RECORD_ID_FORBIDDEN}]{{1,{RECORD_ID_MAX}}}\\Z")
# `source` values the hub keeps in columns of their own, and the most code points each may hold;
# `extracted`, when given, is a timestamp (see `is_timestamp`)
SOURCE_MAX = {"adapter": 64, "locator": 500, "entered_by": 100}


@dataclass(frozen=True)
class Limits:
    """Bounds every parser enforces before it does any work proportional to the input."""

    max_batch_bytes: int = 32 * 1024 * 1024
    max_records: int = 20_000
    max_line_bytes: int = 256 * 1024
    max_depth: int = jsonutil.MAX_DEPTH


DEFAULT_LIMITS = Limits()


def new_batch_id() -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits; sorts by time."""
    ms = time.time_ns() // 1_000_000
    value = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big") & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return str(uuid.UUID(int=value))


def utc_now() -> str:
    return format_time(datetime.now(timezone.utc))


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text: str) -> datetime:
    if not isinstance(text, str) or not TIMESTAMP.match(text):
        raise ValueError(f"not a UTC timestamp like 2026-01-02T03:04:05.678Z: {text!r}")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=timezone.utc)


CHINA = timezone(timedelta(hours=8))  # Asia/Shanghai: no daylight saving since 1991


def china_time(stamp: str | None) -> str:
    """A protocol timestamp (UTC on the wire) as people read it, in Asia/Shanghai; anything else as it is."""
    if not stamp:
        return "—"
    try:
        return parse_time(stamp).astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(stamp)


def is_timestamp(value: Any) -> bool:
    """A protocol timestamp: the TIMESTAMP form, and a real instant (year 0001-9999, no leap second)."""
    return isinstance(value, str) and len(value) <= 32 and _is_timestamp(value)


@lru_cache(maxsize=4096)  # a batch's records mostly share one `extracted` time; keys are at most 32 characters
def _is_timestamp(text: str) -> bool:
    if not TIMESTAMP.match(text):
        return False
    try:
        parse_time(text)
    except ValueError:  # matches the pattern but is no real instant: 2026-02-30, month 13, second 60, year 0000
        return False
    return True


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64decode(text: str) -> bytes:
    """Decode unpadded base64url, accepting only the one canonical spelling of the bytes.

    The decoder ignores a final character's unused low bits; without the re-encoding check
    several different signature lines would carry the same signature.
    """
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- header --------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchHeader:
    batch_id: str
    dept: str
    node: str
    key_id: str
    seq: int
    prev: str | None  # SHA-256 hex of this node's previous header bytes; None for seq 1
    created: str
    count: int
    root: str  # Merkle root (hex) of the record lines
    schemas: Mapping[str, int]  # record type -> schema version used in this batch
    version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "v": self.version, "batch_id": self.batch_id, "dept": self.dept, "node": self.node,
            "key_id": self.key_id, "seq": self.seq, "prev": self.prev, "created": self.created,
            "count": self.count, "root": self.root, "schemas": dict(self.schemas),
        }

    @classmethod
    def from_json(cls, obj: Any) -> BatchHeader:
        def bad(detail: str) -> ProtocolError:
            return ProtocolError(Reason.BAD_HEADER, detail)

        if not isinstance(obj, dict):
            raise bad("the header is not a JSON object")
        if "v" not in obj:
            raise bad("header fields wrong: missing ['v']")
        if not _is_int(obj["v"]) or obj["v"] != FORMAT_VERSION:
            raise ProtocolError(Reason.UNSUPPORTED_VERSION, f"batch format version {str(obj['v'])[:40]!r}")
        expected = {"v", "batch_id", "dept", "node", "key_id", "seq", "prev", "created", "count", "root", "schemas"}
        if set(obj) != expected:
            extra, missing = sorted(set(obj) - expected), sorted(expected - set(obj))
            raise bad(f"header fields wrong: missing {missing}, unknown {extra}")
        checks: list[tuple[str, bool]] = [
            ("batch_id", is_uuid(obj["batch_id"])),
            ("dept", _matches(DEPT_ID, obj["dept"])),
            ("node", _matches(NODE_ID, obj["node"])),
            ("key_id", _matches(KEY_ID, obj["key_id"])),
            ("seq", _is_int(obj["seq"]) and 1 <= obj["seq"] < 2**53),
            ("prev", obj["prev"] is None if obj["seq"] == 1 else _matches(HEX256, obj["prev"])),
            ("created", is_timestamp(obj["created"])),
            ("count", _is_int(obj["count"]) and obj["count"] >= 0),
            ("root", _matches(HEX256, obj["root"])),
            ("schemas", isinstance(obj["schemas"], dict) and all(
                _matches(TYPE_NAME, k) and _is_int(v) and 1 <= v < 1000 for k, v in obj["schemas"].items())),
        ]
        for name, ok in checks:
            if not ok:
                raise bad(f"header field {name!r} is invalid: {str(obj[name])[:80]!r}")
        return cls(
            batch_id=obj["batch_id"], dept=obj["dept"], node=obj["node"], key_id=obj["key_id"],
            seq=obj["seq"], prev=obj["prev"], created=obj["created"], count=obj["count"],
            root=obj["root"], schemas=obj["schemas"],
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _matches(pattern: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and pattern.match(value) is not None


def is_uuid(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


# -- record lines --------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordLine:
    """One record as it travels: what it is, what it says, where it came from."""

    record_id: str
    type: str
    schema_version: int
    op: str  # "upsert" or "retract"
    data: Mapping[str, Any] | None  # the type's fields (upsert); None for a retraction
    source: Mapping[str, Any]  # adapter, locator, extracted, entered_by
    reason: str | None = None  # why a retraction (撤销) ends the record's publicity

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "record_id": self.record_id, "type": self.type, "schema_version": self.schema_version,
            "op": self.op, "source": dict(self.source),
        }
        if self.op == "upsert":
            obj["data"] = dict(self.data or {})
        else:
            obj["reason"] = self.reason
        return obj

    def to_bytes(self) -> bytes:
        return jsonutil.dumps(self.to_json())

    @classmethod
    def from_json(cls, obj: Any) -> RecordLine:
        def bad(detail: str) -> ProtocolError:
            return ProtocolError(Reason.BAD_RECORD, detail)

        if not isinstance(obj, dict):
            raise bad("the record line is not a JSON object")
        op = obj.get("op")
        if op not in OPS:
            raise bad(f"op must be 'upsert' or 'retract', not {str(op)[:40]!r}")
        body = "data" if op == "upsert" else "reason"
        expected = {"record_id", "type", "schema_version", "op", "source", body}
        if set(obj) != expected:
            extra, missing = sorted(set(obj) - expected), sorted(expected - set(obj))
            raise bad(f"record line fields wrong: missing {missing}, unknown {extra}")
        record = cls(
            record_id=obj["record_id"], type=obj["type"], schema_version=obj["schema_version"], op=op,
            data=obj.get("data"), source=obj["source"], reason=obj.get("reason"),
        )
        record.check()
        return record

    def check(self) -> None:
        """Raise BAD_RECORD unless every field keeps its rule (the parser's check; a node runs it before sealing)."""
        def bad(detail: str) -> ProtocolError:
            return ProtocolError(Reason.BAD_RECORD, detail)

        rid = self.record_id
        if not isinstance(rid, str) or not RECORD_ID.match(rid):
            raise bad(f"record_id must be 1-{RECORD_ID_MAX} characters, none of them a control, space other than "
                      f"U+0020, invisible, private-use or noncharacter: {str(rid)[:80]!r}")
        if not _matches(TYPE_NAME, self.type):
            raise bad(f"type is invalid: {str(self.type)[:80]!r}")
        if not (_is_int(self.schema_version) and 1 <= self.schema_version < 1000):
            raise bad(f"schema_version is invalid: {str(self.schema_version)[:40]!r}")
        source = self.source
        if not isinstance(source, dict):
            raise bad("source must be an object of strings")
        for name, value in source.items():  # one pass: the type, and the bound of a value the hub keeps
            if value is None:
                continue
            if not isinstance(value, str):
                raise bad("source must be an object of strings")
            longest = SOURCE_MAX.get(name)
            if longest is not None and len(value) > longest:
                raise bad(f"source.{name} is {len(value)} characters, at most {longest}")
        extracted = source.get("extracted")
        if extracted is not None and not is_timestamp(extracted):
            raise bad(f"source.extracted must be a UTC timestamp like 2026-01-02T03:04:05.678Z that exists: "
                      f"{extracted[:40]!r}")
        if self.op == "upsert" and not isinstance(self.data, dict):
            raise bad("data must be an object")
        if self.op == "retract" and not (isinstance(self.reason, str) and self.reason.strip()):
            raise bad("a retraction must give its reason")


def parse_record_line(line: bytes, limits: Limits = DEFAULT_LIMITS) -> RecordLine:
    if len(line) > limits.max_line_bytes:
        raise ProtocolError(Reason.LINE_TOO_LONG, f"{len(line)} bytes, limit {limits.max_line_bytes}")
    return RecordLine.from_json(jsonutil.loads(line, max_depth=limits.max_depth, what="record line"))


def content_hash(record: RecordLine) -> str:
    """A record's version: SHA-256 over its op, type and content, independent of when it was sent."""
    body = {"op": record.op, "type": record.type, "data": record.data, "reason": record.reason}
    return sha256_hex(jsonutil.dumps_ascii(body))


# -- batches -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Batch:
    header: BatchHeader
    header_bytes: bytes
    signature: bytes
    lines: Sequence[bytes]  # exact record line bytes, without the LF

    @property
    def header_hash(self) -> str:
        return sha256_hex(self.header_bytes)

    def to_bytes(self) -> bytes:
        return encode_batch(self.header_bytes, self.signature, self.lines)

    def verify(self, key: PublicKey) -> MerkleTree:
        """Check the signature, then the Merkle root; returns the tree for proofs."""
        if key.key_id != self.header.key_id:
            raise ProtocolError(Reason.KEY_ID_MISMATCH, f"header names key {self.header.key_id}, given {key.key_id}")
        if not key.verify(self.signature, self.header_bytes):
            raise ProtocolError(Reason.BAD_SIGNATURE, "the header signature does not verify")
        tree = MerkleTree.from_lines(self.lines)
        if tree.root().hex() != self.header.root:
            raise ProtocolError(Reason.MERKLE_ROOT_MISMATCH, "the record lines do not hash to the signed root")
        return tree


def signature_line(signature: bytes) -> bytes:
    return b'{"sig":"' + b64encode(signature).encode() + b'"}'


def parse_signature_line(line: bytes) -> bytes:
    obj = jsonutil.loads(line, max_depth=1, what="signature line")
    if not isinstance(obj, dict) or set(obj) != {"sig"}:
        raise ProtocolError(Reason.BAD_FRAMING, 'the second line must be {"sig": "..."}')
    try:
        sig = b64decode(obj["sig"])
    except ValueError:
        raise ProtocolError(Reason.BAD_SIGNATURE, "the signature is not base64url") from None
    if len(sig) != 64:
        raise ProtocolError(Reason.BAD_SIGNATURE, f"an Ed25519 signature has 64 bytes, not {len(sig)}")
    if line != signature_line(sig):
        # the line is not signed itself: only its one exact form keeps a batch's bytes unique
        raise ProtocolError(Reason.BAD_FRAMING, 'the signature line must be exactly {"sig":"<base64url>"}')
    return sig


def encode_batch(header_bytes: bytes, signature: bytes, lines: Iterable[bytes]) -> bytes:
    return b"\n".join([header_bytes, signature_line(signature), *lines]) + b"\n"


def build_batch(
    key: SigningKey,
    *,
    dept: str,
    node: str,
    seq: int,
    prev: str | None,
    lines: Sequence[bytes],
    schemas: Mapping[str, int],
    batch_id: str | None = None,
    created: str | None = None,
) -> Batch:
    """Sign record lines (already encoded, one JSON object each, no LF) as one batch."""
    for line in lines:
        if b"\n" in line:
            raise ValueError("a record line may not contain a newline")
    header = BatchHeader(
        batch_id=batch_id or new_batch_id(), dept=dept, node=node, key_id=key.key_id, seq=seq,
        prev=prev, created=created or utc_now(), count=len(lines),
        root=MerkleTree.from_lines(lines).root().hex(), schemas=dict(schemas),
    )
    header_bytes = jsonutil.dumps(header.to_json())
    return Batch(header, header_bytes, key.sign(header_bytes), list(lines))


def parse_batch(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Batch:
    """Frame a batch and read its header; record lines are parsed one by one later.

    Raises ProtocolError for anything that makes the batch as a whole unusable.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(Reason.BAD_FRAMING, "a batch is bytes")
    data = bytes(data)
    if len(data) > limits.max_batch_bytes:
        raise ProtocolError(Reason.TOO_LARGE, f"{len(data)} bytes, limit {limits.max_batch_bytes}")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(Reason.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}") from None
    if not data.endswith(b"\n"):
        raise ProtocolError(Reason.BAD_FRAMING, "a batch ends with a line feed")
    if data.count(b"\n") > limits.max_records + 2:
        raise ProtocolError(Reason.TOO_MANY_RECORDS, f"more than {limits.max_records} records")
    lines = data[:-1].split(b"\n")
    if len(lines) < 2:
        raise ProtocolError(Reason.BAD_FRAMING, "a batch has a header line and a signature line")
    header_bytes, sig_bytes, records = lines[0], lines[1], lines[2:]
    for n, line in enumerate(lines, start=1):
        if len(line) > limits.max_line_bytes:
            raise ProtocolError(Reason.LINE_TOO_LONG, f"line {n}: {len(line)} bytes, limit {limits.max_line_bytes}")
        if not line:
            raise ProtocolError(Reason.BAD_FRAMING, f"line {n} is empty")
    header = BatchHeader.from_json(jsonutil.loads(header_bytes, max_depth=2, what="header"))
    signature = parse_signature_line(sig_bytes)
    if header.count != len(records):
        raise ProtocolError(Reason.COUNT_MISMATCH, f"header says {header.count} records, batch has {len(records)}")
    return Batch(header, header_bytes, signature, records)
