"""The one exception the protocol raises, and its machine-readable reason codes."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(str, enum.Enum):
    """Why a batch, record line, receipt, proof or key was refused.

    The value is the stable code that travels in receipts, quarantine records,
    metrics labels and `cx verify` output; the docs list each one.
    """

    # framing and size
    TOO_LARGE = "too_large"
    TOO_MANY_RECORDS = "too_many_records"
    LINE_TOO_LONG = "line_too_long"
    BAD_FRAMING = "bad_framing"
    COUNT_MISMATCH = "count_mismatch"
    # JSON
    NOT_UTF8 = "not_utf8"
    BAD_JSON = "bad_json"
    DUPLICATE_KEY = "duplicate_key"
    NON_FINITE_NUMBER = "non_finite_number"
    TOO_DEEP = "too_deep"
    # structure
    BAD_HEADER = "bad_header"
    BAD_RECORD = "bad_record"
    UNSUPPORTED_VERSION = "unsupported_version"
    # cryptography
    BAD_SIGNATURE = "bad_signature"
    MERKLE_ROOT_MISMATCH = "merkle_root_mismatch"
    KEY_ID_MISMATCH = "key_id_mismatch"
    BAD_KEY = "bad_key"
    KEY_FILE_INSECURE = "key_file_insecure"
    # proofs, receipts, checkpoints
    BAD_PROOF = "bad_proof"
    RECORD_MISMATCH = "record_mismatch"
    BAD_RECEIPT = "bad_receipt"
    BAD_CHECKPOINT = "bad_checkpoint"
    INCONSISTENT_CHECKPOINT = "inconsistent_checkpoint"
    # schemas
    UNKNOWN_SCHEMA = "unknown_schema"
    # attribution and sequence, checked by the hub against its registry and the broker
    UNKNOWN_DEPT = "unknown_dept"
    UNKNOWN_KEY = "unknown_key"
    KEY_REVOKED = "key_revoked"
    KEY_NOT_ACTIVE = "key_not_active"
    DEPT_MISMATCH = "dept_mismatch"
    USER_MISMATCH = "user_mismatch"
    SEQUENCE_REPLAY = "sequence_replay"
    CHAIN_BROKEN = "chain_broken"
    BATCH_ID_REUSED = "batch_id_reused"


class ProtocolError(Exception):
    """A protocol check failed. `reason` says which one; `detail` says where and what."""

    def __init__(self, reason: Reason, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


MAX_VALUE_CHARS = 80


def mask(value: str) -> str:
    """Hide personal data (ID numbers): keep the first and last two characters."""
    if len(value) <= 4:
        return "*" * len(value)
    return value[:2] + "*" * (len(value) - 4) + value[-2:]


def shown_value(value: object, personal: bool = False) -> object:
    """The offending value as a user may see it: truncated, masked when personal."""
    if value is None or isinstance(value, (bool, int, float)):
        return "***" if personal and value is not None else value
    text = value if isinstance(value, str) else repr(value)
    if personal:
        text = mask(text)
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + "…"
    return text


@dataclass(frozen=True)
class FieldError:
    """One reason a record was rejected, in the shape every user-facing report uses."""

    path: str  # field path inside the record's data, e.g. "penalty_types[0]"; "" for the whole record
    rule: str  # the schema keyword or rule name that failed, e.g. "required", "format:uscc"
    message_zh: str
    message_en: str
    value: object = None  # already truncated / masked

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "rule": self.rule, "message_zh": self.message_zh,
                "message_en": self.message_en, "value": self.value}

    @classmethod
    def from_protocol(cls, exc: ProtocolError) -> FieldError:
        """A record line that could not be read at all becomes a record-level error."""
        zh = LINE_MESSAGES_ZH.get(exc.reason, "记录行无法读取")
        return cls("", exc.reason.value, f"{zh}：{exc.detail}" if exc.detail else zh, exc.detail or exc.reason.value)


LINE_MESSAGES_ZH = {
    Reason.NOT_UTF8: "记录行不是有效的 UTF-8 编码",
    Reason.BAD_JSON: "记录行不是有效的 JSON",
    Reason.DUPLICATE_KEY: "记录行含有重复的字段名",
    Reason.NON_FINITE_NUMBER: "记录行含有 NaN 或 Infinity",
    Reason.TOO_DEEP: "记录行嵌套层级过深",
    Reason.LINE_TOO_LONG: "记录行过长",
    Reason.BAD_RECORD: "记录行结构不符合协议",
    Reason.UNKNOWN_SCHEMA: "未知的记录类型或数据规范版本",
}
