"""Detached signatures of the hub's compliance reports, checkable offline with the hub's public key.

A report file (HTML, PDF, XLSX, CSV or the JSON data section) travels with a small text file
beside it, `<file>.sig`:

    cx-report-signature/1
    file <SHA-256 of the report file, hex>
    data <SHA-256 of the report's data section, hex>
    format <json|html|pdf|xlsx|csv>
    lang <zh|en>
    period <from> <to>
    scope <all | dept,dept,…>
    generated <UTC time>
    hub <hub key id>
    sig <base64url Ed25519 signature over every line above, each ending in \\n>

The data hash binds the rendering to the data section it was made from: two renderings of the
same data (another language, another format) carry the same data hash.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .envelope import b64decode, b64encode
from .errors import ProtocolError, Reason
from .keys import PublicKey, SigningKey

SIGNATURE_FORMAT = "cx-report-signature/1"
FIELDS = ("file", "data", "format", "lang", "period", "scope", "generated", "hub")
HEX = re.compile(r"^[0-9a-f]{64}\Z")
MAX_SIGNATURE_FILE = 4096


@dataclass(frozen=True)
class ReportSignature:
    file_sha256: str
    data_sha256: str
    format: str
    lang: str
    period_from: str
    period_to: str
    scope: str
    generated: str
    key_id: str
    signature: str = ""  # base64url

    def signed_text(self) -> bytes:
        lines = [SIGNATURE_FORMAT, f"file {self.file_sha256}", f"data {self.data_sha256}", f"format {self.format}",
                 f"lang {self.lang}", f"period {self.period_from} {self.period_to}", f"scope {self.scope}",
                 f"generated {self.generated}", f"hub {self.key_id}"]
        return "".join(line + "\n" for line in lines).encode()

    @classmethod
    def sign(cls, key: SigningKey, file_bytes: bytes, data: bytes, *, format: str, lang: str, period_from: str,
             period_to: str, scope: str, generated: str) -> ReportSignature:
        draft = cls(sha256(file_bytes), sha256(data), format, lang, period_from, period_to, scope, generated,
                    key.key_id)
        for value in (format, lang, period_from, period_to, scope, generated):
            if not value or any(c.isspace() for c in value):
                raise ValueError(f"report signature field {value!r} may not be empty or contain spaces")
        return cls(**{**draft.__dict__, "signature": b64encode(key.sign(draft.signed_text()))})

    def to_bytes(self) -> bytes:
        return self.signed_text() + f"sig {self.signature}\n".encode()

    @classmethod
    def parse(cls, data: bytes) -> ReportSignature:
        if len(data) > MAX_SIGNATURE_FILE:
            raise ProtocolError(Reason.BAD_SIGNATURE, "not a report signature file (too large) 不是报告签名文件")
        try:
            lines = data.decode("ascii").split("\n")
        except UnicodeDecodeError:
            raise ProtocolError(Reason.BAD_SIGNATURE, "not a report signature file (not ASCII) 不是报告签名文件") from None
        if lines[-1] == "":
            lines.pop()
        if len(lines) != len(FIELDS) + 2 or lines[0] != SIGNATURE_FORMAT:
            raise ProtocolError(Reason.BAD_SIGNATURE, f"not a {SIGNATURE_FORMAT} file 不是报告签名文件")
        values = {}
        for name, line in zip((*FIELDS, "sig"), lines[1:]):
            key, _, value = line.partition(" ")
            if key != name or not value:
                raise ProtocolError(Reason.BAD_SIGNATURE, f"signature file: expected a '{name} …' line, "
                                                          f"found {line[:40]!r} 签名文件格式错误")
            values[name] = value
        period = values["period"].split(" ")
        if not HEX.match(values["file"]) or not HEX.match(values["data"]) or len(period) != 2:
            raise ProtocolError(Reason.BAD_SIGNATURE, "signature file: a hash or the period is malformed 签名文件格式错误")
        return cls(values["file"], values["data"], values["format"], values["lang"], period[0], period[1],
                   values["scope"], values["generated"], values["hub"], values["sig"])

    def verify(self, hub_key: PublicKey, file_bytes: bytes) -> None:
        """Raise unless the hub's key signed this statement and `file_bytes` is the file it names."""
        if self.key_id != hub_key.key_id:
            raise ProtocolError(Reason.KEY_ID_MISMATCH, f"signed by hub key {self.key_id}, not by {hub_key.key_id} "
                                                        "签名密钥不符")
        try:
            signature = b64decode(self.signature)
        except ValueError:
            raise ProtocolError(Reason.BAD_SIGNATURE, "the signature is not base64url 签名编码错误") from None
        if not hub_key.verify(signature, self.signed_text()):
            raise ProtocolError(Reason.BAD_SIGNATURE, "the signature does not verify: the signature file was altered "
                                                      "签名无效：签名文件被改动")
        if sha256(file_bytes) != self.file_sha256:
            raise ProtocolError(Reason.BAD_SIGNATURE, "the report file differs from the one the hub signed "
                                                      "报告文件与中心签名的文件不一致")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
