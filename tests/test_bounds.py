"""The parser is the only judge: every bound the hub's store has, the protocol states and the parser enforces.

Pure checks, no store: record ids, `source` values, timestamps that are real instants, U+0000 and lone
surrogates, the header's `v`, signed refusals, and the store's columns derived from the protocol's bounds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from cx.hub import store
from cx.protocol import envelope, jsonutil
from cx.protocol.envelope import (
    RECORD_ID_MAX, SOURCE_MAX, BatchHeader, is_timestamp, parse_batch, parse_record_line,
)
from cx.protocol.errors import LINE_MESSAGES_ZH, REASON_ZH, ProtocolError, Reason, explain
from cx.protocol.heartbeat import MAX_HEARTBEAT_VERSION, MAX_PENDING_SECONDS, Heartbeat
from cx.protocol.keys import SigningKey
from cx.protocol.receipts import Checkpoint, Refusal
from cx.protocol.validation import KEPT_DATA_FIELDS, SchemaRegistry, default_registry
from examples import EXAMPLES, TODAY, signed_batch

ROOT = Path(__file__).resolve().parent.parent
KEY = SigningKey.generate()
HUB = SigningKey.generate()
GOOD_TIME = "2026-01-02T03:04:05.678Z"
# each matches the timestamp pattern, and none is a real instant
UNREAL_TIMES = ["2026-02-30T00:00:00.000Z", "2026-13-01T00:00:00Z", "2026-01-01T00:00:61Z", "2026-01-01T00:00:60Z",
                "0000-01-01T00:00:00Z", "2026-01-01T24:00:00Z", "2026-00-10T00:00:00Z", "2025-02-29T12:00:00.5Z"]


def raises(reason: Reason, fn, *args, **kwargs) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        fn(*args, **kwargs)
    assert info.value.reason == reason, info.value
    return info.value


def line(**changes) -> bytes:
    obj = {"record_id": "r-1", "type": "other", "schema_version": 1, "op": "upsert", "data": EXAMPLES["other"],
           "source": {"adapter": "sql", "locator": "table t id=1", "extracted": GOOD_TIME, "entered_by": "张三"}}
    obj.update(changes)
    return json.dumps(obj, ensure_ascii=False).encode()


# -- timestamps ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", UNREAL_TIMES)
def test_a_timestamp_must_be_a_real_instant(text):
    assert envelope.TIMESTAMP.match(text)  # the pattern alone lets it through
    assert not is_timestamp(text)
    header = json.loads(signed_batch(KEY).header_bytes)
    raises(Reason.BAD_HEADER, BatchHeader.from_json, {**header, "created": text})
    raises(Reason.BAD_RECORD, parse_record_line, line(source={"extracted": text}))
    beat = Heartbeat.sign(KEY, dept="amr", node="n1", version="1", outbox_depth=0, oldest_pending_seconds=None,
                          last_error=None, time=text)
    raises(Reason.BAD_HEADER, Heartbeat.read, beat)
    cp = Checkpoint.sign(HUB, "amr", 1, b"\0" * 32, GOOD_TIME).to_json()
    raises(Reason.BAD_CHECKPOINT, Checkpoint.from_json, {**cp, "time": text})


@pytest.mark.parametrize("text", ["2024-02-29T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
                                  GOOD_TIME])
def test_real_instants_pass(text):
    assert is_timestamp(text)
    assert parse_record_line(line(source={"extracted": text})).source["extracted"] == text


def test_a_header_without_v_is_bad_header_and_another_v_unsupported():
    header = json.loads(signed_batch(KEY).header_bytes)
    without = {k: v for k, v in header.items() if k != "v"}
    raises(Reason.BAD_HEADER, BatchHeader.from_json, without)
    raises(Reason.UNSUPPORTED_VERSION, BatchHeader.from_json, {**header, "v": 2})
    raises(Reason.UNSUPPORTED_VERSION, BatchHeader.from_json, {**header, "v": "1"})


# -- U+0000 and lone surrogates ---------------------------------------------------------------------------------


@pytest.mark.parametrize("escaped", ["\\u0000", "\\ud800", "\\udfff", "x\\udbffy", "\\ude00\\ud83d"])
@pytest.mark.parametrize("where", ["record_id", "subject_name", "locator", "key", "facts"])
def test_nul_and_lone_surrogates_are_bad_character_anywhere_in_a_record(escaped, where):
    obj = json.loads(line())
    if where == "record_id":
        obj["record_id"] = "r" + escaped
    elif where == "locator":
        obj["source"]["locator"] = escaped
    elif where == "key":
        obj["source"]["x" + escaped] = "v"
    else:
        obj["data"][where] = escaped
    # json.dumps writes the placeholder; put the raw escape text in its place
    text = json.dumps(obj, ensure_ascii=False).replace(json.dumps(escaped)[1:-1], escaped)
    raises(Reason.BAD_CHARACTER, parse_record_line, text.encode())


def test_bad_character_in_the_header_and_heartbeat():
    batch = signed_batch(KEY)
    header = batch.header_bytes.replace(b'"node":"', b'"node":"\\u0000', 1)
    data = batch.to_bytes().replace(batch.header_bytes, header, 1)
    raises(Reason.BAD_CHARACTER, parse_batch, data)
    beat = Heartbeat.sign(KEY, dept="amr", node="n1", version="1", outbox_depth=0, oldest_pending_seconds=None,
                          last_error="X")
    body = beat.split(b"\n")[0].replace(b'"last_error":"X"', b'"last_error":"\\ud800"')
    raises(Reason.BAD_CHARACTER, Heartbeat.read, body + b"\n" + beat.split(b"\n")[1] + b"\n")


def test_the_messages_about_a_bad_character_can_be_stored_and_signed():
    error = raises(Reason.BAD_CHARACTER, parse_record_line, line(record_id="a\\u0000b").replace(b"\\\\", b"\\"))
    for text in (error.detail, *explain(error)):
        text.encode("utf-8")  # no lone surrogate
        assert "\0" not in text


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=30))
def test_any_decoded_text_is_refused_exactly_when_it_holds_nul_or_a_lone_surrogate(text):
    """ensure_ascii writes every such character as an escape: the cheap pre-check never misses one."""
    data = json.dumps({"t": text}, ensure_ascii=True).encode()
    bad = any(c == "\0" or 0xD800 <= ord(c) <= 0xDFFF for c in text)
    if bad:
        raises(Reason.BAD_CHARACTER, jsonutil.loads, data)
    else:
        assert jsonutil.loads(data) == {"t": text}


# -- record ids and source values -----------------------------------------------------------------------------


RECORD_SCHEMA = json.loads((ROOT / "schemas" / "record-line.v1.json").read_text("utf-8"))
RECORD_VALIDATOR = Draft202012Validator(RECORD_SCHEMA)


def test_the_record_id_rule_is_one_rule_in_code_schema_and_document():
    doc = (ROOT / "docs" / "protocol.md").read_text("utf-8")
    section = doc[doc.index("## 5. Record lines"):doc.index("## 6.")]
    stated = re.search(r"`\^\[\^([^`]*)\]\{1,200\}\$`", section).group(1)
    assert RECORD_SCHEMA["properties"]["record_id"]["pattern"] == f"^[^{stated}]+$"
    assert RECORD_SCHEMA["properties"]["record_id"]["maxLength"] == RECORD_ID_MAX
    assert re.compile(f"[{envelope.RECORD_ID_FORBIDDEN}]").pattern == re.compile(f"[{stated}]").pattern.encode(
        "ascii").decode("unicode_escape")


# characters on both sides of every edge of the forbidden list, and some plainly fine ones
EDGES = sorted({chr(c) for lo, hi in re.findall(r"(.)(?:-(.))?", envelope.RECORD_ID_FORBIDDEN)
                for edge in (ord(lo), ord(hi or lo)) for c in (edge - 1, edge, edge + 1)
                if 0 < c < 0x110000 and not 0xD800 <= c <= 0xDFFF} | set("a罚-_ .#/😀"))


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(EDGES), min_size=0, max_size=RECORD_ID_MAX + 2))
def test_parser_and_schema_agree_on_record_ids(rid):
    data = line(record_id=rid)
    schema_ok = RECORD_VALIDATOR.is_valid(json.loads(data))
    try:
        parse_record_line(data)
        parser_ok = True
    except ProtocolError as exc:
        assert exc.reason == Reason.BAD_RECORD
        parser_ok = False
    assert parser_ok == schema_ok, rid
    forbidden = re.compile(f"[{envelope.RECORD_ID_FORBIDDEN}]")
    assert parser_ok == (1 <= len(rid) <= RECORD_ID_MAX and not forbidden.search(rid))


@pytest.mark.parametrize("rid", ["a\u2028b", "a\u202eb", "\u200b", "a\u00a0b", "\ue000", "\ufeffa", "a\u3000",
                                 "\ufffe", "x\u0085"])
def test_invisible_and_bidi_characters_are_not_record_ids(rid):
    raises(Reason.BAD_RECORD, parse_record_line, line(record_id=rid))


@pytest.mark.parametrize("rid", ["洛市监罚〔2025〕5号", "a b", "𠀀-1", "r\u0378"])  # \u0378 is unassigned: allowed
def test_record_ids_any_implementation_accepts(rid):
    assert parse_record_line(line(record_id=rid)).record_id == rid


@pytest.mark.parametrize("name", sorted(SOURCE_MAX))
def test_source_values_at_and_beyond_their_bound(name):
    longest = SOURCE_MAX[name]
    at = parse_record_line(line(source={name: "源" * longest}))
    assert len(at.source[name]) == longest
    error = raises(Reason.BAD_RECORD, parse_record_line, line(source={name: "源" * (longest + 1)}))
    assert f"source.{name}" in error.detail
    assert RECORD_VALIDATOR.is_valid(json.loads(line(source={name: "源" * longest})))
    assert not RECORD_VALIDATOR.is_valid(json.loads(line(source={name: "源" * (longest + 1)})))


def test_other_source_keys_have_no_bound_of_their_own():
    assert parse_record_line(line(source={"table": "t" * 5000})).source["table"] == "t" * 5000


# -- the store's columns come from the protocol's bounds ------------------------------------------------------


def test_store_columns_are_the_protocol_bounds():
    rv, rec = store.record_versions.c, store.records.c
    assert rec.record_id.type.length == rv.record_id.type.length == RECORD_ID_MAX
    assert rv.source_adapter.type.length == SOURCE_MAX["adapter"]
    assert rv.source_locator.type.length == SOURCE_MAX["locator"]
    assert rv.entered_by.type.length >= max(SOURCE_MAX["entered_by"], KEPT_DATA_FIELDS["entered_by"])
    assert rv.extracted.type.length >= len("2026-01-02T03:04:05.123456Z")
    assert rv.authority.type.length >= max(KEPT_DATA_FIELDS[f] for f in
                                           ("authority", "court", "arbitration_body", "registration_authority",
                                            "conferred_by"))
    assert rv.authority_uscc.type.length == KEPT_DATA_FIELDS["authority_uscc"]
    assert rec.subject_name.type.length == KEPT_DATA_FIELDS["subject_name"]
    assert rec.uscc.type.length == KEPT_DATA_FIELDS["uscc"]
    assert store.heartbeats.c.version.type.length == MAX_HEARTBEAT_VERSION
    assert MAX_PENDING_SECONDS <= 2**31  # heartbeats.oldest_pending_seconds is a 32-bit integer on PostgreSQL
    assert isinstance(store.heartbeats.c.oldest_pending_seconds.type, store.Integer)


def test_every_record_type_bounds_the_data_fields_the_hub_keeps():
    registry = default_registry()
    for record_type in registry.record_types():
        compiled = registry.get(record_type)  # compiling checks the bounds
        for name, longest in KEPT_DATA_FIELDS.items():
            if name in compiled.schema["properties"]:
                value = {**EXAMPLES[record_type], name: "长" * (longest + 1)}
                assert compiled.check(value, TODAY), (record_type, name)


def test_a_schema_that_leaves_a_kept_field_unbounded_is_refused():
    docs = [json.loads(p.read_text("utf-8")) for p in (ROOT / "schemas").glob("*.json")]
    other = next(d for d in docs if d.get("x-record-type") == "other")
    other["properties"]["subject_name"] = {"type": "string", "minLength": 1}
    with pytest.raises(ValueError, match="subject_name"):
        SchemaRegistry(docs).get("other")


# -- every reason speaks Chinese --------------------------------------------------------------------------------


def test_every_reason_has_its_chinese_explanation():
    assert set(REASON_ZH) == set(Reason)
    assert Reason.BAD_CHARACTER in LINE_MESSAGES_ZH


# -- refusals ------------------------------------------------------------------------------------------------------


def refusal(**overrides) -> Refusal:
    fields = dict(dept="amr", batch_id="0195b162-d840-77e2-b9a1-d20ad4f8deeb", header_hash="a" * 64,
                  body_hash="b" * 64, reason="key_revoked", detail_zh="密钥已吊销", detail_en="key revoked",
                  received=GOOD_TIME)
    fields.update(overrides)
    return Refusal.issue(HUB, **fields)


def test_a_refusal_round_trips_and_any_change_breaks_it():
    r = refusal()
    assert Refusal.parse(r.to_bytes(), HUB.public) == r
    data = r.to_bytes()
    for pos in range(len(r.body)):
        changed = data[:pos] + bytes([data[pos] ^ 1]) + data[pos + 1:]
        with pytest.raises(ProtocolError):
            Refusal.parse(changed, HUB.public)
    raises(Reason.BAD_SIGNATURE, Refusal.parse, data, KEY.public)
    assert Refusal.parse(refusal(batch_id=None, header_hash=None).to_bytes(), HUB.public).batch_id is None


def test_refusal_details_never_carry_what_no_store_keeps():
    r = refusal(detail_en="bad \ud800 and \0", detail_zh="坏" * 5000)
    parsed = Refusal.parse(r.to_bytes(), HUB.public)
    assert parsed.detail_en == "bad \\ud800 and \\u0000" and len(parsed.detail_zh) == 2000


@pytest.mark.parametrize("change", [
    {"format": "cx-refusal/2"}, {"dept": "A"}, {"batch_id": "x"}, {"body_hash": None}, {"reason": ""},
    {"received": "2026-02-30T00:00:00Z"}, {"extra": 1}, {"hub_key_id": "0" * 32},
])
def test_a_refusal_with_wrong_fields_is_refused(change):
    obj = refusal().body_json()
    obj.update(change)
    body = jsonutil.dumps(obj)
    data = body + b"\n" + envelope.signature_line(HUB.sign(body)) + b"\n"
    with pytest.raises(ProtocolError) as info:
        Refusal.parse(data, HUB.public)
    assert info.value.reason in (Reason.BAD_RECEIPT, Reason.UNSUPPORTED_VERSION, Reason.KEY_ID_MISMATCH)


def test_the_refusal_schema_accepts_what_the_hub_signs():
    schema = json.loads((ROOT / "schemas" / "refusal.v1.json").read_text("utf-8"))
    for r in (refusal(), refusal(batch_id=None, header_hash=None)):
        Draft202012Validator(schema).validate(json.loads(r.body))

