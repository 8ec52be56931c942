"""Signed batches, record lines, limits, batch ids and key files."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cx.protocol import envelope, jsonutil
from cx.protocol.envelope import (
    Batch, BatchHeader, Limits, RecordLine, b64decode, b64encode, build_batch, content_hash, encode_batch,
    new_batch_id, parse_batch, parse_record_line, parse_signature_line, signature_line,
)
from cx.protocol.errors import ProtocolError, Reason
from cx.protocol.keys import PublicKey, SigningKey, generate_key_files, key_id
from cx.protocol.merkle import MerkleTree, leaf_hash
from examples import example, record_line, signed_batch


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey.generate()


def reason_of(data: bytes, public: PublicKey, limits: Limits = envelope.DEFAULT_LIMITS) -> str | None:
    """What a receiver does with bytes: frame, verify, read every record line. None = accepted."""
    try:
        batch = parse_batch(data, limits)
        batch.verify(public)
        for line in batch.lines:
            parse_record_line(line, limits)
    except ProtocolError as exc:
        return exc.reason.value
    return None


def raises(reason: Reason, fn, *args, **kwargs) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        fn(*args, **kwargs)
    assert info.value.reason == reason, info.value
    return info.value


def resign(key: SigningKey, header: dict, lines: list[bytes]) -> bytes:
    """A batch whose header says whatever `header` says, correctly signed."""
    header_bytes = jsonutil.dumps(header)
    return encode_batch(header_bytes, key.sign(header_bytes), lines)


# -- round trip ----------------------------------------------------------------------------

def test_build_parse_verify_round_trip(key):
    types = ("administrative_penalty", "other", "honor", "self_disclosure")
    batch = signed_batch(key, types, seq=7, prev="ab" * 32)
    data = batch.to_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == len(types) + 2
    parsed = parse_batch(data)
    assert parsed.header == batch.header
    assert parsed.header_bytes == batch.header_bytes == data.split(b"\n")[0]
    assert parsed.signature == batch.signature and len(parsed.signature) == 64
    assert list(parsed.lines) == list(batch.lines)
    tree = parsed.verify(key.public)
    assert tree.root().hex() == parsed.header.root
    assert tree.size == len(types)
    assert parsed.header_hash == hashlib.sha256(parsed.header_bytes).hexdigest()
    h = parsed.header
    assert (h.dept, h.node, h.seq, h.prev, h.count, h.key_id, h.version) == (
        "amr", "amr-node-1", 7, "ab" * 32, 4, key.key_id, 1)
    assert dict(h.schemas) == {t: 1 for t in types}
    for line, t in zip(parsed.lines, types):
        record = parse_record_line(line)
        assert record.type == t and record.op == "upsert" and record.data == example(t)
        assert record.to_bytes() == line  # nodes write the one compact form
    assert parsed.to_bytes() == data


def test_header_root_is_rfc6962_root_of_the_exact_line_bytes(key):
    batch = signed_batch(key, ("other", "honor", "judicial"))
    leaves = [hashlib.sha256(b"\x00" + line).digest() for line in batch.lines]
    left = hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).digest()
    assert batch.header.root == hashlib.sha256(b"\x01" + left + leaves[2]).digest().hex()


def test_signature_covers_the_exact_header_bytes(key):
    batch = signed_batch(key)
    key.public.key.verify(batch.signature, batch.header_bytes)  # raises if not
    assert signature_line(batch.signature) == b'{"sig":"' + b64encode(batch.signature).encode() + b'"}'


def test_empty_batch(key):
    batch = build_batch(key, dept="amr", node="n1", seq=1, prev=None, lines=[], schemas={})
    parsed = parse_batch(batch.to_bytes())
    assert parsed.header.count == 0 and list(parsed.lines) == []
    assert parsed.header.root == hashlib.sha256(b"").hexdigest()
    parsed.verify(key.public)


def test_verify_with_another_key(key, other_key):
    raises(Reason.KEY_ID_MISMATCH, parse_batch(signed_batch(key).to_bytes()).verify, other_key.public)


def test_signature_by_another_key_under_this_key_id(key, other_key):
    batch = signed_batch(key)
    forged = encode_batch(batch.header_bytes, other_key.sign(batch.header_bytes), batch.lines)
    raises(Reason.BAD_SIGNATURE, parse_batch(forged).verify, key.public)


def test_build_refuses_a_line_with_a_newline(key):
    with pytest.raises(ValueError):
        build_batch(key, dept="amr", node="n1", seq=1, prev=None, lines=[b'{"a":\n1}'], schemas={})


# -- every single byte changed -----------------------------------------------------------------

REPLACEMENTS = {
    "xor01": lambda c: c ^ 0x01,
    "xor80": lambda c: c ^ 0x80,
    "lf": lambda c: 0x0A,
    "quote": lambda c: 0x22,
    "brace": lambda c: 0x7B,
    "space": lambda c: 0x20,
    "nul": lambda c: 0x00,
    "ff": lambda c: 0xFF,
}
# non_finite_number: a quote turned into a space before a hex value like "4e2072…" leaves the number 4e2072…,
# too large for a float (the key id is random, so this happens only for some keys)
HEADER_REASONS = {"bad_json", "bad_header", "bad_signature", "key_id_mismatch", "unsupported_version",
                  "count_mismatch", "duplicate_key", "non_finite_number"}
SIGNATURE_REASONS = {"bad_signature", "bad_framing", "bad_json"}


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def expected_reasons(batch_bytes: bytes, header_len: int, sig_end: int, pos: int, new: int) -> set[str]:
    """Which check must catch byte `pos` of the batch becoming `new`."""
    changed = batch_bytes[:pos] + bytes([new]) + batch_bytes[pos + 1:]
    if not is_utf8(changed):
        return {"not_utf8"}
    old = batch_bytes[pos]
    line_start = batch_bytes.rfind(b"\n", 0, pos) + 1
    line_end = batch_bytes.find(b"\n", pos)
    at_edge = pos in (line_start, line_end - 1)  # a new LF here leaves an empty line
    if old == 0x0A:  # a line separator
        if pos == len(batch_bytes) - 1:
            return {"bad_framing"}  # no final LF
        if pos in (header_len, sig_end):
            return {"bad_json"}  # header or signature line swallows the next line
        return {"count_mismatch"}  # two record lines become one
    if pos < header_len:
        if new == 0x0A:
            return {"bad_framing"} if at_edge else {"bad_json"}
        if new in (0x22, 0x00):
            return {"bad_json"}
        return HEADER_REASONS
    if pos < sig_end:
        if new == 0x0A:
            return {"bad_framing"} if at_edge else {"bad_json"}
        if new in (0x22, 0x00):
            return {"bad_json"}
        return SIGNATURE_REASONS
    if new == 0x0A:
        return {"bad_framing"} if at_edge else {"count_mismatch"}
    return {"merkle_root_mismatch"}


def test_every_single_byte_change_is_detected_with_its_reason(key):
    lines = [record_line("other", 1), record_line("honor", 2), record_line("other", 3, op="retract")]
    batch = build_batch(key, dept="amr", node="n1", seq=3, prev="cd" * 32, lines=lines,
                        schemas={"other": 1, "honor": 1})
    data = batch.to_bytes()
    assert reason_of(data, key.public) is None
    header_len = len(batch.header_bytes)
    sig_end = data.index(b"\n", header_len + 1)
    seen: dict[str, set[str]] = {}
    for pos in range(len(data)):
        for name, replace in REPLACEMENTS.items():
            new = replace(data[pos])
            if new == data[pos]:
                continue
            changed = data[:pos] + bytes([new]) + data[pos + 1:]
            got = reason_of(changed, key.public)
            want = expected_reasons(data, header_len, sig_end, pos, new)
            assert got in want, (pos, name, data[max(0, pos - 10):pos + 10], got, want)
            region = "header" if pos < header_len else "sig" if pos <= sig_end else "records"
            seen.setdefault(region, set()).add(got)
    # the regions really exercised the checks named in the brief
    assert {"bad_signature", "bad_header", "bad_json", "key_id_mismatch"} <= seen["header"]
    assert {"bad_signature", "bad_json", "bad_framing"} <= seen["sig"]
    assert {"merkle_root_mismatch", "not_utf8", "count_mismatch", "bad_framing"} <= seen["records"]


def test_header_fields_changed_in_place(key):
    batch = signed_batch(key)
    data = batch.to_bytes()
    header = batch.header_bytes.decode()

    def with_header(new_header: str) -> bytes:
        assert new_header != header
        return data.replace(batch.header_bytes, new_header.encode(), 1)

    assert reason_of(with_header(header.replace('"count":3', '"count":2')), key.public) == "count_mismatch"
    assert reason_of(with_header(header.replace('"v":1', '"v":2')), key.public) == "unsupported_version"
    assert reason_of(with_header(header.replace('"seq":1', '"seq":2')), key.public) == "bad_header"  # prev null
    assert reason_of(with_header(header.replace("2025-03-31", "2025-03-30")), key.public) == "bad_signature"
    assert reason_of(with_header(header.replace('"dept":"amr"', '"dept":"tax"')), key.public) == "bad_signature"
    assert reason_of(with_header(header.replace(key.key_id, "0" * 32)), key.public) == "key_id_mismatch"
    assert reason_of(with_header(header.replace('"node"', '"nodE"')), key.public) == "bad_header"
    assert reason_of(with_header(header.replace('"v":1}', '"v":1,"v":1}')), key.public) == "duplicate_key"
    assert reason_of(with_header(header.replace(",", ", ")), key.public) == "bad_signature"


def test_record_lines_swapped_or_dropped(key):
    batch = signed_batch(key)
    header_line, sig_line, *records = batch.to_bytes().split(b"\n")[:-1]

    def join(lines):
        return b"\n".join(lines) + b"\n"

    assert reason_of(join([header_line, sig_line, records[1], records[0], records[2]]), key.public) \
        == "merkle_root_mismatch"
    assert reason_of(join([header_line, sig_line, *records[:2]]), key.public) == "count_mismatch"
    assert reason_of(join([header_line, sig_line, records[0], records[0], records[2]]), key.public) \
        == "merkle_root_mismatch"
    assert reason_of(join([sig_line, header_line, *records]), key.public) in {"bad_header", "unsupported_version"}


@pytest.mark.parametrize("sig_text", [
    lambda s: b'{"sig": "' + s + b'"}',
    lambda s: b' {"sig":"' + s + b'"}',
    lambda s: b'{"sig":"' + s + b'"} ',
    lambda s: b'{"sig":"' + s + b'"}\r',
    lambda s: b'{"sig":"' + s[:-1] + b'\\u00' + s[-1:].hex().encode() + b'"}',
    lambda s: b'{"sig":"' + s + b'=="}',
])
def test_signature_line_has_one_form(key, sig_text):
    """The signature line is not itself signed: a second spelling would make a second batch."""
    batch = signed_batch(key)
    data = batch.to_bytes()
    b64 = b64encode(batch.signature).encode()
    changed = data.replace(signature_line(batch.signature), sig_text(b64), 1)
    assert changed != data
    assert reason_of(changed, key.public) in {"bad_framing", "bad_signature"}


def test_signature_base64_must_be_canonical(key):
    batch = signed_batch(key)
    text = b64encode(batch.signature)
    assert len(text) == 86  # 512 bits: the last character carries 2 bits and 4 unused ones
    same_bits = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                 if c != text[-1] and "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(c) >> 4
                 == "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(text[-1]) >> 4]
    assert len(same_bits) == 15
    for c in same_bits:
        with pytest.raises(ValueError):
            b64decode(text[:-1] + c)
        line = signature_line(batch.signature).replace(text.encode(), (text[:-1] + c).encode())
        raises(Reason.BAD_SIGNATURE, parse_signature_line, line)
    assert b64decode(text) == batch.signature


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"sig":"AAAA"}', Reason.BAD_SIGNATURE),
    (b'{"sig":"not base64!"}', Reason.BAD_SIGNATURE),
    (b'{"sig":5}', Reason.BAD_SIGNATURE),
    (b'{"sig":"' + b"A" * 87 + b'"}', Reason.BAD_SIGNATURE),
    (b'{"signature":"AAAA"}', Reason.BAD_FRAMING),
    (b'{"sig":"AAAA","x":1}', Reason.BAD_FRAMING),
    (b'["AAAA"]', Reason.BAD_FRAMING),
    (b'{"sig":{"a":1}}', Reason.TOO_DEEP),
    (b'{"sig"', Reason.BAD_JSON),
])
def test_bad_signature_lines(line, reason):
    raises(reason, parse_signature_line, line)


# -- framing and limits --------------------------------------------------------------------

def test_limits_too_large(key):
    data = signed_batch(key).to_bytes()
    assert reason_of(data, key.public, Limits(max_batch_bytes=len(data))) is None
    raises(Reason.TOO_LARGE, parse_batch, data, Limits(max_batch_bytes=len(data) - 1))


def test_limits_too_many_records(key):
    data = signed_batch(key).to_bytes()  # 3 records
    assert reason_of(data, key.public, Limits(max_records=3)) is None
    raises(Reason.TOO_MANY_RECORDS, parse_batch, data, Limits(max_records=2))


def test_limits_line_too_long(key):
    batch = signed_batch(key)
    longest = max(len(line) for line in [batch.header_bytes, *batch.lines])
    data = batch.to_bytes()
    assert reason_of(data, key.public, Limits(max_line_bytes=longest)) is None
    raises(Reason.LINE_TOO_LONG, parse_batch, data, Limits(max_line_bytes=longest - 1))
    line = batch.lines[0]
    raises(Reason.LINE_TOO_LONG, parse_record_line, line, Limits(max_line_bytes=len(line) - 1))
    assert parse_record_line(line, Limits(max_line_bytes=len(line))).type == "administrative_penalty"


def test_default_limits_are_the_documented_ones():
    limits = envelope.DEFAULT_LIMITS
    assert (limits.max_batch_bytes, limits.max_records, limits.max_line_bytes, limits.max_depth) == (
        32 * 1024 * 1024, 20_000, 256 * 1024, 16)


def nested_line(depth: int) -> bytes:
    data = "[" * (depth - 2) + "1" + "]" * (depth - 2)  # the line and data objects are two levels
    return (b'{"data":{"x":' + data.encode() + b'},"op":"upsert","record_id":"r","schema_version":1,'
            b'"source":{},"type":"other"}')


def test_nesting_too_deep():
    assert parse_record_line(nested_line(16)).data["x"] is not None
    raises(Reason.TOO_DEEP, parse_record_line, nested_line(17))
    raises(Reason.TOO_DEEP, parse_record_line, nested_line(5000))
    raises(Reason.TOO_DEEP, parse_record_line, nested_line(8), Limits(max_depth=7))
    assert parse_record_line(nested_line(8), Limits(max_depth=8)).op == "upsert"


def test_deep_nesting_inside_strings_is_fine():
    line = (b'{"data":{"x":"' + b"[" * 100 + b'"},"op":"upsert","record_id":"r","schema_version":1,'
            b'"source":{},"type":"other"}')
    assert parse_record_line(line).data["x"] == "[" * 100


def test_header_nesting_too_deep(key):
    batch = signed_batch(key)
    header = json.loads(batch.header_bytes)
    header["schemas"] = {"other": [[1]]}
    raises(Reason.TOO_DEEP, parse_batch, resign(key, header, list(batch.lines)))


GOOD_LINE = json.loads(record_line("other"))


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"op":"retract","op":"retract","reason":"x","record_id":"r","schema_version":1,"source":{},"type":"other"}',
     Reason.DUPLICATE_KEY),
    (b'{"data":{"a":1,"a":2},"op":"upsert","record_id":"r","schema_version":1,"source":{},"type":"other"}',
     Reason.DUPLICATE_KEY),
    (b'{"data":{"a":NaN},"op":"upsert","record_id":"r","schema_version":1,"source":{},"type":"other"}',
     Reason.NON_FINITE_NUMBER),
    (b'{"data":{"a":Infinity},"op":"upsert","record_id":"r","schema_version":1,"source":{},"type":"other"}',
     Reason.NON_FINITE_NUMBER),
    (b'{"data":{"a":-Infinity},"op":"upsert","record_id":"r","schema_version":1,"source":{},"type":"other"}',
     Reason.NON_FINITE_NUMBER),
    (b'{"data":{"a":1e400},"op":"upsert","record_id":"r","schema_version":1,"source":{},"type":"other"}',
     Reason.NON_FINITE_NUMBER),
    (b'{"data":{"a":-1e999},"op":"upsert","record_id":"r","schema_version":1,"source":{},"type":"other"}',
     Reason.NON_FINITE_NUMBER),
    (b'{"data":{"a":' + b"9" * 5000 + b'},"op":"upsert","record_id":"r","schema_version":1,"source":{},'
     b'"type":"other"}', Reason.BAD_JSON),
    (b'{"data":{"a":"\xff"},"op":"upsert","record_id":"r","schema_version":1,"source":{},"type":"other"}',
     Reason.NOT_UTF8),
    (b'{"data":{"a":"\xed\xa0\x80"},"op":"upsert","record_id":"r","schema_version":1,"source":{},"type":"other"}',
     Reason.NOT_UTF8),
    (b"\xef\xbb\xbf" + record_line("other"), Reason.BAD_JSON),
    (b"", Reason.BAD_JSON),
    (b"{", Reason.BAD_JSON),
    (b"[]", Reason.BAD_RECORD),
    (b"null", Reason.BAD_RECORD),
    (record_line("other") + b"x", Reason.BAD_JSON),
])
def test_bad_record_line_bytes(line, reason):
    raises(reason, parse_record_line, line)


def test_huge_and_small_numbers_that_are_finite_still_parse():
    line = (b'{"data":{"a":1e308,"b":1e-400,"c":' + b"9" * 300 + b'},"op":"upsert","record_id":"r",'
            b'"schema_version":1,"source":{},"type":"other"}')
    assert parse_record_line(line).data["b"] == 0.0


def test_non_utf8_batch(key):
    data = signed_batch(key).to_bytes()
    pos = next(i for i, c in enumerate(data) if c >= 0x80)
    raises(Reason.NOT_UTF8, parse_batch, data[:pos] + b"\xff" + data[pos + 1:])
    raises(Reason.NOT_UTF8, parse_batch, data[:-1] + b"\x80\n")


@pytest.mark.parametrize("data", [b"", b"\n", b"{}\n", b"{}", b"{}\n\n", b"\n\n\n"])
def test_bad_framing(data):
    raises(Reason.BAD_FRAMING, parse_batch, data)


def test_framing_needs_final_lf_and_no_empty_lines(key):
    data = signed_batch(key).to_bytes()
    raises(Reason.BAD_FRAMING, parse_batch, data[:-1])
    raises(Reason.BAD_FRAMING, parse_batch, data + b"\n")
    lines = data.split(b"\n")
    raises(Reason.BAD_FRAMING, parse_batch, b"\n".join([lines[0], lines[1], b"", *lines[2:]]))
    raises(Reason.BAD_FRAMING, parse_batch, "not bytes")  # type: ignore[arg-type]


def test_crlf_line_endings_are_refused(key):
    data = signed_batch(key).to_bytes()
    assert reason_of(data.replace(b"\n", b"\r\n"), key.public) in {"bad_framing", "bad_signature"}


def test_wrong_count(key):
    batch = signed_batch(key)
    header = json.loads(batch.header_bytes)
    for count in (0, 2, 4, 10**6):
        header["count"] = count
        raises(Reason.COUNT_MISMATCH, parse_batch, resign(key, header, list(batch.lines)))


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("v", 2, Reason.UNSUPPORTED_VERSION),
    ("v", "1", Reason.UNSUPPORTED_VERSION),
    ("batch_id", "not-a-uuid", Reason.BAD_HEADER),
    ("batch_id", "0192F0D0-0000-7000-8000-000000000000", Reason.BAD_HEADER),  # not the canonical form
    ("dept", "AMR", Reason.BAD_HEADER),
    ("dept", "amr\n", Reason.BAD_HEADER),
    ("dept", "", Reason.BAD_HEADER),
    ("node", "-n", Reason.BAD_HEADER),
    ("node", "n1\n", Reason.BAD_HEADER),
    ("key_id", "ABC", Reason.BAD_HEADER),
    ("seq", 0, Reason.BAD_HEADER),
    ("seq", True, Reason.BAD_HEADER),
    ("seq", 2**53, Reason.BAD_HEADER),
    ("seq", 1.0, Reason.BAD_HEADER),
    ("prev", "ab" * 32, Reason.BAD_HEADER),  # seq 1 has no previous batch
    ("created", "2025-03-31 02:00:00Z", Reason.BAD_HEADER),
    ("created", "2025-03-31T02:00:00.000+08:00", Reason.BAD_HEADER),
    ("created", "\u0662\u0660\u0662\u0665-03-31T02:00:00.000Z", Reason.BAD_HEADER),
    ("created", "2025-03-31T02:00:00.000Z\n", Reason.BAD_HEADER),
    ("count", -1, Reason.BAD_HEADER),
    ("root", "AB" * 32, Reason.BAD_HEADER),
    ("root", "ab" * 32 + "\n", Reason.BAD_HEADER),
    ("schemas", {"Other": 1}, Reason.BAD_HEADER),
    ("schemas", {"other": 0}, Reason.BAD_HEADER),
    ("schemas", {"other": True}, Reason.BAD_HEADER),
    ("schemas", ["other"], Reason.BAD_HEADER),
])
def test_bad_header_fields(key, field, value, reason):
    batch = signed_batch(key)
    header = json.loads(batch.header_bytes)
    header[field] = value
    raises(reason, parse_batch, resign(key, header, list(batch.lines)))


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_header_field_set_is_fixed(key, change):
    batch = signed_batch(key)
    header = json.loads(batch.header_bytes)
    if change == "missing":
        del header["created"]
    else:
        header["comment"] = "x"
    raises(Reason.BAD_HEADER, parse_batch, resign(key, header, list(batch.lines)))


def test_header_must_be_an_object(key):
    raises(Reason.BAD_HEADER, BatchHeader.from_json, [1])


def test_header_chain_fields(key):
    first = signed_batch(key, seq=1)
    second = signed_batch(key, seq=2, prev=first.header_hash)
    parsed = parse_batch(second.to_bytes())
    parsed.verify(key.public)
    assert parsed.header.prev == hashlib.sha256(first.header_bytes).hexdigest()


# -- record lines --------------------------------------------------------------------------

def test_upsert_and_retract_field_sets():
    upsert = json.loads(record_line("other"))
    retract = json.loads(record_line("other", op="retract"))
    assert set(upsert) == {"record_id", "type", "schema_version", "op", "source", "data"}
    assert set(retract) == {"record_id", "type", "schema_version", "op", "source", "reason"}
    r = parse_record_line(record_line("other", op="retract"))
    assert (r.op, r.data, r.reason) == ("retract", None, "录入错误，撤销")
    u = parse_record_line(record_line("other"))
    assert (u.op, u.reason) == ("upsert", None) and u.data == example("other")


def line_with(**changes) -> bytes:
    obj = dict(GOOD_LINE)
    for k, v in changes.items():
        if v is ...:
            obj.pop(k, None)
        else:
            obj[k] = v
    return json.dumps(obj, ensure_ascii=False).encode()


@pytest.mark.parametrize("changes", [
    {"op": "delete"},
    {"op": None},
    {"op": ...},
    {"op": "UPSERT"},
    {"reason": "x"},  # an upsert carries no reason
    {"data": ...},
    {"data": "text"},
    {"data": None},
    {"record_id": ""},
    {"record_id": "a" * 201},
    {"record_id": "a\nb"},
    {"record_id": 5},
    {"type": "Other"},
    {"type": "other\n"},
    {"type": ""},
    {"schema_version": 0},
    {"schema_version": 1000},
    {"schema_version": "1"},
    {"schema_version": True},
    {"source": {"adapter": 1}},
    {"source": "csv"},
    {"source": ...},
    {"extra": 1},
])
def test_bad_upsert_lines(changes):
    raises(Reason.BAD_RECORD, parse_record_line, line_with(**changes))


@pytest.mark.parametrize("changes", [
    {"reason": ...},
    {"reason": ""},
    {"reason": "   "},
    {"reason": None},
    {"reason": 1},
    {"data": {}},  # a retraction carries no data
])
def test_bad_retract_lines(changes):
    obj = json.loads(record_line("other", op="retract"))
    for k, v in changes.items():
        if v is ...:
            obj.pop(k)
        else:
            obj[k] = v
    raises(Reason.BAD_RECORD, parse_record_line, json.dumps(obj).encode())


def test_record_id_limits_accept():
    assert parse_record_line(line_with(record_id="a" * 200)).record_id == "a" * 200
    assert parse_record_line(line_with(record_id="罚-1")).record_id == "罚-1"
    assert parse_record_line(line_with(source={"adapter": "csv", "entered_by": None})).source["entered_by"] is None


def test_content_hash_is_the_version_of_the_content():
    a = parse_record_line(record_line("other", 1))
    b = parse_record_line(record_line("other", 2))  # another record id and locator, same content
    assert content_hash(a) == content_hash(b)
    changed = RecordLine(a.record_id, a.type, 1, "upsert", {**a.data, "content": "改"}, a.source)
    assert content_hash(changed) != content_hash(a)
    retract = parse_record_line(record_line("other", 1, op="retract"))
    assert content_hash(retract) != content_hash(a)
    assert len(content_hash(a)) == 64


def test_lone_surrogates_and_nul_are_refused_while_parsing():
    """No store can keep them (PostgreSQL text refuses U+0000, UTF-8 has no lone surrogates): the parser decides."""
    for escaped in (b"\\ud800", b"x\\udfffy", b"\\u0000", b"a\\ude00\\ud83d"):
        line = (b'{"data":{"content":"' + escaped + b'"},"op":"upsert","record_id":"r","schema_version":1,'
                b'"source":{},"type":"other"}')
        raises(Reason.BAD_CHARACTER, parse_record_line, line)
    key_line = b'{"data":{"\\u0000":1},"op":"upsert","record_id":"r","schema_version":1,"source":{},"type":"other"}'
    raises(Reason.BAD_CHARACTER, parse_record_line, key_line)
    # a valid pair is one astral character, and an escaped backslash before "u0000" is just text
    fine = parse_record_line(b'{"data":{"content":"\\ud83d\\ude00 \\\\u0000"},"op":"upsert","record_id":"r",'
                             b'"schema_version":1,"source":{},"type":"other"}')
    assert fine.data["content"] == "\U0001f600 \\u0000"
    # the content hash is still defined for any decoded value (it escapes everything)
    odd = RecordLine("r", "other", 1, "upsert", {"content": "\ud800"}, {})
    assert len(content_hash(odd)) == 64


# -- batch ids -----------------------------------------------------------------------------

def test_batch_ids_are_uuid_v7():
    for _ in range(200):
        text = new_batch_id()
        u = uuid.UUID(text)
        assert str(u) == text
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
    ms = uuid.UUID(new_batch_id()).int >> 80
    assert abs(ms - time.time() * 1000) < 5_000


def test_batch_ids_sort_by_time(monkeypatch):
    ids = []
    for ms in (1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_500, 1_700_000_123_456, 2_000_000_000_000):
        for _ in range(5):
            monkeypatch.setattr(envelope.time, "time_ns", lambda ms=ms: ms * 1_000_000 + 999_999)
            ids.append((ms, new_batch_id()))
    for ms, text in ids:
        assert uuid.UUID(text).int >> 80 == ms
    by_ms = [ms for ms, _ in sorted(ids, key=lambda pair: pair[1])]
    assert by_ms == sorted(by_ms)


def test_batch_ids_sort_by_real_time():
    ids = []
    for _ in range(5):
        ids.append(new_batch_id())
        time.sleep(0.002)
    assert ids == sorted(ids)
    assert len(set(new_batch_id() for _ in range(1000))) == 1000


# -- keys ----------------------------------------------------------------------------------

def test_key_id_is_sha256_prefix_of_raw_public_key(key):
    raw = key.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32
    assert key.key_id == hashlib.sha256(raw).digest()[:16].hex() == key_id(raw)
    assert len(key.key_id) == 32
    assert PublicKey.from_pem(key.public.pem()).key_id == key.key_id


def test_private_key_written_0600_even_with_open_umask(tmp_path):
    old = os.umask(0)
    try:
        k = generate_key_files(tmp_path / "keys", "amr")
    finally:
        os.umask(old)
    private, public = tmp_path / "keys" / "amr.key", tmp_path / "keys" / "amr.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes()
    assert b"PUBLIC KEY" in public.read_bytes() and b"PRIVATE" not in public.read_bytes()
    assert SigningKey.load(private).key_id == k.key_id == PublicKey.load(public).key_id


def test_key_files_are_never_overwritten(tmp_path):
    generate_key_files(tmp_path, "amr")
    before = (tmp_path / "amr.key").read_bytes()
    with pytest.raises(FileExistsError):
        generate_key_files(tmp_path, "amr")
    assert (tmp_path / "amr.key").read_bytes() == before
    with pytest.raises(FileExistsError):
        SigningKey.generate().save(tmp_path / "amr.key")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o004, 0o610])
def test_insecure_key_file_is_refused(tmp_path, mode):
    generate_key_files(tmp_path, "amr")
    path = tmp_path / "amr.key"
    os.chmod(path, mode)
    err = raises(Reason.KEY_FILE_INSECURE, SigningKey.load, path)
    assert "chmod 600" in err.detail


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_key_file_modes_accepted(tmp_path, mode):
    k = generate_key_files(tmp_path, "amr")
    os.chmod(tmp_path / "amr.key", mode)
    assert SigningKey.load(tmp_path / "amr.key").key_id == k.key_id


def test_bad_keys(tmp_path):
    raises(Reason.BAD_KEY, PublicKey.from_raw, b"\x00" * 31)
    raises(Reason.BAD_KEY, PublicKey.from_pem, b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    raises(Reason.BAD_KEY, SigningKey.from_pem, b"not a key")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    raises(Reason.BAD_KEY, PublicKey.from_pem, ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    raises(Reason.BAD_KEY, SigningKey.from_pem, ec_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def test_sign_verify(key, other_key):
    sig = key.sign(b"message")
    assert key.public.verify(sig, b"message")
    assert not key.public.verify(sig, b"messagE")
    assert not other_key.public.verify(sig, b"message")
    assert not key.public.verify(b"\x00" * 64, b"message")


def test_merkle_tree_of_a_batch_is_over_line_bytes(key):
    batch = signed_batch(key)
    tree = parse_batch(batch.to_bytes()).verify(key.public)
    assert tree.levels[0] == [leaf_hash(line) for line in batch.lines]
    assert isinstance(tree, MerkleTree)
    assert isinstance(batch, Batch)
