"""Credit checks for agencies (信用审查): many enterprises' class, labels and list memberships, signed by the hub.

An agency (a department account or an API token) submits credit codes with a purpose (procurement,
support policy, honour) and gets, as of now, what the credit projection holds for each: one JSON
document signed with the hub's key and carrying, per department, how far the projection had read
the ledger and the hub's signed checkpoint of it — so the agency can keep the file and show later
what the system said that day (`cx verify-credit-check FILE --public-key hub.pub`). The document is
served in its canonical form (compact, key-sorted UTF-8 JSON and one newline): any changed byte
breaks it. Invalid codes are answered per line with the reason. Each enterprise checked is an entry
in the access trail (who checked whom, for what purpose).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from ..protocol import jsonutil
from ..protocol.codes import uscc_problem
from ..protocol.envelope import b64decode, b64encode, utc_now
from ..protocol.errors import ProtocolError, mask
from ..protocol.keys import PublicKey, SigningKey
from ..protocol.receipts import Checkpoint
from ..protocol.validation import china_today
from . import credit
from .credit import Rules
from .ledger import checkpoint_from_row
from .store import (
    Store, checkpoints, credit_checks, in_chunks, list_entries, projection_positions, standing,
)

FORMAT = "cx-credit-check/1"
PURPOSES: dict[str, tuple[str, str]] = {
    "procurement": ("政府采购", "Government procurement"),
    "support": ("政策扶持", "Support policy"),
    "honour": ("荣誉授予", "Honour"),
}
SEPARATORS = re.compile(r"[\s,，;；、]+")
ID_NUMBER = re.compile(r"\d{15}|\d{17}[\dXx]")  # a resident ID number typed by mistake: never echoed whole
MAX_INPUT_CHARS = 2_000_000
PROBLEMS: dict[str, tuple[str, str]] = {
    "length": ("长度应为18位", "a credit code has 18 characters"),
    "charset": ("含有统一社会信用代码不用的字符（I、O、Z、S、V 及符号）",
                "has characters a credit code cannot have (I, O, Z, S, V, symbols)"),
    "region": ("第3至8位应为行政区划代码（数字）", "positions 3–8 must be a region code (digits)"),
    "check": ("校验码错误，不是有效的统一社会信用代码", "wrong check character: not a valid credit code"),
    "org_check": ("第9至17位的组织机构代码校验错误", "the organisation code in positions 9–17 fails its check"),
    "duplicate": ("与前面的行重复", "repeats an earlier line"),
}


class CheckError(ValueError):
    """A request that cannot be checked at all (no purpose, no codes, too many), in Chinese and English."""


class CheckInvalid(Exception):
    """A credit-check file that does not verify, and why."""


@dataclass(frozen=True)
class Parsed:
    codes: list[tuple[int, str]]  # (line, credit code), first occurrence only
    invalid: list[dict[str, Any]]


def parse_codes(text: str, most: int) -> Parsed:
    """Credit codes one or more per line (separated by spaces, commas or semicolons); invalid ones explained."""
    if len(text) > MAX_INPUT_CHARS:
        raise CheckError(f"输入过长（最多{MAX_INPUT_CHARS}个字符） the input is too long (at most {MAX_INPUT_CHARS} "
                         "characters)")
    codes: list[tuple[int, str]] = []
    invalid: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        for token in SEPARATORS.split(line.strip().lstrip("\ufeff")):
            if not token:
                continue
            code = token.upper()
            problem = uscc_problem(code)
            if problem is None and code in seen:
                problem = "duplicate"
            if problem is not None:
                zh, en = PROBLEMS[problem]
                invalid.append({"line": number, "value": shown(token), "reason": problem, "zh": zh, "en": en})
                continue
            seen[code] = number
            codes.append((number, code))
    if not codes and not invalid:
        raise CheckError("请填写统一社会信用代码 give at least one credit code")
    if len(codes) > most:
        raise CheckError(f"一次最多审查{most}个统一社会信用代码（本次{len(codes)}个） at most {most} credit codes in one "
                         f"check ({len(codes)} given)")
    return Parsed(codes, invalid)


def shown(token: str) -> str:
    """An invalid input as echoed back: at most 40 characters, an ID number masked."""
    text = token[:40] + ("…" if len(token) > 40 else "")
    return mask(text) if ID_NUMBER.fullmatch(token) else text


def check_purpose(purpose: str | None) -> str:
    if purpose not in PURPOSES:
        raise CheckError("请选择审查用途（政府采购、政策扶持或荣誉授予） choose the purpose: "
                         + ", ".join(PURPOSES))
    return purpose


def build(conn: Connection, rules: Rules, parsed: Parsed, purpose: str, actor: str, role: str,
          today: date | None = None) -> dict[str, Any]:
    """The unsigned document: per code its class, labels and current list memberships, and the ledger read."""
    today = today or china_today()
    usccs = [code for _line, code in parsed.codes]
    found = {r.uscc: r._mapping for r in in_chunks(conn, lambda c: select(standing).where(standing.c.uscc.in_(c)),
                                                   usccs)}
    lists: dict[str, list[dict[str, Any]]] = {}
    for r in in_chunks(conn, lambda c: select(list_entries).where(list_entries.c.uscc.in_(c),
                                                                  list_entries.c.ended.is_(None)), usccs):
        lists.setdefault(r.uscc, []).append(credit.entry_out(r))
    results = []
    for line, uscc in parsed.codes:
        row = found.get(uscc)
        klass = row["class"] if row is not None else rules.classes[0][0]
        results.append({
            "line": line, "uscc": uscc, "known": row is not None, "name": row["name"] if row is not None else None,
            "class": klass, "class_zh": rules.title("class", klass, "zh"), "class_en": rules.title("class", klass, "en"),
            "labels": [{**label, "zh": rules.title("label", label["id"], "zh"),
                        "en": rules.title("label", label["id"], "en")}
                       for label in (jsonutil.loads(row["labels"]) if row is not None else [])],
            "lists": [{"list_id": e["list_id"], "zh": rules.title("list", e["list_id"], "zh"),
                       "en": rules.title("list", e["list_id"], "en"), "entered": e["entered"], "basis": e["basis"],
                       "ends": e["ends"]}
                      for e in sorted(lists.get(uscc, []), key=lambda e: e["list_id"])],
        })
    classes: dict[str, int] = {}
    for r in results:
        classes[r["class"]] = classes.get(r["class"], 0) + 1
    return {
        "format": FORMAT, "check_id": str(uuid.uuid4()), "time": utc_now(), "date": today.isoformat(),
        "purpose": purpose, "purpose_zh": PURPOSES[purpose][0], "purpose_en": PURPOSES[purpose][1],
        "requested_by": {"actor": actor, "role": role},
        "rules": {"version": rules.version, "sha256": rules.sha256},
        "ledger": ledger_read(conn),
        "counts": {"checked": len(results), "known": sum(r["known"] for r in results), "invalid": len(parsed.invalid),
                   "classes": classes},
        "results": results, "invalid": parsed.invalid,
    }


def ledger_read(conn: Connection) -> dict[str, dict[str, Any]]:
    """Per department: ledger versions the credit tables reflect, and the hub's latest checkpoint within them."""
    applied = dict(conn.execute(select(projection_positions.c.dept, projection_positions.c.position)
                                .where(projection_positions.c.projection == credit.NAME)).all())
    out: dict[str, dict[str, Any]] = {}
    for dept, position in sorted(applied.items()):
        size = conn.execute(select(func.max(checkpoints.c.size))
                            .where(checkpoints.c.dept == dept, checkpoints.c.size <= position)).scalar()
        row = None if size is None else conn.execute(
            select(checkpoints).where(checkpoints.c.dept == dept, checkpoints.c.size == size)).first()
        out[dept] = {"applied": position,
                     "checkpoint": checkpoint_from_row(dict(row._mapping)).to_json() if row is not None else None}
    return out


