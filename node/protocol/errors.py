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
    BAD_CHARACTER = "bad_character"  # U+0000 or a lone surrogate, which no store can keep
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
    # the hub itself: an exception nobody foresaw, caught for the one message that raised it
    INTERNAL_ERROR = "internal_error"


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
    Reason.BAD_CHARACTER: "记录行含有 U+0000 字符或孤立的代理码位（如 \\ud800），无法保存",
    Reason.LINE_TOO_LONG: "记录行过长",
    Reason.BAD_RECORD: "记录行结构不符合协议",
    Reason.UNKNOWN_SCHEMA: "未知的记录类型或数据规范版本",
}


# What each reason means, in Chinese, for the people who read quarantine rows and refusals
REASON_ZH = {
    Reason.TOO_LARGE: "消息过大",
    Reason.TOO_MANY_RECORDS: "批次记录数超过上限",
    Reason.LINE_TOO_LONG: "某一行超过长度上限",
    Reason.BAD_FRAMING: "批次分行格式不正确",
    Reason.COUNT_MISMATCH: "批次头声明的记录数与实际行数不符",
    Reason.NOT_UTF8: "不是有效的 UTF-8 编码",
    Reason.BAD_JSON: "不是有效的 JSON",
    Reason.DUPLICATE_KEY: "JSON 对象含有重复的字段名",
    Reason.NON_FINITE_NUMBER: "含有 NaN、Infinity 或超出范围的数字",
    Reason.TOO_DEEP: "JSON 嵌套层级过深",
    Reason.BAD_CHARACTER: "含有 U+0000 字符或孤立的代理码位，无法保存",
    Reason.BAD_HEADER: "批次头（或心跳）字段缺失、多余或取值无效",
    Reason.BAD_RECORD: "记录行结构不符合协议",
    Reason.UNSUPPORTED_VERSION: "不支持的格式版本",
    Reason.BAD_SIGNATURE: "签名无效",
    Reason.MERKLE_ROOT_MISMATCH: "记录行与签名的默克尔根不符",
    Reason.KEY_ID_MISMATCH: "密钥标识与所用密钥不符",
    Reason.BAD_KEY: "密钥无效",
    Reason.KEY_FILE_INSECURE: "私钥文件权限过宽",
    Reason.BAD_PROOF: "证明无效",
    Reason.RECORD_MISMATCH: "记录与签名批次中的记录不符",
    Reason.BAD_RECEIPT: "回执字段缺失或无效",
    Reason.BAD_CHECKPOINT: "检查点字段缺失或无效",
    Reason.INCONSISTENT_CHECKPOINT: "检查点与此前见过的账本不一致",
    Reason.UNKNOWN_SCHEMA: "未知的记录类型或数据规范版本",
    Reason.UNKNOWN_DEPT: "部门未在交换中心登记",
    Reason.UNKNOWN_KEY: "签名密钥未为该部门登记（如已更换密钥，请联系交换中心登记新公钥）",
    Reason.KEY_REVOKED: "签名密钥在批次创建时已被吊销",
    Reason.KEY_NOT_ACTIVE: "批次创建时签名密钥不在有效期内",
    Reason.DEPT_MISMATCH: "路由键中的部门与批次头中的部门不一致",
    Reason.USER_MISMATCH: "消息代理用户与批次头中的部门不一致",
    Reason.SEQUENCE_REPLAY: "序号已被另一个批次使用",
    Reason.CHAIN_BROKEN: "批次未链接到该前置机的上一个批次",
    Reason.BATCH_ID_REUSED: "批次标识已被另一个批次使用",
    Reason.INTERNAL_ERROR: "交换中心处理该消息时发生内部错误，已隔离，请联系交换中心",
}


def explain(error: ProtocolError) -> tuple[str, str]:
    """(Chinese, English) text for a refused batch or a quarantined message: the reason, then the specifics."""
    zh = REASON_ZH.get(error.reason, error.reason.value)
    detail = error.detail or error.reason.value
    return f"{zh}（{detail}）" if error.detail else zh, detail
