"""Hostile input: parsers raise ProtocolError and nothing else; a changed batch never verifies; a short fuzz run
through a running hub on each store (tests/fuzz.py; `make fuzz` runs the full one) gives every message one outcome."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from cx.protocol import jsonutil
from cx.protocol.bundle import ProofBundle
from cx.protocol.envelope import Limits, parse_batch, parse_record_line
from cx.protocol.errors import ProtocolError
from cx.protocol.keys import SigningKey
from cx.protocol.merkle import MerkleTree
from cx.protocol.receipts import Checkpoint, Receipt
from cx.protocol.validation import default_registry
from examples import record_line, signed_batch
from fuzz import Plan, run

KEY = SigningKey.generate()
HUB = SigningKey.generate()
BATCH = signed_batch(KEY, ("other", "honor", "consumer_warning"))
BATCH_BYTES = BATCH.to_bytes()
RECEIPT_BYTES = Receipt.issue(
    HUB, batch_id=BATCH.header.batch_id, dept="amr", header_hash=BATCH.header_hash, accepted=["other-1"],
    rejected=[], duplicates=0, checkpoint=Checkpoint.sign(HUB, "amr", 1, MerkleTree.from_lines(BATCH.lines).root()),
).to_bytes()
BUNDLE_BYTES = jsonutil.dumps(
    ProofBundle.for_record(BATCH, 1, MerkleTree.from_lines(BATCH.lines).inclusion_proof(1)).to_json())
SMALL = Limits(max_batch_bytes=1 << 16, max_records=50, max_line_bytes=1 << 14)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def only_protocol_errors(fn, *args):
    """Run fn; a ProtocolError is a fine answer, any other exception is a bug."""
    try:
        return fn(*args)
    except ProtocolError:
        return None


def receive(data: bytes, limits: Limits = SMALL) -> bool:
    """Everything a hub does with a batch before storing it; True only if it is all accepted."""
    try:
        batch = parse_batch(data, limits)
        batch.verify(KEY.public)
        for line in batch.lines:
            record = parse_record_line(line, limits)
            default_registry().check_record(record)
    except ProtocolError:
        return False
    return True


def read_bundle(data: bytes):
    bundle = ProofBundle.from_json(jsonutil.loads(data))
    return bundle.verify(KEY.public)


# JSON-shaped bytes reach further into the parsers than random bytes do
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
json_bytes = json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode())
interesting_bytes = st.one_of(
    st.binary(max_size=600),
    json_bytes,
    st.sampled_from([b"1e400", b"-1e400", b"[" * 5000, b"{" * 40, b"9" * 5000, b"NaN", b"\xef\xbb\xbf{}", b"\xed\xa0\x80",
                     b'{"a":1,"a":1}', b'"\\ud800"', b"\x00", b"[1,]"]),
)


@FUZZ
@given(interesting_bytes)
@example(b"1e400")
@example(b"9" * 5000)
@example(b'{"record_line":"x","inclusion":{"leaf_index":1e400,"path":[]},"batch_header":"{}","signature":"","key_id":""'
         b',"format":"cx-proof/1"}')
def test_arbitrary_bytes_only_raise_protocol_errors(data):
    only_protocol_errors(parse_batch, data)
    only_protocol_errors(parse_batch, data + b"\n")
    only_protocol_errors(parse_record_line, data)
    only_protocol_errors(Receipt.parse, data, HUB.public)
    only_protocol_errors(Receipt.parse, data + b"\n" + RECEIPT_BYTES.split(b"\n")[1] + b"\n", HUB.public)
    only_protocol_errors(read_bundle, data)
    only_protocol_errors(jsonutil.loads, data)


@FUZZ
@given(json_values)
def test_arbitrary_json_only_raises_protocol_errors(value):
    data = json.dumps(value).encode()
    only_protocol_errors(parse_record_line, data)
    only_protocol_errors(read_bundle, data)
    if isinstance(value, dict):
        only_protocol_errors(lambda: ProofBundle.from_json({**json.loads(BUNDLE_BYTES), **value}).verify(KEY.public))
        only_protocol_errors(lambda: Checkpoint.from_json(value))
        line = json.loads(record_line("other"))
        only_protocol_errors(parse_record_line, json.dumps({**line, **value}).encode())
        only_protocol_errors(parse_record_line, json.dumps({**line, "data": value}).encode())


@FUZZ
@given(st.sampled_from(["record_line", "batch_header", "signature", "key_id", "format", "inclusion"]), json_values)
def test_bundle_with_one_field_replaced(field, value):
    obj = json.loads(BUNDLE_BYTES)
    obj[field] = value
    assume(obj != json.loads(BUNDLE_BYTES))
    assert only_protocol_errors(lambda: ProofBundle.from_json(obj).verify(KEY.public)) is None


@FUZZ
@given(st.sampled_from(["leaf_index", "path"]), json_values)
@example("leaf_index", float("inf"))
@example("leaf_index", float("nan"))
@example("leaf_index", 10**400)
@example("leaf_index", -1)
@example("path", [None])
def test_bundle_with_inclusion_replaced(field, value):
    obj = json.loads(BUNDLE_BYTES)
    obj["inclusion"][field] = value
    assume(obj != json.loads(BUNDLE_BYTES) and not (field == "leaf_index" and value == 1))
    result = only_protocol_errors(lambda: ProofBundle.from_json(obj).verify(KEY.public))
    # int() coerces: 1.0, True, "1" name the same leaf, and that proof does hold
    assert result is None or (field == "leaf_index" and int(value) == 1)


# -- mutated batches -----------------------------------------------------------------------

@st.composite
def mutated_batch(draw) -> bytes:
    data = BATCH_BYTES
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup_line", "swap_lines",
                                     "drop_line", "splice"]))
        if kind in ("flip", "set", "insert", "delete") and not data:
            continue
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip":
            bit = draw(st.integers(0, 7))
            data = data[:pos] + bytes([data[pos] ^ (1 << bit)]) + data[pos + 1:]
        elif kind == "set":
            data = data[:pos] + bytes([draw(st.sampled_from(b' \n\r\t"{}[],:\\0aZ\x00\xff'))]) + data[pos + 1:]
        elif kind == "insert":
            data = data[:pos] + draw(st.binary(min_size=1, max_size=4) | st.sampled_from([b" ", b"\n", b"\r", b"\t"])) \
                + data[pos:]
        elif kind == "delete":
            data = data[:pos] + data[pos + draw(st.integers(1, 4)):]
        elif kind == "truncate":
            data = data[:pos]
        else:
            lines = data.split(b"\n")
            if len(lines) < 2:
                continue
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if kind == "dup_line":
                lines.insert(j, lines[i])
            elif kind == "swap_lines":
                lines[i], lines[j] = lines[j], lines[i]
            elif kind == "drop_line":
                del lines[i]
            else:  # a line from another valid batch by the same key
                other = signed_batch(KEY, ("other", "honor", "consumer_warning")).to_bytes().split(b"\n")
                lines[i] = other[i % len(other)]
            data = b"\n".join(lines)
    return data


def test_the_unchanged_batch_is_accepted():
    assert receive(BATCH_BYTES)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_batch())
def test_mutated_batches_never_verify_unless_unchanged(data):
    accepted = receive(data)
    assert accepted == (data == BATCH_BYTES), data


@pytest.mark.parametrize("whitespace", [b" ", b"\t", b"\r"])
def test_whitespace_anywhere_is_refused(whitespace):
    for pos in range(len(BATCH_BYTES)):
        changed = BATCH_BYTES[:pos] + whitespace + BATCH_BYTES[pos:]
        assert not receive(changed), (pos, BATCH_BYTES[pos - 5:pos + 5])


def test_short_fuzz_run_gives_every_message_one_outcome(store_kind):
    figures = run(Plan(cases=800, store=store_kind, max_lines=8, settle_timeout=120))
    assert figures["outcomes"]["accepted"] > 0 and figures["outcomes"]["quarantined"] > 0
    assert figures["records"]["rejected"] > 0 and figures["outcomes"]["heartbeat"] > 0
    assert figures["hub_after"]["open_files"] <= figures["hub_before"]["open_files"] + 10, figures
    print(figures)