# -- signing and verifying ----------------------------------------------------------------------

def sign(doc: Mapping[str, Any], key: SigningKey) -> bytes:
    """The document with the hub's signature over its canonical bytes, itself in canonical form."""
    signature = key.sign(jsonutil.dumps(doc))
    return jsonutil.dumps({**doc, "signature": {"alg": "Ed25519", "key_id": key.key_id,
                                                "sig": b64encode(signature)}}) + b"\n"


def verify(data: bytes, hub_key: PublicKey) -> dict[str, Any]:
    """The document if the file is exactly what the hub signed (and its checkpoints are the hub's), else CheckInvalid."""
    try:
        doc = jsonutil.loads(data, what="credit check")
    except ProtocolError as exc:
        raise CheckInvalid(f"not a credit-check document (not JSON: {exc.detail}) 不是信用审查结果文件") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("signature"), dict):
        raise CheckInvalid(f"not a credit-check document (format {FORMAT}) 不是信用审查结果文件")
    if jsonutil.dumps(doc) + b"\n" != data:
        raise CheckInvalid("the file is not byte for byte as the hub signed it (changed or reformatted) "
                           "文件内容与签名时不一致（被修改或重新排版）")
    signature = doc.pop("signature")
    if signature.get("key_id") != hub_key.key_id:
        raise CheckInvalid(f"signed with key {signature.get('key_id')!r}, not the given hub key {hub_key.key_id} "
                           "签名密钥不符")
    try:
        raw = b64decode(str(signature.get("sig", "")))
    except (ValueError, ProtocolError):
        raw = b""
    if not hub_key.verify(raw, jsonutil.dumps(doc)):
        raise CheckInvalid("the hub's signature does not match the content 签名验证失败：内容已被改动")
    for dept, read in (doc.get("ledger") or {}).items():
        if read.get("checkpoint") is None:
            continue
        try:
            Checkpoint.from_json(read["checkpoint"]).verify(hub_key)
        except ProtocolError as exc:
            raise CheckInvalid(f"the checkpoint of {dept} does not verify: {exc.detail} 检查点验证失败") from None
    doc["signature"] = signature
    return doc


# -- keeping and rendering ------------------------------------------------------------------------

def run(store: Store, rules: Rules, key: SigningKey, parsed: Parsed, purpose: str, actor: str,
        role: str) -> tuple[dict[str, Any], bytes]:
    """Build, sign and keep one check; returns the document and its signed bytes."""
    with store.reader.connect() as conn:
        doc = build(conn, rules, parsed, purpose, actor, role)
    signed = sign(doc, key)
    with store.writer.begin() as conn:
        conn.execute(credit_checks.insert().values(check_id=doc["check_id"], time=doc["time"], actor=actor[:80],
                                                   role=role[:48], purpose=purpose, checked=len(doc["results"]),
                                                   document=signed))
    return doc, signed


def kept(store: Store, check_id: str) -> tuple[dict[str, Any], bytes] | None:
    """A kept check: (row without the document, the signed bytes)."""
    with store.reader.connect() as conn:
        row = conn.execute(select(credit_checks).where(credit_checks.c.check_id == check_id)).first()
    if row is None:
        return None
    out = dict(row._mapping)
    return out, bytes(out.pop("document"))


def xlsx(doc: Mapping[str, Any], signed: bytes, lang: str) -> bytes:
    """The check as a workbook: one row per enterprise, the invalid lines, and which signed JSON it shows."""
    from .reports import xlsx_bytes

    en = lang == "en"
    pick = "en" if en else "zh"
    results = []
    for r in doc["results"]:
        records = sorted({f"{d}/{rid}" for x in r["labels"] for d, rid in x["records"]}
                         | {f"{d}/{rid}" for x in r["lists"] for d, rid in x["basis"]})
        results.append([r["line"], r["uscc"], r["name"] or ("(no records)" if en else "（无记录）"), r[f"class_{pick}"],
                        "; ".join(f"{x[pick]} ({x['since'] or '-'})" for x in r["labels"]),
                        "; ".join(f"{x[pick]} ({x['entered']})" for x in r["lists"]), " ".join(records)])
    about = [
        ["Check" if en else "审查编号", doc["check_id"]],
        ["Time (UTC)" if en else "时间（UTC）", doc["time"]],
        ["Purpose" if en else "用途", doc[f"purpose_{pick}"]],
        ["Requested by" if en else "审查人", f"{doc['requested_by']['actor']} ({doc['requested_by']['role']})"],
        ["Rules" if en else "规则版本", doc["rules"]["version"]],
        ["Signed JSON SHA-256" if en else "签名JSON文件 SHA-256", hashlib.sha256(signed).hexdigest()],
        ["How to verify" if en else "验证方法",
         ("The signed JSON file is authoritative: " if en else "以签名的JSON文件为准：")
         + "cx verify-credit-check credit-check.json --public-key hub.pub"],
    ]
    text = ("text", "text")
    sections = [
        ("Results" if en else "审查结果",
         list(zip(["Line", "Credit code", "Name", "Class", "Labels", "Lists", "Records"] if en
                  else ["行", "统一社会信用代码", "名称", "分类", "标签", "名单", "依据记录"],
                  ["int", "text", "text", "text", "text", "text", "text"])), results),
        ("Invalid codes" if en else "无效代码",
         list(zip(["Line", "Value", "Reason"] if en else ["行", "输入", "原因"], ["int", "text", "text"])),
         [[x["line"], x["value"], x[pick]] for x in doc["invalid"]]),
        ("About" if en else "说明", list(zip(["", ""], text)), about),
    ]
    return xlsx_bytes(sections)


def trail_entries(doc: Mapping[str, Any]) -> Sequence[tuple[str, str]]:
    """(target, detail) of the trail entry for each enterprise checked: who checked whom, for what."""
    detail = f"purpose={doc['purpose']} check={doc['check_id']}"
    return [(f"credit-check {r['uscc']}", detail) for r in doc["results"]]
